"""Richardson–Lucy on the device against a float64 NumPy implementation of the same equations
and boundary rule, and the properties the product promises."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

from streamer.restoration.fft_correlation import fft_available
from streamer.errors import ParameterError
from streamer.imaging.psf import gaussian_psf, moffat_psf, streak_psf
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.imaging.synthetic import star_field
from tests.reference import richardson_lucy_reference

METHODS = ["dense", "sparse", "host_fft"] + (["fft"] if fft_available() else [])


def _data(shape=(64, 80), seed=0):
    field = star_field(shape, gaussian_psf(2.5), stars=15, margin=6, seed=seed)
    return field.image - field.image.min() + 1.0


@pytest.mark.parametrize("psf", [gaussian_psf(2.5), moffat_psf(3.0, 3.0, size=13),
                                 streak_psf(9, 20.0, 1.2)], ids=["gaussian", "moffat", "streak"])
@pytest.mark.parametrize("method", METHODS + ["auto"])
def test_matches_float64_reference(opencl, psf, method):
    data = _data()
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, method)
    got, report = plan(data, num_iter=10)
    expected = richardson_lucy_reference(data, psf, 10)
    assert report.iterations == 10
    # float32 device arithmetic vs float64: relative to the frame's peak
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * expected.max())


def test_masked_pixels_match_reference_and_do_not_spread(opencl):
    data = _data(seed=2)
    weight = np.ones_like(data)
    weight[20:24, 30:33] = 0
    weight[0, :] = 0
    holed = data.copy()
    holed[weight == 0] = 1e9  # garbage in excluded pixels must not matter
    psf = gaussian_psf(2.5)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "dense")
    got, _ = plan(holed, num_iter=8, weight=weight)
    expected = richardson_lucy_reference(data, psf, 8, weight)
    valid = weight > 0
    assert np.all(np.isfinite(got[valid])) and np.all(np.isnan(got[~valid]))
    np.testing.assert_allclose(got[valid], expected[valid], rtol=0, atol=1e-3 * expected.max())


def test_delta_psf_is_identity(opencl):
    data = _data()
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, delta, "dense")
    got, _ = plan(data, num_iter=5)
    np.testing.assert_allclose(got, data, rtol=1e-5)


def test_output_non_negative_and_finite_with_zero_regions(opencl):
    data = _data()
    data[10:40, 10:40] = 0.0  # model 0 there: no division by zero
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(2.5), "dense")
    got, _ = plan(data, num_iter=20)
    assert np.all(np.isfinite(got))
    assert got.min() >= 0.0


def test_flux_conserved_on_star_field(opencl):
    field = star_field((200, 220), gaussian_psf(3.0), stars=50, seed=5)
    data = field.image - field.image.min()
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(3.0))
    got, _ = plan(data, num_iter=30)
    assert abs(got.sum() / data.sum() - 1.0) < 0.01


def test_no_ringing_or_dark_edges_on_a_flat_field(opencl):
    # A flat sky must stay flat up to the frame edge; zero-padded RL darkens the edges.
    flat = np.full((60, 60), 100.0, dtype=np.float32)
    psf = gaussian_psf(4.0)
    plan = RichardsonLucy(opencl.queue, opencl.library, flat.shape, psf)
    got, _ = plan(flat, num_iter=30)
    assert np.max(np.abs(got / 100.0 - 1.0)) < 1e-3
    theirs = skimage_richardson_lucy(flat / 100.0, psf, num_iter=30, clip=False)
    assert np.max(np.abs(theirs - 1.0)) > 0.05  # the pitfall this test guards against


def test_tolerance_stops_early(opencl):
    data = _data()
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(2.5))
    _, report = plan(data, num_iter=200, tolerance=1e-2)
    assert report.iterations < 200
    assert report.relative_change < 1e-2
    _, full = plan(data, num_iter=3)
    assert full.iterations == 3 and full.relative_change > 0


@pytest.mark.parametrize("num_iter,tolerance", [(0, None), (-1, None), (2.5, None), (5, 0.0), (5, 1.5)])
def test_bad_iteration_parameters(opencl, num_iter, tolerance):
    data = _data()
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, gaussian_psf(2.5))
    with pytest.raises(ParameterError):
        plan(data, num_iter=num_iter, tolerance=tolerance)


def test_a_passed_deadline_stops_richardson_lucy(opencl):
    import time

    from streamer.errors import FrameDeadlineError

    plan = RichardsonLucy(opencl.queue, opencl.library, (30, 40), gaussian_psf(1.5, size=5),
                          "dense")
    plan.set_weights(None)
    plan.set_data(np.ones((30, 40), np.float32))
    with pytest.raises(FrameDeadlineError, match=r"Richardson-Lucy \(1 of 5 iterations\) not "
                                                 r"done by its deadline"):
        plan.run(5, deadline=time.monotonic() - 1.0)


@pytest.mark.parametrize("psf", [moffat_psf(3.0, 3.0, size=13), streak_psf(9, 20.0, 1.2)],
                         ids=["moffat", "streak"])
def test_host_fft_in_place_iterations_equal_the_copying_ones(opencl, psf):
    """On a CPU device with FFTW, host_fft iterates on the transforms' own buffers
    (in_place_iterations): the same arithmetic as the copying iteration, damped, masked and
    measured every iteration (χ² and change), so the outputs and reports must agree."""
    from streamer.imaging.noise import NoiseModel
    from streamer.restoration.host_transforms import fftw_available

    if not fftw_available():
        pytest.skip("pyFFTW is not installed: host_fft copies through pocketfft")
    data = _data((71, 90), seed=4)
    weight = np.ones_like(data)
    weight[30:34, 40:47] = 0
    options = dict(num_iter=12, weight=weight, noise=NoiseModel(0.0, 2.0, 0.5), damping=1.5,
                   sky=float(np.median(data)), pedestal=1.0, stop_at_noise=False,
                   tolerance=1e-4)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "host_fft")
    assert plan._in_place is not None  # PoCL's CPU device sees FFTW's memory without a copy
    in_place, in_place_report = plan(data, **options)
    plan._in_place = None
    copying, copying_report = plan(data, **options)
    assert np.array_equal(np.isnan(in_place), np.isnan(copying))
    valid = weight > 0
    np.testing.assert_allclose(in_place[valid], copying[valid], rtol=0,
                               atol=1e-6 * copying[valid].max())
    assert in_place_report.iterations == copying_report.iterations == 12
    assert in_place_report.chi2 == pytest.approx(copying_report.chi2, rel=1e-5)
    assert in_place_report.relative_change == pytest.approx(copying_report.relative_change,
                                                            rel=1e-4)
    expected = richardson_lucy_reference(data, psf, 10)
    got, _ = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "host_fft")(data, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * expected.max())


def test_a_host_fft_plan_is_freed_without_the_cycle_collector(opencl):
    """Evicted plans must give their transform buffers back at once: a reference cycle
    through the in-place iterations left them to the cyclic collector, and a worker that
    cycles plans grew 9.5 % in 30 minutes."""
    import gc
    import weakref

    plan = RichardsonLucy(opencl.queue, opencl.library, (40, 50), moffat_psf(3.0, 3.0, size=9),
                          "host_fft")
    plan(_data((40, 50)), num_iter=2)
    alive = weakref.ref(plan)
    gc.disable()
    try:
        del plan
        assert alive() is None
    finally:
        gc.enable()
