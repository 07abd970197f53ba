"""Adaptive (Gaussian-weighted, iterated) second moments of a star or a PSF.

Bernstein & Jarvis (2002): iterate a Gaussian weight matched to the object until the weighted
centroid and covariance converge. For a Gaussian star the converged weighted covariance is half
the star's, so the weight is ``2M``; ``FWHM = 2 sqrt(2 ln 2) · (det M)^(1/4)`` (the geometric
mean of the axes), ellipticity ``1 − b/a`` and the major axis's angle come from ``M``'s
eigenvectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# Below this variance (pixels²) the weighted iteration is collapsing on a sampled profile.
_COLLAPSE = 0.45


@dataclass(frozen=True)
class Moments:
    """Shape and centre of one object from adaptive moments."""

    row: float            # centroid, stamp coordinates
    column: float
    fwhm: float           # geometric mean of the axes' FWHM, pixels
    ellipticity: float    # 1 - b/a
    angle: float          # major axis, degrees from +x (columns), counter-clockwise
    sigma_major: float
    sigma_minor: float


def _from_covariance(row: float, column: float, m: np.ndarray) -> Moments | None:
    eigenvalues, eigenvectors = np.linalg.eigh(m)
    return _shape(row, column, eigenvalues, eigenvectors)


def _shape(row: float, column: float, eigenvalues: np.ndarray, eigenvectors: np.ndarray
           ) -> Moments | None:
    """The :class:`Moments` of a covariance's eigen-decomposition (None: not positive)."""
    if not eigenvalues[0] > 0:
        return None
    minor, major = math.sqrt(eigenvalues[0]), math.sqrt(eigenvalues[1])
    vy, vx = eigenvectors[:, 1]
    angle = math.degrees(math.atan2(vy, vx)) % 180.0
    return Moments(row=row, column=column, fwhm=FWHM_PER_SIGMA * math.sqrt(major * minor),
                   ellipticity=1.0 - minor / major, angle=angle, sigma_major=major,
                   sigma_minor=minor)


def aperture_moments(stamp: np.ndarray, radius: float = 3.0) -> Moments | None:
    """Unweighted moments within ``radius`` pixels of the stamp's brightest pixel — for
    objects too sharp for adaptive moments (FWHM below about two pixels, where the weighted
    iteration collapses on a sampled profile)."""
    box = np.asarray(stamp, dtype=np.float64)
    if box.ndim != 2 or not np.all(np.isfinite(box)):
        return None
    peak = np.unravel_index(np.argmax(box), box.shape)
    ys, xs = np.mgrid[0:box.shape[0], 0:box.shape[1]].astype(np.float64)
    inside = (ys - peak[0]) ** 2 + (xs - peak[1]) ** 2 <= radius**2
    weights = np.where(inside, np.clip(box, 0.0, None), 0.0)
    total = weights.sum()
    if not total > 0:
        return None
    cy, cx = (weights * ys).sum() / total, (weights * xs).sum() / total
    dy, dx = ys - cy, xs - cx
    m = np.array([[(weights * dy * dy).sum(), (weights * dy * dx).sum()],
                  [(weights * dy * dx).sum(), (weights * dx * dx).sum()]]) / total
    return _from_covariance(cy, cx, m)


def adaptive_moments(stamp: np.ndarray, iterations: int = 40,
                     start_sigma: float = 1.5) -> Moments | None:
    """Adaptive moments of the object near the centre of ``stamp`` (background removed);
    for objects too sharp for them, :func:`aperture_moments`; None when neither converges
    (blends, NaN, no flux)."""
    box = np.asarray(stamp, dtype=np.float64)
    if box.ndim != 2 or not np.all(np.isfinite(box)):
        return None
    rows, columns = box.shape
    ys, xs = np.mgrid[0:rows, 0:columns].astype(np.float64)
    cy, cx = (rows - 1) / 2.0, (columns - 1) / 2.0
    m = np.array([[start_sigma**2, 0.0], [0.0, start_sigma**2]]) * 2.0
    limit = min(rows, columns) / 2.0
    for _ in range(iterations):
        inverse = np.linalg.inv(m)
        dy, dx = ys - cy, xs - cx
        r2 = inverse[0, 0] * dy * dy + 2 * inverse[0, 1] * dy * dx + inverse[1, 1] * dx * dx
        weighted = box * np.exp(-0.5 * r2)
        total = weighted.sum()
        if not total > 0:
            return None
        cy_new, cx_new = (weighted * ys).sum() / total, (weighted * xs).sum() / total
        dy, dx = ys - cy_new, xs - cx_new
        new = 2.0 * np.array([[(weighted * dy * dy).sum(), (weighted * dy * dx).sum()],
                              [(weighted * dy * dx).sum(), (weighted * dx * dx).sum()]]) / total
        if (not np.all(np.isfinite(new)) or np.linalg.det(new) <= 0
                or abs(cy_new - (rows - 1) / 2.0) > limit or abs(cx_new - (columns - 1) / 2.0) > limit):
            return None
        if np.linalg.eigvalsh(new)[0] < _COLLAPSE:
            return aperture_moments(box)
        converged = np.allclose(new, m, rtol=1e-5, atol=1e-7) and abs(cy_new - cy) < 1e-4 \
            and abs(cx_new - cx) < 1e-4
        m, cy, cx = new, cy_new, cx_new
        if converged:
            break
    return _from_covariance(cy, cx, m)


