"""The quick-look page over an archive the real pipeline wrote (camera → broker → worker →
sink): its JSON API through httpx, downloads and zips byte for byte, path safety, uploads
published to the raw topic and followed to the archive, and the page in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient
from PIL import Image

from streamer.imaging.psf import PSFSpec
from streamer.operations.quicklook.app import create_app
from streamer.operations.quicklook.catalog import Catalog
from streamer.streaming.camera import CameraPublisher, simulate
from streamer.streaming.sink import Sink
from streamer.streaming.topics import create_topics
from streamer.worker.worker import Worker
from tests.kafka_support import settings_env, start_cli, unique_settings

pytestmark = pytest.mark.kafka
GOOD = 3


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, tmp_path_factory):
    """Settings and an archive holding three restored frames and one dead letter."""
    settings = unique_settings(kafka_bootstrap, partitions=1)
    archive = tmp_path_factory.mktemp("quicklook") / "archive"

    async def run() -> None:
        await create_topics(settings)
        async with CameraPublisher(settings, "cam1") as camera:
            await simulate(camera, count=GOOD, size=160, cadence=0.0,
                           psf=PSFSpec(kind="gaussian", fwhm=2.5))
            await camera.publish_image(np.zeros((64, 64), np.uint16), source_name="dark.fits")
        worker, sink = Worker(settings), Sink(settings, archive)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(sink.run(stop))]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
                len(list((archive / "output").rglob("*.fits"))) == GOOD
                and len(list((archive / "deadletter").rglob("*.json"))) == 1):
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())
    return settings, archive


@pytest.fixture()
def client(pipeline):
    _, archive = pipeline
    with TestClient(create_app(archive)) as test_client:
        yield test_client


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("L"), dtype=np.float64)


def test_frames_are_listed_with_their_status_and_figures(client):
    rows = client.get("/api/frames").json()
    assert len(rows) == GOOD + 1
    restored = [r for r in rows if r["status"] == "restored"]
    dead = [r for r in rows if r["status"] == "dead-letter"]
    assert len(restored) == GOOD and len(dead) == 1
    assert "no signal" in dead[0]["reason"] and dead[0]["error_type"] == "NoSignalError"
    for row in restored:
        assert row["camera"] == "cam1" and row["has_input"] and row["has_output"]
        assert row["fwhm_after"] < row["fwhm_before"]
        assert row["processing_seconds"] > 0 and row["latency_seconds"] > 0
        assert row["sources"] > 0 and row["moat_depth"] is not None
    starts = [r["exposure_start"] for r in rows]
    assert starts == sorted(starts, reverse=True)  # newest first
    assert client.get("/api/frames?status=dead-letter").json() == dead
    assert len(client.get("/api/frames?limit=2").json()) == 2
    status = client.get("/api/status").json()
    assert (status["frames"], status["restored"], status["dead_letters"]) == (GOOD + 1, GOOD, 1)
    assert status["uploads_enabled"] is False


def test_a_frame_its_renderings_and_its_files(client, pipeline):
    _, archive = pipeline
    row = next(r for r in client.get("/api/frames").json() if r["status"] == "restored")
    base = f"/api/frames/{row['key']}"
    detail = client.get(base).json()
    assert detail["manifest"]["frame_id"] == row["frame_id"]
    for kind in ("input", "output"):
        picture = client.get(f"{base}/{kind}.png")
        assert picture.headers["content-type"] == "image/png"
        pixels = _png(picture.content)
        assert pixels.shape == (160, 160) and pixels.std() > 10  # stars on a sky, not blank
        download = client.get(f"{base}/{kind}.fits")
        assert download.content == (archive / kind / f"{row['key']}.fits").read_bytes()
        assert "attachment" in download.headers["content-disposition"]
    psf = _png(client.get(f"{base}/psf.png").content)
    centre = psf[psf.shape[0] // 2, psf.shape[1] // 2]
    assert centre == psf.max() > psf[0, 0]  # the PSF peaks in the middle
    dead = client.get("/api/frames?status=dead-letter").json()[0]
    raw = client.get(f"/api/frames/{dead['key']}/input.fits")
    assert raw.status_code == 200 and fits.getdata(io.BytesIO(raw.content)).max() == 0
    assert client.get(f"/api/frames/{dead['key']}/output.fits").status_code == 404


def test_renderings_are_binned_to_the_shown_size_keeping_sharp_stars(tmp_path):
    # A restored-looking frame: one-pixel stars, each in a dark moat, on a noisy sky. Shown
    # at 256 px, each star's block must stay the brightest thing around it (a browser
    # shrinking the 1024-px PNG would sample past the peak and show the moat).
    from streamer.operations.quicklook.previews import Previews, snapped_side

    rng = np.random.default_rng(7)
    image = rng.normal(100.0, 10.0, (1024, 1024)).astype(np.float32)
    stars = [(100 + 97 * i, 60 + 89 * i) for i in range(9)]
    for y, x in stars:
        image[y - 2:y + 3, x - 2:x + 3] = 70.0
        image[y, x] = 5000.0
    path = tmp_path / "restored.fits"
    fits.PrimaryHDU(image).writeto(path)
    previews = Previews()
    pixels = _png(previews.get(path, "frame", 250))
    assert snapped_side(250) == 256 and pixels.shape == (256, 256)
    for y, x in stars:
        row = 255 - y // 4  # the PNG is flipped: row 0 of a FITS frame at the bottom
        assert pixels[row, x // 4] == 255, (y, x)
    assert _png(previews.get(path, "frame")).shape == (1024, 1024)
    assert _png(previews.get(path, "frame", 99999)).shape == (1024, 1024)  # never above full


def test_a_night_downloads_as_a_zip_of_inputs_and_outputs(client, pipeline):
    _, archive = pipeline
    night = client.get("/api/nights").json()[0]
    assert night["frames"] == GOOD + 1 and night["restored"] == GOOD
    reply = client.get(f"/api/nights/{night['night']}.zip")
    assert reply.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(reply.content)) as bundle:
        names = bundle.namelist()
        assert len([n for n in names if "/input/" in n]) == GOOD
        assert len([n for n in names if "/output/" in n]) == GOOD
        for name in names:
            _, folder, rest = name.split("/", 2)
            assert bundle.read(name) == (archive / folder / night["night"] / rest).read_bytes()


@pytest.mark.parametrize("path", [
    "/api/frames/..%2F..%2F..%2Fetc/passwd/x/input.fits",
    "/api/frames/2026-01-01/cam1/..%2F..%2Fmanifest/input.fits",
    "/api/frames/2026-01-01/..%2F..%2F/x/output.fits",
    "/api/frames/not-a-night/cam1/x/input.fits",
    "/api/frames/2026-01-01/cam1/.hidden/input.fits",
    "/api/nights/..%2F..%2Fetc.zip",
    "/api/frames/2026-01-01/cam1/x/../../../../etc/passwd",
])
def test_requests_cannot_leave_the_archive(client, path):
    reply = client.get(path)
    assert reply.status_code in (404, 422), reply.text
    assert b"root:" not in reply.content


def test_a_link_inside_the_archive_cannot_lead_out(client, pipeline, tmp_path):
    _, archive = pipeline
    secret = tmp_path / "secret.fits"
    fits.writeto(secret, np.ones((8, 8), np.float32))
    row = next(r for r in client.get("/api/frames").json() if r["status"] == "restored")
    night, camera, _ = row["key"].split("/")
    (archive / "manifest" / night / camera / "leak.json").write_text(json.dumps({"frame_id": "x"}))
    link = archive / "output" / night / camera / "leak.fits"
    link.symlink_to(secret)
    try:
        assert client.get(f"/api/frames/{night}/{camera}/leak/output.fits").status_code == 404
    finally:
        link.unlink()
        (archive / "manifest" / night / camera / "leak.json").unlink()


def _fits_bytes(data: np.ndarray) -> bytes:
    out = io.BytesIO()
    fits.PrimaryHDU(data).writeto(out)
    return out.getvalue()


def _header_only() -> bytes:
    out = io.BytesIO()
    fits.PrimaryHDU().writeto(out)
    return out.getvalue()


def test_uploads_need_a_broker_and_say_so(client):
    reply = client.post("/api/uploads", files={"files": ("a.fits", _fits_bytes(np.ones((8, 8))))})
    assert reply.status_code == 422
    assert "no Kafka configured" in reply.json()[0]["error"]


def test_bad_uploads_are_refused_with_a_reason(pipeline, tmp_path):
    settings, archive = pipeline
    app = create_app(archive, settings, max_upload_bytes=64 * 1024)
    cases = {
        "notes.txt": (b"hello", "only FITS files"),
        "fake.fits": (b"this is not a FITS file" * 10, "not a FITS file"),
        "cube.fits": (_fits_bytes(np.ones((3, 8, 8), np.float32)), "frames are 2-D"),
        "huge.fits": (_fits_bytes(np.ones((200, 200), np.float32)), "above the upload limit"),
        "empty.fits": (_header_only(), "no image HDU"),
    }
    with TestClient(app) as test_client:
        for name, (payload, reason) in cases.items():
            reply = test_client.post("/api/uploads", files={"files": (name, payload)})
            assert reply.status_code == 422, name
            assert reason in reply.json()[0]["error"], (name, reply.json())
        bad_camera = test_client.post("/api/uploads", data={"camera": "../x"},
                                      files={"files": ("a.fits", _fits_bytes(np.ones((8, 8))))})
        assert bad_camera.status_code == 422
        states = [u["state"] for u in test_client.get("/api/uploads").json()]
        assert states == ["refused"] * len(cases)
        # A body far above the limit is refused from its length, before it is read.
        flood = test_client.post("/api/uploads", content=b"x",
                                 headers={"content-length": str(1 << 40),
                                          "content-type": "multipart/form-data; boundary=b"})
        assert flood.status_code == 413 and "above" in flood.json()["detail"]


def test_an_upload_is_published_restored_and_archived(pipeline, tmp_path):
    settings, archive = pipeline
    field = np.random.default_rng(4).poisson(200, (128, 128)).astype(np.uint16)
    field[60:63, 60:63] += 3000  # a star
    log = tmp_path / "processes.log"
    worker = start_cli(settings, "worker", log=log)
    sink = start_cli(settings, "sink", "--out", str(archive), log=log)
    try:
        with TestClient(create_app(archive, settings)) as test_client:
            reply = test_client.post("/api/uploads", data={"camera": "upcam"},
                                     files={"files": ("night1_0001.fits", _fits_bytes(field))})
            assert reply.status_code == 200, reply.text
            record = reply.json()[0]
            assert record["state"] == "published" and record["frame_id"].startswith("upcam:")
            deadline = time.monotonic() + 120
            upload = None
            while time.monotonic() < deadline:
                upload = test_client.get("/api/uploads").json()[0]
                if upload["archive_status"] == "restored":
                    break
                time.sleep(0.5)
            assert upload is not None and upload["archive_status"] == "restored", \
                log.read_text()[-3000:]
            night, camera, name = upload["key"].split("/")
            assert camera == "upcam" and name == "night1_0001"
            stored = test_client.get(f"/api/frames/{upload['key']}/input.fits").content
            assert np.array_equal(fits.getdata(io.BytesIO(stored)), field)
    finally:
        for process in (worker, sink):
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _chromium(*args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium")
    assert browser, "chromium missing: scripts/bootstrap.sh installs Debian's chromium"
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1400,1100", "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120)


@dataclass
class ViewProcess:
    """``streamer view`` run as a person runs it; ``output`` and ``code`` once it stopped."""

    port: int
    output: str = ""
    code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@contextlib.contextmanager
def serving_view(archive: Path, settings, stop: int = signal.SIGTERM) -> Iterator[ViewProcess]:
    """``streamer view`` over ``archive`` without a broker, listening when entered; sent
    ``stop`` on the way out."""
    view = ViewProcess(_free_port())
    server = subprocess.Popen(
        [sys.executable, "-m", "streamer", "view", "--archive", str(archive),
         "--bind", f"127.0.0.1:{view.port}"],
        env={**settings_env(settings), "STREAMER_KAFKA__BOOTSTRAP_SERVERS": ""},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", view.port), 1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield view
    finally:
        server.send_signal(stop)
        view.output = server.communicate(timeout=30)[0]
        view.code = server.returncode


def test_the_page_in_headless_chromium_shows_the_frames(pipeline, tmp_path):
    settings, archive = pipeline
    with serving_view(archive, settings, signal.SIGINT) as view:
        dom = _chromium("--dump-dom", view.url).stdout
        shot = tmp_path / "quicklook.png"
        _chromium(f"--screenshot={shot}", view.url)
    port, output = view.port, view.output
    assert f"quick look on http://127.0.0.1:{port}/" in output
    # The script ran: the table holds every frame, the viewer the latest finished one.
    rows = Catalog(archive).refresh()  # the pipeline's frames and any upload test's
    restored = sum(r.status == "restored" for r in rows)
    assert dom.count("<tr data-key=") == len(rows), dom[-3000:]
    assert dom.count('class="restored"') >= restored and 'class="dead-letter"' in dom
    # Followed: the newest arrival the worker has finished (rows come newest arrival first).
    newest = next(r for r in rows if r.status != "received")
    assert f"/{newest.key}/input.png?v=" in dom
    if newest.has_output:  # a dead letter (with -k, no upload test before) has no output
        assert "/output.png?v=" in dom and "/psf.png?v=" in dom
    assert f"{len(rows)} frames · {restored} restored · 1 dead letter<" in dom
    picture = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert picture.shape == (1100, 1400)
    # The two frames are drawn (stars on a sky: much more contrast than the page's panels).
    viewer = picture[150:600, 30:1050]
    if newest.has_output:
        assert viewer.std() > 25 and (viewer > 200).sum() > 200
    if os.environ.get("STREAMER_SCREENSHOT_DIR"):  # refresh the README's screenshot
        shutil.copy(shot, Path(os.environ["STREAMER_SCREENSHOT_DIR"]) / "quicklook.png")


def test_demo_view_serves_the_page_until_interrupted(tmp_path):
    port = _free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "streamer", "demo", "--frames", "2", "--size", "96",
         "--cadence", "0.1", "--window", "7", "--iterations", "3", "--out", str(tmp_path / "out"),
         "--broker-dir", str(tmp_path / "broker"), "--view", "--view-bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "STREAMER_KAFKA__BOOTSTRAP_SERVERS": ""})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("quick look: http") and "Ctrl-C" in line:
                break
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as reply:
            status = json.load(reply)
        assert status["frames"] == 2 and status["restored"] == 2
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(lines) + rest
    assert any("verdict: this device" in line for line in lines)


def test_a_frames_sources_in_the_api_and_over_its_picture(client, pipeline, tmp_path):
    settings, archive = pipeline
    row = next(r for r in client.get("/api/frames").json() if r["status"] == "restored")
    assert row["has_sources"] and row["catalogue_sources"] > 0 and row["limiting_mag"] < 0
    reply = client.get(f"/api/frames/{row['key']}/sources.json?limit=5").json()
    assert reply["figures"]["count"] == row["catalogue_sources"]
    snr = [source["snr"] for source in reply["sources"]]
    assert len(snr) == min(5, row["catalogue_sources"]) and snr == sorted(snr, reverse=True)
    with serving_view(archive, settings) as view:
        dom = _chromium("--dump-dom", view.url + "?sources").stdout
    followed = next(r for r in Catalog(archive).refresh() if r.status != "received")
    if followed.has_sources:  # the newest finished frame; a dead letter has no catalogue
        assert dom.count("<circle") == min(followed.catalogue_sources, 2000)
        assert '<svg id="marks" hidden' not in dom  # drawn, not only in the DOM
        assert 'id="catalogue" hidden' not in dom and "5σ limit" in dom
        assert dom.count("<tr><td>") >= min(followed.catalogue_sources, 100)
    else:
        assert 'id="catalogue" hidden' in dom
