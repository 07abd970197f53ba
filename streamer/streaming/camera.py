"""The camera-side publisher: frames into the raw topic, one transaction per frame.

Three ways in: :meth:`CameraPublisher.publish_image` (a camera driver's Python call),
:func:`~streamer.streaming.watched_folder.watch_directory` (FITS files as the camera finishes
writing them, each once, also across restarts), and :func:`simulate` (synthetic star fields
at a cadence). Records are keyed
by camera id, so each camera's frames stay in order on one partition.

Everything that touches the disk or a whole frame — listing and reading files, decoding,
encoding, hashing, splitting into chunks, fsync of the state file — runs in worker threads, so
the event loop that keeps the producer's connection and transactions alive never stalls on a
big frame.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math

import numpy as np
from astropy.io import fits

from streamer.errors import FrameTooLargeError, PublishAbandonedError
from streamer.imaging.fits_io import image_bytes
from streamer.imaging.psf import PSFSpec
from streamer.imaging.simulate import simulated_header
from streamer.imaging.synthetic import star_field
from streamer.imaging.validation import checked_image
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from streamer.streaming.framing import frame_records, headers_dict, payload_digest
from streamer.streaming.kafka_clients import consumer as make_consumer, topic_partitions
from streamer.streaming.messages import ENVELOPE_HEADER, DeadLetter, RawFrame, utc_now
from streamer.streaming.publisher import OutgoingRecord, TransactionalPublisher

log = logging.getLogger(__name__)


class CameraPublisher:
    """Publishes one camera's frames; use as ``async with CameraPublisher(...) as camera``.

    Each frame is one transaction of the camera's :class:`~streamer.streaming.publisher.
    TransactionalPublisher` (``transactional.id = streamer-camera.<camera id>``), retried
    through broker outages for ``publish_timeout_seconds``.
    """

    def __init__(self, settings: StreamerSettings, camera_id: str,
                 metrics: StreamerMetrics | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.settings = settings
        self.camera_id = camera_id
        # Set by a shutdown (SIGTERM): a frame still in flight then gets shutdown_grace_seconds
        # to land, outage or not, and is abandoned uncommitted after it.
        self.stop = stop
        self.metrics = metrics or StreamerMetrics("camera")
        self.publisher = TransactionalPublisher(settings, f"streamer-camera.{camera_id}",
                                                f"camera {camera_id}")
        self.published = 0

    async def __aenter__(self) -> CameraPublisher:
        await self.publisher.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        grace = self.settings.shutdown_grace_seconds
        try:  # a producer closing against an absent broker must not outlast the grace
            await asyncio.wait_for(self.publisher.stop(), grace)
        except asyncio.TimeoutError:
            log.warning("camera %s: the producer did not close within %g s (broker away); "
                        "exiting anyway", self.camera_id, grace)

    async def publish_payload(self, payload: bytes, *, shape: tuple[int, int], dtype: str,
                              exposure_start: dt.datetime, exposure_seconds: float,
                              frame_id: str, encoding: str = "fits",
                              source_name: str | None = None) -> RawFrame:
        """Publish a payload (a FITS file's bytes, or raw pixels) as one frame.

        Raises
        ------
        FrameTooLargeError
            The payload is above ``max_frame_bytes``.
        KafkaError, asyncio.TimeoutError, OSError
            The broker stayed away for ``publish_timeout_seconds``.
        PublishAbandonedError
            Told to stop, the frame did not land within ``shutdown_grace_seconds``.
        """
        if len(payload) > self.settings.max_frame_bytes:
            raise FrameTooLargeError(
                f"{source_name or frame_id}: {len(payload)} bytes exceeds max_frame_bytes="
                f"{self.settings.max_frame_bytes}; raise the limit or bin the frame"
            )
        chunk_bytes = self.settings.chunk_bytes
        topic, key = self.settings.topics.raw, self.camera_id.encode()

        def prepare() -> tuple[RawFrame, list[OutgoingRecord]]:
            envelope = RawFrame(
                frame_id=frame_id, camera_id=self.camera_id,
                exposure_start=exposure_start, exposure_seconds=exposure_seconds,
                shape=shape, dtype=dtype, encoding=encoding, payload_bytes=len(payload),
                payload_digest=payload_digest(payload),
                chunk_count=max(1, math.ceil(len(payload) / chunk_bytes)),
                source_name=source_name, published_at=utc_now(),
            )
            return envelope, [OutgoingRecord(topic, key, value, headers) for value, headers in
                              frame_records(envelope.model_dump_json().encode(), "raw",
                                            payload, chunk_bytes)]

        envelope, records = await asyncio.to_thread(prepare)
        await self._publish(envelope, records)
        self.metrics.frames_published.labels(topic).inc()
        self.metrics.published_bytes.labels(topic).inc(len(payload))
        self.published += 1
        return envelope

    async def dead_letter_file(self, *, frame_id: str, source_name: str, source_path: str,
                               error: BaseException, payload: bytes | None,
                               file_size: int) -> DeadLetter:
        """Publish a dead letter for a file that is no frame (unreadable, empty, truncated, a
        cube...): its reason, and its bytes when ``payload`` is given (else its path only) —
        so the operators see it on the page and in the archive like any refused frame.

        Raises
        ------
        KafkaError, asyncio.TimeoutError, OSError
            The broker stayed away for ``publish_timeout_seconds``.
        PublishAbandonedError
            Told to stop, the letter did not land within ``shutdown_grace_seconds``.
        """
        body = payload or b""
        topic = self.settings.topics.dead_letter

        def prepare() -> tuple[DeadLetter, list[OutgoingRecord]]:
            letter = DeadLetter(
                origin="camera", frame_id=frame_id, camera_id=self.camera_id,
                source_topic=self.settings.topics.raw, source_name=source_name,
                source_path=source_path, error_type=type(error).__name__, reason=str(error),
                failed_at=utc_now(), worker_id=f"camera {self.camera_id}",
                payload_bytes=len(body) if payload is not None else file_size,
                payload_digest=payload_digest(body),
                chunk_count=max(1, math.ceil(len(body) / self.settings.chunk_bytes)),
                payload_omitted=payload is None,
            )
            return letter, [OutgoingRecord(topic, self.camera_id.encode(), value, headers)
                            for value, headers in frame_records(
                                letter.model_dump_json().encode(), "dead-letter", body,
                                self.settings.chunk_bytes)]

        letter, records = await asyncio.to_thread(prepare)
        publishing = asyncio.ensure_future(self.publisher.publish(
            records, what=f"dead letter {frame_id}",
            deadline=asyncio.get_running_loop().time() + self.settings.publish_timeout_seconds))
        if self.stop is None:
            await publishing
        else:
            await self._within_grace(publishing, frame_id)
        self.metrics.frames_published.labels(topic).inc()
        self.metrics.frames_failed.labels(type(error).__name__).inc()
        return letter

    async def _publish(self, envelope: RawFrame, records: list[OutgoingRecord]) -> None:
        """One transaction for the frame's records, through broker outages until
        ``publish_timeout_seconds`` — after each failure checking the raw topic, since a
        commit whose answer was lost may have landed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        since_ms = int(utc_now().timestamp() * 1000)

        async def landed() -> bool:
            return envelope.frame_id in await self.committed_frame_ids(since_ms)

        publishing = asyncio.ensure_future(self.publisher.publish(
            records, what=f"frame {envelope.frame_id}", landed=landed,
            deadline=started + self.settings.publish_timeout_seconds))
        if self.stop is None:
            await publishing
        else:
            await self._within_grace(publishing, envelope.frame_id)
        self.metrics.stage_seconds.labels("publish").observe(loop.time() - started)

    async def _within_grace(self, publishing: asyncio.Future, frame_id: str) -> None:
        """Await ``publishing``; once :attr:`stop` is set, for ``shutdown_grace_seconds`` at
        most, then cancel it and raise :class:`PublishAbandonedError`."""
        async def grace_over() -> None:
            await self.stop.wait()
            await asyncio.sleep(self.settings.shutdown_grace_seconds)

        timer = asyncio.ensure_future(grace_over())
        try:
            await asyncio.wait({publishing, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not publishing.done():
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
            raise PublishAbandonedError(
                f"frame {frame_id} was not committed within the shutdown grace "
                f"({self.settings.shutdown_grace_seconds:g} s; the broker did not answer); "
                "it is published at the next start")
        publishing.result()

    async def committed_frame_ids(self, since_ms: int, margin_ms: int = 60000) -> set[str]:
        """Frame ids of this camera committed to the raw topic since ``since_ms`` (epoch ms,
        less ``margin_ms`` for clock skew): read with ``read_committed`` up to the end."""
        partitions = await topic_partitions(self.settings, self.settings.topics.raw)
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
        """Publish a 2-D array (with its FITS header) as a frame — the camera-driver call.

        Raises
        ------
        FrameShapeError, FrameDtypeError
            Not a non-empty 2-D image of real numbers.
        """
        data = checked_image(data)
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
        try:
            published.append(await camera.publish_image(
                data, header, exposure_start=exposure_start, exposure_seconds=exposure_seconds,
                frame_id=f"{camera.camera_id}:{exposure_start.strftime('%Y%m%dT%H%M%S.%f')}"
                         f":{index:06d}",
                source_name=f"{camera.camera_id}_{index:06d}.fits",
            ))
        except PublishAbandonedError as error:
            log.warning("camera %s: %s", camera.camera_id, error)
            break
        delay = started + (index + 1) * cadence - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return published
