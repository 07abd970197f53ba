"""Saturated and non-linear star cores refilled from their wings, the data-quality plane, and
restorations of saturated fields without donuts — on fields drawn with a known detector."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging import psf_stars
from streamer.imaging.data_quality import Quality, quality_counts, quality_plane
from streamer.imaging.preparation import FramePreparer
from streamer.imaging.psf import PSFSpec
from streamer.imaging.psf_measure import measure_psf
from streamer.imaging.saturated_stars import bleed_tails, refill_cores
from streamer.imaging.saturation import frame_saturation, saturation_mask
from streamer.operations.science.truth import Detector, Seeing, truth_field

SEEING = Seeing(2.4, 3.0, 0.05, 20.0)


@pytest.fixture(scope="module", params=["clipped", "plate"])
def saturated_field(request):
    detector = (Detector(saturation=20000.0) if request.param == "clipped" else
                Detector(gain=1.0, read_noise=20.0, saturation=13000.0, soft=True,
                         dtype="int16"))
    return truth_field((512, 512), SEEING, detector, stars=300, seed=3)


def _matched(field, fits):
    """(fitted flux / true flux, distance) for each fit, against the nearest true star."""
    out = []
    for fit in fits:
        distance = np.hypot(field.stars["x"] - fit.column, field.stars["y"] - fit.row)
        nearest = int(np.argmin(distance))
        out.append((fit.flux / field.stars["flux"][nearest], distance[nearest]))
    return np.array(out)


def test_cores_are_refilled_with_the_flux_their_wings_imply(saturated_field):
    field = saturated_field
    image = np.ascontiguousarray(field.image, dtype=np.float32)
    detection = psf_stars.detect(image, ~np.isfinite(image), 5.0)
    saturation = frame_saturation(field.image, None, detection)
    psf = measure_psf(field.image, saturation=saturation, detection=detection).psf
    saturated, nonlinear = saturation_mask(image, saturation)
    filled, replaced, fits = refill_cores(image, saturated | nonlinear, np.isfinite(image), psf,
                                          image - detection.subtracted)
    matched = _matched(field, fits)
    assert len(fits) >= 20 and np.median(matched[:, 1]) < 0.3  # centres to a few tenths
    assert np.median(matched[:, 0]) == pytest.approx(1.0, abs=0.04)
    assert replaced.any() and not (replaced & ~(saturated | nonlinear)).any()
    assert np.array_equal(filled[~replaced], image[~replaced])  # nothing else touched
    assert filled[replaced].max() > image.max()  # the cores rise above the ceiling again
    # Given the frame less its sky instead (the worker's way: no whole-frame subtractions),
    # the same cores are refilled with the same fits, to float32 rounding.
    again, replaced_again, fits_again = refill_cores(
        image, saturated | nonlinear, np.isfinite(image), psf, None,
        above=detection.subtracted)
    assert np.array_equal(replaced_again, replaced) and len(fits_again) == len(fits)
    assert np.allclose(again, filled, rtol=1e-5, atol=1e-3)
    assert np.allclose([f.flux for f in fits_again], [f.flux for f in fits], rtol=1e-4)
    # In place (a frame the caller owns): the same frame, refilled the same.
    own = image.copy()
    in_place, replaced_in_place, _ = refill_cores(
        own, saturated | nonlinear, np.isfinite(image), psf, None, above=detection.subtracted,
        in_place=True)
    assert in_place is own and np.array_equal(in_place, again)
    assert np.array_equal(replaced_in_place, replaced_again)


def test_a_region_without_wings_is_left_alone():
    image = np.full((40, 40), 100.0, np.float32)
    bad = np.zeros(image.shape, bool)
    bad[5:35, 5:35] = True  # far larger than the PSF's reach: no clean wing to fit
    psf = np.outer(*2 * [np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)])
    filled, replaced, fits = refill_cores(image, bad, np.ones(image.shape, bool), psf / psf.sum())
    assert fits == [] and not replaced.any() and np.array_equal(filled, image)


def test_the_preparer_refills_masks_and_flags(saturated_field):
    preparer = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0))
    prepared = preparer.prepare(saturated_field.image)
    counts = quality_counts(prepared.quality_flags)
    assert prepared.saturation.source == "data" and prepared.refilled
    assert counts["saturated"] > 0 and counts["filled"] > 0 and counts["edge"] > 0
    filled = (prepared.quality_flags & Quality.FILLED) > 0
    assert prepared.data is not None and np.all(np.isfinite(prepared.data[filled]))
    # A camera remembers its levels for a frame whose stars show none.
    quiet = truth_field((256, 256), SEEING, stars=30, snr=(3.0, 20.0), seed=9)
    assert preparer.prepare(quiet.image).saturation.source == "camera"


def test_a_16_bit_frame_prepares_as_its_float32_copy_does(saturated_field):
    # Read as it is (no float32 copy unless cores are refilled, then one made there) or, in
    # the other byte order, through the float32 copy: the same preparation, bit for bit.
    from streamer.imaging.validation import validated_frame

    frame = np.clip(saturated_field.image, 0, 65535).astype(np.uint16)
    assert validated_frame(frame, narrow=True)[0] is frame
    swapped = frame.astype(frame.dtype.newbyteorder())
    assert validated_frame(swapped, narrow=True)[0].dtype == np.float32
    prepared = [FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0)
                              ).prepare(given) for given in (frame, swapped)]
    first, second = prepared
    assert first.refilled and first.refilled == second.refilled
    assert np.array_equal(first.data, second.data) and first.data.dtype == np.float32
    assert np.array_equal(first.psf.psf, second.psf.psf)
    assert np.array_equal(first.quality_flags, second.quality_flags)
    assert first.noise == second.noise and first.saturation == second.saturation
    assert np.array_equal(frame, np.clip(saturated_field.image, 0, 65535).astype(np.uint16))


def test_one_pass_finds_the_linear_limits_pixels_for_the_psf_and_the_saturation(
        saturated_field, monkeypatch):
    seen = []
    real = psf_stars.detect
    monkeypatch.setattr(psf_stars, "detect",
                        lambda *args: seen.append(real(*args)) or seen[-1])
    prepared = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0)).prepare(
        saturated_field.image)
    (detection,) = seen
    limit = prepared.saturation.linear_limit
    assert limit is not None and list(detection._scans) == [limit]  # one level, one pass
    image, found = detection._scans[limit]
    assert np.array_equal(found, np.flatnonzero(np.asarray(image) >= limit)) and found.size
    assert detection.at_or_above(image, limit) is found
    other = np.asarray(image).copy()
    assert detection.at_or_above(other, limit) is not found  # another frame: looked at again


def test_masked_pixels_in_a_saturated_core_are_not_refilled(saturated_field):
    # A core partly under the caller's mask: its masked pixels are no data, neither refilled
    # nor flagged so, and stay out of the likelihood; its other pixels are refilled.
    preparer = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0))
    image = saturated_field.image
    first = preparer.prepare(image)
    filled = (first.quality_flags & Quality.FILLED) > 0
    row, column = np.argwhere(filled)[0]
    mask = np.zeros(image.shape, bool)
    mask[row - 1: row + 2, column - 1: column + 2] = True
    prepared = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0)).prepare(
        image, mask=mask)
    flags = prepared.quality_flags[mask]
    assert np.all(flags & Quality.MASKED) and not np.any(flags & Quality.FILLED)
    assert prepared.mask[mask].all()
    assert np.array_equal(prepared.data[mask], np.asarray(image, np.float32)[mask])
    assert (prepared.quality_flags & Quality.FILLED).any()


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_the_preparer_leaves_the_callers_frame_as_it_was(saturated_field, dtype):
    """A float32 frame is the caller's (the preparation reads it without a copy); a converted
    one is the preparation's own, refilled in place: either way the caller's frame keeps its
    saturated cores."""
    frame = saturated_field.image.astype(dtype)
    before = frame.copy()
    preparer = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0))
    prepared = preparer.prepare(frame)
    assert prepared.refilled and np.array_equal(frame, before)
    filled = (prepared.quality_flags & Quality.FILLED) > 0
    assert np.all(prepared.data[filled] != frame[filled])
    assert np.array_equal(prepared.data[~filled], frame[~filled].astype(np.float32))


def test_the_invalid_bit_marks_the_non_finite_pixels_masked_or_not(saturated_field):
    # A float frame holding NaN and inf: INVALID exactly there, whether the caller masks
    # other pixels (MASKED there, not INVALID) or not (the detection's excluded map reused).
    frame = saturated_field.image.astype(np.float32)
    frame[5, 7] = np.nan
    frame[100, 3:6] = np.inf
    nonfinite = ~np.isfinite(frame)
    mask = np.zeros(frame.shape, bool)
    mask[40:44, 60:70] = True
    preparer = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0))
    for given in (None, mask):
        plane = preparer.prepare(frame, mask=given).quality_flags
        assert np.array_equal((plane & Quality.INVALID) > 0, nonfinite)
        assert np.array_equal((plane & Quality.MASKED) > 0,
                              np.zeros_like(mask) if given is None else mask & ~nonfinite)


def test_the_quality_plane_sets_one_bit_per_reason():
    shape = (6, 6)
    invalid = np.zeros(shape, bool)
    invalid[0, 0] = True
    saturated = np.zeros(shape, bool)
    saturated[3, 3] = True
    plane = quality_plane(shape, invalid=invalid, saturated=saturated, filled=saturated, edge=1)
    assert plane[0, 0] == Quality.INVALID | Quality.EDGE
    assert plane[3, 3] == Quality.SATURATED | Quality.FILLED
    assert plane[2, 2] == 0 and quality_counts(plane)["edge"] == 20


def test_saturated_stars_restore_as_stars_not_donuts(saturated_field):
    """Each isolated saturated star's restored profile peaks at its centre (a donut's core is
    fainter than the ring around it)."""
    from streamer.restoration.restorer import Restorer
    from streamer.settings import RestorationSettings

    field = saturated_field
    restored = Restorer(RestorationSettings()).restore(field.image).data
    stars = field.stars
    checked = 0
    for star in stars[stars["saturated"]]:
        others = np.hypot(stars["x"] - star["x"], stars["y"] - star["y"])
        row, column = int(round(star["y"])), int(round(star["x"]))
        if np.sort(others)[1] < 8 or not (12 < row < 500 and 12 < column < 500):
            continue  # a neighbour or the edge would make the ring brighter
        box = restored[row - 4: row + 5, column - 4: column + 5]
        ys, xs = np.mgrid[-4:5, -4:5]
        ring = box[(np.hypot(ys, xs) >= 2) & (np.hypot(ys, xs) < 4)]
        assert np.isfinite(box).all() and box[3:6, 3:6].max() > ring.max(), (row, column)
        checked += 1
    assert checked >= 10


def test_the_quality_plane_takes_positions_as_masks():
    rng = np.random.default_rng(5)
    shape = (40, 30)
    masks = {name: rng.random(shape) < 0.05 for name in ("invalid", "masked", "saturated",
                                                          "nonlinear", "filled")}
    dense = quality_plane(shape, edge=2, **masks)
    listed = quality_plane(shape, edge=2, **{name: np.flatnonzero(mask)
                                             for name, mask in masks.items()})
    assert np.array_equal(listed, dense) and dense.any()
    with pytest.raises(TypeError, match="boolean mask"):
        quality_plane(shape, saturated=masks["saturated"].astype(np.uint8))


def test_a_bleed_is_left_to_the_mask_not_replaced_by_sky():
    """One PSF cannot explain a saturated star's bleed: a fit to its wings would set most of
    the bleed's pixels to the sky (their true values are at least what was recorded), so the
    region stays out of the likelihood instead."""
    from tests.imaging.test_saturation import _bleeding_frame

    image, clipped, _ = _bleeding_frame()
    preparer = FramePreparer(PSFSpec(kind="auto"), PSFSpec(kind="gaussian", fwhm=3.0))
    prepared = preparer.prepare(image)
    assert prepared.mask is not None and prepared.mask[clipped].mean() > 0.95
    flags = prepared.quality_flags[clipped]
    assert np.all(flags & Quality.SATURATED) and not np.any(flags & Quality.FILLED)
    # The tail below the ceiling goes with it: no PSF shaped that charge either.
    tail = prepared.mask[243:270, 250]
    assert tail.all() and np.all(prepared.quality_flags[243:270, 250] & Quality.MASKED)
    assert not prepared.mask[285:, 250].any()
    # The preparation's pixel lists make what the frame-sized masks make.
    saturated, nonlinear = saturation_mask(image, prepared.saturation)
    unfitted = (saturated | nonlinear) & ~((prepared.quality_flags & Quality.FILLED) > 0)
    above = psf_stars.detect(image, ~np.isfinite(image), 5.0).subtracted  # prepare's own
    tails = bleed_tails(unfitted, above, prepared.noise.sigma)
    assert tails.sum() > 20 and np.array_equal(prepared.mask, unfitted | tails)
    assert np.array_equal(prepared.quality_flags, quality_plane(
        image.shape, masked=tails, saturated=saturated, nonlinear=nonlinear,
        filled=(prepared.quality_flags & Quality.FILLED) > 0,
        edge=max(prepared.psf.psf.shape) // 2))
