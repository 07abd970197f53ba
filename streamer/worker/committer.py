"""The worker's transaction stage: each frame's records and its consumer offset committed in
one transaction on its partition's publisher — exactly once.

Frames commit in fetch order. The offset committed after a frame is its assembler's answer
(the first offset of the oldest frame of the partition not yet handled), so a frame is never
skipped by a commit. A frame of a partition revoked meanwhile is dropped uncommitted: the
partition's next owner restores it, and its publisher (same transactional id) has fenced this
worker's anyway. Through a broker outage the publisher retries on a renewed producer for as
long as the partition is this worker's.
"""

from __future__ import annotations

import asyncio
import logging

from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from streamer.streaming.framing import AssembledFrame
from streamer.streaming.publisher import Outcome, Published
from streamer.worker.items import FrameOutcome
from streamer.worker.memory import give_back
from streamer.worker.partitions import Assignment

log = logging.getLogger(__name__)
TRIM_EVERY = 10  # frames between handing freed heap pages back (streamer.worker.memory)
QUEUE_POLL_SECONDS = 0.5


class Committer:
    """Commits frame outcomes from ``results``; counts what was restored and dead-lettered."""

    def __init__(self, settings: StreamerSettings, metrics: StreamerMetrics,
                 assignment: Assignment, results: asyncio.Queue[asyncio.Future[FrameOutcome]],
                 worker_id: str) -> None:
        self.settings = settings
        self.metrics = metrics
        self.assignment = assignment
        self.results = results
        self.worker_id = worker_id
        self.restored = 0
        self.failed = 0

    async def run(self, stop: asyncio.Event, max_frames: int | None = None) -> None:
        """Commit until ``stop`` is set and nothing is in flight (or ``max_frames`` are
        handled, which sets ``stop``)."""
        while not (stop.is_set() and self.results.empty() and not self.assignment.busy):
            try:
                finishing = await asyncio.wait_for(self.results.get(), QUEUE_POLL_SECONDS)
            except asyncio.TimeoutError:
                continue
            outcome = await finishing  # frames commit in the order they came off the device
            state = outcome.decoded.state
            try:
                if state.owned:
                    await state.ready.wait()  # the partition's publisher is up
                if state.owned:
                    await self.commit(outcome)
            finally:
                self.assignment.finished(state)
                self.metrics.in_flight.dec()
            if max_frames is not None and self.restored + self.failed >= max_frames:
                stop.set()

    async def commit(self, outcome: FrameOutcome) -> Outcome:
        """The frame's records and offset in one transaction, retried through outages while
        the partition is this worker's."""
        state, item = outcome.decoded.state, outcome.decoded.item
        offset = state.assembler.finish(item)
        published = await state.publisher.publish(
            outcome.records, {state.topic_partition: offset}, self.settings.group_id,
            what=f"the frame at {state.topic}[{state.partition}]@{item.first_offset}",
            keep_trying=lambda: state.owned)
        if published.outcome is Outcome.COMMITTED:
            self._count(outcome, item, published)
        return published.outcome

    def _count(self, outcome: FrameOutcome, item: AssembledFrame, published: Published) -> None:
        metrics = self.metrics
        metrics.stage_seconds.labels("publish").observe(published.send_seconds)
        metrics.stage_seconds.labels("commit").observe(published.commit_seconds)
        for record in outcome.records:
            metrics.published_bytes.labels(record.topic).inc(len(record.value))
        if (self.restored + self.failed) % TRIM_EVERY == TRIM_EVERY - 1:
            give_back()  # the frame's buffers are free now: hand their pages back
        topics = self.settings.topics
        error = outcome.error
        if error is None:
            self.restored += 1
            metrics.frames_restored.inc()
            for topic in (topics.restored, topics.metrics):
                metrics.frames_published.labels(topic).inc()
            if outcome.metrics is not None:
                metrics.observe_frame(outcome.metrics)
            return
        self.failed += 1
        metrics.frames_failed.labels(type(error).__name__).inc()
        metrics.frames_published.labels(topics.dead_letter).inc()
        log.warning("worker %s: frame at %s[%d]@%d to dead letters: %s: %s", self.worker_id,
                    topics.raw, item.partition, item.first_offset, type(error).__name__, error)
