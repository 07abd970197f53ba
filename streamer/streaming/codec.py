"""Frame payloads: decoding them, with every check made before the cost is paid.

A payload is checked against its envelope (size, SHA-256), its pixel count and decoded size
against the limits *before* anything is decompressed or allocated — a 1 MB tile-compressed
FITS file can claim 32768×32768 pixels — and raw payloads must hold real numbers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from pydantic import ValidationError

from streamer.errors import ChecksumError, EnvelopeError, FrameDecodeError, FrameTooLargeError
from streamer.imaging.fits_io import FitsImage, fits_bytes, read_image_bytes
from streamer.quiet import filtered_warnings
from streamer.streaming.framing import digest_like
from streamer.streaming.messages import FramePayload, RawFrame

RAW_DTYPES = frozenset(np.dtype(name) for name in (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32",
    "float64"))
HEADER_BYTES = 1 << 20  # of a gzipped file, what is inflated to read its headers


@dataclass(frozen=True)
class FrameLimits:
    """The largest frame a process takes: pixels, and bytes as decoded."""

    max_pixels: int
    max_bytes: int

    def check(self, shape: tuple[int, ...], itemsize: int, what: str) -> None:
        """Raise FrameTooLargeError when a frame of ``shape`` and ``itemsize`` is over."""
        pixels = int(np.prod(shape, dtype=np.int64)) if shape else 0
        if pixels > self.max_pixels:
            raise FrameTooLargeError(
                f"{what} has {pixels} pixels {tuple(shape)}, above max_frame_pixels="
                f"{self.max_pixels}; bin the frame or raise the limit")
        if pixels * itemsize > self.max_bytes:
            raise FrameTooLargeError(
                f"{what} decodes to {pixels * itemsize} bytes, above max_frame_bytes="
                f"{self.max_bytes}; bin the frame or raise the limit")


def parse_envelope(envelope_json: bytes | None) -> RawFrame:
    """Validate a raw frame envelope."""
    if not envelope_json:
        raise EnvelopeError("record carries no envelope")
    try:
        return RawFrame.model_validate_json(envelope_json)
    except ValidationError as error:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise EnvelopeError(f"envelope fails the raw_frame schema: {detail}") from error


def check_payload(envelope: FramePayload, payload: bytes) -> None:
    """Raise ChecksumError unless the payload has the envelope's size and digest."""
    if len(payload) != envelope.payload_bytes:
        raise ChecksumError(
            f"payload has {len(payload)} bytes, the envelope says {envelope.payload_bytes}"
        )
    digest = digest_like(payload, envelope.payload_digest)
    if digest != envelope.payload_digest:
        raise ChecksumError(f"payload digest {digest[:19]}… differs from the envelope's "
                            f"{envelope.payload_digest[:19]}…")


def raw_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype of a raw payload (real numbers only)."""
    try:
        dtype = np.dtype(name)
    except TypeError as error:
        raise FrameDecodeError(f"raw payload dtype {name!r} is not a numpy dtype") from error
    if dtype.newbyteorder("=") not in RAW_DTYPES:
        raise FrameDecodeError(
            f"raw payload dtype {dtype} is not accepted: frames hold real numbers "
            f"({', '.join(sorted(str(d) for d in RAW_DTYPES))})")
    return dtype.newbyteorder("<")


def fits_image_shape(payload: bytes) -> tuple[tuple[int, ...], int]:
    """Shape and bytes per pixel of the first image HDU with data, from the headers alone
    (nothing decompressed; of a gzipped file, only its first MiB)."""
    try:
        with filtered_warnings("ignore"):
            with fits.open(io.BytesIO(fits_bytes(payload, head=HEADER_BYTES)), memmap=False,
                           lazy_load_hdus=True) as hdus:
                for hdu in hdus:
                    # A tile-compressed HDU presents the image's header (NAXISn of the image,
                    # from ZNAXISn) without decompressing anything.
                    header = hdu.header
                    axes = int(header.get("NAXIS", 0) or 0)
                    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) \
                            or axes == 0:
                        continue
                    shape = tuple(int(header.get(f"NAXIS{k}", 0)) for k in range(axes, 0, -1))
                    bitpix = int(header.get("BITPIX", -32))
                    scaled = "BSCALE" in header or "BZERO" in header
                    return shape, 4 if scaled and bitpix > 0 else abs(bitpix) // 8
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as error:
        raise FrameDecodeError(f"not a readable FITS file ({error})") from error
    raise FrameDecodeError("no image HDU with data (empty primary and no image extension)")


def decode_payload(envelope: FramePayload, payload: bytes,
                   limits: FrameLimits | None = None, kept: bool = False) -> FitsImage:
    """The image of a payload, after checking its size and checksum against the envelope and
    its size against ``limits`` — all before decoding (``kept``: a plain FITS image into a
    kept frame-sized array, :mod:`streamer.imaging.kept_arrays` — a worker's frames).

    Raises
    ------
    ChecksumError, FrameTooLargeError, FrameDecodeError, FrameShapeError, FrameDtypeError,
    NoValidPixelError
    """
    check_payload(envelope, payload)
    if limits is not None:
        limits.check(tuple(envelope.shape), 8, "the envelope")
    if envelope.encoding == "fits":
        if limits is not None:
            shape, itemsize = fits_image_shape(payload)
            limits.check(shape, itemsize, "the FITS image")
        image = read_image_bytes(payload, kept)
    else:
        dtype = raw_dtype(envelope.dtype)
        expected = int(np.prod(envelope.shape)) * dtype.itemsize
        if len(payload) != expected:
            raise FrameDecodeError(
                f"raw payload of {len(payload)} bytes is not {dtype} {tuple(envelope.shape)} "
                f"({expected} bytes)")
        data = np.frombuffer(payload, dtype=dtype).reshape(envelope.shape)
        image = FitsImage(data=data.astype(dtype.newbyteorder("=")), header=fits.Header(),
                          hdu_index=0)
    if tuple(image.data.shape) != tuple(envelope.shape):
        raise FrameDecodeError(
            f"image shape {image.data.shape} differs from the envelope's {tuple(envelope.shape)}"
        )
    return image

