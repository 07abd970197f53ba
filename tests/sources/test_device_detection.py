"""The catalogue from the device's detection maps (as the worker measures it) against the same
catalogue with the host's FFT matched filters: the same sources, the same measurements."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy.spatial import cKDTree

from streamer.imaging.psf import moffat_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings
from streamer.sources.catalog import measure_sources

START = dt.datetime(2026, 11, 30, 3, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def catalogues():
    field = star_field((512, 512), moffat_psf(3.6, 3.0), stars=500, seed=21).image
    image = np.clip(np.round(field), 0, 65535).astype(np.uint16)
    image = image.astype(np.float32)
    image[200:230, 40:90] = np.nan  # excluded pixels: 0 in both maps
    result = Restorer(RestorationSettings()).restore(image, snr_maps=True)

    def measure(maps):
        return measure_sources(image, None, result.psf.psf, result.psf.fwhm, result.noise,
                               exposure_start=START, exposure_seconds=30.0,
                               restored=result.data, target_psf=result.resolution.target,
                               quality_flags=result.quality_flags, snr_maps=maps)

    return measure(None), measure(result.snr_maps)


def test_the_same_sources_are_found(catalogues):
    host, device = catalogues
    assert len(host) > 300
    assert abs(len(device) - len(host)) <= 0.03 * len(host)
    distance, index = cKDTree(np.column_stack([host.x, host.y])).query(
        np.column_stack([device.x, device.y]))
    matched = distance < 0.5
    assert matched.mean() >= 0.97
    # Where they differ, it is at the threshold: every source of S/N > 10 is in both.
    assert matched[device.snr > 10].all()
    strong = host.snr > 10
    back, _ = cKDTree(np.column_stack([device.x, device.y])).query(
        np.column_stack([host.x[strong], host.y[strong]]))
    assert (back < 0.5).all()
    # ... and measured alike (the photometry reads the data, not the maps). The aperture
    # correction is a median over the isolated, unflagged stars, a set the host's few extra
    # blend candidates change (their neighbours count as crowded): compare the fits before it.
    ratio = ((device.flux[matched] / device.aperture_correction)
             / (host.flux[index[matched]] / host.aperture_correction))
    assert np.median(np.abs(ratio - 1)) < 1e-3
    assert device.aperture_correction == pytest.approx(host.aperture_correction, rel=0.02)


def test_the_preparations_background_gives_the_same_catalogue():
    # 1024²: the frame's mesh is measured on a sample, so the preparation keeps its nodes and
    # the catalogue uses them (and takes the map's offset on its own mesh's nodes) instead
    # of measuring the frame again.
    field = star_field((1024, 1024), moffat_psf(3.6, 3.0), stars=900, seed=22).image
    image = np.clip(np.round(field), 0, 65535).astype(np.uint16)
    result = Restorer(RestorationSettings()).restore(image, snr_maps=True)
    assert result.background is not None and result.background.shape == image.shape

    def measure(background):
        return measure_sources(image, None, result.psf.psf, result.psf.fwhm, result.noise,
                               exposure_start=START, exposure_seconds=30.0,
                               restored=result.data, target_psf=result.resolution.target,
                               quality_flags=result.quality_flags, snr_maps=result.snr_maps,
                               background=background)

    shared, own = measure(result.background), measure(None)
    assert len(shared) == len(own) > 500
    assert np.allclose(shared.x, own.x, atol=1e-4) and np.allclose(shared.y, own.y, atol=1e-4)
    assert np.allclose(shared.flux, own.flux, rtol=1e-5)
    assert np.array_equal(shared.flags, own.flags)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_the_frame_less_the_preparations_background(dtype):
    # One pass into the evaluated background's array where the arithmetic is float32's anyway
    # (16-bit and float32 frames), a float32 copy otherwise: the same pixels either way, NaN
    # where the frame is not finite; no mask where every pixel is.
    from streamer.imaging.mesh_background import MeshBackground, levelled
    from streamer.sources.catalog import _mesh_subtracted

    field = star_field((1024, 1100), moffat_psf(3.6, 3.0), stars=300, seed=23).image
    image = np.clip(np.round(field), 0, 65535).astype(dtype)
    level = MeshBackground(image.astype(np.float32), 64).level()
    clean, returned, excluded = _mesh_subtracted(image, level)
    expected = levelled(image.astype(np.float32), level)  # the float32 copy's arithmetic
    assert returned is level and excluded is None and clean.dtype == np.float32
    assert np.array_equal(clean, expected)
    # ... which is the background evaluated whole, to float32 rounding
    whole = image.astype(np.float32) - level.evaluate()
    assert np.abs(clean - whole).max() <= 1e-6 * np.abs(image).max()
    if dtype != np.uint16:
        image[5:9, 700:710], image[100, 3] = np.nan, np.inf
        clean, _, excluded = _mesh_subtracted(image, level)
        assert np.array_equal(np.flatnonzero(excluded), np.flatnonzero(~np.isfinite(image)))
        assert np.isnan(clean[excluded]).all()
        assert np.array_equal(clean[~excluded], expected[~excluded])
