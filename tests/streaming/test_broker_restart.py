"""The broker goes away mid-stream — stopped or killed, for a few seconds or well past the
group's session timeout — and comes back on the same data and address: the camera, the worker
and the sink ride through by themselves, every frame is restored and archived exactly once,
and the logs say so in a few lines instead of thousands."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import pytest

from streamer.local_broker.broker import LocalKafka
from streamer.streaming.messages import RestoredFrame
from streamer.streaming.topics import create_topics
from tests.kafka_support import read_topic, start_cli, unique_settings, wait_for

pytestmark = pytest.mark.kafka
FRAMES = 30


def _noisy_lines(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if " ERROR " in line or " WARNING " in line)


@pytest.mark.parametrize("how, down", [("SIGTERM", 5.0), ("SIGKILL", 25.0)],
                         ids=["sigterm-5s", "sigkill-25s-past-session-timeout"])
def test_every_process_rides_through_a_broker_restart(tmp_path, how, down):
    broker = LocalKafka(tmp_path / "broker")
    address = broker.start()
    settings = unique_settings(address, partitions=2)
    archive = tmp_path / "archive"
    logs = {name: tmp_path / f"{name}.log" for name in ("camera", "worker", "sink")}
    processes = {}
    try:
        asyncio.run(create_topics(settings))
        processes["worker"] = start_cli(settings, "worker", "--window", "7", "--iterations", "3",
                                        "--psf", "gaussian:fwhm=2", "--method", "dense",
                                        log=logs["worker"])
        processes["sink"] = start_cli(settings, "sink", "--out", str(archive), log=logs["sink"])
        processes["camera"] = start_cli(settings, "camera", "--simulate", "--count", str(FRAMES),
                                        "--size", "96", "--cadence", "0.5", "--blur",
                                        "gaussian:fwhm=2", log=logs["camera"])
        wait_for(lambda: len(list(archive.rglob("output/**/*.fits"))) >= 3, 120,
                  "the first frames to be archived")
        pid = broker._state()["pid"]
        if how == "SIGKILL":
            os.kill(pid, signal.SIGKILL)
        else:
            broker.stop()
        wait_for(lambda: not broker.running(), 60, "the broker to go")
        time.sleep(down)
        assert broker.start() == address  # same data, same address
        wait_for(lambda: len(list(archive.rglob("output/**/*.fits"))) >= FRAMES, 300,
                  f"all {FRAMES} frames to be archived")
        assert processes["camera"].wait(120) == 0, logs["camera"].read_text()[-3000:]
        for name in ("worker", "sink"):
            assert processes[name].poll() is None, f"{name} died: {logs[name].read_text()[-3000:]}"
            processes[name].send_signal(signal.SIGTERM)
            assert processes[name].wait(60) == 0, logs[name].read_text()[-3000:]
        restored = asyncio.run(read_topic(settings, settings.topics.restored, expect=FRAMES))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        broker.stop()
    counts = collections.Counter(RestoredFrame.model_validate_json(i.envelope_json).frame_id
                                 for i in restored)
    assert len(counts) == FRAMES and set(counts.values()) == {1}, counts
    assert len(list(archive.rglob("input/**/*.fits"))) == FRAMES
    noisy = {name: _noisy_lines(log) for name, log in logs.items()}
    print(f"broker {how}, down {down:g} s: warning/error lines per process {noisy}")
    for name, log in logs.items():  # one line per outage and state change, not thousands
        assert noisy[name] <= 25, (name, log.read_text()[-4000:])
