"""``streamer worker``: consume raw frames, restore them, publish results — exactly once.

Transport only; the processing is :func:`streamer.worker.processing.restore_frame`.

Exactly once: each input partition has its own transactional producer
(``transactional.id = streamer-worker.<raw topic>.<partition>``). For every frame the worker
opens a transaction, writes the restored frame, its metrics (or a dead-letter record) and the
consumer offset to commit, and commits. Whoever owns a partition next starts a producer with
the same id, which fences the previous owner and aborts its open transaction — whether it was
SIGKILLed or is a zombie after a rebalance — so downstream ``read_committed`` consumers see
each frame exactly once.

Throughput: three stages overlap. A fetch task keeps polling and decoding frames ahead
(``prefetch_frames``); the device restores one frame at a time in a thread; a publish task
commits the previous frame's transaction meanwhile. When the prefetch queue is full the
partitions are paused, not left unpolled, so long device work never trips
``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.producer import AIOKafkaProducer

from streamer.errors import FrameError, PSFError, StreamerError
from streamer.imaging.fits_io import FitsImage
from streamer.streaming.codec import decode_payload, parse_envelope
from streamer.streaming.framing import AssembledFrame, PartitionAssembler, frame_records, headers_dict, sha256_hex
from streamer.streaming.kafka_clients import consumer, transactional_producer
from streamer.streaming.messages import DeadLetter, FrameMetrics, RawFrame, utc_now
from streamer.metrics import StreamerMetrics
from streamer.restoration.restorer import Restoration
from streamer.worker.processing import (
    PreparedFrame, ProcessedFrame, finish_frame, prepare_frame, restore_on_device,
)
from streamer.restoration.restorer import Restorer
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)


@dataclass
class DecodedFrame:
    """A fetched frame after decoding (or the reason it could not be), queued for the device."""

    generation: int
    item: AssembledFrame
    raw: RawFrame | None
    image: FitsImage | None
    error: StreamerError | None
    decode_seconds: float
    prepared: PreparedFrame | None = None


@dataclass
class DeviceResult:
    """A frame after the device stage: its restoration, or the error that stopped it."""

    decoded: DecodedFrame
    restoration: Restoration | None
    error: StreamerError | None


@dataclass
class OutgoingRecord:
    """One Kafka record of a frame's transaction."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FrameOutcome:
    """What the device stage made of a frame, queued for its transaction: the records to
    publish, and either the restored frame's metrics or the error that dead-lettered it."""

    decoded: DecodedFrame
    records: list[OutgoingRecord]
    error: StreamerError | None
    metrics: FrameMetrics | None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker._release(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker._acquire(assigned)


class Worker:
    """One restoration worker of the consumer group.

    Parameters
    ----------
    settings : StreamerSettings
    restorer : Restorer, optional
        Built from ``settings`` when not given (tests pass one to share the device).
    """

    def __init__(self, settings: StreamerSettings, restorer: Restorer | None = None,
                 metrics: StreamerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or StreamerMetrics("worker")
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.restorer = restorer or Restorer(settings.restoration, settings.device)
        self.topic = settings.topics.raw
        self.consumer = consumer(
            settings, group_id=settings.group_id,
            max_poll_interval_ms=int(settings.max_poll_interval_seconds * 1000),
            session_timeout_ms=10000, heartbeat_interval_ms=2000,
            rebalance_timeout_ms=int(settings.transaction_timeout_seconds * 1000),
        )
        self.assemblers: dict[int, PartitionAssembler] = {}
        self.producers: dict[int, AIOKafkaProducer] = {}
        self.generation: dict[int, int] = {}
        self._producer_ready: dict[int, asyncio.Event] = {}
        self.queue: asyncio.Queue[DecodedFrame] = asyncio.Queue()
        # Restored frames waiting for their transaction: one, so the device works on the next
        # frame while this one is committed.
        self.results: asyncio.Queue[FrameOutcome] = asyncio.Queue(maxsize=1)
        # Frames off the device waiting to be encoded: one, so encoding overlaps the device.
        self.encoding: asyncio.Queue[DeviceResult] = asyncio.Queue(maxsize=1)
        self.device_busy_seconds = 0.0
        self._busy: collections.Counter[int] = collections.Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._device = ThreadPoolExecutor(1, thread_name_prefix="device")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="encode")
        self.restored = 0
        self.failed = 0

    # -- partition ownership ------------------------------------------------------------------
    async def _acquire(self, assigned: set[TopicPartition]) -> None:
        # Assemblers first, with no await in between: the fetch task may receive records of
        # these partitions while the producers below are still starting.
        for tp in assigned:
            self.assemblers[tp.partition] = PartitionAssembler(
                tp.partition, self.settings.max_frame_bytes
            )
            self.generation[tp.partition] = self.generation.get(tp.partition, 0) + 1
            self._producer_ready[tp.partition] = asyncio.Event()
        for tp in sorted(assigned):
            producer = transactional_producer(
                self.settings, f"streamer-worker.{self.topic}.{tp.partition}"
            )
            await producer.start()  # InitProducerId: fences the partition's previous owner
            self.producers[tp.partition] = producer
            self._producer_ready[tp.partition].set()
        log.info("worker %s: assigned partitions %s", self.worker_id,
                 sorted(tp.partition for tp in assigned))

    async def _release(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        while any(self._busy[p] for p in partitions):  # let frames past the fetch commit
            self._idle.clear()
            await self._idle.wait()
        for partition in partitions:
            self.assemblers.pop(partition, None)
            self.generation[partition] = self.generation.get(partition, 0) + 1
            ready = self._producer_ready.pop(partition, None)
            if ready is not None:
                ready.set()  # wake a frame waiting for this producer: it is now stale
            producer = self.producers.pop(partition, None)
            if producer is not None:
                await producer.stop()
        if partitions:
            log.info("worker %s: released partitions %s", self.worker_id, sorted(partitions))

    # -- stages -------------------------------------------------------------------------------
    def _decode(self, item: AssembledFrame, generation: int) -> DecodedFrame:
        started = time.perf_counter()
        raw = image = prepared = None
        error = item.error
        if error is None:
            try:
                raw = parse_envelope(item.envelope_json)
                image = decode_payload(raw, item.payload)
            except FrameError as failure:
                error = failure
        decode_seconds = time.perf_counter() - started
        if image is not None and error is None:
            try:  # host measurements here, not on the device's critical path
                prepared = prepare_frame(self.restorer, raw, image)
            except (FrameError, PSFError) as failure:
                error = failure
        return DecodedFrame(generation, item, raw, image, error, decode_seconds, prepared)

    async def _fetch(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            assignment = self.consumer.assignment()
            if self.queue.qsize() >= self.settings.prefetch_frames:
                self.consumer.pause(*assignment)
            else:
                self.consumer.resume(*assignment)
            batches = await self.consumer.getmany(timeout_ms=200, max_records=256)
            for tp, records in batches.items():
                assembler = self.assemblers.get(tp.partition)
                if assembler is None:
                    continue
                for record in records:
                    assembler.add(record.offset, record.value, headers_dict(record.headers))
                for item in assembler.ready():
                    self.metrics.frames_consumed.labels(self.topic).inc()
                    self.metrics.consumed_bytes.labels(self.topic).inc(len(item.payload))
                    self.metrics.in_flight.inc()
                    generation = self.generation[tp.partition]
                    decoded = await loop.run_in_executor(self._decoder, self._decode, item, generation)
                    await self.queue.put(decoded)

    async def _watch_lag(self, stop: asyncio.Event, every: float = 2.0) -> None:
        """Consumer lag per partition: readable end (last stable offset, read_committed)
        minus the position; and the device's busy fraction since the last look."""
        last_wall, last_busy = time.perf_counter(), self.device_busy_seconds
        while not stop.is_set():
            now = time.perf_counter()
            if now > last_wall:
                self.metrics.device_busy_ratio.set(
                    min(1.0, (self.device_busy_seconds - last_busy) / (now - last_wall)))
            last_wall, last_busy = now, self.device_busy_seconds
            for tp in self.consumer.assignment():
                end = self.consumer.last_stable_offset(tp) or self.consumer.highwater(tp)
                if end is None:
                    continue
                try:
                    position = await self.consumer.position(tp)
                except IllegalStateError:  # revoked meanwhile; measured again next round
                    continue
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(end - position, 0))
            self.metrics.kernel_build_seconds.set(self.restorer.kernel_build_seconds)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass

    async def _restore(self, stop: asyncio.Event) -> None:
        """Device stage: restore decoded frames, one at a time, in fetch order; the device
        thread does device work only."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                decoded = await asyncio.wait_for(self.queue.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            partition = decoded.item.partition
            if self.generation.get(partition) != decoded.generation:
                self.metrics.in_flight.dec()
                continue  # the partition was revoked after this frame was fetched
            self._busy[partition] += 1
            try:
                result = await self._on_device(loop, decoded)
            except BaseException:
                self._busy[partition] -= 1  # the worker is ending; nothing waits for this frame
                self._idle.set()
                raise
            await self.encoding.put(result)

    async def _on_device(self, loop: asyncio.AbstractEventLoop,
                         decoded: DecodedFrame) -> DeviceResult:
        if decoded.error is not None:
            return DeviceResult(decoded, None, decoded.error)
        started = time.perf_counter()
        try:
            restoration = await loop.run_in_executor(
                self._device, restore_on_device, self.restorer, decoded.raw, decoded.image,
                decoded.prepared)
        except (FrameError, PSFError) as failure:  # the frame's fault; device faults raise
            return DeviceResult(decoded, None, failure)
        finally:
            busy = time.perf_counter() - started
            self.device_busy_seconds += busy
            self.metrics.device_busy.inc(busy)
        return DeviceResult(decoded, restoration, None)

    async def _encode(self, stop: asyncio.Event) -> None:
        """CPU stage: encode, checksum and measure a restored frame while the device works
        on the next one; dead-letter records for frames that failed."""
        loop = asyncio.get_running_loop()
        while not (stop.is_set() and self.encoding.empty() and not any(self._busy.values())):
            try:
                result = await asyncio.wait_for(self.encoding.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            await self.results.put(await self._outcome(loop, result))

    async def _outcome(self, loop: asyncio.AbstractEventLoop,
                       result: DeviceResult) -> FrameOutcome:
        decoded = result.decoded
        key = (decoded.raw.camera_id if decoded.raw else "unknown").encode()
        if result.error is not None:
            return FrameOutcome(decoded, self._dead_letter(decoded, result.error, key),
                                result.error, None)
        processed: ProcessedFrame = await loop.run_in_executor(
            self._encoder, finish_frame, self.restorer, self.worker_id,
            self.settings.chunk_bytes, decoded.raw, decoded.image, decoded.prepared,
            result.restoration, decoded.decode_seconds)
        topics = self.settings.topics
        records = [
            OutgoingRecord(topics.restored, key, value, headers)
            for value, headers in frame_records(
                processed.envelope.model_dump_json().encode(), "restored",
                processed.payload, self.settings.chunk_bytes)
        ]
        records.append(OutgoingRecord(
            topics.metrics, key, processed.metrics.model_dump_json().encode(),
            [("streamer-kind", b"metrics")]))
        return FrameOutcome(decoded, records, None, processed.metrics)

    async def _publish(self, stop: asyncio.Event, max_frames: int | None) -> None:
        """Transaction stage: while the device restores the next frame, commit this one's
        outputs and offset in one transaction, in order."""
        while not (stop.is_set() and self.results.empty() and not any(self._busy.values())):
            try:
                outcome: FrameOutcome = await asyncio.wait_for(self.results.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            decoded = outcome.decoded
            partition = decoded.item.partition
            try:
                if self.generation.get(partition) == decoded.generation:
                    await self._producer_ready[partition].wait()
                if self.generation.get(partition) != decoded.generation:
                    continue  # revoked before its producer came up: the next owner redoes it
                await self._commit(outcome)
            finally:
                self._busy[partition] -= 1
                self.metrics.in_flight.dec()
                self._idle.set()
            if max_frames is not None and self.restored + self.failed >= max_frames:
                stop.set()

    async def _commit(self, outcome: FrameOutcome) -> None:
        item = outcome.decoded.item
        error, frame_metrics = outcome.error, outcome.metrics
        commit_offset = self.assemblers[item.partition].finish(item)
        producer = self.producers[item.partition]
        started = time.perf_counter()
        async with producer.transaction():
            for record in outcome.records:
                await producer.send(record.topic, record.value, key=record.key,
                                    headers=record.headers)
                self.metrics.published_bytes.labels(record.topic).inc(len(record.value))
            published = time.perf_counter()
            await producer.send_offsets_to_transaction(
                {TopicPartition(self.topic, item.partition): commit_offset}, self.settings.group_id
            )
        committed = time.perf_counter()
        self.metrics.stage_seconds.labels("publish").observe(published - started)
        self.metrics.stage_seconds.labels("commit").observe(committed - published)
        if error is None:
            self.restored += 1
            self.metrics.frames_restored.inc()
            for topic in (self.settings.topics.restored, self.settings.topics.metrics):
                self.metrics.frames_published.labels(topic).inc()
            if frame_metrics is not None:
                self.metrics.observe_frame(frame_metrics)
        else:
            self.failed += 1
            self.metrics.frames_failed.labels(type(error).__name__).inc()
            self.metrics.frames_published.labels(self.settings.topics.dead_letter).inc()
            log.warning("worker %s: frame at %s[%d]@%d to dead letters: %s: %s", self.worker_id,
                        self.topic, item.partition, item.first_offset, type(error).__name__, error)

    def _dead_letter(self, decoded: DecodedFrame, error: StreamerError,
                     key: bytes) -> list[OutgoingRecord]:
        item = decoded.item
        record = DeadLetter(
            frame_id=decoded.raw.frame_id if decoded.raw else None,
            camera_id=decoded.raw.camera_id if decoded.raw else None,
            source_topic=self.topic, source_partition=item.partition,
            source_offsets=item.offsets, error_type=type(error).__name__, reason=str(error),
            failed_at=utc_now(), worker_id=self.worker_id,
            original_headers={k: v.decode(errors="replace")[:4000] for k, v in item.headers.items()},
            payload_bytes=len(item.payload), payload_sha256=sha256_hex(item.payload),
            chunk_count=max(1, -(-len(item.payload) // self.settings.chunk_bytes)),
        )
        return [
            OutgoingRecord(self.settings.topics.dead_letter, key, value, headers)
            for value, headers in frame_records(record.model_dump_json().encode(), "dead-letter",
                                                item.payload, self.settings.chunk_bytes)
        ]

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, max_frames: int | None = None) -> None:
        """Work until ``stop`` is set (or ``max_frames`` are handled), then leave the group
        cleanly: frames on the device or awaiting their transaction are finished and
        committed, prefetched ones are left to the next owner."""
        self.metrics.device.info({"device": self.restorer.device_name, "worker": self.worker_id})
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        await self.consumer.start()
        stages = [asyncio.create_task(self._fetch(stop)), asyncio.create_task(self._restore(stop)),
                  asyncio.create_task(self._encode(stop)),
                  asyncio.create_task(self._publish(stop, max_frames)),
                  asyncio.create_task(self._watch_lag(stop))]
        try:
            done, _ = await asyncio.wait(stages, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a crashed stage ends the worker with its exception
        finally:
            stop.set()
            for task in stages:
                if not task.done():
                    await asyncio.wait({task}, timeout=self.settings.transaction_timeout_seconds)
                    task.cancel()
            await self.consumer.stop()  # leaves the group
            for producer in self.producers.values():
                await producer.stop()
            self.producers.clear()
            self._decoder.shutdown(wait=False)
            self._device.shutdown(wait=False)
            self._encoder.shutdown(wait=False)
