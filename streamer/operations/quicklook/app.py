"""The quick-look web application: one page and the JSON API it uses.

``GET /`` the page (plain HTML and JavaScript, no build step); under ``/api/``:

==================================================  ==============================================
``frames?night=&camera=&status=&limit=``             the newest frames (rows of the table)
``frames/{night}/{camera}/{name}``                   one frame's whole manifest
``frames/{night}/{camera}/{name}/{input|output|psf}.png?side=``  its renderings
``frames/{night}/{camera}/{name}/{input|output}.fits``     its files
``frames/{night}/{camera}/{name}/sources.json?limit=``     its catalogue (highest S/N first)
``nights``                                           nights with counts
``nights/{night}.zip``                               a night's input/ and output/ (streamed)
``uploads`` (GET, POST multipart ``files``, ``camera``)    publish FITS files; their status
``status``                                           archive, counts, whether uploads work
==================================================  ==============================================
"""

from __future__ import annotations

import re
import zipfile
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import AsyncIterator, Iterator, Sequence

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse

from streamer.errors import NotInArchiveError
from streamer.operations.quicklook.catalog import Catalog, FrameRow
from streamer.operations.quicklook.previews import DEFAULT_SIDE, Previews
from streamer.operations.quicklook.uploads import UploadRecord, Uploads
from streamer.settings import StreamerSettings
from streamer.streaming.codec import FrameLimits
from streamer.streaming.messages import utc_now

_CAMERA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_READ_CHUNK = 1 << 20
MAX_FILES = 20  # files in one upload request


def page_html() -> str:
    """The page (package data)."""
    return resources.files("streamer.operations.quicklook").joinpath("page.html").read_text()


