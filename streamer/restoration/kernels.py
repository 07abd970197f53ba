"""Loads the OpenCL programs in ``opencl/`` and builds each once per context and defines;
gives each kernel its argument list, declared once in Python.

Every wrapper goes through :class:`KernelLibrary`, so compile-time sizes are passed as ``-D``
defines (one source file per kernel family, no copies that differ in a constant) and a program
is never built twice for the same context.

A kernel's arguments — names and types, in the order of its ``.cl`` signature — are declared
once, as a :class:`KernelDeclaration` beside the wrapper that launches it. The library builds
the kernel once per context and defines, checks the declaration against the parameters the
compiler reports (the programs are built with ``-cl-kernel-arg-info``) and sets the scalar
types once (``set_scalar_arg_dtypes``, as pyopencl's own ``elementwise`` and ``reduction``
do), so a launch passes plain Python values, by name: an argument in the wrong place cannot
go unnoticed.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
import numpy as np
import pyopencl as cl

from streamer.errors import KernelBuildError

log = logging.getLogger(__name__)

BUFFER = "buffer"   # a cl.Buffer (a __global or __constant pointer)
LOCAL = "local"     # a cl.LocalMemory (a __local pointer)
ArgumentType = str | type | np.dtype
# Launches of kernels with more arguments than this name every argument.
MAX_POSITIONAL = 3
# The OpenCL C name of each scalar type a declaration may use.
SCALAR_TYPE_NAMES = {np.dtype(np.int32): "int", np.dtype(np.uint32): "uint",
                     np.dtype(np.float32): "float", np.dtype(np.int64): "long",
                     np.dtype(np.uint64): "ulong", np.dtype(np.float64): "double"}
_QUALIFIERS = {BUFFER: (cl.kernel_arg_address_qualifier.GLOBAL,
                        cl.kernel_arg_address_qualifier.CONSTANT),
               LOCAL: (cl.kernel_arg_address_qualifier.LOCAL,)}


def read_kernel_source(family: str) -> str:
    """The text of ``opencl/<family>.cl``: from a source checkout, else from the copy
    installed as package data."""
    checkout = Path(__file__).resolve().parents[2] / "opencl" / f"{family}.cl"
    if checkout.is_file():
        return checkout.read_text()
    return resources.files("streamer.opencl").joinpath(f"{family}.cl").read_text()


class KernelDeclaration:
    """The kernel ``name`` of ``opencl/<family>.cl`` and its arguments in signature order,
    each :data:`BUFFER`, :data:`LOCAL` or a NumPy scalar type (``np.int32``, ``np.float32``,
    ``np.uint32``...).

    Example
    -------
    >>> FILL = KernelDeclaration("copy", "fill_floats", dst=BUFFER, value=np.float32,
    ...                          count=np.int32)
    >>> fill = library.kernel(FILL)                          # doctest: +SKIP
    >>> fill(queue, (256,), None, dst=buffer, value=0.0, count=256)   # doctest: +SKIP
    """

    def __init__(self, family: str, name: str, **arguments: ArgumentType) -> None:
        self.family = family
        self.name = name
        self.arguments: dict[str, str | np.dtype] = {}
        for argument, kind in arguments.items():
            if kind not in (BUFFER, LOCAL):
                kind = np.dtype(kind)
                if kind not in SCALAR_TYPE_NAMES:
                    raise TypeError(f"kernel {name}: argument {argument!r} has type {kind}; "
                                    f"declare {BUFFER!r}, {LOCAL!r} or one of "
                                    f"{sorted(str(t) for t in SCALAR_TYPE_NAMES)}")
            self.arguments[argument] = kind

    def __repr__(self) -> str:
        listed = ", ".join(f"{name}={kind}" for name, kind in self.arguments.items())
        return f"KernelDeclaration({self.family}.cl: {self.name}({listed}))"

    def check(self, kernel: cl.Kernel) -> None:
        """Raise KernelBuildError unless the built ``kernel``'s parameters are the declared
        ones: the same names, in the same order, of the same kinds and scalar types."""
        where = f"kernel {self.name} of opencl/{self.family}.cl"
        declared = list(self.arguments)
        if kernel.num_args != len(declared):
            raise KernelBuildError(
                f"{where} takes {kernel.num_args} arguments, its declaration in Python "
                f"{len(declared)}: {declared}")
        try:
            source = [_argument_info(kernel, index) for index in range(kernel.num_args)]
        except (cl.LogicError, cl.RuntimeError) as error:  # a driver without argument info
            log.debug("%s: names not checked, no argument info (%s)", where, error)
            return
        for index, (name, (actual, qualifier, type_name)) in enumerate(
                zip(declared, source)):
            kind = self.arguments[name]
            if name != actual:
                raise KernelBuildError(
                    f"{where}: argument {index} is {actual!r} in the source but {name!r} in "
                    f"its declaration in Python; the source's order is "
                    f"{[info[0] for info in source]}")
            if kind in _QUALIFIERS:
                expected = qualifier in _QUALIFIERS[kind]
            else:
                expected = (qualifier == cl.kernel_arg_address_qualifier.PRIVATE
                            and type_name == SCALAR_TYPE_NAMES[kind])
            if not expected:
                raise KernelBuildError(
                    f"{where}: argument {name!r} is declared {kind} in Python but is "
                    f"{type_name!r} in the source")


def _argument_info(kernel: cl.Kernel, index: int) -> tuple[str, int, str]:
    """Name, address qualifier and type name (no qualifiers) of a built kernel's argument."""
    info = cl.kernel_arg_info
    type_name = kernel.get_arg_info(index, info.TYPE_NAME).strip()
    return (kernel.get_arg_info(index, info.NAME),
            kernel.get_arg_info(index, info.ADDRESS_QUALIFIER), type_name)


