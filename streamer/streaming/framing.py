"""Frames as Kafka records: splitting a payload into chunks, and putting chunks back together.

A frame is written as ``chunk_count`` records in one transaction, every record carrying the
envelope JSON and ``index/count`` in its headers. A reader assembles them per partition and
hands out whole frames **in the order of their first record**, so that the consumer offset
to commit after each frame is simply the first offset of the oldest frame not yet handled
(chunks of frames from different producers may interleave in a partition). A chunk whose frame
started before the reader's start position belongs to a frame already handled and committed,
and is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import blake3

from streamer.errors import ChunkError, FrameError, FrameTooLargeError
from streamer.streaming.messages import CHUNK_HEADER, ENVELOPE_HEADER, KIND_HEADER

log = logging.getLogger(__name__)




def split_payload(payload: bytes | memoryview, chunk_bytes: int) -> list[bytes | memoryview]:
    """The payload cut into pieces of at most ``chunk_bytes`` (one empty piece if empty):
    views of it, not copies — a 4096² restored frame's 151 MB copied chunk by chunk cost
    0.1 s of fresh pages a frame, and the Kafka client copies each value into its batch
    anyway."""
    if not len(payload):
        return [b""]
    view = memoryview(payload).cast("B")
    return [view[i: i + chunk_bytes] for i in range(0, len(view), chunk_bytes)]


def frame_records(envelope_json: bytes, kind: str, payload: bytes | memoryview,
                  chunk_bytes: int) -> list[tuple[bytes | memoryview, list[tuple[str, bytes]]]]:
    """``(value, headers)`` of each record of a frame."""
    chunks = split_payload(payload, chunk_bytes)
    count = len(chunks)
    return [
        (chunk, [(KIND_HEADER, kind.encode()), (ENVELOPE_HEADER, envelope_json),
                 (CHUNK_HEADER, f"{index}/{count}".encode())])
        for index, chunk in enumerate(chunks)
    ]


DigestAlgorithm = Literal["blake3", "sha256"]


def payload_digest(payload: bytes | memoryview, algorithm: DigestAlgorithm = "blake3") -> str:
    """``algorithm:hex`` of a payload's bytes: the digest every envelope carries. streamer
    writes BLAKE3 (a third of SHA-256's time on one core; see :mod:`~streamer.streaming.
    messages`); ``sha256`` is read from cameras that send it."""
    if algorithm == "blake3":
        return f"blake3:{blake3.blake3(payload).hexdigest()}"
    if algorithm == "sha256":
        return f"sha256:{hashlib.sha256(payload).hexdigest()}"
    raise ValueError(f"no digest algorithm {algorithm!r}: use blake3 or sha256")


def digest_like(payload: bytes | memoryview, expected: str) -> str:
    """The payload's digest by the algorithm of ``expected`` (``algorithm:hex``), to compare
    with it."""
    algorithm = expected.partition(":")[0]
    return payload_digest(payload, algorithm if algorithm == "sha256" else "blake3")


def headers_dict(headers) -> dict[str, bytes]:
    """aiokafka record headers (a sequence of pairs) as a dict."""
    return {key: value for key, value in (headers or ())}


@dataclass
class AssembledFrame:
    """A complete frame (or a rejected record group) ready for the worker."""

    partition: int
    offsets: list[int]
    envelope_json: bytes | None
    payload: bytes
    headers: dict[str, bytes]
    error: FrameError | None = None

    @property
    def first_offset(self) -> int:
        return self.offsets[0]


@dataclass
class _Pending:
    first_offset: int
    envelope_json: bytes
    count: int
    headers: dict[str, bytes]
    started: float = 0.0
    chunks: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size: int = 0
    done: bool = False
    error: FrameError | None = None
    gathering: bool = False


def _parse_chunk(headers: dict[str, bytes]) -> tuple[int, int]:
    raw = headers.get(CHUNK_HEADER)
    if raw is None or ENVELOPE_HEADER not in headers:
        raise ChunkError(
            f"record has no {ENVELOPE_HEADER}/{CHUNK_HEADER} headers: not a streamer frame"
        )
    try:
        index_text, count_text = raw.decode().split("/")
        index, count = int(index_text), int(count_text)
    except (UnicodeDecodeError, ValueError) as error:
        raise ChunkError(f"malformed {CHUNK_HEADER} header {raw!r}") from error
    if not 0 <= index < count:
        raise ChunkError(f"chunk index {index} out of range for {count} chunks")
    return index, count


def _envelope_count(envelope: bytes) -> int | None:
    """The envelope's ``chunk_count`` (None when the envelope is not a JSON object with one:
    the decoder reports that)."""
    try:
        value = json.loads(envelope).get("chunk_count")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, int) else None


class PartitionAssembler:
    """Reassembles the frames of one partition from a given start offset.

    A frame that cannot complete never blocks the partition: one whose chunk count disagrees
    with its envelope, or could not fit ``max_frame_bytes`` even in chunks of its first one's
    size, fails at once; one still incomplete ``timeout_seconds`` after its first chunk, or
    ``span_records`` records later, fails then. A failed frame is handed out with its error
    (the worker dead-letters it) and the partition moves on.
    """

    def __init__(self, partition: int, max_frame_bytes: int, timeout_seconds: float = 120.0,
                 span_records: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.partition = partition
        self.max_frame_bytes = max_frame_bytes
        self.timeout_seconds = timeout_seconds
        self.span_records = span_records
        self._clock = clock
        self._items: dict[int, _Pending] = {}   # first offset → frame, insertion = offset order
        self._open: dict[bytes, int] = {}       # envelope → first offset of its open frame
        self._handed_out: set[int] = set()       # first offsets handed out, not yet finished
        self._max_seen = -1
        self.skipped = 0

    def add(self, offset: int, value: bytes | None, headers: dict[str, bytes]) -> None:
        """Take one record (in offset order)."""
        self._max_seen = max(self._max_seen, offset)
        value = value or b""
        try:
            index, count = _parse_chunk(headers)
        except ChunkError as error:
            self._items[offset] = _Pending(offset, b"", 1, headers, self._clock(), [value],
                                           [offset], len(value), True, error)
            return
        envelope = headers[ENVELOPE_HEADER]
        first = self._open.get(envelope)
        if first is None:
            if index != 0:
                self.skipped += 1  # its frame began before our start: already handled
                return
            pending = _Pending(offset, envelope, count, headers, self._clock())
            pending.error = self._implausible(count, len(value), envelope)
            # A count that disagrees with the envelope still gathers its chunks (the dead
            # letter keeps all the bytes); a frame too large is refused unread.
            pending.gathering = isinstance(pending.error, ChunkError)
            self._items[offset] = pending
            self._open[envelope] = offset
        else:
            pending = self._items[first]
        if (pending.error is None or pending.gathering) and \
                (index != len(pending.chunks) or count != pending.count):
            pending.error = ChunkError(
                f"chunk {index}/{count} arrived after {len(pending.chunks)} of {pending.count}"
            )
            pending.gathering = False
        pending.chunks.append(value)
        pending.offsets.append(offset)
        pending.size += len(value)
        if pending.size > self.max_frame_bytes and pending.error is None:
            pending.error = FrameTooLargeError(
                f"frame exceeds the {self.max_frame_bytes}-byte limit (max_frame_bytes)"
            )
        if (pending.error is not None and not pending.gathering) \
                or len(pending.chunks) == pending.count:
            self._close(pending)

    def _implausible(self, count: int, first_size: int, envelope: bytes) -> FrameError | None:
        declared = _envelope_count(envelope)
        if declared is not None and declared != count:
            return ChunkError(f"the chunk header says {count} chunks, the envelope {declared}")
        if count > 1 and (count - 1) * max(first_size, 1) > self.max_frame_bytes:
            return FrameTooLargeError(
                f"{count} chunks of {first_size} bytes exceed the {self.max_frame_bytes}-byte "
                "limit (max_frame_bytes)")
        return None

    def _close(self, pending: _Pending) -> None:
        pending.done = True
        self._open.pop(pending.envelope_json, None)
        if pending.error is not None:
            pending.chunks = [b"".join(pending.chunks)] if pending.size <= self.max_frame_bytes else []

    def _expire(self) -> None:
        """Fail the incomplete frames past their time or record bound."""
        now = self._clock()
        for pending in self._items.values():
            if pending.done:
                continue
            waited = now - pending.started
            behind = self._max_seen - pending.first_offset
            if waited > self.timeout_seconds or behind > self.span_records:
                pending.error = ChunkError(
                    f"incomplete frame: {len(pending.chunks)} of {pending.count} chunks after "
                    f"{waited:.0f} s and {behind} later records (the rest never came)")
                self._close(pending)

    def ready(self) -> list[AssembledFrame]:
        """Complete frames (and rejected records) from the head of the partition, in order."""
        self._expire()
        out = []
        for first, pending in list(self._items.items()):
            if first in self._handed_out:
                continue
            if not pending.done:
                break
            self._handed_out.add(first)
            out.append(AssembledFrame(
                self.partition, pending.offsets, pending.envelope_json or None,
                b"".join(pending.chunks), pending.headers, pending.error,
            ))
        return out

    def finish(self, item: AssembledFrame) -> int:
        """Mark a handed-out frame handled; return the offset to commit after it."""
        self._handed_out.discard(item.first_offset)
        self._items.pop(item.first_offset, None)
        if self._items:
            return next(iter(self._items))
        return self._max_seen + 1
