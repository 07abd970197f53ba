"""The sink's archive: the night's inputs and restored frames, as an operator downloads them.

Layout under the archive folder::

    input/<night>/<camera>/<name>.fits        the frame as the camera published it (verified)
    output/<night>/<camera>/<name>.fits       the restored frame (float32, header + PSF)
    sources/<night>/<camera>/<name>.ecsv      its source catalogue (astropy ECSV)
    manifest/<night>/<camera>/<name>.json     frame id, status, timestamps, checksums, metrics
    deadletter/<night>/<camera>/<name>.json   why a frame could not be restored …
    deadletter/<night>/<camera>/<name>.fits   … and its input (``.fits.gz``, or ``.bin``
                                              when not FITS; none when the camera kept it)

``<night>`` is the UTC date of the evening the exposure's night began (exposure start less
12 hours); ``<name>`` the camera's file name (or the frame id) made safe for a path, with a
short hash of the frame id added when another frame already holds the name — two cameras, or
two nights, with the same file names never overwrite each other. Every write goes to a
temporary file renamed into place and manifests are merged, so a redelivered record rewrites
the same bytes. An input is archived only when its bytes match its envelope's size and SHA-256;
an input that was dead-lettered moves from ``input/`` to ``deadletter/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from streamer.errors import EnvelopeError, FrameError
from streamer.imaging.fits_io import image_bytes
from streamer.streaming.codec import FrameLimits, check_payload, decode_payload
from streamer.streaming.messages import (
    DeadLetter, FrameMetrics, RawFrame, RestoredFrame, Source, SourceCatalog,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
FOLDERS = ("input", "output", "sources", "manifest", "deadletter")
TEMPORARY_SUFFIX = ".tmp"


def safe(text: str) -> str:
    """``text`` made safe as one path component."""
    return _UNSAFE.sub("_", text).strip("._") or "frame"


def base_name(frame_id: str, source_name: str | None) -> str:
    """The camera's file name without its FITS suffixes, or the frame id; path-safe."""
    base = source_name or frame_id
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    return safe(base)


def night_of(moment: dt.datetime | None) -> str:
    """The observing night of an exposure: the UTC date of the evening it began."""
    if moment is None:
        return "unknown-night"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return (moment.astimezone(dt.timezone.utc) - dt.timedelta(hours=12)).date().isoformat()


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk leaves no partial file behind
            temporary.unlink(missing_ok=True)
        raise


def remove_temporaries(root: Path) -> int:
    """Delete the partial files a crash mid-write left under ``root``; how many."""
    removed = 0
    for folder in FOLDERS:
        for path in (root / folder).rglob(f".*{TEMPORARY_SUFFIX}"):
            try:
                path.unlink()
                removed += 1
            except OSError:  # gone meanwhile, or the disk is read-only: the writes will say
                pass
    return removed


DEAD_LETTER_SUFFIXES = (".fits", ".fits.gz", ".bin")


def payload_suffix(payload: bytes) -> str:
    """The file suffix of a dead letter's payload: what its bytes are, not what it was
    called."""
    if payload[:6] == b"SIMPLE":
        return ".fits"
    return ".fits.gz" if payload[:2] == b"\x1f\x8b" else ".bin"


def catalogue_ecsv(catalogue: SourceCatalog, rows: list[Source]) -> bytes:
    """A catalogue as astropy ECSV: one row per source (empty values where a source has no
    sky position or trail), the frame-level figures in the header's meta."""
    from astropy.table import Table

    names = list(Source.model_fields)
    names.remove("schema_version")
    columns = {name: [getattr(row, name) for row in rows] for name in names}
    table = Table(masked=True)
    for name in names:
        values = columns[name]
        missing = [value is None for value in values]
        kind = int if name in ("id", "flags") else float
        table[name] = np.ma.masked_array([kind(0) if value is None else value
                                          for value in values],
                                         mask=missing, dtype=kind)
    table.meta.update(catalogue.model_dump(mode="json", exclude={"payload_digest",
                                                                  "chunk_count"}))
    out = io.StringIO()
    table.write(out, format="ascii.ecsv")
    return out.getvalue().encode()


