"""Every byte that crosses between host and device in the per-frame path, counted.

The restoration uploads a frame once, in its own type, and downloads the restored frame once;
the rest is a handful of scalars (a sum, a count, a minimum). :class:`TransferMeter` is where
those copies happen, so the count is the truth rather than an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyopencl as cl

SCALAR_LIMIT = 256  # a copy of at most this many bytes counts as a scalar read


@dataclass
class Transfers:
    """Bytes moved for one frame."""

    uploaded: int = 0
    downloaded: int = 0
    copies: int = 0
    scalar_reads: int = 0

    @property
    def total(self) -> int:
        return self.uploaded + self.downloaded

    def per_pixel(self, pixels: int) -> float:
        """Bytes per pixel, both directions."""
        return self.total / max(pixels, 1)


class TransferMeter:
    """Host↔device copies on one queue, counted."""

    def __init__(self, queue: cl.CommandQueue) -> None:
        self.queue = queue
        self.frame = Transfers()

    def reset(self) -> Transfers:
        """Start counting a new frame; returns the last frame's counts."""
        last, self.frame = self.frame, Transfers()
        return last

    def upload(self, buffer: cl.Buffer, array: np.ndarray) -> None:
        """Host array → device buffer."""
        array = np.ascontiguousarray(array)
        cl.enqueue_copy(self.queue, buffer, array)
        self.frame.uploaded += array.nbytes
        self.frame.copies += 1

    def download(self, array: np.ndarray, buffer: cl.Buffer) -> np.ndarray:
        """Device buffer → host array (blocking); returns the array."""
        cl.enqueue_copy(self.queue, array, buffer)
        self.frame.downloaded += array.nbytes
        self.frame.copies += 1
        if array.nbytes <= SCALAR_LIMIT:
            self.frame.scalar_reads += 1
        return array
