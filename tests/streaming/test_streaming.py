"""The streaming system on a real Kafka broker: camera → raw topic → workers → restored,
metrics and sources topics (exactly once) → sink; dead letters; SIGKILL recovery; two workers;
big frames."""

from __future__ import annotations

import asyncio
import io
import collections
import json
import datetime as dt
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from streamer.streaming.camera import CameraPublisher, simulate
from streamer.streaming.watched_folder import watch_directory
from streamer.imaging.fits_io import read_image_bytes
from streamer.errors import FrameTooLargeError
from streamer.streaming.framing import frame_records, payload_digest
from streamer.streaming.kafka_clients import transactional_producer
from streamer.streaming.messages import (DeadLetter, FrameMetrics, RawFrame, RestoredFrame,
                                        SourceCatalog)
from streamer.imaging.psf import PSFSpec
from streamer.restoration.restorer import Restorer
from streamer.streaming.sink import Archive, Sink
from streamer.streaming.topics import create_topics
from streamer.worker.worker import Worker
from tests.kafka_support import read_topic, start_cli, unique_settings

pytestmark = pytest.mark.kafka
SEEING = PSFSpec(kind="gaussian", fwhm=2.0)


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    from tests.kafka_support import FAST_RESTORATION

    return Restorer(FAST_RESTORATION)


def run(coroutine):
    return asyncio.run(coroutine)


async def _publish(settings, count, size=96, camera_id="cam1", cadence=0.0):
    async with CameraPublisher(settings, camera_id) as camera:
        return await simulate(camera, count=count, size=size, cadence=cadence, psf=SEEING)


async def _worker_until(settings, restorer, frames: int, timeout: float = 120):
    worker = Worker(settings, restorer)
    stop = asyncio.Event()
    await asyncio.wait_for(worker.run(stop, max_frames=frames), timeout)
    return worker


def test_frames_flow_and_equal_the_offline_restoration(kafka_bootstrap, restorer):
    settings = unique_settings(kafka_bootstrap)

    async def scenario():
        await create_topics(settings)
        published = await _publish(settings, 5)
        worker = await _worker_until(settings, restorer, 5)
        restored = await read_topic(settings, settings.topics.restored, expect=5)
        metrics = await read_topic(settings, settings.topics.metrics, expect=5, frames=False)
        raw = await read_topic(settings, settings.topics.raw, expect=5)
        return published, worker, restored, metrics, raw

    published, worker, restored, metrics, raw = run(scenario())
    assert worker.restored == 5 and worker.failed == 0
    assert sorted(RestoredFrame.model_validate_json(i.envelope_json).frame_id for i in restored) == \
        sorted(p.frame_id for p in published)
    inputs = {RawFrame.model_validate_json(i.envelope_json).frame_id: i.payload for i in raw}
    for item in restored:
        envelope = RestoredFrame.model_validate_json(item.envelope_json)
        assert payload_digest(item.payload) == envelope.payload_digest
        image = read_image_bytes(item.payload)
        offline = restorer.restore(read_image_bytes(inputs[envelope.frame_id]).data).data
        np.testing.assert_array_equal(image.data, offline)
        assert image.header["STRMFID"] == envelope.frame_id[-60:]
        assert image.header["SIMPSF"].startswith("gaussian")  # the camera's header travels
    records = [FrameMetrics.model_validate_json(r.value) for r in metrics]
    assert sorted(m.frame_id for m in records) == sorted(p.frame_id for p in published)
    for m in records:
        assert m.iterations == 3 and m.exposure_to_restored_seconds > 0
        assert abs(m.flux_out / m.flux_in - 1) < 0.01


