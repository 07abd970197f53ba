"""A frame's catalogue: every source detected (PSF-matched filter on the linear frame, blends
split on the restored one), measured on the linear data with the frame's PSF, with its shape,
flags, a trail fit when it is elongated, sky position and magnitude; and the frame's 5σ limit,
seeing and counts.

The linear frame is the input less a sep mesh background (64 px) — the restored frame's
fluxes are not used for photometry: detect on the restored frame, measure on the data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streamer.imaging.clipped_stats import clipped_stats
from streamer.imaging.data_quality import Quality
from streamer.imaging.mesh_background import MeshBackground, MeshLevel, levelled
from streamer.imaging.noise import NoiseModel
from streamer.imaging.psf import matched_filter_weights
from streamer.sources.detection import Detections, Peaks, SNRMaps, detect, map_offset
from streamer.sources.peaks import local_peaks, sample_sky_mode, sky_mode
from streamer.sources.photometry import (
    aperture_correction, extended_psf, fit_radius, nearest_neighbour, psf_photometry,
)
from streamer.sources.sky_positions import SkyPositions, celestial_wcs, mid_exposure, sky_positions

BACKGROUND_MESH = 64
TRAIL_ELONGATION = 2.0  # matched-filter a/b beyond which a source is a trail (≳ 3.5 FWHM long)
TRAIL_MIN_SNR = 10.0
SKY_CLEAR_FWHM = 3.0  # the sky level is measured this far (PSF FWHM) from every source
HALO_SNR = 20.0  # ... and farther from brighter ones (see _sky_offset)
DISC_POINTS = 1 << 21  # grid points the sky level's source discs are painted on at a time
BLEND_FWHM = 2.0  # a neighbour this close (PSF FWHM) makes a source blended
ZERO_POINT_KEYWORDS = ("MAGZERO", "MAGZPT", "MAGZP", "PHOTZP", "ZP", "ZEROPNT")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


class SourceFlag(enum.IntFlag):
    """Bits of a source's ``flags``."""

    SATURATED = 1   # a saturated or non-linear pixel in its core: its flux is a lower bound
    EDGE = 2        # its fit box is cut by the frame's edge
    MASKED = 4      # excluded (NaN, masked) pixels in its core
    BLENDED = 8     # a neighbour within 2 FWHM (fitted jointly), or split from one detection
    TRAIL = 16      # elongated beyond the PSF: a moving object's trail (length, angle fitted)


@dataclass
class FrameSources:
    """A frame's sources as columns (pixel positions 0-based) and its frame-level figures."""

    x: np.ndarray
    y: np.ndarray
    x_error: np.ndarray
    y_error: np.ndarray
    flux: np.ndarray
    flux_error: np.ndarray
    snr: np.ndarray
    mag: np.ndarray
    mag_error: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray          # degrees from +x
    fwhm: np.ndarray
    elongation: np.ndarray
    flags: np.ndarray
    trail_length: np.ndarray   # pixels; NaN unless TRAIL
    trail_angle: np.ndarray    # degrees from +x; NaN unless TRAIL
    sky: SkyPositions | None
    zero_point: float | None   # from the header; None: magnitudes are instrumental
    limiting_flux: float       # 5σ PSF-fit flux of a point source on the sky, ADU
    limiting_mag: float
    seeing: float              # the PSF's FWHM, pixels
    mid_exposure: dt.datetime
    mjd: float
    threshold: float
    capped: bool = False       # more sources were found than the cap: the strongest kept
    aperture_correction: float = 1.0  # PSF-fit fluxes × this: total light (see photometry)
    aperture_stars: int = 0    # the stars it was measured on; 0: none, no correction
    noise_ratio: float = 1.0   # the frame's noise at the PSF's scale over white noise's

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def trails(self) -> int:
        """How many sources are trails."""
        return int(np.count_nonzero(self.flags & SourceFlag.TRAIL))


def header_zero_point(header: fits.Header | None) -> float | None:
    """The photometric zero point (mag for 1 ADU) from the header, when given and plausible."""
    if header is None:
        return None
    for keyword in ZERO_POINT_KEYWORDS:
        try:
            value = float(header[keyword])
        except (KeyError, TypeError, ValueError):
            continue
        if 5.0 <= value <= 45.0:
            return value
    return None


def _subtracted(image: np.ndarray) -> np.ndarray:
    """``image`` less its sep mesh background; excluded pixels NaN."""
    return _mesh_subtracted(image)[0]


