"""``streamer worker``: consume raw frames, restore them, publish results — exactly once, and
never stopped by a record.

A front end over parts with one job each (as aiokafka's consumer is over its fetcher and its
coordinator): :class:`~streamer.worker.fetcher.Fetcher` (poll, reassemble, count attempts,
decode and measure on the host), :class:`~streamer.worker.device_pipeline.DevicePipeline` (the
device, then encoding), :class:`~streamer.worker.committer.Committer` (one transaction per
frame) and :class:`~streamer.worker.monitor.Monitor` (lag and device gauges). What the worker
holds per partition lives in one :class:`~streamer.worker.partitions.PartitionState`, made at
assignment and dropped at revocation; publishing goes through
:class:`~streamer.streaming.publisher.TransactionalPublisher`, as the camera's does.

Exactly once: each input partition has its own transactional producer
(``transactional.id = streamer-worker.<raw topic>.<partition>``). For every frame the worker
opens a transaction, writes the restored frame, its metrics (or a dead-letter record) and the
consumer offset to commit, and commits. Whoever owns a partition next starts a producer with
the same id, which fences the previous owner and aborts its open transaction — whether it was
SIGKILLed or is a zombie after a rebalance — so downstream ``read_committed`` consumers see
each frame exactly once.

Failures: each error states its fate (:class:`~streamer.errors.Fate`). Anything wrong with a
frame is the frame's fault and sends it to dead letters with the reason. An OpenCL error is
checked against the device with a probe kernel: a healthy device makes it the frame's fault
too (retried up to ``retry_budget``), a failed probe is a device fault that stops the worker
(exit code 3) without committing the frame. A frame some
earlier owner was decoding or restoring when it died is counted
(:mod:`streamer.worker.attempts`), so a frame that kills workers goes to dead letters instead of
around again.

Cold start: frames named in ``warm_up`` are restored once, as synthetic fields, before the
worker subscribes (:mod:`streamer.worker.warm_up`), and so is the newest frame already on the
input topic (``warm_up_from_stream``, :mod:`streamer.worker.stream_warm_up`), so kernel builds
and plans do not stall partitions it has just been given.

Throughput: four stages overlap. A fetch task keeps polling and decoding frames ahead
(``prefetch_frames``); the device restores one frame at a time in a thread; the encode stage
builds earlier frames' FITS, catalogues and metrics; a publish task commits them in order. The
host stages (decoding, encoding) of consecutive frames share ``host_threads`` threads
(:mod:`streamer.worker.host_pool`), several frames at once.
When the prefetch queue is full the partitions are paused, not left unpolled, so long device
work never trips ``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamer.errors import DeviceFaultError
from streamer.imaging.preparation import FramePreparer
from streamer.metrics import StreamerMetrics
from streamer.restoration.restorer import Restorer
from streamer.settings import StreamerSettings
from streamer.streaming.codec import FrameLimits
from streamer.streaming.framing import PartitionAssembler
from streamer.streaming.kafka_clients import admin_client, consumer, start_client
from streamer.streaming.publisher import TransactionalPublisher
from streamer.worker.attempts import recorded_attempts, suspect_of
from streamer.worker.catalogue_processes import CatalogueProcesses
from streamer.worker.committer import Committer
from streamer.worker.decoding import HostChecks
from streamer.worker.device_pipeline import DevicePipeline
from streamer.worker.fetcher import Fetcher
from streamer.worker.host_pool import HostPool
from streamer.worker.items import DecodedFrame, FrameOutcome
from streamer.worker.memory import limit_arenas
from streamer.worker.monitor import Monitor
from streamer.worker.partitions import Assignment, PartitionState
from streamer.worker.stream_warm_up import newest_frame

log = logging.getLogger(__name__)


async def _unless_stopped(work, stop: asyncio.Event) -> None:
    """Await ``work`` unless ``stop`` is set first; then it is cancelled (a restore already on
    the device thread still runs to its end there)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled():
        task.result()  # its errors are the worker's


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.release(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.acquire(assigned)


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
        self.consumer = consumer(
            settings, group_id=settings.group_id,
            max_poll_interval_ms=int(settings.max_poll_interval_seconds * 1000),
            session_timeout_ms=10000, heartbeat_interval_ms=2000,
            rebalance_timeout_ms=int(settings.transaction_timeout_seconds * 1000),
        )
        self.assignment = Assignment()
        self.host = HostPool(settings.host_threads)
        self.catalogues = (CatalogueProcesses(settings.catalogue_processes)
                           if settings.catalogue_processes and settings.restoration.sources
                           else None)
        decoded: asyncio.Queue[asyncio.Future[DecodedFrame]] = asyncio.Queue()
        # Restored frames being encoded or waiting for their transaction: as many as there
        # are host threads, so the device works on the next frame while these finish.
        results: asyncio.Queue[asyncio.Future[FrameOutcome]] = asyncio.Queue(
            maxsize=self.host.threads)
        checks = HostChecks(FrameLimits(settings.max_frame_pixels, settings.max_frame_bytes),
                            self.restorer.capacity,
                            FramePreparer.from_settings(settings.restoration))
        self.fetcher = Fetcher(self.consumer, self.assignment, settings, self.metrics, checks,
                               decoded, self.host)
        self.pipeline = DevicePipeline(self.restorer, settings, self.metrics, self.worker_id,
                                       self.assignment, decoded, results, self.host,
                                       self.catalogues)
        self.committer = Committer(settings, self.metrics, self.assignment, results,
                                   self.worker_id)
        self.monitor = Monitor(self.consumer, self.assignment, self.pipeline, self.restorer,
                               self.metrics)
        self._admin = None

    @property
    def restored(self) -> int:
        """Frames restored and committed."""
        return self.committer.restored

    @property
    def failed(self) -> int:
        """Frames committed to dead letters."""
        return self.committer.failed

    @property
    def device_running(self) -> bool:
        """Whether a frame is on the device now."""
        return self.pipeline.running

    # -- partition ownership ------------------------------------------------------------------
    async def acquire(self, assigned: set[TopicPartition]) -> None:
        """Own ``assigned``: a state each, the suspect frames read, each partition's publisher
        started (fencing its previous owner) — retried while the broker is away."""
        # States first, with no await in between: the fetch task may receive records of
        # these partitions while the publishers below are still starting.
        states = [self._new_state(tp) for tp in sorted(assigned)]
        for state in states:
            self.assignment.add(state)
        await self._read_suspects(states)
        for state in states:
            if await state.publisher.start_when_reachable(keep_trying=lambda s=state: s.owned):
                state.ready.set()
        log.info("worker %s: assigned partitions %s", self.worker_id,
                 [state.partition for state in states])

    def _new_state(self, tp: TopicPartition) -> PartitionState:
        settings = self.settings
        assembler = PartitionAssembler(tp.partition, settings.max_frame_bytes,
                                       settings.chunk_timeout_seconds, settings.chunk_span_records)
        # One transactional id per input partition, so whoever owns it next fences this one.
        publisher = TransactionalPublisher(settings, f"streamer-worker.{tp.topic}.{tp.partition}",
                                           f"worker {self.worker_id} partition {tp.partition}")
        return PartitionState(tp.topic, tp.partition, assembler, publisher)

    async def _read_suspects(self, states: list[PartitionState]) -> None:
        partitions = [state.topic_partition for state in states]
        try:
            recorded = await recorded_attempts(self._admin, self.settings.group_id, partitions)
            committed = {tp.partition: await self.consumer.committed(tp) for tp in partitions}
        except (KafkaError, OSError) as error:  # counted from zero then; logged, not fatal
            log.warning("worker %s: cannot read committed offsets (%s)", self.worker_id, error)
            return
        for state in states:
            state.suspect = suspect_of(committed.get(state.partition),
                                       recorded.get(state.partition))

    async def _warm_up(self, stop: asyncio.Event) -> None:
        """Before joining, so nobody's partitions wait for it: the ``warm_up`` frames, then
        the newest frame on the input topic, until ``stop``."""
        if self.settings.warm_up:
            seconds = await self.pipeline.warm_up(self.settings.warm_up)
            log.info("worker %s: ready: kernels built and plans made for %s in %.1f s",
                     self.worker_id, ", ".join(self.settings.warm_up), seconds)
        if self.settings.warm_up_from_stream and not stop.is_set():
            await _unless_stopped(self._warm_on_stream(), stop)

    async def _warm_on_stream(self) -> None:
        """Restore the newest frame on the input topic once before joining
        (:mod:`streamer.worker.stream_warm_up`); a frame that cannot be warmed on only costs
        the warm-up."""
        # A broker that cannot be reached (or refuses us) ends the worker here, with the one
        # clear error it would give at its subscription a moment later.
        item = await newest_frame(self.settings, self.topic)
        if item is None:
            log.info("worker %s: no frame on %s yet to warm up on", self.worker_id, self.topic)
            return
        limits = FrameLimits(self.settings.max_frame_pixels, self.settings.max_frame_bytes)
        try:
            what, seconds = await self.pipeline.warm_up_on(item, limits)
        except DeviceFaultError:
            raise  # a lost device ends the worker here as it would on a frame
        except Exception as error:  # a frame's fault here must not stop the worker
            log.warning("worker %s: no warm-up on the stream's newest frame (%s: %s); the "
                        "first frame given pays the kernel builds", self.worker_id,
                        type(error).__name__, error)
            return
        log.info("worker %s: ready: kernels built and plans made for %s in %.1f s",
                 self.worker_id, what, seconds)

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Give ``revoked`` up once their frames past the fetch have committed."""
        states = [s for tp in revoked if (s := self.assignment.get(tp.partition)) is not None]
        await self.assignment.drained(states)
        self.monitor.forget(sorted(revoked))
        for state in states:
            self.assignment.remove(state.partition)
            await state.publisher.stop()
        if states:
            log.info("worker %s: released partitions %s", self.worker_id,
                     [state.partition for state in states])

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, max_frames: int | None = None) -> None:
        """Work until ``stop`` is set (or ``max_frames`` are handled), then leave the group:
        frames on the device or awaiting their transaction are finished and committed within
        ``shutdown_grace_seconds``, abandoned uncommitted after it; prefetched frames are left
        to the next owner. A device fault ends the run with DeviceFaultError."""
        self.metrics.device.info({"device": self.restorer.device_name, "worker": self.worker_id})
        try:
            await self._warm_up(stop)
        except BaseException:
            await self._close([])
            raise
        if stop.is_set():  # stopped while warming up: leave without ever joining
            await self._close([])
            return
        # From here on no frame waits for a method's timing: the device thread measures
        # when it has nothing else to do (the pipeline's restore stage).
        self.restorer.defer_measurements()
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
        stages = [asyncio.create_task(self.fetcher.run(stop)),
                  asyncio.create_task(self.pipeline.restore_stage(stop)),
                  asyncio.create_task(self.pipeline.encode_stage(stop)),
                  asyncio.create_task(self.committer.run(stop, max_frames)),
                  asyncio.create_task(self.monitor.run(stop))]
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
        for state in self.assignment.states():
            # An open transaction is aborted by the next owner's fencing.
            await state.publisher.stop()
        if self._admin is not None:
            await self._admin.close()
        self.fetcher.close()
        self.pipeline.close()
        self.host.close()
        if self.catalogues is not None:
            self.catalogues.close()
