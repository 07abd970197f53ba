"""Richardson–Lucy iterations on the plan's own device buffers (every method but the in-place
host FFT): the correlations read and write separate buffers, and the ratio and update kernels
work between them.

Same interface as :class:`~streamer.restoration.in_place_iterations.InPlaceIterations`:
:meth:`CopyingIterations.stage` after the initial estimate, :meth:`CopyingIterations.iterate`
once per iteration, the statistics slots filled alike.
"""

from __future__ import annotations

import pyopencl as cl

from streamer.restoration.convolution import Correlation, source_buffer
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.in_place_iterations import IterationArrays
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.reduction import Reduction, reduction_items
from streamer.restoration.richardson_lucy_kernels import (
    CHI2, DEFINES, RATIO, STAT, UPDATE, UPDATE_MEASURED,
)


def frame_grid(columns: int, rows: int) -> tuple[int, int]:
    """A 2-D launch over ``columns`` × ``rows``, columns rounded up to 16."""
    return ((columns + 15) // 16 * 16, rows)


class CopyingIterations:
    """The iteration of one Richardson–Lucy plan through buffers of its own: the model, the
    ratio (padded by the PSF radius twice, zero margins) and the correction."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, forward: Correlation,
                 backward: Correlation, arrays: IterationArrays) -> None:
        self.queue = queue
        self.forward, self.backward, self.arrays = forward, backward, arrays
        self._ratio = library.kernel(RATIO, **DEFINES)
        self._update = library.kernel(UPDATE, **DEFINES)
        self._update_measured = library.kernel(UPDATE_MEASURED, **DEFINES)
        self._chi2 = library.kernel(CHI2, **DEFINES)
        self._reduce = Reduction(queue, library)
        context, flags = queue.context, cl.mem_flags
        height, width = arrays.shape
        ry, rx = arrays.radius
        ext_height, ext_width = arrays.extended_shape
        self.ratio_shape = (height + 4 * ry, width + 4 * rx)
        self.model = cl.Buffer(context, flags.READ_WRITE, height * width * 4)
        self.ratio = source_buffer(context, *self.ratio_shape)
        BlockCopy(queue, library).fill(self.ratio, 0.0)  # its margins stay zero
        self.correction = cl.Buffer(context, flags.READ_WRITE, ext_height * ext_width * 4)
        self._items = reduction_items(queue.device, height * width)
        self._partial_a = cl.Buffer(context, flags.READ_WRITE, self._items * 4)
        self._partial_b = cl.Buffer(context, flags.READ_WRITE, self._items * 4)

    def stage(self) -> None:
        """Nothing to stage: the correlations read the estimate where it is."""

    def iterate(self, threshold_squared: float, variance: float, inverse_gain: float,
                pedestal: float, signal_sigmas: float, measure_change: bool,
                measure_chi2: bool) -> None:
        """One iteration: model, χ² (when measured), ratio, correction, update."""
        arrays, queue, items = self.arrays, self.queue, self._items
        height, width = arrays.shape
        ry, rx = arrays.radius
        self.forward.enqueue(arrays.estimate, self.model)
        if measure_chi2:  # the model of the current estimate, before it moves
            self._chi2(queue, (items,), None, data=arrays.data, weight=arrays.weight,
                       model=self.model, count=height * width, variance=variance,
                       inverse_gain=inverse_gain, signal_sigmas=signal_sigmas,
                       pedestal=pedestal, stats=arrays.statistics,
                       partial_chi2=self._partial_a, partial_count=self._partial_b)
            self._reduce.sum(self._partial_a, items, arrays.statistics, STAT["CHI2"])
            self._reduce.sum(self._partial_b, items, arrays.statistics, STAT["CHI2_COUNT"])
        self._ratio(queue, frame_grid(width, height), None, data=arrays.data,
                    weight=arrays.weight, model=self.model, ratio_padded=self.ratio,
                    width=width, height=height, radius_y=ry, radius_x=rx,
                    threshold_squared=threshold_squared, variance=variance,
                    inverse_gain=inverse_gain, pedestal=pedestal, stats=arrays.statistics)
        self.backward.enqueue(self.ratio, self.correction)
        extended = arrays.extended_shape[0] * arrays.extended_shape[1]
        if measure_change:
            self._update_measured(queue, (items,), None, estimate=arrays.estimate,
                                  correction=self.correction, norm=arrays.norm, count=extended,
                                  partial_change=self._partial_a,
                                  partial_total=self._partial_b)
            self._reduce.sum(self._partial_a, items, arrays.statistics, STAT["CHANGE"])
            self._reduce.sum(self._partial_b, items, arrays.statistics, STAT["TOTAL"])
        else:
            self._update(queue, ((extended + 255) // 256 * 256,), None,
                         estimate=arrays.estimate, correction=self.correction, norm=arrays.norm,
                         count=extended)
