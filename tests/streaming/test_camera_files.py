"""Every file that appears in a watched folder is accounted for, on the real broker: frames
are published (gzipped ones too, and a slow copy once it is whole); an empty file, a
truncated FITS, a text file named ``.fits`` and a cube go to the dead-letter topic *from the
camera* with their reason and bytes (the path only above the size limit) and from there into
the archive; a directory and a dangling symlink get one log line each; a restart sends
nothing again."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging

import numpy as np
import pytest
from astropy.io import fits

from streamer.streaming.camera import CameraPublisher
from streamer.streaming.messages import DeadLetter, RawFrame
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from streamer.streaming.watched_folder import watch_directory
from tests.kafka_support import read_topic, unique_settings

pytestmark = pytest.mark.kafka
LETTER_LIMIT = 20_000  # bytes a camera dead letter carries: the cube is above it


def _fits_bytes(seed: int, shape=(64, 64)) -> bytes:
    data = np.random.default_rng(seed).normal(100.0, 5.0, shape).astype(np.float32)
    buffer = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buffer)
    return buffer.getvalue()


def test_every_file_is_published_or_dead_lettered_with_its_reason(kafka_bootstrap, tmp_path,
                                                                  caplog):
    settings = unique_settings(kafka_bootstrap, partitions=1, incomplete_file_seconds=2.0,
                               camera_dead_letter_bytes=LETTER_LIMIT)
    folder = tmp_path / "camera"
    folder.mkdir()
    good = _fits_bytes(1)
    files = {
        "good.fits": good,
        "zipped.fits.gz": gzip.compress(_fits_bytes(2)),
        "empty.fits": b"",
        "truncated.fits": good[: 2880 * 2],
        "notes.fits": b"this is not a FITS file\n" * 10,
        "cube.fits": _fits_bytes(3, (4, 64, 64)),
    }
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    assert len(files["cube.fits"]) > settings.camera_dead_letter_bytes
    (folder / "directory.fits").mkdir()
    (folder / "dangling.fits").symlink_to(folder / "missing.fits")
    slow = _fits_bytes(4)

    async def slow_copy() -> None:
        # Half now, a pause longer than the settle time, then the rest: it must wait, not
        # be dead-lettered as truncated.
        with open(folder / "slow.fits", "wb") as out:
            out.write(slow[: len(slow) // 2])
        await asyncio.sleep(1.2)
        with open(folder / "slow.fits", "ab") as out:
            out.write(slow[len(slow) // 2:])

    async def watch(seconds: float, during=None) -> int:
        stop = asyncio.Event()
        async with CameraPublisher(settings, "edge") as camera:
            task = asyncio.create_task(watch_directory(camera, folder, stop, settle_seconds=0.3,
                                                       poll_seconds=0.1))
            if during is not None:
                await during()
            await asyncio.sleep(seconds)
            stop.set()
            await task
            return camera.published

    async def archive(out) -> Sink:
        sink = Sink(settings, out, group_id="archive-edge")
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        for _ in range(200):
            if len(sink.dead_letters) >= 4 and sink.metrics.frames_archived.labels(
                    "input")._value.get() >= 3:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task
        return sink

    async def scenario():
        await create_topics(settings)
        with caplog.at_level(logging.INFO, logger="streamer.streaming.watched_folder"):
            first = await watch(5.0, slow_copy)
        notes = [r.getMessage() for r in caplog.records]
        second = await watch(1.5)  # a restart: nothing goes out again
        raw = await read_topic(settings, settings.topics.raw, expect=3, settle=1)
        letters = await read_topic(settings, settings.topics.dead_letter, expect=4, settle=1)
        sink = await archive(tmp_path / "archive")
        return first, second, raw, letters, sink, notes

    first, second, raw, letters, sink, notes = asyncio.run(scenario())
    assert (first, second) == (3, 0)
    published = {RawFrame.model_validate_json(i.envelope_json).source_name: i for i in raw}
    assert sorted(published) == ["good.fits", "slow.fits", "zipped.fits.gz"]
    assert published["slow.fits"].payload == slow  # whole, not the first half

    by_name = {}
    for item in letters:
        letter = DeadLetter.model_validate_json(item.envelope_json)
        by_name[letter.source_name] = (letter, item.payload)
    assert sorted(by_name) == ["cube.fits", "empty.fits", "notes.fits", "truncated.fits"]
    for name, (letter, payload) in by_name.items():
        assert letter.origin == "camera" and letter.camera_id == "edge", name
        assert letter.worker_id == "camera edge" and letter.source_partition is None
        assert letter.source_path == str(folder / name)
        if name == "cube.fits":  # above the limit: the path, not the bytes
            assert letter.payload_omitted and payload == b""
            assert letter.payload_bytes == len(files[name])
        else:
            assert not letter.payload_omitted and payload == files[name], name
    assert "empty file" in by_name["empty.fits"][0].reason
    assert by_name["cube.fits"][0].error_type == "FrameShapeError"
    assert "not a readable FITS image" in by_name["notes.fits"][0].reason
    assert "not a readable FITS image" in by_name["truncated.fits"][0].reason

    assert sum("directory.fits is a directory" in m for m in notes) == 1
    assert sum("dangling.fits is a symlink" in m and "does not exist" in m for m in notes) == 1
    assert any("slow.fits does not read as a FITS image yet" in m for m in notes)
    assert not any("not a frame" in m and "slow.fits" in m for m in notes)
    states = [json.loads(line) for line in
              (folder / ".streamer-published.jsonl").read_text().splitlines()]
    assert sorted(e["name"] for e in states if e["state"] == "dead-letter") == sorted(by_name)

    # The archive files them apart, with the reason, beside the restored nights.
    manifests = {m["dead_letter"]["source_name"]: m for m in sink.archive.manifests()
                 if "dead_letter" in m}
    assert sorted(manifests) == sorted(by_name)
    assert all(m["status"] == "dead-letter" and m["reason"] for m in manifests.values())
    kept = sorted(p.name for p in (tmp_path / "archive" / "deadletter").rglob("*")
                  if p.is_file() and not p.name.endswith(".json"))
    assert kept == ["empty.bin", "notes.bin", "truncated.fits"]  # the cube stayed at the camera
