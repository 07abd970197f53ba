"""A FITS file of image HDUs written into one buffer, byte for byte what astropy writes.

astropy's ``HDUList.writeto`` into a ``BytesIO`` byteswaps each array into a new one and grows
the stream as it writes: on a 4096² restored frame with its ERR and DQ planes (151 MB) that
is 0.16-0.18 s of one core, most of it the kernel handing out fresh pages for every new array
and every regrowth. Here the file's size is known from the headers first, one buffer is
allocated through NumPy (which asks Linux for huge pages on large arrays: 512× fewer page
faults), each header is copied in and each array is written into it as big-endian in one
pass: about 0.05 s for the same bytes. HDUs this writer does not handle byte for byte (scaled
integers, tables, compressed images) go through astropy.

A fresh 151 MB buffer still costs the kernel its pages each frame: 0.02 s of zeroing when
all goes well, 0.12 s of system time right after a device stage here (the first file after
one took 0.16 s, the next 0.05). So the last few buffers are kept
(:mod:`streamer.imaging.kept_arrays`) and one is written again once nothing refers to it any
more — no payload, memoryview or array over it alive anywhere — 0.03 s.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from astropy.io import fits

from streamer.imaging.kept_arrays import KeptArrays

BLOCK = 2880  # FITS records: headers and data are padded to whole blocks
# Array types stored as they are (BITPIX 8, 16, 32, 64, -32, -64), no scaling keywords.
_DIRECT = {np.dtype(kind) for kind in (np.uint8, np.int16, np.int32, np.int64, np.float32,
                                       np.float64)}
_SCALING = ("BZERO", "BSCALE", "BLANK")


def fits_file(hdus: Sequence[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU]
               ) -> memoryview:
    """The FITS file of ``hdus`` (a primary HDU, then image extensions), as astropy's
    ``writeto(..., output_verify="silentfix")`` writes it."""
    hdu_list = fits.HDUList(list(hdus))
    if not all(_direct(hdu) for hdu in hdu_list):
        stream = io.BytesIO()
        hdu_list.writeto(stream, output_verify="silentfix")
        return stream.getbuffer()
    hdu_list.verify("silentfix")
    hdu_list.update_extend()
    parts = []
    for hdu in hdu_list:
        hdu.update_header()
        data = hdu.data
        parts.append((hdu.header.tostring().encode("ascii"), data))
    total = sum(len(head) + _padded(0 if data is None else data.nbytes)
                for head, data in parts)
    out = _BUFFERS.empty((total,), np.uint8)
    at = 0
    for head, data in parts:
        out[at: at + len(head)] = np.frombuffer(head, np.uint8)
        at += len(head)
        if data is None or data.size == 0:
            continue
        big = np.frombuffer(out, dtype=data.dtype.newbyteorder(">"), count=data.size,
                            offset=at)
        big.reshape(data.shape)[...] = data  # the byteswap, in the same pass as the copy
        end = at + _padded(data.nbytes)
        out[at + data.nbytes: end] = 0
        at = end
    return out.data


# Output buffers kept for reuse: a worker's frames in flight each hold their own.
_BUFFERS = KeptArrays(keep=4)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _direct(hdu) -> bool:
    """Whether ``hdu`` is an image HDU whose data this writer stores as astropy would."""
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
        return False
    if any(keyword in hdu.header for keyword in _SCALING):
        return False
    data = hdu.data
    return data is None or (data.dtype.newbyteorder("=") in _DIRECT and data.ndim >= 1)
