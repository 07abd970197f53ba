"""The message contract between camera, workers and downstream systems.

Frames travel as one or more Kafka records: the record **headers** carry the JSON envelope
(``streamer-envelope``) and the chunk position (``streamer-chunk``: ``index/count``); the
record **value** carries that chunk of the payload. Metrics travel as a JSON value. All
chunks of one frame are written in one Kafka transaction, so a ``read_committed`` consumer
never sees part of a frame. ``schemas/`` holds the JSON Schema of each model
(``streamer schemas``); a test fails when they drift.

Versions: 2 added the PSF summary (``psf_summary`` of restored frames, ``psf`` of metrics),
the Richardson–Lucy stopping figures, the moat depth, device stage times and bytes moved; all
optional, so version-1 records still validate. 3 added dead letters from the camera (a file
that never became a frame): ``origin``, ``source_name``, ``source_path``, and no source
partition or offsets; and each frame's source catalogue (``SourceCatalog``, ``Source``). 4
names each payload's digest with its algorithm (``payload_digest``, ``input_digest``:
``blake3:<hex>`` as streamer writes them, or ``sha256:<hex>``), in place of version 3's
``payload_sha256`` and ``input_sha256``, which still read as ``sha256:`` digests. BLAKE3, a
cryptographic hash as SHA-256 is, takes a third of its time on one core here (0.04 s for a
4096² restored frame's 151 MB, against 0.13 s with the CPU's SHA instructions).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 4
# A payload's digest: its algorithm, a colon, 64 hex digits (both give 256 bits).
DIGEST_PATTERN = r"^(blake3|sha256):[0-9a-f]{64}$"
DIGEST_DESCRIPTION = "algorithm:hex of the payload's bytes; blake3 (streamer's) or sha256"
# Version 3's fields, read as SHA-256 digests under their version-4 names.
_SHA256_FIELDS = {"payload_sha256": "payload_digest", "input_sha256": "input_digest"}
ENVELOPE_HEADER = "streamer-envelope"
CHUNK_HEADER = "streamer-chunk"
KIND_HEADER = "streamer-kind"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1, 2, 3, 4] = Field(default=SCHEMA_VERSION,
                                                description="contract version")

    @model_validator(mode="before")
    @classmethod
    def _named_digests(cls, data: Any) -> Any:
        """Version 1-3 records' ``payload_sha256``/``input_sha256`` as ``sha256:`` digests."""
        if isinstance(data, dict) and any(old in data for old in _SHA256_FIELDS):
            data = dict(data)
            for old, new in _SHA256_FIELDS.items():
                if old in data and new not in data:
                    data[new] = f"sha256:{data.pop(old)}"
        return data


class FramePayload(_Message):
    """Fields every frame envelope has: who, when, and how to read the payload."""

    frame_id: str = Field(min_length=1, max_length=200, description="unique id of the exposure")
    camera_id: str = Field(min_length=1, max_length=100)
    exposure_start: dt.datetime = Field(description="UTC start of the exposure")
    exposure_seconds: float = Field(ge=0)
    shape: tuple[int, int] = Field(description="rows, columns")
    dtype: str = Field(description="numpy dtype of the pixels, e.g. uint16, float32")
    encoding: Literal["fits", "raw"] = Field(
        description="fits: a whole FITS file; raw: little-endian C-order pixel bytes"
    )
    payload_bytes: int = Field(ge=0)
    payload_digest: str = Field(pattern=DIGEST_PATTERN, description=DIGEST_DESCRIPTION)
    chunk_count: int = Field(ge=1)
    source_name: str | None = Field(default=None, description="file name at the camera")


class RawFrame(FramePayload):
    """A frame as the camera published it."""

    kind: Literal["raw"] = "raw"
    published_at: dt.datetime


class PSFSummary(_Message):
    """The PSF a frame was restored with, and how it was obtained."""

    method: str = Field(description="empirical | streak | moffat (measured from this frame), "
                                    "previous (the camera's recent PSF), fallback (configured), "
                                    "configured | given")
    fwhm: float = Field(description="FWHM, pixels (geometric mean of the axes)")
    ellipticity: float = Field(description="1 - b/a")
    angle: float = Field(description="major axis, degrees from +x")
    size: int = Field(description="side of the PSF array, pixels")
    stars_used: int
    stars_found: int
    fallback: bool = Field(default=False, description="no PSF could be measured on this frame")
    warning: str | None = None
    seconds: float = Field(default=0.0, description="time spent measuring")


