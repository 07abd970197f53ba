"""``streamer demo``: the whole system in one command, and an honest answer to "does this
device keep up with my camera?".

Starts the local broker when no bootstrap servers are configured, creates the topics, runs a
simulated camera at the cadence asked, a worker and the sink for N frames, showing progress.
At the end it prints what was restored, the exposure-to-restored latency, the time a frame
spends in each stage of the worker, and the verdict: the slowest stage against the cadence
(the worker's stages overlap, so the slowest one sets the pace), with the cadence this device
would sustain when it does not keep up. It writes a before/after PNG of the last restored
frame, and with ``--view`` serves the quick-look page over the demo's archive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamer.imaging.fits_io import read_image
from streamer.imaging.preview import write_before_after
from streamer.imaging.psf import PSFSpec
from streamer.settings import StreamerSettings
from streamer.streaming.camera import CameraPublisher, simulate
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from streamer.worker.worker import Worker

if TYPE_CHECKING:
    from streamer.local_broker.broker import LocalKafka

log = logging.getLogger(__name__)
HEADROOM = 1.1  # a cadence 10 % above the slowest stage, so queues drain after a slow frame
# The worker's stages: decode and measure (the PSF among it) on the host threads, the device,
# then encode, output quality and the catalogue on the host threads; they overlap across
# frames, so the slowest one sets the pace. ("decode" is the whole first stage: its PSF
# seconds are in it, not beside it.)
STAGES = {"decode + measure": ("decode",), "device (median + RL)": ("median", "richardson_lucy"),
          "finish (encode, quality, sources)": ("encode", "output_quality", "sources")}


@dataclass
class DemoSummary:
    """What the demo did and what it means for this device."""

    frames: int
    restored: int
    dead_letters: int
    seconds: float
    frames_per_second: float
    latency_p50: float
    latency_p99: float
    output: Path
    bootstrap_servers: str
    cadence: float = 0.0
    stage_p50: dict[str, float] = field(default_factory=dict)
    latency_first: float = float("nan")
    latency_last: float = float("nan")
    preview: Path | None = None
    view_url: str | None = None

    @property
    def bottleneck(self) -> tuple[str, float]:
        """The slowest stage and its median seconds per frame."""
        if not self.stage_p50:
            return "none", float("nan")
        return max(self.stage_p50.items(), key=lambda item: item[1])

    @property
    def paced(self) -> float:
        """Seconds per frame the worker sustained: the cadence plus how much the latency grew
        per frame (frame i was restored at i·cadence + its latency). On a machine whose
        device is its own CPU the stages share the cores, and this exceeds the slowest one."""
        if self.restored < 2 or math.isnan(self.latency_last) or math.isnan(self.latency_first):
            return float("nan")
        return self.cadence + (self.latency_last - self.latency_first) / (self.restored - 1)

    @property
    def per_frame(self) -> tuple[str, float]:
        """What bounds the pace, and its seconds per frame: the slowest stage, or all of them
        together when the latency grew faster than the slowest stage explains."""
        stage, seconds = self.bottleneck
        paced = self.paced
        # latency jitter is not growth: it must outrun the cadence's headroom
        if not math.isnan(paced) and paced > max(seconds, self.cadence * HEADROOM):
            return "all stages, sharing the cores", paced
        return stage, seconds

    @property
    def keeps_up(self) -> bool:
        """Whether the worker's pace fits in the cadence."""
        return self.per_frame[1] <= self.cadence

    @property
    def sustainable_cadence(self) -> float:
        """The shortest cadence (0.1 s steps) this device keeps up with, with headroom."""
        return math.ceil(self.per_frame[1] * HEADROOM * 10) / 10

    def verdict(self) -> str:
        """One sentence: does this device keep up with the cadence?"""
        stage, seconds = self.per_frame
        if math.isnan(seconds):
            return "verdict: no frame was restored, so nothing can be said about the pace"
        if self.keeps_up:
            return (f"verdict: this device keeps up — its slowest stage ({stage}) takes "
                    f"{seconds:.2f} s a frame, within the {self.cadence:g} s cadence")
        growing = ("; latency grew from " f"{self.latency_first:.1f} s to {self.latency_last:.1f} s"
                   if self.latency_last > self.latency_first else "")
        bound = (f"its stages share the machine's cores and together need {seconds:.2f} s a "
                 f"frame" if stage.startswith("all stages") else
                 f"its slowest stage ({stage}) needs {seconds:.2f} s a frame")
        return (f"verdict: this device does NOT keep up with a {self.cadence:g} s cadence — "
                f"{bound}{growing}. It would keep up at a cadence of "
                f"{self.sustainable_cadence:.1f} s or more, or with "
                f"{math.ceil(seconds / max(self.cadence, 1e-9))} workers on machines like this one")

    def text(self) -> str:
        """The lines printed at the end of the demo."""
        stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.stage_p50.items())
        lines = [
            f"frames published: {self.frames}, restored: {self.restored}, "
            f"dead letters: {self.dead_letters}",
            f"throughput: {self.frames_per_second:.2f} frames/s over {self.seconds:.1f} s",
            f"exposure-to-restored latency: p50 {self.latency_p50:.2f} s, "
            f"p99 {self.latency_p99:.2f} s",
            f"time per frame in the worker (p50): {stages or 'none'}",
            self.verdict(),
            f"archive: {self.output}/input, {self.output}/output, {self.output}/manifest",
        ]
        if self.preview is not None:
            lines.append(f"last frame, input beside restored: {self.preview}")
        lines.append(f"kafka: {self.bootstrap_servers}")
        if self.view_url:
            lines.append(f"quick look: {self.view_url} (Ctrl-C to stop)")
        return "\n".join(lines)


