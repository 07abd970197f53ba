"""Frame payloads: building them from arrays or files, and decoding them with checks."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from pydantic import ValidationError

from streamer.errors import ChecksumError, EnvelopeError, FrameDecodeError
from streamer.imaging.fits_io import FitsImage, read_image_bytes
from streamer.streaming.framing import sha256_hex
from streamer.streaming.messages import FramePayload, RawFrame




def parse_envelope(envelope_json: bytes | None) -> RawFrame:
    """Validate a raw frame envelope."""
    if not envelope_json:
        raise EnvelopeError("record carries no envelope")
    try:
        return RawFrame.model_validate_json(envelope_json)
    except ValidationError as error:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise EnvelopeError(f"envelope fails the raw_frame schema: {detail}") from error


def decode_payload(envelope: FramePayload, payload: bytes) -> FitsImage:
    """The image of a payload, after checking its size and checksum against the envelope.

    Raises
    ------
    ChecksumError, FrameDecodeError, FrameError
    """
    if len(payload) != envelope.payload_bytes:
        raise ChecksumError(
            f"payload has {len(payload)} bytes, the envelope says {envelope.payload_bytes}"
        )
    digest = sha256_hex(payload)
    if digest != envelope.payload_sha256:
        raise ChecksumError(f"payload SHA-256 {digest[:12]}… differs from the envelope's "
                            f"{envelope.payload_sha256[:12]}…")
    if envelope.encoding == "fits":
        image = read_image_bytes(payload)
    else:
        try:
            dtype = np.dtype(envelope.dtype).newbyteorder("<")
            data = np.frombuffer(payload, dtype=dtype).reshape(envelope.shape)
        except (TypeError, ValueError) as error:
            raise FrameDecodeError(
                f"raw payload of {len(payload)} bytes is not {envelope.dtype} {envelope.shape}"
            ) from error
        image = FitsImage(data=data, header=fits.Header(), hdu_index=0)
    if tuple(image.data.shape) != tuple(envelope.shape):
        raise FrameDecodeError(
            f"image shape {image.data.shape} differs from the envelope's {tuple(envelope.shape)}"
        )
    return image
