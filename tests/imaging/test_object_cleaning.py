"""sep's cleaning (streamer.imaging.object_cleaning) against sep itself: the objects sep keeps
with its cleaning on, from the list it finds with it off, on astropy's real frames and a
synthetic crowded field; and its ``mthresh`` heap, vectorised, against the same heap run
pixel by pixel as sep's C code runs it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from streamer.imaging import default_filter, filtered_objects, object_cleaning, psf_stars, sep_calls
from streamer.imaging.fits_io import read_image
from streamer.imaging.psf import moffat_psf
from streamer.imaging.synthetic import star_field
from streamer.imaging.validation import validated_frame
from tests.sources.test_real_frames import FRAMES

MINAREA = 5


@pytest.mark.parametrize("minarea", [1, 2, 3, 4, 5, 7])
def test_the_heap_root_is_seps_pixel_by_pixel(minarea):
    """Objects of every size around ``minarea`` (fewer, exactly, one more, many), their pixels
    interleaved in the scan as objects' pixels are: the vectorised heap equals the pixel-by-
    pixel one (which keeps sep's quirks: the pixel after the first ``minarea`` dropped, one
    level of sifting)."""
    rng = np.random.default_rng(minarea)
    sizes = np.concatenate([np.arange(1, minarea + 4), rng.integers(1, 40, 60)])
    labels = rng.permutation(np.repeat(np.arange(1, sizes.size + 1), sizes))
    smooth = rng.normal(10.0, 4.0, labels.size).astype(np.float32)
    smooth[rng.random(labels.size) < 0.2] = 9.0  # ties
    mthresh, _ = object_cleaning.object_levels(
        labels, smooth, smooth.astype(np.float64), sizes.size, 1.5, minarea)
    for number, size in enumerate(sizes):
        pixels = (smooth[labels == number + 1] - np.float32(1.5)).tolist()
        expected = object_cleaning.sep_heap_root(pixels, minarea) if size >= minarea else 0.0
        assert mthresh[number] == np.float32(expected), (number, size)
    # The heap is not the minarea-th largest value (which would fail this for most objects).
    top = np.array([np.sort(smooth[labels == n + 1])[::-1][minarea - 1] - np.float32(1.5)
                    for n, size in enumerate(sizes) if size > minarea + 2])
    assert np.mean(top == mthresh[sizes > minarea + 2]) < 0.9


def _kept_by_sep(subtracted: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray, np.ndarray]:
    """sep's objects without cleaning and their segments, and which of them sep keeps with
    its cleaning on (the same objects, matched by centroid)."""
    options = dict(err=noise, minarea=MINAREA, deblend_cont=0.005, segmentation_map=True,
                   deblend_nthresh=psf_stars.DEBLEND_THRESHOLDS)
    cleaned, _ = sep_calls.extract(subtracted, 5.0, **options)
    found, segments = sep_calls.extract(subtracted, 5.0, clean=False, **options)
    distance, match = cKDTree(np.column_stack([found["x"], found["y"]])).query(
        np.column_stack([cleaned["x"], cleaned["y"]]))
    assert distance.max() < 1e-9  # cleaning drops objects, it moves none
    kept = np.zeros(len(found), bool)
    kept[match] = True
    return found, segments, kept, cleaned


def _survivors(subtracted: np.ndarray, found: np.ndarray, segments: np.ndarray) -> np.ndarray:
    index = np.flatnonzero(segments > 0)
    smooth = default_filter.filtered(subtracted).ravel()[index]
    return object_cleaning.survivors(found, segments.ravel()[index], smooth,
                                     subtracted.ravel()[index], float(found["thresh"][0]),
                                     MINAREA)


def _real(name: str) -> psf_stars.Detection:
    image = read_image(FRAMES[name])
    frame, valid = validated_frame(image.data)
    return psf_stars.detect(frame, ~valid, 5.0)


# sep's pixel order inside a deblended piece (its deblending's own) is not the frame's, so
# the heap of such a piece can differ: on M13 that swaps one pair of 281 objects.
@pytest.mark.parametrize("name, differ", [("DSS", 0), ("NGC1316", 0), ("M13", 2)])
def test_the_survivors_are_seps_on_real_frames(name, differ):
    detection = _real(name)
    found, segments, kept, _ = _kept_by_sep(detection.subtracted, detection.noise)
    assert (~kept).sum() >= 10  # sep's cleaning drops objects here: the test can fail
    alive = _survivors(detection.subtracted, found, segments)
    assert (alive != kept).sum() == differ


def test_the_survivors_are_seps_beside_bright_stars():
    """A crowded synthetic field of Moffat stars (β = 1.5: wide wings) up to 2·10⁶ counts,
    whose wings sep's cleaning explains faint neighbours by."""
    field = star_field((600, 560), moffat_psf(3.0, 1.5, size=61), stars=1500, seed=8,
                       flux_range=(100.0, 2e6))
    subtracted, background, _ = psf_stars._less_background(field.image.astype(np.float32),
                                                           None)
    found, segments, kept, _ = _kept_by_sep(subtracted, float(background.globalrms))
    assert (~kept).sum() >= 20
    alive = _survivors(subtracted, found, segments)
    assert np.array_equal(alive, kept)