async def _progress(sink: Sink, worker: Worker, frames: int, stop: asyncio.Event) -> None:
    """One line, redrawn on a terminal (a line per five frames otherwise)."""
    terminal, shown = sys.stderr.isatty(), -1
    while True:
        done = len(sink.restored_frames) + worker.failed
        final = stop.is_set()
        if done != shown and (terminal or done % 5 == 0 or final):
            shown = done
            latest = sink.last_latency
            text = (f"restored {len(sink.restored_frames)}/{frames}, dead letters {worker.failed}"
                    + (f", latest latency {latest:.1f} s" if latest is not None else ""))
            sys.stderr.write(("\r" + text.ljust(70)) if terminal else text + "\n")
            sys.stderr.flush()
        if final:
            break
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    if terminal:
        sys.stderr.write("\n")


def _figures(manifests: list[dict]) -> tuple[dict[str, float], list[float]]:
    """Median seconds per worker stage, and latencies in exposure order."""
    restored = sorted((m for m in manifests if "metrics" in m),
                      key=lambda m: m["metrics"]["exposure_start"])
    stages = {name: float(np.median([sum(m["metrics"]["stage_seconds"].get(k, 0.0) for k in keys)
                                     for m in restored]))
              for name, keys in STAGES.items()} if restored else {}
    return stages, [m["metrics"]["exposure_to_restored_seconds"] for m in restored]


def _preview(out_dir: Path, sink: Sink) -> Path | None:
    """Before/after PNG of the last restored frame."""
    outputs = sorted((out_dir / "output").rglob("*.fits"), key=lambda p: p.stat().st_mtime)
    if not outputs:
        return None
    last = outputs[-1]
    source = out_dir / "input" / last.relative_to(out_dir / "output")
    if not source.exists():
        return None
    path = out_dir / "last-frame.png"
    write_before_after(path, read_image(source).data, read_image(last).data)
    return path


async def run_demo(settings: StreamerSettings, *, frames: int, size: int, cadence: float,
                   out_dir: Path, broker_dir: Path, simulated_psf: PSFSpec,
                   timeout: float = 900.0) -> DemoSummary:
    """Run camera → Kafka → worker → Kafka → sink for ``frames`` frames."""
    broker: LocalKafka | None = None
    if not settings.kafka.bootstrap_servers:
        from streamer.local_broker.broker import LocalKafka

        broker = LocalKafka(broker_dir)
        print(f"starting the local Kafka broker in {broker_dir} …", flush=True)
        settings = settings.with_bootstrap_servers(
            await asyncio.to_thread(broker.start, fresh=True))
    try:
        await create_topics(settings)
        sink, worker = Sink(settings, out_dir), Worker(settings)
        stops = {name: asyncio.Event() for name in ("sink", "worker", "progress")}
        sink_task = asyncio.create_task(sink.run(stops["sink"]))
        worker_task = asyncio.create_task(worker.run(stops["worker"]))
        progress = asyncio.create_task(_progress(sink, worker, frames, stops["progress"]))
        print(f"publishing {frames} frames of {size}×{size}, one every {cadence:g} s "
              f"(restoring on {worker.restorer.device_name})", flush=True)
        started = time.monotonic()
        async with CameraPublisher(settings, "cam1") as camera:
            await simulate(camera, count=frames, size=size, cadence=cadence, psf=simulated_psf)
        await _until_done(sink, worker, frames, sink_task, worker_task, timeout)
        elapsed = time.monotonic() - started
        for stop in stops.values():
            stop.set()
        await asyncio.gather(worker_task, sink_task, progress)
        stages, latencies = _figures(sink.archive.manifests())
        p50, p99 = (np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2)
        return DemoSummary(
            frames=frames, restored=len(sink.restored_frames), dead_letters=worker.failed,
            seconds=elapsed, frames_per_second=len(sink.restored_frames) / elapsed,
            latency_p50=float(p50), latency_p99=float(p99), output=out_dir,
            bootstrap_servers=settings.kafka.bootstrap_servers, cadence=cadence,
            stage_p50=stages, latency_first=latencies[0] if latencies else float("nan"),
            latency_last=latencies[-1] if latencies else float("nan"),
            preview=await asyncio.to_thread(_preview, out_dir, sink),
        )
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)


async def _until_done(sink: Sink, worker: Worker, frames: int, sink_task: asyncio.Task,
                      worker_task: asyncio.Task, timeout: float) -> None:
    """Wait until every frame is archived or dead-lettered (or a task fails, or time is up)."""
    deadline = time.monotonic() + timeout
    while len(sink.restored_frames) + worker.failed < frames and time.monotonic() < deadline:
        for task in (sink_task, worker_task):
            if task.done() and task.exception() is not None:
                raise task.exception()
        await asyncio.sleep(0.2)
