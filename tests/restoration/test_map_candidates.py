"""The frame's S/N map read by the device near and above the detection threshold
(streamer.restoration.map_candidates, opencl/detection.cl's map_candidates) against NumPy: the
pixels of the map less the frame's background through the filter above the floor, the
excluded ones left out, and its sample; and through the catalogue, the same pixels above the
threshold, values and detections as the whole map levelled on the host — or, where the map's
own background dips below the floor's reach, the host's map, said in the log."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyopencl as cl
import pytest

from streamer.imaging.mesh_background import MeshLevel, levelled
from streamer.imaging.psf import PSFSpec, gaussian_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.map_candidates import FLOOR_MARGIN, MapCandidateFinder
from streamer.restoration.restored_peaks import StridedSampler
from streamer.restoration.restorer import Restorer
from streamer.restoration.transfers import TransferMeter
from streamer.settings import RestorationSettings
from streamer.sources import detection
from streamer.imaging.pixel_objects import MapPixels


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_the_candidates_are_the_pixels_above_the_floor(opencl, dtype):
    shape = (70, 93)
    rng = np.random.default_rng(5)
    snr = rng.normal(1.0, 3.0, shape).astype(np.float32)
    raw = rng.integers(0, 1000, shape).astype(dtype)
    if dtype == np.float32:
        raw[10:13, 20:30] = np.nan
        raw[40, 50] = np.inf
    offset = MeshLevel((5.0 * rng.normal(0.0, 1.0, (5, 6))).astype(np.float32), shape, 16)
    context = opencl.queue.context
    buffers = [cl.Buffer(context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                         hostbuf=np.ascontiguousarray(array)) for array in (snr, raw)]
    defines = {"INPUT_TYPE": "ushort" if dtype == np.uint16 else "float",
               "KEY_IS_FLOAT": int(dtype == np.float32)}
    finder = MapCandidateFinder(opencl.queue, opencl.library,
                                StridedSampler(opencl.queue, opencl.library))
    finder._reserve(100)  # too few: the finder must grow and run again
    found = finder.find(*buffers, offset, 2.0, 2, defines, TransferMeter(opencl.queue))
    less = levelled(snr, offset)  # the host's arithmetic of the same spline
    excluded = ~np.isfinite(raw.astype(np.float32))
    expected = np.flatnonzero((less > 2.0) & ~excluded)
    # Float32 rounding of the spline's four terms may only move pixels at the floor itself.
    moved = np.setxor1d(found.index, expected)
    assert np.all(np.abs(less.ravel()[moved] - 2.0) < 1e-5)
    assert found.index.size > 1000 and moved.size <= 2 and finder.capacity >= found.index.size
    assert np.unique(found.index).size == found.index.size  # each once (the device's order)
    assert np.array_equal(found.values, snr.ravel()[found.index])
    assert not excluded.ravel()[found.index].any()
    assert np.array_equal(found.sample, snr[::2, ::2])
    assert found.floor == 2.0 and found.stride == 2 and found.offset is offset


@pytest.fixture(scope="module")
def restored(opencl):
    restorer = Restorer(RestorationSettings(window=15, psf=PSFSpec(kind="moffat", fwhm=3.0,
                                                                   beta=3.0), iterations=5),
                        str(opencl.device.name))
    restorer.detection_maps.download_data = True  # the map its candidates are compared with
    field = star_field((1024, 1024), gaussian_psf(3.2), stars=900, seed=11).image
    image = np.clip(np.round(field), 0, 65535).astype(np.float32)
    image[500:520, 300:340] = np.nan  # excluded: never a candidate
    return image, restorer.restore(image, snr_maps=True)


def test_the_catalogue_reads_the_frames_map_through_its_candidates(restored):
    image, result = restored
    maps, fwhm = result.snr_maps, result.psf.fwhm
    candidates = maps.data_candidates
    assert candidates is not None and maps.data is not None  # the map: for this comparison
    assert candidates.floor == pytest.approx(5.0 - FLOOR_MARGIN)
    mask = ~np.isfinite(image)
    read = detection.candidate_snr(candidates, fwhm, 5.0, mask)
    assert read is not None
    pixels, ratio = read
    whole, whole_ratio = detection.measured_snr(None, 0.0, None, fwhm, 5.0, mask, maps.data,
                                                candidates.offset)
    expected = MapPixels.of_map(whole, 5.0, mask)
    moved = np.setxor1d(pixels.index, expected.index)
    assert pixels.index.size > 10_000 and moved.size <= 3
    assert np.all(np.abs(whole.ravel()[moved] - 5.0) < 1e-4)
    common, ours, theirs = np.intersect1d(pixels.index, expected.index, return_indices=True)
    np.testing.assert_allclose(pixels.values[ours], expected.values[theirs], rtol=2e-6,
                               atol=2e-6)
    assert ratio.median() == pytest.approx(whole_ratio.median(), rel=1e-6)


def test_the_detections_are_the_whole_maps_and_a_deep_background_falls_back(restored,
                                                                            caplog):
    image, result = restored
    maps, noise = result.snr_maps, result.noise
    data = levelled(image, result.background)
    mask = ~np.isfinite(image)
    arguments = (data, noise.sigma, result.psf.psf, result.psf.fwhm)
    through_candidates = detection.detect(*arguments, mask=mask,
                                          data_candidates=maps.data_candidates)
    through_map = detection.detect(*arguments, mask=mask, data_snr=maps.data,
                                   data_offset=maps.data_candidates.offset)
    assert len(through_candidates) == len(through_map) > 500
    np.testing.assert_allclose(through_candidates.x, through_map.x, atol=1e-6)
    assert "made on the host" not in caplog.text
    # A floor too close to the threshold for the map's background: the host's own map.
    shallow = dataclasses.replace(maps.data_candidates, floor=5.0 - 0.05)
    assert detection.candidate_snr(shallow, result.psf.fwhm, 5.0, mask) is None
    fallen_back = detection.detect(*arguments, mask=mask, data_candidates=shallow)
    assert "made on the host" in caplog.text
    host = detection.detect(*arguments, mask=mask)
    assert len(fallen_back) == len(host) > 500
    np.testing.assert_allclose(fallen_back.x, host.x, atol=1e-9)
