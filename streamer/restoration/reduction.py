"""Thin wrapper of ``opencl/reduce.cl``: per-group partial sums or minima folded into one value
on the device."""

from __future__ import annotations

import numpy as np
import pyopencl as cl

from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary

GROUP = 256  # the work-group size of reduce.cl, passed to it as a define
REDUCE_PARTIALS = KernelDeclaration(
    "reduce", "reduce_partials", partials=BUFFER, count=np.int32, take_minimum=np.int32,
    out=BUFFER, out_index=np.int32)


def reduction_items(device: cl.Device, count: int) -> int:
    """Work items of a grid-stride reducing kernel over ``count`` elements: enough to fill
    the device (a GPU wants thousands per compute unit, a CPU a few dozen), never more than
    the elements."""
    per_unit = 1024 if device.type & cl.device_type.GPU else 64
    return int(max(1, min(count, device.max_compute_units * per_unit)))


class Reduction:
    """Folds a partials buffer into ``out[index]`` with one work group."""

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary) -> None:
        self.queue = queue
        self._kernel = library.kernel(REDUCE_PARTIALS, GROUP=GROUP)

    def sum(self, partials: cl.Buffer, count: int, out: cl.Buffer, index: int) -> None:
        """Enqueue ``out[index] = sum(partials[:count])``."""
        self._fold(partials, count, out, index, minimum=False)

    def minimum(self, partials: cl.Buffer, count: int, out: cl.Buffer, index: int) -> None:
        """Enqueue ``out[index] = min(partials[:count])``."""
        self._fold(partials, count, out, index, minimum=True)

    def _fold(self, partials: cl.Buffer, count: int, out: cl.Buffer, index: int,
              minimum: bool) -> None:
        self._kernel(self.queue, (GROUP,), (GROUP,), partials=partials, count=count,
                     take_minimum=int(minimum), out=out, out_index=index)
