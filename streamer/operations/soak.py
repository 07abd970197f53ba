"""``streamer soak``: the whole system for a long time, with the memory of each process watched.

A worker and a sink run as processes of their own (as in production) against the local
broker, or a cluster given by the settings; this process is the camera. It publishes star
fields of several sizes in turn — more frame shapes than the worker keeps plans for, so its
plan cache must evict — and a frame with no signal now and then (a dead letter), at a fixed
cadence. Every ``sample_seconds`` it records the resident memory (RSS, from ``/proc``) of the
worker and the sink and the worker's plan count (its Prometheus endpoint). Growth is the mean
RSS of the last ``window_minutes`` over the mean of the first ``window_minutes`` after the
warm-up: a leak of a few MB a minute shows, a garbage collector's saw-tooth does not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from streamer.imaging.psf import PSFSpec
from streamer.imaging.synthetic import star_field
from streamer.settings import StreamerSettings
from streamer.streaming.camera import CameraPublisher
from streamer.streaming.topics import create_topics

ROLES = ("worker", "sink")


class SoakSample(BaseModel):
    """One reading of the processes' memory."""

    seconds: float
    rss_mb: dict[str, float]
    plans_cached: float | None
    restored: float | None


class SoakReport(BaseModel):
    """What a soak run saw."""

    started: dt.datetime
    minutes: float
    warmup_minutes: float
    window_minutes: float
    sizes: list[int]
    cadence_seconds: float
    frames_published: int
    frames_restored: int
    dead_letters: int
    dead_letters_published: int
    rss_after_warmup_mb: dict[str, float]
    rss_at_end_mb: dict[str, float]
    growth: dict[str, float]
    plans_cached_max: float
    frames_archived: int
    samples: list[SoakSample]

    def text(self) -> str:
        """The summary printed at the end."""
        lines = [f"soak: {self.minutes:.0f} min, {self.frames_published} frames published "
                 f"({self.dead_letters_published} without signal), {self.frames_restored} "
                 f"restored, {self.dead_letters} dead letters, {self.frames_archived} "
                 f"archived; sizes {self.sizes}, one every {self.cadence_seconds:g} s"]
        for role in ROLES:
            lines.append(
                f"{role}: RSS {self.rss_after_warmup_mb[role]:.0f} MB after the "
                f"{self.warmup_minutes:g}-min warm-up → {self.rss_at_end_mb[role]:.0f} MB at "
                f"the end ({self.growth[role] * 100:+.1f} %, means of "
                f"{self.window_minutes:g}-min windows)")
        lines.append(f"worker plans held: at most {self.plans_cached_max:.0f}")
        return "\n".join(lines)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (``VmRSS`` of ``/proc/PID/status``)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def scrape(port: int, name: str) -> float | None:
    """The sum of a metric's series on a local Prometheus endpoint (None if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def _frame(size: int, index: int, no_signal: bool) -> np.ndarray:
    if no_signal:
        return np.zeros((size, size), np.uint16)  # a camera fault: goes to dead letters
    psf = PSFSpec(kind="moffat", fwhm=2.5 + 0.5 * (index % 3), beta=3.0).build()
    field = star_field((size, size), psf, stars=max(20, size * size // 3000), seed=index)
    return np.clip(np.round(field.image), 0, 65535).astype(np.uint16)


def _archived(folder: Path) -> int:
    return len(list((folder / "archive" / "output").rglob("*.fits")))


async def _drained(port: int, folder: Path, published: int,
                   timeout: float = 300.0) -> tuple[float, float]:
    """Wait until the worker has handled every published frame and the sink has archived the
    restored ones; (restored, dead letters)."""
    deadline = time.monotonic() + timeout
    while True:
        restored = scrape(port, "streamer_frames_restored_total") or 0.0
        failed = scrape(port, "streamer_frames_failed_total") or 0.0
        done = restored + failed >= published and _archived(folder) >= restored
        if done or time.monotonic() > deadline:
            return restored, failed
        await asyncio.sleep(2.0)


def _mean_between(samples: list[SoakSample], role: str, start: float, end: float) -> float:
    values = [s.rss_mb[role] for s in samples if start <= s.seconds <= end]
    return statistics.fmean(values) if values else float("nan")


class _Processes:
    """The worker and the sink as processes, with their environment and logs."""

    def __init__(self, settings: StreamerSettings, folder: Path, metrics_port: int) -> None:
        env = {**settings.child_environment(os.environ),
               "STREAMER_METRICS_ADDRESS": "127.0.0.1:0"}
        self.logs = {role: open(folder / f"{role}.log", "ab") for role in ROLES}
        command = [sys.executable, "-m", "streamer"]
        self.processes = {
            "worker": subprocess.Popen(
                [*command, "worker", "--metrics-address", f"127.0.0.1:{metrics_port}"],
                env=env, stdout=self.logs["worker"], stderr=subprocess.STDOUT),
            "sink": subprocess.Popen([*command, "sink", "--out", str(folder / "archive")],
                                     env=env, stdout=self.logs["sink"],
                                     stderr=subprocess.STDOUT),
        }

    def check_alive(self) -> None:
        for role, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {role} exited with {process.returncode} during the soak")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in self.logs.values():
            handle.close()


async def run_soak(settings: StreamerSettings, folder: Path, *, minutes: float,
                   warmup_minutes: float = 5.0, window_minutes: float = 3.0,
                   sizes: tuple[int, ...] = (384, 448, 512, 576, 640, 704),
                   cadence: float = 1.0, no_signal_every: int = 50,
                   sample_seconds: float = 10.0, metrics_port: int = 9479) -> SoakReport:
    """Run the system for ``minutes``; see the module notes."""
    folder.mkdir(parents=True, exist_ok=True)
    broker = None
    if not settings.kafka.bootstrap_servers:
        from streamer.local_broker.broker import LocalKafka

        broker = LocalKafka(folder / "kafka")
        settings = settings.with_bootstrap_servers(
            await asyncio.to_thread(broker.start, fresh=True))
    await create_topics(settings)
    processes = _Processes(settings, folder, metrics_port)
    samples: list[SoakSample] = []
    published = dead = 0
    started, began = time.monotonic(), dt.datetime.now(dt.timezone.utc)
    next_sample = started
    try:
        async with CameraPublisher(settings, "soak") as camera:
            index = 0
            while time.monotonic() - started < minutes * 60:
                no_signal = index % no_signal_every == no_signal_every - 1
                frame = await asyncio.to_thread(_frame, sizes[index % len(sizes)], index,
                                                no_signal)
                await camera.publish_image(frame, source_name=f"soak_{index:06d}.fits")
                published, dead = published + 1, dead + no_signal
                index += 1
                now = time.monotonic()
                if now >= next_sample:
                    processes.check_alive()
                    samples.append(SoakSample(
                        seconds=now - started,
                        rss_mb={role: rss_mb(p.pid) for role, p in processes.processes.items()},
                        plans_cached=scrape(metrics_port, "streamer_plans_cached"),
                        restored=scrape(metrics_port, "streamer_frames_restored_total")))
                    next_sample += sample_seconds
                await asyncio.sleep(max(0.0, started + index * cadence - time.monotonic()))
        restored, failed = await _drained(metrics_port, folder, published)
    finally:
        processes.stop()
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    end = samples[-1].seconds if samples else 0.0
    warm = warmup_minutes * 60
    first = {r: _mean_between(samples, r, warm, warm + window_minutes * 60) for r in ROLES}
    last = {r: _mean_between(samples, r, end - window_minutes * 60, end) for r in ROLES}
    report = SoakReport(
        started=began, minutes=minutes, warmup_minutes=warmup_minutes,
        window_minutes=window_minutes, sizes=list(sizes), cadence_seconds=cadence,
        frames_published=published, dead_letters_published=dead,
        frames_restored=int(restored), dead_letters=int(failed),
        frames_archived=_archived(folder),
        rss_after_warmup_mb=first, rss_at_end_mb=last,
        growth={r: last[r] / first[r] - 1 for r in ROLES},
        plans_cached_max=max((s.plans_cached or 0) for s in samples) if samples else 0,
        samples=samples)
    (folder / "soak.json").write_text(json.dumps(report.model_dump(mode="json"), indent=1))
    return report
