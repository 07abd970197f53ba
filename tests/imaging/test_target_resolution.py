"""The restoration's target resolution: the rule for the target, and the kernel k with
g ⊛ k = h found by Richardson–Lucy on the PSF (checked against scipy's convolution)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d, correlate2d, fftconvolve

from streamer.imaging.moments import half_maximum_fwhm
from streamer.imaging.psf_measure import describe
from streamer.imaging.target_resolution import (
    MAX_TARGET_SHARE, MIN_TARGET_FWHM, _linear_operators, gaussian_target, narrower_kernel,
    resolution_for, target_fwhm,
)
from streamer.operations.science.truth import Seeing


def _psf(fwhm: float, beta: float = 3.0, ellipticity: float = 0.0) -> np.ndarray:
    psf = Seeing(fwhm, beta, ellipticity, 25.0).image(int(3 * fwhm) + 3)
    return psf / psf.sum()


def test_the_target_rule():
    assert target_fwhm(6.0) == pytest.approx(0.55 * 6.0)          # well sampled: 0.55
    assert target_fwhm(3.0) == pytest.approx(MIN_TARGET_FWHM)      # at least 2 pixels
    assert target_fwhm(2.2) == pytest.approx(MAX_TARGET_SHARE * 2.2)  # at least 20 % sharper
    assert target_fwhm(4.0, ellipticity=0.36) == pytest.approx(
        max(MIN_TARGET_FWHM, 0.55 * 4.0 * 0.8))                    # the minor axis counts
    assert target_fwhm(4.0, setting=2.5) == 2.5 and target_fwhm(4.0, setting=0.0) == 0.0


def test_the_gaussian_target_is_normalised_and_has_its_fwhm():
    target = gaussian_target(2.4, (21, 21))
    assert target.sum() == pytest.approx(1.0) and target.argmax() == 21 * 10 + 10
    assert half_maximum_fwhm(target) == pytest.approx(2.4, rel=0.04)  # pixel-integrated


@pytest.mark.parametrize("fwhm, beta, ellipticity", [(3.6, 3.0, 0.05), (6.0, 2.5, 0.2),
                                                      (2.2, 4.0, 0.0)])
def test_the_kernel_times_the_target_is_the_psf(fwhm, beta, ellipticity):
    psf = _psf(fwhm, beta, ellipticity)
    target = gaussian_target(target_fwhm(half_maximum_fwhm(psf), ellipticity), psf.shape)
    kernel = narrower_kernel(psf, target)
    assert kernel.min() >= 0 and kernel.sum() == pytest.approx(1.0)
    rebuilt = fftconvolve(kernel, target, mode="same")
    assert np.abs(rebuilt - psf).max() <= 0.02 * psf.max()
    assert half_maximum_fwhm(rebuilt) == pytest.approx(half_maximum_fwhm(psf), rel=0.03)
    assert half_maximum_fwhm(kernel) < half_maximum_fwhm(psf)


def test_no_target_keeps_the_psf():
    psf = _psf(3.0)
    resolution = resolution_for(describe(psf, "given", 0, 0), 0.0)
    assert resolution.target is None and resolution.kernel is psf
    aimed = resolution_for(describe(psf, "given", 0, 0), None)
    assert aimed.fwhm == pytest.approx(MIN_TARGET_FWHM) and aimed.kernel.shape == psf.shape


@pytest.mark.parametrize("separable", [True, False])
def test_the_kernel_search_convolves_as_scipy_does(separable):
    """Both ways the RL on the PSF convolves (a separable target as two matrix products, any
    other by FFTs) equal SciPy's direct convolution and correlation, cut to the PSF's shape
    about the target's centre ('same')."""
    rng = np.random.default_rng(4)
    # Lopsided, so that a convolution taken for a correlation would show.
    target = np.outer(rng.random(15), rng.random(11))
    if not separable:
        target = target + 0.1 * rng.random(target.shape)  # rank > 1
    x = rng.random((21, 25))
    convolved, correlated = _linear_operators(target, x.shape)
    np.testing.assert_allclose(convolved(x), convolve2d(x, target, mode="same"),
                               rtol=1e-13)
    np.testing.assert_allclose(correlated(x), correlate2d(x, target, mode="same"),
                               rtol=1e-13)
