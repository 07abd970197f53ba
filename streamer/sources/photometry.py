"""PSF-fit photometry on the linear frame: each source's flux is the amplitude of the frame's
PSF placed at its position, fitted by weighted least squares over a box around it — jointly
for sources whose boxes overlap, so a blend's light is shared, not counted twice.

With positions fixed the fit is linear: for the PSF images ``P_i`` (unit sum, shifted to each
source's sub-pixel position) and weights ``w = 1/σ²`` (the sky's noise, so the weights do not
depend on the data and the fluxes are unbiased), ``A f = b`` with ``A_ij = Σ w P_i P_j`` and
``b_i = Σ w P_i D``. The flux errors carry the whole noise model — sky and the sources' own
Poisson noise, ``var = σ² + max(model, 0)/gain`` — through ``cov = A⁻¹ (Σ w² var P_i P_j) A⁻¹``.

A PSF measured on a stamp misses the light of its wings beyond the stamp (and a real star's
profile is never quite the model): as DAOPHOT does, each frame's fluxes are put on the total
scale by an aperture correction — the mean ratio of a large aperture's light (4 FWHM, on the
same sky as the fit) to the PSF-fit flux over the bright, isolated, clean stars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import shift as subpixel_shift
from scipy.ndimage import spline_filter
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from streamer.sources.spline_taps import box_taps, shifted_sums

REFINE_ITERATIONS = 6    # Gauss–Newton steps of a blend's positions
REFINE_STEP = 0.5        # px per step at most
REFINE_TOLERANCE = 0.01  # px: converged
REFINE_REACH = 1.0       # FWHM a blended source may move from where it was detected
REFINE_NEIGHBOUR_FWHM = 2.0  # a group's positions are fitted when two of it are this close
REFINE_MAX_GROUP = 12    # ... and it is no bigger (a crowded cluster's groups run to hundreds)
SINGLES_PER_BATCH = 2048  # isolated sources fitted together as arrays
EXTEND_FWHM = 4.0        # the PSF model's halo is carried on to this radius
EXTEND_MAX = 0.2         # ... unless that adds more of the light than this
APERTURE_FWHM = 4.0       # radius of the aperture that holds a star's total light
APERTURE_MIN_SNR = 20.0   # S/N in the large aperture (~5× the PSF fit's noise) of a star used
APERTURE_MIN_STARS = 5    # fewer: no correction (1.0), and the catalogue says it used none
APERTURE_PRECISION = 0.005  # the correction's standard error must be below this to be applied
APERTURE_LIMITS = (0.7, 1.4)  # a correction beyond these says the PSF is wrong, not its wings


@dataclass(frozen=True)
class Photometry:
    """Fluxes (ADU), their errors, and each source's fit group (sources fitted together)."""

    flux: np.ndarray
    flux_error: np.ndarray
    x: np.ndarray       # positions the fluxes were fitted at: blends' refined by the fit
    y: np.ndarray
    group: np.ndarray
    group_size: np.ndarray
    masked: np.ndarray  # bool: the fit box holds excluded (NaN) pixels


def fit_radius(fwhm: float) -> int:
    """Half-side of a source's fit box: the PSF core, where its S/N is."""
    return max(2, int(np.ceil(1.5 * fwhm)))


class SplinePSF:
    """A unit-sum PSF ready to be moved by sub-pixel offsets: its cubic-spline coefficients
    computed once, not for every source it is placed at."""

    def __init__(self, psf: np.ndarray) -> None:
        self.psf = np.asarray(psf, dtype=np.float64)
        self.shape = self.psf.shape
        self.coefficients = spline_filter(self.psf, 3, output=np.float64, mode="constant")

    def shifted(self, dy: float, dx: float) -> np.ndarray:
        """The PSF moved by ``(dy, dx)`` pixels, renormalised to unit sum."""
        moved = subpixel_shift(self.coefficients, (dy, dx), order=3, mode="constant",
                               prefilter=False)
        total = moved.sum()
        return moved / total if total > 0 else moved

    def placed_many(self, rows: np.ndarray, columns: np.ndarray, top: np.ndarray,
                    left: np.ndarray, side: int) -> np.ndarray:
        """For each source, the unit-sum PSF centred at ``(rows, columns)`` over the box of
        ``side`` pixels whose corner is ``(top, left)`` — :func:`_placed` for many sources at
        once. The spline is evaluated as two small matrix products per source (its cubic
        B-spline taps along each axis, mirrored at the PSF's edges as SciPy's shift mirrors
        them) instead of a whole-PSF shift each (3500 of them took 0.15 s on a 4096² frame)."""
        size_y, size_x = self.shape
        origin_y = np.floor(rows - (size_y - 1) / 2.0).astype(int)
        origin_x = np.floor(columns - (size_x - 1) / 2.0).astype(int)
        shift_y = rows - (size_y - 1) / 2.0 - origin_y
        shift_x = columns - (size_x - 1) / 2.0 - origin_x
        first_y, weights_y = box_taps(origin_y, shift_y, top, side, size_y)
        first_x, weights_x = box_taps(origin_x, shift_x, left, side, size_x)
        windows = np.lib.stride_tricks.sliding_window_view(
            self.coefficients, (weights_y.shape[2], weights_x.shape[2]))[first_y, first_x]
        models = weights_y @ windows @ weights_x.transpose(0, 2, 1)
        totals = np.einsum("ni,ij,nj->n", shifted_sums(shift_y, size_y), self.coefficients,
                           shifted_sums(shift_x, size_x))
        models /= np.where(totals > 0, totals, 1.0)[:, None, None]
        return models