def test_each_frame_is_restored_with_its_measured_psf(kafka_bootstrap):
    from streamer.settings import RestorationSettings

    auto = RestorationSettings(window=15, iterations=5)  # psf auto, the default
    settings = unique_settings(kafka_bootstrap, partitions=1, restoration=auto)
    seeing = PSFSpec(kind="moffat", fwhm=3.0, beta=3.0)

    async def scenario():
        await create_topics(settings)
        async with CameraPublisher(settings, "camP") as camera:
            await simulate(camera, count=3, size=384, cadence=0.0, psf=seeing)
        worker = Worker(settings)
        await asyncio.wait_for(worker.run(asyncio.Event(), max_frames=3), 180)
        restored = await read_topic(settings, settings.topics.restored, expect=3)
        metrics = await read_topic(settings, settings.topics.metrics, expect=3, frames=False)
        return worker, restored, metrics

    worker, restored, metrics = run(scenario())
    for m in (FrameMetrics.model_validate_json(r.value) for r in metrics):
        assert m.psf is not None and m.psf.method in ("empirical", "previous")
        assert m.psf.fwhm == pytest.approx(3.0, rel=0.1) and not m.psf.fallback
        assert m.quality.moat_depth is not None
        assert m.stopped_by in ("iterations", "discrepancy", "plateau")
        assert {"decode", "psf", "encode", "output_quality"} <= set(m.stage_seconds)
        # ... and the catalogue's detection maps, made on the device after RL
        assert set(m.device_seconds) == {"upload", "median", "richardson_lucy", "download",
                                         "detection"}
        assert m.transfer_bytes["uploaded"] == 384 * 384 * 2  # the uint16 frame, once
    for item in restored:
        envelope = RestoredFrame.model_validate_json(item.envelope_json)
        assert envelope.psf == "auto" and envelope.psf_summary.fwhm == pytest.approx(3.0, rel=0.1)
        with fits.open(io.BytesIO(item.payload)) as hdus:
            assert hdus["PSF"].header["PSFFWHM"] == pytest.approx(envelope.psf_summary.fwhm,
                                                                  rel=1e-3)
            # Every restored frame carries its data quality and its noise map, and says so.
            assert [hdu.name for hdu in hdus[1:]] == envelope.extensions == ["PSF", "DQ", "ERR"]
            error = hdus["ERR"].data
            assert error.shape == hdus[0].data.shape and np.nanmin(error) > 0
    gauge = worker.metrics.registry.get_sample_value("streamer_psf_fwhm_pixels",
                                                     {"camera": "camP"})
    assert gauge == pytest.approx(3.0, rel=0.1)
    assert worker.metrics.registry.get_sample_value(
        "streamer_psf_fallbacks_total", {"camera": "camP"}) in (None, 0.0)
    assert worker.metrics.registry.get_sample_value("streamer_device_busy_seconds_total") > 0
    assert worker.metrics.registry.get_sample_value(
        "streamer_device_transfer_bytes_total", {"direction": "up"}) == 3 * 384 * 384 * 2


def _bad_records(settings):
    good = RawFrame.model_validate_json(
        RawFrame(frame_id="x", camera_id="cam9", exposure_start=dt.datetime.now(dt.timezone.utc),
                 exposure_seconds=1, shape=(8, 8), dtype="uint16", encoding="fits",
                 payload_bytes=3, payload_digest=payload_digest(b"abc"), chunk_count=1,
                 published_at=dt.datetime.now(dt.timezone.utc)).model_dump_json())
    not_fits = good.model_copy(update={"frame_id": "not-fits"})
    wrong_checksum = good.model_copy(update={"frame_id": "bad-checksum",
                                             "payload_digest": "blake3:" + "f" * 64})
    cases = {
        "no headers": ([(b"just some bytes", [])], "ChunkError"),
        "checksum": (frame_records(wrong_checksum.model_dump_json().encode(), "raw", b"abc", 1000),
                     "ChecksumError"),
        "not FITS": (frame_records(not_fits.model_dump_json().encode(), "raw", b"abc", 1000),
                     "FrameDecodeError"),
        "schema": (frame_records(b'{"frame_id": "half", "camera_id": "cam9"}', "raw", b"abc", 1000),
                   "EnvelopeError"),
    }
    return cases


