"""The PSF measured from a frame's own stars.

Notes
-----
1. **Stars** (:mod:`psf_stars`): unblended, unsaturated, high-S/N sources away from edges and
   masked pixels, with no bright neighbour over their core and of the frame's typical size
   (cosmic rays are smaller, galaxies and blends larger); fainter neighbours are masked out of
   their stamps, so crowded fields (a globular cluster) still give clean stars.
2. **Empirical PSF** (:mod:`psf_stack`, the ePSF of Anderson & King 2000 at the frame's own
   sampling): the stars registered to a common centre, flux-normalised and stacked by a
   sigma-clipped mean, centres refined and the stack rebuilt; where its signal to noise falls
   below a few, an elliptical Moffat fitted to it takes over, so the PSF keeps its wings
   without keeping its noise.
3. **Size** from the measured profile: the smallest centred box holding ``ENCLOSED`` of the
   light (never more than ``max_size``).
4. **Trailed frames** (stars elongated beyond ``trail_ellipticity``): the stack is a streak; its
   pixels below the noise are zeroed (a sparse kernel), the box follows the trail.
5. **Few stars** (fewer than ``min_stars``): an elliptical Moffat (or, trailed, a streak model)
   fitted to the stars there are. **No stars**: :class:`TooFewStarsError`; the per-camera
   tracker (:mod:`streamer.imaging.psf_tracker`) then falls back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from pydantic import BaseModel, ConfigDict, Field

from streamer.errors import TooFewStarsError
from streamer.imaging import psf_stack, psf_stars
from streamer.imaging.moffat_fit import fit_moffat
from streamer.imaging.moments import (
    Moments, adaptive_moments, adaptive_moments_batch, half_maximum_fwhm,
)
from streamer.imaging.psf import moffat_profile, streak_psf, validate_psf
from streamer.imaging.saturation import Saturation, describe_saturation, frame_saturation
from streamer.imaging.validation import reads_as_float32

ENCLOSED = 0.99            # light the PSF box must hold
CENTROID_SLACK = 0.3       # plain-centroid offset (pixels) left alone; validation allows 0.5


class PSFMeasureSettings(BaseModel):
    """How the PSF is measured from a frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect_sigma: float = Field(default=5.0, gt=0, description="source detection threshold")
    min_stars: int = Field(default=5, ge=2, description="stars for an empirical PSF")
    max_stars: int = Field(default=60, ge=2, description="brightest stars stacked")
    max_size: int = Field(default=63, ge=7, description="largest PSF side, pixels")
    trail_ellipticity: float = Field(default=0.5, gt=0, lt=1,
                                     description="stars more elongated are trails")
    saturation: float | None = Field(
        default=None, gt=0, description="saturation level, ADU; default: the lower of the "
                                        "header's SATURATE/SATLEVEL and the ceiling the stars "
                                        "show (flat tops), else the camera's last")
    linear_limit: float | None = Field(
        default=None, gt=0, description="peak above which stars are not linear, ADU; default: "
                                        "the header's MAXLIN, the stars' peak-to-flux ratio, "
                                        "or 0.8 of the saturation level")


@dataclass(frozen=True)
class PSFMeasurement:
    """A PSF and how it was obtained."""

    psf: np.ndarray
    method: str             # empirical | streak | moffat | previous | fallback
    fwhm: float             # pixels, geometric mean of the axes (half-maximum area)
    ellipticity: float      # 1 - b/a (adaptive moments)
    angle: float            # major axis, degrees from +x
    stars_used: int
    stars_found: int
    seconds: float = 0.0
    warning: str | None = None

    @property
    def is_fallback(self) -> bool:
        """True when no PSF could be measured from this frame's stars."""
        return self.warning is not None


def describe(psf: np.ndarray, method: str, stars_used: int, stars_found: int,
             seconds: float = 0.0, warning: str | None = None) -> PSFMeasurement:
    """A :class:`PSFMeasurement` of ``psf`` with its shape measured."""
    moments = adaptive_moments(psf)
    return PSFMeasurement(
        psf=psf, method=method, fwhm=half_maximum_fwhm(psf),
        ellipticity=moments.ellipticity if moments else 0.0,
        angle=moments.angle if moments else 0.0, stars_used=stars_used,
        stars_found=stars_found, seconds=seconds, warning=warning)


