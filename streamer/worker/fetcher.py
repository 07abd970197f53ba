"""The worker's fetch stage: poll the consumer, put chunks back together per partition, count
the attempt of the frame a previous owner may have died on, and decode and measure frames on
a host thread ahead of the device.

At most ``prefetch_frames`` decoded frames wait for the device; while they do, the partitions
are paused — not left unpolled — so long device work never trips ``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaConsumer

from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from streamer.streaming.framing import AssembledFrame, headers_dict
from streamer.worker.attempts import count_attempt
from streamer.worker.decoding import HostChecks, decode_frame
from streamer.worker.items import DecodedFrame
from streamer.worker.partitions import Assignment, PartitionState

POLL_MILLISECONDS = 200
POLL_RECORDS = 256


class Fetcher:
    """Feeds decoded frames, in fetch order, to ``queue``."""

    def __init__(self, consumer: AIOKafkaConsumer, assignment: Assignment,
                 settings: StreamerSettings, metrics: StreamerMetrics, checks: HostChecks,
                 queue: asyncio.Queue[DecodedFrame]) -> None:
        self.consumer = consumer
        self.assignment = assignment
        self.settings = settings
        self.metrics = metrics
        self.checks = checks
        self.queue = queue
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until ``stop`` is set."""
        while not stop.is_set():
            partitions = self.consumer.assignment()
            if self.queue.qsize() >= self.settings.prefetch_frames:
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
        """Count, decode and queue one assembled frame."""
        topic = self.settings.topics.raw
        self.metrics.frames_consumed.labels(topic).inc()
        self.metrics.consumed_bytes.labels(topic).inc(len(item.payload))
        self.metrics.in_flight.inc()
        spent = await count_attempt(state, item.first_offset, self.settings.group_id,
                                    self.settings.retry_budget)
        if spent is not None:
            decoded = DecodedFrame(state, item, None, None, spent, 0.0)
        else:
            decoded = await asyncio.get_running_loop().run_in_executor(
                self._decoder, decode_frame, item, state, self.checks)
        await self.queue.put(decoded)

    def close(self) -> None:
        """Stop the decode thread (a frame being decoded is abandoned)."""
        self._decoder.shutdown(wait=False, cancel_futures=True)
