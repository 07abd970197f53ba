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

from streamer.imaging.kept_arrays import FRAMES

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
            levelled(array, self.level(), out=array)

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

    def on_grid(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The level at every pixel of the grid ``rows`` × ``columns`` (float32): two small
        matrix products, as :meth:`evaluate`."""
        weights_y = _spline_weights(self.nodes.shape[0], self.mesh, self.shape[0])[rows]
        weights_x = _spline_weights(self.nodes.shape[1], self.mesh, self.shape[1])[columns]
        return ((weights_y @ self.nodes) @ weights_x.T).astype(np.float32)

    def at(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The level at the pixels ``(rows, columns)`` (float64): what :meth:`evaluate`
        gives there, without the whole frame."""
        weights_y = _spline_weights(self.nodes.shape[0], self.mesh, self.shape[0])
        weights_x = _spline_weights(self.nodes.shape[1], self.mesh, self.shape[1])
        along = weights_y[np.asarray(rows)].astype(np.float64) @ self.nodes.astype(np.float64)
        return np.einsum("ij,ij->i", along, weights_x[np.asarray(columns)])

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


def levelled(values: np.ndarray, level: MeshLevel, scale: MeshLevel | None = None,
             floor: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """``values − level`` (divided by ``max(scale, floor)`` when a ``scale`` is given), into
    ``out`` (float32, frame-shaped; may be ``values`` itself) or a new float32 frame;
    ``values``: frame-shaped, float32 or an integer type float32 holds. The
    levels are never evaluated whole: a few rows at a time, each row's value being the cubic
    of its segment between two node rows (four terms a pixel, not one per node row), so
    they stay in the cache beside the rows they level. Equal to :meth:`MeshLevel.evaluate`'s
    arithmetic to float32 rounding; 0.05 s where the two levels evaluated whole and applied
    cost 0.09 at 4096² (one core)."""
    if level.nodes.shape[0] < 2 or (scale is not None and (
            scale.shape != level.shape or scale.mesh != level.mesh
            or scale.nodes.shape != level.nodes.shape)):
        out = np.subtract(values, level.evaluate(), out=out, dtype=np.float32)
        if scale is not None:
            out /= np.maximum(scale.evaluate(), np.float32(floor))
        return out
    blocks, coefficients = _row_pieces(level.nodes.shape[0], level.mesh, level.shape[0])
    stacked = [_segment_rows(item) for item in ((level,) if scale is None else (level, scale))]
    out = FRAMES.empty(level.shape, np.float32) if out is None else out
    longest = max(end - start for start, end, _ in blocks)
    narrow = values.dtype.kind in "ui" and values.dtype.itemsize <= 2  # float32 holds them
    buffers = [np.empty((longest, level.shape[1]), np.float32) for _ in stacked]
    for start, end, segment in blocks:
        rows = end - start
        for buffer, rows_of in zip(buffers, stacked):
            np.matmul(coefficients[start:end], rows_of[segment], out=buffer[:rows])
        if narrow:  # converted by a copy (exact), then levelled in place: half the time
            np.copyto(out[start:end], values[start:end], casting="unsafe")  # of a mixed
            out[start:end] -= buffers[0][:rows]                            # subtract
        else:
            np.subtract(values[start:end], buffers[0][:rows], out=out[start:end])
        if scale is not None:
            np.maximum(buffers[1][:rows], np.float32(floor), out=buffers[1][:rows])
            np.divide(out[start:end], buffers[1][:rows], out=out[start:end])
    return out


ROWS_PER_BLOCK = 32  # rows levelled together: two levels' blocks and the rows fit the cache


def _segment_rows(level: MeshLevel) -> np.ndarray:
    """For each segment between two node rows, the four rows its cubic combines: the
    spline's values along the frame's columns at the two node rows and their second
    derivatives across them (segments × 4 × width, float32)."""
    count = level.nodes.shape[0]
    along = level.nodes.astype(np.float64) @ _spline_weights(
        level.nodes.shape[1], level.mesh, level.shape[1]).T.astype(np.float64)
    curvature = _second_derivatives(count, level.mesh) @ along
    segments = np.arange(count - 1)
    return np.stack([along[segments], along[segments + 1], curvature[segments],
                     curvature[segments + 1]], axis=1).astype(np.float32)


@lru_cache(maxsize=16)
def _second_derivatives(count: int, cell: int) -> np.ndarray:
    """The natural cubic spline's second derivatives at its ``count`` evenly spaced nodes
    as a matrix of the node values (0 at the end nodes)."""
    system, right = np.eye(count), np.zeros((count, count))
    for node in range(1, count - 1):
        system[node, node - 1: node + 2] = (cell / 6.0, 2.0 * cell / 3.0, cell / 6.0)
        right[node, node - 1: node + 2] = (1.0 / cell, -2.0 / cell, 1.0 / cell)
    return np.linalg.solve(system, right)


@lru_cache(maxsize=16)
def _row_pieces(count: int, cell: int, length: int
                ) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """The frame's rows as blocks of at most ``ROWS_PER_BLOCK`` within one segment (start,
    end, segment; past the end nodes, the end segments' cubics go on), and each row's four
    weights of its segment's rows (:func:`_segment_rows`), float32."""
    nodes = _node_positions(count, cell)
    rows = np.arange(length, dtype=np.float64)
    segment = _row_segments(count, cell, length)
    upper = (nodes[segment + 1] - rows) / cell
    lower = 1.0 - upper
    weights = np.column_stack([upper, lower, (upper**3 - upper) * cell * cell / 6.0,
                               (lower**3 - lower) * cell * cell / 6.0]).astype(np.float32)
    weights.flags.writeable = False
    blocks = []
    start = 0
    while start < length:
        end = min(start + ROWS_PER_BLOCK, length)
        end = start + int(np.count_nonzero(segment[start:end] == segment[start]))
        blocks.append((start, end, int(segment[start])))
        start = end
    return blocks, weights


@lru_cache(maxsize=16)
def _row_segments(count: int, cell: int, length: int) -> np.ndarray:
    """Each row's segment between two node rows (past the end nodes, the end segments)."""
    rows = np.arange(length, dtype=np.float64)
    segment = np.clip(np.floor((rows - _node_positions(count, cell)[0]) / cell).astype(np.int32),
                      0, count - 2)
    segment.flags.writeable = False
    return segment


def spline_rows(level: MeshLevel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level as :func:`levelled` evaluates it, for evaluation at any pixel in four terms:
    each segment's four rows (segments × 4 × width, :func:`_segment_rows`), each frame row's
    four weights of them (rows × 4) and its segment (rows), float32 and int32. Needs two or
    more node rows."""
    count = level.nodes.shape[0]
    _, weights = _row_pieces(count, level.mesh, level.shape[0])
    return _segment_rows(level), weights, _row_segments(count, level.mesh, level.shape[0])


def levelled_at(values: np.ndarray, rows: np.ndarray, columns: np.ndarray, level: MeshLevel,
                scale: MeshLevel | None = None, floor: float = 1.0) -> np.ndarray:
    """:func:`levelled` at the pixels ``(rows, columns)`` only, whose values are ``values``
    (float32): the same four-term arithmetic per pixel, equal to it to float32 rounding."""
    levels = []
    for item in (level,) if scale is None else (level, scale):
        if item.nodes.shape[0] < 2:
            levels.append(item.at(rows, columns).astype(np.float32))
            continue
        tables, weights, segments = spline_rows(item)
        # Flat positions into the tables: one gather per term, not a 2-D fancy index.
        width = item.shape[1]
        flat = segments[rows] * np.int64(4 * width) + columns
        of_row = weights[rows]
        table = tables.ravel()
        total = of_row[:, 0] * table.take(flat)
        for term in (1, 2, 3):
            total += of_row[:, term] * table.take(flat + term * width)
        levels.append(total)
    out = np.subtract(values, levels[0], dtype=np.float32)
    if scale is not None:
        out /= np.maximum(levels[1], np.float32(floor))
    return out
