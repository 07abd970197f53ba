"""Whether a frame fits the device (and this host) before anything is allocated.

NumPy only: the device's memory sizes are read once (:class:`DeviceMemory`, from the device
session), so the worker's host stage can refuse an oversized frame before measuring its PSF,
without touching OpenCL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.errors import FrameTooLargeError

MAX_PSF_SIDE = 65  # the largest PSF a frame is planned for before its own is measured


@dataclass(frozen=True)
class DeviceMemory:
    """The memory sizes of an OpenCL device that bound a frame."""

    global_bytes: int
    max_allocation_bytes: int


def available_host_memory() -> int | None:
    """``MemAvailable`` of this Linux host in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def capacity_problem(memory: DeviceMemory, shape: tuple[int, ...], dtype: np.dtype, window: int,
                     psf_side: int = MAX_PSF_SIDE) -> str | None:
    """Why a frame of ``shape`` would not fit (device memory, one allocation, host memory),
    or None. Estimates from the buffers the plans allocate."""
    if len(shape) != 2:
        return None
    height, width = shape
    pixels = height * width
    radius = window // 2
    padded = (height + 2 * radius) * (width + 2 * radius)
    extended = (height + 4 * psf_side) * (width + 4 * psf_side)
    largest = max(padded * 4, extended * 4)
    # Extended-domain floats: the estimate, the correction, the ratio, the residual output's
    # sources and the acceleration's three; the frame's: data, weight, norm, model, restored,
    # scratch; + 2 gates.
    device_bytes = (pixels * (dtype.itemsize + 4 * 6 + 2) + padded * 6 + extended * 32
                    + min(memory.global_bytes // 4, 1 << 30))  # + the median's state
    if largest > memory.max_allocation_bytes:
        return (f"a {height}x{width} frame needs a {largest >> 20} MiB buffer, above the "
                f"device's largest allocation ({memory.max_allocation_bytes >> 20} MiB)")
    if device_bytes > 0.9 * memory.global_bytes:
        return (f"a {height}x{width} frame needs about {device_bytes >> 20} MiB of device "
                f"memory, above the {memory.global_bytes >> 20} MiB the device has")
    available = available_host_memory()
    host_bytes = pixels * (dtype.itemsize + 4 * 6) + extended * 12
    if available is not None and host_bytes > 0.8 * available:
        return (f"a {height}x{width} frame needs about {host_bytes >> 20} MiB of host memory, "
                f"above the {available >> 20} MiB available")
    return None


@dataclass(frozen=True)
class FrameCapacity:
    """The frames one device can restore with one median window."""

    memory: DeviceMemory
    window: int

    def check(self, shape: tuple[int, ...], dtype: np.dtype | type,
              psf_side: int = MAX_PSF_SIDE) -> None:
        """Raise FrameTooLargeError when a frame of ``shape`` would not fit the device's
        memory (or one of its allocations), or this host's."""
        problem = capacity_problem(self.memory, shape, np.dtype(dtype), self.window, psf_side)
        if problem:
            raise FrameTooLargeError(problem)
