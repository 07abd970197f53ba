"""FITS keywords and HISTORY lines that record what streamer did to a frame."""

from __future__ import annotations

from streamer import __version__
from streamer.restoration.restorer import Restoration
from streamer.settings import RestorationSettings


def provenance(settings: RestorationSettings, device_name: str, result: Restoration,
               source_name: str, hdu_index: int) -> tuple[dict[str, tuple[object, str]], list[str]]:
    """Keywords (name → (value, comment)) and HISTORY lines for a restored frame."""
    report = result.deconvolution
    keywords = {
        "STRMVER": (__version__, "streamer software version"),
        "STRMSRC": (source_name, "input file or frame id"),
        "STRMHDU": (hdu_index, "input HDU index"),
        "STRMWIN": (settings.window, "median window side, pixels"),
        "STRMPSF": (str(settings.psf), "PSF"),
        "STRMITER": (report.iterations, "Richardson-Lucy iterations run"),
        "STRMTOL": (settings.tolerance if settings.tolerance is not None else "none",
                    "relative-change stopping tolerance"),
        "STRMCHG": (float(f"{report.relative_change:.6g}"), "relative change, last iteration"),
        "STRMCONV": (report.method, "convolution method"),
        "STRMDEV": (device_name, "OpenCL device"),
        "STRMSHFT": (float(f"{result.background_shift:.6g}"), "min(B) subtracted (eq. 2)"),
        "STRMMASK": (result.masked_pixels, "pixels excluded (NaN/inf/masked)"),
        "STRMTMED": (round(result.timings.get("median", 0.0), 4), "[s] median stage"),
        "STRMTRL": (round(result.timings.get("richardson_lucy", 0.0), 4), "[s] RL stage"),
    }
    history = [
        f"streamer {__version__}: background B = A - median{settings.window}x{settings.window}(A),"
        " C = B - min(B)",
        f"streamer: Richardson-Lucy, {report.iterations} iterations, PSF {settings.psf}",
        f"streamer: device {device_name}",
    ]
    return keywords, history