class RestoredFrame(FramePayload):
    """A restored frame (encoding fits, float32) and where it came from."""

    kind: Literal["restored"] = "restored"
    published_at: dt.datetime = Field(description="when the camera published the input")
    restored_at: dt.datetime
    input_digest: str = Field(pattern=DIGEST_PATTERN, description=DIGEST_DESCRIPTION)
    worker_id: str
    device: str
    window: int
    psf: str
    iterations: int
    psf_summary: PSFSummary | None = None
    restored_as: Literal["estimate", "residual"] = Field(
        default="estimate", description="the levelled RL estimate, or the restoration with "
                                        "the data's residuals added back")
    extensions: list[str] = Field(
        default_factory=list, description="image extensions after the primary HDU: PSF, DQ "
                                          "(data quality), ERR (per-pixel sigma, ADU)")


class QualityMetrics(_Message):
    """Image quality of the input and of the restored frame (see :mod:`streamer.imaging.quality`)."""

    background: float = Field(description="sigma-clipped sky level of the input, ADU")
    noise: float = Field(description="sigma-clipped sky noise of the input, ADU")
    sources: int = Field(description="sources 5 sigma above the sky in the input")
    stars_measured: int
    fwhm_before: float | None = Field(description="median star FWHM of the input, pixels")
    fwhm_after: float | None = Field(description="median FWHM of the same stars, restored")
    ellipticity_before: float | None
    ellipticity_after: float | None
    moat_depth: float | None = Field(
        default=None, description="median depth, local-noise sigmas, of the restored profile "
                                  "below the local sky 1.5-4 FWHM around bright stars")


class CatalogueFigures(_Message):
    """A frame's catalogue for monitoring: how many sources, how deep, how many trails."""

    sources: int = Field(ge=0)
    limiting_mag: float = Field(description="5 sigma point source; instrumental when no "
                                            "zero point is known")
    trails: int = Field(ge=0)


class FrameMetrics(_Message):
    """Per-frame figures for monitoring and downstream quality decisions."""

    kind: Literal["metrics"] = "metrics"
    frame_id: str
    camera_id: str
    source_name: str | None = None
    exposure_start: dt.datetime
    published_at: dt.datetime
    restored_at: dt.datetime
    exposure_to_restored_seconds: float = Field(description="restored_at - exposure end")
    stage_seconds: dict[str, float]
    device_seconds: dict[str, float] = Field(
        default_factory=dict, description="device time by stage, from profiling events")
    transfer_bytes: dict[str, int] | None = Field(
        default=None, description="bytes uploaded/downloaded for this frame")
    iterations: int
    relative_change: float | None
    chi2: float | None = Field(default=None, description="reduced chi2 of the signal pixels")
    stopped_by: str | None = Field(default=None,
                                   description="iterations | tolerance | discrepancy | plateau")
    convolution_method: str
    background_shift: float
    flux_in: float
    flux_out: float
    masked_pixels: int
    quality: QualityMetrics | None = None
    psf: PSFSummary | None = None
    catalogue: CatalogueFigures | None = Field(
        default=None, description="the frame's source catalogue in three numbers (the whole "
                                  "catalogue is on the sources topic)")
    worker_id: str
    device: str


class DeadLetter(_Message):
    """A frame that could not be restored — a record a worker could not process, or a file
    the camera could not publish — with the reason, and the original bytes as payload."""

    kind: Literal["dead-letter"] = "dead-letter"
    origin: Literal["worker", "camera"] = Field(
        default="worker", description="worker: a raw-topic record it could not restore; "
                                      "camera: a file in the watched folder that is no frame")
    frame_id: str | None
    camera_id: str | None
    source_topic: str = Field(description="the topic the record came from; for the camera, "
                                          "the raw topic it was meant for")
    source_partition: int | None = Field(default=None, description="none for the camera")
    source_offsets: list[int] = Field(default_factory=list)
    source_name: str | None = Field(default=None, description="file name at the camera")
    source_path: str | None = Field(
        default=None, description="the file's path on the camera's machine (camera letters)")
    error_type: str = Field(description="exception class, e.g. FrameDecodeError")
    reason: str
    failed_at: dt.datetime
    worker_id: str = Field(description="who judged it: the worker's id, or camera <id>")
    original_headers: dict[str, str] = Field(default_factory=dict)
    payload_bytes: int
    payload_digest: str = Field(description=DIGEST_DESCRIPTION)
    chunk_count: int = Field(ge=1)
    payload_omitted: bool = Field(
        default=False, description="the file was larger than the camera's dead-letter limit: "
                                   "its bytes stay at source_path, payload_bytes is its size")


