"""Prometheus metrics: names follow the conventions, and a real Prometheus server scraping a
worker during a short run sees counters and histograms that match what was processed."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from streamer.streaming.kafka_clients import transactional_producer
from streamer.metrics import StreamerMetrics
from streamer.streaming.topics import create_topics
from tests.kafka_support import read_topic, start_cli, unique_settings
from tests.streaming.test_streaming import _publish


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_metric_names_follow_prometheus_conventions():
    for family in StreamerMetrics("test").registry.collect():
        assert family.name.startswith("streamer_")
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_pixels", "_ratio", "_level", "_sources",
                                         "_sigma", "_iterations")), family.name
        if "seconds" in family.name or "bytes" in family.name:
            assert not any(unit in family.name for unit in ("_ms", "milli", "_kb", "_mb"))


def test_metrics_are_served_on_loopback_by_default():
    metrics = StreamerMetrics("worker")
    metrics.frames_restored.inc(3)
    port = metrics.serve("127.0.0.1:0")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "streamer_frames_restored_total 3.0" in body
    assert "# TYPE streamer_stage_duration_seconds histogram" in body


def _query(port: int, expression: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expression)}"
    answer = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _value(port: int, expression: str) -> float | None:
    result = _query(port, expression)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.kafka
def test_real_prometheus_scrapes_a_worker(kafka_bootstrap, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: scripts/bootstrap.sh installs Debian's prometheus"
    settings = unique_settings(kafka_bootstrap, partitions=1)
    frames = 4
    metrics_port, prometheus_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: streamer-worker\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n")

    async def feed():
        await create_topics(settings)
        await _publish(settings, frames, size=256)
        producer = transactional_producer(settings, "observability-injector")
        await producer.start()
        async with producer.transaction():
            await producer.send(settings.topics.raw, b"not a frame", key=b"camX")
        await producer.stop()

    asyncio.run(feed())
    worker = start_cli(settings, "worker", "--metrics-address", f"127.0.0.1:{metrics_port}",
                       "--window", "7", "--iterations", "3", "--psf", "gaussian:fwhm=2",
                       log=tmp_path / "worker.log")
    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    try:
        restored = asyncio.run(read_topic(settings, settings.topics.restored, expect=frames, settle=0))
        assert len(restored) == frames
        deadline = time.monotonic() + 90
        restored_total = None
        while time.monotonic() < deadline:
            try:
                restored_total = _value(prometheus_port, "streamer_frames_restored_total")
                failed = _value(prometheus_port, 'streamer_frames_failed_total{reason="ChunkError"}')
                # The lag is a gauge the worker's monitor sets every 2 s once the consumer
                # knows the partition's end: on a slow run the frames' counters can reach
                # Prometheus a scrape before it (seen once in CI).
                lagging = _query(prometheus_port, "streamer_consumer_lag_records")
                if restored_total == frames and failed == 1 and lagging:
                    break
            except OSError:
                pass  # Prometheus still starting
            time.sleep(1)
        assert restored_total == frames, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert _value(prometheus_port, 'streamer_frames_failed_total{reason="ChunkError"}') == 1
        assert _value(prometheus_port, 'streamer_stage_duration_seconds_count{stage="median"}') == frames
        assert _value(prometheus_port, 'streamer_stage_duration_seconds_count{stage="commit"}') == frames + 1
        assert _value(prometheus_port, "streamer_exposure_to_restored_seconds_count") == frames
        assert _value(prometheus_port, "streamer_exposure_to_restored_seconds_sum") > 0
        assert _value(prometheus_port, 'streamer_frames_consumed_total') == frames + 1
        assert _value(prometheus_port, 'streamer_star_fwhm_pixels_count{state="before"}') == frames
        assert _value(prometheus_port, "streamer_flux_ratio_count") == frames
        assert _value(prometheus_port, "up") == 1
        device = _query(prometheus_port, "streamer_device_info")
        assert device and device[0]["metric"]["device"]
        assert _value(prometheus_port, "streamer_kernel_build_seconds") > 0
        lag = _query(prometheus_port, "streamer_consumer_lag_records")
        assert lag and lag[0]["metric"]["partition"] == "0"
        # Lag is counted from the group's committed offset: once everything is committed it
        # is zero, and the committed offset (frames, the bad record, transaction markers) shows.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                _query(prometheus_port, "streamer_committed_offset")
                and _value(prometheus_port, "streamer_consumer_lag_records") == 0
                and _value(prometheus_port, "streamer_committed_offset") >= frames + 1):
            time.sleep(1)
        assert _value(prometheus_port, "streamer_consumer_lag_records") == 0
        assert _value(prometheus_port, "streamer_committed_offset") >= frames + 1
        median_fwhm = _value(prometheus_port, 'histogram_quantile(0.5, streamer_star_fwhm_pixels_bucket{state="before"})')
        assert 1.0 < median_fwhm < 4.0  # the camera blurred with a 2-pixel FWHM
    finally:
        worker.send_signal(signal.SIGTERM)
        server.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        server.wait(30)
