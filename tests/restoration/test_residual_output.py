"""Richardson–Lucy's residual output, R = C + s − k ⊛ s with s = gate · (u − pedestal), against
a NumPy reference from the plan's own estimate (rl_gate_seed, rl_gate_grow, rl_sources,
rl_restored), by the copying and the in-place iterations; and what it promises: the data's own
noise away from sources, the flux of the data, sharper stars."""

from __future__ import annotations

import numpy as np
import pyopencl as cl
import pytest
from scipy.ndimage import maximum_filter, uniform_filter
from scipy.signal import fftconvolve

from streamer.imaging.noise import NoiseModel
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.restoration.rl_outputs import GATE_SIGMAS, kernel_reach
from streamer.operations.science.truth import Seeing, truth_field

SEEING = Seeing(3.0, 3.0, 0.05, 20.0)


@pytest.fixture(scope="module")
def field():
    return truth_field((96, 112), SEEING, stars=25, seed=21)


def _read(queue, buffer, shape, dtype):
    out = np.empty(shape, dtype=dtype)
    cl.enqueue_copy(queue, out, buffer)
    return out


@pytest.mark.parametrize("in_place", [False, True])
def test_the_residual_output_equals_its_reference(opencl, field, in_place):
    psf = SEEING.image(6)
    psf /= psf.sum()
    data = (field.image - field.image.min()).astype(np.float32)
    sky = float(np.median(data))
    noise = NoiseModel(sky, field.sigma(), 0.5)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "host_fft")
    if not in_place:
        plan._in_place = None
    restored, _ = plan(data, num_iter=5, noise=noise, damping=1.0, sky=sky, pedestal=1.0,
                       output="residual")
    height, width = data.shape
    ry, rx = plan.radius
    u = _read(opencl.queue, plan.estimate, plan.extended_shape, np.float32).astype(np.float64)
    kernel = plan.psf.astype(np.float64)
    model = fftconvolve(u, kernel, mode="valid")  # k ⊛ u on the frame
    pedestal = 1.0 * noise.sigma
    seeds = (uniform_filter(model, 3, mode="nearest") - pedestal) > GATE_SIGMAS * noise.sigma
    reach = kernel_reach(plan.psf)
    gate = maximum_filter(seeds, size=2 * reach + 1, mode="constant", cval=False)
    margin_gate = np.pad(gate, ((ry, ry), (rx, rx)), mode="edge")  # the margin's: its nearest
    sources = np.where(margin_gate, u - pedestal, 0.0)
    expected = data + sources[ry: ry + height, rx: rx + width] - fftconvolve(
        sources, kernel, mode="valid")
    # float32 convolutions on the device against float64 here.
    np.testing.assert_allclose(restored, expected, atol=1e-4 * float(data.max()), rtol=0)
    assert gate.any() and not gate.all()


def test_outside_the_gate_the_data_is_kept_and_the_flux_is_the_datas(opencl, field):
    psf = SEEING.image(6)
    psf /= psf.sum()
    data = (field.image - field.image.min()).astype(np.float32)
    sky = float(np.median(data))
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "dense")
    restored, _ = plan(data, num_iter=20, noise=NoiseModel(sky, field.sigma(), 0.5),
                       damping=1.0, sky=sky, pedestal=1.0, output="residual")
    # The sky far from stars is the data's (to the convolutions' float32 round-off).
    unchanged = np.abs(restored - data) <= 1e-5 * float(data.max())
    assert 0.3 < unchanged.mean() < 1.0
    # u − k ⊛ u sums to zero around each source: the frame's flux is the data's.
    assert restored.sum() == pytest.approx(data.sum(), rel=2e-3)
    brightest = np.unravel_index(np.argmax(field.expected - field.sky), data.shape)
    assert restored[brightest] > data[brightest]  # sharper: the peak rises


def test_plain_use_opens_the_gate_everywhere(opencl, field):
    psf = SEEING.image(6)
    psf /= psf.sum()
    data = (field.image - field.image.min() + 1.0).astype(np.float32)
    plan = RichardsonLucy(opencl.queue, opencl.library, data.shape, psf, "dense")
    restored, _ = plan(data, num_iter=3, output="residual")
    assert not (restored == data).all() and np.isfinite(restored).all()
