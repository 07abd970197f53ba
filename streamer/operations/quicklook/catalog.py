"""The frames of the sink's archive as rows a person reads, kept current as the sink writes.

A frame is known by its place in the archive, ``<night>/<camera>/<name>`` (see
:mod:`streamer.streaming.archive`): its manifest holds the input and output envelopes, the
metrics and, for a dead letter, the reason. :class:`Catalog` reads each manifest once per
change (cached by modification time) and answers the page's questions: the newest frames, a
frame by its place or frame id, the nights, the files to download. Every path it hands out
is built from checked components and resolved inside the archive, so no request can read
outside it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from streamer.errors import NotInArchiveError
from streamer.streaming.archive import DEAD_LETTER_SUFFIXES

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_NIGHT = re.compile(r"^(\d{4}-\d{2}-\d{2}|unknown-night)$")


class FrameRow(BaseModel):
    """One frame as the page's table shows it."""

    key: str  # <night>/<camera>/<name>
    night: str
    camera: str
    name: str
    frame_id: str
    source_name: str | None = None
    status: str  # restored | dead-letter | received
    reason: str | None = None
    error_type: str | None = None
    refused_by: str | None = None  # camera | worker, for a dead letter
    exposure_start: str | None = None
    arrived: str | None = None  # when it reached the stream: published, or refused
    restored_at: str | None = None
    processing_seconds: float | None = None
    latency_seconds: float | None = None
    latency_from: str | None = None  # exposure (end) | published (an old frame sent late)
    shape: list[int] | None = None
    fwhm_before: float | None = None
    fwhm_after: float | None = None
    psf_fwhm: float | None = None
    psf_method: str | None = None
    sources: int | None = None
    moat_depth: float | None = None
    iterations: int | None = None
    stopped_by: str | None = None
    has_input: bool = False
    has_preview: bool = False  # the input is a FITS file the page can draw
    has_output: bool = False
    has_sources: bool = False  # a source catalogue is archived
    catalogue_sources: int | None = None
    limiting_mag: float | None = None
    trails: int | None = None
    updated: float = 0.0  # manifest modification time (epoch seconds)


def check_component(text: str, what: str = "name") -> str:
    """``text`` if it is one safe path component, else NotInArchiveError."""
    if not _COMPONENT.match(text) or text in {".", ".."}:
        raise NotInArchiveError(f"{what} {text!r} is not a frame of this archive")
    return text


def _processing_seconds(metrics: dict) -> float | None:
    stages = metrics.get("stage_seconds") or {}
    total = sum(stages.get(k, 0.0) for k in ("decode", "psf", "median", "richardson_lucy",
                                              "encode"))
    return total or None


LATE_PUBLISH_SECONDS = 60.0  # published this long after its exposure: an old frame sent now


