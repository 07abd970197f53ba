"""Reading frames from FITS files and writing restored frames with their provenance.

Input: the primary HDU, or the first image extension when the primary is empty (the layout of
tile-compressed files: RICE, GZIP, HCOMPRESS, PLIO), integer data scaled by BZERO/BSCALE or
float data. Output: float32 with the input header (WCS, exposure, filter, times) kept, plus
provenance keywords and HISTORY lines.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits

from streamer.errors import FrameDecodeError, FrameTooLargeError, NoValidPixelError
from streamer.imaging.data_quality import quality_keywords
from streamer.imaging.fits_reader import direct_image
from streamer.imaging.fits_writer import fits_file
from streamer.imaging.validation import checked_image, has_finite
from streamer.quiet import filtered_warnings

# Keywords describing the stored array; astropy writes them anew for the float32 output.
_STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT",
    "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZNAXIS",
    "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2",
    "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND", "ZBLANK", "ZPCOUNT", "ZGCOUNT", "TFIELDS",
}


@dataclass
class FitsImage:
    """A 2-D image read from a FITS file, with its header and where it came from."""

    data: np.ndarray
    header: fits.Header
    hdu_index: int


def read_image(path: str | Path) -> FitsImage:
    """Read the 2-D image of a FITS file.

    Raises
    ------
    FrameDecodeError
        Not a FITS file, truncated, or holding no image HDU.
    FrameShapeError, FrameDtypeError, NoValidPixelError
        An image that is not 2-D (a cube) or is empty, not real numbers, or holds no finite
        pixel (see :mod:`streamer.imaging.validation`).
    """
    path = Path(path)
    if not path.is_file():
        raise FrameDecodeError("no such file")
    return _read(path)


GZIP_MAGIC = b"\x1f\x8b"
GUNZIP_LIMIT = 2 << 30  # bytes a gzip payload may inflate to: a bound on a decompression bomb


def fits_bytes(payload: bytes, limit: int = GUNZIP_LIMIT, head: int | None = None) -> bytes:
    """The FITS bytes of a payload: the payload itself, or, for a gzip-compressed file
    (``.fits.gz``, as cameras and archives write them), its decompressed content — at most
    ``limit`` bytes, or only its first ``head`` bytes (enough for the headers).

    Raises
    ------
    FrameDecodeError
        A corrupt or truncated gzip stream.
    FrameTooLargeError
        It inflates to more than ``limit`` bytes.
    """
    if payload[:2] != GZIP_MAGIC:
        return payload
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        content = inflater.decompress(payload, (head if head is not None else limit) + 1)
    except zlib.error as error:
        raise FrameDecodeError(f"not a readable gzip file ({error})") from error
    if head is not None:
        return content[:head]
    if len(content) > limit:
        raise FrameTooLargeError(f"the gzip file inflates to more than {limit} bytes; "
                                 "send it uncompressed or tile-compressed (fpack)")
    if not inflater.eof:
        raise FrameDecodeError("not a readable gzip file (truncated)")
    return content


def read_image_bytes(payload: bytes, kept: bool = False) -> FitsImage:
    """Read the 2-D image of a FITS file held in memory (a Kafka payload), plain, gzipped
    (:func:`fits_bytes`) or tile-compressed; errors as :func:`read_image`. A plain primary
    image is converted straight from the bytes (:mod:`streamer.imaging.fits_reader`; into a
    kept frame-sized array with ``kept``)."""
    content = fits_bytes(payload)
    direct = direct_image(content, kept)
    if direct is None:
        return _read(io.BytesIO(content))
    data, header = direct
    return _checked(data, header, 0)


def _read(source) -> FitsImage:
    try:
        # astropy warns, then raises, on truncated files; the raise is what we report.
        with filtered_warnings("ignore"):
            with fits.open(source, memmap=False) as hdus:
                hdus.verify("silentfix+ignore")
                for index, hdu in enumerate(hdus):
                    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                        continue
                    if hdu.header.get("NAXIS", 0) == 0 or hdu.data is None:
                        continue
                    data = np.array(hdu.data)  # applies BZERO/BSCALE, decompresses tiles
                    header = hdu.header.copy()
                    break
                else:
                    raise FrameDecodeError(
                        "no image HDU with data (empty primary and no image extension)"
                    )
    except FrameDecodeError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as error:
        raise FrameDecodeError(f"not a readable FITS image ({error})") from error
    return _checked(data, header, index)


def _checked(data: np.ndarray, header: fits.Header, index: int) -> FitsImage:
    checked_image(data, f"the image in HDU {index}")
    if not has_finite(data):
        raise NoValidPixelError(f"the image in HDU {index} has no finite pixel (all NaN/inf)")
    return FitsImage(data=data, header=header, hdu_index=index)


def output_header(source: fits.Header, provenance: dict[str, tuple[object, str]],
                  history: list[str]) -> fits.Header:
    """The input's header without its storage keywords, plus provenance and HISTORY."""
    header = fits.Header()
    for card in source.cards:
        if card.keyword in _STRUCTURAL or card.keyword.startswith("ZTENSION"):
            continue
        header.append(card, end=True)
    for keyword, (value, comment) in provenance.items():
        header.append(_card(keyword, value, comment), end=True)
    for line in history:
        header.add_history(line)
    return header


