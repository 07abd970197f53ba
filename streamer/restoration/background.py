"""Background equalisation by inverse median filtration (eq. 1 and 2 of the brief).

``B = A - median_window(A)`` removes the sky background and its gradients (the window must be
larger than a star); ``C = B - min(B)`` makes the frame non-negative for Richardson–Lucy.
Pixels with weight 0 (NaN, masked) are filled with the frame's median before filtering, so
they neither poison the median nor set ``min(B)``.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.median import MedianFilter

from streamer.restoration.reduction import Reduction, reduction_items


class BackgroundEqualiser:
    """Eq. 1 + eq. 2 on a device, planned for one float32 frame shape and window."""

    def __init__(
        self, queue: cl.CommandQueue, library: KernelLibrary, shape: tuple[int, int], window: int
    ) -> None:
        self.queue = queue
        self.shape = shape
        self.median = MedianFilter(queue, library, shape, window, np.float32)
        program = library.program("background", KEY_IS_FLOAT=1)
        self._subtract = cl.Kernel(program, "subtract_median")
        self._shift = cl.Kernel(program, "shift_nonnegative")
        self._reduce = Reduction(queue, library)
        count = shape[0] * shape[1]
        self.count = count
        self._items = reduction_items(queue.device, count)
        context = queue.context
        self.image = cl.Buffer(context, cl.mem_flags.READ_WRITE, count * 4)
        self._partial_min = cl.Buffer(context, cl.mem_flags.READ_WRITE, self._items * 4)
        self._minimum = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4)

    def run(self, filled: np.ndarray, weight: cl.Buffer, out: cl.Buffer, sky: cl.Buffer,
            sky_index: int) -> None:
        """Enqueue ``C`` of the (NaN-free) frame into ``out`` and its sky level ``-min(B)``
        into ``sky[sky_index]``; :meth:`read_shift` reads ``min(B)`` back.

        ``weight`` is the device buffer of pixel weights (0 = excluded)."""
        self.median.upload(filled)
        cl.enqueue_copy(self.queue, self.image, filled)
        median_keys = self.median.run()
        self._subtract(self.queue, (self._items,), None, self.image, median_keys, weight,
                       out, np.int32(self.count), self._partial_min)
        self._reduce.minimum(self._partial_min, self._items, self._minimum, 0)
        self._shift(self.queue, (self.count,), None, out, weight, self._minimum,
                    np.int32(self.count), sky, np.int32(sky_index))

    def read_shift(self) -> float:
        """``min(B)`` of the last run (one float read)."""
        value = np.empty(1, dtype=np.float32)
        cl.enqueue_copy(self.queue, value, self._minimum)
        return float(value[0])
