"""The pixels at or above a level (streamer.imaging.validation.at_or_above): an integer frame
compared in its own type against the level's ceiling finds exactly the pixels that the
comparison in float32 (the level as the frame's float32 copy would read it) finds."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.validation import at_or_above


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.int8])
def test_integer_frames_compare_as_their_float32_copies(dtype):
    rng = np.random.default_rng(np.dtype(dtype).itemsize)
    bounds = np.iinfo(dtype)
    frame = rng.integers(bounds.min, bounds.max, (64, 96), endpoint=True).astype(dtype)
    frame.flat[:4] = (bounds.min, bounds.max, 0, 1)
    levels = [bounds.min, bounds.max, bounds.max + 0.5, bounds.max + 1, bounds.min - 0.5,
              bounds.min - 1e9, 0, 0.5, -0.5, 1e9, np.inf, -np.inf, np.nan,
              float(bounds.max) / 3 + 0.25, float(bounds.max) * 0.8]
    if dtype == np.uint16:
        # 52000.001 is 52000 in float32: the copy counts the 52000s as at the level
        frame.flat[10:14] = 52000
        levels += [52000.001, 51999.999, 52000.0]
    copy = frame.astype(np.float32)
    for level in levels:
        with np.errstate(invalid="ignore"):
            expected = np.flatnonzero(copy >= np.float32(level))
        found = at_or_above(frame, level)
        assert np.array_equal(found, expected), level


def test_float_frames_and_wide_integers_compare_as_they_are():
    frame = np.array([[1.0, np.nan, 3.5], [np.inf, -np.inf, 2.0]], np.float32)
    assert at_or_above(frame, 2.0).tolist() == [2, 3, 5]
    wide = np.array([2**30, 2**30 + 1, 5], np.int32)
    assert at_or_above(wide, 2**30 + 0.5).tolist() == [1]  # in float32, both would be 2³⁰