def _card(keyword: str, value: object, comment: str) -> fits.Card:
    """A card that keeps its whole value: strings too long for one card continue on CONTINUE
    cards (the FITS long-string convention); a comment that does not fit is shortened rather
    than left for astropy to cut with a warning."""
    if isinstance(value, str) and len(value) > 60:
        return fits.Card(keyword, value)  # CONTINUE cards; the keyword names the value
    if not comment:
        return fits.Card(keyword, value)
    if len(comment) <= _ROOM and _fixed_field(keyword, value):
        return fits.Card(keyword, value, comment)  # fits: no probe card to format first
    # The value's field with a one-character comment says how much room a comment has;
    # formatting a card whose comment is too long is what makes astropy warn.
    room = 80 - len(fits.Card(keyword, value, "x").image.rstrip()) + 1
    return fits.Card(keyword, value, comment[:room]) if room > 0 else fits.Card(keyword, value)


# A comment this long always fits beside a value in the fixed 20-column field:
# 80 − "KEYWORD = " − 20 − " / ".
_ROOM = 80 - 10 - 20 - 3


def _fixed_field(keyword: str, value: object) -> bool:
    """Whether astropy writes ``value`` in the fixed 20-column value field after an
    8-character keyword (booleans, short integers, floats — at most 20 characters — and
    strings short enough to quote within it)."""
    if len(keyword) > 8 or keyword.upper() != keyword:
        return False
    if isinstance(value, str):
        return len(value) <= 18 and "'" not in value and value.isascii()
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return len(str(value)) <= 20
    return isinstance(value, float)


def psf_hdu(psf: np.ndarray, keywords: dict[str, tuple[object, str]]) -> fits.ImageHDU:
    """The PSF a frame was restored with, as an image extension named ``PSF``."""
    hdu = fits.ImageHDU(data=np.asarray(psf, dtype=np.float32), name="PSF")
    for keyword, (value, comment) in keywords.items():
        hdu.header.append(_card(keyword, value, comment), end=True)
    return hdu


def write_psf(path: str | Path, psf: np.ndarray, keywords: dict[str, tuple[object, str]]) -> None:
    """A PSF as its own FITS file (primary HDU), readable by ``--psf file:PATH``."""
    hdu = fits.PrimaryHDU(data=np.asarray(psf, dtype=np.float32))
    for keyword, (value, comment) in keywords.items():
        hdu.header.append(_card(keyword, value, comment), end=True)
    hdu.writeto(path, overwrite=True)


def quality_hdu(plane: np.ndarray) -> fits.ImageHDU:
    """The data-quality plane as an image extension named ``DQ``, its bits named in the
    header (:mod:`streamer.imaging.data_quality`)."""
    hdu = fits.ImageHDU(data=np.asarray(plane, dtype=np.uint8), name="DQ")
    for keyword, (value, comment) in quality_keywords().items():
        hdu.header.append(_card(keyword, value, comment), end=True)
    return hdu


def error_hdu(sigma: np.ndarray, restored_as: str) -> fits.ImageHDU:
    """The noise map as an image extension named ``ERR``: each pixel's standard deviation
    (ADU) from the data's noise model; NaN where the input was excluded."""
    hdu = fits.ImageHDU(data=np.asarray(sigma, dtype=np.float32), name="ERR")
    hdu.header.append(_card("BUNIT", "ADU", "standard deviation of the pixel"), end=True)
    hdu.header.append(_card("ERRTYPE", "SIGMA", "1-sigma noise (not variance, not weight)"),
                      end=True)
    hdu.header.append(_card(
        "ERRFOR", restored_as,
        "residual: the sky/ERR is unit normal; estimate: the input's noise"), end=True)
    return hdu


def restored_bytes(data: np.ndarray, header: fits.Header,
                   extensions: Sequence[fits.ImageHDU] = ()) -> memoryview:
    """A restored frame as a FITS file in memory: float32 primary HDU with ``header``, then
    the extensions (PSF, DQ, ERR) — written in one buffer (:mod:`streamer.imaging.fits_writer`)."""
    hdus = [fits.PrimaryHDU(data=np.asarray(data, dtype=np.float32), header=header)]
    hdus.extend(extensions)
    return fits_file(hdus)


def write_restored(path: str | Path, data: np.ndarray, header: fits.Header,
                   extensions: Sequence[fits.ImageHDU] = ()) -> None:
    """Write :func:`restored_bytes` to ``path`` (replaced if present)."""
    Path(path).write_bytes(restored_bytes(data, header, extensions))


def image_bytes(data: np.ndarray, header: fits.Header | None = None) -> bytes:
    """A FITS file in memory: ``data`` in the primary HDU, with ``header`` (dtype kept)."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()
