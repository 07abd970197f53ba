"""Every convolution method equals SciPy's float64 valid correlation within float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate

from streamer.restoration.convolution import separable_terms
from streamer.restoration.correlation_plan import build_correlation, plan_correlation
from streamer.restoration.fft_correlation import fft_available
from streamer.errors import ParameterError
from streamer.imaging.psf import gaussian_psf, moffat_psf, streak_psf

PSFS = {
    "gaussian": gaussian_psf(2.5),
    "moffat": moffat_psf(3.0, 2.5, size=15),
    "streak": streak_psf(15, 35.0, 1.5),
    "rectangular": np.outer(np.hanning(7) + 0.1, np.hanning(11) + 0.1),
}
METHODS = ["dense", "sparse", "separable", "host_fft"] + (["fft"] if fft_available() else [])


@pytest.mark.parametrize("psf_name", sorted(PSFS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("out_shape", [(37, 53), (8, 8), (1, 19), (64, 3)])
def test_methods_match_scipy(opencl, psf_name, method, out_shape):
    weights = PSFS[psf_name] / PSFS[psf_name].sum()
    if method == "separable" and separable_terms(weights) is None:
        with pytest.raises(ParameterError, match="not separable"):
            build_correlation(method, opencl.queue, opencl.library, weights, out_shape)
        return
    src_shape = (out_shape[0] + weights.shape[0] - 1, out_shape[1] + weights.shape[1] - 1)
    src = np.random.default_rng(7).random(src_shape).astype(np.float32)
    correlation = build_correlation(method, opencl.queue, opencl.library, weights, out_shape)
    got = correlation(src)
    expected = correlate(src.astype(np.float64), weights, mode="valid")
    # float32 accumulation over up to a few hundred taps
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * expected.max())


def test_gaussian_is_rank_one_and_streak_is_not():
    assert len(separable_terms(gaussian_psf(3.0))) == 1
    assert separable_terms(streak_psf(21, 30.0, 1.5)) is None


def test_auto_times_the_candidates_and_keeps_the_fastest(opencl):
    weights = streak_psf(21, 30.0, 1.5)
    correlation, timings = plan_correlation(
        opencl.queue, opencl.library, weights, (300, 300), "auto"
    )
    assert set(timings) >= {"dense", "sparse"}
    assert correlation.method == min(timings, key=timings.get)


def test_unknown_method_is_refused(opencl):
    with pytest.raises(ParameterError, match="unknown convolution method"):
        plan_correlation(opencl.queue, opencl.library, gaussian_psf(2.0), (10, 10), "wavelet")


def test_the_measured_choice_is_cached_on_disk(opencl, tmp_path, monkeypatch):
    from streamer.restoration import correlation_plan
    from streamer.restoration.correlation_plan import PlanCache

    cache = PlanCache(tmp_path / "plans.json")
    weights = streak_psf(21, 30.0, 1.5)
    first, timings = plan_correlation(opencl.queue, opencl.library, weights, (300, 300), "auto",
                                      cache)
    assert timings and cache.path.exists()

    def no_timing(*_):  # a fresh process with a warm cache must not time anything
        raise AssertionError("timed again despite the cache")

    monkeypatch.setattr(correlation_plan, "time_correlation", no_timing)
    again, cached = plan_correlation(opencl.queue, opencl.library, weights, (300, 300), "auto",
                                     PlanCache(tmp_path / "plans.json"))
    assert again.method == first.method and cached == timings
    # Another frame shape is another case: measured, not taken from the cache.
    with pytest.raises(AssertionError, match="timed again"):
        plan_correlation(opencl.queue, opencl.library, weights, (320, 300), "auto", cache)


def test_a_corrupt_cache_is_ignored(opencl, tmp_path):
    from streamer.restoration.correlation_plan import PlanCache

    (tmp_path / "plans.json").write_text("{not json")
    correlation, timings = plan_correlation(opencl.queue, opencl.library,
                                            streak_psf(21, 30.0, 1.5), (200, 200), "auto",
                                            PlanCache(tmp_path / "plans.json"))
    assert correlation.method in timings
