"""OpenCL fixtures of the restoration tests: one device, context, queue and kernel cache for
the session, and the GPU where there is one (`gpu` tests skip without it)."""

from __future__ import annotations

import pyopencl as cl
import pytest

from streamer.restoration.device import select_device
from streamer.restoration.kernels import KernelLibrary


class OpenCL:
    """The test session's device, context, queue and kernel cache."""

    def __init__(self) -> None:
        self.device = select_device()
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        self.library = KernelLibrary(self.context)


@pytest.fixture(scope="session")
def opencl() -> OpenCL:
    return OpenCL()


@pytest.fixture(scope="session")
def gpu_device() -> cl.Device:
    try:
        return select_device("gpu")
    except Exception:
        pytest.skip("no OpenCL GPU on this machine")
