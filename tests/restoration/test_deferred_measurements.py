"""Method measurements put off: the estimate's method at once, the measurement later on the
device's idle time, and the plans switched to what it chose."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from streamer.imaging.psf import moffat_psf, streak_psf
from streamer.restoration import correlation_plan
from streamer.restoration.correlation_plan import PlanCache, candidate_costs, plan_correlation
from streamer.restoration.deferred_measurements import DeferredMeasurements, check
from streamer.restoration.restorer import Restorer, padded_psf
from streamer.settings import RestorationSettings
from streamer.imaging.synthetic import star_field


def _method_key(correlation) -> str | None:
    """The plan-cache key of the method measurement put off for ``correlation``."""
    return next((key for key, value in correlation.provisional if value == correlation.method),
                None)


def test_measurements_queue_once_run_in_order_and_survive_a_failure(caplog):
    deferred = DeferredMeasurements()
    ran = []
    deferred.add("a", lambda cancelled: ran.append("a") or "dense")
    deferred.add("a", lambda cancelled: ran.append("again") or "sparse")  # queued: ignored
    deferred.add("b", lambda cancelled: 1 / 0)
    assert deferred.pending == 2
    assert deferred.run_next() == "a" and ran == ["a"]
    with caplog.at_level(logging.WARNING):
        assert deferred.run_next() == "b"
    assert "ZeroDivisionError" in caplog.text and deferred.pending == 0
    assert deferred.run_next() is None
    deferred.add("a", lambda cancelled: "sparse")  # measured already: not again
    assert deferred.pending == 0
    # A plan made by the estimate goes only when its measurement chose something else.
    assert deferred.supersedes("a", "host_fft") and not deferred.supersedes("a", "dense")
    assert not deferred.supersedes("b", "dense")  # failed: the estimate's plan stays
    assert not deferred.supersedes("c", "dense") and not deferred.supersedes(None, "dense")


def test_a_cancelled_measurement_stays_first_in_line():
    deferred = DeferredMeasurements()
    steps = []

    def measure(cancelled):
        for step in ("dense", "host_fft"):
            check(cancelled)
            steps.append(step)
        return "host_fft"

    deferred.add("first", measure)
    deferred.add("second", lambda cancelled: "dense")
    assert deferred.run_next(lambda: len(steps) == 1) is None  # stopped after one step
    assert deferred.pending == 2 and not deferred.supersedes("first", "dense")
    assert deferred.run_next() == "first" and deferred.supersedes("first", "dense")
    assert deferred.run_next() == "second"


def test_a_stopping_worker_leaves_the_device_measurement_queued(opencl, tmp_path):
    cache, deferred = PlanCache(tmp_path / "plans.json"), DeferredMeasurements()
    first, _ = plan_correlation(opencl.queue, opencl.library, streak_psf(21, 30.0, 1.5),
                                (300, 300), "auto", cache, deferred)
    queued = deferred.pending
    assert deferred.run_next(lambda: True) is None and deferred.pending == queued
    assert cache.get(_method_key(first)) is None  # nothing half-measured was kept


def test_the_estimate_now_and_the_measured_choice_later(opencl, tmp_path, monkeypatch):
    cache = PlanCache(tmp_path / "plans.json")
    deferred = DeferredMeasurements()
    weights = streak_psf(21, 30.0, 1.5)
    costs = candidate_costs(weights, (300, 300), opencl.queue.device)

    def no_timing(*_):  # the frame's plan must not wait for any timing
        raise AssertionError("timed on the frame's path")

    with monkeypatch.context() as patch:
        patch.setattr(correlation_plan, "time_correlation", no_timing)
        first, timings = plan_correlation(opencl.queue, opencl.library, weights, (300, 300),
                                          "auto", cache, deferred)
    assert timings == {} and first.method == min(costs, key=costs.get)
    key = _method_key(first)
    assert key is not None and deferred.pending == len(first.provisional)
    assert not cache.path.exists()
    # The same case planned again before the measurement: still the estimate, queued once.
    again, _ = plan_correlation(opencl.queue, opencl.library, weights, (300, 300), "auto",
                                cache, deferred)
    assert again.method == first.method and deferred.pending == len(first.provisional)
    assert deferred.run_next() == key
    while deferred.run_next():
        pass
    chosen = cache.get(key)["method"]
    assert deferred.supersedes(key, first.method) == (chosen != first.method)
    assert first.superseded_by(deferred) == (chosen != first.method)
    measured, timings = plan_correlation(opencl.queue, opencl.library, weights, (300, 300),
                                         "auto", cache, deferred)
    assert measured.method == chosen == min(timings, key=timings.get)
    assert measured.provisional == () and deferred.pending == 0


def test_the_nearest_measured_case_is_taken_before_the_estimate(opencl, tmp_path):
    cache = PlanCache(tmp_path / "plans.json")
    weights = streak_psf(21, 30.0, 1.5)
    measured, timings = plan_correlation(opencl.queue, opencl.library, weights, (300, 300),
                                         "auto", cache)
    # Pretend the measurement found the estimate's least favoured candidate fastest, then
    # plan a case near it (another frame shape) with the measurement put off.
    key = next(key for key, entry in cache.entries().items() if "method" in entry)
    costs = candidate_costs(weights, (300, 300), opencl.queue.device)
    slowest = max(timings, key=costs.get)
    cache.put(key, {**cache.get(key), "method": slowest})
    deferred = DeferredMeasurements()
    near, _ = plan_correlation(opencl.queue, opencl.library, weights, (320, 310), "auto",
                               cache, deferred)
    assert near.method == slowest and deferred.pending >= 1
    # Nothing measured on this device for these candidates: the estimate.
    fresh = PlanCache(tmp_path / "other.json")
    alone, _ = plan_correlation(opencl.queue, opencl.library, weights, (320, 310), "auto",
                                fresh, DeferredMeasurements())
    assert alone.method == min(costs, key=costs.get)


def test_a_restorer_switches_to_the_measured_method(tmp_path):
    restorer = Restorer(RestorationSettings(iterations=10),
                        cache=PlanCache(tmp_path / "plans.json"))
    restorer.defer_measurements()
    psf = moffat_psf(3.6, 3.0)
    psf /= psf.sum()
    image = star_field((160, 192), psf, stars=40, seed=5).image.astype(np.float32)
    first = restorer.restore(image, psf=psf)
    shape, kernel = image.shape, padded_psf(psf)
    provisional = restorer.deconvolution(shape, kernel)
    key = _method_key(provisional.forward)
    assert key is not None and restorer.measurements_pending >= 1
    while restorer.measurements_pending:
        assert restorer.measure_pending()
    assert not restorer.measure_pending()
    chosen = restorer.cache.get(key)["method"]
    switched = restorer.deconvolution(shape, kernel)
    assert switched.method == chosen
    measurements = restorer.session.measurements
    assert (switched is provisional) == (not provisional.forward.superseded_by(measurements)
                                         and not provisional.backward.superseded_by(measurements))
    second = restorer.restore(image, psf=psf)
    # another method, the same restoration (float32 sums in another order)
    np.testing.assert_allclose(second.data, first.data, rtol=2e-4,
                               atol=2e-4 * float(np.nanmax(first.data)))


@pytest.mark.parametrize("deferring", [False, True])
def test_only_a_deferring_restorer_puts_measurements_off(tmp_path, deferring):
    restorer = Restorer(RestorationSettings(), cache=PlanCache(tmp_path / "plans.json"))
    if deferring:
        restorer.defer_measurements()
    kernel = padded_psf(moffat_psf(4.2, 2.5) / moffat_psf(4.2, 2.5).sum())
    with restorer.session.lock:
        plan = restorer.deconvolution((130, 150), kernel)
    key = _method_key(plan.forward)
    if deferring:  # the estimate's method, nothing timed or kept yet
        assert key is not None and restorer.cache.get(key) is None
    else:
        assert key is None and plan.method_timings  # timed on the spot, as before
    while restorer.measurements_pending:  # leave the shared session as found
        restorer.measure_pending()