def nearest_neighbour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each source's distance to its nearest other source (inf when alone)."""
    if x.size < 2:
        return np.full(x.size, np.inf)
    points = np.column_stack([x, y])
    return cKDTree(points).query(points, k=2)[0][:, 1]


def groups_of(x: np.ndarray, y: np.ndarray, reach: float) -> np.ndarray:
    """A group label per source: sources within ``reach`` of each other, transitively."""
    if x.size == 0:
        return np.empty(0, int)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(reach, output_type="ndarray")
    from scipy.sparse import coo_matrix

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else
                       (np.empty(0), (np.empty(0, int), np.empty(0, int))),
                       shape=(x.size, x.size))
    return connected_components(graph, directed=False)[1]


def psf_photometry(data: np.ndarray, sigma: float | np.ndarray, inverse_gain: float,
                   psf: np.ndarray, fwhm: float, x: np.ndarray, y: np.ndarray,
                   local_sky: np.ndarray | None = None) -> Photometry:
    """PSF-fit fluxes of the sources at ``(x, y)`` on the background-subtracted ``data``;
    ``sigma`` is the sky's noise, one figure or one per source (a group takes its members'
    largest). A group with a ``local_sky`` member fits a plane beside its PSFs, as DAOPHOT's
    ALLSTAR fits a local sky: smooth light the models leave (a galaxy's disk, a halo) is not a
    star's."""
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    radius = fit_radius(fwhm)
    group = groups_of(x, y, 2.0 * radius)
    flux = np.full(x.size, np.nan)
    error = np.full(x.size, np.nan)
    masked = np.zeros(x.size, bool)
    x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
    psf = as_spline(psf)
    # Positions are fitted where a neighbour is near enough to pull a centroid.
    pulled = nearest_neighbour(x, y) < REFINE_NEIGHBOUR_FWHM * fwhm
    sizes = np.bincount(group, minlength=group.max() + 1 if group.size else 0)
    # An isolated source with no local sky is a one-parameter fit: all of them at once.
    single = (sizes[group] == 1) if x.size else np.zeros(0, bool)
    if local_sky is not None:
        single &= ~np.asarray(local_sky, bool)
    fitted, flux[single], error[single], masked[single] = _fit_singles(
        data, sigmas[single], inverse_gain, psf, radius, x[single], y[single])
    single[single] = fitted
    groups = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1]) if x.size else []
    for members in groups:
        if members.size == 1 and single[members[0]]:
            continue
        result = _fit_group(data, float(sigmas[members].max()), inverse_gain, psf, radius,
                            x[members], y[members],
                            refine=fwhm if (pulled[members].any()
                                            and members.size <= REFINE_MAX_GROUP) else 0.0,
                            sky=local_sky is not None and bool(local_sky[members].any()))
        if result is not None:
            flux[members], error[members], masked[members], x[members], y[members] = result
    return Photometry(flux, error, x, y, group, sizes[group] if group.size else group, masked)