class Source(_Message):
    """One source of a frame's catalogue, measured on the linear (unrestored) data.

    Pixel positions are 0-based (the centre of the first pixel is 0, 0; add 1 for FITS);
    fluxes are ADU from a PSF fit (a trail's: the light in an ellipse along it)."""

    id: int = Field(ge=0, description="index within the frame's catalogue")
    x: float
    y: float
    x_error: float = Field(description="pixels, 1 sigma")
    y_error: float
    ra: float | None = Field(default=None, description="degrees (the frame's WCS); none "
                                                       "without a WCS")
    dec: float | None = None
    ra_error: float | None = Field(default=None, description="arcsec, along RA cos(Dec)")
    dec_error: float | None = Field(default=None, description="arcsec")
    flux: float = Field(description="ADU")
    flux_error: float
    snr: float
    mag: float | None = Field(default=None, description="zero_point - 2.5 log10(flux); "
                                                        "instrumental when uncalibrated")
    mag_error: float | None = None
    a: float = Field(description="semi-axes (second moments, PSF removed), pixels")
    b: float
    theta: float = Field(description="major axis, degrees from +x")
    fwhm: float = Field(description="pixels")
    elongation: float = Field(description="a / b on the detection image")
    flags: int = Field(ge=0, description="1 saturated, 2 edge, 4 masked, 8 blended, 16 trail")
    trail_length: float | None = Field(default=None, description="pixels (trails only)")
    trail_angle: float | None = Field(default=None, description="degrees from +x")


class SourceCatalog(_Message):
    """A frame's catalogue: this envelope (frame-level figures) in the record headers, the
    sources as a JSON array in the payload — chunked and checksummed as frames are."""

    kind: Literal["sources"] = "sources"
    frame_id: str
    camera_id: str
    source_name: str | None = None
    exposure_start: dt.datetime
    exposure_seconds: float
    mid_exposure: dt.datetime = Field(description="UTC middle of the exposure")
    mjd: float = Field(description="Modified Julian Date (UTC) of mid-exposure")
    count: int = Field(ge=0)
    trails: int = Field(ge=0)
    threshold: float = Field(description="detection threshold, matched-filter S/N")
    limiting_flux: float = Field(description="5 sigma PSF-fit flux of a point source, ADU")
    limiting_mag: float
    aperture_correction: float = Field(
        default=1.0, description="the PSF-fit fluxes were multiplied by this to be total "
                                 "light (a 4 FWHM aperture over bright isolated stars)")
    aperture_stars: int = Field(default=0, ge=0, description="the stars the aperture "
                                                             "correction rests on; 0: none")
    noise_ratio: float = Field(default=1.0, description="the frame's noise at the PSF's "
                                                        "scale over white noise's (median); "
                                                        "detection and errors use it")
    zero_point: float | None = Field(default=None, description="from the header; none: "
                                                               "magnitudes are instrumental")
    seeing: float = Field(description="PSF FWHM, pixels")
    band: str | None = Field(default=None, description="the header's FILTER (or BAND)")
    wcs: bool = Field(description="whether sources carry RA/Dec")
    capped: bool = Field(default=False, description="more sources than max_sources were "
                                                    "found: the strongest are listed")
    failure: str | None = Field(default=None, description="why no catalogue could be measured "
                                                          "(the restored frame is published "
                                                          "regardless)")
    shape: tuple[int, int]
    worker_id: str
    measured_at: dt.datetime
    payload_bytes: int = Field(ge=0)
    payload_digest: str = Field(pattern=DIGEST_PATTERN, description=DIGEST_DESCRIPTION)
    chunk_count: int = Field(ge=1)


MODELS: dict[str, type[BaseModel]] = {
    "raw_frame": RawFrame,
    "restored_frame": RestoredFrame,
    "frame_metrics": FrameMetrics,
    "dead_letter": DeadLetter,
    "source_catalog": SourceCatalog,
    "source": Source,
}


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)