def test_bad_messages_go_to_dead_letters_and_good_ones_flow(kafka_bootstrap, restorer):
    settings = unique_settings(kafka_bootstrap, partitions=1)
    cases = _bad_records(settings)

    async def scenario():
        await create_topics(settings)
        await _publish(settings, 2)
        producer = transactional_producer(settings, "test-injector")
        await producer.start()
        async with producer.transaction():
            for records, _ in cases.values():
                for value, headers in records:
                    await producer.send(settings.topics.raw, value, key=b"cam9", headers=headers)
        await producer.stop()
        await _publish(settings, 2, camera_id="cam2")
        worker = await _worker_until(settings, restorer, 8)
        dead = await read_topic(settings, settings.topics.dead_letter, expect=4)
        restored = await read_topic(settings, settings.topics.restored, expect=4)
        return worker, dead, restored

    worker, dead, restored = run(scenario())
    assert worker.restored == 4 and worker.failed == 4
    assert len(restored) == 4
    letters = [(DeadLetter.model_validate_json(i.envelope_json), i.payload) for i in dead]
    by_type = {letter.error_type: (letter, payload) for letter, payload in letters}
    assert set(by_type) == {error for _, error in cases.values()}
    for records, error in cases.values():
        letter, payload = by_type[error]
        original = b"".join(value for value, _ in records)
        assert payload == original, error  # the original bytes are kept
        assert letter.payload_digest == payload_digest(original) and letter.reason
        assert letter.source_topic == settings.topics.raw and letter.source_offsets



def test_frames_waiting_at_assignment_are_counted_first_and_committed_once(
        kafka_bootstrap, restorer, monkeypatch):
    """Records can reach the fetch stage while the partition is still being acquired. The
    first frame's attempt must still be the one counted, and the attempt marker's transaction
    must never overlap a frame's transaction on the same producer: aiokafka asserts on a
    transaction begun inside another, which once crashed the worker in CI."""
    import streamer.worker.attempts as attempts_module
    import streamer.worker.worker as worker_module

    settings = unique_settings(kafka_bootstrap, partitions=1)
    real_recorded, real_marker = worker_module.recorded_attempts, attempts_module.marker
    marked: list[int] = []

    async def slow_recorded(*args, **kwargs):
        await asyncio.sleep(3.0)  # the fetch stage has the waiting frames by now
        return await real_recorded(*args, **kwargs)

    def spy_marker(offset, attempt):
        marked.append(offset)
        return real_marker(offset, attempt)

    monkeypatch.setattr(worker_module, "recorded_attempts", slow_recorded)
    monkeypatch.setattr(attempts_module, "marker", spy_marker)

    async def scenario():
        await create_topics(settings)
        await _publish(settings, 4)
        worker = await _worker_until(settings, restorer, 4)
        restored = await read_topic(settings, settings.topics.restored, expect=4)
        return worker, restored

    worker, restored = run(scenario())
    assert worker.restored == 4 and worker.failed == 0
    assert set(_count_by_frame(restored).values()) == {1} and len(restored) == 4
    assert marked == [0]  # the partition's first frame, once


def test_a_producer_that_cannot_start_at_assignment_is_retried(kafka_bootstrap, restorer,
                                                                 monkeypatch, caplog):
    """The broker away just when a partition is assigned: its producer cannot start. The
    worker retries (one log line) instead of leaving the partition without a producer, which
    would hold every frame of it forever."""
    import streamer.streaming.publisher as publisher_module

    settings = unique_settings(kafka_bootstrap, partitions=1)
    real_producer = publisher_module.transactional_producer
    made: list[str] = []

    def first_one_unreachable(options, transactional_id):
        made.append(transactional_id)
        if len(made) == 1:  # a closed port: the start fails as with the broker down
            kafka = options.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9"})
            options = options.model_copy(update={"kafka": kafka})
        return real_producer(options, transactional_id)

    async def scenario():
        await create_topics(settings)
        await _publish(settings, 2)
        # From here on (the worker's producers; the camera is done), the first one fails.
        monkeypatch.setattr(publisher_module, "transactional_producer", first_one_unreachable)
        worker = await _worker_until(settings, restorer, 2)
        restored = await read_topic(settings, settings.topics.restored, expect=2)
        return worker, restored

    with caplog.at_level("WARNING", logger="streamer.streaming.publisher"):
        worker, restored = run(scenario())
    assert worker.restored == 2 and len(restored) == 2
    assert len(made) >= 2
    retries = [r for r in caplog.records if "cannot start the producer" in r.getMessage()]
    assert len(retries) == 1

