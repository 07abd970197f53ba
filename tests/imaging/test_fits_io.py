"""FITS output keeps whole values: long strings continue, long comments shorten, no warnings."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits

from streamer.imaging.fits_io import image_bytes, output_header, read_image_bytes

DEVICE = "Portable Computing Language / pthread-skylake-avx512-AMD EPYC 9B45 64-Core Processor"


def test_long_values_survive_whole_and_nothing_warns():
    source = fits.Header()
    source["EXPTIME"] = (30.0, "seconds")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        header = output_header(source, {
            "STRMDEV": (DEVICE, "OpenCL device"),
            "STRMWIN": (31, "median window side in pixels, and a comment far too long to fit"),
        }, ["one history line"])
        payload = image_bytes(np.zeros((4, 4), np.float32), header)
    read = read_image_bytes(payload).header
    assert read["STRMDEV"] == DEVICE
    assert read["STRMWIN"] == 31 and read.comments["STRMWIN"].startswith("median window side")
    assert read["EXPTIME"] == 30.0
