"""Per-frame image quality: sky level and noise, sources, star FWHM and ellipticity.

Downstream systems decide from these whether a restored frame is worth using; operators see
them on the dashboard (FWHM before/after is the restoration's effect at a glance).

Notes
-----
Star shapes use adaptive (Gaussian-weighted, iterated) second moments (Bernstein & Jarvis
2002): for a Gaussian star the converged weighted covariance is half the star's, so
``FWHM = 2 sqrt(2 ln 2) · sqrt(2 · sqrt(det M))``; ellipticity is ``1 − b/a`` from the
eigenvalues of ``M``. The sky is sigma-clipped (3σ, astropy) on a sample of pixels; the noise
comes from differences of pixels a few apart (:mod:`streamer.imaging.sky_noise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.imaging import sep_calls
from streamer.imaging.clipped_stats import clipped_stats
from streamer.imaging.moments import adaptive_moments, adaptive_moments_many
from streamer.imaging.sky_noise import sky_noise

_SAMPLE = 1 << 18


@dataclass(frozen=True)
class SkyStatistics:
    """Sigma-clipped sky level and noise of a frame."""

    background: float
    noise: float


@dataclass(frozen=True)
class StarShape:
    """Shape of one star from adaptive moments."""

    fwhm: float
    ellipticity: float


def sky_statistics(image: np.ndarray) -> SkyStatistics:
    """Sky level: the sigma-clipped median over (a sample of) the finite pixels. Sky noise:
    per pixel, from differences of pixels a few apart (:func:`~streamer.imaging.sky_noise.
    sky_noise`), which a smooth sky gradient does not inflate (a global standard deviation
    counts the gradient as noise), stars, being a small fraction of the pairs, do not bias,
    and correlated noise (plate grain, resampling) does not shrink."""
    data = np.asarray(image)
    # Every step-th pixel first, then the finite ones: the finite pixels of a whole 4096²
    # frame are a 64 MB copy to sample a quarter-million from.
    # Gathered into a contiguous sample once: each pass over a strided view of a frame
    # reads a cache line per sample.
    values = np.ascontiguousarray(data.ravel()[:: max(1, data.size // _SAMPLE)])
    if data.dtype.kind == "f":  # an integer frame's pixels are all finite
        values = values[np.isfinite(values)]
    _, median, std = clipped_stats(values, sigma=3.0, maxiters=5)
    noise = sky_noise(data) if data.ndim == 2 else None
    return SkyStatistics(float(median), float(noise) if noise else float(std))


def find_sources(image: np.ndarray, sky: SkyStatistics, threshold: float = 5.0,
                 limit: int = 100, edge: int = 8, objects: np.ndarray | None = None
                 ) -> tuple[np.ndarray, int]:
    """Sources ``threshold`` sigma above the local sky (sep: a mesh background, so sky
    gradients are not taken for sources): the row/column peak positions of the brightest
    ``limit`` away from the edges, and how many there are in all. ``objects``: sep's
    catalogue of the frame when a detection made it already (the worker's PSF stars, at the
    PSF's threshold): a 4096² frame's second pass cost 0.8 s."""
    import sep

    data = np.asarray(image)
    if objects is None:
        data = np.ascontiguousarray(np.nan_to_num(np.asarray(image, dtype=np.float32),
                                                  nan=sky.background))
        invalid = ~np.isfinite(np.asarray(image, dtype=np.float32))
        box = int(min(64, max(8, min(data.shape) // 4)))
        background = sep.Background(data, mask=invalid, bw=box, bh=box)
        try:
            objects = sep_calls.extract(data - background.back(), threshold,
                                        err=max(sky.noise, 1e-12), mask=invalid, minarea=3)
        except Exception:  # sep's buffers overflow on pathological frames: report none
            return np.empty((0, 2), int), 0
    if len(objects) == 0:
        return np.empty((0, 2), int), 0
    rows, columns = objects["ypeak"].astype(int), objects["xpeak"].astype(int)
    inside = ((rows >= edge) & (rows < data.shape[0] - edge)
              & (columns >= edge) & (columns < data.shape[1] - edge))
    order = np.argsort(objects["peak"][inside])[::-1][:limit]
    positions = np.stack([rows[inside][order], columns[inside][order]], axis=1)
    return (positions if order.size else np.empty((0, 2), int)), len(objects)


def star_shape(image: np.ndarray, row: int, column: int, background: float,
               half: int = 8) -> StarShape | None:
    """Adaptive-moment FWHM and ellipticity of the star near (row, column)
    (:func:`~streamer.imaging.moments.adaptive_moments`, which falls back on aperture moments
    for stars too sharp for them, as restored stars can be); None when they do not converge
    (blends, edges, NaN)."""
    box = np.asarray(image[row - half: row + half + 1, column - half: column + half + 1],
                     dtype=np.float64) - background
    if box.shape != (2 * half + 1, 2 * half + 1) or not np.all(np.isfinite(box)):
        return None
    moments = adaptive_moments(box)
    if moments is None or abs(moments.row - half) > half / 2 or abs(moments.column - half) > half / 2:
        return None
    return StarShape(fwhm=moments.fwhm, ellipticity=moments.ellipticity)


@dataclass(frozen=True)
class InputQuality:
    """What is measured on the input frame (before restoration)."""

    sky: SkyStatistics
    positions: np.ndarray
    sources: int
    fwhm: float | None
    ellipticity: float | None
    stars_measured: int


@dataclass(frozen=True)
class FrameQuality:
    """Quality figures of a frame before and after restoration."""

    background: float
    noise: float
    sources: int
    fwhm_before: float | None
    fwhm_after: float | None
    ellipticity_before: float | None
    ellipticity_after: float | None
    stars_measured: int
    moat_depth: float | None = None


def star_shapes(image: np.ndarray, positions: np.ndarray, background: float, half: int = 8
                ) -> list[StarShape | None]:
    """:func:`star_shape` of the stars at each (row, column) of ``positions``, their adaptive
    moments iterated all at once (:func:`~streamer.imaging.moments.adaptive_moments_many`)."""
    boxes, where = [], []
    for index, (row, column) in enumerate(np.asarray(positions, dtype=int).reshape(-1, 2)):
        box = np.asarray(image[row - half: row + half + 1, column - half: column + half + 1],
                         dtype=np.float64) - background
        if box.shape == (2 * half + 1, 2 * half + 1) and np.all(np.isfinite(box)):
            boxes.append(box)
            where.append(index)
    shapes: list[StarShape | None] = [None] * len(np.asarray(positions).reshape(-1, 2))
    if not boxes:
        return shapes
    for index, moments in zip(where, adaptive_moments_many(np.stack(boxes))):
        if (moments is not None and abs(moments.row - half) <= half / 2
                and abs(moments.column - half) <= half / 2):
            shapes[index] = StarShape(fwhm=moments.fwhm, ellipticity=moments.ellipticity)
    return shapes


def _median_shape(image, positions, background):
    shapes = [s for s in star_shapes(image, positions, background) if s]
    if not shapes:
        return None, None, 0
    return (float(np.median([s.fwhm for s in shapes])),
            float(np.median([s.ellipticity for s in shapes])), len(shapes))


def measure_input(image: np.ndarray, stars: int = 30, objects: np.ndarray | None = None
                  ) -> InputQuality:
    """Sky, sources and the shapes of the brightest ``stars`` of an input frame; ``objects``:
    its sources, when found already (:func:`find_sources`)."""
    sky = sky_statistics(image)
    positions, total = find_sources(image, sky, limit=stars, objects=objects)
    fwhm, ellipticity, measured = _median_shape(image, positions, sky.background)
    return InputQuality(sky, positions, total, fwhm, ellipticity, measured)


def frame_quality(before: InputQuality | np.ndarray, after: np.ndarray) -> FrameQuality:
    """Quality of the input (measured, or an array to measure) and of the same stars in the
    restored frame."""
    if isinstance(before, np.ndarray):
        before = measure_input(before)
    after_sky = sky_statistics(after)
    fwhm_after, ellipticity_after, _ = _median_shape(after, before.positions, after_sky.background)
    moat = moat_depth(after, before.positions, before.fwhm) if before.fwhm else None
    return FrameQuality(before.sky.background, before.sky.noise, before.sources, before.fwhm,
                        fwhm_after, before.ellipticity, ellipticity_after, before.stars_measured,
                        moat)


def moat_depth(image: np.ndarray, positions: np.ndarray, fwhm: float, stars: int = 10
               ) -> float | None:
    """How far the azimuthal profile around bright stars dips below the local sky, in units of
    the local sky's pixel noise: for each of the ``stars`` brightest given positions, the
    deepest annulus mean between 1.5 and 4 FWHM below the sigma-clipped sky of the annulus at
    6 to 10 FWHM; the median over the stars. Positive: a dark moat (a deconvolution artefact
    that detection software takes for structure); about 0 or negative: none. None when no
    star has room around it."""
    data = np.asarray(image)  # each star's box in float64, not the frame (128 MB at 4096²)
    outer = int(np.ceil(10 * fwhm))
    depths = []
    for row, column in np.asarray(positions)[:stars]:
        row, column = int(row), int(column)
        if not (outer <= row < data.shape[0] - outer and outer <= column < data.shape[1] - outer):
            continue
        box = np.asarray(data[row - outer: row + outer + 1, column - outer: column + outer + 1],
                         dtype=np.float64)
        ys, xs = np.mgrid[-outer: outer + 1, -outer: outer + 1]
        radius = np.hypot(ys, xs) / fwhm
        ring = box[(radius >= 6) & (radius <= 10) & np.isfinite(box)]
        if ring.size < 20:
            continue
        _, sky, noise = clipped_stats(ring, sigma=3.0, maxiters=5)
        if not noise > 0:
            continue
        edges = np.arange(1.5 * fwhm, 4.0 * fwhm + 1.0, 1.0)
        distance = np.hypot(ys, xs)
        means = []
        for a, b in zip(edges[:-1], edges[1:]):
            annulus = box[(distance >= a) & (distance < b)]
            annulus = annulus[np.isfinite(annulus)]  # masked (NaN) pixels say nothing
            if annulus.size:
                means.append(float(annulus.mean()))
        if means:
            depths.append((sky - min(means)) / noise)
    return float(np.median(depths)) if depths else None
