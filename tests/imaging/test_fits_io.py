"""FITS output keeps whole values: long strings continue, long comments shorten, no warnings;
FITS input may come gzipped."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import astropy
import numpy as np
import pytest
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


@pytest.mark.parametrize("value", [True, 0, -7, 10**19, 10**20, 0.1, -1.2345678901234567e-200,
                                   np.float64(0.3), "", "x" * 18, "x" * 19, "it's"])
@pytest.mark.parametrize("comment", ["c", "y" * 46, "y" * 47, "y" * 48, "z" * 70])
@pytest.mark.parametrize("keyword", ["A", "STRMFID", "ABCDEFGH"])
def test_a_card_written_without_its_probe_is_the_probed_one(keyword, value, comment):
    # Values in the fixed 20-column field beside comments up to the room left there skip
    # the probe card: the same card image as the probe's shortening gives, without warning.
    from streamer.imaging.fits_io import _card

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        room = 80 - len(fits.Card(keyword, value, "x").image.rstrip()) + 1
        probed = (fits.Card(keyword, value, comment[:room]) if room > 0
                  else fits.Card(keyword, value))
        assert _card(keyword, value, comment).image == probed.image


def _fits_payload(data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buffer)
    return buffer.getvalue()


def test_gzipped_fits_reads_like_the_plain_file():
    """A ``.fits.gz`` as a camera writes it (astropy's own gzip test frame, and one made
    here) decodes everywhere a FITS does: the image, and its shape from the headers alone."""
    import gzip

    from streamer.streaming.codec import fits_image_shape

    data = np.arange(60 * 70, dtype=np.int16).reshape(60, 70)
    plain = _fits_payload(data)
    packed = gzip.compress(plain)
    assert packed[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_image_bytes(packed).data, data)
    assert fits_image_shape(packed) == fits_image_shape(plain) == ((60, 70), 2)
    real = Path(astropy.__file__).parent / "wcs" / "tests" / "data" / \
        "dss.14.29.56-62.41.05.fits.gz"
    image = read_image_bytes(real.read_bytes())
    assert image.data.shape == (100, 100) and np.isfinite(image.data).all()


def test_bad_or_oversized_gzip_is_a_clear_error():
    import gzip

    from streamer.errors import FrameDecodeError, FrameTooLargeError
    from streamer.imaging.fits_io import fits_bytes

    packed = gzip.compress(_fits_payload(np.zeros((50, 50), dtype=np.float32)))
    with pytest.raises(FrameDecodeError, match="truncated"):
        read_image_bytes(packed[: len(packed) // 2])
    with pytest.raises(FrameDecodeError, match="gzip"):
        read_image_bytes(b"\x1f\x8b" + b"not deflate at all" * 10)
    with pytest.raises(FrameTooLargeError, match="inflates to more than 1000 bytes"):
        fits_bytes(packed, limit=1000)