class _Zipper:
    """A write-only stream that hands what zipfile writes to a generator."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_stream(files: list[tuple[str, Path]], skipped: Sequence[str] = (),
               missing_name: str = "MISSING.txt") -> Iterator[bytes]:
    """A zip of ``files`` (stored, not compressed: FITS data barely compress) made as it is
    sent, so a night of gigabytes needs no temporary file. A file that cannot be read when
    its turn comes is left out like those in ``skipped``, and ``missing_name`` lists them."""
    sink = _Zipper()
    missing = list(skipped)
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, path in files:
            try:
                source = open(path, "rb")
            except OSError as error:  # removed or made unreadable since it was listed
                missing.append(f"{name}: left out, {error.strerror or 'it cannot be read'}")
                continue
            with source, archive.open(name, "w", force_zip64=True) as dest:
                while chunk := source.read(_READ_CHUNK):
                    dest.write(chunk)
                    yield sink.take()
        if missing:
            archive.writestr(missing_name, "Files not in this zip:\n" + "\n".join(missing) + "\n")
    yield sink.take()


def create_app(archive: Path, settings: StreamerSettings | None = None,
               max_upload_bytes: int = 512 << 20) -> FastAPI:
    """The application over ``archive``; uploads go to ``settings``' raw topic when its
    bootstrap servers are set."""
    catalog = Catalog(archive)
    previews = Previews()
    limits = FrameLimits(settings.max_frame_pixels if settings else 100_000_000,
                         settings.max_frame_bytes if settings else 512 << 20)
    uploads = Uploads(settings, limits, max_upload_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await uploads.close()

    app = FastAPI(title="streamer quick look", lifespan=lifespan, docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    _add_guards(app, max_upload_bytes)
    _add_archive_routes(app, catalog, previews, uploads.enabled, max_upload_bytes)
    _add_upload_routes(app, catalog, uploads, max_upload_bytes)
    return app


def _add_guards(app: FastAPI, max_upload_bytes: int) -> None:
    """The upload size guard and the archive's 404."""

    @app.middleware("http")
    async def bounded_uploads(request: Request, call_next):  # noqa: ANN001, ANN202
        # The multipart parser spools a body before the route sees it: refuse an oversize
        # body from its length, before a byte of it is read.
        if request.method == "POST" and request.url.path == "/api/uploads":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "uploads need a Content-Length"}, status_code=411)
            if int(length) > MAX_FILES * max_upload_bytes + (1 << 20):
                return JSONResponse({"detail": f"the request ({length} bytes) is above "
                                     f"{MAX_FILES} files of the {max_upload_bytes}-byte upload "
                                     "limit"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(NotInArchiveError)
    async def not_in_archive(_: Request, error: NotInArchiveError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)


def _add_archive_routes(app: FastAPI, catalog: Catalog, previews: Previews,
                        uploads_enabled: bool, max_upload_bytes: int) -> None:
    """The page, the frames, their renderings and files, the nights."""

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return page_html()

    @app.get("/api/status")
    async def status() -> dict:
        rows = await run_in_threadpool(catalog.refresh)
        return {"archive": catalog.root.name, "frames": len(rows),
                "restored": sum(r.status == "restored" for r in rows),
                "dead_letters": sum(r.status == "dead-letter" for r in rows),
                "uploads_enabled": uploads_enabled, "max_upload_bytes": max_upload_bytes}

    @app.get("/api/frames", response_model=list[FrameRow])
    async def frames(night: str | None = None, camera: str | None = None,
                     status: str | None = None, limit: int = 200) -> list[FrameRow]:
        limit = max(1, min(limit, 5000))
        return await run_in_threadpool(catalog.frames, night, camera, status, limit)

    @app.get("/api/frames/{night}/{camera}/{name}")
    async def frame(night: str, camera: str, name: str) -> dict:
        key = f"{night}/{camera}/{name}"
        row = await run_in_threadpool(catalog.frame, key)
        return {"row": row.model_dump(), "manifest": catalog.manifest(key)}

    _add_frame_file_routes(app, catalog, previews)

    @app.get("/api/nights")
    async def nights() -> list[dict]:
        return await run_in_threadpool(catalog.nights)

    @app.get("/api/nights/{night}.zip")
    async def night_zip(night: str) -> StreamingResponse:
        files, skipped = await run_in_threadpool(catalog.night_files, night)
        return StreamingResponse(
            zip_stream(files, skipped, f"{night}/MISSING.txt"), media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="streamer-{night}.zip"'})


def _add_frame_file_routes(app: FastAPI, catalog: Catalog, previews: Previews) -> None:
    """A frame's catalogue, renderings and files."""

    @app.get("/api/frames/{night}/{camera}/{name}/sources.json")
    async def sources(night: str, camera: str, name: str, limit: int = 5000) -> dict:
        return await run_in_threadpool(catalog.sources, f"{night}/{camera}/{name}",
                                       max(1, min(limit, 50000)))

    @app.get("/api/frames/{night}/{camera}/{name}/{kind}.png")
    async def rendering(night: str, camera: str, name: str, kind: str,
                        side: int = DEFAULT_SIDE) -> Response:
        if kind not in ("input", "output", "psf"):
            raise HTTPException(404, f"no {kind!r} rendering: input, output or psf")
        path = catalog.file(f"{night}/{camera}/{name}", "input" if kind == "input" else "output")
        if path.suffix == ".bin":
            raise NotInArchiveError("no picture: the input is not a FITS file (download it)")
        png = await run_in_threadpool(previews.get, path, "psf" if kind == "psf" else "frame",
                                      side)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/frames/{night}/{camera}/{name}/{kind}.fits")
    async def download(night: str, camera: str, name: str, kind: str) -> FileResponse:
        path = catalog.file(f"{night}/{camera}/{name}", kind)
        suffix = path.suffix
        return FileResponse(path, media_type="application/fits" if suffix == ".fits"
                            else "application/octet-stream",
                            filename=f"{camera}_{name}_{kind}{suffix}")


def _add_upload_routes(app: FastAPI, catalog: Catalog, uploads: Uploads,
                       max_upload_bytes: int) -> None:
    """Publishing FITS files from the browser and their status."""

    @app.get("/api/uploads")
    async def upload_list() -> list[dict]:
        rows = {row.frame_id: row for row in await run_in_threadpool(catalog.refresh)}
        return [_with_archive_status(record, rows) for record in list(uploads.records)]

    @app.post("/api/uploads")
    async def upload(files: list[UploadFile] = File(...),
                     camera: str = Form("upload")) -> JSONResponse:
        if not _CAMERA.match(camera):
            raise HTTPException(422, f"camera {camera!r}: letters, digits and ._- only")
        if len(files) > MAX_FILES:
            raise HTTPException(413, f"{len(files)} files in one request; at most {MAX_FILES}")
        results = []
        for item in files:
            payload, size = await _read_limited(item, max_upload_bytes)
            if payload is None:
                record = UploadRecord(upload_id="-", file_name=item.filename or "?",
                                      camera=camera, bytes=size, state="refused",
                                      uploaded_at=utc_now(),
                                      error=f"{item.filename}: {megabytes(size)} is above the "
                                            f"upload limit of {megabytes(max_upload_bytes)}")
                uploads.records.appendleft(record)
            else:
                record = await uploads.publish(item.filename or "upload.fits", payload, camera)
            results.append(record.model_dump(mode="json"))
        refused = all(r["state"] == "refused" for r in results)
        return JSONResponse(results, status_code=422 if refused else 200)


async def _read_limited(item: UploadFile, limit: int) -> tuple[bytes | None, int]:
    """The upload's bytes (None once it passes ``limit``: the rest is counted, not kept —
    the request's length bounds it) and its size."""
    parts, size = [], 0
    while chunk := await item.read(_READ_CHUNK):
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        else:
            parts.clear()
    return (b"".join(parts) if size <= limit else None), size


def megabytes(size: int) -> str:
    """A byte count as people read it: ``6.7 MB (7012345 bytes)``."""
    return f"{size / 1e6:.1f} MB ({size} bytes)"


def _with_archive_status(record: UploadRecord, rows: dict[str, FrameRow]) -> dict:
    """An upload record with what the archive knows of its frame."""
    values = record.model_dump(mode="json")
    row = rows.get(record.frame_id) if record.frame_id else None
    values["archive_status"] = row.status if row else None
    values["key"] = row.key if row else None
    values["reason"] = row.reason if row else None
    return values
