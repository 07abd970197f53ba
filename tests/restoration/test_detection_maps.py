"""The catalogue's matched filters on the device (streamer.restoration.detection_maps) against
SciPy: the frame less its sky, every finite pixel (masked ones too), excluded pixels and the
border past the edges filled with the frame's median background (mirrored), correlated with
the PSF; and the restored frame less its sky, excluded pixels and border 0, correlated with the
target PSF; both over the noise of a PSF fit. The restored frame's map reaches the catalogue
as its peak candidates: the same peaks as the host's search of the map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import correlate

from streamer.imaging.psf import PSFSpec, gaussian_psf, matched_filter_weights
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings
from streamer.restoration.restored_peaks import FLOOR_MARGIN
from streamer.sources.detection import matched_filter_snr
from streamer.sources.peaks import local_peaks, sky_mode


def _frame(dtype) -> tuple[np.ndarray, np.ndarray]:
    field = star_field((90, 117), gaussian_psf(3.0), stars=40, seed=7).image
    image = np.clip(np.round(field), 0, 65535).astype(dtype)
    mask = np.zeros(image.shape, bool)
    mask[40:44, 60:63] = True        # masked (a saturated core, say): out of the likelihood
    if dtype == np.float32:
        image[5:9, 100:110] = np.nan  # excluded: 0 in both maps
    return image, mask


def _uploaded(restorer: Restorer, image: np.ndarray, refilled: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """The frame the device restored — the input, or a float32 copy with its saturated or
    non-linear cores refilled by the preparation (streamer.imaging.saturated_stars) — and its
    median background (eq. 1)."""
    import pyopencl as cl

    from streamer.restoration.background import key_dtype
    from streamer.restoration.median import from_keys

    uploaded = np.empty(image.shape, np.float32 if refilled else image.dtype)
    background = restorer.background(image.shape, uploaded.dtype)
    keys = np.empty(image.shape, np.uint32)
    cl.enqueue_copy(restorer.session.queue, uploaded, background.raw)
    cl.enqueue_copy(restorer.session.queue, keys, background.median.output_buffer)
    return uploaded, from_keys(keys, key_dtype(uploaded.dtype)).astype(np.float64)


def _filled_and_filtered(values: np.ndarray, median: np.ndarray, sky: float,
                         weights: np.ndarray) -> np.ndarray:
    pad = weights.shape[0] // 2
    source = np.pad(median, pad, mode="symmetric")
    source[pad:-pad, pad:-pad] = np.where(np.isfinite(values), values, median)
    filtered = correlate(source - sky, weights, mode="constant")
    return filtered[pad:-pad, pad:-pad]


def _zero_padded(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return correlate(np.asarray(image, np.float64), weights, mode="constant", cval=0.0)


@pytest.fixture(scope="module")
def restorer(opencl):
    restorer = Restorer(RestorationSettings(window=15, psf=PSFSpec(kind="moffat", fwhm=3.0,
                                                                   beta=3.0), iterations=5),
                        str(opencl.device.name))
    restorer.detection_maps.download_restored = True  # the map its peaks are compared with
    return restorer


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_both_maps_equal_scipy(restorer, dtype):
    image, mask = _frame(dtype)
    result = restorer.restore(image, mask=mask, snr_maps=True)
    sigma, psf = result.noise.sigma, result.psf.psf
    uploaded, median = _uploaded(restorer, image, result.refilled > 0)
    assert result.refilled > 0  # the refilled cores are what the map sees
    expected = _filled_and_filtered(np.asarray(uploaded, np.float64), median,
                                    result.noise.sky, matched_filter_weights(psf, sigma))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(result.snr_maps.data, expected, rtol=0, atol=2e-6 * scale)
    # The restored frame's sky is C's, -min B; its excluded pixels (NaN) are 0.
    restored = np.where(np.isnan(result.data), 0.0, result.data + result.background_shift)
    target = result.resolution.target
    expected = _zero_padded(restored, matched_filter_weights(
        target if target is not None else np.ones((1, 1)), sigma))
    np.testing.assert_allclose(result.snr_maps.restored, expected, rtol=0,
                               atol=2e-6 * np.abs(expected).max())
    assert np.isnan(result.data[mask]).all() and result.snr_maps.data[41, 61] != 0


def test_the_data_map_is_the_hosts_matched_filter(restorer):
    # The same S/N map the host's FFT makes of the frame on a zero sky.
    # Away from the edges and the excluded pixels, whose fill differs (the host's is 0).
    image, mask = _frame(np.float32)
    result = restorer.restore(image, snr_maps=True)
    uploaded, _ = _uploaded(restorer, image, result.refilled > 0)
    host = matched_filter_snr(uploaded - np.float32(result.noise.sky), result.noise.sigma,
                              result.psf.psf)
    pad = result.psf.psf.shape[0] // 2
    near_nan = correlate(np.isnan(image).astype(float), np.ones((2 * pad + 1,) * 2)) > 0
    inner = ~near_nan
    inner[:pad], inner[-pad:], inner[:, :pad], inner[:, -pad:] = False, False, False, False
    assert inner.mean() > 0.5
    np.testing.assert_allclose(result.snr_maps.data[inner], host[inner], rtol=0,
                               atol=1e-5 * np.abs(host).max())


def test_no_maps_unless_asked(restorer):
    image, _ = _frame(np.uint16)
    result = restorer.restore(image)
    assert result.snr_maps is None and "detection" not in result.device_seconds


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_the_restored_maps_peaks_come_from_the_device(restorer, dtype, caplog):
    # The catalogue's peaks of the restored map less its sky, from the device's candidates:
    # the host's search of the downloaded map finds the same, the frame's excluded pixels
    # left out; a sky below the candidates' floor is said.
    image, mask = _frame(dtype)
    result = restorer.restore(image, mask=mask, snr_maps=True)
    maps, threshold = result.snr_maps, restorer.settings.source_threshold
    candidates = maps.restored_peaks
    assert candidates.floor == pytest.approx(threshold - FLOOR_MARGIN)
    assert np.array_equal(candidates.sample, maps.restored)  # a small map: every pixel
    excluded = ~np.isfinite(image.astype(np.float32))
    for sky in (0.0, sky_mode(maps.restored), -1.5):
        ours = candidates.peaks(threshold, sky)
        expected = local_peaks(maps.restored - sky, threshold, excluded)
        assert ours[0].size >= 10
        for got, reference in zip(ours, expected):
            assert np.array_equal(got, reference)
    assert "below the floor" not in caplog.text
    candidates.peaks(threshold, -FLOOR_MARGIN - 0.5)
    assert "below the floor" in caplog.text
