"""Helpers for the tests that talk to the real local broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.streaming.framing import PartitionAssembler, headers_dict
from streamer.streaming.kafka_clients import record_limit
from streamer.imaging.psf import PSFSpec
from streamer.settings import RestorationSettings
from streamer.settings import KafkaSettings, StreamerSettings, TopicSettings

FAST_RESTORATION = RestorationSettings(window=7, psf=PSFSpec(kind="gaussian", fwhm=2.0),
                                       iterations=3, method="dense", stop_at_noise=False)


def unique_settings(bootstrap: str, partitions: int = 3, **changes) -> StreamerSettings:
    """Settings with topics and groups of their own, so tests never see each other's data."""
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(raw=f"raw-{tag}", restored=f"restored-{tag}", metrics=f"metrics-{tag}",
                           sources=f"sources-{tag}",
                           dead_letter=f"dead-{tag}", partitions=partitions)
    values = dict(kafka=KafkaSettings(bootstrap_servers=bootstrap), topics=topics,
                  restoration=FAST_RESTORATION, group_id=f"workers-{tag}",
                  chunk_bytes=256 * 1024)
    values.update(changes)
    return StreamerSettings(**values)


def wait_for(condition, timeout: float, what: str, poll: float = 0.3) -> None:
    """Poll ``condition()`` until it holds; fail the test after ``timeout`` seconds."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def settings_env(settings: StreamerSettings) -> dict[str, str]:
    """The environment that gives a subprocess the same settings."""
    # Several processes share this host: each serves its metrics on a free port.
    return {**settings.child_environment(os.environ), "STREAMER_METRICS_ADDRESS": "127.0.0.1:0"}


def start_cli(settings: StreamerSettings, *args: str, log: Path) -> subprocess.Popen:
    """Start ``streamer ARGS`` as a separate process (output to ``log``); the SASL password,
    which settings never pass on, goes in the environment as an operator would set it."""
    handle = open(log, "ab")
    env = settings_env(settings)
    if settings.kafka.sasl_password is not None:
        env["STREAMER_KAFKA__SASL_PASSWORD"] = settings.kafka.sasl_password.get_secret_value()
    return subprocess.Popen([sys.executable, "-m", "streamer", *args],
                            env=env, stdout=handle, stderr=subprocess.STDOUT)


async def read_topic(settings: StreamerSettings, topic: str, *, expect: int, timeout: float = 120,
                     settle: float = 2.0, frames: bool = True) -> list:
    """Everything committed in ``topic`` (read_committed), as assembled frames or raw records;
    waits until ``expect`` items are in, then ``settle`` more seconds for any extra."""
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_options(), group_id=None,
        isolation_level="read_committed", auto_offset_reset="earliest", enable_auto_commit=False,
        max_partition_fetch_bytes=record_limit(settings), fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions or ())])
        assemblers: dict[int, PartitionAssembler] = {}
        items: list = []
        settled_at = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, records in batches.items():
                if not frames:
                    items.extend(records)
                    continue
                assembler = assemblers.setdefault(tp.partition, PartitionAssembler(tp.partition, 1 << 31))
                for record in records:
                    assembler.add(record.offset, record.value, headers_dict(record.headers))
                for item in assembler.ready():
                    assembler.finish(item)
                    items.append(item)
            if len(items) >= expect:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    break
        return items
    finally:
        await consumer.stop()


def one_frame_worker_log(settings: StreamerSettings, camera_id: str, caplog):
    """Publish one 96×96 frame as ``camera_id``, run a worker until it has handled it; the
    worker and its log lines (INFO and up) in order."""
    import logging

    from streamer.streaming.camera import CameraPublisher, simulate
    from streamer.streaming.topics import create_topics
    from streamer.worker.worker import Worker

    async def scenario() -> Worker:
        await create_topics(settings)
        async with CameraPublisher(settings, camera_id) as camera:
            await simulate(camera, count=1, size=96, cadence=0.0,
                           psf=PSFSpec(kind="gaussian", fwhm=2.5))
        worker = Worker(settings)
        await asyncio.wait_for(worker.run(asyncio.Event(), max_frames=1), 180)
        return worker

    with caplog.at_level(logging.INFO, logger="streamer.worker.worker"):
        worker = asyncio.run(scenario())
    return worker, [record.getMessage() for record in caplog.records]
