"""The restored map's peak candidates and sky sample on the device
(streamer.restoration.restored_peaks, opencl/detection.cl) against the host's search of the
whole map (streamer.sources.peaks): the same local maxima above the floor, with the same 3×3
neighbourhoods, excluded pixels (NaN in the frame as uploaded) left out as the host's mask
leaves them; a buffer too small for them all grown and the search run again; the sample every
sky_step-th pixel."""

from __future__ import annotations

import numpy as np
import pyopencl as cl
import pytest
from scipy.ndimage import gaussian_filter

from streamer.restoration.background import key_dtype
from streamer.restoration.median import input_type
from streamer.restoration.restored_peaks import PeakFinder
from streamer.restoration.transfers import TransferMeter
from streamer.sources.peaks import local_maxima, local_peaks, neighbourhoods, sky_step


def _find(opencl, snr: np.ndarray, raw: np.ndarray, floor: float, finder=None):
    context, queue = opencl.context, opencl.queue
    flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
    snr_buffer = cl.Buffer(context, flags, hostbuf=np.ascontiguousarray(snr, np.float32))
    raw_buffer = cl.Buffer(context, flags, hostbuf=np.ascontiguousarray(raw))
    defines = {"INPUT_TYPE": input_type(raw.dtype),
               "KEY_IS_FLOAT": int(key_dtype(raw.dtype) == np.float32)}
    finder = finder or PeakFinder(queue, opencl.library)
    return finder.find(snr_buffer, raw_buffer, snr.shape, floor, defines,
                       TransferMeter(queue))


def _map(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Correlated over a few pixels, as a matched filter's map: peaks with flanks above 3.
    snr = (7.0 * gaussian_filter(rng.normal(0, 1, shape), 1.0)).astype(np.float32)
    if seed % 2 == 0:
        snr = np.round(snr)  # plateaus: ties between neighbours
    return snr


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_the_candidates_are_the_hosts_maxima_and_neighbourhoods(opencl, seed, dtype):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(side) for side in rng.integers(12, 150, 2))
    snr = _map(seed, shape)
    raw = rng.integers(0, 60000, shape).astype(dtype)
    if dtype == np.float32:
        raw[rng.random(shape) < 0.08] = np.nan
        raw[0, 0] = np.inf
    excluded = ~np.isfinite(raw.astype(np.float32))
    found = _find(opencl, snr, raw, 1.5)
    rows, columns = local_maxima(snr, 1.5, excluded if excluded.any() else None)
    assert rows.size > 10
    assert np.array_equal(found.rows, rows) and np.array_equal(found.columns, columns)
    assert np.array_equal(found.near, neighbourhoods(snr, rows, columns, excluded))
    # ... so the peaks above the threshold, on the map less a sky, are the host's.
    for sky in (0.0, 0.7, -0.4):
        ours = found.peaks(3.0, sky)
        expected = local_peaks(snr - sky, 3.0, excluded)
        assert ours[0].size > 0
        for got, reference in zip(ours, expected):
            assert np.array_equal(got, reference)


def test_a_full_buffer_is_grown_and_the_search_run_again(opencl):
    snr = _map(1, (120, 131))
    raw = np.zeros(snr.shape, np.float32)
    finder = PeakFinder(opencl.queue, opencl.library)
    finder._reserve(7)
    found = _find(opencl, snr, raw, 1.0, finder)
    rows, columns = local_maxima(snr, 1.0, None)
    assert rows.size > 7 and finder.capacity >= rows.size
    assert np.array_equal(found.rows, rows) and np.array_equal(found.columns, columns)
    again = _find(opencl, snr, raw, 1.0, finder)  # the grown buffers are kept
    assert np.array_equal(again.near, found.near)


def test_no_candidates_and_the_sky_sample(opencl):
    shape = (1100, 1030)  # large enough to be sampled every second pixel
    snr = _map(3, shape)
    found = _find(opencl, snr, np.zeros(shape, np.uint16), 1e6)
    assert found.rows.size == 0 and found.near.shape == (0, 9)
    assert sky_step(shape) == 2
    assert np.array_equal(found.sample, snr[::2, ::2])
    assert all(part.size == 0 for part in found.peaks(5.0, 0.0))