def _finish(psf: np.ndarray, minimum_half: int) -> np.ndarray:
    """Non-negative, recentred, cropped to the box holding ENCLOSED of the light, validated."""
    psf = _recentred(np.clip(np.nan_to_num(psf), 0.0, None))
    psf = _recentred(_crop_to_enclosed(np.clip(psf, 0.0, None), minimum_half))
    return validate_psf(psf, "measured PSF")


def _crop_to_enclosed(psf: np.ndarray, minimum_half: int) -> np.ndarray:
    """The smallest centred box (half side >= ``minimum_half``) holding ENCLOSED of the light."""
    half = psf.shape[0] // 2
    total = psf.sum()
    for radius in range(min(minimum_half, half), half + 1):
        box = psf[half - radius: half + radius + 1, half - radius: half + radius + 1]
        if box.sum() >= ENCLOSED * total:
            return box
    return psf


def _recentred(psf: np.ndarray) -> np.ndarray:
    """The PSF with its core (adaptive moments) on the central pixel — and, where wings or a
    lopsided halo still pull the plain centroid (what :func:`validate_psf` checks) more than
    ``CENTROID_SLACK`` away, shifted by that centroid instead, so a measured PSF never fails
    its own centring check."""
    centre = (psf.shape[0] - 1) / 2.0
    moments = adaptive_moments(psf)
    if moments is not None:
        dy, dx = centre - moments.row, centre - moments.column
        if abs(dy) >= 0.02 or abs(dx) >= 0.02:
            psf = np.clip(np.nan_to_num(psf_stack.shifted(psf, dy, dx)), 0.0, None)
    for _ in range(3):
        total = psf.sum()
        if total <= 0:
            break
        rows, columns = np.indices(psf.shape)
        dy = centre - float((rows * psf).sum() / total)
        dx = centre - float((columns * psf).sum() / total)
        if abs(dy) <= CENTROID_SLACK and abs(dx) <= CENTROID_SLACK:
            break
        psf = np.clip(np.nan_to_num(psf_stack.shifted(psf, dy, dx)), 0.0, None)
    return psf


@dataclass(frozen=True)
class _Shape:
    """The typical star of the frame, from the adaptive moments of the candidates."""

    fwhm: float
    ellipticity: float
    angle: float
    sigma_major: float
    sigma_minor: float

    @property
    def trail_length(self) -> float:
        """Length of the uniform segment whose second moment explains the elongation."""
        return math.sqrt(12.0 * max(self.sigma_major**2 - self.sigma_minor**2, 0.0))


def _typical(moments: list[Moments | None]) -> np.ndarray:
    """Mask of the stars whose size is typical (within 3 scaled MADs of the median)."""
    sizes = np.array([m.fwhm if m else np.nan for m in moments])
    finite = np.isfinite(sizes)
    if finite.sum() < 3:
        return finite
    median = np.median(sizes[finite])
    spread = 1.4826 * np.median(np.abs(sizes[finite] - median)) + 0.05 * median
    return finite & (np.abs(sizes - median) <= 3.0 * spread)


def _typical_shape(moments: list[Moments]) -> _Shape:
    angles = np.radians([m.angle for m in moments]) * 2.0  # angles are axial: average 2θ
    angle = math.degrees(math.atan2(np.sin(angles).mean(), np.cos(angles).mean()) / 2.0) % 180
    return _Shape(float(np.median([m.fwhm for m in moments])),
                  float(np.median([m.ellipticity for m in moments])), angle,
                  float(np.median([m.sigma_major for m in moments])),
                  float(np.median([m.sigma_minor for m in moments])))


def _box_half(shape: _Shape, trailed: bool, settings: PSFMeasureSettings) -> int:
    limit = settings.max_size // 2
    if trailed:
        minor_fwhm = 2.3548 * shape.sigma_minor
        return int(min(limit, max(7, math.ceil(shape.trail_length / 2 + 3.0 * minor_fwhm))))
    return int(min(limit, max(7, math.ceil(5.0 * shape.fwhm))))


