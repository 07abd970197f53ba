"""Simulated camera frames as FITS files: synthetic star fields with a known PSF."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from astropy.io import fits

from streamer.imaging.psf import PSFSpec
from streamer.imaging.synthetic import star_field


def simulated_header(index: int, exposure: float, start: dt.datetime, psf: PSFSpec) -> fits.Header:
    """A camera-like header: observation time, exposure, filter and a TAN WCS."""
    header = fits.Header()
    header["DATE-OBS"] = ((start + dt.timedelta(seconds=index * exposure)).isoformat(timespec="milliseconds"),
                          "exposure start, UTC")
    header["EXPTIME"] = (exposure, "[s] exposure time")
    header["FILTER"] = ("R", "filter")
    header["OBJECT"] = ("SIMULATED", "synthetic star field")
    header["SIMPSF"] = (str(psf)[:60], "PSF the frame was blurred with")
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 250.4235, 36.4613
    header["CRPIX1"], header["CRPIX2"] = 128.0, 128.0
    header["CDELT1"], header["CDELT2"] = -0.000278, 0.000278
    return header


def write_simulated_frames(out_dir: Path, count: int, size: int, psf: PSFSpec,
                           exposure: float = 10.0, seed: int = 0) -> list[Path]:
    """Write ``count`` 16-bit frames ``sim_NNNN.fits`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = psf.build()
    start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    paths = []
    for index in range(count):
        field = star_field((size, size), kernel, stars=max(20, size * size // 3000), seed=seed + index)
        data = np.clip(np.round(field.image), 0, 65535).astype(np.uint16)
        path = out_dir / f"sim_{index:04d}.fits"
        fits.PrimaryHDU(data, header=simulated_header(index, exposure, start, psf)).writeto(
            path, overwrite=True
        )
        paths.append(path)
    return paths
