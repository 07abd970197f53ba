"""The segmentation map kept as its objects' pixels answers as the map made whole does."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.segment_map import SegmentMap


def _map(rng: np.random.Generator) -> np.ndarray:
    whole = np.zeros((37, 53), np.int32)
    inside = rng.random(whole.shape) < 0.2
    whole[inside] = rng.integers(1, 40, int(inside.sum()))
    whole[0, 0] = 3          # the first pixel and the last are in objects:
    whole[-1, -1] = 7        # the search's ends
    return whole


def test_listed_pixels_read_as_the_whole_map() -> None:
    whole = _map(np.random.default_rng(2))
    positions = np.flatnonzero(whole)
    listed = SegmentMap(whole.shape, positions, whole.ravel()[positions])
    flat = np.arange(whole.size).reshape(whole.shape)
    assert np.array_equal(listed.at(flat), whole)
    rows, columns = np.mgrid[3:20, 10:31]
    assert np.array_equal(listed.at(rows * whole.shape[1] + columns), whole[3:20, 10:31])
    assert listed.at(flat).dtype == np.int32
    assert np.array_equal(listed.whole(), whole)
    # Made whole, it answers the same; listed, the same lists.
    assert np.array_equal(listed.at(flat), whole)
    assert np.array_equal(listed.positions, positions)


def test_a_frames_map_lists_its_pixels() -> None:
    whole = _map(np.random.default_rng(3))
    given = SegmentMap.from_map(whole)
    assert given.whole() is whole
    assert np.array_equal(given.positions, np.flatnonzero(whole))
    assert np.array_equal(given.labels, whole.ravel()[np.flatnonzero(whole)])
    assert np.array_equal(given.at(np.array([0, 1, whole.size - 1])),
                          whole.ravel()[[0, 1, whole.size - 1]])


def test_empty_and_mismatched_maps() -> None:
    empty = SegmentMap((4, 5), np.zeros(0, np.int64), np.zeros(0, np.int32))
    assert np.array_equal(empty.at(np.arange(20)), np.zeros(20))
    assert not empty.whole().any()
    with pytest.raises(ValueError, match="positions against"):
        SegmentMap((4, 5), np.arange(3), np.ones(2, np.int32))
