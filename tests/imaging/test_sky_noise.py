"""The per-pixel sky noise against frames whose noise is known: white noise under a gradient
and stars, correlated noise (a plate's grain, a resampled frame) of several correlation
lengths, integer data with a noise of a few ADU, and a field whose structure keeps rising
with the lag."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from streamer.imaging.quality import sky_statistics
from streamer.imaging.sky_noise import CLIPPED_FRACTION, clipped_sigma, difference_sigma, sky_noise

SIDE = 512


def _stars(rng: np.random.Generator, image: np.ndarray, count: int, peak: float) -> None:
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    for y, x in rng.uniform(10, image.shape[0] - 10, (count, 2)):
        image += peak * rng.uniform(0.05, 1) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)


def test_white_noise_under_a_gradient_and_stars():
    rng = np.random.default_rng(1)
    image = 1000.0 + rng.normal(0.0, 10.0, (SIDE, SIDE)) + np.linspace(0, 400, SIDE)[None, :]
    _stars(rng, image, 150, 5000.0)
    assert sky_noise(image) == pytest.approx(10.0, rel=0.02)


@pytest.mark.parametrize("smoothing", [0.6, 1.0, 2.0])
def test_correlated_noise_is_measured_per_pixel(smoothing):
    # Grain larger than a pixel: white noise smoothed, then scaled to a per-pixel sigma of 10.
    # The adjacent-pixel figure alone reads it 25-75 % low.
    rng = np.random.default_rng(2)
    grain = gaussian_filter(rng.normal(0.0, 1.0, (SIDE, SIDE)), smoothing)
    grain *= 10.0 / grain.std()
    image = 5000.0 + grain
    _stars(rng, image, 80, 20000.0)
    assert difference_sigma(image, 1, 1 << 16) < 0.8 * 10.0
    assert sky_noise(image) == pytest.approx(10.0, rel=0.04)
    assert sky_statistics(image).noise == pytest.approx(10.0, rel=0.04)


def test_integer_data_with_a_few_adu_of_noise():
    # The MAD of integer differences moves in steps of 1.05 ADU; the clipped spread does not.
    rng = np.random.default_rng(3)
    truth = 1.5
    image = np.round(300.0 + rng.normal(0.0, truth, (SIDE, SIDE))).astype(np.int16)
    expected = np.sqrt(truth**2 + 1.0 / 12.0)  # rounding adds a uniform 1/12 ADU²
    assert sky_noise(image) == pytest.approx(expected, rel=0.03)
    differences = np.diff(image.astype(float), axis=1).ravel()
    mad_figure = 1.4826 * np.median(np.abs(differences - np.median(differences))) / np.sqrt(2)
    assert abs(mad_figure - expected) > 0.2 * expected  # what the MAD read


def test_structure_that_keeps_rising_leaves_the_adjacent_figure():
    # Structure on scales above the lags (a ripple of period 64 px, as a galaxy's or a
    # nebula's light): differences grow with the lag without levelling off — no noise does
    # that — and the adjacent-pixel figure stands.
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    ripple = 40.0 * (np.sin(2 * np.pi * xx / 64.0) + np.sin(2 * np.pi * yy / 64.0))
    image = 2000.0 + ripple + rng.normal(0.0, 5.0, (SIDE, SIDE))
    lags = [difference_sigma(image, lag, 1 << 16) for lag in (1, 2, 4, 8, 16)]
    assert all(b > 1.05 * a for a, b in zip(lags, lags[1:]))
    assert sky_noise(image) == pytest.approx(lags[0])


def test_the_clipped_spread_of_a_normal_sample_is_unbiased():
    values = np.random.default_rng(5).normal(3.0, 2.0, 1 << 18)
    assert clipped_sigma(values) == pytest.approx(2.0, rel=0.01)
    assert 0.98 < CLIPPED_FRACTION < 0.99
