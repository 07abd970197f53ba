"""A restored frame's source catalogue as it travels: the frame-level envelope
(:class:`~streamer.streaming.messages.SourceCatalog`) and the sources as a JSON array
(:class:`~streamer.streaming.messages.Source` rows), measured on the host after the device
(:mod:`streamer.sources.catalog`)."""

from __future__ import annotations

import json
import math
from typing import Any

from streamer.imaging.fits_io import FitsImage
from streamer.restoration.restorer import Restoration
from streamer.sources.catalog import FrameSources, measure_sources
from streamer.sources.sky_positions import mid_exposure
from streamer.streaming.framing import sha256_hex
from streamer.streaming.messages import RawFrame, SourceCatalog, utc_now


def source_arguments(image: FitsImage, result: Restoration, raw: RawFrame, threshold: float,
                     max_sources: int | None = None) -> tuple[tuple, dict[str, Any]]:
    """The arguments of :func:`measure_sources` for a restored frame (here or in another
    process, :mod:`streamer.worker.catalogue_processes`)."""
    target = result.resolution.target if result.resolution is not None else None
    return ((image.data, image.header, result.psf.psf, result.psf.fwhm, result.noise),
            {"exposure_start": raw.exposure_start, "exposure_seconds": raw.exposure_seconds,
             "restored": result.data, "target_psf": target,
             "quality_flags": result.quality_flags, "threshold": threshold,
             "max_sources": max_sources, "snr_maps": result.snr_maps,
             "background": result.background})


def frame_sources(image: FitsImage, result: Restoration, raw: RawFrame,
                  threshold: float, max_sources: int | None = None) -> FrameSources:
    """The catalogue of a restored frame: measured on its input, blends split on ``result``."""
    args, kwargs = source_arguments(image, result, raw, threshold, max_sources)
    return measure_sources(*args, **kwargs)


def failed_catalogue(raw: RawFrame, shape: tuple[int, int], worker_id: str,
                     error: BaseException) -> tuple[SourceCatalog, bytes]:
    """An empty catalogue that says why none could be measured: the frame itself is
    restored and published; a catalogue's failure never costs it."""
    payload = b"[]"
    middle, mjd = mid_exposure(raw.exposure_start, raw.exposure_seconds)
    return SourceCatalog(
        frame_id=raw.frame_id, camera_id=raw.camera_id, source_name=raw.source_name,
        exposure_start=raw.exposure_start, exposure_seconds=raw.exposure_seconds,
        mid_exposure=middle, mjd=mjd, count=0, trails=0, threshold=0.0,
        limiting_flux=0.0, limiting_mag=0.0, seeing=0.0, wcs=False,
        shape=(int(shape[0]), int(shape[1])), worker_id=worker_id, measured_at=utc_now(),
        failure=f"{type(error).__name__}: {error}"[:500], payload_bytes=len(payload),
        payload_sha256=sha256_hex(payload), chunk_count=1), payload


def _number(value: float) -> float | None:
    """A JSON number, or null for NaN/inf."""
    value = float(value)
    return value if math.isfinite(value) else None


def source_rows(found: FrameSources) -> list[dict]:
    """The sources as :class:`~streamer.streaming.messages.Source` dictionaries."""
    rows = []
    for index in range(len(found)):
        row = {
            "id": index, "x": float(found.x[index]), "y": float(found.y[index]),
            "x_error": float(found.x_error[index]), "y_error": float(found.y_error[index]),
            "flux": float(found.flux[index]), "flux_error": float(found.flux_error[index]),
            "snr": float(found.snr[index]), "mag": _number(found.mag[index]),
            "mag_error": _number(found.mag_error[index]), "a": float(found.a[index]),
            "b": float(found.b[index]), "theta": float(found.theta[index]),
            "fwhm": float(found.fwhm[index]), "elongation": float(found.elongation[index]),
            "flags": int(found.flags[index]),
            "trail_length": _number(found.trail_length[index]),
            "trail_angle": _number(found.trail_angle[index]),
        }
        if found.sky is not None:
            row.update(ra=float(found.sky.ra[index]), dec=float(found.sky.dec[index]),
                       ra_error=float(found.sky.ra_error[index]),
                       dec_error=float(found.sky.dec_error[index]))
        rows.append(row)
    return rows


def header_band(header) -> str | None:
    """The frame's filter name from ``FILTER`` or ``BAND`` (None when absent)."""
    for keyword in ("FILTER", "BAND", "FILTER1"):
        value = header.get(keyword) if header is not None else None
        if isinstance(value, str) and value.strip():
            return value.strip()[:32]
    return None


def catalogue_message(found: FrameSources, raw: RawFrame, shape: tuple[int, int],
                      worker_id: str, chunk_bytes: int,
                      band: str | None = None) -> tuple[SourceCatalog, bytes]:
    """The catalogue's envelope and payload (the rows, compact JSON)."""
    payload = json.dumps(source_rows(found), separators=(",", ":"),
                         allow_nan=False).encode()
    envelope = SourceCatalog(
        frame_id=raw.frame_id, camera_id=raw.camera_id, source_name=raw.source_name,
        exposure_start=raw.exposure_start, exposure_seconds=raw.exposure_seconds,
        mid_exposure=found.mid_exposure, mjd=found.mjd, count=len(found),
        trails=found.trails, threshold=found.threshold,
        limiting_flux=found.limiting_flux, limiting_mag=found.limiting_mag,
        aperture_correction=found.aperture_correction, aperture_stars=found.aperture_stars,
        noise_ratio=found.noise_ratio, zero_point=found.zero_point, seeing=found.seeing, band=band,
        wcs=found.sky is not None, capped=found.capped,
        shape=(int(shape[0]), int(shape[1])), worker_id=worker_id, measured_at=utc_now(),
        payload_bytes=len(payload), payload_sha256=sha256_hex(payload),
        chunk_count=max(1, math.ceil(len(payload) / chunk_bytes)))
    return envelope, payload

