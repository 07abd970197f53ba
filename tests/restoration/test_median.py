"""The median kernel equals scipy.ndimage.median_filter(mode="reflect") element for element."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter

from streamer.errors import ParameterError
from streamer.restoration.median import (MedianFilter, default_method, from_keys, tile_shape,
                                         to_keys)


@pytest.fixture(params=["histogram", "tiled"])
def method(request) -> str:
    """Both median algorithms: the CPU's default and the GPU's (exact on any device)."""
    return request.param


def _check(opencl, image: np.ndarray, window: int, **plan_options) -> None:
    plan = MedianFilter(opencl.queue, opencl.library, image.shape, window, image.dtype,
                        **plan_options)
    got = plan(image)
    expected = median_filter(image, size=window, mode="reflect")
    assert got.dtype == expected.dtype
    mismatches = np.count_nonzero(got != expected)
    assert mismatches == 0, f"{mismatches} pixels differ from SciPy"


@pytest.mark.parametrize("window", [3, 5, 9, 15, 31, 63])
def test_float32_equals_scipy(opencl, method, window):
    rng = np.random.default_rng(window)
    image = (rng.normal(100, 10, (96, 131)) + np.linspace(0, 40, 131)).astype(np.float32)
    _check(opencl, image, window, method=method)


@pytest.mark.parametrize("window", [3, 7, 31, 65])
def test_uint16_equals_scipy(opencl, method, window):
    rng = np.random.default_rng(window)
    image = rng.integers(0, 65535, (80, 97), endpoint=True).astype(np.uint16)
    image[10:30, 10:40] = 65535  # a saturated block: many equal values in one bin
    _check(opencl, image, window, method=method)


def test_largest_window_255(opencl):
    rng = np.random.default_rng(255)
    image = rng.normal(0, 1, (40, 300)).astype(np.float32)
    _check(opencl, image, 255)


@pytest.mark.parametrize("shape", [(1, 1), (1, 57), (57, 1), (5, 9), (2, 2), (13, 300)])
def test_frames_smaller_than_the_window_and_any_aspect(opencl, method, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.normal(size=shape).astype(np.float32)
    _check(opencl, image, 15, method=method)


def test_ties_negatives_and_signed_zero(opencl, method):
    rng = np.random.default_rng(3)
    image = rng.integers(-3, 4, (64, 64)).astype(np.float32)  # heavy ties, negatives
    image[0, :5] = -0.0
    _check(opencl, image, 7, method=method)


def test_constant_and_extreme_values(opencl, method):
    image = np.full((40, 50), 7.5, dtype=np.float32)
    image[5, 5] = np.finfo(np.float32).max
    image[6, 6] = -np.finfo(np.float32).max
    image[7, 7] = np.inf
    image[8, 8] = -np.inf
    _check(opencl, image, 5, method=method)


def _tile_fits(opencl, window: int) -> bool:
    """PoCL's CPU device holds any window's tile; a GPU's 48 KB of local memory holds windows
    up to about 101, and the filter refuses larger ones with a ParameterError
    (test_a_tile_too_large_for_local_memory_is_refused)."""
    return tile_shape(opencl.queue.device, window) is not None


def test_a_tile_too_large_for_local_memory_is_refused(opencl, monkeypatch):
    # As the H200's 48 KB refused windows 161 and 255 (2026-11-30): a clear error naming the
    # other method, not a failed launch.
    monkeypatch.setattr("streamer.restoration.median.tile_shape", lambda device, window: None)
    with pytest.raises(ParameterError, match="local memory; use method='histogram'"):
        MedianFilter(opencl.queue, opencl.library, (32, 40), 161, method="tiled")


def test_tiled_window_255_and_row_bands(opencl, monkeypatch):
    # The largest window's tile, and a frame cut into several launches of row bands.
    rng = np.random.default_rng(256)
    if _tile_fits(opencl, 255):
        _check(opencl, rng.normal(0, 1, (32, 40)).astype(np.float32), 255, method="tiled")
    monkeypatch.setattr("streamer.restoration.median.TILED_PIXELS_PER_LAUNCH", 16 * 70)
    image = rng.normal(size=(75, 70)).astype(np.float32)
    plan = MedianFilter(opencl.queue, opencl.library, image.shape, 9, method="tiled")
    assert plan.rows_per_launch == 16 and plan.tile == (16, 16)
    assert np.array_equal(plan(image), median_filter(image, size=9, mode="reflect"))


class _Device:
    """The device properties the method choice reads (a unit test of that choice alone)."""

    def __init__(self, gpu: bool, local_mem_size: int, max_work_group_size: int = 1024):
        import pyopencl as cl
        self.type = cl.device_type.GPU if gpu else cl.device_type.CPU
        self.local_mem_size = local_mem_size
        self.max_work_group_size = max_work_group_size


def test_the_method_follows_the_device():
    gpu = _Device(True, 48 * 1024)
    assert tile_shape(gpu, 31) == (16, 16)        # 46 x 46 keys: 8.5 KB
    assert tile_shape(gpu, 95) == (16, 16)        # 110 x 110 keys: 47 KB
    assert tile_shape(gpu, 101) == (8, 8)         # 116 x 108 would be 49 KB; 108 x 108: 46 KB
    assert tile_shape(gpu, 111) is None           # 118 x 118 keys: 56 KB
    assert tile_shape(_Device(True, 1 << 20, 128), 31) == (16, 8)
    assert default_method(gpu, 31) == "tiled"
    assert default_method(gpu, 111) == "histogram"
    assert default_method(_Device(False, 1 << 20), 31) == "histogram"


def test_a_window_past_four_frame_lengths_follows_the_reflect_rule(opencl, method):
    # SciPy 1.17 extends a line by at most about four lengths (a 20-row frame, radius 80:
    # 26 pixels differ from the rule); ours repeats the reflection without end, as
    # numpy.pad(mode="symmetric") does, so the reference here is that padding's exact median.
    from numpy.lib.stride_tricks import sliding_window_view
    rng = np.random.default_rng(161)
    image = rng.normal(0, 100, (20, 26)).astype(np.float32)
    padded = np.pad(image, 80, mode="symmetric")
    expected = np.median(sliding_window_view(padded, (161, 161)), axis=(-1, -2))
    if method == "tiled" and not _tile_fits(opencl, 161):
        pytest.skip("a 161x161 tile does not fit this device's local memory")
    got = MedianFilter(opencl.queue, opencl.library, image.shape, 161, method=method)(image)
    assert np.array_equal(got, expected.astype(np.float32))


def test_column_batches_and_strips_give_the_same_answer(opencl):
    # A tiny memory budget forces many column batches; strips split each column's rows.
    rng = np.random.default_rng(4)
    image = rng.normal(size=(150, 70)).astype(np.float32)
    _check(opencl, image, 11, memory_budget_bytes=1, strips=4)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("window", [5, 31])
def test_both_state_layouts_are_exact(opencl, interleaved, window):
    # The GPU layout (interleaved) and the CPU layout give the same, exact answer anywhere.
    rng = np.random.default_rng(window)
    image = rng.normal(300, 20, (70, 90)).astype(np.float32)
    _check(opencl, image, window, interleaved=interleaved, strips=3)


@pytest.mark.parametrize("input_dtype", [np.uint8, np.int16, np.int32, np.uint32])
def test_frames_are_filtered_from_their_own_type(opencl, method, input_dtype):
    rng = np.random.default_rng(9)
    image = rng.integers(0, 200, (40, 51)).astype(input_dtype)
    plan = MedianFilter(opencl.queue, opencl.library, image.shape, 7, np.float32,
                        input_dtype=input_dtype, method=method)
    got = plan(image)
    expected = median_filter(image.astype(np.float32), size=7, mode="reflect")
    assert np.array_equal(got, expected)


def test_nan_pixels_take_the_frames_median(opencl, method):
    image = np.full((20, 20), 5.0, dtype=np.float32)
    image[::3, ::2] = 9.0
    image[4:8, 4:8] = np.nan
    got = MedianFilter(opencl.queue, opencl.library, image.shape, 5, method=method)(image)
    filled = np.where(np.isnan(image), np.median(image[~np.isnan(image)]), image)
    assert np.array_equal(got, median_filter(filled, size=5, mode="reflect"))


def test_keys_round_trip_and_order():
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], dtype=np.float32)
    keys = to_keys(values)
    assert np.all(np.diff(keys.astype(np.int64)) > 0)
    assert np.array_equal(from_keys(keys, np.float32).view(np.uint32), values.view(np.uint32))


@pytest.mark.parametrize("window", [1, 2, 4, 257, 3.0, True])
def test_bad_windows_are_refused(opencl, window):
    with pytest.raises(ParameterError, match="window"):
        MedianFilter(opencl.queue, opencl.library, (10, 10), window, np.float32)


def test_unknown_method_is_refused(opencl):
    with pytest.raises(ParameterError, match="median method"):
        MedianFilter(opencl.queue, opencl.library, (10, 10), 3, method="sort")


def test_unsupported_dtype_is_refused(opencl):
    with pytest.raises(ParameterError, match="float32 and uint16"):
        MedianFilter(opencl.queue, opencl.library, (10, 10), 3, np.float64)


@pytest.mark.slow
def test_8192_square_frame(opencl):
    rng = np.random.default_rng(8192)
    image = rng.normal(1000, 30, (8192, 8192)).astype(np.float32)
    plan = MedianFilter(opencl.queue, opencl.library, image.shape, 31, np.float32)
    got = plan(image)
    # SciPy on the top band: its rows far from the band's cut are exact for the whole frame.
    band = median_filter(image[:120], size=31, mode="reflect")
    assert np.array_equal(got[:100], band[:100])
    band = median_filter(image[:, -120:], size=31, mode="reflect")
    assert np.array_equal(got[:, -100:], band[:, -100:])


def test_a_passed_deadline_stops_either_method(opencl, method):
    import time

    from streamer.errors import FrameDeadlineError

    image = np.random.default_rng(5).normal(size=(40, 50)).astype(np.float32)
    plan = MedianFilter(opencl.queue, opencl.library, image.shape, 7, method=method)
    plan.upload(image)
    with pytest.raises(FrameDeadlineError, match=r"median 7x7 of a 40x50 frame \(0 of"):
        plan.run(deadline=time.monotonic() - 1.0)
    plan.run(deadline=time.monotonic() + 600.0)  # in time: runs to the end
