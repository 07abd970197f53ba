"""Warming up on the stream's newest frame before joining (streamer.worker.stream_warm_up), on
the real broker: the newest whole frame of chunked frames is found, an empty topic gives
none, and a worker restores the newest frame before it is given partitions."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamer.imaging.psf import PSFSpec
from streamer.streaming.camera import CameraPublisher, simulate
from streamer.streaming.codec import parse_envelope
from streamer.streaming.topics import create_topics
from streamer.worker.stream_warm_up import newest_frame
from tests.kafka_support import one_frame_worker_log, unique_settings

pytestmark = pytest.mark.kafka
PSF = PSFSpec(kind="gaussian", fwhm=2.5)


def test_the_newest_whole_frame_is_read_and_an_empty_topic_gives_none(kafka_bootstrap):
    settings = unique_settings(kafka_bootstrap, partitions=2, chunk_bytes=64 * 1024)

    async def scenario():
        await create_topics(settings)
        empty = await newest_frame(settings, settings.topics.raw)
        async with CameraPublisher(settings, "newest") as camera:
            published = await simulate(camera, count=3, size=256, cadence=0.0, psf=PSF)
        return empty, published, await newest_frame(settings, settings.topics.raw)

    empty, published, newest = asyncio.run(scenario())
    assert empty is None
    assert published[-1].chunk_count >= 2  # the frame spans records: it had to be assembled
    envelope = parse_envelope(newest.envelope_json)
    # Keyed by camera, all three frames share a partition; the newest is the last published.
    assert envelope.frame_id == published[-1].frame_id
    assert len(newest.payload) == published[-1].payload_bytes


def test_a_worker_restores_the_streams_newest_frame_before_it_joins(kafka_bootstrap, caplog):
    settings = unique_settings(kafka_bootstrap, partitions=1)
    assert settings.warm_up_from_stream and not settings.warm_up  # the defaults
    worker, messages = one_frame_worker_log(settings, "stream1", caplog)
    ready = next(i for i, m in enumerate(messages) if ": ready: kernels built" in m)
    assigned = next(i for i, m in enumerate(messages) if ": assigned partitions" in m)
    assert ready < assigned
    assert "96x96:uint16 (camera stream1's newest frame)" in messages[ready]
    # Reading it committed nothing: the frame itself is still given to the worker, once.
    assert worker.restored == 1


def test_a_worker_stopped_while_warming_up_leaves_without_joining(kafka_bootstrap, caplog,
                                                                  monkeypatch):
    """SIGTERM while the newest frame is being read (a read made to hang here, as on a
    broker that answers slowly): the worker leaves at once and never joins the group."""
    import time

    import streamer.worker.worker as worker_module
    from streamer.worker.worker import Worker

    async def hanging(*_args, **_kwargs):
        await asyncio.sleep(3600)

    monkeypatch.setattr(worker_module, "newest_frame", hanging)
    settings = unique_settings(kafka_bootstrap, partitions=1)

    async def scenario() -> float:
        await create_topics(settings)
        worker, stop = Worker(settings), asyncio.Event()
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        await asyncio.wait_for(worker.run(stop), 60)
        return time.monotonic() - started

    with caplog.at_level(logging.INFO, logger="streamer.worker.worker"):
        seconds = asyncio.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert not any(": assigned partitions" in m for m in messages)
    assert seconds < 10


def test_a_warm_up_that_died_on_a_frame_does_not_try_it_again(tmp_path):
    """The guard file: removed after a warm-up that finished; left by one that died (here
    written by hand, as a killed process leaves it), it makes the next start skip that frame
    rather than die on it again — and only that frame."""
    from streamer.operations.worker_budget import _payload
    from streamer.restoration.restorer import Restorer
    from streamer.settings import RestorationSettings
    from streamer.streaming.codec import FrameLimits
    from streamer.streaming.framing import AssembledFrame
    from streamer.errors import WarmUpCrashedError
    from streamer.worker.stream_warm_up import warm_on_frame

    restorer = Restorer(RestorationSettings(sources=False))
    limits = FrameLimits(1 << 24, 1 << 28)
    frames = []
    for seed in (1, 2):
        payload, raw = _payload(96, "uint16", seed)
        frames.append(AssembledFrame(0, [seed], raw.model_dump_json().encode(), payload, {}))
    guard = tmp_path / "warm-up-frame-test"
    assert warm_on_frame(restorer, frames[0], limits, guard).startswith("96x96:uint16")
    assert not guard.exists()
    guard.write_text("budget-96-uint16-1 (partition 0, offset 1)")  # died on frame 1
    with pytest.raises(WarmUpCrashedError, match="never finished"):
        warm_on_frame(restorer, frames[0], limits, guard)
    warm_on_frame(restorer, frames[1], limits, guard)  # another frame is warmed on
    assert not guard.exists()
