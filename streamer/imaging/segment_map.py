"""A segmentation map (object index + 1 at each pixel; 0: sky) kept as its objects' pixels.

sep hands its map over as a frame of int32. The PSF detection's own path lists the pixels in
objects as it finds them (a few per cent of a frame), and the map's readers look at a few of
them: the saturation test at those pixels, the PSF stars' stamps at their boxes. Writing them
into a frame first cost a 4096² frame 0.03 s — the kernel's fresh pages for 64 MB, touched
everywhere by objects spread over the whole field — to be read in a few places. So the map is
the sorted positions and their labels, read by binary search, and made whole only for a
reader that asks for the whole of it.
"""

from __future__ import annotations

import numpy as np


class SegmentMap:
    """The labels of a frame's pixels in objects: ``positions`` (row-major, ascending) and
    ``labels`` (int32, ≥ 1) beside them, or a whole map (:meth:`from_map`)."""

    def __init__(self, shape: tuple[int, int], positions: np.ndarray, labels: np.ndarray,
                 whole: np.ndarray | None = None) -> None:
        if positions.shape != labels.shape:
            raise ValueError(f"{positions.size} positions against {labels.size} labels")
        self.shape = (int(shape[0]), int(shape[1]))
        self._positions, self._labels = positions, labels
        self._whole = whole
        self._listed_given = whole is None
        self._from_whole: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_map(cls, segments: np.ndarray) -> SegmentMap:
        """The map as a frame (sep's), read where it is asked."""
        segments = np.asarray(segments)
        return cls(segments.shape, np.zeros(0, np.int64), np.zeros(0, np.int32), segments)

    @property
    def positions(self) -> np.ndarray:
        """Row-major positions of the pixels in objects, ascending."""
        return self._listed[0]

    @property
    def labels(self) -> np.ndarray:
        """Each of :attr:`positions`' labels (object index + 1)."""
        return self._listed[1]

    @property
    def _listed(self) -> tuple[np.ndarray, np.ndarray]:
        # Listed from a whole map on first use (a plain attribute: Python 3.11's
        # cached_property would hold one lock for every map while it scans 16 M pixels).
        if not self._listed_given and self._from_whole is None:
            positions = np.flatnonzero(self._whole.ravel() > 0)
            self._from_whole = (positions, self._whole.ravel()[positions].astype(np.int32))
        return (self._positions, self._labels) if self._listed_given else self._from_whole

    def at(self, flat: np.ndarray) -> np.ndarray:
        """The labels at the row-major positions ``flat`` (any shape; 0 for sky), int32."""
        flat = np.asarray(flat)
        if not self._listed_given:
            return self._whole.ravel()[flat]
        if self._positions.size == 0:
            return np.zeros(flat.shape, np.int32)
        found = np.searchsorted(self._positions, flat)
        np.minimum(found, self._positions.size - 1, out=found)
        return np.where(self._positions[found] == flat, self._labels[found], 0).astype(np.int32)

    def whole(self) -> np.ndarray:
        """The map as a frame (int32); made on the first call, the caller's not to change."""
        if self._whole is None:
            whole = np.zeros(self.shape, np.int32)
            whole.ravel()[self._positions] = self._labels
            self._whole = whole
        return self._whole
