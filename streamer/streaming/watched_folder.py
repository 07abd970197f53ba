"""A folder the camera writes FITS files into, published file by file: each once the camera
has finished writing it, each once only — also across restarts.

Every file gets a line in ``DIR/.streamer-published.jsonl``: ``pending`` before its transaction,
``published`` after. A file left pending by a crash is looked up in the raw topic at the next
start and published again only if its transaction never committed. Listing, reading, decoding
and the state file's fsync run in threads, so the producer's event loop never stalls on a big
frame.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

from streamer.errors import FrameDecodeError, FrameError, PublishAbandonedError
from streamer.imaging.fits_io import read_image_bytes
from streamer.streaming.camera import CameraPublisher, exposure_from_header
from streamer.streaming.messages import utc_now

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")


class PublishedFiles:
    """The files a directory watcher has published, kept in a JSON-lines state file.

    Each file gets a ``pending`` line (with its frame id and the time) before its
    transaction and a ``published`` line after. A file left pending by a crash is resolved at
    the next start against the raw topic itself (:meth:`CameraPublisher.committed_frame_ids`),
    so it is published again only if its transaction never committed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: set[tuple[str, int, int]] = set()
        self.pending: dict[tuple[str, int, int], tuple[str, int]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                key = (entry["name"], entry["size"], entry["mtime_ns"])
                if entry.get("state", "published") == "pending":
                    self.pending[key] = (entry["frame_id"], entry["at_ms"])
                else:
                    self.pending.pop(key, None)
                    self._seen.add(key)

    def __contains__(self, key: tuple[str, int, int]) -> bool:
        return key in self._seen

    def _append(self, entry: dict) -> None:
        with open(self.path, "a") as state:
            state.write(json.dumps(entry) + "\n")
            state.flush()
            os.fsync(state.fileno())

    def begin(self, key: tuple[str, int, int], frame_id: str) -> None:
        """Record that a file is about to be published."""
        at_ms = int(utc_now().timestamp() * 1000)
        self._append({"name": key[0], "size": key[1], "mtime_ns": key[2], "frame_id": frame_id,
                      "state": "pending", "at_ms": at_ms})
        self.pending[key] = (frame_id, at_ms)

    def add(self, key: tuple[str, int, int], frame_id: str) -> None:
        """Record a published (or deliberately skipped) file."""
        self._append({"name": key[0], "size": key[1], "mtime_ns": key[2], "frame_id": frame_id,
                      "state": "published"})
        self.pending.pop(key, None)
        self._seen.add(key)

    async def resolve_pending(self, camera: CameraPublisher) -> None:
        """Mark published the pending files whose frames the raw topic holds."""
        if not self.pending:
            return
        since = min(at_ms for _, at_ms in self.pending.values())
        committed = await camera.committed_frame_ids(since)
        for key, (frame_id, _) in list(self.pending.items()):
            if frame_id in committed:
                await asyncio.to_thread(self.add, key, frame_id)
                log.info("camera: %s was published before the restart", key[0])
            else:
                self.pending.pop(key)  # never committed: it will be published again


class _Candidate(NamedTuple):
    """A FITS file in the watched folder, as one listing saw it."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path.name, self.size, self.mtime_ns)


def _list_fits(folder: Path) -> list[_Candidate]:
    """The folder's FITS files (not hidden, not partial), sorted by name."""
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not name.lower().endswith(FITS_SUFFIXES):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed between the listing and the stat
            continue
        if path.is_file():
            found.append(_Candidate(path, stat.st_size, stat.st_mtime_ns))
    return found


class _ReadFile(NamedTuple):
    payload: bytes
    shape: tuple[int, ...]
    dtype: str
    exposure_start: dt.datetime
    exposure_seconds: float


def _read_file(candidate: _Candidate) -> _ReadFile:
    """Read and check one file (raises FrameDecodeError/FrameError for a bad one)."""
    payload = candidate.path.read_bytes()
    image = read_image_bytes(payload)
    fallback = dt.datetime.fromtimestamp(candidate.mtime_ns / 1e9, dt.timezone.utc)
    start, exposure = exposure_from_header(image.header, fallback)
    return _ReadFile(payload, image.data.shape, str(image.data.dtype), start, exposure)


async def watch_directory(camera: CameraPublisher, folder: Path, stop: asyncio.Event, *,
                          settle_seconds: float = 1.0, poll_seconds: float = 0.5,
                          state_file: Path | None = None) -> None:
    """Publish each FITS file of ``folder`` once the camera has finished writing it (its size
    and modification time unchanged for ``settle_seconds``). Hidden and ``.tmp``/``.part``
    files are ignored; a file that is not a readable FITS image is reported and skipped.
    Listing, reading, decoding and the state file's fsync run in threads."""
    published = await asyncio.to_thread(
        PublishedFiles, state_file or folder / ".streamer-published.jsonl")
    await published.resolve_pending(camera)
    observed: dict[str, tuple[int, int, float]] = {}
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        now = loop.time()
        for candidate in await asyncio.to_thread(_list_fits, folder):
            if candidate.key in published:
                continue
            name = candidate.path.name
            previous = observed.get(name)
            if previous is None or previous[:2] != (candidate.size, candidate.mtime_ns):
                observed[name] = (candidate.size, candidate.mtime_ns, now)
                continue
            if now - previous[2] < settle_seconds:
                continue
            await _publish_file(camera, published, candidate)
            observed.pop(name, None)
            if stop.is_set():
                break
        try:
            await asyncio.wait_for(stop.wait(), poll_seconds)
        except asyncio.TimeoutError:
            pass


async def _publish_file(camera: CameraPublisher, published: PublishedFiles,
                        candidate: _Candidate) -> None:
    """Publish one settled file once (or record it as skipped when it is not an image)."""
    name = candidate.path.name
    try:
        frame = await asyncio.to_thread(_read_file, candidate)
    except (FrameDecodeError, FrameError) as error:
        log.error("camera: %s: %s (skipped)", candidate.path, error)
        await asyncio.to_thread(published.add, candidate.key, "")
        return
    except FileNotFoundError:
        return  # removed after it settled: nothing to publish
    frame_id = f"{camera.camera_id}:{Path(name).stem}:{candidate.mtime_ns}"
    await asyncio.to_thread(published.begin, candidate.key, frame_id)
    try:
        await camera.publish_payload(
            frame.payload, shape=frame.shape, dtype=frame.dtype,
            exposure_start=frame.exposure_start, exposure_seconds=frame.exposure_seconds,
            frame_id=frame_id, source_name=name,
        )
    except PublishAbandonedError as error:
        log.warning("camera: %s: %s; %s stays pending", name, error, name)
        return
    await asyncio.to_thread(published.add, candidate.key, frame_id)
    log.info("camera: published %s as %s", name, frame_id)
