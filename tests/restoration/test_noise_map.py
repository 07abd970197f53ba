"""The noise map (rl_noise_map, the ERR extension): the data's per-pixel sigma against its NumPy
reference, NaN where the input was excluded; and what it promises on a field drawn with a
truth table: the residual restoration's sky divided by it is unit normal."""

from __future__ import annotations

import numpy as np
import pyopencl as cl
import pytest

from streamer.imaging.noise import NoiseModel
from streamer.operations.science.measure import normalised_residuals, sky_pixels
from streamer.operations.science.truth import Seeing, truth_field
from streamer.restoration.restorer import Restorer
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.restoration.richardson_lucy_kernels import STAT
from streamer.settings import RestorationSettings

SEEING = Seeing(3.0, 3.0, 0.05, 20.0)


def test_the_noise_map_equals_its_reference(opencl):
    field = truth_field((80, 96), SEEING, stars=15, seed=5)
    data = (field.image - field.image.min()).astype(np.float32)
    weight = np.ones(data.shape, dtype=np.float32)
    weight[10:20, 30:50] = 0.0
    sky = float(np.median(data))
    noise = NoiseModel(sky, field.sigma(), 0.5)
    psf = SEEING.image(5)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf / psf.sum(), "dense")
    plan(data, num_iter=2, weight=weight, noise=noise, sky=sky)
    error = plan.download_noise_map()
    stats = np.empty(len(STAT), dtype=np.float32)
    cl.enqueue_copy(opencl.queue, stats, plan.statistics)
    signal = np.maximum(data - stats[STAT["SKY"]], np.float32(0))
    expected = np.sqrt(np.float32(noise.sigma**2) + signal * np.float32(noise.inverse_gain))
    expected[weight == 0] = np.nan
    np.testing.assert_allclose(error, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(error[10:20, 30:50]).all() and np.isfinite(error[weight > 0]).all()
    # Stars raise the sigma above the sky's: the map follows the signal.
    assert np.nanmax(error) > 1.5 * noise.sigma


def test_plain_use_has_no_noise_map(opencl):
    data = np.full((32, 32), 5.0, dtype=np.float32)
    psf = SEEING.image(3)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf / psf.sum(), "dense")
    plan(data, num_iter=1)
    assert plan.download_noise_map() is None


@pytest.fixture(scope="module")
def crowded():
    return truth_field((256, 256), Seeing(3.4, 3.0, 0.05, 20.0), stars=60, seed=17)


def test_the_residual_skys_normalised_residuals_are_unit_normal(crowded):
    restorer = Restorer(RestorationSettings())  # the default: residual, to a target
    restored = restorer.restore(crowded.image)
    assert restored.error is not None
    where = sky_pixels(crowded, clear_fwhm=4.0)
    assert where.sum() > 2000
    sky = float(np.median(restored.data[where]))
    robust, tail = normalised_residuals(restored.data, restored.error, sky, where)
    assert 0.85 <= robust <= 1.15 and tail <= 5.0, (robust, tail)


def test_the_estimates_sky_is_not_and_the_header_says_so(crowded):
    # The classic output's sky is RL's floor with speckles: narrower than the input's noise
    # (what the ERR extension's ERRFOR keyword warns of).
    restored = Restorer(RestorationSettings(target_fwhm=0.0, restored_as="estimate",
                                            accelerate=False)).restore(crowded.image)
    where = sky_pixels(crowded, clear_fwhm=4.0)
    sky = float(np.median(restored.data[where]))
    robust, _ = normalised_residuals(restored.data, restored.error, sky, where)
    assert robust < 0.85
