"""The host's FFT pairs behind ``host_fft``: FFTW (pyFFTW) and the pocketfft fallback give
SciPy's correlation; FFTW's size choice and wisdom are kept on disk and reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import correlate

from streamer.imaging.psf import moffat_psf, streak_psf
from streamer.restoration import host_transforms
from streamer.restoration.correlation_plan import PlanCache, build_correlation
from streamer.restoration.host_transforms import (
    FFTWPair, PocketFFTPair, fftw_available, plan_pair, smooth_lengths,
)

LIBRARIES = ["pocketfft"] + (["fftw"] if fftw_available() else [])


def test_candidate_lengths_are_fftw_friendly():
    assert smooth_lengths(2088) == [2100, 2112, 2160, 2187]   # 2²·3·5²·7, 2⁶·3·11, ...
    assert smooth_lengths(2048) == [2048, 2100, 2112, 2160]    # not 2058 = 2·3·7³
    assert smooth_lengths(13) == [14]                          # 13 is prime: next one only
    assert smooth_lengths(1) == [1]


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_pair_is_unnormalised_and_invertible(library):
    pair = (FFTWPair if library == "fftw" else PocketFFTPair)((24, 30), 2)
    image = np.random.default_rng(1).random((24, 30)).astype(np.float32)
    pair.real[...] = image
    pair.forward()
    assert np.allclose(pair.spectrum[0, 0], image.sum(), rtol=1e-5)
    pair.backward()
    np.testing.assert_allclose(pair.output / pair.size, image, atol=1e-5)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("psf", [moffat_psf(3.0, 2.5, size=15), streak_psf(15, 35.0, 1.5)])
def test_host_fft_equals_scipy_with_either_library(opencl, monkeypatch, library, psf):
    monkeypatch.setattr(host_transforms, "fftw_available", lambda: library == "fftw")
    weights = psf / psf.sum()
    correlation = build_correlation("host_fft", opencl.queue, opencl.library, weights, (61, 47))
    assert correlation.transforms.library == library
    src = np.random.default_rng(3).random(correlation.src_shape).astype(np.float32)
    expected = correlate(src.astype(np.float64), weights, mode="valid")
    for _ in range(2):  # the transform input must stay zero outside the source block
        np.testing.assert_allclose(correlation(src), expected, rtol=0,
                                   atol=2e-6 * expected.max())


@pytest.mark.skipif(not fftw_available(), reason="pyFFTW is not installed")
def test_the_measured_size_and_wisdom_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(host_transforms, "_loaded_wisdom", set())
    cache = PlanCache(tmp_path / "plans.json")
    first = plan_pair((130, 100), 2, cache)
    (entry,) = [value for key, value in cache._read().items() if "fftw-size" in key]
    assert set(entry["timings"]) == {"132x100", "135x105", "140x108"}
    assert tuple(entry["shape"]) == first.shape and list(tmp_path.glob("fftw-wisdom-*.json"))

    def no_timing(*_):  # a fresh process with a warm cache times nothing
        raise AssertionError("timed again despite the cache")

    monkeypatch.setattr(host_transforms, "_time_pair", no_timing)
    monkeypatch.setattr(host_transforms, "_loaded_wisdom", set())
    assert plan_pair((130, 100), 2, PlanCache(tmp_path / "plans.json")).shape == first.shape
    with pytest.raises(AssertionError, match="timed again"):
        plan_pair((131, 100), 2, cache)


@pytest.mark.skipif(not fftw_available(), reason="pyFFTW is not installed")
def test_a_size_measurement_put_off_takes_the_smallest_for_now(tmp_path, monkeypatch):
    from streamer.restoration.deferred_measurements import DeferredMeasurements

    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path))
    cache, deferred = PlanCache(tmp_path / "plans.json"), DeferredMeasurements()
    with monkeypatch.context() as patch:
        patch.setattr(host_transforms, "_time_pair", lambda *_: 1 / 0)  # nothing timed now
        now = plan_pair((130, 100), 2, cache, deferred=deferred)
    assert now.shape == (132, 100) and deferred.pending == 1
    key, size = now.measurement
    assert size == "132x100" and cache.get(key) is None
    assert deferred.run_next() == key
    chosen = cache.get(key)["shape"]
    assert deferred.supersedes(key, size) == (tuple(chosen) != (132, 100))
    later = plan_pair((130, 100), 2, cache, deferred=deferred)
    assert later.shape == tuple(chosen) and later.measurement is None and deferred.pending == 0


@pytest.mark.skipif(not fftw_available(), reason="pyFFTW is not installed")
def test_a_plans_cache_also_keeps_its_fft_size(opencl, tmp_path):
    """The FFT size that host_fft measures goes to the cache the plan was given (a Restorer's
    own), not to the default one."""
    from streamer.restoration.richardson_lucy import RichardsonLucy

    cache = PlanCache(tmp_path / "plans.json")
    plan = RichardsonLucy(opencl.queue, opencl.library, (53, 61), moffat_psf(3.0, 2.5, size=9),
                          "host_fft", cache=cache)
    keys = [key for key in cache._read() if "fftw-size" in key]
    wanted = {plan.forward.src_shape, plan.backward.src_shape}
    assert {tuple(json.loads(key)[-1]) for key in keys} == wanted
