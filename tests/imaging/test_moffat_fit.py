"""The Moffat fit's closed-form Jacobian against finite differences, and the fit it drives
against the fit SciPy makes with numerical derivatives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.optimize._numdiff import approx_derivative

from streamer.imaging.moffat_fit import (
    SHAPE_BOUNDS, _JointResiduals, fit_moffat, moffat_derivatives, moffat_model,
)
from streamer.imaging.psf import moffat_profile

HALF = 10


def _stamps(rng: np.random.Generator, noise: float = 1.0) -> list[np.ndarray]:
    stamps = []
    for k in range(3):
        parameters = np.array([100.0 + 30 * k, 3.1, 2.7, 0.2, 33.0, 0.3 * k - 0.2, 0.1 - 0.2 * k])
        stamp = moffat_model(parameters, HALF) + rng.normal(0.0, noise, (2 * HALF + 1,) * 2)
        stamp[3, 4 + k] = np.nan  # a masked neighbour's pixel
        stamps.append(stamp)
    return stamps


def test_profile_is_the_psf_modules_moffat() -> None:
    ys, xs = np.mgrid[-HALF: HALF + 1, -HALF: HALF + 1].astype(float)
    profile, _ = moffat_derivatives(HALF, 3.3, 2.2, 0.3, 71.0, 0.4, -0.6)
    np.testing.assert_allclose(profile, moffat_profile(xs + 0.6, ys - 0.4, 3.3, 2.2, 0.3, 71.0),
                               rtol=1e-13)


@pytest.mark.parametrize("constant", [False, True])
def test_jacobian_matches_finite_differences(constant: bool) -> None:
    stamps = _stamps(np.random.default_rng(1))
    joint = _JointResiduals(stamps, [1.0, np.full(stamps[0].shape, 1.5), 2.0], constant)
    p = np.array([3.0, 2.5, 0.15, 40.0, 100.0, 0.1, -0.1, 120.0, 0.2, 0.0, 150.0, -0.1, 0.2]
                 + ([0.5] if constant else []))
    analytic = joint.jacobian(p)
    numeric = approx_derivative(joint.residuals, p, method="3-point")
    assert analytic.shape == numeric.shape == (joint.residuals(p).size, p.size)
    # Each parameter's column, relative to its own scale (the angle's is per degree).
    error = np.abs(analytic - numeric).max(axis=0) / np.abs(numeric).max(axis=0)
    assert error.max() < 1e-7, error


def _numerical_fit(stamps: list[np.ndarray], errors: list, start_fwhm: float) -> np.ndarray:
    """The fit as it was made before the Jacobian was written out: SciPy's 2-point one."""
    joint = _JointResiduals(stamps, errors, constant=False)
    start, (lower, upper) = [start_fwhm, 2.5, 0.05, 0.0], map(list, SHAPE_BOUNDS)
    for stamp in stamps:
        start += [float(np.nanmax(stamp)), 0.0, 0.0]
        lower += [0.0, -2.0, -2.0]
        upper += [np.inf, 2.0, 2.0]
    return least_squares(joint.residuals, np.array(start), bounds=(lower, upper),
                         x_scale="jac", max_nfev=200 * len(stamps)).x


@pytest.mark.parametrize("noise", [0.0, 1.0, 5.0])
def test_fit_finds_what_the_numerical_fit_finds(noise: float) -> None:
    stamps = _stamps(np.random.default_rng(7), noise)
    errors = [max(noise, 1e-3)] * len(stamps)
    fwhm, beta, ellipticity, angle, _ = fit_moffat(stamps, errors, 2.5)
    reference = _numerical_fit(stamps, errors, 2.5)
    np.testing.assert_allclose([fwhm, beta, ellipticity], reference[:3], rtol=1e-4)
    assert abs(angle - reference[3] % 180.0) < 0.05
    if noise == 0.0:  # the truth, exactly
        np.testing.assert_allclose([fwhm, beta, ellipticity, angle], [3.1, 2.7, 0.2, 33.0],
                                   rtol=1e-6)


def test_constant_under_the_stamps_is_found() -> None:
    stamp = moffat_model(np.array([50.0, 2.4, 3.5, 0.1, 120.0, 0.0, 0.0]), HALF) + 0.75
    fwhm, beta, ellipticity, angle, constant = fit_moffat([stamp], [0.01], 3.0, constant=True)
    np.testing.assert_allclose([fwhm, beta, ellipticity, angle, constant],
                               [2.4, 3.5, 0.1, 120.0, 0.75], rtol=1e-6)
