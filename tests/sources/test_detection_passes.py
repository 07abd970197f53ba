"""The detection's whole-frame passes against SciPy references: the local peaks (3×3 maxima
above the threshold, read only where the map is above it) and the excluded pixels zeroed
without a copy when there are none (the map's objects: test_map_objects)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from streamer.sources.detection import finite_or_zero
from streamer.sources.peaks import local_peaks
from streamer.imaging.pixel_objects import MINAREA


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


def test_maps_are_sampled_at_the_filters_scale():
    from streamer.sources.detection import map_stride

    assert map_stride((4096, 4096), 64, 3.6) == 4   # a correlation length of ~5 px
    assert map_stride((4096, 4096), 64, 1.8) == 2   # undersampled: every second pixel
    assert map_stride((4096, 4096), 34, 3.6) == 2   # a mesh that 4 does not divide
    assert map_stride((512, 4096), 64, 3.6) == 1    # small frames: every pixel, as sep
