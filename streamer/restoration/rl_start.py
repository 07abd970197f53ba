"""Where a Richardson–Lucy run starts: the valid data's sum and count (folded on the device)
and the initial estimate — the data less the model's background, excluded pixels at the
valid mean, edges replicated into the margin, floored above zero (``rl_initial_estimate``)."""

from __future__ import annotations

import pyopencl as cl

from streamer.restoration.copying_iterations import frame_grid
from streamer.restoration.in_place_iterations import IterationArrays
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.reduction import Reduction
from streamer.restoration.richardson_lucy_kernels import (
    DATA_SUMS, DEFINES, INITIAL_ESTIMATE, STAT,
)


class RunStart:
    """The data sums and the initial estimate of a plan's runs."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, arrays: IterationArrays,
                 items: int, partial_sum: cl.Buffer, partial_count: cl.Buffer) -> None:
        self.queue, self.arrays, self._items = queue, arrays, items
        self._partial_sum, self._partial_count = partial_sum, partial_count
        self._data_sums = library.kernel(DATA_SUMS, **DEFINES)
        self._initial = library.kernel(INITIAL_ESTIMATE, **DEFINES)
        self._reduce = Reduction(queue, library)

    def data_sums(self) -> None:
        """Enqueue the valid data's sum and count into the statistics (DATA_SUM, DATA_COUNT)."""
        self._valid_sums(self.arrays.data)
        self._reduce.sum(self._partial_sum, self._items, self.arrays.statistics,
                         STAT["DATA_SUM"])
        self._reduce.sum(self._partial_count, self._items, self.arrays.statistics,
                         STAT["DATA_COUNT"])

    def output_sum(self, restored: cl.Buffer) -> None:
        """Enqueue the sum of a frame-shaped ``restored`` over the valid pixels (the output's
        finite ones: it holds NaN where the weight is 0) into the statistics (OUTPUT_SUM)."""
        self._valid_sums(restored)
        self._reduce.sum(self._partial_sum, self._items, self.arrays.statistics,
                         STAT["OUTPUT_SUM"])

    def _valid_sums(self, data: cl.Buffer) -> None:
        """Enqueue each work item's sum and count of ``data`` over the valid pixels."""
        height, width = self.arrays.shape
        self._data_sums(self.queue, (self._items,), None, data=data, weight=self.arrays.weight,
                        count=height * width, partial_sum=self._partial_sum,
                        partial_count=self._partial_count)

    def initial_estimate(self, pedestal: float) -> None:
        """Enqueue the data sums, then the initial estimate into the plan's estimate."""
        self.data_sums()
        arrays = self.arrays
        height, width = arrays.shape
        ry, rx = arrays.radius
        self._initial(self.queue, frame_grid(*arrays.extended_shape[::-1]), None,
                      data=arrays.data, weight=arrays.weight, estimate=arrays.estimate,
                      width=width, height=height, radius_y=ry, radius_x=rx, pedestal=pedestal,
                      stats=arrays.statistics)