@pytest.mark.parametrize("name", ["DSS", "NGC1316"])
def test_the_pixel_path_finds_seps_objects_on_real_frames(name):
    """The PSF detection's own path (filter, objects from the pixels above the threshold,
    deblending on windows, cleaning) against one sep call on the whole frame."""
    detection = _real(name)
    *_, cleaned = _kept_by_sep(detection.subtracted, detection.noise)
    assert len(detection.objects) == len(cleaned)
    # The segments' pixels as listed, the dropped objects' gone with them.
    assert np.array_equal(detection.in_segments(), np.flatnonzero(detection.segments > 0))
    assert detection.segments.max() == len(detection.objects)
    distance, _ = cKDTree(np.column_stack([detection.objects["x"], detection.objects["y"]])
                          ).query(np.column_stack([cleaned["x"], cleaned["y"]]))
    assert distance.max() < 1e-3


def _seps_loop(objects, mthresh, abcor_area, threshold, beta=1.0):
    """sep's ``clean()`` as written: every pair, in order, in double and float arithmetic."""
    count = len(objects)
    alive = np.ones(count, bool)
    f32 = np.float32

    def profile(e, dx, dy):  # sep's float fields, its float sums of float products
        a, b = float(f32(objects["a"][e])), float(f32(objects["b"][e]))
        area = np.pi * a * b
        abcor = float(min(f32(abcor_area[e] / (a * b)), f32(1.0)))
        amp = float(f32(objects["cflux"][e])) / (2 * area * abcor)
        alpha = ((amp / float(f32(threshold))) ** (1 / beta) - 1) * area / objects["npix"][e]
        quadratic = (f32(objects["cxx"][e]) * dx * dx + f32(objects["cyy"][e]) * dy * dy
                     + f32(objects["cxy"][e]) * dx * dy)
        val = 1 + alpha * float(quadratic)
        return val, f32(amp * val ** -beta if val < 1e10 else 0.0)

    for i in range(count):
        if not alive[i]:
            continue
        for j in range(i + 1, count):
            if not alive[j]:
                continue
            dx = f32(objects["x"][i] - objects["x"][j])
            dy = f32(objects["y"][i] - objects["y"][j])
            reach = f32(objects["a"][i]) + f32(objects["a"][j])
            if float(dx * dx + dy * dy) > float(reach * reach) * 10.0 * 10.0:
                continue
            if f32(objects["cflux"][j]) < f32(objects["cflux"][i]):
                val, level = profile(i, dx, dy)
                if val > 1.0 and level > mthresh[j]:
                    alive[j] = False
            else:
                val, level = profile(j, dx, dy)
                if val > 1.0 and level > mthresh[i]:
                    alive[i] = False
    return alive


@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, False), (3, False),
                                         (4, True), (5, True)])
def test_the_pairs_decide_as_seps_loop_over_every_pair(seed, ties):
    """Hand-made records, crowded so that eaten objects would have eaten others (sep skips
    an object eaten before its turn), a few with wide ellipses (searched apart from the
    rest), and with ``ties`` equal fluxes: the pair-filtered decision equals sep's loop over
    every pair."""
    rng = np.random.default_rng(seed)
    count = 400
    objects = np.zeros(count, filtered_objects.sep_dtype())
    objects["x"], objects["y"] = rng.uniform(0, 300, count), rng.uniform(0, 300, count)
    objects["a"] = np.where(rng.random(count) < 0.05, rng.uniform(5, 20, count),
                            rng.uniform(0.8, 2.5, count))
    objects["b"] = objects["a"] * rng.uniform(0.5, 1.0, count)
    theta = rng.uniform(0, np.pi, count)
    cos, sin = np.cos(theta), np.sin(theta)
    a2, b2 = objects["a"] ** 2, objects["b"] ** 2
    objects["cxx"] = cos ** 2 / a2 + sin ** 2 / b2
    objects["cyy"] = sin ** 2 / a2 + cos ** 2 / b2
    objects["cxy"] = 2 * cos * sin * (1 / a2 - 1 / b2)
    # ``ties``: a few flux levels, so that many pairs have equal fluxes (sep then tests the
    # later object eating the earlier).
    objects["cflux"] = (10 ** rng.integers(2, 5, count).astype(float) if ties
                        else 10 ** rng.uniform(1.5, 5, count))
    objects["npix"] = rng.integers(5, 400, count)
    mthresh = rng.uniform(0.1, 20, count).astype(np.float32)
    abcor_area = rng.uniform(0.2, 2.0, count)
    expected = _seps_loop(objects, mthresh, abcor_area, 5.0)
    assert 20 <= (~expected).sum() < count - 20
    ours = object_cleaning.survivors_of_levels(objects, mthresh, abcor_area, 5.0)
    assert np.array_equal(ours, expected)
