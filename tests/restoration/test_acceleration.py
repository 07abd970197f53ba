"""Richardson–Lucy accelerated by vector extrapolation (rl_accel_step, rl_accel_extrapolate)
against the float64 reference written from Biggs & Andrews (1997), by the copying and the
in-place iterations; and what it is for: a bright star's model converges in fewer steps."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.noise import NoiseModel
from streamer.imaging.psf import moffat_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.richardson_lucy import RichardsonLucy
from tests.reference import richardson_lucy_reference

SKY = 40.0


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    field = star_field((72, 88), moffat_psf(3.0, 3.0, size=13), stars=15, margin=8, sky=SKY,
                       gradient=0, seed=3)
    return field.image.astype(np.float64)


@pytest.mark.parametrize("method, in_place", [("dense", False), ("host_fft", True)])
def test_accelerated_rl_equals_its_reference(opencl, data, method, in_place):
    psf = moffat_psf(3.0, 3.0, size=13)
    sigma = float(np.sqrt(SKY))
    noise = NoiseModel(sky=SKY, sigma=sigma, inverse_gain=1.0)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, method)
    assert (plan._in_place is not None) == in_place
    got, report = plan(data, num_iter=8, noise=noise, damping=1.0, sky=SKY,
                       stop_at_noise=False, pedestal=1.0, accelerate=True)
    expected = richardson_lucy_reference(data, psf, 8, background=SKY - sigma, damping=1.0,
                                         sigma=sigma, inverse_gain=1.0, sky=SKY,
                                         accelerate=True)
    plain = richardson_lucy_reference(data, psf, 8, background=SKY - sigma, damping=1.0,
                                      sigma=sigma, inverse_gain=1.0, sky=SKY)
    assert report.iterations == 8
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3 * expected.max())
    # The extrapolation did something the plain iterations do not.
    assert np.abs(expected - plain).max() > 5e-2 * expected.max()


def test_acceleration_reaches_a_lower_chi2_in_the_same_steps(opencl, data):
    psf = moffat_psf(3.0, 3.0, size=13)
    noise = NoiseModel(sky=SKY, sigma=float(np.sqrt(SKY)), inverse_gain=1.0)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "dense")
    chi2 = {}
    for accelerate in (False, True):
        _, report = plan(data, num_iter=15, noise=noise, damping=0.0, sky=SKY,
                         stop_at_noise=False, accelerate=accelerate)
        chi2[accelerate] = report.chi2
    assert chi2[True] < 0.7 * chi2[False], chi2
    # A plan runs plainly again after an accelerated run (the state is the run's own).
    _, again = plan(data, num_iter=15, noise=noise, damping=0.0, sky=SKY, stop_at_noise=False)
    assert again.chi2 == pytest.approx(chi2[False], rel=1e-5)
