"""The detection's whole-frame passes against SciPy and sep references: the local peaks (3×3
maxima above the threshold, read only where the map is above it), the excluded pixels zeroed
without a copy when there are none, and the objects sep's deblending split as sep lists them
without deblending."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from scipy.ndimage import gaussian_filter, maximum_filter

from streamer.sources.detection import finite_or_zero
from streamer.sources.peaks import local_peaks
from streamer.sources.objects import DEBLEND_CONTRAST, MINAREA
from streamer.sources.objects import extract as _extract
from streamer.sources.objects import parents as _parents


def _reference_peaks(snr, threshold, mask):
    """The whole-frame definition: a 3×3 maximum filter (edges repeated), masked pixels
    -inf; the 3×3 light-weighted centroid of the pixels above the threshold."""
    values = np.where(mask, -np.inf, snr) if mask is not None else snr
    rows, columns = np.nonzero((values > threshold)
                               & (values == maximum_filter(values, 3, mode="nearest")))
    padded = np.pad(values, 1, constant_values=-np.inf)
    total, sum_y, sum_x, crowd = (np.zeros(rows.size) for _ in range(4))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            value = padded[rows + 1 + dy, columns + 1 + dx]
            weight = np.where(value > threshold, value, 0.0)
            crowd += value > threshold
            total += weight
            sum_y += dy * weight
            sum_x += dx * weight
    keep = crowd >= MINAREA
    return ((columns + sum_x / total)[keep], (rows + sum_y / total)[keep],
            values[rows, columns][keep].astype(float))


@pytest.mark.parametrize("seed", range(12))
def test_local_peaks_equal_the_maximum_filter_definition(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(3, 120, 2)
    snr = rng.normal(0, 3, (height, width)).astype(np.float32)
    if seed % 3 == 0:
        snr = np.round(snr)  # plateaus: ties between neighbours
    mask = rng.random((height, width)) < 0.08 if seed % 2 else None
    ours = local_peaks(snr, 2.0, mask)
    reference = _reference_peaks(snr, 2.0, mask)
    assert ours[0].size > 0 or seed % 3 == 0
    for got, expected in zip(ours, reference):
        assert np.array_equal(got, expected)


def test_a_peak_on_the_edge_and_one_beside_a_mask():
    snr = np.zeros((9, 9), np.float32)
    snr[0, 3:6] = [6, 9, 6]       # on the top edge: the repeated row does not hide it
    snr[1, 4] = 6
    snr[5:8, 5:8] = 6
    snr[6, 6] = 8
    mask = np.zeros(snr.shape, bool)
    mask[6, 7] = True             # a masked neighbour neither peaks nor hides the peak
    snr[6, 7] = 50
    x, y, height = local_peaks(snr, 5.0, mask)
    assert sorted(zip(y.round(3), x.round(3))) == sorted(
        zip(_reference_peaks(snr, 5.0, mask)[1].round(3),
            _reference_peaks(snr, 5.0, mask)[0].round(3)))
    assert set(height) == {9.0, 8.0}


def test_finite_or_zero_copies_only_what_it_must():
    clean = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert finite_or_zero(clean) is clean
    dirty = clean.copy()
    dirty[0, 1], dirty[2, 2], dirty[1, 0] = np.nan, np.inf, -np.inf
    out = finite_or_zero(dirty)
    assert out is not dirty and np.isnan(dirty[0, 1])  # the caller's frame is left as it was
    assert out[0, 1] == out[2, 2] == out[1, 0] == 0 and out.dtype == np.float32
    assert np.array_equal(out[np.isfinite(dirty)], dirty[np.isfinite(dirty)])


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
    return (6.0 * gaussian_filter(image, 1.5)).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_parents_are_seps_undeblended_objects(seed):
    snr = _trails_and_pairs(seed)
    mask = np.zeros(snr.shape, bool)
    mask[300:340, 200:260] = True
    children = _extract(snr, 5.0, mask)
    parents = _parents(snr, 5.0, mask, children)
    whole, segments = sep.extract(snr, 5.0, err=None, mask=mask, minarea=MINAREA,
                                  filter_kernel=None, deblend_cont=1.0, segmentation_map=True)
    # sep's undeblended objects that hold two or more children's peaks: exactly the parents
    holders = np.bincount(segments[children["ypeak"], children["xpeak"]],
                          minlength=len(whole) + 1)[1:]
    expected = whole[holders >= 2]
    assert DEBLEND_CONTRAST < 1.0 and len(parents) == len(expected) >= 10
    assert any(parent["a"] > 2 * parent["b"] for parent in parents)  # trails among them
    boxes = {tuple(int(v) for v in row[["xmin", "xmax", "ymin", "ymax"]]): row
             for row in expected}
    for parent in parents:
        reference = boxes[tuple(int(v) for v in parent[["xmin", "xmax", "ymin", "ymax"]])]
        for field in ("x", "y", "x2", "y2", "xy", "a", "b", "theta", "peak", "flux", "npix",
                      "xpeak", "ypeak"):
            assert parent[field] == pytest.approx(reference[field], rel=1e-4, abs=1e-4), field


def test_no_parents_without_two_children():
    snr = np.zeros((64, 64), np.float32)
    snr[30:34, 30:34] = 10.0
    children = _extract(snr, 5.0, None)
    assert len(children) == 1 and len(_parents(snr, 5.0, None, children)) == 0


def test_a_parent_reaching_past_its_childrens_boxes_is_whole():
    # Two peaks on one bar whose children's boxes leave its middle out, and a long thin tail
    # above the threshold that is in neither box but is the parent's: the labelling window
    # must grow along it.
    snr = np.zeros((120, 160), np.float32)
    snr[50:56, 40:46] = 20.0
    snr[50:56, 60:66] = 20.0
    snr[52:54, 46:60] = 8.0                      # the bridge between the two
    snr[53, 66:150] = 6.0                        # the tail
    snr[52, 52] = 7.0
    snr[53:55, 10:14] = 9.0                      # an unrelated object, not to be taken in
    children = np.zeros(2, dtype=_extract(snr, 5.0, None).dtype)
    for child, (x0, x1) in zip(children, [(40, 46), (60, 66)]):  # sep's boxes leave a gap
        child["xmin"], child["xmax"], child["ymin"], child["ymax"] = x0, x1 - 1, 50, 55
        child["xpeak"], child["ypeak"], child["flag"] = x0 + 2, 52, 1
    parents = _parents(snr, 5.0, None, children)
    assert len(parents) == 1
    parent = parents[0]
    assert (parent["xmin"], parent["xmax"], parent["ymin"], parent["ymax"]) == (40, 149, 50, 55)
    assert parent["npix"] == np.count_nonzero(snr[:, 30:] > 5.0)


def test_maps_are_sampled_at_the_filters_scale():
    from streamer.sources.detection import map_stride

    assert map_stride((4096, 4096), 64, 3.6) == 4   # a correlation length of ~5 px
    assert map_stride((4096, 4096), 64, 1.8) == 2   # undersampled: every second pixel
    assert map_stride((4096, 4096), 34, 3.6) == 2   # a mesh that 4 does not divide
    assert map_stride((512, 4096), 64, 3.6) == 1    # small frames: every pixel, as sep
