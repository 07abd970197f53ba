"""``streamer worker``: consume raw frames, restore them, publish results — exactly once, and
never stopped by a record.

Transport only; decoding is :mod:`streamer.worker.decoding`, the processing
:mod:`streamer.worker.processing`.

Exactly once: each input partition has its own transactional producer
(``transactional.id = streamer-worker.<raw topic>.<partition>``). For every frame the worker
opens a transaction, writes the restored frame, its metrics (or a dead-letter record) and the
consumer offset to commit, and commits. Whoever owns a partition next starts a producer with
the same id, which fences the previous owner and aborts its open transaction — whether it was
SIGKILLed or is a zombie after a rebalance — so downstream ``read_committed`` consumers see
each frame exactly once.

Failures: anything wrong with a frame is the frame's fault and sends it to dead letters with
the reason. An OpenCL error is checked against the device with a probe kernel: a healthy
device makes it the frame's fault too (retried up to ``retry_budget``), a failed probe is a
device fault that stops the worker (exit code 3) without committing the frame. A frame some
earlier owner was decoding or restoring when it died is counted
(:mod:`streamer.worker.attempts`), so a frame that kills workers goes to dead letters instead of
around again.

Throughput: four stages overlap. A fetch task keeps polling and decoding frames ahead
(``prefetch_frames``); the device restores one frame at a time in a thread; an encode thread
builds the previous frame's FITS and metrics; a publish task commits the frame before that.
When the prefetch queue is full the partitions are paused, not left unpolled, so long device
work never trips ``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaError, ProducerFenced
from aiokafka.producer import AIOKafkaProducer

from streamer.errors import (
    DeviceFaultError, FrameDeadlineError, FrameError, FrameTooLargeError, PSFError,
    StreamerError,
)
from streamer.metrics import StreamerMetrics
from streamer.restoration.restorer import Restorer
from streamer.settings import StreamerSettings
from streamer.streaming.codec import FrameLimits
from streamer.streaming.framing import AssembledFrame, PartitionAssembler, frame_records, headers_dict, sha256_hex
from streamer.streaming.kafka_clients import (admin_client, consumer, start_client,
                                              transactional_producer)
from streamer.streaming.messages import DeadLetter, utc_now
from streamer.worker.attempts import marker, recorded_attempts
from streamer.worker.decoding import decode_frame
from streamer.worker.items import DecodedFrame, DeviceResult, FrameOutcome, OutgoingRecord
from streamer.worker.memory import give_back, limit_arenas
from streamer.worker.processing import ProcessedFrame, finish_frame, restore_on_device

log = logging.getLogger(__name__)
TRIM_EVERY = 10  # frames between handing freed heap pages back (streamer.worker.memory)

# Errors no retry can cure: the frame goes to dead letters at once.
_FINAL = (FrameError, PSFError)


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
    metrics : StreamerMetrics, optional
    """

    def __init__(self, settings: StreamerSettings, restorer: Restorer | None = None,
                 metrics: StreamerMetrics | None = None) -> None:
        limit_arenas()  # before OpenCL's and the stages' threads exist (streamer.worker.memory)
        self.settings = settings
        self.metrics = metrics or StreamerMetrics("worker")
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.restorer = restorer or Restorer(settings.restoration, settings.device)
        self.topic = settings.topics.raw
        self.limits = FrameLimits(settings.max_frame_pixels, settings.max_frame_bytes)
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
        # One transaction at a time per producer: the fetch stage's attempt marker and the
        # transaction stage's commit share a partition's producer, and aiokafka's state machine
        # fails an assertion (crashing the stage) when a second transaction begins inside one.
        self._transacting: collections.defaultdict[int, asyncio.Lock] = \
            collections.defaultdict(asyncio.Lock)
        # The frame at a partition's committed offset when it was assigned (None: the first
        # frame, nothing committed yet) and its earlier attempts. It is counted before the
        # device touches it.
        self._suspects: dict[int, tuple[int | None, int]] = {}
        self.queue: asyncio.Queue[DecodedFrame] = asyncio.Queue()
        # Frames off the device waiting to be encoded: one, so encoding overlaps the device.
        self.encoding: asyncio.Queue[DeviceResult] = asyncio.Queue(maxsize=1)
        # Restored frames waiting for their transaction: one, so the device works on the next
        # frame while this one is committed.
        self.results: asyncio.Queue[FrameOutcome] = asyncio.Queue(maxsize=1)
        self._busy: collections.Counter[int] = collections.Counter()
        # Per partition, the offset after the last data record fetched (for the lag).
        self._fetched_to: dict[int, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._device = ThreadPoolExecutor(1, thread_name_prefix="device")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="encode")
        self._admin = None
        self.device_busy_seconds = 0.0
        self.device_running = False
        self.restored = 0
        self.failed = 0

    # -- partition ownership ------------------------------------------------------------------
    async def _acquire(self, assigned: set[TopicPartition]) -> None:
        # Assemblers first, with no await in between: the fetch task may receive records of
        # these partitions while the producers below are still starting.
        for tp in assigned:
            self.assemblers[tp.partition] = PartitionAssembler(
                tp.partition, self.settings.max_frame_bytes, self.settings.chunk_timeout_seconds,
                self.settings.chunk_span_records)
            self.generation[tp.partition] = self.generation.get(tp.partition, 0) + 1
            self._producer_ready[tp.partition] = asyncio.Event()
        await self._read_suspects(assigned)
        for tp in sorted(assigned):
            await self._start_producer(tp.partition, self.generation[tp.partition])
        log.info("worker %s: assigned partitions %s", self.worker_id,
                 sorted(tp.partition for tp in assigned))

    def _new_producer(self, partition: int) -> AIOKafkaProducer:
        """The partition's transactional producer, not started: one transactional id per
        input partition, so whoever owns it next fences the last owner."""
        return transactional_producer(self.settings, f"streamer-worker.{self.topic}.{partition}")

    async def _start_producer(self, partition: int, generation: int) -> None:
        """The partition's transactional producer, started (InitProducerId fences its
        previous owner) — retried while the broker is away, since every frame of the
        partition waits for it; one log line per outage."""
        delay, logged = 1.0, False
        while self.generation.get(partition) == generation:
            producer = self._new_producer(partition)
            try:
                await producer.start()
            except (KafkaError, asyncio.TimeoutError, OSError) as error:
                if not logged:
                    log.warning("worker %s: cannot start the producer of partition %d (%s); "
                                "retrying until the broker answers", self.worker_id, partition,
                                type(error).__name__)
                    logged = True
                try:
                    await producer.stop()
                except (KafkaError, OSError):
                    pass
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.producers[partition] = producer
            self._producer_ready[partition].set()
            return

    async def _read_suspects(self, assigned: set[TopicPartition]) -> None:
        try:
            recorded = await recorded_attempts(self._admin, self.settings.group_id,
                                               sorted(assigned))
            committed = {tp.partition: await self.consumer.committed(tp) for tp in assigned}
        except (KafkaError, OSError) as error:  # counted from zero then; logged, not fatal
            log.warning("worker %s: cannot read committed offsets (%s)", self.worker_id, error)
            return
        for tp in assigned:
            offset = committed.get(tp.partition)
            earlier = recorded.get(tp.partition)
            self._suspects[tp.partition] = (offset, earlier[1] if earlier and
                                            earlier[0] == offset else 0)

    async def _release(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        while any(self._busy[p] for p in partitions):  # let frames past the fetch commit
            self._idle.clear()
            await self._idle.wait()
        for tp in revoked:  # another worker reports these now; a stale series would alert
            for gauge in (self.metrics.consumer_lag, self.metrics.committed_offset):
                try:
                    gauge.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass
        for partition in partitions:
            self._fetched_to.pop(partition, None)
            self.assemblers.pop(partition, None)
            self._suspects.pop(partition, None)
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
    async def _fetch(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            assignment = self.consumer.assignment()
            if self.queue.qsize() >= self.settings.prefetch_frames:
                self.consumer.pause(*assignment)
            else:
                self.consumer.resume(*assignment)
            batches = await self.consumer.getmany(timeout_ms=200, max_records=256)
            for tp in assignment:  # also expires stalled frames of quiet partitions
                assembler = self.assemblers.get(tp.partition)
                if assembler is None:
                    continue
                for record in batches.get(tp, ()):
                    assembler.add(record.offset, record.value, headers_dict(record.headers))
                    self._fetched_to[tp.partition] = record.offset + 1
                for item in assembler.ready():
                    self.metrics.frames_consumed.labels(self.topic).inc()
                    self.metrics.consumed_bytes.labels(self.topic).inc(len(item.payload))
                    self.metrics.in_flight.inc()
                    generation = self.generation[tp.partition]
                    spent = await self._count_attempt(item)
                    if spent is not None:
                        decoded = DecodedFrame(generation, item, None, None, spent, 0.0)
                    else:
                        decoded = await loop.run_in_executor(
                            self._decoder, decode_frame, item, generation, self.restorer,
                            self.limits)
                    await self.queue.put(decoded)

    async def _watch(self, stop: asyncio.Event, every: float = 2.0) -> None:
        """Consumer lag per partition, from the committed offset (a stuck partition shows: its
        fetch position runs ahead, its commits do not), and the device's busy fraction."""
        last_wall, last_busy = time.perf_counter(), self.device_busy_seconds
        while not stop.is_set():
            now = time.perf_counter()
            if now > last_wall:
                self.metrics.device_busy_ratio.set(
                    min(1.0, (self.device_busy_seconds - last_busy) / (now - last_wall)))
            last_wall, last_busy = now, self.device_busy_seconds
            for tp in self.consumer.assignment():
                end = self.consumer.last_stable_offset(tp) or self.consumer.highwater(tp)
                try:
                    committed = await self.consumer.committed(tp)
                except (IllegalStateError, KafkaError):  # revoked or unreachable: next round
                    continue
                labels = (tp.topic, str(tp.partition))
                self.metrics.committed_offset.labels(*labels).set(committed or 0)
                if end is not None:
                    self.metrics.consumer_lag.labels(*labels).set(
                        await self._lag(tp, committed or 0, end))
            self.metrics.kernel_build_seconds.set(self.restorer.kernel_build_seconds)
            self.metrics.plans_cached.set(self.restorer.plan_count)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass

    async def _lag(self, tp: TopicPartition, committed: int, end: int) -> int:
        """Records of ``tp`` not yet committed. Each transaction leaves a commit marker after
        its records, so ``end - committed`` reads 1 on a partition that is all done; when the
        consumer has read to the end and every data record it saw is committed, what is left
        is markers only, and the lag is 0."""
        try:
            position = await self.consumer.position(tp)
        except (IllegalStateError, KafkaError):
            position = committed
        if position >= end and committed >= self._fetched_to.get(tp.partition, committed):
            return 0
        return max(end - committed, 0)

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

    async def _count_attempt(self, item: AssembledFrame) -> StreamerError | None:
        """For the frame a previous owner may have died on: an error when its attempts are
        spent, else record one more attempt (committed before it is decoded)."""
        partition, generation = item.partition, self.generation.get(item.partition)
        ready = self._producer_ready.get(partition)
        if ready is None:
            return None  # revoked: the next owner counts it
        # The suspects are read while the partition is being acquired, and records can
        # arrive before that ends: wait, or the first frame would slip past uncounted.
        await ready.wait()
        suspect = self._suspects.get(partition)
        if (self.generation.get(partition) != generation or suspect is None
                or suspect[0] not in (None, item.first_offset)):
            return None
        offset, earlier = item.first_offset, suspect[1]
        del self._suspects[partition]
        if earlier >= self.settings.retry_budget:
            return FrameError(
                f"gave up after {earlier} attempts: a worker stopped (crashed, killed, or its "
                "device failed) each time it restored this frame")
        producer = self.producers.get(partition)
        if producer is None:
            return None
        try:
            async with self._transacting[partition], producer.transaction():
                await producer.send_offsets_to_transaction(
                    {TopicPartition(self.topic, partition): marker(offset, earlier + 1)},
                    self.settings.group_id)
        except (KafkaError, asyncio.TimeoutError, OSError) as error:
            # Uncounted, the frame still gets restored; the frame's transaction will need a
            # sound producer, so this one is replaced.
            log.warning("worker %s: recording an attempt at %s[%d]@%d failed (%s)",
                        self.worker_id, self.topic, partition, offset, type(error).__name__)
            await self._renew_producer(partition, generation)
        return None

    async def _on_device(self, loop: asyncio.AbstractEventLoop,
                         decoded: DecodedFrame) -> DeviceResult:
        if decoded.error is not None:
            return DeviceResult(decoded, None, decoded.error)
        last: StreamerError | None = None
        for attempt in range(1, self.settings.retry_budget + 1):
            try:
                restoration = await self._device_work(loop, decoded)
            except _FINAL as failure:  # the frame's fault, whatever the device
                return DeviceResult(decoded, None, failure)
            except Exception as failure:  # an OpenCL error: the frame's, or the device's?
                if not await loop.run_in_executor(self._device, self.restorer.device_healthy):
                    raise DeviceFaultError(
                        f"the OpenCL device failed ({type(failure).__name__}: {failure}) and no "
                        f"longer runs a probe kernel; stopping without consuming frame "
                        f"{decoded.raw.frame_id}") from failure
                last = FrameError(f"{type(failure).__name__} on the device (attempt {attempt} "
                                  f"of {self.settings.retry_budget}): {failure}")
                log.warning("worker %s: %s", self.worker_id, last)
                continue
            return DeviceResult(decoded, restoration, None)
        return DeviceResult(decoded, None, last)

    async def _device_work(self, loop: asyncio.AbstractEventLoop, decoded: DecodedFrame):
        started = time.perf_counter()
        deadline = time.monotonic() + self.settings.frame_deadline_seconds
        self.device_running = True
        try:
            return await loop.run_in_executor(
                self._device, restore_on_device, self.restorer, decoded.raw, decoded.image,
                decoded.prepared, deadline)
        finally:
            self.device_running = False
            busy = time.perf_counter() - started
            self.device_busy_seconds += busy
            self.metrics.device_busy.inc(busy)

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
        error = result.error
        if error is None:
            try:
                processed: ProcessedFrame = await loop.run_in_executor(
                    self._encoder, finish_frame, self.restorer, self.worker_id,
                    self.settings.chunk_bytes, decoded.raw, decoded.image, decoded.prepared,
                    result.restoration, decoded.decode_seconds)
            except Exception as failure:  # encoding a frame's output is still that frame
                error = FrameError(f"{type(failure).__name__} while encoding: {failure}")
            else:
                return FrameOutcome(decoded, self._restored_records(processed, key), None,
                                    processed.metrics)
        return FrameOutcome(decoded, self._dead_letter(decoded, error, key), error, None)

    def _restored_records(self, processed: ProcessedFrame, key: bytes) -> list[OutgoingRecord]:
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
        return records

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
        """The frame's records and offset in one transaction — retried, through a broker
        outage, on a new producer (which aborts the failed transaction) until it commits or
        the partition is gone."""
        item = outcome.decoded.item
        generation = outcome.decoded.generation
        commit_offset = self.assemblers[item.partition].finish(item)
        delay = 1.0
        while self.generation.get(item.partition) == generation:
            producer = self.producers.get(item.partition)
            try:
                if producer is None:
                    raise KafkaConnectionError("no producer for the partition yet")
                await self._transaction(producer, outcome, commit_offset)
            except ProducerFenced:
                log.warning("worker %s: partition %d fenced by its next owner; it redoes the "
                            "frame", self.worker_id, item.partition)
                return
            except (KafkaError, asyncio.TimeoutError, OSError) as error:
                log.warning("worker %s: committing the frame at %s[%d]@%d failed (%s); "
                            "retrying", self.worker_id, self.topic, item.partition,
                            item.first_offset, type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                await self._renew_producer(item.partition, generation)
                continue
            self._count(outcome, item)
            return

    async def _transaction(self, producer: AIOKafkaProducer, outcome: FrameOutcome,
                           commit_offset: int) -> None:
        item = outcome.decoded.item
        started = time.perf_counter()
        async with self._transacting[item.partition], producer.transaction():
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

    async def _renew_producer(self, partition: int, generation: int) -> None:
        """A new producer for the partition, same transactional id: it fences the failed one
        and aborts its open transaction. Taken under the partition's transaction lock, so no
        transaction is cut off halfway."""
        async with self._transacting[partition]:
            old = self.producers.pop(partition, None)
            if old is not None:
                try:
                    await asyncio.wait_for(old.stop(), 10)
                except (KafkaError, asyncio.TimeoutError, OSError):
                    pass
            if self.generation.get(partition) != generation:
                return
            producer = self._new_producer(partition)
            try:
                await producer.start()
            except (KafkaError, asyncio.TimeoutError, OSError):
                return  # the broker is still away: the next try starts one again
            self.producers[partition] = producer

    def _count(self, outcome: FrameOutcome, item: AssembledFrame) -> None:
        error, frame_metrics = outcome.error, outcome.metrics
        if (self.restored + self.failed) % TRIM_EVERY == TRIM_EVERY - 1:
            give_back()  # the frame's buffers are free now: hand their pages back
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
        """Work until ``stop`` is set (or ``max_frames`` are handled), then leave the group:
        frames on the device or awaiting their transaction are finished and committed within
        ``shutdown_grace_seconds``, abandoned uncommitted after it; prefetched frames are left
        to the next owner. A device fault ends the run with DeviceFaultError."""
        self.metrics.device.info({"device": self.restorer.device_name, "worker": self.worker_id})
        self._admin = admin_client(self.settings)
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        try:
            await start_client(self._admin)
        except BaseException:
            await self.consumer.stop()  # never started, but aiokafka wants it closed
            raise
        try:
            await start_client(self.consumer)
        except BaseException:
            await self._admin.close()
            raise
        stages = [asyncio.create_task(self._fetch(stop)), asyncio.create_task(self._restore(stop)),
                  asyncio.create_task(self._encode(stop)),
                  asyncio.create_task(self._publish(stop, max_frames)),
                  asyncio.create_task(self._watch(stop))]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({*stages, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                task.result()  # a crashed stage ends the worker with its exception
            await self._finish(stages)
        finally:
            stop.set()
            stopping.cancel()
            await self._close(stages)

    async def _finish(self, stages: list[asyncio.Task]) -> None:
        """Let in-flight frames commit, for at most the grace period."""
        done, pending = await asyncio.wait(stages, timeout=self.settings.shutdown_grace_seconds)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        if pending:
            log.warning("worker %s: in-flight frames not finished within %.0f s of the stop; "
                        "abandoned uncommitted (the next owner restores them)", self.worker_id,
                        self.settings.shutdown_grace_seconds)

    async def _close(self, stages: list[asyncio.Task]) -> None:
        for task in stages:
            task.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
        await self.consumer.stop()  # leaves the group
        for producer in self.producers.values():
            try:  # an open transaction is aborted by the next owner's fencing
                await asyncio.wait_for(producer.stop(), 10)
            except (asyncio.TimeoutError, KafkaError):
                pass
        self.producers.clear()
        if self._admin is not None:
            await self._admin.close()
        for executor in (self._decoder, self._device, self._encoder):
            executor.shutdown(wait=False, cancel_futures=True)
