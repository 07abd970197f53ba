"""Finding the stars a PSF can be measured on, and cutting them out.

Sources come from Source Extractor's algorithm (``sep``, Barbary 2016): a mesh background and
its noise, then sources above a threshold, deblended, with a segmentation map. A PSF star is
unblended, high in S/N, unsaturated, away from edges and masked pixels, of the frame's
typical size, and has no bright neighbour over its core. Fainter or farther neighbours do not
disqualify it — their pixels (their segments, grown by two pixels) are masked out of its
stamp — which is what lets a crowded field such as a globular cluster still give stars.
sep's deblending runs on 16 levels instead of its default 32: on a 4096² field of 3300 stars
it split 96 objects instead of 102 and cost 0.05-0.1 s less; the PSF, saturation and
science-profile tests pass as before (their figures were not compared digit by digit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.imaging import filtered_objects, sep_calls
from streamer.imaging.clipped_stats import nan_median
from streamer.imaging.mesh_background import MeshBackground, MeshLevel, levelled
from streamer.imaging.segment_map import SegmentMap
from streamer.imaging.validation import at_or_above
from streamer.imaging.sparse_masks import grown

MIN_PEAK_SNR = 20.0
OBJECT_FLAGS = 1 | 2 | 8 | 16   # sep: merged, truncated, singular, deblending overflow
DEBLEND_THRESHOLDS = 16       # sep: 32 by default; see the module notes
CORE_NEIGHBOUR_FLUX = 0.01      # a neighbour this bright (relative) over the core disqualifies


@dataclass
class Detection:
    """A frame's sources and what was learnt detecting them."""

    objects: np.ndarray        # sep's catalogue
    subtracted: np.ndarray     # the frame less the mesh background, float32
    # The segmentation map (object index + 1; 0 sky): sep's frame, or the pixels in objects
    segment_map: SegmentMap | np.ndarray
    noise: float               # global background rms
    background: MeshLevel | None = None  # the mesh background's nodes (the catalogue's too)
    # Whether ``subtracted`` is the frame as given less ``background`` by
    # :func:`~streamer.imaging.mesh_background.levelled`, nothing excluded (the catalogue's
    # own frame less its background, which it can then take over).
    plain: bool = False
    # The frame's pixels at or above a level, by level, for the frame they were found in.
    _scans: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.segment_map, np.ndarray):
            self.segment_map = SegmentMap.from_map(self.segment_map)

    def at_or_above(self, image: np.ndarray, level: float) -> np.ndarray:
        """Row-major positions (ascending) of ``image``'s pixels at or above ``level`` (NaN:
        not); asked again for the same frame and level — the PSF stars' flagged pixels and
        the saturation's both ask for the linear limit — the same list, not another pass."""
        kept = self._scans.get(level)
        if kept is not None and kept[0] is image:
            return kept[1]
        found = at_or_above(image, level)
        found.flags.writeable = False  # handed to every asker
        self._scans[level] = (image, found)
        return found

    @property
    def segments(self) -> np.ndarray:
        """The segmentation map as a frame (made on first use when the detection listed
        its pixels: readers of a few pixels use :meth:`labels_at`)."""
        return self.segment_map.whole()

    def labels_at(self, flat: np.ndarray) -> np.ndarray:
        """The segmentation map at the row-major positions ``flat`` (any shape)."""
        return self.segment_map.at(flat)

    @property
    def rows(self) -> np.ndarray:
        return np.rint(self.objects["y"]).astype(int)

    @property
    def columns(self) -> np.ndarray:
        return np.rint(self.objects["x"]).astype(int)

    def in_segments(self) -> np.ndarray:
        """The positions (row-major, ascending) of the pixels in any source's segment."""
        return self.segment_map.positions

    def unflagged(self) -> np.ndarray:
        """Indices of the sources sep did not flag (blended, truncated, ...)."""
        return np.flatnonzero((self.objects["flag"] & OBJECT_FLAGS) == 0)


