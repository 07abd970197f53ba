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


def test_a_measured_psf_that_fails_its_checks_falls_back_with_a_warning(monkeypatch):
    """No frame is lost to its PSF: a PSFError from the measurement is the fallback's cue."""
    from streamer.errors import PSFError
    from streamer.imaging import psf_tracker as tracker_module

    def failing(*args, **kwargs):
        raise PSFError("measured PSF: PSF centroid is at (row 16.01, column 15.67)")

    monkeypatch.setattr(tracker_module, "measure_psf", failing)
    tracker = tracker_module.PSFTracker(gaussian_psf(3.0), "gaussian:fwhm=3")
    chosen = tracker.psf_for("cam", np.zeros((64, 64), np.float32))
    assert chosen.method == "fallback" and chosen.is_fallback
    assert "unusable" in chosen.warning and "centroid" in chosen.warning


@pytest.mark.parametrize("name", ["DSS", "NGC1316", "M13"])
def test_measuring_real_frames_with_masked_and_saturated_stars_warns_nothing(name):
    """The measurement raises no NumPy warning of its own (NaN-masked stamps, empty slices):
    the worker measures frames on several threads, where a warning filter set around it would
    leak into the other threads (streamer.quiet), so none is set. Whole frames, a cutout with
    few stars, and a frame with a NaN quarter, with warnings as errors."""
    import warnings

    from streamer.imaging.fits_io import read_image
    from tests.sources.test_real_frames import FRAMES

    image = read_image(FRAMES[name]).data.astype(np.float32)
    holed = image.copy()
    holed[: image.shape[0] // 2, : image.shape[1] // 2] = np.nan
    tracker = PSFTracker(gaussian_psf(3.0), "gaussian:fwhm=3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frame in (image, image[:64, :64], holed):
            mask = ~np.isfinite(frame)
            tracker.psf_for(name, np.where(mask, 0, frame), mask)


def test_frames_prepared_on_several_threads_see_the_camera_in_fetch_order(monkeypatch):
    """With tickets (streamer.turns) the camera's PSF and levels are read and updated in fetch
    order, so frames measured on two threads, the earlier ones made slower, are prepared
    exactly as one thread prepares them. Without the turns the later frames would settle
    first and the running mean would differ."""
    from concurrent.futures import ThreadPoolExecutor
    import time

    from streamer.imaging import psf_tracker as tracker_module
    from streamer.imaging.preparation import FramePreparer, preparation_turns
    from streamer.settings import RestorationSettings

    frames = [_frame(fwhm, seed=seed).astype(np.float32)
              for seed, fwhm in enumerate((3.0, 3.1, 3.0, 3.05, 4.6, 3.0))]
    alone = FramePreparer.from_settings(RestorationSettings())
    expected = [alone.prepare(frame, camera_id="cam") for frame in frames]

    measure = tracker_module.measure_psf
    delays = {id(frame): 0.15 * (len(frames) - i) for i, frame in enumerate(frames)}

    def slow_for_early_frames(image, *args, **kwargs):
        time.sleep(delays.get(id(image), 0.0))
        return measure(image, *args, **kwargs)

    monkeypatch.setattr(tracker_module, "measure_psf", slow_for_early_frames)
    threaded = FramePreparer.from_settings(RestorationSettings())
    turns = preparation_turns()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(threaded.prepare, frame, camera_id="cam", ticket=turns.ticket())
                   for frame in frames]
        prepared = [future.result(timeout=120) for future in futures]
    for one, other in zip(expected, prepared):
        assert other.psf.method == one.psf.method
        np.testing.assert_array_equal(other.psf.psf, one.psf.psf)
        assert other.saturation == one.saturation
