"""The camera's event loop keeps the producer alive while big files are read, decoded, hashed
and split: the disk and whole-frame work runs in threads (one 72 MB frame stalled the loop for
about half a second when it ran on the loop)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from astropy.io import fits

from streamer.streaming.camera import CameraPublisher
from streamer.streaming.watched_folder import watch_directory
from streamer.streaming.topics import create_topics
from tests.kafka_support import read_topic, unique_settings

pytestmark = pytest.mark.kafka
STALL_LIMIT = 0.15  # seconds; here 30 ms in threads, 250–530 ms when this work ran on the loop


def test_watching_big_files_never_stalls_the_event_loop(kafka_bootstrap, tmp_path):
    settings = unique_settings(kafka_bootstrap, compression="none", max_frame_bytes=1 << 30)
    rng = np.random.default_rng(3)
    for index in range(2):
        fits.writeto(tmp_path / f"big{index}.fits",
                     rng.integers(0, 60000, (6144, 6144), dtype=np.uint16))

    async def scenario() -> tuple[float, int]:
        await create_topics(settings)
        worst, stop = 0.0, asyncio.Event()

        async def heartbeat() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                worst, last = max(worst, now - last - 0.005), now

        async with CameraPublisher(settings, "bigcam") as camera:
            beats = asyncio.create_task(heartbeat())
            watcher = asyncio.create_task(watch_directory(camera, tmp_path, stop,
                                                          settle_seconds=0.2))
            deadline = time.monotonic() + 180
            while camera.published < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            await watcher
            await beats
            return worst, camera.published

    worst, published = asyncio.run(scenario())
    assert published == 2
    assert len(asyncio.run(read_topic(settings, settings.topics.raw, expect=2, settle=0))) == 2
    assert worst < STALL_LIMIT, f"the event loop stalled for {worst * 1000:.0f} ms"
