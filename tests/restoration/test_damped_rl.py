"""Richardson–Lucy with the sky as a known background, White's damping, the pedestal and the
discrepancy stopping rule, against the float64 reference and the properties they promise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate

from streamer.errors import ParameterError
from streamer.imaging.noise import NoiseModel
from streamer.imaging.psf import gaussian_psf, moffat_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.richardson_lucy import RichardsonLucy
from tests.reference import richardson_lucy_reference

SKY = 40.0


def _data(seed: int = 0) -> tuple[np.ndarray, float]:
    field = star_field((72, 88), gaussian_psf(2.5), stars=15, margin=8, sky=SKY, gradient=0,
                       seed=seed)
    return field.image.astype(np.float64), float(np.sqrt(SKY))


@pytest.mark.parametrize("damping", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("pedestal", [0.0, 1.0])
def test_background_damping_and_pedestal_match_the_reference(opencl, damping, pedestal):
    data, sigma = _data()
    psf = moffat_psf(3.0, 3.0, size=13)
    noise = NoiseModel(sky=SKY, sigma=sigma, inverse_gain=1.0)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "dense")
    got, report = plan(data, num_iter=8, noise=noise, damping=damping, sky=SKY,
                       stop_at_noise=False, pedestal=pedestal)
    expected = richardson_lucy_reference(data, psf, 8, background=SKY - pedestal * sigma,
                                         damping=damping, sigma=sigma, inverse_gain=1.0, sky=SKY)
    assert report.iterations == 8 and report.damping == damping
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3 * expected.max())


def test_flux_is_kept_exactly(opencl):
    data, sigma = _data(seed=3)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(2.5), "dense")
    got, _ = plan(data, num_iter=20, noise=NoiseModel(SKY, sigma, 1.0), damping=1.0, sky=SKY,
                  stop_at_noise=False, pedestal=1.0)
    assert got.sum() == pytest.approx(data.sum(), rel=1e-4)


def test_a_huge_damping_threshold_freezes_the_estimate(opencl):
    # Every residual is far inside T sigma, so f(U) ~ 0 and every ratio is 1: nothing moves.
    data, sigma = _data(seed=5)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(2.5), "dense")
    noise = NoiseModel(SKY, sigma, 1.0)
    one, _ = plan(data, num_iter=1, noise=noise, damping=1e6, sky=SKY, stop_at_noise=False)
    many, _ = plan(data, num_iter=10, noise=noise, damping=1e6, sky=SKY, stop_at_noise=False)
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-4 * one.max())


def test_discrepancy_rule_stops_once_the_data_are_explained(opencl):
    # Noise-free data made by the model itself: chi2 reaches 1 within a few iterations.
    psf = gaussian_psf(2.5)
    truth = np.zeros((60, 60))
    truth[20, 30], truth[40, 15], truth[35, 45] = 5e4, 3e4, 2e4
    padded = np.pad(truth, 2 * (psf.shape[0] // 2,))
    data = correlate(padded, psf, mode="valid")[psf.shape[0] // 2: -(psf.shape[0] // 2),
                                                    psf.shape[0] // 2: -(psf.shape[0] // 2)]
    data = data + SKY
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "dense")
    _, report = plan(data, num_iter=500, noise=NoiseModel(SKY, 30.0, 0.0), sky=SKY)
    assert report.stopped_by == "discrepancy" and report.iterations < 500
    assert report.chi2 <= 1.0
    _, unchecked = plan(data, num_iter=20, noise=NoiseModel(SKY, 30.0, 0.0), sky=SKY,
                        stop_at_noise=False)
    assert unchecked.iterations == 20 and unchecked.stopped_by == "iterations"


@pytest.mark.parametrize("damping", [-1.0, float("nan"), float("inf")])
def test_bad_damping_is_refused(opencl, damping):
    data, sigma = _data()
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(2.5), "dense")
    with pytest.raises(ParameterError, match="damping"):
        plan(data, num_iter=2, noise=NoiseModel(SKY, sigma, 1.0), damping=damping)


def test_a_new_psf_of_the_same_size_reuses_the_plan(opencl):
    data, _ = _data()
    first, second = moffat_psf(2.5, 3.0, size=13), moffat_psf(3.5, 2.5, size=13)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, first, "host_fft")
    plan.set_psf(second)
    got, _ = plan(data, num_iter=4)
    np.testing.assert_allclose(got, richardson_lucy_reference(data, second, 4), rtol=0,
                               atol=1e-3 * data.max())
    with pytest.raises(ParameterError, match="plan anew"):
        plan.set_psf(gaussian_psf(2.0, size=9))