def _latency(metrics: dict) -> tuple[float | None, str | None]:
    """Seconds to the restored frame: from the exposure's end, or — for an old frame
    published late (an upload of last month's plate) — from its publication."""
    latency = metrics.get("exposure_to_restored_seconds")
    try:
        published = dt.datetime.fromisoformat(metrics["published_at"].replace("Z", "+00:00"))
        restored = dt.datetime.fromisoformat(metrics["restored_at"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return latency, "exposure" if latency is not None else None
    waited = (published - restored).total_seconds() + (latency or 0.0)
    if latency is None or waited > LATE_PUBLISH_SECONDS:
        return (restored - published).total_seconds(), "published"
    return latency, "exposure"


def row_from_manifest(key: str, entry: dict, updated: float, root: Path) -> FrameRow:
    """A :class:`FrameRow` from a manifest entry (any sections missing)."""
    night, camera, name = key.split("/")
    source = entry.get("input") or entry.get("output") or {}
    metrics = entry.get("metrics") or {}
    quality = metrics.get("quality") or {}
    psf = metrics.get("psf") or (entry.get("output") or {}).get("psf_summary") or {}
    letter = entry.get("dead_letter") or {}
    catalogue = entry.get("sources") or {}
    status = entry.get("status") or ("restored" if entry.get("output") else "received")
    latency, latency_from = _latency(metrics)
    inputs = [root / "input" / f"{key}.fits",
              *(root / "deadletter" / f"{key}{suffix}" for suffix in DEAD_LETTER_SUFFIXES)]
    stored = next((path for path in inputs if path.is_file()), None)
    arrived = (source.get("published_at") or letter.get("failed_at")
               or dt.datetime.fromtimestamp(updated, dt.timezone.utc).isoformat())
    return FrameRow(
        key=key, night=night, camera=camera, name=name,
        frame_id=entry.get("frame_id", name),
        source_name=source.get("source_name") or letter.get("source_name"),
        status=status, reason=entry.get("reason") or letter.get("reason"),
        error_type=letter.get("error_type"),
        refused_by=letter.get("origin", "worker") if letter else None,
        exposure_start=source.get("exposure_start") or metrics.get("exposure_start"),
        arrived=arrived,
        restored_at=metrics.get("restored_at") or (entry.get("output") or {}).get("restored_at"),
        processing_seconds=_processing_seconds(metrics),
        latency_seconds=latency, latency_from=latency_from,
        shape=source.get("shape"),
        fwhm_before=quality.get("fwhm_before"), fwhm_after=quality.get("fwhm_after"),
        psf_fwhm=psf.get("fwhm"), psf_method=psf.get("method"),
        sources=quality.get("sources"), moat_depth=quality.get("moat_depth"),
        iterations=metrics.get("iterations"), stopped_by=metrics.get("stopped_by"),
        has_input=stored is not None,
        has_preview=stored is not None and stored.suffix != ".bin"
        and stored.stat().st_size > 0,
        has_output=(root / "output" / f"{key}.fits").is_file(),
        has_sources=bool(catalogue) and (root / "sources" / f"{key}.ecsv").is_file(),
        catalogue_sources=catalogue.get("count"), limiting_mag=catalogue.get("limiting_mag"),
        trails=catalogue.get("trails"),
        updated=updated)


class Catalog:
    """The archive's frames, re-read as manifests change (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._rows: dict[str, tuple[int, FrameRow]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> list[FrameRow]:
        """Every frame, newest arrival first (manifests read again only when changed)."""
        seen: dict[str, tuple[int, FrameRow]] = {}
        manifest = self.root / "manifest"
        with self._lock:
            for path, stamp in _manifests(manifest):
                key = path.relative_to(manifest).with_suffix("").as_posix()
                cached = self._rows.get(key)
                if cached is not None and cached[0] == stamp:
                    seen[key] = cached
                    continue
                try:
                    entry = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # being replaced right now: next refresh
                seen[key] = (stamp, row_from_manifest(key, entry, stamp / 1e9, self.root))
            self._rows = seen
            rows = [row for _, row in seen.values()]
        # Newest arrival first: an old frame sent now (an upload) is the newest, not lost
        # among its exposure's night.
        rows.sort(key=lambda r: (_instant(r.arrived), r.updated), reverse=True)
        return rows

    def frames(self, night: str | None = None, camera: str | None = None,
               status: str | None = None, limit: int = 200) -> list[FrameRow]:
        """The newest ``limit`` frames, optionally of one night, camera or status."""
        rows = [r for r in self.refresh()
                if (night is None or r.night == night) and (camera is None or r.camera == camera)
                and (status is None or r.status == status)]
        return rows[:limit]

    def frame(self, key: str) -> FrameRow:
        """One frame by its place ``<night>/<camera>/<name>``."""
        night, camera, name = self.split(key)
        path = self.root / "manifest" / night / camera / f"{name}.json"
        if not path.is_file():
            raise NotInArchiveError(f"no frame {key!r} in the archive")
        self.refresh()
        cached = self._rows.get(f"{night}/{camera}/{name}")
        if cached is None:
            raise NotInArchiveError(f"no frame {key!r} in the archive")
        return cached[1]

    def manifest(self, key: str) -> dict:
        """The whole manifest entry of a frame."""
        night, camera, name = self.split(key)
        path = self.root / "manifest" / night / camera / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise NotInArchiveError(f"no frame {key!r} in the archive") from None

    def nights(self) -> list[dict[str, object]]:
        """Each night with its frame counts by status, newest first."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.refresh():
            night = counts.setdefault(row.night, {"frames": 0, "restored": 0, "dead-letter": 0})
            night["frames"] += 1
            if row.status in night:
                night[row.status] += 1
        return [{"night": night, **values} for night, values in sorted(counts.items(), reverse=True)]

    @staticmethod
    def split(key: str) -> tuple[str, str, str]:
        """``<night>/<camera>/<name>`` checked component by component."""
        parts = key.split("/")
        if len(parts) != 3:
            raise NotInArchiveError(f"{key!r} is not <night>/<camera>/<name>")
        night, camera, name = parts
        if not _NIGHT.match(night):
            raise NotInArchiveError(f"{night!r} is not a night (YYYY-MM-DD)")
        return night, check_component(camera, "camera"), check_component(name, "frame")

    def file(self, key: str, kind: str) -> Path:
        """The archived FITS (or raw bytes) of a frame: ``input`` or ``output``."""
        night, camera, name = self.split(key)
        if kind == "output":
            candidates = [self.root / "output" / night / camera / f"{name}.fits"]
        elif kind == "input":
            candidates = [self.root / "input" / night / camera / f"{name}.fits",
                          *(self.root / "deadletter" / night / camera / f"{name}{suffix}"
                            for suffix in DEAD_LETTER_SUFFIXES)]
        else:
            raise NotInArchiveError(f"{kind!r} is not input or output")
        for path in candidates:
            if path.is_file():
                return self.inside(path)
        raise NotInArchiveError(f"frame {key!r} has no {kind} file in the archive")

    def sources(self, key: str, limit: int = 5000) -> dict:
        """A frame's catalogue for the page: its figures and the ``limit`` sources of highest
        S/N (id, x, y, ra, dec, mag, snr, flags), from the archived ECSV."""
        from astropy.table import Table

        night, camera, name = self.split(key)
        path = self.root / "sources" / night / camera / f"{name}.ecsv"
        if not path.is_file():
            raise NotInArchiveError(f"frame {key!r} has no source catalogue in the archive")
        table = Table.read(self.inside(path), format="ascii.ecsv")
        order = np.argsort(-np.asarray(table["snr"], dtype=float))[:limit]
        columns = ("id", "x", "y", "ra", "dec", "mag", "mag_error", "snr", "flags")
        rows = [{column: _cell(table[column][index]) for column in columns}
                for index in order]
        figures = {k: table.meta.get(k) for k in ("count", "limiting_mag", "seeing", "trails",
                                                  "zero_point", "wcs", "band", "shape")}
        return {"figures": figures, "sources": rows}

    def night_files(self, night: str) -> tuple[list[tuple[str, Path]], list[str]]:
        """A night's files for its zip — (name in the zip, path) of its inputs, outputs and
        dead letters (reasons and bytes) — and a line for each file left out (a link that
        leads out of the archive, a file that cannot be read): one bad file never costs the
        night its download."""
        if not _NIGHT.match(night):
            raise NotInArchiveError(f"{night!r} is not a night (YYYY-MM-DD)")
        files, skipped = [], []
        for folder in ("input", "output", "deadletter"):
            base = self.root / folder / night
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*")):
                if path.name.startswith(".") or path.is_dir():
                    continue
                name = f"{night}/{folder}/{path.relative_to(base).as_posix()}"
                try:
                    resolved = self.inside(path)
                except NotInArchiveError:
                    skipped.append(f"{name}: left out, a link that leads outside the archive")
                    continue
                if not resolved.is_file() or not os.access(resolved, os.R_OK):
                    skipped.append(f"{name}: left out, it cannot be read")
                    continue
                files.append((name, resolved))
        if not files and not skipped:
            raise NotInArchiveError(f"night {night} has no frames in the archive")
        return files, skipped

    def inside(self, path: Path) -> Path:
        """``path`` resolved, if it lies in the archive (symbolic links cannot lead out)."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise NotInArchiveError(f"{self.relative(path)} leads outside the archive")
        return resolved

    def relative(self, path: Path) -> str:
        """``path`` as the archive names it (never the server's absolute path)."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).name


def _cell(value) -> float | int | None:
    """A table cell as JSON: None when masked or not finite."""
    if value is None or np.ma.is_masked(value):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    return number if np.isfinite(number) else None


def _instant(text: str | None) -> float:
    """An ISO time as epoch seconds (0 when missing or unreadable), for sorting."""
    try:
        moment = dt.datetime.fromisoformat((text or "").replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _manifests(folder: Path) -> list[tuple[Path, int]]:
    """Every ``*.json`` under ``folder`` (two levels: night/camera) with its mtime in ns."""
    found = []
    try:
        nights = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    for night in nights:
        if not night.is_dir() or night.name.startswith("."):
            continue
        for camera in os.scandir(night.path):
            if not camera.is_dir() or camera.name.startswith("."):
                continue
            for entry in os.scandir(camera.path):
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        found.append((Path(entry.path), entry.stat().st_mtime_ns))
                    except FileNotFoundError:
                        continue
    return found
