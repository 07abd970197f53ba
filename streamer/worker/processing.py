"""The worker's processing, free of Kafka: a decoded raw frame in, the restored frame's
envelope and payload plus its metrics out. Transport lives in :mod:`streamer.worker.worker`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from streamer.imaging.fits_io import FitsImage, image_bytes, output_header
from streamer.streaming.framing import sha256_hex
from streamer.streaming.messages import FrameMetrics, QualityMetrics, RawFrame, RestoredFrame, utc_now
from streamer.imaging.quality import InputQuality, frame_quality
from streamer.restoration.provenance import provenance
from streamer.restoration.restorer import Restorer


@dataclass
class ProcessedFrame:
    """What a worker publishes for one input frame."""

    envelope: RestoredFrame
    payload: bytes
    metrics: FrameMetrics


def restore_frame(restorer: Restorer, worker_id: str, chunk_bytes: int, raw: RawFrame,
                  image: FitsImage, decode_seconds: float = 0.0,
                  input_quality: InputQuality | None = None) -> ProcessedFrame:
    """Restore a decoded frame; build the restored FITS payload (input header kept, with
    provenance) and the metrics record. ``input_quality`` (measured while decoding, off the
    device's critical path) is measured here when not given. Raises what
    :meth:`Restorer.restore` raises."""
    result = restorer.restore(image.data)
    settings = restorer.settings
    keywords, history = provenance(settings, restorer.device_name, result,
                                   raw.source_name or raw.frame_id, image.hdu_index)
    keywords["STRMFID"] = (raw.frame_id, "frame id")
    started = time.perf_counter()
    payload = image_bytes(result.data.astype(np.float32),
                          output_header(image.header, keywords, history))
    encode_seconds = time.perf_counter() - started
    quality = frame_quality(input_quality if input_quality is not None else image.data,
                            result.data)
    restored_at = utc_now()
    envelope = RestoredFrame(
        frame_id=raw.frame_id, camera_id=raw.camera_id, exposure_start=raw.exposure_start,
        exposure_seconds=raw.exposure_seconds, shape=result.data.shape, dtype="float32",
        encoding="fits", payload_bytes=len(payload), payload_sha256=sha256_hex(payload),
        chunk_count=max(1, math.ceil(len(payload) / chunk_bytes)),
        source_name=raw.source_name, published_at=raw.published_at, restored_at=restored_at,
        input_sha256=raw.payload_sha256, worker_id=worker_id, device=restorer.device_name,
        window=settings.window, psf=str(settings.psf),
        iterations=result.deconvolution.iterations,
    )
    exposure_end = raw.exposure_start.timestamp() + raw.exposure_seconds
    change = result.deconvolution.relative_change
    metrics = FrameMetrics(
        frame_id=raw.frame_id, camera_id=raw.camera_id, source_name=raw.source_name,
        exposure_start=raw.exposure_start, published_at=raw.published_at,
        restored_at=restored_at,
        exposure_to_restored_seconds=restored_at.timestamp() - exposure_end,
        stage_seconds={"decode": decode_seconds, **result.timings, "encode": encode_seconds},
        iterations=result.deconvolution.iterations,
        relative_change=None if math.isnan(change) else change,
        convolution_method=result.deconvolution.method,
        background_shift=result.background_shift, flux_in=result.flux_in,
        flux_out=result.flux_out, masked_pixels=result.masked_pixels,
        quality=QualityMetrics(**vars(quality)), worker_id=worker_id,
        device=restorer.device_name,
    )
    return ProcessedFrame(envelope, payload, metrics)
