"""The worker's gauges that no frame updates: consumer lag and the committed offset per owned
partition, the device's busy fraction, kernel build time and plans held."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from streamer.metrics import StreamerMetrics
from streamer.restoration.restorer import Restorer
from streamer.worker.device_pipeline import DevicePipeline
from streamer.worker.partitions import Assignment

EVERY_SECONDS = 2.0


class Monitor:
    """Updates the gauges every ``every`` seconds while the worker runs."""

    def __init__(self, consumer: AIOKafkaConsumer, assignment: Assignment,
                 pipeline: DevicePipeline, restorer: Restorer, metrics: StreamerMetrics,
                 every: float = EVERY_SECONDS) -> None:
        self.consumer = consumer
        self.assignment = assignment
        self.pipeline = pipeline
        self.restorer = restorer
        self.metrics = metrics
        self.every = every

    async def run(self, stop: asyncio.Event) -> None:
        """Lag per partition, from the committed offset (a stuck partition shows: its fetch
        position runs ahead, its commits do not), and the device's busy fraction."""
        last_wall, last_busy = time.perf_counter(), self.pipeline.busy_seconds
        while not stop.is_set():
            now = time.perf_counter()
            if now > last_wall:
                self.metrics.device_busy_ratio.set(
                    min(1.0, (self.pipeline.busy_seconds - last_busy) / (now - last_wall)))
            last_wall, last_busy = now, self.pipeline.busy_seconds
            for tp in self.consumer.assignment():
                await self._partition_gauges(tp)
            self.metrics.kernel_build_seconds.set(self.restorer.kernel_build_seconds)
            self.metrics.plans_cached.set(self.restorer.plan_count)
            try:
                await asyncio.wait_for(stop.wait(), self.every)
            except asyncio.TimeoutError:
                pass

    async def _partition_gauges(self, tp: TopicPartition) -> None:
        end = self.consumer.last_stable_offset(tp) or self.consumer.highwater(tp)
        try:
            committed = await self.consumer.committed(tp)
        except (IllegalStateError, KafkaError):  # revoked or unreachable: next round
            return
        labels = (tp.topic, str(tp.partition))
        self.metrics.committed_offset.labels(*labels).set(committed or 0)
        if end is not None:
            self.metrics.consumer_lag.labels(*labels).set(await self._lag(tp, committed or 0, end))

    async def _lag(self, tp: TopicPartition, committed: int, end: int) -> int:
        """Records of ``tp`` not yet committed. Each transaction leaves a commit marker after
        its records, so ``end - committed`` reads 1 on a partition that is all done; when the
        consumer has read to the end and every data record it saw is committed, what is left
        is markers only, and the lag is 0."""
        try:
            position = await self.consumer.position(tp)
        except (IllegalStateError, KafkaError):
            position = committed
        state = self.assignment.get(tp.partition)
        fetched_to = state.fetched_to if state is not None and state.fetched_to is not None \
            else committed
        if position >= end and committed >= fetched_to:
            return 0
        return max(end - committed, 0)

    def forget(self, revoked: list[TopicPartition]) -> None:
        """Drop the series of partitions another worker reports now (a stale one would
        alert)."""
        for tp in revoked:
            for gauge in (self.metrics.consumer_lag, self.metrics.committed_offset):
                try:
                    gauge.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass
