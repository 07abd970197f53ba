"""``streamer sink``: archive each restored frame with its raw input, the streaming form of
"download the night's results" (the folder: :mod:`streamer.streaming.archive`).

It consumes the raw, restored, metrics, sources and dead-letter topics and commits offsets only after
the files are on disk, so nothing is lost and a redelivered record rewrites the same bytes. A
record that cannot be archived (a corrupt input, a malformed envelope) is reported and
skipped — the worker dead-letters it, and the dead letter is archived apart. A rebalance while
the broker is away (a commit refused because the group moved on) drops the partitions' partial
frames and carries on from the committed offsets.

A disk that cannot be written (full, read-only, gone) is waited out, not fatal: the sink says
so in one log line, sets ``streamer_archive_writable`` to 0 (the ``StreamerArchiveNotWritable``
alert), pauses its partitions and rewinds them to the committed offsets — nothing of the
failed batch is committed — then tries again with a backoff up to a minute, and resumes by
itself once a write succeeds. Partial files a crash left behind are removed at start.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError

from streamer.errors import StreamerError
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from streamer.streaming.archive import Archive, remove_temporaries
from streamer.streaming.codec import FrameLimits
from streamer.streaming.framing import AssembledFrame, PartitionAssembler, headers_dict
from streamer.streaming.kafka_clients import consumer, start_client
from streamer.streaming.messages import (
    DeadLetter,
    FrameMetrics,
    RawFrame,
    RestoredFrame,
    SourceCatalog,
)

log = logging.getLogger(__name__)


class _Forget(ConsumerRebalanceListener):
    """Drops the partial frames of partitions the sink loses."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.sink.assemblers.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.sink.storage_fault is not None and assigned:
            self.sink.consumer.pause(*assigned)  # still waiting for the disk


