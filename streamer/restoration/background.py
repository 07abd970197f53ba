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

_GROUP = 256  # must match GROUP in opencl/background.cl


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
        count = shape[0] * shape[1]
        self.count = count
        self._groups = (count + _GROUP - 1) // _GROUP
        context = queue.context
        self.image = cl.Buffer(context, cl.mem_flags.READ_WRITE, count * 4)
        self._partial_min = np.empty(self._groups, dtype=np.float32)
        self._partial_min_buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE, self._groups * 4)

    def run(self, filled: np.ndarray, weight: cl.Buffer, out: cl.Buffer) -> float:
        """Write ``C`` of the (NaN-free) frame into ``out``; return ``min(B)`` (the shift).

        ``weight`` is the device buffer of pixel weights (0 = excluded)."""
        self.median.upload(filled)
        cl.enqueue_copy(self.queue, self.image, filled)
        median_keys = self.median.run()
        self._subtract(
            self.queue, (self._groups * _GROUP,), (_GROUP,), self.image, median_keys, weight,
            out, np.int32(self.count), self._partial_min_buffer,
        )
        cl.enqueue_copy(self.queue, self._partial_min, self._partial_min_buffer)
        minimum = float(self._partial_min.min())
        self._shift(
            self.queue, (self._groups * _GROUP,), None, out, weight, np.float32(minimum),
            np.int32(self.count),
        )
        return minimum