def _fit_group(data: np.ndarray, sigma: float, inverse_gain: float, psf: SplinePSF,
               radius: int, x: np.ndarray, y: np.ndarray, refine: float = 0.0,
               sky: bool = False):
    """Fluxes, errors, masked flags and positions of one group, or None when it cannot be
    fitted; with ``refine`` (the FWHM) the positions are fitted too (see :func:`_refined`),
    with ``sky`` a plane beside the PSFs."""
    height, width = data.shape
    top = max(int(np.floor(y.min())) - radius, 0)
    bottom = min(int(np.ceil(y.max())) + radius + 1, height)
    left = max(int(np.floor(x.min())) - radius, 0)
    right = min(int(np.ceil(x.max())) + radius + 1, width)
    if bottom <= top or right <= left:
        return None
    box = np.asarray(data[top:bottom, left:right], dtype=np.float64)
    valid = np.isfinite(box)
    rows, columns = np.mgrid[top:bottom, left:right]
    # Each source's own square of the core; the rest of a group's bounding box is left out.
    cores = np.stack([(np.abs(columns - cx) <= radius) & (np.abs(rows - cy) <= radius)
                      for cx, cy in zip(x, y)])
    use = valid & cores.any(axis=0)
    if use.sum() < 3 * x.size + 1:
        return None
    if refine > 0:
        x, y = _refined(box, use, psf, x - left, y - top, refine)
        x, y = x + left, y + top
    models = np.stack([_placed(psf, cy - top, cx - left, box.shape) for cx, cy in zip(x, y)])
    design = models[:, use]                      # sources (and the level) × pixels
    if sky:  # a plane: a halo's light slopes across the box
        level = np.ones(design.shape[1])
        design = np.vstack([design, level, (columns[use] - columns[use].mean()) / radius,
                            (rows[use] - rows[use].mean()) / radius])
    weight = 1.0 / max(sigma, 1e-30) ** 2
    try:
        inverse = np.linalg.inv(weight * design @ design.T)
    except np.linalg.LinAlgError:
        return None
    fluxes = inverse @ (weight * design @ box[use])
    variance = sigma**2 + np.maximum(fluxes @ design, 0.0) * inverse_gain
    covariance = inverse @ ((weight**2 * design * variance) @ design.T) @ inverse
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    masked = (cores & ~valid).any(axis=(1, 2))
    return fluxes[:x.size], errors[:x.size], masked, x, y