def half_maximum_fwhm(image: np.ndarray, upsample: int = 8) -> float:
    """Model-free FWHM of a centred PSF: the diameter of the circle whose area equals the area
    above half the peak, measured on a cubic-spline upsampling (pixels): SciPy's
    ``zoom(image, upsample, order=3, mode="nearest")``, made as its two one-axis zooms'
    matrices about the image (a cubic B-spline's zoom is one per axis; 0.3 ms where zooming
    the 2-D PSF took 6)."""
    image = np.asarray(image, dtype=np.float64)
    fine = _zoom_matrix(image.shape[0], upsample) @ image @ _zoom_matrix(image.shape[1],
                                                                          upsample).T
    # zoom maps the first and last pixel centres onto the first and last samples.
    step_y = (image.shape[0] - 1) / (fine.shape[0] - 1)
    step_x = (image.shape[1] - 1) / (fine.shape[1] - 1)
    area = np.count_nonzero(fine >= fine.max() / 2.0) * step_y * step_x
    return 2.0 * math.sqrt(area / math.pi)


@lru_cache(maxsize=32)
def _zoom_matrix(length: int, upsample: int) -> np.ndarray:
    """SciPy's cubic ``zoom`` of a ``length``-sample axis by ``upsample`` as a matrix (its
    columns: the zooms of the unit vectors)."""
    from scipy.ndimage import zoom

    matrix = np.stack([zoom(unit, upsample, order=3, mode="nearest")
                       for unit in np.eye(length)], axis=1)
    matrix.flags.writeable = False  # cached: shared by every caller
    return matrix


def adaptive_moments_batch(stamps: np.ndarray, iterations: int = 20,
                           start_sigma: float = 1.5) -> list[Moments | None]:
    """:func:`adaptive_moments` of a stack of same-sized stamps at once (``N × h × w``), for
    measuring many stars quickly; a fixed number of iterations, then the same checks."""
    boxes = np.asarray(stamps, dtype=np.float64)
    count, rows, columns = boxes.shape
    # Coordinates along each axis, not a grid: the offsets, the weight's exponent and the
    # sums are separable, so only the weight and its product with the stamp are whole cubes.
    ys, xs = np.arange(rows, dtype=np.float64), np.arange(columns, dtype=np.float64)
    cy = np.full(count, (rows - 1) / 2.0)
    cx = np.full(count, (columns - 1) / 2.0)
    myy = np.full(count, 2.0 * start_sigma**2)
    mxx = myy.copy()
    mxy = np.zeros(count)
    finite = np.all(np.isfinite(boxes), axis=(1, 2))
    boxes = np.where(finite[:, None, None], boxes, 0.0)
    for _ in range(iterations):
        det = np.maximum(myy * mxx - mxy**2, 1e-12)
        iyy, ixx, ixy = mxx / det, myy / det, -mxy / det
        dy, dx = ys[None] - cy[:, None], xs[None] - cx[:, None]  # N × h, N × w
        # −r²/2 built in place, the −1/2 taken into each separable term (a power of two:
        # the same bits as halving the sum), so the cube is passed over fewer times.
        exponent = ((iyy[:, None] * dy**2 * -0.5)[:, :, None]
                    + (ixx[:, None] * dx**2 * -0.5)[:, None, :])
        exponent += (2 * ixy[:, None] * dy * -0.5)[:, :, None] * dx[:, None, :]
        # A blend can drive M indefinite; clipping keeps the weight finite and the check
        # below rejects the object.
        np.clip(exponent, -700.0, 0.0, out=exponent)
        weighted = np.exp(exponent, out=exponent)
        weighted *= boxes
        along_rows = weighted.sum(axis=2)     # N × h
        along_columns = weighted.sum(axis=1)  # N × w
        total = along_rows.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        cy = along_rows @ ys / safe
        cx = along_columns @ xs / safe
        dy, dx = ys[None] - cy[:, None], xs[None] - cx[:, None]
        myy = 2.0 * (along_rows * dy**2).sum(axis=1) / safe
        mxx = 2.0 * (along_columns * dx**2).sum(axis=1) / safe
        mxy = 2.0 * np.einsum("nh,nhw,nw->n", dy, weighted, dx) / safe
        myy, mxx = np.maximum(myy, _COLLAPSE / 4), np.maximum(mxx, _COLLAPSE / 4)
    # The checks and shapes of all the stamps at once: LAPACK's 2 × 2 solutions are the
    # same stacked as one by one (a loop over them was a fifth of the call).
    m = np.stack([np.stack([myy, mxy], axis=-1), np.stack([mxy, mxx], axis=-1)], axis=1)
    limit = min(rows, columns) / 2.0
    usable = (finite & (total > 0) & np.all(np.isfinite(m), axis=(1, 2))
              & ~(np.abs(cy - (rows - 1) / 2.0) > limit)
              & ~(np.abs(cx - (columns - 1) / 2.0) > limit))
    usable[usable] &= np.linalg.det(m[usable]) > 0
    smallest = np.full(count, np.inf)
    smallest[usable] = np.linalg.eigvalsh(m[usable])[:, 0]
    results: list[Moments | None] = _from_covariances(cy, cx, m, usable & ~(smallest < _COLLAPSE))
    for k in np.flatnonzero(usable & (smallest < _COLLAPSE)):
        results[k] = aperture_moments(boxes[k])
    return results