class DeclaredKernel:
    """A built kernel called with its declared arguments: by name, checked against the
    declaration (a missing or unknown name raises TypeError naming the kernel and the
    argument), or — for kernels of at most :data:`MAX_POSITIONAL` arguments — in order.

    The name-to-position mapping is the declaration's order, fixed at build; a call looks
    each name up once and hands pyopencl's generated invoker the values in order."""

    def __init__(self, declaration: KernelDeclaration, kernel: cl.Kernel) -> None:
        self.declaration = declaration
        self.name = declaration.name
        self._names = tuple(declaration.arguments)
        self._kernel = kernel

    def __call__(self, queue: cl.CommandQueue, global_size: tuple[int, ...],
                 local_size: tuple[int, ...] | None, /, *values: object,
                 **named: object) -> cl.Event:
        """Enqueue the kernel on ``global_size`` (``local_size``: the work-group shape, or
        None) with its arguments; returns the event."""
        if named:
            if values:
                raise TypeError(f"kernel {self.name}: pass its arguments all by name or all "
                                "in order, not both")
            try:
                values = tuple(map(named.__getitem__, self._names))
            except KeyError:
                raise self._naming_error(named) from None
            if len(named) != len(self._names):
                raise self._naming_error(named)
        elif len(values) != len(self._names) or len(self._names) > MAX_POSITIONAL:
            how = "by name" if len(self._names) > MAX_POSITIONAL else "in order"
            raise TypeError(f"kernel {self.name} takes {len(self._names)} arguments {how} "
                            f"({', '.join(self._names)}), got {len(values)} in order")
        return self._kernel(queue, global_size, local_size, *values)

    def _naming_error(self, named: dict[str, object]) -> TypeError:
        missing = [name for name in self._names if name not in named]
        unknown = [name for name in named if name not in self.declaration.arguments]
        parts = ([f"missing argument(s) {', '.join(map(repr, missing))}"] if missing else [])
        parts += [f"unknown argument(s) {', '.join(map(repr, unknown))}"] if unknown else []
        return TypeError(f"kernel {self.name}: {'; '.join(parts)} (it takes "
                         f"{', '.join(self._names)})")


class KernelLibrary:
    """Builds and caches the programs and declared kernels of one OpenCL context.

    A declared kernel is one OpenCL kernel object per context and defines, shared by every
    plan: each call sets all of its arguments, so plans cannot see each other's, but calls
    from several threads must be serialised (as the queue's are: one lock around device
    work)."""

    def __init__(self, context: cl.Context) -> None:
        self.context = context
        self._programs: dict[tuple[str, tuple[tuple[str, str], ...]], cl.Program] = {}
        self._kernels: dict[tuple[KernelDeclaration, tuple[tuple[str, str], ...]],
                            DeclaredKernel] = {}
        self.build_seconds: float = 0.0
        # Reducing loops take contiguous runs per work item on CPUs, a grid stride on GPUs
        # (opencl/common.cl).
        self.chunked = not any(device.type & cl.device_type.GPU for device in context.devices)

    @property
    def declarations(self) -> set[KernelDeclaration]:
        """The declarations built in this context so far."""
        return {declaration for declaration, _ in self._kernels}

    def kernel(self, declaration: KernelDeclaration,
               **defines: int | float | str) -> DeclaredKernel:
        """The declared kernel, built once for this context and ``defines`` (``-D``) and
        checked against its source (KernelBuildError if the declaration disagrees)."""
        key = (declaration, _define_key(defines))
        built = self._kernels.get(key)
        if built is not None:
            return built
        kernel = cl.Kernel(self.program(declaration.family, **defines), declaration.name)
        declaration.check(kernel)
        kernel.set_scalar_arg_dtypes([
            None if kind in (BUFFER, LOCAL) else kind
            for kind in declaration.arguments.values()])
        built = DeclaredKernel(declaration, kernel)
        self._kernels[key] = built
        return built

    def program(self, family: str, **defines: int | float | str) -> cl.Program:
        """The built program ``opencl/<family>.cl`` with ``-D NAME=value`` for each define."""
        key = (family, _define_key(defines))
        program = self._programs.get(key)
        if program is not None:
            return program
        source = read_kernel_source("common") + "\n" + read_kernel_source(family)
        options = [f"-D{name}={value}" for name, value in key[1]]
        options.append(f"-DCHUNKED={int(self.chunked)}")
        options.append("-cl-mad-enable")
        options.append("-cl-kernel-arg-info")  # parameter names, for KernelDeclaration.check
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


def _define_key(defines: dict[str, int | float | str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, str(value)) for name, value in defines.items()))
