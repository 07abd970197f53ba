"""A plain FITS image read straight from its bytes (streamer.imaging.fits_reader) against
astropy's reading of the same file: the same pixel values, native byte order, the same header
cards, for every BITPIX and the unsigned offsets (BZERO 32768 and 2³¹); everything else —
BLANK, BSCALE, another BZERO, an image extension, tile compression, a header card astropy
must fix — left to astropy; a truncated file still an error; gzip read straight too."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits

from streamer.errors import FrameDecodeError
from streamer.imaging.fits_io import _read, read_image_bytes
from streamer.imaging.fits_reader import direct_image


def _bytes(hdus) -> bytes:
    stream = io.BytesIO()
    fits.HDUList(hdus).writeto(stream)
    return stream.getvalue()


def _image(dtype) -> np.ndarray:
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        data = rng.integers(info.min, info.max, (37, 53), dtype=dtype, endpoint=True)
        data[0, :2] = (info.min, info.max)
        return data
    data = rng.normal(100, 30, (37, 53)).astype(dtype)
    data[3, 4], data[5, 6] = np.nan, np.inf
    return data


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.int64, np.float32, np.float64])
def test_the_same_image_and_header_as_astropy(dtype):
    header = fits.Header({"OBJECT": "M13", "EXPTIME": 30.0, "DATE-OBS": "2026-12-01T03:00"})
    header["LONGSTR"] = "x" * 150
    header.add_history("taken")
    content = _bytes([fits.PrimaryHDU(data=_image(dtype), header=header)])
    assert direct_image(content) is not None
    ours, theirs = read_image_bytes(content), _read(io.BytesIO(content))
    assert ours.data.dtype == theirs.data.dtype.newbyteorder("=")
    assert ours.data.dtype.isnative and ours.data.flags.writeable
    assert np.array_equal(ours.data, theirs.data, equal_nan=np.dtype(dtype).kind == "f")
    assert list(ours.header.items()) == list(theirs.header.items())
    assert ours.hdu_index == theirs.hdu_index == 0
    zipped = read_image_bytes(gzip.compress(content))
    assert np.array_equal(zipped.data, ours.data, equal_nan=np.dtype(dtype).kind == "f")


def _blank() -> bytes:
    hdu = fits.PrimaryHDU(data=np.arange(20, dtype=np.int16).reshape(4, 5))
    hdu.header["BLANK"] = 3
    return _bytes([hdu])


def _scaled() -> bytes:
    hdu = fits.PrimaryHDU(data=np.arange(20, dtype=np.int16).reshape(4, 5))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 2.0, 10.0
    return _bytes([hdu])


def _extension() -> bytes:
    return _bytes([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 5), np.float32))])


def _compressed() -> bytes:
    return _bytes([fits.PrimaryHDU(), fits.CompImageHDU(np.arange(400, dtype=np.int32)
                                                        .reshape(20, 20))])


def _card_to_fix() -> bytes:
    content = bytearray(_bytes([fits.PrimaryHDU(np.ones((4, 5), np.float32))]))
    at = content.index(b"END     ")
    content[at: at + 80] = b"BADKEY  = 'unterminated".ljust(80)
    content[at + 80: at + 160] = b"END".ljust(80)
    return bytes(content)


@pytest.mark.parametrize("make", [_blank, _scaled, _extension, _compressed, _card_to_fix])
def test_what_it_does_not_take_is_astropys(make):
    content = make()
    assert direct_image(content) is None
    image = read_image_bytes(content)  # astropy's reading, as before
    reference = _read(io.BytesIO(content))
    assert np.array_equal(image.data, reference.data, equal_nan=image.data.dtype.kind == "f")


def test_a_truncated_file_is_still_an_error():
    content = _bytes([fits.PrimaryHDU(data=np.ones((40, 50), np.float32))])
    with pytest.raises(FrameDecodeError, match="not a readable FITS image"):
        read_image_bytes(content[:-3000])
    assert direct_image(content[:100]) is None
