"""The sink waits out a full, then a read-only, archive disk, on the real broker and a real
small filesystem (a tmpfs filled, then remounted read-only): one log line, ``streamer_archive_writable`` at 0, nothing committed, no partial
file left; once space is freed it resumes by itself and archives every frame once. Partial
files of an earlier crash are removed at start; ``--group-id`` gives a second archive every
frame."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamer.streaming.camera import CameraPublisher
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from tests.kafka_support import start_cli, unique_settings, wait_for

pytestmark = pytest.mark.kafka
FRAMES = 4


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a disk that really fills (root and mount rights needed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the fault needs a "
                    "real small filesystem")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _mount(disk: Path, options: str) -> None:
    subprocess.run(["mount", "-o", options, str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk``."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(descriptor)
    return filler


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def test_a_full_disk_is_waited_out_and_nothing_is_lost(kafka_bootstrap, small_disk, caplog):
    settings = unique_settings(kafka_bootstrap, partitions=1)
    archive = small_disk / "archive"
    (archive / "input").mkdir(parents=True)
    crashed = archive / "input" / ".left-by-a-crash.fits.tmp"
    crashed.write_bytes(b"partial")
    rng = np.random.default_rng(0)

    async def scenario():
        await create_topics(settings)
        async with CameraPublisher(settings, "disk") as camera:
            for index in range(FRAMES):
                await camera.publish_image(rng.normal(100, 5, (64, 64)).astype(np.float32),
                                           frame_id=f"disk:{index}",
                                           source_name=f"frame{index}.fits")
        sink = Sink(settings, archive, group_id="archive-disk")
        assert not crashed.exists()  # removed at start
        filler = _fill(small_disk)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        try:
            for _ in range(150):
                if sink.storage_fault is not None and sink.storage_fault.tries >= 3:
                    break
                await asyncio.sleep(0.1)
            assert sink.storage_fault is not None and sink.storage_fault.tries >= 3
            assert sink.metrics.archive_writable._value.get() == 0
            assert sink.metrics.archive_write_errors.labels("ENOSPC")._value.get() >= 3
            assert await sink.consumer.committed(_partition(settings)) is None
            assert _leftovers(archive) == []
            inputs_during = sorted(p.name for p in (archive / "input").rglob("*.fits"))
            filler.unlink()  # space again
            for _ in range(300):
                if sink.metrics.archive_writable._value.get() == 1 and len(
                        list((archive / "input").rglob("*.fits"))) == FRAMES:
                    break
                await asyncio.sleep(0.1)
            committed = await sink.consumer.committed(_partition(settings))
            # The disk turns read-only: the next frame waits, then lands once it is writable.
            _mount(small_disk, "remount,ro")
            async with CameraPublisher(settings, "disk") as camera:
                await camera.publish_image(rng.normal(100, 5, (64, 64)).astype(np.float32),
                                           frame_id="disk:late", source_name="late.fits")
            for _ in range(150):
                if sink.metrics.archive_write_errors.labels("EROFS")._value.get() >= 1:
                    break
                await asyncio.sleep(0.1)
            assert sink.metrics.archive_writable._value.get() == 0
            _mount(small_disk, "remount,rw")
            for _ in range(300):
                if (sink.metrics.archive_writable._value.get() == 1
                        and list((archive / "input").rglob("late.fits"))):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
        return sink, inputs_during, committed

    with caplog.at_level(logging.INFO, logger="streamer.streaming.sink"):
        sink, inputs_during, committed = asyncio.run(scenario())
    assert len(inputs_during) < FRAMES
    names = sorted(p.name for p in (archive / "input").rglob("*.fits"))
    assert names == [f"frame{i}.fits" for i in range(FRAMES)] + ["late.fits"]
    # One record per small frame, each in its own transaction (its commit marker takes the
    # next offset): committed just past the last frame's record once it is archived.
    assert committed == 2 * FRAMES - 1
    assert sink.metrics.archive_writable._value.get() == 1
    assert _leftovers(archive) == []
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot write the archive (ENOSPC" in m for m in lines) == 1, lines
    assert sum("cannot write the archive (EROFS" in m for m in lines) == 1, lines
    assert sum("writable again" in m for m in lines) == 2
    assert any("removed 1 partial file" in m for m in lines)


def _partition(settings):
    from aiokafka import TopicPartition

    return TopicPartition(settings.topics.raw, 0)


def test_a_second_archive_with_its_own_group_gets_every_frame(kafka_bootstrap, tmp_path):
    settings = unique_settings(kafka_bootstrap, partitions=1)
    rng = np.random.default_rng(1)

    async def first_archive() -> None:
        await create_topics(settings)
        async with CameraPublisher(settings, "two") as camera:
            for index in range(FRAMES):
                await camera.publish_image(rng.normal(100, 5, (32, 32)).astype(np.float32),
                                           frame_id=f"two:{index}", source_name=f"f{index}.fits")
        sink = Sink(settings, tmp_path / "first", group_id=f"first-{settings.group_id}")
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        for _ in range(300):
            if len(list((tmp_path / "first" / "input").rglob("*.fits"))) == FRAMES:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(first_archive())
    second = tmp_path / "second"
    process = start_cli(settings, "sink", "--out", str(second), "--group-id", "second-archive",
                        log=tmp_path / "second.log")
    try:
        wait_for(lambda: len(list((second / "input").rglob("*.fits"))) == FRAMES, 90,
                 "the second archive to hold every frame")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "second.log").read_text()
