"""The objects of a thresholded S/N map from its pixels above the threshold
(streamer.imaging.pixel_objects) against sep's whole-map extraction (cleaning off, as ours) and
SciPy: the same objects and fields, the parents as sep lists them undeblended, the components
scipy's 8-connected labelling finds, and the local maxima of a 3×3 maximum filter."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from scipy.ndimage import gaussian_filter, label, maximum_filter

from streamer.imaging.pixel_objects import (DEBLEND_CONTRAST, DEBLEND_THRESHOLDS, MINAREA,
                                          SEP_OBJ_MERGED, MapPixels, _components,
                                          _local_maxima, objects)
from streamer.sources.objects import unfragmented

FIELDS = ("x", "y", "x2", "y2", "xy", "a", "b", "theta", "peak", "flux", "npix", "xmin",
          "xmax", "ymin", "ymax", "xpeak", "ypeak", "flag")


def _trails_and_pairs(seed: int, size: int = 700) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (size, size))
    rows, columns = rng.integers(0, size, (2, 1500))
    image[rows, columns] += rng.exponential(40.0, rows.size)
    for _ in range(15):  # trails, which sep's deblending cuts into pieces
        row, column = rng.integers(40, size - 40, 2)
        angle = rng.uniform(0.0, np.pi)
        steps = np.linspace(0.0, 30.0, 200)
        image[(row + steps * np.sin(angle)).astype(int),
              (column + steps * np.cos(angle)).astype(int)] += 5.0
    image[:3, 100:140] += 30.0  # an object cut by the frame's edge
    image[300:303, -3:] += 30.0  # and one by its right edge
    return (6.0 * gaussian_filter(image, 1.5)).astype(np.float32)


def _sep(snr, mask, nthresh=DEBLEND_THRESHOLDS, contrast=DEBLEND_CONTRAST, **options):
    sep.set_extract_pixstack(1_000_000)
    return sep.extract(snr, 5.0, err=None, mask=mask, minarea=MINAREA, filter_kernel=None,
                       deblend_cont=contrast, deblend_nthresh=nthresh, clean=False,
                       **options)


def _masked(seed: int) -> tuple[np.ndarray, np.ndarray]:
    snr = _trails_and_pairs(seed)
    mask = np.zeros(snr.shape, bool)
    mask[300:340, 200:260] = True
    return snr, mask


@pytest.mark.parametrize("seed", range(3))
def test_the_objects_are_seps(seed):
    snr, mask = _masked(seed)
    ours, _ = objects(MapPixels.of_map(snr, 5.0, mask))
    theirs = _sep(snr, mask)
    assert len(ours) == len(theirs) > 900
    ours, theirs = np.sort(ours, order=["y", "x"]), np.sort(theirs, order=["y", "x"])
    merged = (theirs["flag"] & SEP_OBJ_MERGED) != 0
    assert 20 < merged.sum() < len(theirs) / 2
    assert np.array_equal(ours["flag"] & SEP_OBJ_MERGED, theirs["flag"] & SEP_OBJ_MERGED)
    # Whole objects: every field. Deblended pieces: sep hands the pixels between them out at
    # random (and with them, which touch the frame's edge), so their position and peak only.
    for field in FIELDS:
        # sep's angle is single precision: round objects' (an ill-posed angle) differ by 1e-4
        np.testing.assert_allclose(ours[field][~merged], theirs[field][~merged], rtol=1e-5,
                                   atol=1e-3 if field == "theta" else 1e-6, err_msg=field)
    for field in ("x", "y", "peak", "xpeak", "ypeak"):
        np.testing.assert_allclose(ours[field][merged], theirs[field][merged], rtol=1e-6,
                                   atol=1e-6, err_msg=field)
    truncated = ours[(ours["flag"] & 2) != 0]
    assert {0, snr.shape[1] - 1} <= set(truncated["xmin"]) | set(truncated["xmax"])
    assert 0 in set(truncated["ymin"])


@pytest.mark.parametrize("seed", range(3))
def test_the_parents_are_seps_undeblended_objects(seed):
    snr, mask = _masked(seed)
    children, parents = objects(MapPixels.of_map(snr, 5.0, mask))
    whole, segments = _sep(snr, mask, contrast=1.0, segmentation_map=True)
    # sep's undeblended objects that hold two or more children's peaks: exactly the parents
    holders = np.bincount(segments[children["ypeak"], children["xpeak"]],
                          minlength=len(whole) + 1)[1:]
    expected = whole[holders >= 2]
    assert len(parents) == len(expected) >= 10
    assert any(parent["a"] > 2 * parent["b"] for parent in parents)  # trails among them
    parents, expected = np.sort(parents, order=["y", "x"]), np.sort(expected, order=["y", "x"])
    for field in FIELDS[:-1]:
        np.testing.assert_allclose(parents[field], expected[field], rtol=1e-5,
                                   atol=1e-3 if field == "theta" else 1e-6, err_msg=field)


@pytest.mark.parametrize("seed", range(6))
def test_components_and_maxima_are_scipys(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(5, 90, 2)
    snr = rng.normal(0, 3, (height, width)).astype(np.float32)
    if seed % 2:
        snr = np.round(snr)  # plateaus: ties between neighbours
    above = snr > 1.0
    index = np.flatnonzero(above)
    rows, columns = np.divmod(index, width)
    owner, count = _components(rows, columns, width)
    labels, expected = label(above, structure=np.ones((3, 3), bool))
    assert count == expected
    # The same partition, numbered by first pixel as scipy numbers it.
    assert np.array_equal(owner + 1, labels[rows, columns])
    maxima = _local_maxima(index, snr.ravel()[index].astype(np.float64), rows, columns, width)
    masked = np.where(above, snr, -np.inf)
    reference = (masked == maximum_filter(masked, 3, mode="constant", cval=-np.inf))[above]
    assert np.array_equal(maxima, reference)


def test_no_pixels_no_objects_and_a_single_peak_is_not_deblended():
    empty = MapPixels.of_map(np.zeros((40, 50), np.float32), 5.0, None)
    children, parents = objects(empty)
    assert len(children) == len(parents) == 0 and children.dtype == _sep(
        np.zeros((8, 8), np.float32), None).dtype
    snr = np.zeros((64, 64), np.float32)
    snr[30:34, 30:34] = 10.0
    snr[31, 31] = 12.0
    children, parents = objects(MapPixels.of_map(snr, 5.0, None))
    assert len(children) == 1 and len(parents) == 0 and children["npix"][0] == 16
    assert (children["xpeak"][0], children["ypeak"][0]) == (31, 31)


def test_known_pixels_read_as_the_whole_map():
    snr = _trails_and_pairs(4, size=200)
    near = np.flatnonzero(snr.ravel() > 3.0)
    known = MapPixels.of_known(snr.shape, 5.0, near, snr.ravel()[near])
    whole = MapPixels.of_map(snr, 5.0, None)
    assert np.array_equal(known.index, whole.index)
    assert np.array_equal(known.values, whole.values)
    rows, columns = np.divmod(np.arange(snr.size), snr.shape[1])
    read = known.at(rows, columns)
    listed = snr.ravel() > 3.0
    assert np.array_equal(read[listed], snr.ravel()[listed])
    assert np.all(read[~listed] == -np.inf)  # below every listed pixel: a dip
    for pixels in (known, whole):
        children, parents = objects(pixels)
        assert len(unfragmented(pixels, children, parents)) > 0
    ours = [np.sort(objects(pixels)[0], order=["y", "x"]) for pixels in (known, whole)]
    assert np.array_equal(ours[0]["x"], ours[1]["x"])