def detect(data: np.ndarray, invalid: np.ndarray, detect_sigma: float) -> Detection:
    """Background, noise and sources of a frame (``invalid`` pixels masked)."""
    excluded = bool(invalid.any())
    # No mask where nothing is excluded: sep reads a mask pixel by pixel however empty it is
    # (0.06 s of a 4096² extraction's 0.3), and finds the same objects without one.
    mask = invalid if excluded else None
    subtracted, background, plain = _less_background(data, mask)
    noise = float(background.globalrms) or float(np.std(subtracted[~invalid])) or 1.0
    threshold = detect_sigma
    if not excluded:  # the same extraction from the pixels above the threshold, 0.1 s less
        try:
            found = filtered_objects.extract(
                subtracted, threshold * noise, minarea=5, deblend_cont=0.005,
                deblend_nthresh=DEBLEND_THRESHOLDS, limit=sep_calls.DEFAULT_PIXSTACK)
        except Exception as error:  # a window's deblending overflowed (thousands of peaks
            if not sep_calls.overflowed(error):  # in one object): the loop below copes
                raise
            found = None
        if found is not None:
            return Detection(found[0], subtracted, found[1], noise, background.level(), plain)
    # sep's default pixel stack first (a larger one costs its allocation at every call),
    # then a quarter of the frame; crowded frames that overflow both: raise the threshold.
    stacks = (sep_calls.DEFAULT_PIXSTACK, max(sep_calls.DEFAULT_PIXSTACK, data.size // 4))
    for attempt in range(5):
        try:
            objects, segments = sep_calls.extract(
                subtracted, threshold, pixstack=stacks[min(attempt, 1)], err=noise, mask=mask,
                minarea=5, deblend_cont=0.005, segmentation_map=True,
                deblend_nthresh=DEBLEND_THRESHOLDS)
            return Detection(objects, subtracted, segments, noise, background.level(), plain)
        except Exception as error:  # sep raises a bare Exception on buffer overflows
            if not sep_calls.overflowed(error):
                raise
            if attempt >= 1:
                threshold *= 2.0
    empty = np.zeros(0, dtype=[("x", float), ("y", float), ("flag", int), ("flux", float),
                                ("peak", float), ("a", float)])
    return Detection(empty, subtracted, np.zeros(data.shape, np.int32), noise,
                     background.level(), plain)


def _less_background(data: np.ndarray, invalid: np.ndarray | None
                     ) -> tuple[np.ndarray, MeshBackground, bool]:
    """The frame less its 64 px mesh background (float32, ours), that background, and
    whether the first is ``levelled(data, background.level())``; ``invalid`` pixels (None:
    there are none) filled with the median first."""
    if invalid is None and np.result_type(data.dtype, np.float32) == np.float32:
        # A 16-bit or float32 frame: the background is measured on its sample as it is, and
        # the frame less it is written a few rows at a time — no float32 copy of the frame
        # first (the same float32 arithmetic as the copy's, below).
        background = MeshBackground(data, 64)
        if background.stride > 1:
            return levelled(data, background.level()), background, True
    if invalid is not None:
        filled = np.where(invalid, np.median(data[~invalid]), data).astype(np.float32)
    else:  # no median of 4 M pixels to fill nothing (40 ms at 2048²)
        filled = np.array(data, dtype=np.float32)  # a copy: the background comes off in place
    background = MeshBackground(filled, 64, invalid)
    background.subfrom(filled)
    return filled, background, False


def candidates(detection: Detection, image: np.ndarray, invalid: np.ndarray,
               peak_limit: float | None, half: int, flagged: np.ndarray | None = None
               ) -> np.ndarray:
    """Indices of unflagged, high-S/N sources peaking below ``peak_limit`` (the linear
    limit, as stored) whose ``half``-box is inside the frame and free of invalid pixels,
    brightest first. ``flagged``: :func:`flagged_pixels` of the same frame, when listed
    already (a caller choosing candidates twice compares the frame with the limit once)."""
    objects = detection.objects
    rows, columns = detection.rows, detection.columns
    height, width = image.shape
    keep = np.zeros(len(objects), dtype=bool)
    keep[detection.unflagged()] = True
    keep &= objects["peak"] >= MIN_PEAK_SNR * detection.noise
    keep &= (rows >= half) & (rows < height - half) & (columns >= half) & (columns < width - half)
    chosen = np.flatnonzero(keep)
    if flagged is None:
        flagged = flagged_pixels(image, invalid, peak_limit)
    chosen = chosen[_boxes_free(flagged, image.shape, rows[chosen], columns[chosen], half)]
    return chosen[np.argsort(objects["flux"][chosen])[::-1]]


def flagged_pixels(image: np.ndarray, invalid: np.ndarray, peak_limit: float | None,
                   detection: Detection | None = None) -> np.ndarray:
    """The positions (row-major, ascending) of the pixels no PSF star's box may hold:
    ``invalid``, or at or above ``peak_limit`` (the linear limit, as stored; found through
    ``detection``'s :meth:`Detection.at_or_above` when given)."""
    where = np.flatnonzero(invalid)
    if peak_limit is not None:
        # NaN: not a hot pixel (and invalid anyway)
        hot = (detection.at_or_above(image, peak_limit) if detection is not None
               else at_or_above(image, peak_limit))
        where = np.union1d(where, hot) if where.size else hot
    return where


PAIRS_LIMIT = 1 << 22  # box-pixel pairs compared at once; more (a frame of flagged pixels):
                       # each box read instead


def _boxes_free(where: np.ndarray, shape: tuple[int, int], rows: np.ndarray,
                columns: np.ndarray, half: int) -> np.ndarray:
    """Which ``half``-boxes about ``(rows, columns)`` (inside a frame of ``shape``) hold
    none of the flagged pixels at ``where`` (row-major positions, ascending). A frame's
    flagged pixels (excluded, or at the linear limit) are few: each box is compared with the
    flagged pixels of its rows — reading every box's pixels cost 0.01-0.03 s a call on a
    4096² frame's 3000 candidates."""
    free = np.ones(rows.size, bool)
    if where.size == 0 or rows.size == 0:
        return free
    flagged_rows, flagged_columns = np.divmod(where, shape[1])
    low = np.searchsorted(flagged_rows, rows - half, side="left")
    high = np.searchsorted(flagged_rows, rows + half, side="right")
    counts = high - low
    if counts.sum() > PAIRS_LIMIT:
        flagged = np.zeros(shape, bool)
        flagged.ravel()[where] = True
        steps = np.arange(-half, half + 1)
        for start in range(0, rows.size, 512):  # a few hundred boxes at a time
            box_rows = (rows[start: start + 512, None] + steps)[:, :, None]
            box_columns = (columns[start: start + 512, None] + steps)[:, None, :]
            free[start: start + 512] = ~flagged[box_rows, box_columns].any(axis=(1, 2))
        return free
    owner = np.repeat(np.arange(rows.size), counts)
    pixel = np.repeat(low - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    inside = np.abs(flagged_columns[pixel] - columns[owner]) <= half
    free[owner[inside]] = False
    return free


def clear_cores(detection: Detection, indices: np.ndarray, core_radius: float) -> np.ndarray:
    """The ``indices`` with no neighbour brighter than ``CORE_NEIGHBOUR_FLUX`` of their flux
    within ``core_radius`` (any source at all, flagged or not)."""
    from scipy.spatial import cKDTree

    if indices.size == 0:
        return indices
    objects = detection.objects
    points = np.column_stack([objects["y"], objects["x"]])
    indices = np.asarray(indices, dtype=int)
    # Every candidate's neighbours in one query, then one array test (a query and a Python
    # test per candidate cost 0.03 s for a 4096² frame's thousand).
    near = cKDTree(points).query_ball_point(points[indices], core_radius)
    counts = np.fromiter((len(found) for found in near), dtype=int, count=indices.size)
    owner = np.repeat(np.arange(indices.size), counts)
    neighbour = (np.concatenate([np.asarray(found, dtype=int) for found in near])
                 if counts.sum() else np.zeros(0, int))
    flux = objects["flux"]
    bright = ((neighbour != indices[owner])
              & (flux[neighbour] > CORE_NEIGHBOUR_FLUX * flux[indices[owner]]))
    blocked = np.bincount(owner[bright], minlength=indices.size) > 0
    return indices[~blocked]


def stamps(detection: Detection, indices: np.ndarray, half: int) -> list[np.ndarray]:
    """The background-subtracted box of side ``2 half + 1`` around each of the sources
    ``indices`` (boxes inside the frame), its neighbours' pixels (their segments grown by two
    pixels) set to NaN, less its local sky (:func:`local_skies`) — cut, masked and levelled
    together (one at a time cost 0.1 s for a 4096² frame's 150 PSF stars)."""
    indices = np.asarray(indices, dtype=int)
    if indices.size == 0:
        return []
    steps = np.arange(-half, half + 1)
    rows = (detection.rows[indices][:, None] + steps)[:, :, None]
    columns = (detection.columns[indices][:, None] + steps)[:, None, :]
    values = np.asarray(detection.subtracted[rows, columns], dtype=np.float64)
    segments = detection.labels_at(rows * detection.subtracted.shape[1] + columns)
    others = grown((segments != 0) & (segments != (indices + 1)[:, None, None]), 2)
    values[others] = np.nan
    return list(values - local_skies(values))


def _solved(normal: np.ndarray, right: np.ndarray, design: np.ndarray, weights: np.ndarray,
            target: np.ndarray) -> np.ndarray:
    """The weighted least-squares planes: each system ``normal[i] c = right[i]``, and where
    one is (nearly) singular — the pixels kept all on one line — ``lstsq`` of the kept
    pixels themselves (its minimum-norm answer, as a stamp alone would get)."""
    singular = np.linalg.cond(normal) > 1e10
    solved = np.zeros(right.shape)
    if (~singular).any():
        solved[~singular] = np.linalg.solve(normal[~singular], right[~singular][:, :, None])[
            :, :, 0]
    for index in np.flatnonzero(singular):
        kept = weights[index] > 0
        solved[index] = np.linalg.lstsq(design[kept], target[index][kept], rcond=None)[0]
    return solved


def local_skies(values: np.ndarray) -> np.ndarray:
    """For each stamp of the cube ``values`` (stamps × side × side), a plane fitted to its outer
    ring (its three outermost pixel rings), outliers clipped (3σ from the MAD, up to three
    fits): the mesh background is too coarse near galaxies, nebulae and cluster cores, and a
    constant or a slope left in every stamp would stack into a pedestal under the PSF. The
    stamps' weighted normal equations are solved together."""
    count, side, _ = values.shape
    half = side // 2
    ys, xs = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float64)
    outer = np.maximum(np.abs(ys), np.abs(xs)) >= half - 2
    design = np.column_stack([np.ones(int(outer.sum())), ys[outer], xs[outer]])
    target = values[:, outer]                                  # stamps × ring pixels
    finite = np.isfinite(target)
    target = np.where(finite, target, 0.0)
    keep = finite.copy()
    coefficients = np.zeros((count, 3))
    active = finite.sum(axis=1) >= 12  # fewer: no plane, 0
    for _ in range(3):  # fit, then drop 3-sigma outliers (sigma from the MAD) and refit
        if not active.any():
            break
        weights = keep[active].astype(np.float64)
        normal = np.einsum("nk,ki,kj->nij", weights, design, design)
        right = np.einsum("nk,ki,nk->ni", weights, design, target[active])
        coefficients[active] = _solved(normal, right, design, weights, target[active])
        residual = target[active] - coefficients[active] @ design.T
        kept = np.where(keep[active], residual, np.nan)
        spread = 1.4826 * nan_median(np.abs(kept - nan_median(kept, 1)[:, None]), 1)
        new_keep = np.where((spread > 0)[:, None],
                            (np.abs(residual) <= 3.0 * spread[:, None]) & finite[active],
                            keep[active])
        done = (new_keep.sum(axis=1) < 12) | np.all(new_keep == keep[active], axis=1)
        still = np.flatnonzero(active)[~done]
        keep[still] = new_keep[~done]
        active[np.flatnonzero(active)[done]] = False
    return (coefficients[:, 0, None, None] + coefficients[:, 1, None, None] * ys
            + coefficients[:, 2, None, None] * xs)
