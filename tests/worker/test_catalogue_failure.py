"""A catalogue that cannot be measured never costs its frame: the restored frame and its
metrics are made as always, and the catalogue record says why it is empty."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

import streamer.worker.processing as processing
from streamer.imaging.fits_io import FitsImage
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.streaming.messages import RawFrame, utc_now
from streamer.worker.processing import finish_frame
from tests.kafka_support import FAST_RESTORATION


def _frame():
    field = star_field((96, 96), FAST_RESTORATION.psf.build(), stars=30, seed=3)
    data = np.round(field.image).astype(np.float32)
    image = FitsImage(data=data, header=fits.Header(), hdu_index=0)
    raw = RawFrame(frame_id="cam1:x", camera_id="cam1", exposure_start=utc_now(),
                   exposure_seconds=1.0, shape=(96, 96), dtype="float32", encoding="fits",
                   payload_bytes=1, payload_digest="blake3:" + "0" * 64, chunk_count=1,
                   source_name="x.fits", published_at=utc_now())
    return image, raw


def test_a_failing_catalogue_leaves_an_empty_one_that_says_why(monkeypatch):
    restorer = Restorer(FAST_RESTORATION)
    image, raw = _frame()
    prepared = restorer.preparer.prepare(image.data, image.header, "cam1")
    result = restorer.restore_prepared(image.data, prepared)
    good = finish_frame(FAST_RESTORATION, "dev", "w1", 1 << 20, raw, image, prepared, result)
    assert good.catalogue is not None and good.catalogue[0].count > 0
    assert good.metrics.catalogue.sources == good.catalogue[0].count

    def broken(*args, **kwargs):
        raise RuntimeError("sep: object buffer full")

    monkeypatch.setattr(processing, "frame_sources", broken)
    processed = finish_frame(FAST_RESTORATION, "dev", "w1", 1 << 20, raw, image, prepared,
                             result)
    envelope, payload = processed.catalogue
    assert envelope.count == 0 and payload == b"[]"
    assert envelope.failure == "RuntimeError: sep: object buffer full"
    restored = fits.getdata(io.BytesIO(processed.payload))
    assert np.array_equal(restored, fits.getdata(io.BytesIO(good.payload)))  # same frame


def test_a_catalogue_measured_in_another_process_is_the_same_catalogue():
    """catalogue_processes: the frame's arrays go to a spawned process and its sources come
    back — row for row what the host thread measures."""
    import datetime as dt

    from streamer.imaging.fits_io import FitsImage
    from streamer.imaging.psf import gaussian_psf
    from streamer.imaging.synthetic import star_field
    from streamer.restoration.restorer import Restorer
    from streamer.settings import RestorationSettings
    from streamer.streaming.messages import RawFrame, utc_now
    from streamer.worker.catalogue import frame_sources, source_rows
    from streamer.worker.catalogue_processes import CatalogueProcesses

    data = star_field((256, 256), gaussian_psf(3.0), stars=60, seed=11).image.astype("float32")
    result = Restorer(RestorationSettings()).restore(data)
    raw = RawFrame(frame_id="f", camera_id="c", shape=(256, 256), dtype="float32",
                   encoding="fits", payload_bytes=1, payload_digest="blake3:" + "0" * 64, chunk_count=1,
                   exposure_start=dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc),
                   exposure_seconds=10.0, published_at=utc_now())
    image = FitsImage(data, None, 0)
    here = frame_sources(image, result, raw, 5.0)
    processes = CatalogueProcesses(1)
    try:
        there = processes.measure(image, result, raw, 5.0)
    finally:
        processes.close()
    assert len(here) > 20
    assert source_rows(there) == source_rows(here)