class Archive:
    """The sink's folder (see the module notes)."""

    def __init__(self, root: Path, limits: FrameLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits
        for folder in FOLDERS:
            try:
                (self.root / folder).mkdir(parents=True, exist_ok=True)
            except OSError:  # a read-only or full disk: the first write says so, and waits
                pass

    # -- where a frame goes ------------------------------------------------------------------
    def place(self, frame_id: str, camera_id: str | None, source_name: str | None,
              exposure_start: dt.datetime | None) -> Path:
        """``<night>/<camera>/<name>`` for a frame: the same for every record of it, never
        one another frame holds."""
        folder = Path(night_of(exposure_start)) / safe(camera_id or "unknown-camera")
        name = base_name(frame_id, source_name)
        holder = self._manifest_frame(folder / name)
        if holder is not None and holder != frame_id:
            name = f"{name}-{hashlib.sha256(frame_id.encode()).hexdigest()[:8]}"
        return folder / name

    def _manifest_frame(self, place: Path) -> str | None:
        path = self.root / "manifest" / f"{place}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text()).get("frame_id")

    def _merge_manifest(self, place: Path, frame_id: str, section: str, values: dict,
                        **fields: object) -> None:
        path = self.root / "manifest" / f"{place}.json"
        entry = json.loads(path.read_text()) if path.exists() else {}
        entry[section] = values
        entry["frame_id"] = frame_id
        entry.update(fields)
        write_atomic(path, json.dumps(entry, indent=2, sort_keys=True).encode())

    # -- what is stored ------------------------------------------------------------------------
    def store_raw(self, envelope: RawFrame, payload: bytes) -> Path:
        """Archive a verified input (raw-encoded pixels become a FITS file).

        Raises
        ------
        FrameError
            The payload does not match its envelope, or does not decode (the worker sends
            such a frame to dead letters; the sink archives it there).
        """
        check_payload(envelope, payload)
        if envelope.encoding == "raw":
            payload = image_bytes(decode_payload(envelope, payload, self.limits).data)
        place = self.place(envelope.frame_id, envelope.camera_id, envelope.source_name,
                           envelope.exposure_start)
        if (self.root / "deadletter" / f"{place}.json").exists():
            return self.root / "deadletter" / f"{place}.json"  # already judged: stays apart
        path = self.root / "input" / f"{place}.fits"
        write_atomic(path, payload)
        self._merge_manifest(place, envelope.frame_id, "input", envelope.model_dump(mode="json"))
        return path

    def store_restored(self, envelope: RestoredFrame, payload: bytes) -> Path:
        """Archive a restored frame (its payload checked against its envelope first)."""
        check_payload(envelope, payload)
        place = self.place(envelope.frame_id, envelope.camera_id, envelope.source_name,
                           envelope.exposure_start)
        path = self.root / "output" / f"{place}.fits"
        write_atomic(path, payload)
        self._merge_manifest(place, envelope.frame_id, "output",
                             envelope.model_dump(mode="json"), status="restored")
        return path

    def store_sources(self, catalogue: SourceCatalog, payload: bytes) -> Path:
        """Archive a frame's source catalogue as ECSV beside its restored frame (the rows
        checked against the envelope first; the frame-level figures in the table's meta and
        the manifest)."""
        check_payload(catalogue, payload)
        try:
            rows = [Source.model_validate(row) for row in json.loads(payload or b"[]")]
        except (ValueError, TypeError) as error:
            raise EnvelopeError(f"the catalogue's rows do not read: {error}") from error
        place = self.place(catalogue.frame_id, catalogue.camera_id, catalogue.source_name,
                           catalogue.exposure_start)
        path = self.root / "sources" / f"{place}.ecsv"
        write_atomic(path, catalogue_ecsv(catalogue, rows))
        self._merge_manifest(place, catalogue.frame_id, "sources",
                             catalogue.model_dump(mode="json"))
        return path

    def store_metrics(self, metrics: FrameMetrics) -> None:
        """Add a frame's metrics to its manifest."""
        place = self.place(metrics.frame_id, metrics.camera_id, metrics.source_name,
                           metrics.exposure_start)
        self._merge_manifest(place, metrics.frame_id, "metrics", metrics.model_dump(mode="json"))

    def store_dead_letter(self, letter: DeadLetter, payload: bytes) -> Path:
        """Archive a dead-lettered frame apart from the good ones: its reason, its input as
        received; an ``input/`` copy made before the verdict moves out."""
        frame_id = letter.frame_id or f"{letter.source_topic}-{letter.source_partition}-" \
                                      f"{letter.source_offsets[0] if letter.source_offsets else 0}"
        exposure, source = self._letter_origin(letter)
        place = self.place(frame_id, letter.camera_id, source, exposure)
        if not letter.payload_omitted:  # else the file stays at the camera, at source_path
            write_atomic(self.root / "deadletter" / f"{place}{payload_suffix(payload)}", payload)
        path = self.root / "deadletter" / f"{place}.json"
        write_atomic(path, letter.model_dump_json(indent=2).encode())
        (self.root / "input" / f"{place}.fits").unlink(missing_ok=True)
        self._merge_manifest(place, frame_id, "dead_letter", letter.model_dump(mode="json"),
                             status="dead-letter", reason=letter.reason)
        return path

    @staticmethod
    def _letter_origin(letter: DeadLetter) -> tuple[dt.datetime | None, str | None]:
        """Exposure start and file name from the dead letter's copy of the original
        envelope, when it had one; a camera's letter (a file that never became a frame) is
        filed under the night it was refused in."""
        try:
            envelope = json.loads(letter.original_headers.get("streamer-envelope", ""))
            start = dt.datetime.fromisoformat(str(envelope["exposure_start"]).replace("Z", "+00:00"))
            return start, envelope.get("source_name")
        except (ValueError, KeyError, TypeError, AttributeError):
            if letter.origin == "camera":
                return letter.failed_at, letter.source_name
            return None, letter.source_name

    def manifests(self) -> list[dict]:
        """Every manifest entry (for summaries, the quick-look page and tests)."""
        return [json.loads(p.read_text())
                for p in sorted((self.root / "manifest").rglob("*.json"))]


__all__ = ["Archive", "FrameError", "base_name", "night_of", "write_atomic"]
