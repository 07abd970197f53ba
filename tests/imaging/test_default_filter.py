"""sep's default filter: against SciPy's correlation, at chosen pixels, and thresholded from the
pixels near the threshold only — the same bits as the whole frame filtered."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import correlate

from streamer.imaging import default_filter
from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field

KERNEL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0


def _same_as_whole(frame: np.ndarray, threshold: float) -> None:
    """filtered_above and filtered_at give what the whole filtered frame gives."""
    smooth = default_filter.filtered(frame)
    index, values = default_filter.filtered_above(frame, threshold)
    with np.errstate(invalid="ignore"):
        expected = np.flatnonzero(smooth > np.float32(threshold))
    assert np.array_equal(index, expected)
    assert values.dtype == np.float32
    assert np.array_equal(values, smooth.ravel()[index])


@pytest.mark.parametrize("shape", [(1, 9), (2, 1), (5, 7), (64, 33), (65, 20), (130, 77)])
def test_the_filter_is_seps_kernel_correlated_with_zeros_outside(shape):
    # Heights around the row blocks' size: the blocks' seams read the rows beyond them.
    rng = np.random.default_rng(shape[0])
    frame = rng.normal(size=shape).astype(np.float32)
    expected = correlate(frame.astype(np.float64), KERNEL, mode="constant", cval=0.0)
    smooth = default_filter.filtered(frame)
    np.testing.assert_allclose(smooth, expected, rtol=0, atol=1e-6)
    every = np.arange(frame.size)
    assert np.array_equal(default_filter.filtered_at(frame, every), smooth.ravel())
    for threshold in (-10.0, 0.2, 1.0, 50.0):
        _same_as_whole(frame, threshold)


def test_a_star_field_above_five_sigma():
    field = star_field((300, 257), gaussian_psf(3.0, size=25), stars=150, seed=4)
    frame = (field.image - np.median(field.image)).astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(frame)))
    _same_as_whole(frame, 5.0 * noise)
    index, _ = default_filter.filtered_above(frame, 5.0 * noise)
    assert 1000 < index.size < frame.size // 4  # stars found; most of the sky never filtered


def test_pixels_at_the_threshold_and_deep_negative_neighbours():
    # Neighbourhoods a few float32 steps either side of the threshold, some beside pixels far
    # below it: only rounding could lift a neighbourhood of pixels at most the threshold
    # above it, and rounding to nearest, monotone, does not.
    rng = np.random.default_rng(9)
    eps = float(np.finfo(np.float32).eps)
    for trial in range(60):
        threshold = np.float32(rng.choice([37.3, 1.0, 0.7, 2.0**-20, 1e30]))
        # Mostly below, a few above; or a plateau a few steps either side of it.
        steps = (rng.integers(-40, 6 if trial % 2 else 1, (90, 70)) if trial % 4 else
                 rng.integers(-2, 3, (90, 70)))
        frame = (threshold.astype(np.float64) * (1.0 + steps * eps)).astype(np.float32)
        deep = rng.random(frame.shape) < 0.02 * (trial % 3)
        frame[deep] = -np.float32(10.0 ** rng.uniform(2, 6))
        _same_as_whole(frame, float(threshold))
    # Nine pixels at the threshold filter to it exactly: not above it.
    at = np.full((9, 9), np.float32(37.3))
    assert np.array_equal(default_filter.filtered(at)[1:-1, 1:-1], at[1:-1, 1:-1])


def test_a_negative_threshold_lies_below_the_zeros_past_the_edge():
    # Every pixel below the threshold, yet the border's filtered values, with zeros for the
    # pixels past the edge, above it.
    frame = np.full((70, 50), -1.0, np.float32)
    smooth = default_filter.filtered(frame)
    assert (smooth > -0.9).sum() == 2 * (70 + 50) - 4
    _same_as_whole(frame, -0.9)


def test_non_finite_pixels_filter_as_the_whole_frame_does():
    rng = np.random.default_rng(3)
    frame = rng.normal(size=(70, 40)).astype(np.float32)
    frame[10, 5] = np.nan
    frame[40, 39] = -np.inf
    frame[3, 20] = np.inf
    with np.errstate(invalid="ignore"):
        _same_as_whole(frame, 0.5)


def test_crowded_blocks_are_filtered_whole_to_the_same_values():
    # A nebula over the top rows (most pixels above), stars below: dense and sparse blocks.
    field = star_field((300, 180), gaussian_psf(3.0, size=25), stars=80, seed=6)
    frame = (field.image - np.median(field.image)).astype(np.float32)
    noise = 1.4826 * float(np.median(np.abs(frame)))
    frame[:140] += np.float32(20.0 * noise)
    _same_as_whole(frame, 5.0 * noise)
    index, _ = default_filter.filtered_above(frame, 5.0 * noise)
    assert index.size > 0.5 * 140 * 180


def test_the_search_stops_past_its_limit():
    rng = np.random.default_rng(2)
    frame = rng.normal(size=(500, 90)).astype(np.float32)
    whole, values = default_filter.filtered_above(frame, 0.3)
    some, some_values = default_filter.filtered_above(frame, 0.3, limit=100)
    assert 100 < some.size < whole.size  # past the limit, not to the end
    assert np.array_equal(some, whole[: some.size])
    assert np.array_equal(some_values, values[: some.size])


def test_thresholds_whose_sums_overflow_filter_the_frame_whole():
    frame = np.full((9, 9), 1e38, np.float32)
    frame[4, 4] = 3e38
    with np.errstate(over="ignore", invalid="ignore"):
        _same_as_whole(frame, 1e37)
