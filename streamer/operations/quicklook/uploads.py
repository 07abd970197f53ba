"""FITS files uploaded from the page, checked and published to the raw topic — the seed
system's "create task" — with what became of each.

A file is refused with a clear reason before anything is published when it is larger than
the upload limit, is not a FITS file, holds no 2-D image, or is larger than the worker's
frame limits (checked from the header before decompressing). Accepted files go out as the
camera ``upload`` (or the one the form names) through the same transactional producer a
camera uses; their status then follows the archive (restored, dead letter) by frame id.

When the broker does not answer within ``ANSWER_SECONDS`` the request is answered at once
with the state ``queued``: the file is kept in memory (``MAX_QUEUED`` at most) and published
when the broker is back, within ``publish_timeout_seconds``, or marked ``failed`` with the
reason — never a request left hanging, never a file published while the page says it was not.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from pathlib import PurePosixPath

from aiokafka.errors import KafkaError
from pydantic import BaseModel

from streamer.errors import FrameError, StreamerError, UploadError
from streamer.imaging.fits_io import read_image_bytes
from streamer.settings import StreamerSettings
from streamer.streaming.camera import CameraPublisher, exposure_from_header
from streamer.streaming.codec import FrameLimits, fits_image_shape
from streamer.streaming.framing import payload_digest
from streamer.streaming.messages import utc_now

KEPT = 200  # upload records remembered (newest)
ANSWER_SECONDS = 5.0  # an upload waits this long for the broker before it is answered queued
MAX_QUEUED = 10  # uploads held in memory while the broker is away


class UploadRecord(BaseModel):
    """One uploaded file and what became of it."""

    upload_id: str
    file_name: str
    camera: str
    bytes: int
    state: str  # published | queued (broker away, published when back) | refused | failed
    frame_id: str | None = None
    error: str | None = None
    note: str | None = None
    uploaded_at: dt.datetime


class _Checked(BaseModel):
    shape: tuple[int, ...]
    dtype: str
    exposure_start: dt.datetime
    exposure_seconds: float


def check_upload(name: str, payload: bytes, limits: FrameLimits, max_bytes: int) -> _Checked:
    """The frame in an uploaded file, or UploadError saying why it cannot be published."""
    if not name.lower().endswith((".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")):
        raise UploadError(f"{name}: only FITS files (.fits, .fit, .fts, .fz, .fits.gz) are taken")
    if len(payload) > max_bytes:
        raise UploadError(f"{name}: {len(payload)} bytes is above the upload limit of "
                          f"{max_bytes} bytes")
    if payload[:6] != b"SIMPLE" and not payload[:2] == b"\x1f\x8b":
        raise UploadError(f"{name}: not a FITS file (it does not start with SIMPLE)")
    try:
        shape, itemsize = fits_image_shape(payload)
        if len(shape) != 2:
            raise UploadError(f"{name}: the image has {len(shape)} axes {shape}; frames are 2-D")
        limits.check(shape, itemsize, name)
        image = read_image_bytes(payload)
    except FrameError as error:
        raise UploadError(f"{name}: {error}") from error
    start, exposure = exposure_from_header(image.header, utc_now())
    return _Checked(shape=image.data.shape, dtype=str(image.data.dtype),
                    exposure_start=start, exposure_seconds=exposure)


class Uploads:
    """Publishes uploads through one camera producer per camera id (started on first use)."""

    def __init__(self, settings: StreamerSettings | None, limits: FrameLimits,
                 max_bytes: int) -> None:
        self.settings = settings
        self.limits = limits
        self.max_bytes = max_bytes
        self.records: collections.deque[UploadRecord] = collections.deque(maxlen=KEPT)
        self._cameras: dict[str, CameraPublisher] = {}
        self._sending: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        """Whether a broker is configured to publish to."""
        return self.settings is not None and bool(self.settings.kafka.bootstrap_servers)

    async def publish(self, name: str, payload: bytes, camera: str) -> UploadRecord:
        """Check and publish one file; the record says what happened (refusals included),
        within :data:`ANSWER_SECONDS` (``queued`` while the broker is away)."""
        name = PurePosixPath(name.replace("\\", "/")).name or "upload.fits"
        record = UploadRecord(upload_id=uuid.uuid4().hex[:12], file_name=name, camera=camera,
                              bytes=len(payload), state="refused", uploaded_at=utc_now())
        try:
            if not self.enabled:
                raise UploadError("no Kafka configured: start `streamer view` with "
                                  "--bootstrap-servers to publish uploads")
            checked = await asyncio.to_thread(check_upload, name, payload, self.limits,
                                              self.max_bytes)
            if len(self._sending) >= MAX_QUEUED:
                raise UploadError(f"{name}: the broker is away and {len(self._sending)} "
                                  "uploads already wait for it; upload again when it is back")
        except UploadError as error:
            record.error = str(error)
            self.records.appendleft(record)
            return record
        digest = payload_digest(payload).partition(":")[2]
        record.state, record.frame_id = "publishing", f"{camera}:{name}:{digest[:12]}"
        task = asyncio.create_task(self._send(record, payload, checked))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        await asyncio.wait({task}, timeout=ANSWER_SECONDS)
        if not task.done():
            record.state = "queued"
            record.note = ("the broker does not answer: the file is kept here and published "
                           "when it is back (not yet in the raw topic)")
        self.records.appendleft(record)
        return record

    async def _send(self, record: UploadRecord, payload: bytes, checked: _Checked) -> None:
        """Publish a checked upload, through a broker outage for ``publish_timeout_seconds``;
        the record says how it ended."""
        assert self.settings is not None and record.frame_id is not None
        deadline = asyncio.get_running_loop().time() + self.settings.publish_timeout_seconds
        try:
            publisher = await self._camera(record.camera, deadline)
            await publisher.publish_payload(
                payload, shape=checked.shape, dtype=checked.dtype,
                exposure_start=checked.exposure_start,
                exposure_seconds=checked.exposure_seconds, frame_id=record.frame_id,
                source_name=record.file_name)
        except asyncio.CancelledError:
            record.state = "failed"
            record.error = f"{record.file_name}: the page stopped before the broker came back"
            raise
        except (KafkaError, asyncio.TimeoutError, OSError, StreamerError) as error:
            record.state, record.note = "failed", None
            record.error = (f"{record.file_name}: not published, the broker stayed away "
                            f"({type(error).__name__}: {error}); upload it again")
            return
        record.state, record.note = "published", None

    async def _camera(self, camera: str, deadline: float) -> CameraPublisher:
        """The camera's publisher, started on first use — retried while the broker is away,
        until ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            publisher = self._cameras.get(camera)
            while publisher is None:
                assert self.settings is not None
                candidate = CameraPublisher(self.settings, camera)
                try:
                    await candidate.__aenter__()
                except (KafkaError, OSError, StreamerError):
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(2.0)
                    continue
                publisher = self._cameras[camera] = candidate
            return publisher

    async def close(self) -> None:
        """Give up uploads still waiting for the broker; stop the producers."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        for publisher in self._cameras.values():
            await publisher.__aexit__(None, None, None)
        self._cameras.clear()
