"""The quick-look page tells the truth when things go wrong: a dead letter gets a panel with
its reason (no broken image), the newest *arrival* is followed (an old frame uploaded now
included), one bad file never costs a night its zip and dead-lettered inputs are in it, no
server path in a message, a true size in the oversize refusal, a bounded upload list,
"1 dead letter", uploads answered at once while the broker is away (queued, then published
when it is back), gzipped FITS uploads taken, and ``streamer view`` exits 0 on SIGTERM.

The archive is written by the sink's own :class:`~streamer.streaming.archive.Archive`; the
upload test runs a real broker of its own, stopped and started again."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import io
import time
import zipfile

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from streamer.local_broker.broker import LocalKafka
from streamer.operations.quicklook.app import create_app
from streamer.operations.quicklook.uploads import ANSWER_SECONDS
from streamer.streaming.archive import Archive, night_of
from streamer.streaming.framing import payload_digest
from streamer.streaming.messages import DeadLetter, RawFrame, utc_now
from streamer.streaming.topics import create_topics
from tests.kafka_support import read_topic, unique_settings
from tests.operations.test_quicklook import _chromium, serving_view

UPLOADS_SHOWN = 6  # as page.html
# Mid-night (UTC 03:00 of today): every frame of "tonight" lies in one night folder.
NOW = utc_now().replace(hour=3, minute=0, second=0, microsecond=0)


def _fits_bytes(data: np.ndarray) -> bytes:
    out = io.BytesIO()
    fits.PrimaryHDU(data).writeto(out)
    return out.getvalue()


def _raw(archive: Archive, name: str, exposure: dt.datetime, published: dt.datetime) -> None:
    payload = _fits_bytes(np.random.default_rng(len(name)).normal(100, 5, (32, 32))
                          .astype(np.float32))
    archive.store_raw(RawFrame(
        frame_id=f"cam1:{name}", camera_id="cam1", exposure_start=exposure,
        exposure_seconds=10.0, shape=(32, 32), dtype="float32", encoding="fits",
        payload_bytes=len(payload), payload_digest=payload_digest(payload), chunk_count=1,
        source_name=name, published_at=published), payload)


def _camera_letter(archive: Archive, name: str, payload: bytes, failed_at: dt.datetime) -> None:
    archive.store_dead_letter(DeadLetter(
        origin="camera", frame_id=f"cam1:{name}", camera_id="cam1", source_topic="raw",
        source_name=name, source_path=f"/data/camera/{name}", error_type="FrameDecodeError",
        reason="not a readable FITS image (No SIMPLE card found)", failed_at=failed_at,
        worker_id="camera cam1", payload_bytes=len(payload), payload_digest=payload_digest(payload),
        chunk_count=1), payload)


@pytest.fixture
def archive(tmp_path):
    """Tonight's frame, last month's frame uploaded just now, and a camera dead letter."""
    root = tmp_path / "archive"
    store = Archive(root)
    now = NOW
    _raw(store, "tonight.fits", now - dt.timedelta(minutes=5), now - dt.timedelta(minutes=4))
    _camera_letter(store, "notes.fits", b"this is not a FITS file\n",
                   now - dt.timedelta(minutes=2))
    _raw(store, "old-plate.fits", now - dt.timedelta(days=30), now)
    return root


def test_the_newest_arrival_comes_first_and_letters_say_why(archive):
    with TestClient(create_app(archive)) as client:
        rows = client.get("/api/frames").json()
        assert [r["source_name"] for r in rows] == ["old-plate.fits", "notes.fits",
                                                    "tonight.fits"]
        letter = rows[1]
        assert letter["status"] == "dead-letter" and letter["refused_by"] == "camera"
        assert letter["has_input"] and not letter["has_preview"]  # bytes kept, not drawable
        assert "No SIMPLE card" in letter["reason"]
        picture = client.get(f"/api/frames/{letter['key']}/input.png")
        assert picture.status_code == 404 and "not a FITS file" in picture.json()["detail"]
        kept = client.get(f"/api/frames/{letter['key']}/input.fits")
        assert kept.content == b"this is not a FITS file\n"
        status = client.get("/api/status").json()
        assert status["archive"] == "archive" and status["dead_letters"] == 1
        for reply in (client.get("/api/frames/2026-01-01/cam1/nothing"),
                      client.get("/api/nights/2001-01-01.zip"),
                      client.get(f"/api/frames/{rows[0]['key']}/output.fits")):
            assert reply.status_code == 404
            assert str(archive) not in reply.text and str(archive.parent) not in reply.text


def test_one_bad_file_never_costs_the_night_its_zip(archive, tmp_path):
    outside = tmp_path / "outside.fits"
    outside.write_bytes(_fits_bytes(np.ones((4, 4), np.float32)))
    night = archive / "input" / night_of(NOW)
    camera = night / "cam1"
    (camera / "escape.fits").symlink_to(outside)
    (camera / "gone.fits").symlink_to(camera / "missing.fits")
    with TestClient(create_app(archive)) as client:
        reply = client.get(f"/api/nights/{night.name}.zip")
    assert reply.status_code == 200, reply.text
    with zipfile.ZipFile(io.BytesIO(reply.content)) as bundle:
        names = bundle.namelist()
        missing = bundle.read(f"{night.name}/MISSING.txt").decode()
    assert f"{night.name}/input/cam1/tonight.fits" in names
    letters = [n for n in names if "/deadletter/" in n]
    assert sorted(n.rsplit("/", 1)[1] for n in letters) == ["notes.bin", "notes.json"]
    assert "escape.fits: left out, a link that leads outside the archive" in missing
    assert "gone.fits: left out, it cannot be read" in missing
    assert str(tmp_path) not in missing


def test_an_oversize_upload_is_refused_with_its_true_size(archive):
    settings = unique_settings("127.0.0.1:9")  # never reached: refused before publishing
    big = _fits_bytes(np.ones((1300, 1300), np.float32))
    with TestClient(create_app(archive, settings, max_upload_bytes=5 << 20)) as client:
        reply = client.post("/api/uploads", files={"files": ("big.fits", big)})
    record = reply.json()[0]
    assert reply.status_code == 422 and record["bytes"] == len(big)
    assert f"{len(big) / 1e6:.1f} MB ({len(big)} bytes) is above the upload limit" in \
        record["error"]


@pytest.mark.kafka
def test_uploads_are_answered_at_once_while_the_broker_is_away(tmp_path):
    broker = LocalKafka(tmp_path / "broker")
    address = broker.start()
    settings = unique_settings(address, partitions=1)
    frame = _fits_bytes(np.random.default_rng(2).poisson(200, (48, 48)).astype(np.uint16))
    zipped = gzip.compress(_fits_bytes(np.ones((24, 24), np.float32)))
    try:
        asyncio.run(create_topics(settings))
        with TestClient(create_app(tmp_path / "archive", settings)) as client:
            first = client.post("/api/uploads", files={"files": ("zipped.fits.gz", zipped)})
            assert first.status_code == 200 and first.json()[0]["state"] == "published", \
                first.text
            broker.stop()
            asked = time.monotonic()
            reply = client.post("/api/uploads", data={"camera": "late"},
                                files={"files": ("away.fits", frame)})
            took = time.monotonic() - asked
            record = reply.json()[0]
            assert took < ANSWER_SECONDS + 5, f"answered after {took:.1f} s"
            assert record["state"] == "queued" and "published when it is back" in record["note"]
            listed = client.get("/api/uploads").json()[0]
            assert listed["state"] == "queued"
            assert broker.start() == address
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and listed["state"] == "queued":
                time.sleep(0.5)
                listed = client.get("/api/uploads").json()[0]
            assert listed["state"] == "published", listed
        raw = asyncio.run(read_topic(settings, settings.topics.raw, expect=2, settle=1))
    finally:
        broker.stop()
    names = sorted(RawFrame.model_validate_json(i.envelope_json).source_name for i in raw)
    assert names == ["away.fits", "zipped.fits.gz"]  # each once


def test_the_page_shows_a_dead_letter_panel_and_a_bounded_upload_list(archive, tmp_path):
    import httpx

    with serving_view(archive, unique_settings("127.0.0.1:9")) as view:
        for index in range(UPLOADS_SHOWN + 4):  # refused: no broker configured
            httpx.post(f"{view.url}api/uploads",
                       files={"files": (f"f{index}.fits", _fits_bytes(np.ones((4, 4))))})
        dom = _chromium("--dump-dom", view.url).stdout
    code, output = view.code, view.output
    assert code == 0 and "quick look stopped (SIGTERM)" in output, output
    # Followed: the newest arrival the worker finished, the camera's dead letter.
    assert "cam1 · notes.fits · dead-letter" in dom
    assert 'id="letter" hidden' not in dom and "refused by the camera" in dom
    assert "FrameDecodeError: not a readable FITS image" in dom
    assert '<img id="input-img" alt="input frame" hidden=""' in dom  # no broken image
    assert "no picture: the input is not a FITS image" in dom
    assert "3 frames · 0 restored · 1 dead letter<" in dom
    assert dom.count("no Kafka configured") == UPLOADS_SHOWN
    assert "4 earlier uploads not shown" in dom
    assert str(archive) not in dom
