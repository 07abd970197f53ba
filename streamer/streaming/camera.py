"""The camera-side publisher: frames into the raw topic, one transaction per frame.

Three ways in: :meth:`CameraPublisher.publish_image` (a camera driver's Python call),
:func:`watch_directory` (FITS files as the camera finishes writing them, each once, also
across restarts), and :func:`simulate` (synthetic star fields at a cadence). Records are keyed
by camera id, so each camera's frames stay in order on one partition.

Everything that touches the disk or a whole frame — listing and reading files, decoding,
encoding, hashing, splitting into chunks, fsync of the state file — runs in worker threads, so
the event loop that keeps the producer's connection and transactions alive never stalls on a
big frame.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from aiokafka.errors import KafkaError
from astropy.io import fits

from streamer.errors import FrameDecodeError, FrameError, FrameTooLargeError
from streamer.imaging.fits_io import image_bytes, read_image_bytes
from streamer.streaming.framing import frame_records, headers_dict, sha256_hex
from streamer.streaming.kafka_clients import start_client, transactional_producer
from streamer.streaming.messages import ENVELOPE_HEADER, RawFrame, utc_now
from streamer.metrics import StreamerMetrics
from streamer.imaging.psf import PSFSpec
from streamer.settings import StreamerSettings
from streamer.imaging.simulate import simulated_header
from streamer.imaging.synthetic import star_field

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")


class CameraPublisher:
    """Publishes one camera's frames; use as ``async with CameraPublisher(...) as camera``."""

    def __init__(self, settings: StreamerSettings, camera_id: str,
                 metrics: StreamerMetrics | None = None) -> None:
        self.settings = settings
        self.camera_id = camera_id
        self.metrics = metrics or StreamerMetrics("camera")
        self.producer = transactional_producer(settings, f"streamer-camera.{camera_id}")
        self.published = 0

    async def __aenter__(self) -> CameraPublisher:
        await start_client(self.producer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.producer.stop()

    async def publish_payload(self, payload: bytes, *, shape: tuple[int, int], dtype: str,
                              exposure_start: dt.datetime, exposure_seconds: float,
                              frame_id: str, encoding: str = "fits",
                              source_name: str | None = None) -> RawFrame:
        """Publish a payload (a FITS file's bytes, or raw pixels) as one frame.

        Raises
        ------
        FrameTooLargeError
            The payload is above ``max_frame_bytes``.
        """
        if len(payload) > self.settings.max_frame_bytes:
            raise FrameTooLargeError(
                f"{source_name or frame_id}: {len(payload)} bytes exceeds max_frame_bytes="
                f"{self.settings.max_frame_bytes}; raise the limit or bin the frame"
            )
        chunk_bytes = self.settings.chunk_bytes

        def prepare() -> tuple[RawFrame, list]:
            envelope = RawFrame(
                frame_id=frame_id, camera_id=self.camera_id,
                exposure_start=exposure_start, exposure_seconds=exposure_seconds,
                shape=shape, dtype=dtype, encoding=encoding, payload_bytes=len(payload),
                payload_sha256=sha256_hex(payload),
                chunk_count=max(1, math.ceil(len(payload) / chunk_bytes)),
                source_name=source_name, published_at=utc_now(),
            )
            return envelope, frame_records(envelope.model_dump_json().encode(), "raw", payload,
                                           chunk_bytes)

        envelope, records = await asyncio.to_thread(prepare)
        started = asyncio.get_running_loop().time()
        await self._send_riding_outages(envelope, records)
        self.metrics.stage_seconds.labels("publish").observe(asyncio.get_running_loop().time() - started)
        self.metrics.frames_published.labels(self.settings.topics.raw).inc()
        self.metrics.published_bytes.labels(self.settings.topics.raw).inc(len(payload))
        self.published += 1
        return envelope

    async def _send_riding_outages(self, envelope: RawFrame, records: list) -> None:
        """One transaction for the frame's records; through a broker outage, retried — after
        checking the raw topic, since a commit whose answer was lost may have landed — until
        ``publish_timeout_seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.publish_timeout_seconds
        since_ms = int(utc_now().timestamp() * 1000)
        delay = 1.0
        while True:
            try:
                async with self.producer.transaction():
                    for value, headers in records:
                        await self.producer.send(self.settings.topics.raw, value,
                                                 key=self.camera_id.encode(), headers=headers)
                return
            except (KafkaError, asyncio.TimeoutError, OSError) as error:
                if loop.time() > deadline:
                    raise
                log.warning("camera %s: publishing %s failed (%s); retrying", self.camera_id,
                            envelope.frame_id, type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            await self._restart_producer()
            try:
                if envelope.frame_id in await self.committed_frame_ids(since_ms):
                    return  # the lost answer was a commit after all
            except (KafkaError, asyncio.TimeoutError, OSError):
                pass  # still away: try again later

    async def _restart_producer(self) -> None:
        """A new producer with the same transactional id (it fences the failed one)."""
        try:
            await asyncio.wait_for(self.producer.stop(), 10)
        except (KafkaError, asyncio.TimeoutError, OSError):
            pass
        self.producer = transactional_producer(self.settings, f"streamer-camera.{self.camera_id}")
        try:
            await self.producer.start()
        except (KafkaError, asyncio.TimeoutError, OSError):
            pass  # started again at the next try

    async def committed_frame_ids(self, since_ms: int, margin_ms: int = 60000) -> set[str]:
        """Frame ids of this camera committed to the raw topic since ``since_ms`` (epoch ms,
        less ``margin_ms`` for clock skew): read with ``read_committed`` up to the end."""
        from aiokafka import TopicPartition

        from streamer.streaming.kafka_clients import admin_client, consumer as make_consumer

        topic = self.settings.topics.raw
        admin = admin_client(self.settings)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [TopicPartition(topic, p["partition"])
                      for t in described if t["topic"] == topic for p in t["partitions"]]
        reader = make_consumer(self.settings, group_id=None)
        await reader.start()
        found: set[str] = set()
        try:
            reader.assign(partitions)
            starts = await reader.offsets_for_times({tp: since_ms - margin_ms for tp in partitions})
            ends = await reader.end_offsets(partitions)
            remaining = set()
            for tp in partitions:
                start = starts.get(tp)
                if start is None or start.offset >= ends[tp]:
                    continue
                reader.seek(tp, start.offset)
                remaining.add(tp)
            deadline = asyncio.get_running_loop().time() + 120
            while remaining and asyncio.get_running_loop().time() < deadline:
                batches = await reader.getmany(*remaining, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        envelope = headers_dict(record.headers).get(ENVELOPE_HEADER)
                        if envelope and record.key == self.camera_id.encode():
                            found.add(RawFrame.model_validate_json(envelope).frame_id)
                for tp in list(remaining):
                    if await reader.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await reader.stop()
        return found

    async def publish_image(self, data: np.ndarray, header: fits.Header | None = None, *,
                            exposure_start: dt.datetime | None = None,
                            exposure_seconds: float = 0.0, frame_id: str | None = None,
                            source_name: str | None = None) -> RawFrame:
        """Publish a 2-D array (with its FITS header) as a frame — the camera-driver call."""
        if data.ndim != 2:
            raise FrameError(f"a frame must be 2-D, got shape {data.shape}")
        start = exposure_start or utc_now()
        frame_id = frame_id or f"{self.camera_id}:{start.strftime('%Y%m%dT%H%M%S.%f')}"
        payload = await asyncio.to_thread(image_bytes, data, header)
        return await self.publish_payload(
            payload, shape=data.shape, dtype=str(data.dtype),
            exposure_start=start, exposure_seconds=exposure_seconds, frame_id=frame_id,
            source_name=source_name,
        )


def exposure_from_header(header: fits.Header, fallback: dt.datetime) -> tuple[dt.datetime, float]:
    """Exposure start (``DATE-OBS``, UTC) and duration (``EXPTIME``/``EXPOSURE``) of a FITS
    header; ``fallback`` and 0 where they are missing or unreadable."""
    start = fallback
    text = header.get("DATE-OBS")
    if isinstance(text, str):
        try:
            start = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if start.tzinfo is None:
                start = start.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    exposure = header.get("EXPTIME", header.get("EXPOSURE", 0.0))
    try:
        exposure = float(exposure)
    except (TypeError, ValueError):
        exposure = 0.0
    return start, exposure


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
    await camera.publish_payload(
        frame.payload, shape=frame.shape, dtype=frame.dtype,
        exposure_start=frame.exposure_start, exposure_seconds=frame.exposure_seconds,
        frame_id=frame_id, source_name=name,
    )
    await asyncio.to_thread(published.add, candidate.key, frame_id)
    log.info("camera: published %s as %s", name, frame_id)


async def simulate(camera: CameraPublisher, *, count: int, size: int, cadence: float,
                   psf: PSFSpec, exposure_seconds: float = 1.0, seed: int = 0,
                   stop: asyncio.Event | None = None) -> list[RawFrame]:
    """Publish ``count`` synthetic 16-bit star fields, one every ``cadence`` seconds."""
    kernel = psf.build()
    loop = asyncio.get_running_loop()
    published = []
    started = loop.time()
    for index in range(count):
        if stop is not None and stop.is_set():
            break
        # The simulated exposure has just ended as the frame is read out.
        exposure_start = utc_now() - dt.timedelta(seconds=exposure_seconds)
        field = await loop.run_in_executor(
            None, lambda i=index: star_field((size, size), kernel,
                                             stars=max(20, size * size // 3000), seed=seed + i),
        )
        data = np.clip(np.round(field.image), 0, 65535).astype(np.uint16)
        header = simulated_header(index, exposure_seconds, exposure_start.replace(tzinfo=None), psf)
        header["DATE-OBS"] = exposure_start.isoformat(timespec="milliseconds")
        published.append(await camera.publish_image(
            data, header, exposure_start=exposure_start, exposure_seconds=exposure_seconds,
            frame_id=f"{camera.camera_id}:{exposure_start.strftime('%Y%m%dT%H%M%S.%f')}:{index:06d}",
            source_name=f"{camera.camera_id}_{index:06d}.fits",
        ))
        delay = started + (index + 1) * cadence - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return published