def _count_by_frame(items) -> collections.Counter:
    return collections.Counter(RestoredFrame.model_validate_json(i.envelope_json).frame_id for i in items)


def test_sigkill_mid_stream_loses_and_duplicates_nothing(kafka_bootstrap, tmp_path):
    settings = unique_settings(kafka_bootstrap, partitions=2)
    frames = 24

    async def publish():
        await create_topics(settings)
        published = []
        for camera in ("camA", "camB"):  # two keys: both partitions carry frames
            published += await _publish(settings, frames // 2, camera_id=camera)
        return published

    published = run(publish())
    log = tmp_path / "worker.log"
    args = ("worker", "--window", "7", "--iterations", "3", "--psf", "gaussian:fwhm=2",
            "--method", "dense", "--worker-id", "victim")
    victim = start_cli(settings, *args, log=log)
    try:
        # Kill it after some, not all, frames are committed downstream.
        seen = run(read_topic(settings, settings.topics.restored, expect=4, settle=0, timeout=120))
        assert 4 <= len(seen) < frames, "the victim should be mid-stream"
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        # The victim may commit a few more frames between the read above and the kill, so
        # the restarted worker runs until every frame is downstream, not for a fixed count.
        survivor = start_cli(settings, *args, log=log)
        restored = run(read_topic(settings, settings.topics.restored, expect=frames, settle=4,
                                  timeout=300))
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(60) == 0
    finally:
        for process in (victim, locals().get("survivor")):
            if process is not None and process.poll() is None:
                process.kill()
    metrics = run(read_topic(settings, settings.topics.metrics, expect=frames, frames=False, settle=1))
    counts = _count_by_frame(restored)
    assert set(counts) == {p.frame_id for p in published}, log.read_text()[-3000:]
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
    metric_counts = collections.Counter(FrameMetrics.model_validate_json(r.value).frame_id for r in metrics)
    assert set(metric_counts.values()) == {1} and len(metric_counts) == frames
    # The catalogues ride in the same transactions: one per frame, none lost with the victim.
    catalogues = run(read_topic(settings, settings.topics.sources, expect=frames, settle=1))
    catalogue_counts = collections.Counter(
        SourceCatalog.model_validate_json(i.envelope_json).frame_id for i in catalogues)
    assert catalogue_counts == collections.Counter(set(counts))


def _assigned(log: Path) -> list[int] | None:
    """The partitions a worker process last logged as assigned to it."""
    marker = ": assigned partitions "
    lines = [l for l in log.read_text().splitlines() if marker in l] if log.exists() else []
    return json.loads(lines[-1].rsplit(marker, 1)[1]) if lines else None


def test_two_workers_share_the_partitions(kafka_bootstrap, tmp_path):
    settings = unique_settings(kafka_bootstrap, partitions=4)
    frames = 24
    run(create_topics(settings))
    logs = {name: tmp_path / f"{name}.log" for name in ("left", "right")}
    workers = [
        start_cli(settings, "-v", "worker", "--window", "7", "--iterations", "3", "--psf",
                  "gaussian:fwhm=2", "--method", "dense", "--worker-id", name, log=log)
        for name, log in logs.items()
    ]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # both members in the group, two partitions each
            if all(len(_assigned(log) or []) == 2 for log in logs.values()):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"workers did not share the partitions: { {n: _assigned(l) for n, l in logs.items()} }")

        async def publish():
            published = []
            for camera in ("c1", "c2", "c3", "c4", "c5", "c6"):
                published += await _publish(settings, frames // 6, camera_id=camera)
            return published

        published = run(publish())
        restored = run(read_topic(settings, settings.topics.restored, expect=frames, settle=3,
                                  timeout=300))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(60) for worker in workers]
    assert codes == [0, 0], "graceful shutdown on SIGTERM"
    counts = _count_by_frame(restored)
    assert set(counts) == {p.frame_id for p in published} and set(counts.values()) == {1}
    by_worker = collections.Counter(
        RestoredFrame.model_validate_json(i.envelope_json).worker_id for i in restored)
    assert set(by_worker) == {"left", "right"}, by_worker


