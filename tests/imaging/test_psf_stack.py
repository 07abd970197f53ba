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


def test_the_holes_move_as_scipys_shift_then_dilation_moves_them():
    # Each NaN mask moved bilinearly (a source past the edge reads 0), thresholded and grown
    # by the cross: SciPy's shift and binary_dilation, for a stack at once. Shifts up to 1.5
    # px either way, masks touching every edge.
    from scipy.ndimage import binary_dilation, shift

    rng = np.random.default_rng(21)
    masks = rng.random((400, 23, 19)) < 0.04
    masks[::7, 0, :] = masks[1::7, -1, :] = masks[2::7, :, 0] = masks[3::7, :, -1] = True
    moves = rng.uniform(-1.5, 1.5, (400, 2))
    moves[::9] = np.round(moves[::9])          # whole pixels
    moves[4::9, 0] = 0.0                       # one axis only
    ours = psf_stack._moved_holes(masks, moves[:, 0], moves[:, 1])
    for mask, move, got in zip(masks, moves, ours):
        expected = binary_dilation(shift(mask.astype(float), tuple(move), order=1) > 0.01)
        assert np.array_equal(got, expected)


def test_a_transform_made_once_moves_the_stamps_as_made_each_time():
    rng = np.random.default_rng(5)
    stamps = [rng.normal(size=(21, 21)) for _ in range(6)]
    stamps[2][3, 4] = np.nan
    moves = [tuple(rng.uniform(-0.6, 0.6, 2)) for _ in stamps]
    transform = psf_stack.transformed(stamps)
    for _ in range(2):  # the transform is read, not changed
        again = psf_stack.shifted_many(stamps, moves, transform=transform)
        for one, other in zip(psf_stack.shifted_many(stamps, moves), again):
            assert np.array_equal(one, other, equal_nan=True)
    with pytest.raises(ValueError, match="transform these stamps"):
        psf_stack.shifted_many(stamps[:4], moves[:4], transform=transform)


def test_whole_and_long_moves_are_the_padded_fourier_shift():
    # The Dirichlet matrices at every offset: moves of whole pixels (the stamp itself,
    # moved, zeros coming in) and of several pixels either way, against SciPy's shift of the
    # zero-padded stamp.
    rng = np.random.default_rng(3)
    size = 23
    stamps = [rng.normal(size=(size, size)) for _ in range(8)]
    moves = [(0.0, 0.0), (1.0, -2.0), (-3.0, 0.0), (2.7, -3.4), (-0.5, 0.5), (5.25, 0.1),
             (-4.9, 4.9), (0.0, 1e-9)]
    moved = psf_stack.shifted_many(stamps, moves)
    length = psf_stack._odd_fast_length(size + 16)
    for stamp, move, ours in zip(stamps, moves, moved):
        padded = np.pad(stamp, ((8, length - size - 8), (8, length - size - 8)))
        reference = np.fft.ifft2(fourier_shift(np.fft.fft2(padded), move)).real
        np.testing.assert_allclose(ours, reference[8: 8 + size, 8: 8 + size], atol=1e-12)
    np.testing.assert_array_equal(moved[0], stamps[0])
    np.testing.assert_allclose(moved[1][1:, :-2], stamps[1][:-1, 2:], atol=1e-14)


@pytest.mark.parametrize("move", [1 - 2**-52, 1 + 2**-51, 0.9999999999999991, 3 + 1e-13,
                                  -2 - 1e-10, 23.0, -30.0, 31.6, 0.5, -0.5])
def test_near_whole_and_wrapping_moves_keep_their_accuracy(move):
    # Moves a rounding away from a whole pixel (the kernel's numerator and denominator both
    # near zero) and moves past the padding, where the circle wraps: SciPy's shift of the
    # padded stamp, to rounding.
    rng = np.random.default_rng(9)
    size = 23
    stamp = rng.normal(size=(size, size))
    (ours,) = psf_stack.shifted_many([stamp], [(move, -move / 3)])
    length = psf_stack._odd_fast_length(size + 16)
    padded = np.pad(stamp, ((8, length - size - 8), (8, length - size - 8)))
    reference = np.fft.ifft2(fourier_shift(np.fft.fft2(padded), (move, -move / 3))).real
    np.testing.assert_allclose(ours, reference[8: 8 + size, 8: 8 + size], atol=1e-12)


def test_nothing_to_refine_is_nothing():
    assert psf_stack.refine([], [], _gaussian(9, 4.0, 4.0)) == []
