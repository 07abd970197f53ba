"""Source Extractor's mesh background and rms, measured on a sample of the pixels.

sep (Barbary 2016) estimates each ``mesh``-pixel cell's sky level (the clipped histogram's
mode) and rms, median-filters the grid of cells and interpolates it with a bicubic natural
spline through the cell centres. On a 4096² frame that is 0.27 s, almost all of it reading
16 M pixels to estimate 4096 numbers. The cells' estimates need far fewer: measured on every
second pixel of each axis (a quarter of them, still 1024 per 64 px cell, on maps and frames
whose pixels are correlated over a PSF anyway) they move by a few hundredths of the rms.

So sep measures the sample with cells of ``mesh / stride`` pixels — the same grid of cells —
and the full-resolution maps are evaluated here from the cell values, through the same
natural bicubic spline, as a product of two small interpolation matrices (one per axis):
a few tens of milliseconds for a 4096² map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

SAMPLED_FROM = 1024  # frames with both sides at least this are sampled (smaller ones: all pixels)


class MeshBackground:
    """A frame's mesh background and rms at full resolution (``back()``, ``rms()``,
    ``subfrom``) and their global figures, as ``sep.Background`` gives them, measured on every
    ``stride``-th pixel (``None``: 2 where both sides reach ``SAMPLED_FROM`` and the mesh is
    even, else 1, which is sep's own evaluation). ``mask``: pixels to leave out, frame-shaped
    or already sampled (:meth:`sampled`)."""

    def __init__(self, data: np.ndarray, mesh: int, mask: np.ndarray | None = None,
                 stride: int | None = None, filter_size: int = 3,
                 shape: tuple[int, int] | None = None) -> None:
        import sep

        given_sample = shape is not None  # ``data`` is already the sample, of a frame this shape
        shape = tuple(shape) if shape is not None else np.shape(data)
        if given_sample and stride is None:
            raise ValueError("a sample given without its stride")
        if stride is None:
            stride = 2 if min(shape) >= SAMPLED_FROM and mesh % 2 == 0 else 1
        if mesh % stride:
            raise ValueError(f"a mesh of {mesh} pixels cannot be sampled every {stride}: "
                             "use a stride that divides it")
        self.shape = shape
        self.stride = stride
        if stride == 1:
            sample = np.ascontiguousarray(data, dtype=np.float32)
            sample_mask = None if mask is None else np.ascontiguousarray(mask)
        else:
            sample = np.ascontiguousarray(data if given_sample else data[::stride, ::stride],
                                          dtype=np.float32)
            sample_mask = None if mask is None else np.ascontiguousarray(
                mask if np.shape(mask) == sample.shape else mask[::stride, ::stride])
        self._sep = sep.Background(sample, mask=sample_mask, bw=mesh // stride,
                                   bh=mesh // stride, fw=filter_size, fh=filter_size)
        self.globalback = float(self._sep.globalback)
        self.globalrms = float(self._sep.globalrms)
        self._cell = mesh // stride

    def sampled(self, array: np.ndarray) -> np.ndarray:
        """The pixels of a frame-shaped ``array`` that the background was measured on."""
        return array if self.stride == 1 else array[::self.stride, ::self.stride]

    def back(self, sampled: bool = False) -> np.ndarray:
        """The background, float32, frame-shaped (``sampled``: on the sampled pixels); a new
        array each call, the caller's to change."""
        if self.stride == 1:
            return self._sep.back()
        if sampled:
            return self._sampled_back.copy()
        return self.level().evaluate()

    def rms(self, sampled: bool = False) -> np.ndarray:
        """The background's rms, float32, frame-shaped (``sampled``: on the sampled
        pixels); a new array each call, the caller's to change."""
        if self.stride == 1:
            return self._sep.rms()
        if sampled:
            return self._sampled_rms.copy()
        return self.rms_level().evaluate()

    def subfrom(self, array: np.ndarray) -> None:
        """Subtract the background from the float32 frame ``array`` in place."""
        if self.stride == 1:
            self._sep.subfrom(array)
        else:
            array -= self.back()

    def level(self) -> MeshLevel | None:
        """The background as its spline's node values (small; None when measured on every
        pixel, where sep's own spline is the background)."""
        return self._nodes(self._sampled_back) if self.stride > 1 else None

    def rms_level(self) -> MeshLevel | None:
        """The rms as its spline's node values (None as for :meth:`level`)."""
        return self._nodes(self._sampled_rms) if self.stride > 1 else None

    def _nodes(self, sampled: np.ndarray) -> MeshLevel:
        return MeshLevel(_cell_values(sampled, self._cell), self.shape, self._cell * self.stride)

    @cached_property
    def _sampled_back(self) -> np.ndarray:
        return self._sep.back()

    @cached_property
    def _sampled_rms(self) -> np.ndarray:
        return self._sep.rms()



@dataclass(frozen=True)
class MeshLevel:
    """A smooth level over a frame as the natural bicubic spline through the centres of its
    ``mesh``-pixel cells: the node values (a few thousand numbers for a 4096² frame, cheap to
    keep with a frame and to send to another process), evaluated where it is needed. Linear
    in the nodes, so sums and scalings of levels are made on the nodes."""

    nodes: np.ndarray           # float32, one per cell (rows × columns of cells)
    shape: tuple[int, int]      # the frame's
    mesh: int

    def evaluate(self, stride: int = 1) -> np.ndarray:
        """The level at every ``stride``-th pixel of each axis (1: the whole frame), float32."""
        rows = _spline_weights(self.nodes.shape[0], self.mesh, self.shape[0])[::stride]
        columns = _spline_weights(self.nodes.shape[1], self.mesh, self.shape[1])[::stride]
        return np.ascontiguousarray((rows @ self.nodes) @ columns.T, dtype=np.float32)

    def combined(self, other: MeshLevel, scale: float = 1.0, offset: float = 0.0
                 ) -> MeshLevel:
        """This level plus ``scale`` × (``other`` + ``offset``), on the same mesh."""
        if other.shape != self.shape or other.mesh != self.mesh:
            raise ValueError(f"levels on different meshes: {other.mesh} px over {other.shape}, "
                             f"{self.mesh} px over {self.shape}")
        nodes = self.nodes.astype(np.float64) + scale * (other.nodes.astype(np.float64)
                                                         + offset)
        return MeshLevel(nodes.astype(np.float32), self.shape, self.mesh)

    def scaled(self, scale: float, offset: float = 0.0) -> MeshLevel:
        """``scale`` × (this level + ``offset``)."""
        nodes = scale * (self.nodes.astype(np.float64) + offset)
        return MeshLevel(nodes.astype(np.float32), self.shape, self.mesh)


def _cell_values(sampled: np.ndarray, cell: int) -> np.ndarray:
    """The spline's value at each cell's centre (its node), read off sep's evaluation on the
    sample: the mean of the four pixels around the centre (the spline is smooth on a cell's
    scale, so that is the node's value to far below the rms's precision)."""
    height, width = sampled.shape
    nodes_y = _node_positions(-(-height // cell), cell)
    nodes_x = _node_positions(-(-width // cell), cell)
    low_y = np.clip(np.floor(nodes_y).astype(int), 0, height - 1)
    low_x = np.clip(np.floor(nodes_x).astype(int), 0, width - 1)
    high_y, high_x = np.minimum(low_y + 1, height - 1), np.minimum(low_x + 1, width - 1)
    corners = [sampled[np.ix_(rows, columns)].astype(np.float64)
               for rows in (low_y, high_y) for columns in (low_x, high_x)]
    return (0.25 * sum(corners)).astype(np.float32)


def _node_positions(count: int, cell: int) -> np.ndarray:
    """The centres of ``count`` cells of ``cell`` pixels along an axis, in pixel coordinates
    (sep's: evenly spaced, a partial last cell's too)."""
    return np.arange(count) * cell + (cell - 1) / 2.0


@lru_cache(maxsize=16)
def _spline_weights(count: int, cell: int, length: int) -> np.ndarray:
    """The natural cubic spline through ``count`` nodes of ``cell``-pixel cells as a matrix
    that takes node values to the axis's ``length`` pixels; past the end nodes the end
    segments' cubics go on, as sep's do."""
    from scipy.interpolate import CubicSpline

    nodes = _node_positions(count, cell)
    if nodes.size == 1:
        return np.ones((length, 1), dtype=np.float32)
    if nodes.size == 2:  # a natural spline through two points is their line
        slope = (np.arange(length) - nodes[0]) / (nodes[1] - nodes[0])
        return np.column_stack([1.0 - slope, slope]).astype(np.float32)
    spline = CubicSpline(nodes, np.eye(nodes.size), bc_type="natural")
    weights = spline(np.arange(length, dtype=np.float64)).astype(np.float32)
    weights.flags.writeable = False  # cached: shared by every caller
    return weights