@pytest.mark.parametrize("side", [4096, 8192])
def test_large_frames_end_to_end(kafka_bootstrap, side):
    from streamer.settings import RestorationSettings

    settings = unique_settings(
        kafka_bootstrap, partitions=1, chunk_bytes=4 << 20,
        restoration=RestorationSettings(window=3, psf=PSFSpec(kind="gaussian", fwhm=1.0),
                                        iterations=1, method="dense"))
    rng = np.random.default_rng(side)
    data = rng.integers(100, 4000, (side, side), dtype=np.uint16)

    async def scenario():
        await create_topics(settings)
        async with CameraPublisher(settings, "big") as camera:
            envelope = await camera.publish_image(data, exposure_seconds=1.0, frame_id=f"big-{side}")
        worker = await _worker_until(settings, None, 1, timeout=900)
        restored = await read_topic(settings, settings.topics.restored, expect=1, settle=0.5,
                                    timeout=600)
        return envelope, worker, restored

    envelope, worker, restored = run(scenario())
    assert envelope.payload_bytes >= side * side * 2 and envelope.chunk_count > 1
    assert worker.restored == 1 and len(restored) == 1
    image = read_image_bytes(restored[0].payload)
    assert image.data.shape == (side, side) and np.isfinite(image.data).all()


def test_frames_above_the_limit_are_refused(kafka_bootstrap):
    settings = unique_settings(kafka_bootstrap, max_frame_bytes=100_000)

    async def scenario():
        await create_topics(settings)
        async with CameraPublisher(settings, "cam1") as camera:
            with pytest.raises(FrameTooLargeError, match="max_frame_bytes"):
                await camera.publish_image(np.zeros((400, 400), np.uint16))

    run(scenario())


