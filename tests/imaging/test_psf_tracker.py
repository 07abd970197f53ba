"""Per-camera PSF state: smoothing, seeing changes, few stars, no stars."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from streamer.imaging.psf import gaussian_psf, moffat_profile
from streamer.imaging.psf_tracker import PSFTracker, blend
from streamer.imaging.synthetic import analytic_star_field


def _frame(fwhm: float, stars: int = 250, seed: int = 0, flux_range=(2e3, 5e4)):
    return analytic_star_field((768, 768), partial(moffat_profile, fwhm=fwhm, beta=3.0), 25,
                               stars=stars, seed=seed, flux_range=flux_range).image


@pytest.fixture()
def tracker() -> PSFTracker:
    return PSFTracker(gaussian_psf(3.0), "gaussian:fwhm=3", smoothing=0.3)


def test_agreeing_frames_are_smoothed_and_cameras_kept_apart(tracker):
    first = tracker.psf_for("camA", _frame(3.0, seed=1))
    second = tracker.psf_for("camA", _frame(3.0, seed=2))
    assert first.method == second.method == "empirical"
    other = tracker.psf_for("camB", _frame(4.5, seed=3))
    assert other.fwhm == pytest.approx(4.5, rel=0.05)
    assert tracker.cameras()["camA"].fwhm == pytest.approx(3.0, rel=0.05)


def test_new_seeing_replaces_the_psf(tracker):
    tracker.psf_for("cam", _frame(3.0, seed=1))
    changed = tracker.psf_for("cam", _frame(4.2, seed=2))
    assert changed.fwhm == pytest.approx(4.2, rel=0.05)  # not averaged with the old seeing


def test_a_frame_with_few_stars_gets_the_cameras_recent_psf(tracker):
    recent = tracker.psf_for("cam", _frame(3.0, seed=1))
    sparse = tracker.psf_for("cam", _frame(3.0, stars=3, seed=4, flux_range=(2e5, 4e5)))
    assert sparse.method == "previous" and sparse.warning is None
    np.testing.assert_allclose(sparse.psf, recent.psf, atol=1e-12)


def test_few_stars_in_new_seeing_give_the_fitted_moffat(tracker):
    tracker.psf_for("cam", _frame(3.0, seed=1))
    sparse = tracker.psf_for("cam", _frame(4.5, stars=3, seed=4, flux_range=(2e5, 4e5)))
    assert sparse.method == "moffat" and sparse.fwhm == pytest.approx(4.5, rel=0.1)


def test_no_stars_falls_back_to_the_last_good_psf_then_the_configured_one(tracker):
    empty = np.random.default_rng(0).normal(100.0, 5.0, (256, 256))
    fallback = tracker.psf_for("new-camera", empty)
    assert fallback.method == "fallback" and fallback.is_fallback
    assert "gaussian:fwhm=3" in fallback.warning
    np.testing.assert_allclose(fallback.psf, gaussian_psf(3.0))
    good = tracker.psf_for("cam", _frame(3.0, seed=1))
    previous = tracker.psf_for("cam", empty)
    assert previous.method == "previous" and previous.is_fallback
    assert "last good PSF" in previous.warning
    np.testing.assert_allclose(previous.psf, good.psf)


def test_blend_pads_to_a_common_size_and_stays_normalised():
    mixed = blend(gaussian_psf(2.0, size=9), gaussian_psf(2.0, size=15), 0.5)
    assert mixed.shape == (15, 15) and mixed.sum() == pytest.approx(1.0)


def test_a_measured_psf_that_fails_its_checks_falls_back_with_a_warning(monkeypatch, recwarn):
    """No frame is lost to its PSF: a PSFError from the measurement is the fallback's cue, and
    no RuntimeWarning of the measurement reaches the caller."""
    import warnings

    from streamer.errors import PSFError
    from streamer.imaging import psf_tracker as tracker_module

    def failing(*args, **kwargs):
        warnings.warn("Mean of empty slice", RuntimeWarning)
        raise PSFError("measured PSF: PSF centroid is at (row 16.01, column 15.67)")

    monkeypatch.setattr(tracker_module, "measure_psf", failing)
    tracker = tracker_module.PSFTracker(gaussian_psf(3.0), "gaussian:fwhm=3")
    chosen = tracker.psf_for("cam", np.zeros((64, 64), np.float32))
    assert chosen.method == "fallback" and chosen.is_fallback
    assert "unusable" in chosen.warning and "centroid" in chosen.warning
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
