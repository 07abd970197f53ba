"""FITS keywords and HISTORY lines that record what streamer did to a frame, and the
extensions that travel with it (the PSF, the data-quality plane)."""

from __future__ import annotations

from astropy.io import fits

from streamer import __version__
from streamer.imaging.fits_io import error_hdu, psf_hdu, quality_hdu
from streamer.imaging.psf_measure import PSFMeasurement
from streamer.restoration.restorer import Restoration
from streamer.settings import RestorationSettings

Keywords = dict[str, tuple[object, str]]


def _rounded(value: float | None, digits: int = 6) -> float | str:
    return "none" if value is None else float(f"{value:.{digits}g}")


def psf_keywords(psf: PSFMeasurement) -> Keywords:
    """FWHM, ellipticity, angle, stars used and method of a PSF."""
    keywords: Keywords = {
        "PSFMETH": (psf.method, "PSF: empirical|streak|moffat|previous|fallback|..."),
        "PSFFWHM": (_rounded(psf.fwhm, 4), "[pix] PSF FWHM, geometric mean of the axes"),
        "PSFELLIP": (_rounded(psf.ellipticity, 4), "PSF ellipticity 1 - b/a"),
        "PSFANGLE": (_rounded(psf.angle, 4), "[deg] PSF major axis from +x"),
        "PSFNSTAR": (psf.stars_used, "stars the PSF was measured on"),
        "PSFFOUND": (psf.stars_found, "sources detected"),
    }
    if psf.warning:
        keywords["PSFWARN"] = (psf.warning, "why no PSF was measured on this frame")
    return keywords


def provenance(settings: RestorationSettings, device_name: str, result: Restoration,
               source_name: str, hdu_index: int) -> tuple[Keywords, list[str]]:
    """Keywords (name → (value, comment)) and HISTORY lines for a restored frame."""
    report = result.deconvolution
    psf = result.psf
    keywords: Keywords = {
        "STRMVER": (__version__, "streamer software version"),
        "STRMSRC": (source_name, "input file or frame id"),
        "STRMHDU": (hdu_index, "input HDU index"),
        "STRMWIN": (settings.window, "median window side, pixels"),
        "STRMPSF": (str(settings.psf), "PSF setting"),
        **psf_keywords(psf),
        "STRMITER": (report.iterations, "Richardson-Lucy iterations run"),
        "STRMSTOP": (report.stopped_by, "what ended the iterations"),
        "STRMPLAT": (settings.plateau, "chi2 plateau stopping share (0: off)"),
        "STRMOUT": (settings.restored_as, "restored as: estimate or residual"),
        "STRMTGT": (_rounded(result.resolution.fwhm) if result.resolution is not None else 0.0,
                    "[pixel] target FWHM restored to (0: full)"),
        "STRMCHI2": (_rounded(report.chi2), "reduced chi2 of the signal pixels"),
        "STRMDAMP": (report.damping, "[sigma] damping threshold (0: undamped)"),
        "STRMPED": (settings.pedestal, "[sigma] sky pedestal kept by the estimate"),
        "STRMNOIS": (_rounded(result.noise.sigma), "[adu] sky noise of the input"),
        "STRMTOL": (settings.tolerance if settings.tolerance is not None else "none",
                    "relative-change stopping tolerance"),
        "STRMCHG": (_rounded(report.relative_change), "relative change, last iteration"),
        "STRMCONV": (report.method, "convolution method"),
        "STRMDEV": (device_name, "OpenCL device"),
        "STRMSHFT": (_rounded(result.background_shift), "min(B) subtracted (eq. 2)"),
        "STRMMASK": (result.masked_pixels, "pixels excluded (NaN/inf/masked)"),
        "STRMSAT": (_rounded(result.saturation.level), "[adu] saturation level"),
        "STRMLIN": (_rounded(result.saturation.linear_limit), "[adu] linear limit"),
        "STRMSATS": (result.saturation.source, "where the levels came from"),
        "STRMFILL": (result.refilled, "saturated/non-linear cores refilled (DQ FILLED)"),
        "STRMTPSF": (round(result.timings.get("psf", 0.0), 4), "[s] PSF measurement"),
        "STRMTMED": (round(result.timings.get("median", 0.0), 4), "[s] median stage"),
        "STRMTRL": (round(result.timings.get("richardson_lucy", 0.0), 4), "[s] RL stage"),
    }
    history = [
        f"streamer {__version__}: background B = A - median{settings.window}x{settings.window}(A),"
        " C = B - min(B)",
        f"streamer: PSF {psf.method}, FWHM {psf.fwhm:.3f} px, ellipticity {psf.ellipticity:.3f},"
        f" {psf.stars_used} stars (setting {settings.psf})",
        f"streamer: Richardson-Lucy with the sky as background, {report.iterations} iterations "
        f"({report.stopped_by}), damping {report.damping:g} sigma",
        f"streamer: device {device_name}",
    ]
    return keywords, history


def output_extensions(result: Restoration, restored_as: str = "estimate"
                      ) -> list[fits.ImageHDU]:
    """The restored frame's extensions: ``PSF`` (what it was restored with) and, when made,
    ``DQ`` (the data-quality plane) and ``ERR`` (the noise map; ``restored_as`` says what it
    describes)."""
    extensions = [psf_hdu(result.psf.psf, psf_keywords(result.psf))]
    if result.quality_flags is not None:
        extensions.append(quality_hdu(result.quality_flags))
    if result.error is not None:
        extensions.append(error_hdu(result.error, restored_as))
    return extensions
