"""The worker's host stage before the device, free of Kafka: an assembled frame in, a decoded,
checked and measured one (or the reason it is not) out.

The route runs downhill, each step in the room that owns it: the envelope and payload
(:mod:`streamer.streaming.codec`), the signal check (:mod:`streamer.imaging.validation`), the
device's capacity (:mod:`streamer.restoration.capacity`, NumPy only), then validation, input
quality, noise and the camera's PSF (:class:`~streamer.imaging.preparation.FramePreparer`).

Whatever goes wrong here is the frame's fault — a malformed envelope, a payload that lies
about its size, a dtype that is not a number, a decompression bomb, a frame with no signal, an
exception nobody foresaw in a library — and becomes its dead-letter reason; nothing a record
holds can stop the worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from streamer.errors import StreamerError, UnexpectedFrameError
from streamer.imaging.fits_io import FitsImage
from streamer.imaging.preparation import FramePreparer, PreparedFrame, preparation_turns
from streamer.imaging.validation import check_signal
from streamer.restoration.capacity import FrameCapacity
from streamer.streaming.codec import FrameLimits, decode_payload, parse_envelope
from streamer.streaming.framing import AssembledFrame
from streamer.streaming.messages import RawFrame
from streamer.turns import Ticket, Turns
from streamer.worker.items import DecodedFrame
from streamer.worker.partitions import PartitionState

log = logging.getLogger(__name__)


@dataclass
class HostChecks:
    """What the host stage checks and measures a frame with; ``turns`` order the preparer's
    per-camera steps when frames are measured on several threads."""

    limits: FrameLimits
    capacity: FrameCapacity
    preparer: FramePreparer
    turns: Turns = field(default_factory=preparation_turns)


def decode_frame(item: AssembledFrame, state: PartitionState, checks: HostChecks,
                 ticket: Ticket | None = None) -> DecodedFrame:
    """Decode, check and measure one frame (input quality, noise, PSF). With a ``ticket``
    (taken in fetch order from ``checks.turns``) it may run beside other frames' decoding."""
    started = time.perf_counter()
    try:
        raw, image, prepared, error = decode_and_measure(item, checks, ticket)
    finally:
        if ticket is not None:
            ticket.finish()  # a frame that failed early still lets the next ones pass
    return DecodedFrame(state, item, raw, image, error, time.perf_counter() - started,
                        prepared)


def decode_and_measure(item: AssembledFrame, checks: HostChecks, ticket: Ticket | None = None
                       ) -> tuple[RawFrame | None, FitsImage | None, PreparedFrame | None,
                                  StreamerError | None]:
    """The stage's work, free of the partition: the envelope, the image, its host
    measurements, or the frame's fault."""
    raw = image = prepared = None
    error: StreamerError | None = item.error
    if error is None:
        try:
            raw = parse_envelope(item.envelope_json)
            image = decode_payload(raw, item.payload, checks.limits, kept=True)
            check_signal(image.data)
            checks.capacity.check(image.data.shape, image.data.dtype)
            prepared = checks.preparer.prepare(image.data, image.header, raw.camera_id,
                                               quality=True, ticket=ticket)
        except StreamerError as failure:
            error = failure
        except Exception as failure:  # a library's surprise is still the frame's fault
            log.debug("unexpected error decoding a frame", exc_info=True)
            error = UnexpectedFrameError(f"unexpected {type(failure).__name__} while decoding "
                                         f"or measuring the frame: {failure}")
    return raw, image, prepared, error
