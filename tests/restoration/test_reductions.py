"""The reducing loops (opencl/common.cl's FOR_EACH_ELEMENT) give the same sums with either
layout — contiguous runs per work item (CPUs) and a grid stride (GPUs) — for any count,
including counts that leave work items without elements."""

from __future__ import annotations

import numpy as np
import pyopencl as cl
import pytest

from streamer.imaging.psf import gaussian_psf
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.richardson_lucy import RichardsonLucy


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (129, 257)])
def test_both_layouts_sum_every_valid_pixel_once(opencl, chunked, shape):
    library = KernelLibrary(opencl.context)
    library.chunked = chunked
    plan = RichardsonLucy(opencl.queue, library, shape, gaussian_psf(1.5, size=5), "dense")
    rng = np.random.default_rng(sum(shape))
    data = rng.integers(0, 1000, shape).astype(np.float32)   # integers: exact float sums
    weight = (rng.random(shape) > 0.2).astype(np.float32)
    weight.flat[0] = 1.0
    plan.set_weights(weight)
    plan.set_data(data)
    count, total = plan.count_valid()
    assert count == int(weight.sum())
    assert total == float(data[weight > 0].sum())


def test_the_layout_follows_the_device(opencl):
    gpu = bool(opencl.device.type & cl.device_type.GPU)
    assert KernelLibrary(opencl.context).chunked is not gpu

