"""The Kafka records a frame's transaction writes: the restored frame's chunks, its metrics and
its source catalogue's chunks, or a dead letter carrying the original bytes and the reason.
Pure functions, no Kafka client.
"""

from __future__ import annotations

from streamer.errors import StreamerError
from streamer.settings import StreamerSettings
from streamer.streaming.framing import AssembledFrame, frame_records, payload_digest
from streamer.streaming.messages import DeadLetter, RawFrame, utc_now
from streamer.streaming.publisher import OutgoingRecord
from streamer.worker.processing import ProcessedFrame

HEADER_TEXT_LIMIT = 4000  # characters of each original header a dead letter keeps


def record_key(raw: RawFrame | None) -> bytes:
    """The key of a frame's output records: its camera (per-camera order downstream)."""
    return (raw.camera_id if raw else "unknown").encode()


def restored_records(settings: StreamerSettings, processed: ProcessedFrame, key: bytes
                     ) -> list[OutgoingRecord]:
    """The restored frame's chunks on the restored topic, its metrics record, and its source
    catalogue's chunks on the sources topic — all in the frame's one transaction."""
    topics = settings.topics
    records = [
        OutgoingRecord(topics.restored, key, value, headers)
        for value, headers in frame_records(
            processed.envelope.model_dump_json().encode(), "restored",
            processed.payload, settings.chunk_bytes)
    ]
    records.append(OutgoingRecord(
        topics.metrics, key, processed.metrics.model_dump_json().encode(),
        [("streamer-kind", b"metrics")]))
    if processed.catalogue is not None:
        envelope, rows = processed.catalogue
        records.extend(OutgoingRecord(topics.sources, key, value, headers)
                       for value, headers in frame_records(envelope.model_dump_json().encode(),
                                                           "sources", rows, settings.chunk_bytes))
    return records


def dead_letter_records(settings: StreamerSettings, item: AssembledFrame, raw: RawFrame | None,
                        error: StreamerError, worker_id: str, key: bytes
                        ) -> list[OutgoingRecord]:
    """The dead letter of a frame: the reason and error type in its envelope, the original
    headers, and the original bytes as its chunks."""
    letter = DeadLetter(
        frame_id=raw.frame_id if raw else None,
        camera_id=raw.camera_id if raw else None,
        source_topic=settings.topics.raw, source_partition=item.partition,
        source_offsets=item.offsets, error_type=type(error).__name__, reason=str(error),
        failed_at=utc_now(), worker_id=worker_id,
        original_headers={k: v.decode(errors="replace")[:HEADER_TEXT_LIMIT]
                          for k, v in item.headers.items()},
        payload_bytes=len(item.payload), payload_digest=payload_digest(item.payload),
        chunk_count=max(1, -(-len(item.payload) // settings.chunk_bytes)),
    )
    return [
        OutgoingRecord(settings.topics.dead_letter, key, value, headers)
        for value, headers in frame_records(letter.model_dump_json().encode(), "dead-letter",
                                            item.payload, settings.chunk_bytes)
    ]
