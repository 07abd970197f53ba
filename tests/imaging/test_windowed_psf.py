"""The PSF as eq. 1's window leaves a star (streamer.imaging.windowed_psf): its median against
SciPy's, the bright-star profile it predicts against eq. 1 run on the device, compact PSFs and
trails left whole, and a halo PSF's frame restored without moving light into its stars."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import median_filter
from scipy.spatial import cKDTree

from streamer.imaging.psf import moffat_psf, streak_psf
from streamer.imaging.windowed_psf import window_median, windowed_psf
from streamer.operations.science.measure import aperture_flux
from streamer.operations.science.truth import Seeing, truth_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings

WINDOW = 31


def _halo_psf(side: int = 41) -> np.ndarray:
    """A core with a wide halo: Moffat β 1.6 (a fifth of the light beyond 3 FWHM)."""
    return Seeing(3.5, 1.6).image(side // 2)


def test_the_window_median_is_scipys():
    rng = np.random.default_rng(3)
    psf = _halo_psf() * rng.uniform(0.5, 1.5, (41, 41))
    pad = WINDOW // 2
    expected = median_filter(np.pad(psf, pad), size=WINDOW, mode="constant")[pad:-pad, pad:-pad]
    np.testing.assert_array_equal(window_median(psf, WINDOW), expected)
    rows, columns = np.indices(psf.shape)
    disc = np.hypot(rows - 20, columns - 20) <= 12
    np.testing.assert_array_equal(window_median(psf, WINDOW, disc), np.where(disc, expected, 0))


def test_a_compact_psf_has_no_window_median():
    psf = moffat_psf(3.0, 3.0, size=21)
    assert not window_median(psf, WINDOW).any()
    np.testing.assert_allclose(windowed_psf(psf, WINDOW), psf / psf.sum(), atol=1e-12)


def test_a_bright_star_in_eq1s_output_has_the_windowed_profile():
    """Eq. 1 run on the device over a bright, noiseless star on a flat sky leaves exactly
    ``F·(h − M(h))`` inside half a window of its centre."""
    psf = _halo_psf()
    flux, side = 1e6, 161
    frame = np.full((side, side), 100.0)
    centre = side // 2
    frame[centre - 20: centre + 21, centre - 20: centre + 21] += flux * psf
    equalised = Restorer(RestorationSettings()).background_equalised(
        frame.astype(np.float32)).astype(np.float64)
    star = equalised[centre - 20: centre + 21, centre - 20: centre + 21]
    star = star - np.median(equalised[:30, :30])
    predicted = flux * (psf - window_median(psf, WINDOW))
    rows, columns = np.indices(psf.shape)
    inside = np.hypot(rows - 20, columns - 20) <= WINDOW / 2
    assert np.abs(star - predicted)[inside].max() < 1e-4 * flux * psf.max()
    # ... and not the PSF itself: the window took 7 % of the light there away as sky.
    assert (flux * psf - star)[inside].sum() > 0.05 * flux


def test_the_halo_is_cut_beyond_half_a_window_but_a_trail_keeps_its_length():
    psf = _halo_psf()
    out = windowed_psf(psf, WINDOW)
    rows, columns = np.indices(psf.shape)
    far = np.hypot(rows - 20, columns - 20) > WINDOW / 2
    assert out.sum() == pytest.approx(1.0) and (out >= 0).all()
    assert not out[far].any() and psf[far].sum() > 0.02
    trail = streak_psf(45.0, 20.0, core_fwhm=2.5, size=51)
    np.testing.assert_allclose(windowed_psf(trail, WINDOW, ellipticity=0.9),
                               trail / trail.sum(), atol=1e-12)


def test_a_lopsided_psf_is_windowed_without_error():
    psf = _halo_psf()
    psf[:, 25:] *= 3.0
    out = windowed_psf(psf, WINDOW)
    assert np.isfinite(out).all() and out.sum() == pytest.approx(1.0)


def _restored_excess(field, window: int | None) -> float:
    """Median of (restored − input) aperture flux over the true flux, isolated stars."""
    restorer = Restorer(RestorationSettings())
    restorer.preparer.window = window
    restored = restorer.restore(field.image).data
    data = restorer.background_equalised(field.image)
    stars, fwhm = field.stars, field.seeing.fwhm
    xy = np.column_stack([stars["x"], stars["y"]])
    nearest = cKDTree(xy).query(xy, k=2)[0][:, 1]
    margin, side = 7 * fwhm, field.image.shape[0] - 1
    excess = []
    for star, distance in zip(stars, nearest):
        if distance < 8 * fwhm or not (margin < star["x"] < side - margin
                                       and margin < star["y"] < side - margin):
            continue
        before, _, _ = aperture_flux(data, star["x"], star["y"], 3 * fwhm, (4 * fwhm, 6 * fwhm))
        after, _, _ = aperture_flux(restored, star["x"], star["y"], 3 * fwhm,
                                    (4 * fwhm, 6 * fwhm))
        excess.append((after - before) / star["flux"])
    assert len(excess) >= 20
    return float(np.median(excess))


def test_a_halo_psfs_stars_keep_their_flux():
    """With the whole PSF, RL gathers the halo eq. 1 removed into each star (+11 % of its
    flux measured); with the windowed PSF +3 % (the window takes more of faint stars' halos
    than of a bright star's, which one kernel cannot follow)."""
    field = truth_field((512, 512), Seeing(3.5, 1.6, 0.05, 20.0), stars=80, seed=7,
                        snr=(10.0, 1000.0))
    windowed, whole = _restored_excess(field, WINDOW), _restored_excess(field, None)
    assert whole > 0.08
    assert abs(windowed) < 0.05 and not math.isclose(windowed, whole, abs_tol=0.05)
