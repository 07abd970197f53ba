"""FITS files written into one buffer (streamer.imaging.fits_writer) against astropy's own
writer: the same bytes for every HDU layout the worker writes and more (odd sizes padded, long
and HISTORY cards, NaN, every directly stored type, an empty primary); HDUs it does not store
byte for byte (scaled integers, tables) go through astropy, still the same bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from streamer.imaging.fits_io import error_hdu, psf_hdu, quality_hdu, restored_bytes
from streamer.imaging.fits_writer import fits_file


def _astropy(hdus) -> bytes:
    stream = io.BytesIO()
    fits.HDUList(hdus).writeto(stream, output_verify="silentfix")
    return stream.getvalue()


def _hdus(dtype, shape):
    rng = np.random.default_rng(3)
    data = rng.normal(100, 30, shape).astype(dtype)
    header = fits.Header()
    header["OBJECT"] = "M13"
    header["LONGSTR"] = "x" * 150  # CONTINUE cards
    header.add_history("restored by streamer; " * 5)
    return [fits.PrimaryHDU(data=data, header=header)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, np.int32,
                                   np.int64])
@pytest.mark.parametrize("shape", [(37, 51), (4, 720), (1, 1)])
def test_the_same_bytes_as_astropy(dtype, shape):
    hdus = _hdus(dtype, shape)
    expected = _astropy(_hdus(dtype, shape))
    written = fits_file(hdus)
    assert isinstance(written, memoryview) and written == expected


def test_a_restored_frame_with_its_extensions():
    rng = np.random.default_rng(4)
    data = rng.normal(0, 1, (300, 257)).astype(np.float32)
    data[5, 7] = np.nan
    header = fits.Header({"EXPTIME": 30.0, "DATE-OBS": "2026-12-01T03:00:00"})
    extensions = [psf_hdu(np.ones((11, 11), np.float32) / 121, {"PSFFWHM": (2.5, "px")}),
                  quality_hdu(rng.integers(0, 4, data.shape).astype(np.uint8)),
                  error_hdu(np.abs(data) + 1, "residual")]
    written = restored_bytes(data, header, extensions)
    expected = _astropy([fits.PrimaryHDU(data=data, header=header), *extensions])
    assert written == expected and len(written) % 2880 == 0
    with fits.open(io.BytesIO(written)) as opened:  # and astropy reads it back
        assert [hdu.name for hdu in opened] == ["PRIMARY", "PSF", "DQ", "ERR"]
        assert np.array_equal(opened[0].data, data, equal_nan=True)


def test_an_empty_primary_and_the_layouts_left_to_astropy():
    image = fits.ImageHDU(data=np.arange(12, dtype=np.float32).reshape(3, 4), name="SCI")
    assert fits_file([fits.PrimaryHDU(), image]) == _astropy(
        [fits.PrimaryHDU(), fits.ImageHDU(data=image.data, name="SCI")])
    unsigned = np.arange(40, dtype=np.uint16).reshape(5, 8) + 40000  # BZERO 32768
    table = fits.BinTableHDU.from_columns([fits.Column("X", "E", array=np.ones(3))])
    for hdus, again in (([fits.PrimaryHDU(data=unsigned)], [fits.PrimaryHDU(data=unsigned)]),
                        ([fits.PrimaryHDU(), table], [fits.PrimaryHDU(), table.copy()])):
        assert fits_file(hdus) == _astropy(again)


def _frame(value: float):
    data = np.full((300, 257), value, np.float32)
    data[7, 9] = np.nan
    return [fits.PrimaryHDU(data=data), fits.ImageHDU(data=(data > 0).astype(np.uint8),
                                                      name="DQ")]


def test_a_buffer_is_written_again_only_once_nothing_refers_to_it():
    """The kept buffers: a file's buffer is taken again for a file of its size once its
    payload, and every view of it, is gone — never while any lives on (a payload being
    published, a chunk of it, an array over it) — and the file written there is astropy's."""
    first = fits_file(_frame(1.0))
    where = id(first.obj)
    chunk = first[100:2000]  # a chunk being published
    second = fits_file(_frame(2.0))
    assert id(second.obj) != where and chunk == _astropy(_frame(1.0))[100:2000]
    del first
    third = fits_file(_frame(3.0))  # the chunk still holds the first buffer
    assert id(third.obj) != where and chunk == _astropy(_frame(1.0))[100:2000]
    over = np.frombuffer(third, np.uint8)  # an array over the third, its payload dropped
    third_at = id(third.obj)
    del chunk, third
    fourth = fits_file(_frame(4.0))
    assert id(fourth.obj) == where  # free now: written again, byte for byte astropy's file
    assert fourth == _astropy(_frame(4.0))
    assert over.tobytes() == _astropy(_frame(3.0))
    fifth = fits_file(_frame(5.0))  # the array still holds the third buffer
    assert id(fifth.obj) != third_at and over.tobytes() == _astropy(_frame(3.0))
