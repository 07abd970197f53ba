"""``streamer restore``: a batch of FITS files through one :class:`Restorer`."""

from __future__ import annotations

import sys
from pathlib import Path

from streamer import __version__
from streamer.errors import FrameError
from streamer.fits_io import output_header, read_image, write_image
from streamer.preview import write_before_after
from streamer.progress import ProgressBar
from streamer.restore import RestorationSettings, RestoredFrame, Restorer


def output_name(path: Path) -> str:
    """``frame.fits.fz`` / ``frame.fit`` / ``frame.fits.gz`` → ``frame.fits``."""
    name = path.name
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return f"{name}.fits"


def provenance(settings: RestorationSettings, restorer: Restorer, result: RestoredFrame,
               source: Path, hdu_index: int) -> tuple[dict, list[str]]:
    """FITS keywords and HISTORY lines recording what was done."""
    report = result.deconvolution
    keywords = {
        "STRMVER": (__version__, "streamer software version"),
        "STRMSRC": (source.name[-60:], "input file"),
        "STRMHDU": (hdu_index, "input HDU index"),
        "STRMWIN": (settings.window, "median window side, pixels"),
        "STRMPSF": (str(settings.psf)[-60:], "PSF"),
        "STRMITER": (report.iterations, "Richardson-Lucy iterations run"),
        "STRMTOL": (settings.tolerance if settings.tolerance is not None else "none",
                    "relative-change stopping tolerance"),
        "STRMCHG": (float(f"{report.relative_change:.6g}"), "relative change, last iteration"),
        "STRMCONV": (report.method, "convolution method"),
        "STRMDEV": (restorer.device_name[-60:], "OpenCL device"),
        "STRMSHFT": (float(f"{result.background_shift:.6g}"), "min(B) subtracted (eq. 2)"),
        "STRMMASK": (result.masked_pixels, "pixels excluded (NaN/inf/masked)"),
        "STRMTMED": (round(result.timings.get("median", 0.0), 4), "[s] median stage"),
        "STRMTRL": (round(result.timings.get("richardson_lucy", 0.0), 4), "[s] RL stage"),
    }
    history = [
        f"streamer {__version__}: background B = A - median{settings.window}x{settings.window}(A),"
        " C = B - min(B)",
        f"streamer: Richardson-Lucy, {report.iterations} iterations, PSF {settings.psf}",
        f"streamer: device {restorer.device_name}",
    ]
    return keywords, history


def restore_files(files: list[Path], out_dir: Path, settings: RestorationSettings,
                  device: str | None, preview: bool) -> int:
    """Restore every file into ``out_dir``; report each bad one on stderr and go on.

    Returns the number of files that failed."""
    restorer = Restorer(settings, device)  # device/PSF errors stop the batch before it starts
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    progress = ProgressBar(len(files))
    for path in files:
        try:
            image = read_image(path)
            result = restorer.restore(image.data)
            keywords, history = provenance(settings, restorer, result, path, image.hdu_index)
            target = out_dir / output_name(path)
            write_image(target, result.data, output_header(image.header, keywords, history))
            if preview:
                write_before_after(target.with_suffix(".png"), image.data, result.data)
        except (FrameError, OSError) as error:
            failures += 1
            print(f"streamer: error: {path}: {error}", file=sys.stderr)
        progress.advance(path.name)
    if len(files) > 1:
        print(f"restored {len(files) - failures} of {len(files)} files into {out_dir}",
              file=sys.stderr)
    return failures
