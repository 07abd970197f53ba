"""The saturation level and the linear limit, from configuration, header or the stars, on
fields drawn independently with a known detector (streamer.operations.science.truth)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from streamer.imaging import psf_stars
from streamer.imaging.moments import half_maximum_fwhm
from streamer.imaging.psf_measure import measure_psf
from streamer.imaging.saturation import (
    Saturation, frame_saturation, header_saturation, saturation_mask,
)
from streamer.operations.science.truth import Detector, Seeing, truth_field

SEEING = Seeing(2.4, 3.0, 0.05, 20.0)


def _detect(image):
    data = np.ascontiguousarray(image, dtype=np.float32)
    return psf_stars.detect(data, ~np.isfinite(data), 5.0)


@pytest.fixture(scope="module")
def plate():
    """An int16 plate: linear to 60 % of a 13,000 ADU ceiling, then rolling off; a third of
    the stars in the non-linear range or at the ceiling."""
    detector = Detector(gain=1.0, read_noise=20.0, saturation=13000.0, soft=True, dtype="int16")
    return truth_field((512, 512), SEEING, detector, stars=300, seed=3)


@pytest.fixture(scope="module")
def clipped():
    return truth_field((512, 512), SEEING, Detector(saturation=20000.0), stars=300, seed=4)


def test_a_clipped_converter_is_found_from_the_stars(clipped):
    found = frame_saturation(clipped.image, None, _detect(clipped.image))
    assert found.source == "data" and found.level == pytest.approx(20000.0, rel=0.01)
    assert found.linear_limit <= found.level


def test_a_plate_ceiling_is_found_far_below_the_int16_maximum(plate):
    assert plate.stars["saturated"].mean() > 0.2
    found = frame_saturation(plate.image, None, _detect(plate.image))
    assert found.level == pytest.approx(13000.0, rel=0.02)
    assert found.psf_limit < 13000.0


def test_the_psf_comes_from_linear_stars_on_a_plate(plate):
    measured = measure_psf(plate.image)
    assert measured.fwhm == pytest.approx(half_maximum_fwhm(plate.psf), rel=0.05)


def test_an_unsaturated_float_frame_has_no_levels():
    field = truth_field((384, 384), SEEING, stars=150, seed=5)
    found = frame_saturation(field.image, None, _detect(field.image))
    assert found.level is None and found.source == "none"


def test_header_configured_camera_and_dtype_levels(clipped):
    detection = _detect(clipped.image)
    header = fits.Header({"SATURATE": 30000.0, "MAXLIN": 25000.0})
    assert header_saturation(header) == Saturation(30000.0, 25000.0, "header")
    # The stars show a lower ceiling than the header states: the lower wins.
    both = frame_saturation(clipped.image, header, detection)
    assert both.level == pytest.approx(20000.0, rel=0.01) and "header" in both.source
    configured = frame_saturation(clipped.image, header, detection,
                                  Saturation(15000.0, None, "configured"))
    assert configured.level == 15000.0 and configured.source == "configured"
    quiet = truth_field((256, 256), SEEING, stars=40, snr=(3.0, 30.0), seed=6)
    remembered = frame_saturation(quiet.image, None, _detect(quiet.image),
                                  previous=Saturation(13000.0, 9000.0, "data"))
    assert (remembered.level, remembered.source) == (13000.0, "camera")
    # A frame whose sky sits above the remembered linear limit (another camera's file in the
    # same batch) is not masked whole by it.
    brighter = quiet.image + 9500.0
    other = frame_saturation(brighter, None, _detect(brighter),
                             previous=Saturation(13000.0, 9000.0, "data"))
    assert other.source != "camera" and other.level is None
    as_int = np.clip(quiet.image, 0, 65535).astype(np.uint16)
    assert frame_saturation(as_int, None, _detect(as_int)).level == 65535.0


def test_the_mask_grows_saturated_regions_and_marks_the_non_linear_ones():
    image = np.zeros((20, 20), np.float32)
    image[10, 10] = 100.0
    image[3, 3] = 60.0
    saturated, nonlinear = saturation_mask(image, Saturation(100.0, 50.0, "configured"))
    assert saturated.sum() == 13 and saturated[10, 8] and not saturated[10, 7]  # grown by 2
    assert nonlinear.sum() == 5 and nonlinear[3, 3] and not (saturated & nonlinear).any()


def _bleeding_frame(seed: int = 6):
    """A float frame, flat-fielded after the converter clipped (the plateau varies by 2 %
    pixel to pixel), with one saturated star whose charge ran 150 rows down its column —
    as the CFHT A370 frame of the real-frame checks shows."""
    field = truth_field((384, 384), SEEING, stars=150, seed=seed)
    image = np.array(field.image, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sky = float(np.median(image))
    ys, xs = np.mgrid[:384, :384]
    star = 3e5 * np.exp(-0.5 * ((ys - 100) ** 2 + (xs - 250) ** 2) / 1.6 ** 2)
    image += star
    image[90:240, 249:252] += 3e4  # the bleed, three columns wide
    image[240:270, 250] += 3000.0  # its tail: spilled charge below the ceiling
    ceiling = 13000.0
    clipped = image >= ceiling  # the field's brightest stars too: they are refilled
    image[clipped] = ceiling * rng.normal(1.0, 0.02, clipped.sum())  # after the flat field
    bleed = np.zeros(image.shape, bool)
    bleed[80:250, 246:255] = clipped[80:250, 246:255]
    return image, bleed, sky


def test_a_bleed_on_a_flat_fielded_frame_sets_the_level():
    image, clipped, _ = _bleeding_frame()
    found = frame_saturation(image, None, _detect(image))
    assert found.source == "data"
    # Below nearly all the plateau (its 5th percentile), far above every unsaturated star.
    assert np.mean(image[clipped] >= found.level) > 0.9
    assert found.level > 0.9 * 13000.0
    saturated, _ = saturation_mask(image, found)
    assert saturated[clipped].all()


def test_a_round_smooth_peak_is_not_a_bleed():
    """A galaxy's broad core near the frame's top is flat within 10 % over many pixels, but
    as wide as it is long: no level."""
    field = truth_field((384, 384), SEEING, stars=150, seed=7)
    ys, xs = np.mgrid[:384, :384]
    image = field.image + 2e4 * np.exp(-0.5 * ((ys - 200) ** 2 + (xs - 180) ** 2) / 12.0 ** 2)
    found = frame_saturation(image, None, _detect(image))
    assert found.level is None


@pytest.mark.parametrize("count", [0, 1, 4, 9, 10, 57])
def test_the_running_median_is_each_cut_windows_median(count: int) -> None:
    from streamer.imaging.saturation import running_median

    values = np.random.default_rng(count).normal(size=count)
    expected = [np.median(values[max(0, i - 4): i + 5]) for i in range(count)]
    assert np.array_equal(running_median(values, 4), np.asarray(expected, dtype=float))


@pytest.mark.parametrize("levels", [(100.0, 80.0), (100.0, None), (None, 80.0), (None, None)])
def test_the_masks_are_scipys_dilations_of_the_levels(levels):
    """One pass at the lower level, sorted out after: SciPy's dilations of ``≥ S`` (twice)
    and ``≥ L`` (once, less the saturated), NaN pixels in neither."""
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(3)
    image = rng.uniform(0.0, 104.0, (60, 70)).astype(np.float32)
    image[rng.random(image.shape) < 0.9] = 10.0  # a few hundred hot pixels, not a solid mask
    image[5, :] = np.nan
    level, linear = levels
    image[20, 30], image[40, 10] = 100.0, 80.0  # exactly at the levels: "at or above"
    saturated, nonlinear = saturation_mask(image, Saturation(level, linear, "configured"))
    with np.errstate(invalid="ignore"):
        expected_saturated = (binary_dilation(image >= level, iterations=2)
                              if level is not None else np.zeros(image.shape, bool))
        expected_nonlinear = (binary_dilation(image >= linear) & ~expected_saturated
                              if linear is not None else np.zeros(image.shape, bool))
    assert np.array_equal(saturated, expected_saturated)
    assert np.array_equal(nonlinear, expected_nonlinear)
    assert level is None or saturated.sum() > 50


def test_a_16_bit_frame_meets_its_levels_as_its_float32_copy_does():
    # A level float32 cannot hold (52000.001 is 52000 in float32): the float32 frame meets
    # it in float32, and the 16-bit frame read in its place must too.
    from streamer.imaging.saturation import saturation_pixels

    frame = np.full((40, 40), 1000, np.uint16)
    frame[20, 20] = 52000
    frame[5, 30] = 60000
    for levels in (Saturation(60000.0, 52000.001, "configured"),
                   Saturation(60000.0005, 51999.9999, "configured")):
        narrow = saturation_pixels(frame, levels)
        copied = saturation_pixels(frame.astype(np.float32), levels)
        assert all(np.array_equal(a, b) for a, b in zip(narrow, copied))
        assert narrow[0].size and narrow[1].size
