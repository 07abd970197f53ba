"""The worker's processing, free of Kafka: a decoded raw frame in, the restored frame's
envelope and payload plus its metrics out. Transport lives in :mod:`streamer.worker.worker`.

Three parts, so the device never waits for the host: the host's measurements before the
device (:mod:`streamer.worker.decoding`: input quality, the noise model and the frame's PSF);
:func:`restore_on_device`, the device's work alone; :func:`finish_frame`, which encodes,
checksums and measures the result on the host while the device restores the next frame.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from streamer.imaging.fits_io import FitsImage, output_header, restored_bytes
from streamer.imaging.preparation import PreparedFrame
from streamer.imaging.psf_measure import PSFMeasurement
from streamer.imaging.quality import frame_quality
from streamer.restoration.provenance import output_extensions, provenance
from streamer.restoration.restorer import Restoration, Restorer
from streamer.settings import RestorationSettings
from streamer.streaming.framing import payload_digest
from streamer.streaming.messages import (
    CatalogueFigures,
    FrameMetrics,
    PSFSummary,
    QualityMetrics,
    RawFrame,
    RestoredFrame,
    SourceCatalog,
    utc_now,
)
from streamer.worker.catalogue import (
    catalogue_message,
    failed_catalogue,
    frame_sources,
    header_band,
)
from streamer.worker.catalogue_processes import CatalogueProcesses

log = logging.getLogger(__name__)


@dataclass
class ProcessedFrame:
    """What a worker publishes for one input frame."""

    envelope: RestoredFrame
    payload: bytes
    metrics: FrameMetrics
    catalogue: tuple[SourceCatalog, bytes] | None = None  # envelope and JSON rows


def psf_summary(psf: PSFMeasurement) -> PSFSummary:
    """The message form of a PSF measurement."""
    return PSFSummary(method=psf.method, fwhm=psf.fwhm, ellipticity=psf.ellipticity,
                      angle=psf.angle, size=int(max(psf.psf.shape)), stars_used=psf.stars_used,
                      stars_found=psf.stars_found, fallback=psf.is_fallback,
                      warning=psf.warning, seconds=psf.seconds)


def restore_on_device(restorer: Restorer, image: FitsImage, prepared: PreparedFrame,
                      deadline: float | None = None) -> Restoration:
    """The device part: one upload, the restoration (and the catalogue's detection maps),
    the downloads. Raises what :meth:`Restorer.restore_prepared` raises."""
    # The catalogue's whole-frame detection passes run here too, on the device that holds
    # the frames already, when the worker measures catalogues.
    result = restorer.restore_prepared(image.data, prepared, deadline=deadline,
                                       snr_maps=restorer.settings.sources)
    result.timings["psf"] = prepared.psf.seconds
    return result


def finish_frame(settings: RestorationSettings, device_name: str, worker_id: str,
                 chunk_bytes: int, raw: RawFrame, image: FitsImage, prepared: PreparedFrame,
                 result: Restoration, decode_seconds: float = 0.0,
                 catalogues: CatalogueProcesses | None = None) -> ProcessedFrame:
    """The host part after the device: the restored FITS payload (input header kept, with
    provenance, and the PSF as an extension), its checksum, the output quality and the
    metrics record — CPU work that overlaps the next frame's device work. The catalogue is
    measured here, or by ``catalogues`` in a process of their own."""
    keywords, history = provenance(settings, device_name, result,
                                   raw.source_name or raw.frame_id, image.hdu_index)
    keywords["STRMFID"] = (raw.frame_id, "frame id")
    started = time.perf_counter()
    extensions = output_extensions(result, settings.restored_as)
    payload = restored_bytes(result.data, output_header(image.header, keywords, history),
                             extensions)
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    quality = frame_quality(prepared.quality if prepared.quality is not None else image.data,
                            result.data)
    result.timings["output_quality"] = time.perf_counter() - started
    catalogue = None
    if settings.sources:
        started = time.perf_counter()
        try:
            catalogue = catalogue_message(
                (catalogues.measure if catalogues is not None else frame_sources)(
                    image, result, raw, settings.source_threshold, settings.max_sources),
                raw, result.data.shape, worker_id, chunk_bytes, header_band(image.header))
        except Exception as error:  # noqa: BLE001 - the frame is restored; only its catalogue failed
            log.warning("frame %s: no source catalogue (%s: %s); the restored frame goes on",
                        raw.frame_id, type(error).__name__, error)
            catalogue = failed_catalogue(raw, result.data.shape, worker_id, error)
        result.timings["sources"] = time.perf_counter() - started
    restored_at = utc_now()
    summary = psf_summary(result.psf)
    envelope = RestoredFrame(
        frame_id=raw.frame_id, camera_id=raw.camera_id, exposure_start=raw.exposure_start,
        exposure_seconds=raw.exposure_seconds, shape=result.data.shape, dtype="float32",
        encoding="fits", payload_bytes=len(payload), payload_digest=payload_digest(payload),
        chunk_count=max(1, math.ceil(len(payload) / chunk_bytes)),
        source_name=raw.source_name, published_at=raw.published_at, restored_at=restored_at,
        input_digest=raw.payload_digest, worker_id=worker_id, device=device_name,
        window=settings.window, psf=str(settings.psf),
        iterations=result.deconvolution.iterations, psf_summary=summary,
        restored_as=settings.restored_as, extensions=[hdu.name for hdu in extensions],
    )
    metrics = _metrics(raw, result, restored_at, decode_seconds, encode_seconds, quality,
                       summary, worker_id, device_name)
    if catalogue is not None:
        found = catalogue[0]
        metrics = metrics.model_copy(update={"catalogue": CatalogueFigures(
            sources=found.count, limiting_mag=found.limiting_mag, trails=found.trails)})
    return ProcessedFrame(envelope, payload, metrics, catalogue)


def _metrics(raw: RawFrame, result: Restoration, restored_at, decode_seconds: float,
             encode_seconds: float, quality, summary: PSFSummary, worker_id: str,
             device: str) -> FrameMetrics:
    exposure_end = raw.exposure_start.timestamp() + raw.exposure_seconds
    report = result.deconvolution
    change = report.relative_change
    return FrameMetrics(
        frame_id=raw.frame_id, camera_id=raw.camera_id, source_name=raw.source_name,
        exposure_start=raw.exposure_start, published_at=raw.published_at,
        restored_at=restored_at,
        exposure_to_restored_seconds=restored_at.timestamp() - exposure_end,
        stage_seconds={"decode": decode_seconds, **result.timings, "encode": encode_seconds},
        device_seconds=result.device_seconds,
        transfer_bytes={"uploaded": result.transfers.uploaded,
                        "downloaded": result.transfers.downloaded},
        iterations=report.iterations,
        relative_change=None if math.isnan(change) else change,
        chi2=report.chi2, stopped_by=report.stopped_by,
        convolution_method=report.method,
        background_shift=result.background_shift, flux_in=result.flux_in,
        flux_out=result.flux_out, masked_pixels=result.masked_pixels,
        quality=QualityMetrics(**vars(quality)), psf=summary, worker_id=worker_id,
        device=device,
    )
