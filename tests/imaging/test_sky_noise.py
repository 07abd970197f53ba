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


def _masked_clipped_sigma(values: np.ndarray, iterations: int = 10) -> float:
    """The clipping written plainly (a masked copy each pass): the reference."""
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    if spread <= 0:
        spread = float(np.std(values))
    if spread <= 0:
        return 0.0
    for _ in range(iterations):
        kept = values[np.abs(values - centre) <= 3.0 * spread]
        if kept.size < 16:
            break
        centre, updated = float(kept.mean()), float(kept.std())
        if updated <= 0 or abs(updated - spread) <= 1e-6 * spread:
            spread = updated if updated > 0 else spread
            break
        spread = updated
    return spread / CLIPPED_FRACTION


@pytest.mark.parametrize("kind", ["normal", "integers", "few integers", "cauchy", "stars",
                                  "constant", "tiny", "odd"])
def test_the_sorted_clipping_is_the_masked_one(kind):
    # Ties (integer differences, a MAD of 0), heavy tails, one-sided outliers, odd and even
    # counts, fewer values than a pass keeps: the same figure to float rounding of the sums.
    rng = np.random.default_rng(len(kind))
    values = {"normal": rng.normal(0.3, 2.0, 130000),
              "integers": np.round(rng.normal(0, 1.5, 30001)),
              "few integers": rng.integers(-1, 2, 5000).astype(float),
              "cauchy": rng.standard_cauchy(40000),
              "stars": np.concatenate([rng.normal(0, 1, 9999), rng.exponential(300, 700)]),
              "constant": np.full(101, 7.0), "tiny": np.array([1.0, 2.0, 9.0]),
              "odd": rng.poisson(3, 1001).astype(float)}[kind]
    assert clipped_sigma(values) == pytest.approx(_masked_clipped_sigma(values), rel=1e-12,
                                                  abs=1e-15)


def test_the_median_distance_is_numpys():
    # The MAD read off the two sorted runs on either side of the centre: every rank
    # reached, centres at, between and outside the values, ties on both sides.
    from streamer.imaging.sky_noise import _middle_distance

    rng = np.random.default_rng(11)
    for trial in range(600):
        size = int(rng.integers(1, 40))
        values = np.sort(rng.integers(-3, 4, size).astype(float) if trial % 2
                         else rng.normal(0, 3, size))
        for centre in (float(np.median(values)), values[0], values[-1], values[0] - 2.5,
                       values[-1] + 1.0, float(rng.normal())):
            assert _middle_distance(values, float(centre)) == float(
                np.median(np.abs(values - centre)))


def test_the_clipped_run_is_the_masks():
    # Values a few ulps either side of centre ± bound, where the binary searches' own
    # bounds round the other way: the run is exactly the pixels the |v − c| <= b test keeps
    # (and the searches were off in every direction at least once).
    from streamer.imaging.sky_noise import _within

    rng = np.random.default_rng(12)
    corrected = np.zeros(4, int)
    for _ in range(3000):
        centre, bound = float(rng.normal(0, 100)), float(abs(rng.normal(0, 10)))
        edges = (centre - bound, centre + bound)
        values = np.sort(np.concatenate([[edge + np.spacing(edge) * k for edge in edges
                                          for k in range(-3, 4)], rng.normal(centre, bound, 9)]))
        low, high = _within(values, centre, bound)
        kept = np.flatnonzero(np.abs(values - centre) <= bound)
        assert (low, high) == ((kept[0], kept[-1] + 1) if kept.size else (low, low))
        assert kept.size == high - low
        searched = (int(np.searchsorted(values, centre - bound, "left")),
                    int(np.searchsorted(values, centre + bound, "right")))
        corrected += [searched[0] > low, searched[0] < low, searched[1] < high,
                      searched[1] > high]
    assert corrected.all()


def test_runs_of_equal_values_at_the_bounds_are_kept_or_left_whole():
    # Integer differences: long runs of equal values on and just past centre ± bound; the
    # run's ends stepped over whole runs (the mask's answer), and nothing to clip is NaN.
    from streamer.imaging.sky_noise import _within

    values = np.sort(np.repeat(np.arange(-6.0, 7.0), 5000))
    for centre, bound in ((0.0, 3.0), (0.1, 3.0 - 1e-15), (-0.3, 2.7 + 2**-50), (0.0, 0.0)):
        low, high = _within(values, centre, bound)
        kept = np.flatnonzero(np.abs(values - centre) <= bound)
        assert (low, high) == ((kept[0], kept[-1] + 1) if kept.size else (low, low))
    assert np.isnan(clipped_sigma(np.zeros(0)))
