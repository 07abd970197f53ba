"""Kernel declarations (streamer/restoration/kernels.py): checked against the .cl source when
built, and against the declaration when called."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import numpy as np
import pyopencl as cl
import pytest

import streamer.restoration
from streamer.errors import KernelBuildError
from streamer.imaging.psf import gaussian_psf, moffat_psf
from streamer.restoration.background import BackgroundEqualiser
from streamer.restoration.copy_block import FILL_FLOATS
from streamer.restoration.detection_maps import LEVELLED_PADDED, SKY_LEVELLED_PADDED
from streamer.restoration.map_candidates import MAP_CANDIDATES
from streamer.restoration.restored_peaks import PEAK_CANDIDATES, STRIDED_SAMPLE
from streamer.restoration.correlation_plan import build_correlation
from streamer.restoration.fft_correlation import MULTIPLY_CONJUGATE, fft_available
from streamer.restoration.kernels import BUFFER, LOCAL, KernelDeclaration, KernelLibrary
from streamer.restoration.median import MedianFilter
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.restoration.richardson_lucy_kernels import (
    DEFINES, RATIO_ROWS, STAGE_ROWS, UPDATE_ROWS,
)

OPENCL = Path(__file__).resolve().parents[2] / "opencl"
# Families built without declarations (none yet): common.cl is prepended to every program.
# common.cl is prepended to every program; probe.cl is the device probe, built on its own
# with no defines before any of our programs (streamer/restoration/device.py).
NOT_DECLARED = {"common", "probe"}


def _fill(library: KernelLibrary, queue: cl.CommandQueue, count: int = 5, **named):
    buffer = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, count * 4)
    kernel = library.kernel(FILL_FLOATS)
    kernel(queue, (count,), None, **{"dst": buffer, "value": 2.5, "count": count, **named})
    out = np.empty(count, dtype=np.float32)
    cl.enqueue_copy(queue, out, buffer)
    return out


def test_a_declared_kernel_takes_plain_values_by_name(opencl):
    assert np.array_equal(_fill(opencl.library, opencl.queue), np.full(5, 2.5, np.float32))
    assert opencl.library.kernel(FILL_FLOATS) is opencl.library.kernel(FILL_FLOATS)  # built once


@pytest.mark.parametrize("named, message", [
    ({"count": None, "size": 5}, "unknown argument(s) 'size'"),
    ({"valeu": 1.0}, "unknown argument(s) 'valeu'"),
])
def test_an_unknown_argument_name_is_an_error_naming_kernel_and_argument(opencl, named,
                                                                         message):
    kernel = opencl.library.kernel(FILL_FLOATS)
    buffer = cl.Buffer(opencl.context, cl.mem_flags.READ_WRITE, 4)
    arguments = {"dst": buffer, "value": 1.0, "count": 1, **named}
    arguments = {name: value for name, value in arguments.items() if value is not None}
    with pytest.raises(TypeError, match=re.escape(message)) as raised:
        kernel(opencl.queue, (1,), None, **arguments)
    assert "fill_floats" in str(raised.value)


def test_a_missing_argument_is_an_error_naming_kernel_and_argument(opencl):
    kernel = opencl.library.kernel(FILL_FLOATS)
    buffer = cl.Buffer(opencl.context, cl.mem_flags.READ_WRITE, 4)
    with pytest.raises(TypeError, match=r"kernel fill_floats: missing argument\(s\) 'count'"):
        kernel(opencl.queue, (1,), None, dst=buffer, value=1.0)


def test_long_argument_lists_are_passed_by_name(opencl):
    from streamer.restoration.copy_block import COPY_BLOCK

    kernel = opencl.library.kernel(COPY_BLOCK)
    buffer = cl.Buffer(opencl.context, cl.mem_flags.READ_WRITE, 4)
    with pytest.raises(TypeError, match="kernel copy_block takes 8 arguments by name"):
        kernel(opencl.queue, (1, 1), None, buffer, 0, 1, buffer, 0, 1, 1, 1)
    with pytest.raises(TypeError, match="all by name or all in order"):
        opencl.library.kernel(FILL_FLOATS)(opencl.queue, (1,), None, buffer, value=1.0,
                                           count=1)


@pytest.mark.parametrize("arguments, message", [
    ({"dst": BUFFER, "value": np.float32, "n": np.int32},
     "argument 2 is 'count' in the source but 'n' in its declaration"),
    ({"value": np.float32, "dst": BUFFER, "count": np.int32},
     "argument 0 is 'dst' in the source but 'value'"),
    ({"dst": BUFFER, "value": np.float32}, "takes 3 arguments, its declaration in Python 2"),
    ({"dst": BUFFER, "value": np.int32, "count": np.int32},
     "argument 'value' is declared int32 in Python but is 'float' in the source"),
    ({"dst": BUFFER, "value": np.float32, "count": BUFFER},
     "argument 'count' is declared buffer in Python but is 'int' in the source"),
    ({"dst": LOCAL, "value": np.float32, "count": np.int32},
     "argument 'dst' is declared local in Python"),
])
def test_a_declaration_that_disagrees_with_the_source_fails_at_build(opencl, arguments,
                                                                      message):
    wrong = KernelDeclaration("copy", "fill_floats", **arguments)
    with pytest.raises(KernelBuildError, match=re.escape(message)) as raised:
        KernelLibrary(opencl.context).kernel(wrong)
    assert "kernel fill_floats of opencl/copy.cl" in str(raised.value)


def test_an_unsupported_argument_type_fails_at_declaration():
    with pytest.raises(TypeError, match="kernel k: argument 'x' has type complex64"):
        KernelDeclaration("copy", "k", x=np.complex64)


def _kernels_in_sources() -> set[tuple[str, str]]:
    return {(path.stem, name) for path in OPENCL.glob("*.cl") if path.stem not in NOT_DECLARED
            for name in re.findall(r"__kernel\s+(?:__attribute__\(\(.*?\)\)\s+)?void\s+(\w+)",
                                   path.read_text(), re.S)}


def _declarations_in_package() -> set[KernelDeclaration]:
    found = set()
    for module in pkgutil.iter_modules(streamer.restoration.__path__):
        namespace = vars(importlib.import_module(f"streamer.restoration.{module.name}"))
        found |= {value for value in namespace.values() if isinstance(value, KernelDeclaration)}
    return found


def test_every_kernel_is_declared_and_every_declaration_matches_its_source(opencl):
    """Every plan built on one library: each kernel is checked against its source as it is
    built, with the defines the package really uses."""
    library, queue = KernelLibrary(opencl.context), opencl.queue
    for method in ("histogram", "tiled"):
        MedianFilter(queue, library, (20, 23), 5, np.uint16, method=method,
                     input_dtype=np.int16)
    BackgroundEqualiser(queue, library, (20, 23), 5, np.float32)
    for method in ("dense", "sparse", "separable"):
        build_correlation(method, queue, library, gaussian_psf(2.0, size=5), (20, 23))
    plan = RichardsonLucy(queue, library, (20, 23), moffat_psf(2.5, 3.0, size=7), "host_fft")
    plan._acceleration_state()  # its kernels are built when a run first asks for them
    if plan._in_place is None:  # no FFTW, or a device that cannot see host memory
        for declaration in (RATIO_ROWS, UPDATE_ROWS, STAGE_ROWS):
            library.kernel(declaration, **DEFINES)
    if fft_available():
        build_correlation("fft", queue, library, gaussian_psf(2.0, size=5), (20, 23))
    else:
        library.kernel(MULTIPLY_CONJUGATE, KH=5, KW=5)
    # The catalogue's matched filters, as DetectionMaps.compute builds them for a uint16 frame.
    # ... the restored map's peak candidates and sky sample (restored_peaks.PeakFinder), and
    # the frame's map candidates (map_candidates.MapCandidateFinder).
    for declaration in (SKY_LEVELLED_PADDED, LEVELLED_PADDED, PEAK_CANDIDATES, STRIDED_SAMPLE,
                        MAP_CANDIDATES):
        library.kernel(declaration, INPUT_TYPE="ushort", KEY_IS_FLOAT=0)
    built = library.declarations
    assert {(d.family, d.name) for d in built} == _kernels_in_sources()
    assert built == _declarations_in_package()