class StorageFault:
    """A spell of archive writes failing: since when, and how long to wait before the next
    try (doubling from 1 s to a minute)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.delay = 1.0
        self.tries = 1

    def next_delay(self) -> float:
        """Seconds to wait before the next try: 1, 2, 4... up to 60."""
        delay, self.delay = self.delay, min(self.delay * 2, 60.0)
        return delay


def error_name(error: OSError) -> str:
    """``ENOSPC``, ``EROFS``... for an OSError (its class name when it has no errno)."""
    return errno.errorcode.get(error.errno or -1, type(error).__name__)


class Sink:
    """Consumes the raw, restored, metrics, sources and dead-letter topics into an
    :class:`Archive`."""

    def __init__(self, settings: StreamerSettings, out_dir: Path, group_id: str = "streamer-sink",
                 metrics: StreamerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or StreamerMetrics("sink")
        self.archive = Archive(out_dir, FrameLimits(settings.max_frame_pixels,
                                                    settings.max_frame_bytes))
        topics = settings.topics
        self.topics = (topics.raw, topics.restored, topics.metrics, topics.dead_letter,
                       topics.sources)
        self.consumer = consumer(settings, group_id=group_id)
        self.assemblers: dict[TopicPartition, PartitionAssembler] = {}
        self.restored_frames: set[str] = set()
        self.last_latency: float | None = None  # exposure to restored, of the latest metrics
        self.dead_letters: set[str] = set()
        self.storage_fault: StorageFault | None = None
        self.metrics.archive_writable.set(1)
        removed = remove_temporaries(self.archive.root)
        if removed:
            log.warning("sink: removed %d partial file%s a stopped sink left in %s", removed,
                        "" if removed == 1 else "s", out_dir)

    def _store(self, tp: TopicPartition, item: AssembledFrame) -> None:
        """Archive one assembled frame; a record's own fault is reported and skipped."""
        self.metrics.frames_consumed.labels(tp.topic).inc()
        self.metrics.consumed_bytes.labels(tp.topic).inc(len(item.payload))
        where = f"{tp.topic}[{tp.partition}]@{item.first_offset}"
        try:
            if item.error is not None:
                raise item.error
            self._store_valid(tp.topic, item)
        except OSError:
            raise  # the disk, not the record: stop, commit nothing
        except (ValidationError, StreamerError) as error:
            self.metrics.frames_failed.labels(type(error).__name__).inc()
            log.error("sink: %s not archived: %s: %s", where, type(error).__name__, error)
        except Exception as error:  # a record no check foresaw is still only that record
            self.metrics.frames_failed.labels(type(error).__name__).inc()
            log.error("sink: %s not archived: unexpected %s: %s", where,
                      type(error).__name__, error)

    def _store_valid(self, topic: str, item: AssembledFrame) -> None:
        topics = self.settings.topics
        if topic == topics.raw:
            self.archive.store_raw(RawFrame.model_validate_json(item.envelope_json), item.payload)
            self.metrics.frames_archived.labels("input").inc()
        elif topic == topics.restored:
            restored = RestoredFrame.model_validate_json(item.envelope_json)
            self.archive.store_restored(restored, item.payload)
            self.metrics.frames_archived.labels("output").inc()
            self.restored_frames.add(restored.frame_id)
        elif topic == topics.sources:
            self.archive.store_sources(SourceCatalog.model_validate_json(item.envelope_json),
                                       item.payload)
            self.metrics.frames_archived.labels("sources").inc()
        else:
            letter = DeadLetter.model_validate_json(item.envelope_json)
            self.archive.store_dead_letter(letter, item.payload)
            self.metrics.frames_archived.labels("dead-letter").inc()
            self.dead_letters.add(letter.frame_id or f"{letter.source_partition}:"
                                                     f"{letter.source_offsets}")

    def _store_metrics(self, value: bytes | None) -> None:
        try:
            metrics = FrameMetrics.model_validate_json(value or b"")
        except ValidationError as error:
            log.error("sink: a metrics record fails its schema: %s", error)
            return
        self.archive.store_metrics(metrics)
        self.last_latency = metrics.exposure_to_restored_seconds

    async def _handle(self, tp: TopicPartition, records: list) -> int | None:
        """Archive a partition's records; the offset to commit after them, if any."""
        loop = asyncio.get_running_loop()
        if tp.topic == self.settings.topics.metrics:
            for record in records:
                await loop.run_in_executor(None, self._store_metrics, record.value)
            return records[-1].offset + 1 if records else None
        assembler = self.assemblers.get(tp)
        if assembler is None:
            assembler = self.assemblers[tp] = PartitionAssembler(
                tp.partition, self.settings.max_frame_bytes, self.settings.chunk_timeout_seconds,
                self.settings.chunk_span_records)
        for record in records:
            assembler.add(record.offset, record.value, headers_dict(record.headers))
        commit = None
        for item in assembler.ready():
            await loop.run_in_executor(None, self._store, tp, item)
            commit = assembler.finish(item)
        return commit

    async def _commit(self, commits: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(commits)
        except (CommitFailedError, IllegalStateError) as error:
            # The group rebalanced (say, while the broker was away): these partitions may be
            # another member's now. Their partial frames go; the files written stay (a
            # redelivery rewrites the same bytes) and the committed offsets decide what comes.
            log.warning("sink: commit refused after a rebalance (%s); dropping partial frames "
                        "and carrying on from the committed offsets", type(error).__name__)
            self.assemblers.clear()

    async def _archive_batch(self, batches: dict) -> dict[TopicPartition, int]:
        """Archive a fetched batch; the offsets to commit after it."""
        commits = {}
        for tp, records in batches.items():
            offset = await self._handle(tp, records)
            if offset is not None:
                commits[tp] = offset
        for tp in self.consumer.assignment():  # expire stalled frames of quiet partitions
            if tp not in batches and tp in self.assemblers:
                offset = await self._handle(tp, [])
                if offset is not None:
                    commits[tp] = offset
        return commits

    async def _storage_failed(self, error: OSError, stop: asyncio.Event) -> None:
        """The archive cannot be written: commit nothing, rewind to the committed offsets,
        and wait (polling, so the group keeps the sink) before trying again."""
        loop = asyncio.get_running_loop()
        self.metrics.archive_write_errors.labels(error_name(error)).inc()
        self.metrics.archive_writable.set(0)
        if self.storage_fault is None:
            self.storage_fault = StorageFault(loop.time())
            log.error("sink: cannot write the archive (%s: %s); consuming paused, nothing "
                      "committed, retrying until the disk is writable", error_name(error),
                      error.strerror or error)
        else:
            self.storage_fault.tries += 1
        assigned = self.consumer.assignment()
        self.assemblers.clear()
        if assigned:
            self.consumer.pause(*assigned)
            for tp in assigned:
                await self._rewind(tp)
        deadline = loop.time() + self.storage_fault.next_delay()
        while not stop.is_set() and loop.time() < deadline:
            try:  # paused: returns nothing, but keeps this member alive in its group
                await self.consumer.getmany(timeout_ms=int(1000 * min(
                    1.0, max(0.0, deadline - loop.time()))))
            except KafkaError:
                await asyncio.sleep(0.5)
        self.consumer.resume(*self.consumer.assignment())

    async def _rewind(self, tp: TopicPartition) -> None:
        """Seek a partition back to its committed offset (the start, when none)."""
        try:
            committed = await self.consumer.committed(tp)
        except KafkaError:
            committed = None
        if committed is None:
            await self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, committed)

    def _storage_recovered(self) -> None:
        fault = self.storage_fault
        assert fault is not None
        log.warning("sink: the archive is writable again after %.0f s (%d tries); resuming",
                    asyncio.get_running_loop().time() - fault.started, fault.tries)
        self.storage_fault = None
        self.metrics.archive_writable.set(1)

    async def run(self, stop: asyncio.Event, expected_frames: int | None = None) -> None:
        """Archive until ``stop`` is set, or until ``expected_frames`` restored frames are in."""
        self.consumer.subscribe(list(self.topics), listener=_Forget(self))
        await start_client(self.consumer)
        try:
            while not stop.is_set():
                try:
                    batches = await self.consumer.getmany(timeout_ms=300, max_records=256)
                except KafkaError as error:  # a fetch cut by an outage: aiokafka reconnects
                    log.debug("sink: fetch failed (%s), retrying", error)
                    await asyncio.sleep(1.0)
                    continue
                try:
                    commits = await self._archive_batch(batches)
                except OSError as error:
                    await self._storage_failed(error, stop)
                    continue
                if commits:
                    await self._commit(commits)
                if self.storage_fault is not None and batches:
                    self._storage_recovered()
                if expected_frames is not None and len(self.restored_frames) >= expected_frames:
                    stop.set()
        finally:
            await self.consumer.stop()
