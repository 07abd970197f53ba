"""Background equalisation by inverse median filtration (eq. 1 and 2 of the brief).

``B = A - median_window(A)`` removes the sky background and its gradients (the window must be
larger than a star); ``C = B - min(B)`` makes the frame non-negative for Richardson–Lucy.
Everything happens on the device, from the frame as uploaded in its own type: excluded pixels
(NaN, inf, masked) get weight 0 and enter the median as the frame's median value, so they
neither poison it nor set ``min(B)``.
"""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary
from streamer.restoration.median import MedianFilter
from streamer.restoration.reduction import Reduction, reduction_items

SUBTRACT_MEDIAN = KernelDeclaration(
    "background", "subtract_median", image=BUFFER, median_keys=BUFFER, weight=BUFFER,
    residual=BUFFER, count=np.int32, partial_min=BUFFER)
SHIFT_NONNEGATIVE = KernelDeclaration(
    "background", "shift_nonnegative", residual=BUFFER, weight=BUFFER, minimum=BUFFER,
    count=np.int32, sky=BUFFER, sky_index=np.int32)


def key_dtype(input_dtype: np.dtype) -> np.dtype:
    """The median's value type for frames of ``input_dtype``: uint16 stays integer, anything
    else is filtered as float32."""
    return np.dtype(np.uint16) if np.dtype(input_dtype) == np.uint16 else np.dtype(np.float32)


class BackgroundEqualiser:
    """Eq. 1 + eq. 2 on a device, planned for one frame shape, window and input type."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, shape: tuple[int, int],
                 window: int, input_dtype: np.dtype | type = np.float32,
                 median_method: str | None = None) -> None:
        self.queue = queue
        self.shape = shape
        self.input_dtype = np.dtype(input_dtype)
        values = key_dtype(self.input_dtype)
        self.median = MedianFilter(queue, library, shape, window, values,
                                   input_dtype=self.input_dtype, method=median_method)
        key_is_float = int(values == np.float32)
        self._subtract = library.kernel(SUBTRACT_MEDIAN, KEY_IS_FLOAT=key_is_float)
        self._shift = library.kernel(SHIFT_NONNEGATIVE, KEY_IS_FLOAT=key_is_float)
        self._reduce = Reduction(queue, library)
        count = shape[0] * shape[1]
        self.count = count
        self._items = reduction_items(queue.device, count)
        context = queue.context
        self.image = cl.Buffer(context, cl.mem_flags.READ_WRITE, count * 4)
        self._partial_min = cl.Buffer(context, cl.mem_flags.READ_WRITE, self._items * 4)
        self.minimum = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4)

    @property
    def raw(self) -> cl.Buffer:
        """Where a frame is uploaded (``input_dtype``, rows × columns)."""
        return self.median.input_buffer

    def run(self, weight: cl.Buffer, out: cl.Buffer, sky: cl.Buffer, sky_index: int,
            mask: cl.Buffer | None = None, deadline: float | None = None) -> None:
        """From the frame in :attr:`raw`, enqueue its pixel weights into ``weight``, ``C``
        into ``out`` and its sky level ``-min(B)`` into ``sky[sky_index]``; ``min(B)`` stays
        on the device in :attr:`minimum`."""
        self.median.prepare(self.raw, mask, self.image, weight, exclude_nonfinite=True)
        median_keys = self.median.run(deadline)
        self._subtract(self.queue, (self._items,), None, image=self.image,
                       median_keys=median_keys, weight=weight, residual=out, count=self.count,
                       partial_min=self._partial_min)
        self._reduce.minimum(self._partial_min, self._items, self.minimum, 0)
        self._shift(self.queue, (self.count,), None, residual=out, weight=weight,
                    minimum=self.minimum, count=self.count, sky=sky, sky_index=sky_index)
