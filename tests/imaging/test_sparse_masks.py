"""Sparse masks labelled and grown from their pixels alone against scipy.ndimage's label,
find_objects and binary_dilation: the same numbering, boxes and grown masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from streamer.imaging.sparse_masks import (
    as_mask, grown, grown_positions, grown_sparse, label_pixels, sparse_label,
)


@pytest.mark.parametrize("seed", range(6))
def test_the_labels_and_boxes_are_scipys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 90, 2)
    mask = ndimage.binary_dilation(rng.random((height, width)) < 0.02, iterations=1 + seed % 2)
    mask |= rng.random((height, width)) < 0.05
    if seed == 0:
        mask[:, -1] = True            # a column on the right edge: no wrap to the next row
        mask[-1, :] = True
    labels, count, boxes = sparse_label(mask)
    expected, expected_count = ndimage.label(mask)
    assert count == expected_count and (count > 3 or height * width < 40)
    assert np.array_equal(labels, expected)
    assert boxes == ndimage.find_objects(expected)


def test_an_empty_mask_has_no_labels() -> None:
    labels, count, boxes = sparse_label(np.zeros((7, 9), bool))
    assert count == 0 and boxes == [] and not labels.any() and labels.shape == (7, 9)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_grown_masks_are_scipys_dilation(steps: int) -> None:
    rng = np.random.default_rng(steps)
    for shape, density in (((64, 80), 0.002), ((31, 31), 0.05), ((5, 5), 0.3), ((1, 9), 0.2),
                           ((200, 150), 0.3)):  # the last too full for the sparse way
        mask = rng.random(shape) < density
        mask[0, -1] = mask[-1, 0] = True  # at corners: nothing wraps around
        expected = ndimage.binary_dilation(mask, iterations=steps)
        assert np.array_equal(grown(mask, steps), expected)
        assert np.array_equal(grown_sparse(mask, steps), expected)
        positions = grown_positions(shape, np.flatnonzero(mask), steps)
        assert np.array_equal(positions, np.flatnonzero(expected))
        assert np.array_equal(as_mask(shape, positions), expected)


def test_labels_from_listed_pixels_are_the_masks() -> None:
    rng = np.random.default_rng(4)
    mask = ndimage.binary_dilation(rng.random((70, 90)) < 0.01, iterations=2)
    labels, count, boxes = label_pixels(mask.shape, np.flatnonzero(mask))
    expected, expected_count = ndimage.label(mask)
    assert count == expected_count > 5 and np.array_equal(labels, expected)
    assert boxes == ndimage.find_objects(expected)
    assert grown_positions((4, 4), np.zeros(0, np.int64), 2).size == 0
