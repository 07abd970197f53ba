"""The per-frame device path: one upload in the frame's own type, one download, a handful of
scalar reads; excluded pixels handled on the device; stage times from profiling events."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter

from streamer.errors import FrameError
from streamer.imaging.psf import PSFSpec, gaussian_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer(RestorationSettings(window=15, psf=PSFSpec(kind="gaussian", fwhm=2.5),
                                        iterations=10, method="dense"))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return star_field((256, 300), gaussian_psf(2.5), stars=40, seed=8).image


@pytest.mark.parametrize("dtype, budget, noise_map", [
    (np.float32, 8.5, False), (np.uint16, 6.5, False),
    (np.float32, 12.5, True), (np.uint16, 10.5, True)])
def test_bytes_per_pixel_within_budget(restorer, frame, dtype, budget, noise_map):
    settings = restorer.settings
    restorer.settings = settings.model_copy(update={"noise_map": noise_map})
    try:
        result = restorer.restore(frame.astype(dtype))
    finally:
        restorer.settings = settings
    transfers = result.transfers
    frames_down = 2 if noise_map else 1  # the restored frame, and its noise map
    assert (result.error is not None) == noise_map
    assert transfers.uploaded == frame.size * np.dtype(dtype).itemsize  # once, its own type
    assert transfers.downloaded - frames_down * frame.size * 4 < 4096  # once, plus scalars
    assert transfers.per_pixel(frame.size) <= budget
    assert transfers.copies - transfers.scalar_reads == 1 + frames_down
    assert set(result.device_seconds) == {"upload", "median", "richardson_lucy", "download"}
    assert all(seconds >= 0 for seconds in result.device_seconds.values())


def test_uint16_and_float32_frames_restore_alike(restorer, frame):
    as_int = np.clip(np.round(frame), 0, 65535)
    a = restorer.restore(as_int.astype(np.uint16)).data
    b = restorer.restore(as_int.astype(np.float32)).data
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * b.max())


def test_background_of_a_uint16_frame_is_exact(restorer, frame):
    image = np.clip(np.round(frame), 0, 65535).astype(np.uint16)
    expected = image.astype(np.float32) - median_filter(image, size=15, mode="reflect")
    expected -= expected.min()
    np.testing.assert_array_equal(restorer.background_equalised(image), expected)


def test_excluded_pixels_are_found_on_the_device(restorer, frame):
    image = frame.copy()
    image[10:14, 20:25] = np.nan
    image[50, 60] = np.inf
    mask = np.zeros(image.shape, dtype=bool)
    mask[100, 100:103] = True
    result = restorer.restore(image, mask=mask)
    assert result.masked_pixels == 20 + 1 + 3
    excluded = ~np.isfinite(image) | mask
    assert np.isnan(result.data[excluded]).all() and np.isfinite(result.data[~excluded]).all()
    assert result.transfers.uploaded == image.size * 4 + mask.size  # the mask: one byte a pixel


@pytest.mark.parametrize("restored_as", ["estimate", "residual"])
def test_the_restored_flux_is_summed_on_the_device(restorer, frame, restored_as):
    # The restored frame's sum over its finite pixels, folded on the device: the host's
    # float64 nansum of the downloaded frame, to float32 accumulation (excluded pixels left
    # out, NaN in the output).
    image = frame.copy()
    image[10:14, 20:25] = np.nan
    settings = restorer.settings
    restorer.settings = settings.model_copy(update={"restored_as": restored_as})
    try:
        result = restorer.restore(image)
    finally:
        restorer.settings = settings
    expected = float(np.nansum(result.data, dtype=np.float64))
    assert np.isnan(result.data).sum() == 20
    assert result.flux_out == pytest.approx(expected, rel=1e-5)


def test_the_device_sums_what_the_restored_buffer_holds(opencl):
    # Not the data's sum (an estimate's equals it by construction): values of our own in the
    # plan's restored buffer, summed over the valid pixels only.
    import pyopencl as cl

    from streamer.restoration.richardson_lucy import RichardsonLucy
    from streamer.restoration.richardson_lucy_kernels import STAT

    rng = np.random.default_rng(4)
    plan = RichardsonLucy(opencl.queue, opencl.library, (60, 70), gaussian_psf(1.5),
                          "dense")
    weight = (rng.random((60, 70)) > 0.1).astype(np.float32)
    plan.set_weights(weight)
    values = rng.normal(5.0, 3.0, (60, 70)).astype(np.float32)
    cl.enqueue_copy(opencl.queue, plan.restored, values, is_blocking=True)
    expected = float(values[weight > 0].astype(np.float64).sum())
    plan._start.output_sum(plan.restored)  # the piece a run ends with, on these values
    assert plan._read_statistics()[STAT["OUTPUT_SUM"]] == pytest.approx(expected, rel=1e-5)


def test_no_valid_pixel_is_a_frame_error(restorer):
    with pytest.raises(FrameError, match="no valid pixel"):
        restorer.restore(np.full((40, 40), np.nan, np.float32))


def test_other_types_are_uploaded_as_float32(restorer, frame):
    result = restorer.restore(frame.astype(np.float64))
    assert result.transfers.uploaded == frame.size * 4