def _mesh_subtracted(image: np.ndarray, level: MeshLevel | None = None,
                     subtracted: np.ndarray | None = None
                     ) -> tuple[np.ndarray, MeshLevel | np.ndarray, np.ndarray | None]:
    """``image`` less its sep mesh background (excluded pixels NaN), that background — its
    spline's nodes, or the frame-shaped background where sep evaluated it pixel by pixel —
    and the excluded (not finite) pixels, None when there are none. ``level``: the
    background the preparation measured on this frame (the same 64 px mesh on the same
    sample, :mod:`streamer.imaging.psf_stars`), used when it fits; ``subtracted``: the
    preparation's ``levelled(image, level)`` of a frame with no excluded pixel, taken over
    when it fits (the same arithmetic: 0.03-0.04 s not made twice at 4096²)."""
    image = np.asarray(image)
    invalid = None
    if image.dtype.kind == "f":  # an integer frame has no excluded pixel to look for
        invalid = ~np.isfinite(image)
        invalid = invalid if invalid.any() else None
    mesh = int(min(BACKGROUND_MESH, max(8, min(image.shape) // 4)))
    if (level is not None and level.shape == image.shape and level.mesh == mesh
            and np.result_type(image.dtype, np.float32) == np.float32):
        if (subtracted is not None and invalid is None and subtracted.shape == image.shape
                and subtracted.dtype == np.float32):
            return subtracted, level, None
        # No float32 copy first: a 16-bit or float32 frame less a float32 background is
        # float32 arithmetic, the same values as a float32 copy less it.
        clean = levelled(image, level)
        if invalid is not None:
            clean[invalid] = np.nan  # an infinite pixel too
        return clean, level, invalid
    clean = np.array(image, dtype=np.float32, order="C")  # ours: the background comes off
    zeroed = ~np.isfinite(clean)  # (a float64 pixel past float32's range too)
    invalid = zeroed if zeroed.any() else None
    if invalid is not None:
        clean[invalid] = 0.0
    if level is None or level.shape != clean.shape or level.mesh != mesh:
        measured = MeshBackground(clean, mesh, invalid)
        level = measured.level()
        background = measured.back() if level is None else level
    else:
        background = level
    if isinstance(background, MeshLevel):
        levelled(clean, background, out=clean)  # in place, float32: 64 MB at 4096², not 128
    else:
        clean -= background
    if invalid is not None:
        clean[invalid] = np.nan
    return clean, (level if level is not None else background), invalid


def _on_the_mesh(snr: np.ndarray, background: np.ndarray | MeshLevel, sky: float,
                 psf: np.ndarray, sigma: float) -> tuple[np.ndarray, MeshLevel | None]:
    """The device's S/N map of the frame less its sky level, to be made the map of the frame
    less its mesh background — the host's: the filter of a background that is smooth on the
    PSF's scale is that background times the filter's sum. Without this a galaxy's or a
    cluster's light stays in the map, its structure within each 64 px cell passes for noise,
    and the detection loses its stars (NGC 1316 kept 291 of 534 sources, ISAAC 1370 of
    2046). A background given as a spline's nodes is returned as the level to take off
    (the detection does it on its sample and its own mesh's nodes, no whole-map pass); a
    frame-shaped one is taken off here."""
    if isinstance(background, MeshLevel):
        return snr, map_offset(background, sky, psf, sigma)
    scale = float(matched_filter_weights(psf, sigma).sum())
    level = background - np.float32(sky)
    level *= np.float32(scale)
    return np.subtract(snr, level, out=level), None


def _sky_offset(data: np.ndarray, x: np.ndarray, y: np.ndarray, snr: np.ndarray,
                reach: float) -> float:
    """The mean level of ``data`` away from the sources (3σ-clipped). sep's level is the mode
    (2.5 median − 1.5 mean), which sits below the mean of a skewed (Poisson, integer) sky —
    by 0.5-0.8 ADU on a sky of 100 counts, which a PSF fit turns into +3 % on a star of S/N
    10; the fluxes stand on the mean. Each source's disc is ``reach`` wide, grown as the sixth
    root of its S/N over ``HALO_SNR`` (a Moffat β≈3 halo falls as r⁻⁶): on a crowded field
    the halos of the bright stars otherwise lift the mean by 0.07σ, which takes 1 % from a
    star of S/N 30. Where that leaves too little sky, the discs shrink back to ``reach``.
    The level is read on a grid of a quarter-million pixels (its error is then a few
    thousandths of σ); the discs are painted on that grid, source by source."""
    step = max(1, int(np.sqrt(data.size / (1 << 18))))
    sample = data[::step, ::step]
    free = np.isfinite(sample)
    values = sample[free]
    if x.size:
        grown = reach * np.maximum(1.0, np.nan_to_num(snr) / HALO_SNR) ** (1.0 / 6.0)
        for radii in (grown, np.full(x.size, reach)):
            clear = sample[free & ~_discs(sample.shape, step, x, y, radii)]
            if clear.size >= max(100, values.size // 20):
                break
        values = clear
    if values.size < 100:
        return 0.0
    return float(clipped_stats(values, sigma=3.0, maxiters=10)[0])


def _discs(shape: tuple[int, int], step: int, x: np.ndarray, y: np.ndarray,
           radii: np.ndarray) -> np.ndarray:
    """Which points of a grid of every ``step``-th pixel (``shape`` points) lie within
    ``radii`` of a source at ``(x, y)`` (pixels of the frame)."""
    covered = np.zeros(shape, bool)
    half = int(np.ceil(float(radii.max()) / step)) + 1
    offsets = np.arange(-half, half + 1)
    # Many sources' boxes of grid points at once (the grid point nearest each, plus offsets),
    # a few million points at a time: a crowded frame's 10⁵ sources would hold gigabytes.
    batch = max(1, DISC_POINTS // offsets.size**2)
    for start in range(0, x.size, batch):
        bx, by, br = (v[start: start + batch, None, None] for v in (x, y, radii))
        rows = np.rint(by / step).astype(int) + offsets[None, :, None]
        columns = np.rint(bx / step).astype(int) + offsets[None, None, :]
        inside = (rows * step - by) ** 2 + (columns * step - bx) ** 2 < br**2
        inside &= (rows >= 0) & (rows < shape[0]) & (columns >= 0) & (columns < shape[1])
        rows, columns = np.broadcast_arrays(rows, columns)
        covered[rows[inside], columns[inside]] = True
    return covered


def measure_sources(image: np.ndarray, header: fits.Header | None, psf: np.ndarray,
                    psf_fwhm: float, noise: NoiseModel, *, exposure_start: dt.datetime,
                    exposure_seconds: float, restored: np.ndarray | None = None,
                    target_psf: np.ndarray | None = None,
                    quality_flags: np.ndarray | None = None,
                    threshold: float = 5.0, max_sources: int | None = None,
                    snr_maps: SNRMaps | None = None, background: MeshLevel | None = None,
                    subtracted: np.ndarray | None = None) -> FrameSources:
    """The catalogue of a frame (see the module notes); at most ``max_sources`` (the highest
    detection S/N), ``capped`` when more were found. ``snr_maps``: the detection's matched
    filters of the frame and of ``restored``, when the device made them; ``background``: the
    frame's mesh background, when its preparation measured it; ``subtracted``: the frame less
    it, when the preparation made that too (handed over: changed in place)."""
    model = extended_psf(psf, psf_fwhm)  # the halo past the stamp's edge, for the fits
    data, found, capped, excluded = _detected(image, restored, psf, psf_fwhm, noise, target_psf,
                                              threshold, max_sources, snr_maps, background,
                                              subtracted)
    # The sky noise at the PSF's scale, as the detection measured it around each source.
    photometry = psf_photometry(data, noise.sigma * found.noise_ratio, noise.inverse_gain,
                                model, psf_fwhm, found.x, found.y, local_sky=found.blended)
    found = dataclasses.replace(found, x=photometry.x, y=photometry.y)  # blends' refined
    flux, error = photometry.flux, photometry.flux_error
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(error > 0, flux / error, 0.0)
    # A blend's parts come from the restored frame: each must stand on the data by itself.
    keep = np.isfinite(flux) & np.isfinite(snr) & (~found.blended | (snr >= threshold))
    position_error = np.sqrt(2.0) * psf_fwhm / FWHM_PER_SIGMA / np.maximum(snr, 1.0)
    a, b, elongation = _intrinsic_shapes(found, psf_fwhm)
    crowded = nearest_neighbour(found.x, found.y) < BLEND_FWHM * psf_fwhm
    flags = _flags(data.shape, found, photometry, quality_flags, fit_radius(psf_fwhm), crowded)
    # A piece sep's deblending cut from a blend has the shape of its share of the blend's
    # pixels, which the deblending hands out at random at the edges: not a trail's.
    trail = ((elongation > TRAIL_ELONGATION) & (snr > TRAIL_MIN_SNR) & ~found.blended
             & ~crowded & ~found.pieces)
    flags = np.where(trail, flags | SourceFlag.TRAIL, flags)
    trail_length = np.where(trail, np.sqrt(12.0 * np.maximum(a**2 - b**2, 0.0)), np.nan)
    trail_angle = np.where(trail, np.degrees(found.theta), np.nan)
    correction = aperture_correction(data, found.x, found.y, flux,
                                     noise.sigma * found.noise_ratio, noise.inverse_gain,
                                     keep & (flags == 0), psf_fwhm, excluded)
    flux, error = flux * correction.factor, error * correction.factor
    if trail.any():  # an aperture of its own: no correction
        flux = np.where(trail, _trail_flux(data, found, a, b, trail, flux, model), flux)
    zero_point = header_zero_point(header)
    offset = zero_point if zero_point is not None else 0.0
    mag, mag_error = _magnitudes(flux, error, offset)
    unit = model  # unit sum
    limiting_flux = (5.0 * noise.sigma * found.frame_noise_ratio / np.sqrt(np.sum(unit**2))
                     * correction.factor)
    wcs = celestial_wcs(header)
    sky = (sky_positions(wcs, found.x[keep], found.y[keep], position_error[keep],
                         position_error[keep]) if wcs is not None and keep.any() else None)
    middle, mjd = mid_exposure(exposure_start, exposure_seconds)
    return FrameSources(
        x=found.x[keep], y=found.y[keep], x_error=position_error[keep],
        y_error=position_error[keep], flux=flux[keep], flux_error=error[keep], snr=snr[keep],
        mag=mag[keep], mag_error=mag_error[keep], a=a[keep], b=b[keep],
        theta=np.degrees(found.theta[keep]), fwhm=FWHM_PER_SIGMA * np.sqrt(a[keep] * b[keep]),
        elongation=elongation[keep], flags=flags[keep].astype(np.int64),
        trail_length=trail_length[keep], trail_angle=trail_angle[keep], sky=sky,
        zero_point=zero_point, limiting_flux=float(limiting_flux),
        limiting_mag=float(offset - 2.5 * np.log10(limiting_flux)), seeing=float(psf_fwhm),
        mid_exposure=middle, mjd=mjd, threshold=threshold, capped=capped,
        aperture_correction=correction.factor, aperture_stars=correction.stars,
        noise_ratio=found.frame_noise_ratio)


def _detected(image: np.ndarray, restored: np.ndarray | None, psf: np.ndarray, fwhm: float,
              noise: NoiseModel, target_psf: np.ndarray | None, threshold: float,
              max_sources: int | None, snr_maps: SNRMaps | None = None,
              frame_background: MeshLevel | None = None,
              subtracted: np.ndarray | None = None
              ) -> tuple[np.ndarray, Detections, bool, np.ndarray | None]:
    """The linear frame on the sources' sky level, its detections (the strongest
    ``max_sources``), whether the cap cut them, and its excluded pixels (NaN in it; None
    when there are none)."""
    data, background, excluded = _mesh_subtracted(image, frame_background, subtracted)
    restored_data = (_subtracted(restored) if restored is not None and snr_maps is None
                     else None)
    data_snr, offset, candidates = None, None, None
    if snr_maps is not None and snr_maps.data_candidates is not None:
        candidates = snr_maps.data_candidates  # the map stayed on the device
    elif snr_maps is not None:
        data_snr, offset = _on_the_mesh(snr_maps.data, background, noise.sky, psf,
                                        noise.sigma)
    found = detect(data, noise.sigma, psf, fwhm, restored=restored_data,
                   restored_psf=target_psf, threshold=threshold, mask=excluded,
                   data_snr=data_snr, data_offset=offset, data_candidates=candidates,
                   restored_peaks=_restored_peaks(snr_maps, threshold, excluded))
    capped = max_sources is not None and len(found) > max_sources
    if capped:
        found = found.strongest(max_sources)
    data -= np.float32(_sky_offset(data, found.x, found.y, found.detection_snr,
                                   SKY_CLEAR_FWHM * fwhm))  # in place: the array is ours
    return data, found, capped, excluded


def _restored_peaks(snr_maps: SNRMaps | None, threshold: float,
                    excluded: np.ndarray | None) -> Peaks | None:
    """The local peaks of the device's map of the restored frame less its sky mode, the
    ``excluded`` pixels left out: from the device's candidates (which left out the same
    pixels), or from the map where it was downloaded instead."""
    if snr_maps is None:
        return None
    if snr_maps.restored_peaks is not None:
        candidates = snr_maps.restored_peaks
        return candidates.peaks(threshold, sample_sky_mode(candidates.sample))
    if snr_maps.restored is None:
        raise ValueError("S/N maps with neither the restored frame's map nor its peaks")
    restored = snr_maps.restored
    return local_peaks(restored - sky_mode(restored), threshold, excluded)


def _intrinsic_shapes(found, psf_fwhm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each source's second-moment axes with the PSF taken out, and its elongation. sep
    measured the shapes on the matched-filter image: the PSF's variance is in them twice."""
    psf_variance = (psf_fwhm / FWHM_PER_SIGMA) ** 2
    a = np.sqrt(np.maximum(found.a**2 - psf_variance, 0.25 * psf_variance))
    b = np.sqrt(np.maximum(found.b**2 - psf_variance, 0.25 * psf_variance))
    return a, b, found.a / np.maximum(found.b, 1e-6)


def _magnitudes(flux: np.ndarray, error: np.ndarray, zero_point: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes and their errors; NaN where the flux is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zero_point - 2.5 * np.log10(flux), np.nan)
        mag_error = np.where(flux > 0, 2.5 / np.log(10.0) * error / flux, np.nan)
    return mag, mag_error


def _flags(shape: tuple[int, int], found, photometry, quality_flags: np.ndarray | None,
           radius: int, crowded: np.ndarray) -> np.ndarray:
    height, width = shape
    flags = np.zeros(len(found), np.int64)
    edge = ((found.x < radius) | (found.y < radius) | (found.x > width - 1 - radius)
            | (found.y > height - 1 - radius))
    flags[edge] |= SourceFlag.EDGE
    flags[photometry.masked] |= SourceFlag.MASKED
    flags[found.blended | crowded] |= SourceFlag.BLENDED
    if quality_flags is not None:
        flags[_saturated_cores(quality_flags, found.x, found.y)] |= SourceFlag.SATURATED
    return flags


def _saturated_cores(quality_flags: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether a saturated or non-linear pixel lies in the 3×3 core around each source's
    nearest pixel (the core cut at the frame's edges)."""
    bad = (quality_flags & np.uint8(Quality.SATURATED | Quality.NONLINEAR)) != 0
    height, width = bad.shape
    rows, columns = np.round(y).astype(int), np.round(x).astype(int)
    hit = np.zeros(x.size, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            row, column = rows + dy, columns + dx
            inside = (row >= 0) & (row < height) & (column >= 0) & (column < width)
            hit |= inside & bad[np.clip(row, 0, height - 1), np.clip(column, 0, width - 1)]
    return hit


def _trail_flux(data: np.ndarray, found, a: np.ndarray, b: np.ndarray, trail: np.ndarray,
                flux: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Light in an ellipse 3× each trail's moments (a PSF fit takes only its middle), with
    the fitted PSFs of the other sources around it taken out first."""
    import sep

    from streamer.sources.photometry import add_placed, as_spline

    psf = as_spline(psf)

    out = np.full(len(found), np.nan)
    others = ~trail & np.isfinite(flux)
    for index in np.flatnonzero(trail):
        reach = 3.0 * a[index] + psf.shape[0]
        top = max(int(found.y[index] - reach), 0)
        left = max(int(found.x[index] - reach), 0)
        box = np.array(np.nan_to_num(data[top: int(found.y[index] + reach) + 1,
                                          left: int(found.x[index] + reach) + 1]))
        near = np.flatnonzero(others & (np.abs(found.x - found.x[index]) < reach)
                              & (np.abs(found.y - found.y[index]) < reach))
        for other in near:
            add_placed(box, psf, found.y[other] - top, found.x[other] - left, -flux[other])
        total, _, _ = sep.sum_ellipse(np.ascontiguousarray(box), [found.x[index] - left],
                                      [found.y[index] - top], [max(a[index], 0.5)],
                                      [max(b[index], 0.5)],
                                      # sep's float32 angle can round past π/2, which sep
                                      # itself then refuses
                                      [float(np.clip(found.theta[index], -np.pi / 2,
                                                     np.pi / 2))], r=3.0, subpix=1)
        out[index] = float(total[0])
    return out