def _from_covariances(cy: np.ndarray, cx: np.ndarray, m: np.ndarray, chosen: np.ndarray
                      ) -> list[Moments | None]:
    """:func:`_from_covariance` of each chosen stamp's centre and ``m`` (stamps × 2 × 2);
    None for the others."""
    results: list[Moments | None] = [None] * len(cy)
    index = np.flatnonzero(chosen)
    if index.size == 0:
        return results
    eigenvalues, eigenvectors = np.linalg.eigh(m[index])
    for k, values, vectors in zip(index, eigenvalues, eigenvectors):
        results[k] = _shape(float(cy[k]), float(cx[k]), values, vectors)
    return results


def adaptive_moments_many(stamps: np.ndarray, iterations: int = 40,
                          start_sigma: float = 1.5) -> list[Moments | None]:
    """:func:`adaptive_moments` of each of a stack of same-sized stamps (``N × h × w``), by
    the same iteration, checks and convergence test, stamp by stamp — run on all of them at
    once, each frozen where it stops (30 stars one by one took 0.14 s of a 4096² frame's
    host budget)."""
    boxes = np.asarray(stamps, dtype=np.float64)
    count, rows, columns = boxes.shape
    # Coordinates along each axis: the exponent and the sums are separable (as in
    # adaptive_moments_batch), only the weight and its product with the stamp whole cubes.
    ys, xs = np.arange(rows, dtype=np.float64), np.arange(columns, dtype=np.float64)
    centre_y, centre_x = (rows - 1) / 2.0, (columns - 1) / 2.0
    limit = min(rows, columns) / 2.0
    cy, cx = np.full(count, centre_y), np.full(count, centre_x)
    m = np.zeros((count, 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 2.0 * start_sigma**2
    results: list[Moments | None] = [None] * count
    active = np.all(np.isfinite(boxes), axis=(1, 2))
    converged = np.zeros(count, bool)
    for _ in range(iterations):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        box, mm = boxes[index], m[index]
        inverse = np.linalg.inv(mm)
        dy, dx = ys[None] - cy[index, None], xs[None] - cx[index, None]  # N × h, N × w
        r2 = ((inverse[:, 0, 0, None] * dy * dy)[:, :, None]
              + (2 * inverse[:, 0, 1, None] * dy)[:, :, None] * dx[:, None, :]
              + (inverse[:, 1, 1, None] * dx * dx)[:, None, :])
        weighted = box * np.exp(-0.5 * r2)
        along_rows = weighted.sum(axis=2)     # N × h
        along_columns = weighted.sum(axis=1)  # N × w
        total = along_rows.sum(axis=1)
        empty = ~(total > 0)
        safe = np.where(empty, 1.0, total)
        cy_new = along_rows @ ys / safe
        cx_new = along_columns @ xs / safe
        dy, dx = ys[None] - cy_new[:, None], xs[None] - cx_new[:, None]
        new = np.empty_like(mm)
        new[:, 0, 0] = (along_rows * dy * dy).sum(axis=1)
        new[:, 0, 1] = new[:, 1, 0] = np.einsum("nh,nhw,nw->n", dy, weighted, dx)
        new[:, 1, 1] = (along_columns * dx * dx).sum(axis=1)
        new *= 2.0 / safe[:, None, None]
        with np.errstate(invalid="ignore"):
            failed = (empty | ~np.all(np.isfinite(new), axis=(1, 2))
                      | ~(np.linalg.det(np.nan_to_num(new)) > 0)
                      | (np.abs(cy_new - centre_y) > limit) | (np.abs(cx_new - centre_x) > limit))
            smallest = np.where(failed, np.inf,
                                np.linalg.eigvalsh(np.where(failed[:, None, None], np.eye(2),
                                                            new))[:, 0])
        collapsed = ~failed & (smallest < _COLLAPSE)
        settled = (~failed & ~collapsed
                   & np.all(np.abs(new - mm) <= 1e-7 + 1e-5 * np.abs(mm), axis=(1, 2))
                   & (np.abs(cy_new - cy[index]) < 1e-4) & (np.abs(cx_new - cx[index]) < 1e-4))
        going = ~failed & ~collapsed
        m[index[going]], cy[index[going]], cx[index[going]] = (new[going], cy_new[going],
                                                               cx_new[going])
        for k in index[collapsed]:
            results[k] = aperture_moments(boxes[k])
        active[index[failed | collapsed | settled]] = False
        converged[index[settled]] = True
    shaped = _from_covariances(cy, cx, m, converged | active)
    return [shape if done else result
            for shape, result, done in zip(shaped, results, converged | active)]
