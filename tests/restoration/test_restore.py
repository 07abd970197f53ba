"""The whole restoration (eq. 1-3) on synthetic star fields with a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter

from streamer.errors import (
    FrameDtypeError, FrameError, FrameShapeError, NoValidPixelError, ParameterError,
)
from streamer.imaging.psf import PSFSpec, gaussian_psf
from streamer.restoration.restorer import MAX_PLANS, Restorer, padded_psf
from streamer.settings import RestorationSettings
from streamer.imaging.synthetic import star_field
from tests.reference import measure_fwhm


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer(RestorationSettings(window=31, psf=PSFSpec(kind="gaussian", fwhm=3.0),
                                        iterations=30))


def test_background_equalisation_is_eq_1_and_2(restorer, gaussian_field):
    image = gaussian_field.image
    expected = image - median_filter(image, size=31, mode="reflect")
    expected -= expected.min()
    np.testing.assert_array_equal(restorer.background_equalised(image), expected)


def _isolated_bright_stars(field, count=8, half=6):
    order = np.argsort(field.fluxes)[::-1]
    chosen = []
    for i in order:
        r, c = field.rows[i], field.columns[i]
        if not (half < r < field.image.shape[0] - half - 1 and half < c < field.image.shape[1] - half - 1):
            continue
        distance = np.hypot(field.rows - r, field.columns - c)
        if np.sort(distance)[1] > 2 * half + 2:
            chosen.append((r, c))
        if len(chosen) == count:
            break
    assert len(chosen) >= 3, "the synthetic field should hold isolated bright stars"
    return chosen


def test_restoration_sharpens_stars_and_approaches_truth(restorer, gaussian_field):
    field = gaussian_field
    result = restorer.restore(field.image)
    restored = result.data
    stars = _isolated_bright_stars(field)
    before = np.median([measure_fwhm(field.image, r, c) for r, c in stars])
    after = np.median([measure_fwhm(restored, r, c) for r, c in stars])
    # Restored to a target of 0.55 of the PSF's width, at least 2 px (a 3-px PSF: 2 px), the
    # issue's bar is 20 % sharper; classic RL drives stars further (below 0.7).
    assert after < 0.8 * before, (before, after)

    # Distance to the truth (point sources), each frame with its background level removed,
    # both seen through the same small window so that flux placement is compared.
    def smoothed(image):
        from scipy.ndimage import uniform_filter
        return uniform_filter(image.astype(np.float64), 3)

    observed = field.image - field.background
    restored_sources = restored - np.median(restored)
    error_before = np.linalg.norm(smoothed(observed) - smoothed(field.truth))
    error_after = np.linalg.norm(smoothed(restored_sources) - smoothed(field.truth))
    assert error_after < 0.8 * error_before, (error_before, error_after)


def test_flux_conserved_through_the_pipeline(restorer, gaussian_field):
    equalised = restorer.background_equalised(gaussian_field.image)
    restored = restorer.restore(gaussian_field.image).data
    assert abs(restored.sum() / equalised.sum() - 1.0) < 0.01


def test_nan_pixels_excluded_not_spread(restorer, gaussian_field):
    image = gaussian_field.image.copy()
    image[100:104, 120:126] = np.nan
    mask = np.zeros(image.shape, dtype=bool)
    mask[10, 10] = True
    result = restorer.restore(image, mask=mask)
    assert result.masked_pixels == 25
    assert np.isnan(result.data[100:104, 120:126]).all() and np.isnan(result.data[10, 10])
    finite = np.isfinite(result.data)
    assert finite.sum() == image.size - 25
    clean = restorer.restore(gaussian_field.image).data
    far = np.ones(image.shape, dtype=bool)
    far[60:150, 80:170] = False  # away from the hole the result barely changes
    far[:40, :40] = False
    assert np.max(np.abs(result.data[far] - clean[far])) < 0.05 * clean.max()


def test_plans_are_reused_per_shape_and_bounded(restorer, gaussian_field):
    image = gaussian_field.image
    psf = padded_psf(restorer.fixed_psf)
    restorer.restore(image)
    plan = restorer.deconvolution(image.shape, psf)
    restorer.restore(image[:100, :120])
    restorer.restore(image)
    assert restorer.deconvolution(image.shape, psf) is plan
    for extra in range(MAX_PLANS + 3):  # a stream of odd shapes must not grow device memory
        restorer.restore(image[: 40 + extra, :50])
    assert restorer.plan_count <= 2 * MAX_PLANS


def test_integer_frames_are_accepted(restorer, gaussian_field):
    as_int = gaussian_field.image.astype(np.int32)
    result = restorer.restore(as_int)
    assert result.data.dtype == np.float32 and np.isfinite(result.data).all()


@pytest.mark.parametrize(
    "frame, error, message",
    [(np.zeros((0, 5), np.float32), FrameShapeError, "empty"),
     (np.zeros((3, 4, 5), np.float32), FrameShapeError, "2-D"),
     (np.full((8, 8), np.nan, np.float32), NoValidPixelError, "no valid pixel"),
     (np.array([["a"]]), FrameDtypeError, "real numbers")],
)
def test_bad_frames_raise_one_error_per_kind(restorer, frame, error, message):
    with pytest.raises(error, match=message) as raised:
        restorer.restore(frame)
    assert isinstance(raised.value, FrameError)  # every kind is a frame's fault


def test_bad_settings_are_refused():
    with pytest.raises(ParameterError):
        Restorer(RestorationSettings(window=4))


def test_star_field_truth_is_consistent():
    field = star_field((64, 64), gaussian_psf(2.0), stars=5, sky=0, gradient=0, seed=3)
    assert field.truth.sum() == pytest.approx(field.fluxes.sum())
    assert field.image.sum() == pytest.approx(field.fluxes.sum(), rel=0.05)
