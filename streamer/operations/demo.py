"""``streamer demo``: the whole system in one command.

Starts the local broker when no bootstrap servers are configured, creates the topics, runs a
simulated camera, a worker and the sink for N frames, prints a summary and exits cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.streaming.camera import CameraPublisher, simulate
from streamer.streaming.local_kafka import LocalKafka
from streamer.imaging.psf import PSFSpec
from streamer.settings import StreamerSettings
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from streamer.worker.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class DemoSummary:
    """What the demo did."""

    frames: int
    restored: int
    dead_letters: int
    seconds: float
    frames_per_second: float
    latency_p50: float
    latency_p99: float
    output: Path
    bootstrap_servers: str

    def text(self) -> str:
        """The lines printed at the end of the demo."""
        return "\n".join([
            f"frames published: {self.frames}, restored: {self.restored}, "
            f"dead letters: {self.dead_letters}",
            f"throughput: {self.frames_per_second:.2f} frames/s over {self.seconds:.1f} s",
            f"exposure-to-restored latency: p50 {self.latency_p50:.2f} s, "
            f"p99 {self.latency_p99:.2f} s",
            f"archive: {self.output}/input, {self.output}/output, {self.output}/manifest",
            f"kafka: {self.bootstrap_servers}",
        ])


async def run_demo(settings: StreamerSettings, *, frames: int, size: int, cadence: float,
                   out_dir: Path, broker_dir: Path, simulated_psf: PSFSpec,
                   timeout: float = 900.0) -> DemoSummary:
    """Run camera → Kafka → worker → Kafka → sink for ``frames`` frames."""
    broker: LocalKafka | None = None
    if not settings.kafka.bootstrap_servers:
        broker = LocalKafka(broker_dir)
        loop = asyncio.get_running_loop()
        print(f"starting the local Kafka broker in {broker_dir} …", flush=True)
        bootstrap = await loop.run_in_executor(None, lambda: broker.start(fresh=True))
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})}
        )
    try:
        await create_topics(settings)
        sink = Sink(settings, out_dir)
        worker = Worker(settings)
        sink_stop, worker_stop = asyncio.Event(), asyncio.Event()
        sink_task = asyncio.create_task(sink.run(sink_stop, expected_frames=frames))
        worker_task = asyncio.create_task(worker.run(worker_stop))
        started = time.monotonic()
        async with CameraPublisher(settings, "cam1") as camera:
            await simulate(camera, count=frames, size=size, cadence=cadence, psf=simulated_psf)
        done, _ = await asyncio.wait({sink_task, worker_task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        elapsed = time.monotonic() - started
        worker_stop.set()
        sink_stop.set()
        await asyncio.gather(worker_task, sink_task)
        latencies = [
            entry["metrics"]["exposure_to_restored_seconds"]
            for entry in sink.archive.manifests() if "metrics" in entry
        ]
        p50, p99 = (np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2)
        return DemoSummary(
            frames=frames, restored=len(sink.restored_frames), dead_letters=worker.failed,
            seconds=elapsed, frames_per_second=len(sink.restored_frames) / elapsed,
            latency_p50=float(p50), latency_p99=float(p99), output=out_dir,
            bootstrap_servers=settings.kafka.bootstrap_servers,
        )
    finally:
        if broker is not None:
            broker.stop()
