"""The worker's fetch stage: poll the consumer, put chunks back together per partition, count
the attempt of the frame a previous owner may have died on, and decode and measure frames on
the host threads (:mod:`streamer.worker.host_pool`) ahead of the device.

The queue holds each frame's decoding, in fetch order, finished or not: consecutive frames
decode at once on several threads and the device takes them in order. At most
``max(prefetch_frames, host threads)`` frames are queued; while they are, the partitions are
paused — not left unpolled — so long device work never trips ``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer

from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from streamer.streaming.framing import AssembledFrame, headers_dict
from streamer.worker.attempts import count_attempt
from streamer.worker.decoding import HostChecks, decode_frame
from streamer.worker.host_pool import HostPool
from streamer.worker.items import DecodedFrame
from streamer.worker.partitions import Assignment, PartitionState

POLL_MILLISECONDS = 200
POLL_RECORDS = 256


class Fetcher:
    """Feeds frames' decoding, in fetch order, to ``queue``."""

    def __init__(self, consumer: AIOKafkaConsumer, assignment: Assignment,
                 settings: StreamerSettings, metrics: StreamerMetrics, checks: HostChecks,
                 queue: asyncio.Queue[asyncio.Future[DecodedFrame]], host: HostPool) -> None:
        self.consumer = consumer
        self.assignment = assignment
        self.settings = settings
        self.metrics = metrics
        self.checks = checks
        self.queue = queue
        self.host = host
        self.ahead = max(settings.prefetch_frames, host.threads)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until ``stop`` is set."""
        while not stop.is_set():
            partitions = self.consumer.assignment()
            if self.queue.qsize() >= self.ahead:
                self.consumer.pause(*partitions)
            else:
                self.consumer.resume(*partitions)
            batches = await self.consumer.getmany(timeout_ms=POLL_MILLISECONDS,
                                                  max_records=POLL_RECORDS)
            for tp in partitions:  # also expires stalled frames of quiet partitions
                state = self.assignment.get(tp.partition)
                if state is None:
                    continue
                for record in batches.get(tp, ()):
                    state.assembler.add(record.offset, record.value,
                                        headers_dict(record.headers))
                    state.fetched_to = record.offset + 1
                for item in state.assembler.ready():
                    await self._admit(state, item)

    async def _admit(self, state: PartitionState, item: AssembledFrame) -> None:
        """Count one assembled frame and queue its decoding."""
        topic = self.settings.topics.raw
        self.metrics.frames_consumed.labels(topic).inc()
        self.metrics.consumed_bytes.labels(topic).inc(len(item.payload))
        self.metrics.in_flight.inc()
        spent = await count_attempt(state, item.first_offset, self.settings.group_id,
                                    self.settings.retry_budget)
        if spent is not None:
            decoding = asyncio.get_running_loop().create_future()
            decoding.set_result(DecodedFrame(state, item, None, None, spent, 0.0))
        else:
            # The ticket is taken here, in fetch order, as the pool starts work in the order
            # it is given (streamer.turns).
            decoding = self.host.submit(decode_frame, item, state, self.checks,
                                        self.checks.turns.ticket())
        await self.queue.put(decoding)

    def close(self) -> None:
        """Let frames still decoding stop waiting for their turns (the pool is the worker's
        to close)."""
        self.checks.turns.close()
