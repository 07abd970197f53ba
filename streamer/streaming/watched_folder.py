"""A folder the camera writes FITS files into, published file by file: each once the camera
has finished writing it, each once only — also across restarts — and every file accounted for.

A file that does not read as a FITS image is first taken for one still being written (a slow
copy) and read again until it has not changed for ``incomplete_file_seconds``; then it goes to
the dead-letter topic *from the camera* with the reason and its bytes (its path when it is
bigger than ``camera_dead_letter_bytes``), so it reaches the page and the archive like any
refused frame. Directories, dangling symlinks and unreadable entries with a FITS name get one
log line each.

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

from streamer.errors import (
    FrameDecodeError,
    FrameError,
    FrameTooLargeError,
    PublishAbandonedError,
)
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

    def add(self, key: tuple[str, int, int], frame_id: str, state: str = "published") -> None:
        """Record a published (or dead-lettered: ``state="dead-letter"``) file."""
        self._append({"name": key[0], "size": key[1], "mtime_ns": key[2], "frame_id": frame_id,
                      "state": state})
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


class _Listing(NamedTuple):
    files: list[_Candidate]
    oddities: dict[str, str]  # name -> why it is not a file to publish


def _list_fits(folder: Path) -> _Listing:
    """The folder's FITS files (not hidden, not partial), sorted by name, and the entries
    with a FITS name that are no regular file."""
    found, oddities = [], {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not name.lower().endswith(FITS_SUFFIXES):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                oddities[name] = (f"a symlink to {os.readlink(path)}, which does not exist; "
                                  "published once its target appears")
            continue  # else removed between the listing and the stat
        except OSError as error:  # a symlink loop, a permission on the way
            oddities[name] = f"cannot be looked at ({error.strerror or error}); ignored"
            continue
        if path.is_dir():
            oddities[name] = "a directory, not a FITS file; ignored"
        elif not path.is_file():
            oddities[name] = "not a regular file (a pipe or a device); ignored"
        else:
            found.append(_Candidate(path, stat.st_size, stat.st_mtime_ns))
    return _Listing(found, oddities)


class _ReadFile(NamedTuple):
    payload: bytes
    shape: tuple[int, ...]
    dtype: str
    exposure_start: dt.datetime
    exposure_seconds: float


def _read_file(candidate: _Candidate) -> _ReadFile:
    """Read and check one file (raises FrameDecodeError/FrameError for a bad one)."""
    payload = candidate.path.read_bytes()
    if not payload:
        raise FrameDecodeError("an empty file (0 bytes)")
    image = read_image_bytes(payload)
    fallback = dt.datetime.fromtimestamp(candidate.mtime_ns / 1e9, dt.timezone.utc)
    start, exposure = exposure_from_header(image.header, fallback)
    return _ReadFile(payload, image.data.shape, str(image.data.dtype), start, exposure)


def _letter_payload(candidate: _Candidate, limit: int) -> bytes | None:
    """A refused file's bytes for its dead letter; None above ``limit`` or unreadable."""
    if candidate.size > limit:
        return None
    try:
        return candidate.path.read_bytes()[:limit]
    except OSError:
        return None


class _Watched(NamedTuple):
    size: int
    mtime_ns: int
    since: float  # loop time this size and mtime were first seen
    retry_at: float  # loop time of the next read of a file that did not read yet


