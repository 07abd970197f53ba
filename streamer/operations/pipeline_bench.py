"""``streamer bench-pipeline``: what Kafka, encoding and transactions add to the restore time.

Not a test. From one run it prints, for the same synthetic frames:

* the offline restore time per frame (decode + :meth:`Restorer.restore`, no Kafka);
* per worker count, the steady-state time per frame through the pipeline (raw topic → worker
  processes → restored and metrics topics, transactions), measured between consecutive
  ``restored_at`` stamps so start-up is left out, and the overhead against offline; the
  frames are published before the workers start, so on a small machine the camera does not
  compete with them for the cores;
* the device's share of that time: a frame's device span (median of the workers' metrics)
  over the time per frame and worker — how much of its time each device is kept busy;
* exposure-to-restored latency percentiles of a paced run with one worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from streamer.streaming.camera import CameraPublisher
from streamer.imaging.fits_io import image_bytes, read_image_bytes
from streamer.streaming.messages import FrameMetrics, utc_now
from streamer.imaging.psf import gaussian_psf
from streamer.restoration.restorer import Restorer
from streamer.settings import StreamerSettings, TopicSettings
from streamer.imaging.synthetic import star_field
from streamer.streaming.topics import create_topics


def _frames(count: int, size: int) -> list[np.ndarray]:
    return [np.clip(np.round(star_field((size, size), gaussian_psf(3.0), seed=i).image), 0, 65535)
            .astype(np.uint16) for i in range(count)]


def _offline_seconds(settings: StreamerSettings, payloads: list[bytes]) -> float:
    restorer = Restorer(settings.restoration, settings.device)
    restorer.restore(read_image_bytes(payloads[0]).data)  # plan + compile, as a worker's first frame
    started = time.perf_counter()
    for payload in payloads:
        restorer.restore(read_image_bytes(payload).data)
    return (time.perf_counter() - started) / len(payloads)


def _worker_env(settings: StreamerSettings) -> dict[str, str]:
    # Workers share this host: each serves its metrics on a free port.
    return {**settings.child_environment(os.environ), "STREAMER_METRICS_ADDRESS": "127.0.0.1:0"}


async def _metrics(settings: StreamerSettings, expect: int, timeout: float) -> list[FrameMetrics]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topics.metrics, bootstrap_servers=settings.kafka.bootstrap_servers,
                                group_id=None, isolation_level="read_committed",
                                auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, FrameMetrics] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    metrics = FrameMetrics.model_validate_json(record.value)
                    found[metrics.frame_id] = metrics
    finally:
        await consumer.stop()
    return list(found.values())


async def _run(settings: StreamerSettings, payloads: list[bytes], shape, workers: int,
               cadence: float, log_dir: Path) -> list[FrameMetrics]:
    tag = uuid.uuid4().hex[:6]
    settings = settings.model_copy(update={
        "topics": TopicSettings(raw=f"bench-raw-{tag}", restored=f"bench-restored-{tag}",
                                metrics=f"bench-metrics-{tag}", dead_letter=f"bench-dead-{tag}",
                                sources=f"bench-sources-{tag}",
                                partitions=max(2, workers)),
        "group_id": f"bench-{tag}"})
    await create_topics(settings)

    async def publish() -> None:
        async with CameraPublisher(settings, "cam0") as first, \
                CameraPublisher(settings, "cam1") as second:
            for index, payload in enumerate(payloads):
                camera = (first, second)[index % 2]
                await camera.publish_payload(payload, shape=shape, dtype="uint16",
                                             exposure_start=utc_now(), exposure_seconds=0.0,
                                             frame_id=f"{camera.camera_id}-{tag}-{index}")
                if cadence:
                    await asyncio.sleep(cadence)

    if not cadence:
        # Throughput: the frames wait in Kafka, so the camera (and the broker taking them in)
        # does not compete with the workers for this machine's cores while they are timed.
        await publish()
    processes = [
        subprocess.Popen([sys.executable, "-m", "streamer", "-v", "worker", "--worker-id", f"w{i}"],
                         env=_worker_env(settings),
                         stdout=open(log_dir / f"worker-{tag}-{i}.log", "wb"), stderr=subprocess.STDOUT)
        for i in range(workers)
    ]
    try:
        if cadence:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the worker is in the group before frames flow
                if ": assigned partitions [" in (log_dir / f"worker-{tag}-0.log").read_text():
                    break
                await asyncio.sleep(0.5)
            await publish()
        return await _metrics(settings, len(payloads), timeout=60 + 20 * len(payloads))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(120)


def run_pipeline_bench(settings: StreamerSettings, frames: int, size: int,
                       worker_counts: list[int], as_json: bool) -> int:
    """Run the benchmark and print its figures; returns the exit code."""
    broker = None
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as folder:
        if not settings.kafka.bootstrap_servers:
            from streamer.local_broker.broker import LocalKafka

            broker = LocalKafka(Path(folder) / "kafka")
            settings = settings.with_bootstrap_servers(broker.start())
        try:
            result = _measure(settings, frames, size, worker_counts, Path(folder))
        finally:
            if broker is not None:
                broker.stop()
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(_report(settings, result))
    return 0


def _measure(settings: StreamerSettings, frames: int, size: int, worker_counts: list[int],
             folder: Path) -> dict:
    """Offline restore time, then the pipeline with each worker count, then paced latency."""
    images = _frames(frames, size)
    payloads = [image_bytes(image) for image in images]
    offline = _offline_seconds(settings, payloads)
    result: dict = {"frame": f"{size}x{size} uint16", "frames": frames,
                    "restoration": json.loads(settings.restoration.model_dump_json()),
                    "offline_seconds_per_frame": offline, "workers": {}}
    for workers in worker_counts:
        metrics = asyncio.run(_run(settings, payloads, images[0].shape, workers, 0.0, folder))
        stamps = sorted(m.restored_at.timestamp() for m in metrics)
        per_frame = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
        # The workers' own restore time of these frames, from their metrics: the same
        # process, so the overhead below is what the pipeline adds to it.
        restore = float(np.mean([sum(m.stage_seconds.get(k, 0.0) for k in
                                     ("prepare", "median", "richardson_lucy"))
                                 for m in metrics]))
        # A frame's device span (its profiling markers) over the interval between frames, per
        # worker; medians, so a first frame's plans and builds do not count.
        device = float(np.median([sum(m.device_seconds.values()) for m in metrics]))
        result["workers"][workers] = {
            "restored": len(metrics), "seconds_per_frame": per_frame,
            "device_busy_share": device / (per_frame * workers),
            "frames_per_second": 1 / per_frame,
            "worker_restore_seconds": restore,
            # With several workers sharing one device the per-worker figure means little
            # (their restores contend); throughput is the figure then.
            "overhead_vs_worker_restore": per_frame / restore - 1 if workers == 1 else None,
            "overhead_vs_offline": per_frame / offline - 1 if workers == 1 else None,
            "speedup_vs_one_offline": offline / per_frame,
        }
    paced = asyncio.run(_run(settings, payloads, images[0].shape, 1, offline * 1.5, folder))
    latencies = [m.exposure_to_restored_seconds for m in paced]
    result["paced_latency_seconds"] = {
        "cadence": offline * 1.5, "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)), "restored": len(paced)}
    return result


def _report(settings: StreamerSettings, result: dict) -> str:
    """The figures as lines of text."""
    lines = [f"pipeline bench — {result['frame']}, {result['frames']} frames, restoration "
             f"window {settings.restoration.window}, {settings.restoration.iterations} RL "
             f"iterations",
             f"offline restore (decode + restore, no Kafka): "
             f"{result['offline_seconds_per_frame']:.3f} s/frame"]
    for workers, row in result["workers"].items():
        line = (f"{workers} worker(s): {row['seconds_per_frame']:.3f} s/frame through Kafka "
                f"({row['frames_per_second']:.2f} frames/s, {row['speedup_vs_one_offline']:.2f}x "
                f"the offline rate; device busy {row['device_busy_share'] * 100:.0f} % of the "
                f"time)")
        if row["overhead_vs_worker_restore"] is not None:
            line += (f"; the worker restores in {row['worker_restore_seconds']:.3f} s, so Kafka + "
                     f"encoding + transactions add {row['overhead_vs_worker_restore'] * 100:+.1f}% "
                     f"to it ({row['overhead_vs_offline'] * 100:+.1f}% against offline)")
        lines.append(line)
    lat = result["paced_latency_seconds"]
    lines.append(f"paced at {lat['cadence']:.2f} s, 1 worker: exposure-to-restored p50 "
                 f"{lat['p50']:.3f} s, p99 {lat['p99']:.3f} s")
    return "\n".join(lines)
