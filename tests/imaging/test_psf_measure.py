"""The PSF measured from synthetic frames whose true PSF is known: Moffat, elliptical, streak,
undersampled; with few stars, saturated stars and a crowded cluster; and bad inputs."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from streamer.errors import TooFewStarsError
from streamer.imaging.moments import adaptive_moments, half_maximum_fwhm
from streamer.imaging.psf import gaussian_profile, moffat_profile, streak_profile, validate_psf
from streamer.imaging.psf_measure import measure_psf
from streamer.imaging.synthetic import analytic_star_field

CASES = {
    "moffat": (partial(moffat_profile, fwhm=4.0, beta=2.5), 30),
    "elliptical": (partial(moffat_profile, fwhm=3.5, beta=3.0, ellipticity=0.2, angle=30), 30),
    "streak": (partial(streak_profile, length=25, angle=20, core_fwhm=2.0), 30),
    "undersampled": (partial(gaussian_profile, fwhm=2.2, ellipticity=0.15, angle=100), 12),
}


def _field(profile, radius, **options):
    values = dict(stars=300, seed=3)
    values.update(options)
    return analytic_star_field((1024, 1024), profile, radius, **values)


def _assert_recovered(measured, truth, ellipticity_tolerance=0.05):
    assert measured.fwhm == pytest.approx(half_maximum_fwhm(truth), rel=0.05)
    true_shape = adaptive_moments(truth)
    if true_shape.ellipticity >= 0.1:
        assert measured.ellipticity == pytest.approx(true_shape.ellipticity,
                                                     rel=ellipticity_tolerance)
        assert abs((measured.angle - true_shape.angle + 90) % 180 - 90) < 3.0
    else:
        assert measured.ellipticity < 0.03
    validate_psf(measured.psf)  # normalised, odd, centred


@pytest.mark.parametrize("name", sorted(CASES))
def test_psf_recovered_within_5_percent(name):
    profile, radius = CASES[name]
    field = _field(profile, radius)
    measured = measure_psf(field.image)
    assert measured.method == ("streak" if name == "streak" else "empirical")
    assert measured.stars_used >= 20 and measured.warning is None
    _assert_recovered(measured, field.psf)


def test_size_follows_the_profile():
    narrow = measure_psf(_field(partial(moffat_profile, fwhm=2.5, beta=4.0), 20).image)
    wide = measure_psf(_field(partial(moffat_profile, fwhm=4.0, beta=2.5), 30).image)
    assert narrow.psf.shape[0] < wide.psf.shape[0] <= 63
    assert wide.psf[wide.psf.shape[0] // 2].sum() > 0  # the wings are kept, not cut at the core
    assert wide.psf.sum() == pytest.approx(1.0)


def test_few_stars_give_a_fitted_moffat():
    profile, radius = CASES["elliptical"]
    field = _field(profile, radius, stars=3, flux_range=(2e5, 4e5))
    measured = measure_psf(field.image)
    assert measured.method == "moffat" and 1 <= measured.stars_used < 5
    assert measured.fwhm == pytest.approx(half_maximum_fwhm(field.psf), rel=0.1)
    assert measured.ellipticity == pytest.approx(0.2, abs=0.05)


def test_few_trailed_stars_give_a_streak_model():
    profile, radius = CASES["streak"]
    field = _field(profile, radius, stars=3, flux_range=(3e5, 5e5))
    measured = measure_psf(field.image)
    assert measured.method == "streak" and measured.stars_used < 5
    assert measured.ellipticity > 0.8
    assert abs((measured.angle - 20 + 90) % 180 - 90) < 3.0


def test_saturated_stars_do_not_corrupt_it():
    profile = partial(moffat_profile, fwhm=3.0, beta=3.0)
    field = _field(profile, 25, flux_range=(3e3, 2e6), saturation=20000.0)
    assert (field.image >= 20000).sum() > 50  # many stars are clipped flat
    measured = measure_psf(field.image)
    _assert_recovered(measured, field.psf)


def test_a_crowded_cluster_does_not_corrupt_it():
    profile = partial(moffat_profile, fwhm=3.0, beta=3.0)
    field = _field(profile, 25, stars=150, cluster=(512, 512, 80, 3000))
    measured = measure_psf(field.image)
    assert measured.stars_found > 1000
    _assert_recovered(measured, field.psf)


def test_no_stars_is_a_clear_error():
    flat = np.random.default_rng(0).normal(100.0, 5.0, (256, 256))
    with pytest.raises(TooFewStarsError, match="no"):
        measure_psf(flat)


def test_all_saturated_is_a_clear_error():
    profile = partial(moffat_profile, fwhm=3.0, beta=3.0)
    field = _field(profile, 25, stars=40, flux_range=(5e6, 1e7), saturation=20000.0)
    with pytest.raises(TooFewStarsError):
        measure_psf(field.image)


def test_masked_pixels_keep_stars_out():
    profile, radius = CASES["moffat"]
    field = _field(profile, radius)
    mask = np.zeros(field.image.shape, dtype=bool)
    mask[:, :512] = True  # half the frame is bad
    measured = measure_psf(field.image, mask=mask)
    _assert_recovered(measured, field.psf)




def test_the_callers_invalid_map_stands_for_mask_and_non_finite_pixels():
    """Given ``invalid`` (the preparation's map: masked or not finite), the measurement is the
    one ``mask`` and the frame's own NaNs give; a map without the NaNs lets them in."""
    profile, radius = CASES["moffat"]
    image = _field(profile, radius).image.astype(np.float32)
    image[700:760, 100:900] = np.nan
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, :300] = True
    expected = measure_psf(image, mask=mask)
    given = measure_psf(image, invalid=mask | ~np.isfinite(image))
    assert np.array_equal(given.psf, expected.psf) and given.stars_used == expected.stars_used
    assert not np.array_equal(measure_psf(image, invalid=mask).psf, expected.psf)
    both = measure_psf(image, mask=mask, invalid=~np.isfinite(image))  # the mask added
    assert np.array_equal(both.psf, expected.psf)
