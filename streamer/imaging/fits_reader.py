"""The image of a plain FITS file read straight from its bytes, as astropy reads it.

A camera's frame is one primary HDU of 16-bit integers stored with ``BZERO = 32768`` (FITS's
unsigned 16 bits), or of floats. astropy opens it through a stream, copies the bytes, converts
the big-endian integers to unsigned in two passes and the caller copies the result again:
0.09 s of one core for a 4096² frame. Here the header is parsed by astropy and the pixels are
converted from the payload in one pass — the unsigned ones by flipping their sign bit, which
is adding 32768 modulo 2¹⁶ — into native byte order: about 0.02 s, the same values. Anything
else (extensions, tile compression, scaled or BLANK-flagged integers, a header astropy would
have to fix, a truncated file) is left to astropy, which also says what is wrong with it.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from streamer.imaging.kept_arrays import FRAMES

BLOCK = 2880
CARD = 80
_TYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
# BZERO that makes a signed type unsigned: the sign bit flipped.
_UNSIGNED = {16: (32768, ">u2", 0x8000), 32: (2147483648, ">u4", 0x80000000)}


def direct_image(content: bytes, kept: bool = False) -> tuple[np.ndarray, fits.Header] | None:
    """The primary HDU's 2-D image (native byte order) and its header, or None when the file
    is not one this reader takes (see the module notes). ``kept``: the image in one of the
    kept frame-sized arrays (:mod:`streamer.imaging.kept_arrays`; a worker's frames, not a
    camera's or an archive's, which would only hold them)."""
    end = _header_end(content)
    if end is None:
        return None
    try:
        header = fits.Header.fromstring(bytes(content[:end]).decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not _plain(header):
        return None
    bits = header["BITPIX"]
    width, height = header["NAXIS1"], header["NAXIS2"]
    count = width * height
    if len(content) < end + count * abs(bits) // 8:
        return None  # truncated: astropy's error says so
    zero = header.get("BZERO", 0)
    if zero:
        _, stored, flip = _UNSIGNED[bits]
        raw = np.frombuffer(content, dtype=stored, count=count, offset=end)
        data = np.bitwise_xor(raw, np.array(flip, dtype=stored),  # native, a new array
                              out=_new((count,), raw.dtype.newbyteorder("="), kept))
    else:
        raw = np.frombuffer(content, dtype=_TYPES[bits], count=count, offset=end)
        data = _new((count,), raw.dtype.newbyteorder("="), kept)
        np.copyto(data, raw)
    return data.reshape(height, width), header


def _new(shape: tuple[int, ...], dtype: np.dtype, kept: bool) -> np.ndarray:
    return FRAMES.empty(shape, dtype) if kept else np.empty(shape, dtype)


def _header_end(content: bytes) -> int | None:
    """The offset past the primary header's last block (its END card found), or None."""
    view = memoryview(content)
    for block in range(0, min(len(content), 1000 * BLOCK), BLOCK):
        chunk = bytes(view[block: block + BLOCK])
        if len(chunk) < BLOCK:
            return None
        for card in range(0, BLOCK, CARD):
            if chunk[card: card + 8] == b"END     ":
                return block + BLOCK
    return None


def _plain(header: fits.Header) -> bool:
    """Whether ``header`` is a standard primary header of a 2-D image this reader converts
    as astropy does: no scaling but the unsigned offsets, no BLANK, every card valid."""
    try:
        if header.get("SIMPLE") is not True or header.get("NAXIS") != 2:
            return False
        bits = header.get("BITPIX")
        if bits not in _TYPES or header.get("BSCALE", 1) != 1 or "BLANK" in header:
            return False
        if any(key in header for key in ("ZIMAGE", "GROUPS", "PCOUNT", "GCOUNT")):
            return False
        zero = header.get("BZERO", 0)
        if zero and (bits not in _UNSIGNED or zero != _UNSIGNED[bits][0]):
            return False
        width, height = header.get("NAXIS1"), header.get("NAXIS2")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0
                and height > 0):
            return False
        for card in header.cards:  # one astropy would fix or refuse: its path
            card.verify("exception")
    except (fits.VerifyError, ValueError, KeyError, TypeError):
        return False
    return True
