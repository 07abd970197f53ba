"""Frame-sized arrays kept and handed out again once nothing refers to them.

Every frame the host allocates a few frame-sized arrays (the float32 copy of an integer frame,
the frame less its background, the restored FITS file's buffer) and drops them a frame later.
The kernel hands out fresh pages for each, zeroed: at 4096² that was 0.1-0.26 s of system time
a frame's preparation right after a device stage here, against 0.02-0.16 s when repeated, and
0.12 s for the 151 MB FITS buffer. A kept array is written in place instead. It is handed out
again only when its reference count says no one holds it — no array, view, memoryview or
payload over it alive anywhere (a view's base, a memoryview's exporter, PyOpenCL's pending
copy all count) — so reuse never changes what anyone can still read.
"""

from __future__ import annotations

import sys
import threading

import numpy as np


class KeptArrays:
    """At most ``keep`` arrays, handed out by :meth:`empty` (contents undefined)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An array of ``shape`` and ``dtype``: a kept one nothing refers to any more, or a
        new one (kept while fewer than ``keep`` are, or in place of a free one of another
        shape)."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        with self._lock:
            # A free array's only references: this list's and getrefcount's argument.
            free = [index for index in range(len(self._arrays))
                    if sys.getrefcount(self._arrays[index]) <= 2]
            for index in free:
                if self._arrays[index].shape == shape and self._arrays[index].dtype == dtype:
                    return self._arrays[index]
            array = np.empty(shape, dtype)
            if len(self._arrays) < self.keep:
                self._arrays.append(array)
            elif free:
                self._arrays[free[0]] = array
            return array

    def held(self) -> int:
        """How many kept arrays someone still refers to."""
        with self._lock:
            return sum(sys.getrefcount(self._arrays[index]) > 2
                       for index in range(len(self._arrays)))


# Frame-sized arrays of the host stages: a worker's frames in flight each hold a few.
FRAMES = KeptArrays(keep=8)