def _moments(stamps: list[np.ndarray], half: int | None = None) -> list[Moments | None]:
    """Adaptive moments of the stamps, measured on their central ``±half`` box (a star's
    moments need no more than a few FWHM) and given in stamp coordinates."""
    if not stamps:
        return []
    full = stamps[0].shape[0] // 2
    crop = full - min(half or full, full)
    boxes = np.nan_to_num(np.array([s[crop: s.shape[0] - crop, crop: s.shape[1] - crop]
                                    for s in stamps]))
    return [None if m is None else Moments(m.row + crop, m.column + crop, m.fwhm, m.ellipticity,
                                           m.angle, m.sigma_major, m.sigma_minor)
            for m in adaptive_moments_batch(boxes)]


def _frame_shape(detection: psf_stars.Detection, data: np.ndarray, invalid: np.ndarray,
                 peak_limit: float | None, settings: PSFMeasureSettings,
                 flagged: np.ndarray | None = None) -> _Shape:
    """The typical star's shape, from the brightest candidates in modest boxes
    (``flagged``: :func:`~streamer.imaging.psf_stars.flagged_pixels`, when listed)."""
    good = detection.objects[detection.unflagged()]
    if len(good) == 0:
        raise TooFewStarsError(
            f"no unblended source {settings.detect_sigma:g} sigma above the sky among "
            f"{len(detection.objects)} detections")
    probe_half = int(np.clip(math.ceil(3.0 * np.median(good["a"])) + 2, 6,
                             settings.max_size // 2 + 2))
    probe = psf_stars.candidates(detection, data, invalid, peak_limit, probe_half, flagged)
    probe = probe[: settings.max_stars]
    moments = _moments(psf_stars.stamps(detection, probe, probe_half))
    typical = _typical(moments)
    if not typical.any():
        raise TooFewStarsError(
            f"none of {len(detection.objects)} sources is an unsaturated, unblended star with "
            f"peak S/N >= {psf_stars.MIN_PEAK_SNR:g} away from the edges")
    return _typical_shape([m for m, keep in zip(moments, typical) if keep])


def measure_psf(image: np.ndarray, mask: np.ndarray | None = None,
                header: fits.Header | None = None,
                settings: PSFMeasureSettings = PSFMeasureSettings(),
                saturation: Saturation | None = None,
                detection: psf_stars.Detection | None = None,
                invalid: np.ndarray | None = None) -> PSFMeasurement:
    """Measure the PSF of ``image`` from its stars (see the module notes).

    Parameters
    ----------
    image : ndarray
        2-D frame, sky not removed, any real dtype; NaN/inf pixels are ignored.
    mask : ndarray of bool, optional
        True for bad pixels (kept out of every PSF star's box).
    header : astropy.io.fits.Header, optional
        For the saturation level (``SATURATE``/``SATLEVEL``, ``MAXLIN``).
    saturation : Saturation, optional
        The frame's saturation level and linear limit, when found already
        (:func:`~streamer.imaging.saturation.frame_saturation`); PSF stars peak below the
        linear limit.
    detection : Detection, optional
        The frame's sources, when detected already (same ``mask``).
    invalid : ndarray of bool, optional
        Every pixel to leave out, the non-finite ones included, when the caller has that
        map (no passes over the frame to make it again; a ``mask`` given too is added).

    Returns
    -------
    PSFMeasurement
        Method ``empirical``, ``streak`` or ``moffat``.

    Raises
    ------
    TooFewStarsError
        No star fit to measure the PSF on.
    """
    started = time.perf_counter()
    # A 16-bit frame as it is (its values are float32's): a copy is a whole-frame pass.
    data = (image if isinstance(image, np.ndarray) and reads_as_float32(image)
            and image.flags.c_contiguous else np.ascontiguousarray(image, dtype=np.float32))
    if invalid is None:
        invalid = ~np.isfinite(data)
        if mask is not None:
            invalid |= np.asarray(mask, dtype=bool)
    elif mask is not None:
        invalid = invalid | np.asarray(mask, dtype=bool)
    if invalid.all():
        raise TooFewStarsError("the frame has no valid pixel to find stars in")
    if detection is None:
        detection = psf_stars.detect(data, invalid, settings.detect_sigma)
    if saturation is None:
        saturation = frame_saturation(np.asarray(image), header, detection,
                                      configured_saturation(settings))
    limit = saturation.psf_limit
    flagged = psf_stars.flagged_pixels(data, invalid, limit, detection)
    shape = _frame_shape(detection, data, invalid, limit, settings, flagged)
    trailed = shape.ellipticity >= settings.trail_ellipticity
    half = _box_half(shape, trailed, settings)
    chosen = psf_stars.candidates(detection, data, invalid, limit, half + 2, flagged)
    core = max(3.0 * shape.fwhm, shape.trail_length / 2 + 2.0 * shape.fwhm)
    # Brightest first; half as many again as needed covers the ones the size test rejects.
    chosen = psf_stars.clear_cores(detection, chosen, core)[: settings.max_stars * 3 // 2]
    stamps = psf_stars.stamps(detection, chosen, half + 2)
    reach = int(math.ceil(3.0 * shape.fwhm + (shape.trail_length / 2 if trailed else 0))) + 2
    moments = _moments(stamps, reach)
    keep = _typical(moments) if len(stamps) >= 3 else np.array([m is not None for m in moments])
    stamps = [s for s, k in zip(stamps, keep) if k][: settings.max_stars]
    centres = [(m.row, m.column) for m, k in zip(moments, keep) if k][: settings.max_stars]
    found = len(detection.objects)
    if not stamps:
        raise TooFewStarsError(
            f"no PSF star among {found} sources: each is blended, saturated or non-linear "
            f"({describe_saturation(saturation)}), faint, at an edge or has a bright neighbour "
            f"within {core:.0f} pixels")
    if len(stamps) < settings.min_stars:
        return _model_psf(stamps, centres, half, shape, trailed, found, started)
    return _empirical_psf(stamps, centres, half, shape, trailed, found, started)


def configured_saturation(settings: PSFMeasureSettings) -> Saturation | None:
    """The levels the settings fix, if any."""
    if settings.saturation is None and settings.linear_limit is None:
        return None
    return Saturation(settings.saturation, settings.linear_limit, "configured")


def _model_psf(stamps: list[np.ndarray], centres: list[tuple[float, float]], half: int,
               shape: _Shape, trailed: bool, found: int, started: float) -> PSFMeasurement:
    """Few stars: a fitted elliptical Moffat, or a streak model for trailed stars."""
    if trailed:
        core = max(2.3548 * shape.sigma_minor, 0.5)
        psf = streak_psf(max(shape.trail_length, 1.0), shape.angle, core, 2 * half + 1)
        return describe(_finish(psf, 2), "streak", len(stamps), found,
                        time.perf_counter() - started)
    registered = [psf_stack.shifted(s, (s.shape[0] - 1) / 2.0 - cy, (s.shape[1] - 1) / 2.0 - cx)
                  [2:-2, 2:-2] for s, (cy, cx) in zip(stamps, centres)]
    noise = [max(float(np.nanstd(np.concatenate([s[0], s[-1], s[:, 0], s[:, -1]]))), 1e-6)
             for s in registered]
    fwhm, beta, ellipticity, angle, _ = fit_moffat(registered, noise, shape.fwhm)
    ys, xs = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float64)
    psf = moffat_profile(xs, ys, fwhm, beta, ellipticity, angle)
    return describe(_finish(psf / psf.sum(), 2), "moffat", len(stamps), found,
                    time.perf_counter() - started)


def _empirical_psf(stamps: list[np.ndarray], centres: list[tuple[float, float]], half: int,
                   shape: _Shape, trailed: bool, found: int, started: float) -> PSFMeasurement:
    """Enough stars: the registered, sigma-clipped stack, refined twice."""
    aperture = half if trailed else min(float(half), 3.0 * shape.fwhm)
    # The stamps' spectra once: each registration below only moves them.
    transform = psf_stack.transformed(stamps) if len({s.shape for s in stamps}) == 1 else None
    mean, error = psf_stack.stack(stamps, centres, half, aperture, transform)
    for _ in range(2):
        centres = psf_stack.refine(stamps, centres, mean, transform)
        mean, error = psf_stack.stack(stamps, centres, half, aperture, transform)
    if trailed:
        psf = np.where(mean > 2.0 * error, mean, 0.0)
        method = "streak"
    else:
        psf = psf_stack.blend_wings(mean, error, shape.fwhm)
        method = "empirical"
    minimum_half = max(2, int(math.ceil(1.5 * shape.fwhm)))
    return describe(_finish(psf, minimum_half), method, len(stamps), found,
                    time.perf_counter() - started)
