"""The worker's decode stage, free of Kafka: an assembled frame in, a decoded and measured one
(or the reason it is not) out.

Whatever goes wrong here is the frame's fault — a malformed envelope, a payload that lies
about its size, a dtype that is not a number, a decompression bomb, a frame with no signal, an
exception nobody foresaw in a library — and becomes its dead-letter reason; nothing a record
holds can stop the worker.
"""

from __future__ import annotations

import logging
import time

from streamer.errors import FrameError, StreamerError
from streamer.restoration.restorer import Restorer
from streamer.streaming.codec import FrameLimits, check_signal, decode_payload, parse_envelope
from streamer.streaming.framing import AssembledFrame
from streamer.worker.items import DecodedFrame
from streamer.worker.processing import prepare_frame

log = logging.getLogger(__name__)


def decode_frame(item: AssembledFrame, generation: int, restorer: Restorer,
                 limits: FrameLimits) -> DecodedFrame:
    """Decode, check and measure one frame (input quality, noise, PSF)."""
    started = time.perf_counter()
    raw = image = prepared = None
    error: StreamerError | None = item.error
    if error is None:
        try:
            raw = parse_envelope(item.envelope_json)
            image = decode_payload(raw, item.payload, limits)
            check_signal(image.data)
            restorer.check_capacity(image.data.shape, image.data.dtype)
            prepared = prepare_frame(restorer, raw, image)
        except StreamerError as failure:
            error = failure
        except Exception as failure:  # a library's surprise is still the frame's fault
            log.debug("unexpected error decoding a frame", exc_info=True)
            error = FrameError(f"unexpected {type(failure).__name__} while decoding or "
                               f"measuring the frame: {failure}")
    return DecodedFrame(generation, item, raw, image, error, time.perf_counter() - started,
                        prepared)
