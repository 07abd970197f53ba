"""Loads the OpenCL programs in ``opencl/`` and builds each once per context and defines.

Every wrapper goes through :class:`KernelLibrary`, so compile-time sizes are passed as ``-D``
defines (one source file per kernel family, no copies that differ in a constant) and a program
is never built twice for the same context.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path

import pyopencl as cl

from streamer.errors import KernelBuildError

log = logging.getLogger(__name__)


def read_kernel_source(family: str) -> str:
    """The text of ``opencl/<family>.cl``: from a source checkout, else from the copy
    installed as package data."""
    checkout = Path(__file__).resolve().parents[2] / "opencl" / f"{family}.cl"
    if checkout.is_file():
        return checkout.read_text()
    return resources.files("streamer.opencl").joinpath(f"{family}.cl").read_text()


class KernelLibrary:
    """Builds and caches the programs of one OpenCL context."""

    def __init__(self, context: cl.Context) -> None:
        self.context = context
        self._programs: dict[tuple[str, tuple[tuple[str, str], ...]], cl.Program] = {}
        self.build_seconds: float = 0.0
        # Reducing loops take contiguous runs per work item on CPUs, a grid stride on GPUs
        # (opencl/common.cl).
        self.chunked = not any(device.type & cl.device_type.GPU for device in context.devices)

    def program(self, family: str, **defines: int | float | str) -> cl.Program:
        """The built program ``opencl/<family>.cl`` with ``-D NAME=value`` for each define."""
        key = (family, tuple(sorted((name, str(value)) for name, value in defines.items())))
        program = self._programs.get(key)
        if program is not None:
            return program
        source = read_kernel_source("common") + "\n" + read_kernel_source(family)
        options = [f"-D{name}={value}" for name, value in key[1]]
        options.append(f"-DCHUNKED={int(self.chunked)}")
        options.append("-cl-mad-enable")
        started = time.perf_counter()
        try:
            program = cl.Program(self.context, source).build(options=options)
        except cl.RuntimeError as error:
            raise KernelBuildError(
                f"OpenCL program {family}.cl failed to build with {options}: {error}"
            ) from error
        elapsed = time.perf_counter() - started
        self.build_seconds += elapsed
        log.debug("built %s.cl %s in %.3f s", family, options, elapsed)
        self._programs[key] = program
        return program
