"""The objects of a thresholded S/N map, as sep (Source Extractor's algorithm) lists them,
from the map's pixels above the threshold alone.

sep scans and deblends a whole 4096² map (0.17-0.25 s of one core, and the map must be on the
host). But deblending can only split an object that holds two or more local maxima (each part
it separates at a higher level has its own highest pixel, a local maximum of the map), and most
objects hold one. So the pixels above the threshold — which the device lists
(:mod:`streamer.restoration.map_candidates`), or the host finds on a map it made — are joined
into 8-connected objects through their runs along the rows, every object is described from its
pixels as arrays (sep's definitions: intensity-weighted centroid and second moments, the
ellipse, peak and box), and sep runs only on the objects with two or more maxima, each alone on
its own box. The undeblended objects sep split are their parents, at no extra cost.

sep's *cleaning* is off: it merges a faint object into a bright neighbour whose wing could
have made it, reaching across objects, which no per-object pass can repeat. On the catalogue
test's field that found 5 more real stars beside bright ones and no false ones; every source
must stand by its own PSF fit on the data anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from streamer.imaging import sep_calls

MINAREA = 3  # pixels above the threshold an object needs (one noise spike is not a star)
DEBLEND_CONTRAST = 0.005
# sep's default is 32 levels. 16 kept every figure of the sources profile (completeness,
# false detections, pairs split, centroids) and costs less; 8 doubled the false detections.
DEBLEND_THRESHOLDS = 16
SEP_OBJ_MERGED = 1  # sep's object flag: split from its parent by the deblending
SEP_OBJ_TRUNC = 2   # ... touches the frame's edge
SEP_OBJ_SINGU = 8   # ... its moments were singular (a line of pixels): widened by 1/12


@dataclass(frozen=True)
class MapPixels:
    """A levelled S/N map where a detection reads it: its pixels above ``threshold``
    (``index``: row-major positions, ascending; ``values``: float32), and either the whole
    map or the values of the pixels the device listed near the threshold (``known_index``,
    ``known_values``; any other pixel lies below them)."""

    shape: tuple[int, int]
    threshold: float
    index: np.ndarray
    values: np.ndarray
    full: np.ndarray | None = None
    known_index: np.ndarray | None = None
    known_values: np.ndarray | None = None

    @classmethod
    def of_map(cls, snr: np.ndarray, threshold: float, mask: np.ndarray | None
               ) -> MapPixels:
        """The pixels of a whole map above ``threshold``, ``mask``'s left out."""
        above = snr > threshold
        if mask is not None:
            above &= ~mask
        index = np.flatnonzero(above)
        return cls(snr.shape, float(threshold), index, snr.ravel()[index], full=snr)

    @classmethod
    def of_known(cls, shape: tuple[int, int], threshold: float, index: np.ndarray,
                 values: np.ndarray) -> MapPixels:
        """From the values of some pixels (``index`` ascending): those above ``threshold``,
        the rest kept for :meth:`at`."""
        above = values > threshold
        return cls(shape, float(threshold), index[above], values[above],
                   known_index=index, known_values=values)

    def at(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The map at the pixels ``(rows, columns)``; −inf where only known to be lower than
        every pixel listed."""
        if self.full is not None:
            return self.full[rows, columns]
        wanted = np.asarray(rows, np.int64) * self.shape[1] + columns
        if self.known_index.size == 0:
            return np.full(wanted.shape, -np.inf)
        slot = np.minimum(np.searchsorted(self.known_index, wanted), self.known_index.size - 1)
        return np.where(self.known_index[slot] == wanted, self.known_values[slot], -np.inf)


def objects(pixels: MapPixels) -> tuple[np.ndarray, np.ndarray]:
    """sep's deblended objects of the map (cleaning off, see the module notes), in sep's
    order (by the row of an object's last pixel, then its first column), and the
    undeblended objects the deblending split (the parents)."""
    dtype = sep_dtype()
    height, width = pixels.shape
    if pixels.index.size == 0:
        return np.zeros(0, dtype), np.zeros(0, dtype)
    rows, columns = np.divmod(pixels.index, width)
    owner, count = _components(rows, columns, width)
    values = pixels.values.astype(np.float64)
    described = _described(dtype, count, owner, rows, columns, values, pixels.threshold,
                           pixels.shape)
    maxima = np.bincount(owner[_local_maxima(pixels.index, values, rows, columns, width)],
                         minlength=count)
    npix = described["npix"]
    children, parents = [described[(npix >= MINAREA) & (maxima <= 1)]], []
    several = (npix >= MINAREA) & (maxima >= 2)
    # The few objects to deblend: their pixels gathered object by object.
    members = np.flatnonzero(several[owner])
    members = members[np.argsort(owner[members], kind="stable")]
    bounds = np.cumsum(np.bincount(owner[members], minlength=count)[several])
    for component, pixels_of in zip(np.flatnonzero(several),
                                    np.split(members, bounds[:-1])):
        split = _deblended(rows[pixels_of], columns[pixels_of], pixels.values[pixels_of],
                           described[component], pixels)
        children.append(split)
        if len(split) >= 2:
            parents.append(described[component])
    found = np.concatenate(children)
    found = found[np.lexsort((found["xmin"], found["ymax"]))]
    parents = np.array(parents, dtype=dtype)
    return found, parents[np.lexsort((parents["xmin"], parents["ymax"]))]


@lru_cache(maxsize=1)
def sep_dtype() -> np.dtype:
    """sep's object record (:func:`objects` fills the fields sep fills)."""
    return _sep_extract(np.zeros((8, 8), np.float32), 1.0).dtype


def _components(rows: np.ndarray, columns: np.ndarray, width: int
                ) -> tuple[np.ndarray, int]:
    """Each pixel's 8-connected component (numbered from 0 in order of first pixel) and
    their count: the pixels' runs along rows, each joined to the runs of the row above that
    come within a pixel of it, as a sparse graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    index = rows * width + columns
    starts = np.flatnonzero((np.diff(index, prepend=-2) != 1) | (columns == 0))
    run_row, run_first = rows[starts], columns[starts]
    run_last = np.append(columns[starts[1:] - 1], columns[-1])
    # Keys that sort runs row by row; a run overlaps the row above's runs from the first
    # whose last column reaches its first − 1 up to the last that starts by its last + 1.
    stride = width + 4
    first_keys, last_keys = run_row * stride + run_first, run_row * stride + run_last
    above_base = (run_row - 1) * stride
    low = np.searchsorted(last_keys, above_base + run_first - 1, side="left")
    high = np.searchsorted(first_keys, above_base + run_last + 1, side="right")
    links = np.maximum(high - low, 0)
    this = np.repeat(np.arange(starts.size), links)
    other = np.repeat(low, links) + _ramps(links)
    runs = starts.size
    graph = coo_matrix((np.ones(this.size, np.int8), (this, other)), shape=(runs, runs))
    count, run_label = connected_components(graph, directed=False)
    # connected_components numbers components by their first run: by first pixel.
    return np.repeat(run_label, np.diff(np.append(starts, index.size))), int(count)


def _ramps(lengths: np.ndarray) -> np.ndarray:
    """0, 1, …, n−1 for each n of ``lengths``, concatenated."""
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    return np.arange(total) - np.repeat(ends - lengths, lengths)


def _local_maxima(index: np.ndarray, values: np.ndarray, rows: np.ndarray,
                  columns: np.ndarray, width: int) -> np.ndarray:
    """Which pixels are at least as high as each of their 8 neighbours that is listed too
    (their object's local maxima; a plateau's every pixel). Along a row the neighbours are
    the next and previous pixels listed, so the row's maxima are found first and only they
    look up the rows above and below."""
    peak = np.ones(index.size, bool)
    beside = np.flatnonzero((index[1:] == index[:-1] + 1) & (columns[1:] != 0))
    left, right = values[beside], values[beside + 1]
    peak[beside[left < right]] = False
    peak[beside[right < left] + 1] = False
    candidates = np.flatnonzero(peak)
    for dy in (-1, 1):
        for dx in (-1, 0, 1):
            column = columns[candidates] + dx
            wanted = index[candidates] + dy * width + dx
            slot = np.minimum(np.searchsorted(index, wanted), index.size - 1)
            higher = ((index[slot] == wanted) & (column >= 0) & (column < width)
                      & (values[slot] > values[candidates]))
            peak[candidates[higher]] = False
    return peak


def _described(dtype: np.dtype, count: int, owner: np.ndarray, rows: np.ndarray,
               columns: np.ndarray, values: np.ndarray, threshold: float,
               shape: tuple[int, int],
               groups: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Every object's sep record from its pixels, by sep's definitions (intensity-weighted
    centroid and second moments, a single-pixel-wide object's moments widened by 1/12, the
    ellipse's axes and angle from them; peak, box, pixel count). ``groups``: :func:`grouped`
    of ``owner``, when made already."""
    out = np.zeros(count, dtype)

    def total(weights: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=weights, minlength=count)

    flux = total(values)
    y, x = total(values * rows) / flux, total(values * columns) / flux
    # Second moments about each object's centre: raw sums of x² over a 4096 px frame would
    # cancel most of their digits.
    dy, dx = rows - y[owner], columns - x[owner]
    x2, y2 = total(values * dx * dx) / flux, total(values * dy * dy) / flux
    xy = total(values * dx * dy) / flux
    singular = x2 * y2 - xy * xy < 1.0 / 144.0
    x2, y2 = np.where(singular, x2 + 1.0 / 12.0, x2), np.where(singular, y2 + 1.0 / 12.0, y2)
    half_sum, half_difference = (x2 + y2) / 2.0, (x2 - y2) / 2.0
    root = np.sqrt(half_difference**2 + xy**2)
    order, starts = grouped(owner, count) if groups is None else groups
    peak, first = group_peaks(values, order, starts)
    ordered_columns = columns[order]
    out["thresh"] = threshold
    out["npix"] = out["tnpix"] = np.bincount(owner, minlength=count)
    out["xmin"] = np.minimum.reduceat(ordered_columns, starts)
    out["xmax"] = np.maximum.reduceat(ordered_columns, starts)
    out["ymin"] = rows[order[starts]]
    out["ymax"] = rows[order[np.append(starts[1:], order.size) - 1]]
    out["x"], out["y"], out["x2"], out["y2"], out["xy"] = x, y, x2, y2, xy
    out["a"] = np.sqrt(half_sum + root)
    out["b"] = np.sqrt(np.maximum(half_sum - root, 0.0))
    out["theta"] = 0.5 * np.arctan2(2.0 * xy, x2 - y2)
    out["flux"] = out["cflux"] = flux
    out["peak"] = out["cpeak"] = values[first]
    out["xpeak"] = out["xcpeak"] = columns[first]
    out["ypeak"] = out["ycpeak"] = rows[first]
    edge = ((out["xmin"] == 0) | (out["ymin"] == 0) | (out["xmax"] == shape[1] - 1)
            | (out["ymax"] == shape[0] - 1))
    out["flag"] = np.where(edge, SEP_OBJ_TRUNC, 0) | np.where(singular, SEP_OBJ_SINGU, 0)
    return out


def grouped(owner: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels ordered object by object (stably: each object's pixels stay in row order)
    and where each object's run starts — for reductions over contiguous runs (ufunc.at is
    ten times slower)."""
    order = np.argsort(owner, kind="stable")
    return order, np.searchsorted(owner[order], np.arange(count))


def group_peaks(values: np.ndarray, order: np.ndarray, starts: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each object's highest value and its pixel (the first of equals in row order), from
    :func:`grouped`."""
    ordered = values[order]
    peak = np.maximum.reduceat(ordered, starts)
    hits = np.flatnonzero(ordered == np.repeat(peak, np.diff(np.append(starts, order.size))))
    return peak, order[hits[np.searchsorted(hits, starts)]]


def placed(found: np.ndarray, top: int, left: int, shape: tuple[int, int]) -> np.ndarray:
    """sep's records of a box whose corner is ``(top, left)`` in a frame of ``shape``, moved
    into the frame's coordinates (in place; returned); the box's own edge is not the
    frame's: only the frame's truncates."""
    for field, offset in (("x", left), ("xmin", left), ("xmax", left), ("xpeak", left),
                          ("xcpeak", left), ("y", top), ("ymin", top), ("ymax", top),
                          ("ypeak", top), ("ycpeak", top)):
        found[field] += offset
    height, width = shape
    edge = ((found["xmin"] == 0) | (found["ymin"] == 0) | (found["xmax"] == width - 1)
            | (found["ymax"] == height - 1))
    found["flag"] = np.where(edge, found["flag"] | SEP_OBJ_TRUNC,
                             found["flag"] & ~SEP_OBJ_TRUNC)
    return found


def _deblended(rows: np.ndarray, columns: np.ndarray, values: np.ndarray, record,
               pixels: MapPixels) -> np.ndarray:
    """sep's objects of one object: sep on its box holding its pixels alone (a pixel wider
    than the object, so that sep sees no edge where the frame has none)."""
    top, left = int(record["ymin"]) - 1, int(record["xmin"]) - 1
    box = np.zeros((int(record["ymax"]) - top + 2, int(record["xmax"]) - left + 2), np.float32)
    box[rows - top, columns - left] = values
    return placed(_sep_extract(box, pixels.threshold), top, left, pixels.shape)


def _sep_extract(box: np.ndarray, threshold: float) -> np.ndarray:
    # The stack must hold the whole object: the box's pixels are an upper bound.
    return sep_calls.extract(box, threshold, pixstack=max(1024, box.size), err=None,
                             minarea=MINAREA, filter_kernel=None,
                             deblend_cont=DEBLEND_CONTRAST,
                             deblend_nthresh=DEBLEND_THRESHOLDS, clean=False)