def _fit_singles(data: np.ndarray, sigma: np.ndarray, inverse_gain: float, psf: SplinePSF,
                 radius: int, x: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_fit_group` for many one-source groups at once: which it fitted (those whose box
    lies inside the frame — the others go through :func:`_fit_group`), and the fluxes,
    errors and masked flags (NaN, NaN, False for the others). One source's fit is
    ``f = ΣPD / ΣP²`` over its core, its variance ``ΣP²·var / (ΣP²)²``: the per-group
    matrices, masks and grids in Python cost 0.2 ms a source, 0.6 s on a 4096² frame."""
    height, width = data.shape
    side = 2 * radius + 2  # a box of 2r+1 or 2r+2 pixels a side, as the group's (the core decides)
    top = np.floor(y).astype(int) - radius
    left = np.floor(x).astype(int) - radius
    fitted = (top >= 0) & (left >= 0) & (top + side <= height) & (left + side <= width)
    chosen = np.flatnonzero(fitted)
    flux, error, masked = np.full(x.size, np.nan), np.full(x.size, np.nan), np.zeros(x.size, bool)
    # A few thousand boxes at a time: a crowded frame's 10⁵ sources with a wide PSF would
    # otherwise hold gigabytes of stacked boxes.
    for start in range(0, chosen.size, SINGLES_PER_BATCH):
        batch = chosen[start: start + SINGLES_PER_BATCH]
        flux[batch], error[batch], masked[batch] = _single_fits(
            data, sigma[batch], inverse_gain, psf, radius, x[batch], y[batch], top[batch],
            left[batch])
    return fitted, flux, error, masked


def _single_fits(data: np.ndarray, sigma: np.ndarray, inverse_gain: float, psf: SplinePSF,
                 radius: int, x: np.ndarray, y: np.ndarray, top: np.ndarray, left: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fluxes, errors and masked flags of one-source groups whose boxes (``top``, ``left``,
    ``2r + 2`` a side) lie inside the frame; NaN where too few pixels are left to fit."""
    side = 2 * radius + 2
    steps = np.arange(side)
    rows = top[:, None] + steps             # sources × side
    columns = left[:, None] + steps
    boxes = np.asarray(data[rows[:, :, None], columns[:, None, :]], dtype=np.float64)
    valid = np.isfinite(boxes)
    core = ((np.abs(rows - y[:, None]) <= radius)[:, :, None]
            & (np.abs(columns - x[:, None]) <= radius)[:, None, :])
    use = valid & core
    models = np.where(use, psf.placed_many(y, x, top, left, side), 0.0)
    values = np.where(use, boxes, 0.0)
    norm = np.einsum("nij,nij->n", models, models)
    enough = (use.sum(axis=(1, 2)) >= 4) & (norm > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fluxes = np.einsum("nij,nij->n", models, values) / norm
        variance = (sigma[:, None, None] ** 2
                    + np.maximum(fluxes[:, None, None] * models, 0.0) * inverse_gain)
        errors = np.sqrt(np.einsum("nij,nij,nij->n", models, models, variance)) / norm
    return (np.where(enough, fluxes, np.nan), np.where(enough, errors, np.nan),
            np.where(enough, (core & ~valid).any(axis=(1, 2)), False))


def _refined(box: np.ndarray, use: np.ndarray, psf: np.ndarray, x: np.ndarray, y: np.ndarray,
             fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """A blend's positions fitted with its fluxes (Gauss–Newton on the PSF models): a windowed
    centroid of a star beside a brighter one is pulled toward it by up to half a FWHM, which
    the joint fit takes out. Steps are at most ``REFINE_STEP`` px, a source may move at most
    ``REFINE_REACH`` FWHM in all, and one with no positive flux stays where it was found."""
    start_x, start_y = x.copy(), y.copy()
    count = x.size
    for _ in range(REFINE_ITERATIONS):
        models = np.stack([_placed(psf, cy, cx, box.shape) for cx, cy in zip(x, y)])
        design = models[:, use]
        try:
            fluxes = np.linalg.solve(design @ design.T, design @ box[use])
        except np.linalg.LinAlgError:
            break
        slope_y, slope_x = np.gradient(models, axis=(1, 2))
        jacobian = np.concatenate([design, -fluxes[:, None] * slope_x[:, use],
                                   -fluxes[:, None] * slope_y[:, use]])
        step = np.linalg.lstsq(jacobian.T, box[use] - fluxes @ design, rcond=None)[0]
        moving = fluxes > 0
        dx = np.where(moving, np.clip(step[count:2 * count], -REFINE_STEP, REFINE_STEP), 0.0)
        dy = np.where(moving, np.clip(step[2 * count:], -REFINE_STEP, REFINE_STEP), 0.0)
        x, y = x + dx, y + dy
        if max(np.abs(dx).max(), np.abs(dy).max()) < REFINE_TOLERANCE:
            break
    strayed = np.hypot(x - start_x, y - start_y) > REFINE_REACH * fwhm
    return np.where(strayed, start_x, x), np.where(strayed, start_y, y)


def extended_psf(psf: np.ndarray, fwhm: float) -> np.ndarray:
    """The measured PSF with its halo carried on past the stamp's edge out to
    ``EXTEND_FWHM`` FWHM: a power law fitted to the stamp's outer radial profile (slope
    clipped to a Moffat β of 1.25–4), unit sum. A model cut at the stamp's edge leaves a bright
    star's halo as a step in the residuals just outside it, where restored-frame candidates
    then fit as stars; carried on smoothly, the halo is the bright star's. Returned unchanged
    when the profile cannot be fitted or the fit adds more than ``EXTEND_MAX`` of the light."""
    psf = np.asarray(psf, dtype=np.float64) / np.sum(psf)
    side = min(psf.shape)
    edge = (side - 1) / 2.0
    rows, columns = np.indices(psf.shape)
    radius = np.hypot(rows - (psf.shape[0] - 1) / 2.0, columns - (psf.shape[1] - 1) / 2.0)
    inner = max(1.25 * fwhm, 0.5 * edge)
    bins = np.arange(inner, edge - 0.5, 1.0)
    if bins.size < 2:
        return psf
    means = np.array([psf[(radius >= b) & (radius < b + 1.0)].mean() for b in bins])
    if np.any(means <= 0):
        return psf
    slope, intercept = np.polyfit(np.log(bins + 0.5), np.log(means), 1)
    slope = float(np.clip(slope, -8.0, -2.5))
    half = max(int(np.ceil(EXTEND_FWHM * fwhm)), (side - 1) // 2)
    canvas = np.zeros((2 * half + 1, 2 * half + 1))
    top, left = half - (psf.shape[0] - 1) // 2, half - (psf.shape[1] - 1) // 2
    canvas[top:top + psf.shape[0], left:left + psf.shape[1]] = psf
    rows, columns = np.indices(canvas.shape)
    far = np.hypot(rows - half, columns - half)
    outside = (far > edge - 0.5) & (far <= half + 0.5)
    canvas[outside] = np.exp(intercept) * far[outside] ** slope
    canvas[far > half + 0.5] = 0.0
    added = canvas.sum() - psf[radius <= edge - 0.5].sum()
    if not 0.0 <= added <= EXTEND_MAX:
        return psf
    return canvas / canvas.sum()


def as_spline(psf: np.ndarray | SplinePSF) -> SplinePSF:
    """``psf`` ready to be placed (its spline computed once)."""
    return psf if isinstance(psf, SplinePSF) else SplinePSF(psf)


def _placed(psf: np.ndarray | SplinePSF, row: float, column: float,
            shape: tuple[int, int]) -> np.ndarray:
    """The unit-sum PSF centred at ``(row, column)`` of an array of ``shape`` (cut at its
    edges); the PSF's centre is its middle, ``(side − 1) / 2``."""
    out = np.zeros(shape)
    add_placed(out, psf, row, column, 1.0)
    return out


def add_placed(image: np.ndarray, psf: np.ndarray | SplinePSF, row: float, column: float,
               scale: float) -> None:
    """Add ``scale`` times the unit-sum PSF centred at ``(row, column)`` to ``image`` in
    place, over the PSF's own footprint only (cut at the edges)."""
    size_y, size_x = psf.shape
    centre_y, centre_x = (size_y - 1) / 2.0, (size_x - 1) / 2.0
    top = int(np.floor(row - centre_y))
    left = int(np.floor(column - centre_x))
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size_y, image.shape[0]), min(left + size_x, image.shape[1])
    if y1 > y0 and x1 > x0:
        moved = as_spline(psf).shifted(row - centre_y - top, column - centre_x - left)
        image[y0:y1, x0:x1] += scale * moved[y0 - top: y1 - top, x0 - left: x1 - left]


@dataclass(frozen=True)
class ApertureCorrection:
    """The factor that puts PSF-fit fluxes on the total-light scale, and its support."""

    factor: float
    stars: int


def aperture_correction(data: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                        sigma: np.ndarray, inverse_gain: float, usable: np.ndarray,
                        fwhm: float, invalid: np.ndarray | None) -> ApertureCorrection:
    """The weighted mean of (light within ``APERTURE_FWHM`` FWHM) / (PSF-fit flux), 3σ
    clipped, over the usable (unflagged) sources whose large aperture has S/N ≥
    ``APERTURE_MIN_SNR``, with no other source within the aperture and its wings, inside the
    frame; 1.0 (none) with fewer than ``APERTURE_MIN_STARS`` or when it is not known to
    ``APERTURE_PRECISION`` — a noisy correction would shift every star of the frame.
    ``invalid``: where ``data`` is not finite (None: nowhere)."""
    import sep

    radius = APERTURE_FWHM * fwhm
    height, width = data.shape
    inside = ((x > radius) & (y > radius) & (x < width - 1 - radius) & (y < height - 1 - radius))
    chosen = usable & inside & np.isfinite(flux) & (flux > 0)
    chosen &= nearest_neighbour(x, y) > radius + 1.5 * fwhm
    none = ApertureCorrection(1.0, 0)
    if np.count_nonzero(chosen) < APERTURE_MIN_STARS:
        return none
    # float32 as sep reads every pixel anyway: a float64 copy of a 4096² frame is 128 MB;
    # and no copy at all where no pixel is excluded
    clean = np.ascontiguousarray(data if invalid is None
                                 else np.where(invalid, np.float32(0.0), data),
                                 dtype=np.float32)
    light, _, flags = sep.sum_circle(clean, x[chosen], y[chosen], radius, mask=invalid,
                                     subpix=5)
    error = np.sqrt(sigma[chosen] ** 2 * np.pi * radius**2
                    + np.maximum(light, 0.0) * inverse_gain)
    good = (flags == 0) & (error > 0) & (light >= APERTURE_MIN_SNR * error)
    ratio = light[good] / flux[chosen][good]
    weight = (flux[chosen][good] / error[good]) ** 2
    for _ in range(3):
        if ratio.size < APERTURE_MIN_STARS:
            return none
        mean = float(np.sum(weight * ratio) / np.sum(weight))
        spread = np.sqrt(1.0 / weight)
        inliers = np.abs(ratio - mean) <= 3.0 * spread
        if inliers.all():
            break
        ratio, weight = ratio[inliers], weight[inliers]
    if (np.sqrt(1.0 / np.sum(weight)) > APERTURE_PRECISION
            or not APERTURE_LIMITS[0] <= mean <= APERTURE_LIMITS[1]):
        return none
    return ApertureCorrection(mean, int(ratio.size))
