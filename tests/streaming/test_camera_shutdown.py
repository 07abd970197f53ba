"""A camera told to stop (SIGTERM) while the broker is away and a frame is in flight: it says
so, exits within the shutdown grace, and the frame stays pending — published once at the
next start, when the broker is back. On a real broker of its own, stopped and started."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from streamer.local_broker.broker import LocalKafka
from streamer.streaming.messages import RawFrame
from streamer.streaming.topics import create_topics
from tests.kafka_support import read_topic, start_cli, unique_settings, wait_for

pytestmark = pytest.mark.kafka
GRACE = 3.0


def _states(state_file: Path) -> dict[str, str]:
    """The last state of each file of the watcher's state file."""
    if not state_file.exists():
        return {}
    states = {}
    for line in state_file.read_text().splitlines():
        entry = json.loads(line)
        states[entry["name"]] = entry.get("state", "published")
    return states


def _frame(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fits.PrimaryHDU(rng.normal(100.0, 5.0, (64, 64)).astype(np.float32)).writeto(path)


def test_sigterm_during_an_outage_exits_within_the_grace_and_keeps_the_frame(tmp_path):
    broker = LocalKafka(tmp_path / "broker")
    address = broker.start()
    settings = unique_settings(address, partitions=1, shutdown_grace_seconds=GRACE)
    folder = tmp_path / "camera"
    folder.mkdir()
    state_file = folder / ".streamer-published.jsonl"
    logs = [tmp_path / "camera-1.log", tmp_path / "camera-2.log"]
    camera = None
    try:
        asyncio.run(create_topics(settings))
        watch = ("camera", "--watch", str(folder), "--settle", "0.3", "--camera-id", "halt")
        camera = start_cli(settings, *watch, log=logs[0])
        _frame(folder / "first.fits", 1)
        wait_for(lambda: _states(state_file).get("first.fits") == "published", 120,
                  "the first frame to be published")
        broker.stop()
        wait_for(lambda: not broker.running(), 60, "the broker to go")
        _frame(folder / "second.fits", 2)
        wait_for(lambda: _states(state_file).get("second.fits") == "pending", 60,
                  "the second frame to be in flight")
        time.sleep(2.0)  # well into the outage's retries
        told = time.monotonic()
        camera.send_signal(signal.SIGTERM)
        code = camera.wait(GRACE + 30)
        took = time.monotonic() - told
        text = logs[0].read_text()
        assert code == 0, text[-3000:]
        assert took < GRACE + 20, f"exited {took:.1f} s after SIGTERM"
        assert "SIGTERM received" in text and "second.fits stays pending" in text, text[-3000:]
        assert _states(state_file)["second.fits"] == "pending"

        assert broker.start() == address
        camera = start_cli(settings, *watch, log=logs[1])
        wait_for(lambda: _states(state_file).get("second.fits") == "published", 120,
                  "the pending frame to be published at the next start")
        camera.send_signal(signal.SIGTERM)
        assert camera.wait(60) == 0, logs[1].read_text()[-3000:]
        raw = asyncio.run(read_topic(settings, settings.topics.raw, expect=2))
    finally:
        if camera is not None and camera.poll() is None:
            camera.kill()
        broker.stop()
    names = sorted(RawFrame.model_validate_json(item.envelope_json).source_name for item in raw)
    assert names == ["first.fits", "second.fits"]  # each once