def test_sink_archives_with_matching_names_idempotently(kafka_bootstrap, restorer, tmp_path):
    settings = unique_settings(kafka_bootstrap)

    async def scenario(group: str):
        sink = Sink(settings, tmp_path / "archive", group_id=group)
        await sink.run(asyncio.Event(), expected_frames=3)
        return sink

    async def produce():
        await create_topics(settings)
        await _publish(settings, 3)
        await _worker_until(settings, restorer, 3)

    run(produce())
    run(scenario("sink-1"))
    first = {p: p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file()}
    run(scenario("sink-2"))  # a new group redelivers everything into the same folder
    second = {p: p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    archive = tmp_path / "archive"
    inputs = sorted(p.relative_to(archive / "input") for p in (archive / "input").rglob("*.fits"))
    outputs = sorted(p.relative_to(archive / "output") for p in (archive / "output").rglob("*.fits"))
    assert inputs == outputs and len(inputs) == 3
    for name in outputs:
        assert name.parts[1] == "cam1"  # <night>/<camera>/<name>.fits
        assert fits.getheader(archive / "output" / name)["STRMITER"] == 3
        assert first[archive / "output" / name] == second[archive / "output" / name]
    manifests = Archive(tmp_path / "archive").manifests()
    assert len(manifests) == 3
    for entry in manifests:
        assert {"input", "output", "metrics"} <= set(entry)
        assert entry["output"]["input_digest"] == entry["input"]["payload_digest"]


def test_camera_watches_a_folder_once_across_restarts(kafka_bootstrap, tmp_path):
    settings = unique_settings(kafka_bootstrap)
    folder = tmp_path / "camera"
    folder.mkdir()
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    fits.PrimaryHDU(data).writeto(folder / "a.fits")
    fits.PrimaryHDU(data + 1).writeto(folder / "b.fits")
    (folder / ".hidden.fits").write_bytes(b"ignored")
    (folder / "notes.txt").write_text("ignored")

    async def watch(seconds: float, during=None):
        stop = asyncio.Event()
        async with CameraPublisher(settings, "cam1") as camera:
            task = asyncio.create_task(watch_directory(camera, folder, stop, settle_seconds=0.5,
                                                       poll_seconds=0.1))
            if during:
                await during()
            await asyncio.sleep(seconds)
            stop.set()
            await task
            return camera.published

    async def slow_writer():
        # A file being written: it must not be published until it stops growing.
        payload = (folder / "a.fits").read_bytes()
        with open(folder / "c.fits", "wb") as out:
            for start in range(0, len(payload), 2880):
                out.write(payload[start : start + 2880])
                out.flush()
                await asyncio.sleep(0.15)

    async def scenario():
        await create_topics(settings)
        first = await watch(1.5, slow_writer)
        second = await watch(1.5)  # a restart: nothing is published again
        raw = await read_topic(settings, settings.topics.raw, expect=3, settle=1)
        return first, second, raw

    first, second, raw = run(scenario())
    assert (first, second) == (3, 0)
    names = sorted(RawFrame.model_validate_json(i.envelope_json).source_name for i in raw)
    assert names == ["a.fits", "b.fits", "c.fits"]
    for item in raw:
        assert read_image_bytes(item.payload).data.shape == (64, 64)  # c.fits arrived whole


def test_topics_create_is_idempotent(kafka_bootstrap):
    settings = unique_settings(kafka_bootstrap)
    first = run(create_topics(settings))
    second = run(create_topics(settings))
    assert {change.action for change in first.values()} == {"created"}
    assert {change.action for change in second.values()} == {"unchanged"}


def test_demo_command(tmp_path):
    from tests.operations.test_cli import run_cli

    result = run_cli("demo", "--frames", "3", "--size", "128", "--cadence", "0.2", "--window", "7",
                     "--iterations", "3", "--out", tmp_path / "out", "--broker-dir", tmp_path / "broker")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "frames published: 3, restored: 3, dead letters: 0" in result.stdout
    assert "p50" in result.stdout and "p99" in result.stdout
    assert "time per frame in the worker (p50): decode + measure" in result.stdout
    assert "finish (encode, quality, sources)" in result.stdout
    assert "verdict: this device" in result.stdout
    assert len(list((tmp_path / "out" / "output").rglob("*.fits"))) == 3
    assert (tmp_path / "out" / "last-frame.png").stat().st_size > 1000
    assert f"last frame, input beside restored: {tmp_path / 'out' / 'last-frame.png'}" in result.stdout
    assert "restored 3/3" in result.stderr  # the progress line
    assert "Warning" not in result.stderr and "VerifyWarning" not in result.stdout
    assert not (tmp_path / "broker" / "broker.json").exists()  # the broker was stopped


def test_the_demo_verdict_says_whether_the_device_keeps_up():
    from streamer.operations.demo import DemoSummary

    slow = DemoSummary(frames=20, restored=20, dead_letters=0, seconds=30, frames_per_second=0.7,
                       latency_p50=10.8, latency_p99=20, output=Path("out"),
                       bootstrap_servers="x", cadence=1.0,
                       stage_p50={"decode + measure": 0.3, "device (median + RL)": 1.46,
                                  "finish (encode, quality, sources)": 0.5},
                       latency_first=1.6, latency_last=10.3)  # +0.46 s a frame: the device
    assert not slow.keeps_up and slow.sustainable_cadence == 1.7
    assert "does NOT keep up with a 1 s cadence" in slow.verdict()
    assert "device (median + RL)) needs 1.46 s" in slow.verdict()
    assert "latency grew from 1.6 s to 10.3 s" in slow.verdict()
    assert "cadence of 1.7 s or more, or with 2 workers" in slow.verdict()
    fast = DemoSummary(**{**slow.__dict__, "cadence": 2.0, "latency_last": 1.7})
    assert fast.keeps_up and "keeps up" in fast.verdict() and "NOT" not in fast.verdict()
    # Stages that fit the cadence one by one but share the cores: the latency's growth
    # (1 + (20.1 - 5.2) / 19 = 1.78 s a frame) is the pace, not the slowest stage.
    shared = DemoSummary(**{**slow.__dict__, "latency_first": 5.2, "latency_last": 20.1,
                            "stage_p50": {"decode + measure": 0.9, "device (median + RL)": 0.8,
                                          "finish (encode, quality, sources)": 0.7},
                            "cadence": 1.0})
    assert shared.paced == pytest.approx(1.784, abs=1e-3) and not shared.keeps_up
    assert "share the machine's cores and together need 1.78 s" in shared.verdict()
    assert "cadence of 2.0 s or more, or with 2 workers" in shared.verdict()


def test_long_device_work_keeps_the_worker_in_its_group(kafka_bootstrap):
    # Each restoration takes longer than max.poll.interval; the worker must keep polling
    # (partitions paused) instead of being expelled, and so restore each frame once.
    from streamer.settings import RestorationSettings

    slow = RestorationSettings(window=31, psf=PSFSpec(kind="gaussian", fwhm=2.0),
                               iterations=2000, method="dense", stop_at_noise=False)
    settings = unique_settings(kafka_bootstrap, partitions=1, restoration=slow,
                               max_poll_interval_seconds=2.0)

    async def scenario():
        await create_topics(settings)
        await _publish(settings, 3, size=512)
        worker = Worker(settings)
        stop = asyncio.Event()
        await asyncio.wait_for(worker.run(stop, max_frames=3), 300)
        restored = await read_topic(settings, settings.topics.restored, expect=3, settle=1)
        metrics = await read_topic(settings, settings.topics.metrics, expect=3, frames=False, settle=0)
        return worker, restored, metrics

    worker, restored, metrics = run(scenario())
    device_seconds = [FrameMetrics.model_validate_json(r.value).stage_seconds["richardson_lucy"]
                      for r in metrics]
    assert min(device_seconds) > 2.0, f"frames must outlast max.poll.interval: {device_seconds}"
    assert worker.restored == 3 and worker.assignment.acquired == {0: 1}  # never lost its partition
    assert sorted(_count_by_frame(restored).values()) == [1, 1, 1]


def test_camera_restart_after_a_crash_between_commit_and_state(kafka_bootstrap, tmp_path):
    # The state file says "pending" for two files: one whose transaction committed before the
    # crash (must not be published again) and one that never made it (must be published).
    settings = unique_settings(kafka_bootstrap)
    folder = tmp_path / "camera"
    folder.mkdir()
    fits.PrimaryHDU(np.ones((32, 32), np.uint16)).writeto(folder / "done.fits")
    fits.PrimaryHDU(np.zeros((32, 32), np.uint16)).writeto(folder / "lost.fits")
    state = folder / ".streamer-published.jsonl"

    async def scenario():
        await create_topics(settings)
        stop = asyncio.Event()
        async with CameraPublisher(settings, "cam1") as camera:
            task = asyncio.create_task(watch_directory(camera, folder, stop, settle_seconds=0.3,
                                                       poll_seconds=0.1))
            while camera.published < 2:
                await asyncio.sleep(0.1)
            stop.set()
            await task
        # Forge the crash: "done" committed but its published line was lost; "lost" never
        # left the camera (its pending line points at a frame id the topic does not hold).
        lines = [json.loads(line) for line in state.read_text().splitlines()]
        forged = [l for l in lines if l["state"] == "pending"]
        for entry in forged:
            if entry["name"] == "lost.fits":
                entry["frame_id"] += ":never-committed"
        state.write_text("".join(json.dumps(l) + "\n" for l in forged))
        stop = asyncio.Event()
        async with CameraPublisher(settings, "cam1") as camera:
            task = asyncio.create_task(watch_directory(camera, folder, stop, settle_seconds=0.3,
                                                       poll_seconds=0.1))
            await asyncio.sleep(2.5)
            stop.set()
            await task
            republished = camera.published
        raw = await read_topic(settings, settings.topics.raw, expect=3, settle=1, timeout=20)
        return republished, raw

    republished, raw = run(scenario())
    assert republished == 1
    names = sorted(RawFrame.model_validate_json(i.envelope_json).source_name for i in raw)
    assert names == ["done.fits", "lost.fits", "lost.fits"]