async def watch_directory(camera: CameraPublisher, folder: Path, stop: asyncio.Event, *,
                          settle_seconds: float = 1.0, poll_seconds: float = 0.5,
                          state_file: Path | None = None) -> None:
    """Publish each FITS file of ``folder`` once the camera has finished writing it (its size
    and modification time unchanged for ``settle_seconds``). Hidden and ``.tmp``/``.part``
    files are ignored; a file that is not a readable FITS image is read again while it may
    still be growing and then dead-lettered with the reason (see the module notes).
    Listing, reading, decoding and the state file's fsync run in threads."""
    published = await asyncio.to_thread(
        PublishedFiles, state_file or folder / ".streamer-published.jsonl")
    await published.resolve_pending(camera)
    observed: dict[str, _Watched] = {}
    noted: dict[str, str] = {}
    patience = camera.settings.incomplete_file_seconds
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        now = loop.time()
        listing = await asyncio.to_thread(_list_fits, folder)
        _note_oddities(folder, listing.oddities, noted)
        for candidate in listing.files:
            if candidate.key in published:
                continue
            name = candidate.path.name
            seen = observed.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (candidate.size, candidate.mtime_ns):
                observed[name] = _Watched(candidate.size, candidate.mtime_ns, now, now)
                continue
            if now - seen.since < settle_seconds or now < seen.retry_at:
                continue
            if await _publish_file(camera, published, candidate,
                                   final=now - seen.since >= patience,
                                   announce=seen.retry_at == seen.since):
                observed.pop(name, None)
            else:
                observed[name] = seen._replace(retry_at=now + max(1.0, settle_seconds))
            if stop.is_set():
                break
        try:
            await asyncio.wait_for(stop.wait(), poll_seconds)
        except asyncio.TimeoutError:
            pass


def _note_oddities(folder: Path, oddities: dict[str, str], noted: dict[str, str]) -> None:
    """One log line per FITS-named entry that is no file to publish (again if it changes)."""
    for name, why in oddities.items():
        if noted.get(name) != why:
            log.warning("camera: %s is %s", folder / name, why)
    noted.clear()
    noted.update(oddities)


async def _publish_file(camera: CameraPublisher, published: PublishedFiles,
                        candidate: _Candidate, *, final: bool, announce: bool = True) -> bool:
    """Publish one settled file once; False while a file that does not read may still be
    being written (said once when ``announce``), and dead-lettered when ``final``. True
    when it is accounted for."""
    name = candidate.path.name
    frame_id = f"{camera.camera_id}:{Path(name).stem}:{candidate.mtime_ns}"
    try:
        if candidate.size > camera.settings.max_frame_bytes:
            raise FrameTooLargeError(
                f"{candidate.size} bytes exceeds max_frame_bytes="
                f"{camera.settings.max_frame_bytes}; raise the limit or bin the frame")
        frame = await asyncio.to_thread(_read_file, candidate)
    except FileNotFoundError:
        return True  # removed after it settled: nothing to publish
    except (FrameError, OSError) as error:
        if not final and not isinstance(error, FrameTooLargeError):
            if announce:
                log.info("camera: %s does not read as a FITS image yet (%s); waiting up to %g s "
                         "for it to be finished", name, error,
                         camera.settings.incomplete_file_seconds)
            return False
        return await _dead_letter_file(camera, published, candidate, frame_id, error)
    await asyncio.to_thread(published.begin, candidate.key, frame_id)
    try:
        await camera.publish_payload(
            frame.payload, shape=frame.shape, dtype=frame.dtype,
            exposure_start=frame.exposure_start, exposure_seconds=frame.exposure_seconds,
            frame_id=frame_id, source_name=name,
        )
    except PublishAbandonedError as error:
        log.warning("camera: %s: %s; %s stays pending", name, error, name)
        return False
    await asyncio.to_thread(published.add, candidate.key, frame_id)
    log.info("camera: published %s as %s", name, frame_id)
    return True


async def _dead_letter_file(camera: CameraPublisher, published: PublishedFiles,
                            candidate: _Candidate, frame_id: str, error: BaseException) -> bool:
    """Send a file that is no frame to the dead-letter topic and remember it as judged."""
    name = candidate.path.name
    payload = await asyncio.to_thread(_letter_payload, candidate,
                                      camera.settings.camera_dead_letter_bytes)
    try:
        await camera.dead_letter_file(
            frame_id=frame_id, source_name=name, source_path=str(candidate.path.resolve()),
            error=error, payload=payload, file_size=candidate.size)
    except PublishAbandonedError as abandoned:
        log.warning("camera: %s: %s", name, abandoned)
        return False
    await asyncio.to_thread(published.add, candidate.key, frame_id, "dead-letter")
    log.error("camera: %s is not a frame (%s: %s); sent to dead letters as %s", name,
              type(error).__name__, error, frame_id)
    return True
