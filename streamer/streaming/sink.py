"""``streamer sink``: archive each restored frame with its raw input, the streaming form of
"download the night's results".

Layout under ``--out DIR``::

    input/<name>.fits      the frame as the camera published it
    output/<name>.fits     the restored frame (float32, input header + provenance)
    manifest/<name>.json   frame id, timestamps, checksums and the frame's metrics

``<name>`` is the camera's file name (or the frame id) made safe for a path. Every write goes
to a temporary file renamed into place and the manifest is merged, so a redelivered record
rewrites the same bytes: the archive is idempotent, and offsets are committed only after the
files are on disk (nothing is lost).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

from aiokafka import TopicPartition
from pydantic import ValidationError

from streamer.errors import FrameError
from streamer.imaging.fits_io import image_bytes
from streamer.streaming.codec import decode_payload
from streamer.streaming.framing import AssembledFrame, PartitionAssembler, headers_dict
from streamer.streaming.kafka_clients import consumer
from streamer.streaming.messages import FrameMetrics, RawFrame, RestoredFrame
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def archive_name(frame_id: str, source_name: str | None) -> str:
    """A file-system-safe base name for a frame."""
    base = source_name or frame_id
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    return _UNSAFE.sub("_", base).strip("._") or "frame"


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


class Archive:
    """The sink's folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for folder in ("input", "output", "manifest"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    def _merge_manifest(self, name: str, section: str, values: dict) -> None:
        path = self.root / "manifest" / f"{name}.json"
        entry = json.loads(path.read_text()) if path.exists() else {}
        entry[section] = values
        entry["frame_id"] = values.get("frame_id", entry.get("frame_id"))
        _write_atomic(path, json.dumps(entry, indent=2, sort_keys=True).encode())

    def store_raw(self, envelope: RawFrame, payload: bytes) -> Path:
        """Write the input frame (raw-encoded pixels become a FITS file)."""
        name = archive_name(envelope.frame_id, envelope.source_name)
        if envelope.encoding == "raw":
            payload = image_bytes(decode_payload(envelope, payload).data)
        path = self.root / "input" / f"{name}.fits"
        _write_atomic(path, payload)
        self._merge_manifest(name, "input", envelope.model_dump(mode="json"))
        return path

    def store_restored(self, envelope: RestoredFrame, payload: bytes) -> Path:
        """Write the restored frame."""
        name = archive_name(envelope.frame_id, envelope.source_name)
        path = self.root / "output" / f"{name}.fits"
        _write_atomic(path, payload)
        self._merge_manifest(name, "output", envelope.model_dump(mode="json"))
        return path

    def store_metrics(self, metrics: FrameMetrics, source_name: str | None) -> None:
        """Add the frame's metrics to its manifest."""
        name = archive_name(metrics.frame_id, source_name)
        self._merge_manifest(name, "metrics", metrics.model_dump(mode="json"))

    def manifests(self) -> list[dict]:
        """Every manifest entry (for summaries and tests)."""
        return [json.loads(p.read_text()) for p in sorted((self.root / "manifest").glob("*.json"))]


class Sink:
    """Consumes the raw, restored and metrics topics into an :class:`Archive`."""

    def __init__(self, settings: StreamerSettings, out_dir: Path, group_id: str = "streamer-sink",
                 metrics: StreamerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics or StreamerMetrics("sink")
        self.archive = Archive(out_dir)
        topics = settings.topics
        self.topics = (topics.raw, topics.restored, topics.metrics)
        self.consumer = consumer(settings, *self.topics, group_id=group_id)
        self.assemblers: dict[TopicPartition, PartitionAssembler] = {}
        self.restored_frames: set[str] = set()

    def _store(self, tp: TopicPartition, item: AssembledFrame) -> None:
        if item.error is not None:
            log.error("sink: %s[%d]@%s: %s", tp.topic, tp.partition, item.offsets, item.error)
            return
        try:
            self.metrics.frames_consumed.labels(tp.topic).inc()
            self.metrics.consumed_bytes.labels(tp.topic).inc(len(item.payload))
            if tp.topic == self.settings.topics.raw:
                raw = RawFrame.model_validate_json(item.envelope_json)
                self.archive.store_raw(raw, item.payload)
                self.metrics.frames_archived.labels("input").inc()
            else:
                restored = RestoredFrame.model_validate_json(item.envelope_json)
                self.archive.store_restored(restored, item.payload)
                self.metrics.frames_archived.labels("output").inc()
                self.restored_frames.add(restored.frame_id)
        except (ValidationError, FrameError) as error:
            # The worker's dead-letter topic is where bad frames go; the sink reports and
            # goes on rather than stall the archive.
            log.error("sink: %s[%d]@%s: %s", tp.topic, tp.partition, item.offsets, error)

    async def run(self, stop: asyncio.Event, expected_frames: int | None = None) -> None:
        """Archive until ``stop`` is set, or until ``expected_frames`` restored frames are in."""
        await self.consumer.start()
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=300, max_records=256)
                commits: dict[TopicPartition, int] = {}
                for tp, records in batches.items():
                    if tp.topic == self.settings.topics.metrics:
                        for record in records:
                            await loop.run_in_executor(None, self._store_metrics, record.value)
                        commits[tp] = records[-1].offset + 1
                        continue
                    assembler = self.assemblers.setdefault(
                        tp, PartitionAssembler(tp.partition, self.settings.max_frame_bytes))
                    for record in records:
                        assembler.add(record.offset, record.value, headers_dict(record.headers))
                    for item in assembler.ready():
                        await loop.run_in_executor(None, self._store, tp, item)
                        commits[tp] = assembler.finish(item)
                if commits:
                    await self.consumer.commit(commits)
                if expected_frames is not None and len(self.restored_frames) >= expected_frames:
                    stop.set()
        finally:
            await self.consumer.stop()

    def _store_metrics(self, value: bytes) -> None:
        try:
            metrics = FrameMetrics.model_validate_json(value)
        except ValidationError as error:
            log.error("sink: metrics record fails its schema: %s", error)
            return
        self.archive.store_metrics(metrics, metrics.source_name)
