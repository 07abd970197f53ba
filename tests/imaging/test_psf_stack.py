"""The PSF stack's sub-pixel shifts (streamer.imaging.psf_stack.shifted_many) against SciPy's
Fourier shift of the same zero-padded stamp, and against the analytic star they should give."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from scipy.ndimage import fourier_shift

from streamer.imaging import psf_stack


def _gaussian(size: int, row: float, column: float, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    return np.exp(-0.5 * ((ys - row) ** 2 + (xs - column) ** 2) / sigma**2)


@pytest.mark.parametrize("size", [37, 31, 40])  # padded by 8: 53 (prime), 47 (prime), 56
def test_a_shift_is_scipys_fourier_shift_of_the_padded_stamp(size):
    """Noisy stamps (power up to the highest frequencies): the padded length is odd, so every
    frequency has a phase to turn and the shift is SciPy's exactly."""
    rng = np.random.default_rng(size)
    middle = (size - 1) / 2.0
    stamps = [_gaussian(size, middle + rng.uniform(-0.5, 0.5), middle + rng.uniform(-0.5, 0.5))
              + rng.normal(0, 1e-2, (size, size)) for _ in range(5)]
    moves = [tuple(rng.uniform(-0.6, 0.6, 2)) for _ in stamps]
    moved = psf_stack.shifted_many(stamps, moves)
    length = psf_stack._odd_fast_length(size + 16)
    assert length % 2 == 1 and length >= size + 16
    assert scipy.fft.next_fast_len(length) == length  # a length the FFT does fast
    for stamp, move, ours in zip(stamps, moves, moved):
        padded = np.pad(stamp, ((8, length - size - 8), (8, length - size - 8)))
        reference = np.fft.ifft2(fourier_shift(np.fft.fft2(padded), move)).real
        np.testing.assert_allclose(ours, reference[8: 8 + size, 8: 8 + size], atol=1e-12)


def test_a_shifted_star_lands_where_it_was_sent():
    size = 37
    star = _gaussian(size, 18.3, 17.6)
    (moved,) = psf_stack.shifted_many([star], [(-0.3, 0.4)])
    np.testing.assert_allclose(moved, _gaussian(size, 18.0, 18.0), atol=2e-4)


def test_nan_pixels_stay_nan_and_spread_by_the_interpolations_reach():
    star = _gaussian(37, 18.0, 18.0)
    star[10, 10] = np.nan
    moved = psf_stack.shifted(star, 0.3, 0.0)
    assert np.isnan(moved[10, 10]) and np.isnan(moved[11, 10])
    assert np.isfinite(moved[18, 18]) and np.isnan(moved).sum() <= 9
