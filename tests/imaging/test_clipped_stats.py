"""Sigma-clipped statistics on a sorted copy (streamer.imaging.clipped_stats) against astropy's
sigma_clipped_stats (median centre, standard deviation): the same mean, median and spread to
float rounding on skewed, Poisson, integer (ties), NaN-holding, offset and tiny samples, with a
few passes, ten, or until nothing more is clipped; NaN when nothing is left."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from streamer.imaging.clipped_stats import clipped_stats, nan_median


def _samples():
    rng = np.random.default_rng(7)
    skewed = rng.normal(100, 10, 1 << 16).astype(np.float32)
    skewed[:900] += rng.exponential(300, 900).astype(np.float32)  # stars in the sky
    holes = rng.normal(5000, 3, 20000)
    holes[::7] = np.nan
    holes[3] = np.inf
    return {"skewed": skewed, "poisson": rng.poisson(30, 50000).astype(np.float32),
            "integers": np.round(rng.normal(0, 1.5, 30000)).astype(np.float32),
            "holes": holes, "offset": rng.normal(1e6, 0.5, 10000),
            "tiny": np.array([1.0, 2.0, 2.0, 3.0, 50.0])}


@pytest.mark.parametrize("name", list(_samples()))
@pytest.mark.parametrize("maxiters", [1, 5, 10, None])
def test_the_figures_are_astropys(name, maxiters):
    values = _samples()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about the NaN it clips
        expected = sigma_clipped_stats(values, sigma=3.0, maxiters=maxiters)
    ours = clipped_stats(values, 3.0, maxiters)
    scale = float(np.nanstd(values[np.isfinite(values)]))
    for got, reference in zip(ours, expected):
        assert got == pytest.approx(float(reference), rel=1e-6, abs=1e-6 * scale)


def test_nothing_left_is_nan():
    assert all(np.isnan(v) for v in clipped_stats(np.array([np.nan, np.inf])))
    assert clipped_stats(np.full(10, 4.0)) == (4.0, 4.0, 0.0)


@pytest.mark.parametrize("shape, axis", [((60, 37, 37), 0), ((90, 440), 1), ((7, 6), 0),
                                         ((5, 1), 1)])
def test_the_nan_median_is_numpys(shape, axis):
    """Odd and even counts of numbers per lane, lanes of NaN only, one-number lanes."""
    rng = np.random.default_rng(sum(shape))
    values = rng.normal(size=shape)
    values[rng.random(shape) < 0.3] = np.nan
    np.moveaxis(values, axis, -1)[..., :][0] = np.nan  # one lane (or more) without a number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's all-NaN slice warning
        expected = np.nanmedian(values, axis=axis)
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    assert np.array_equal(nan_median(values, axis), expected, equal_nan=True)
