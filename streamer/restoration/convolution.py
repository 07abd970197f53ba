"""Valid-mode 2-D correlation on an OpenCL device, by the method that is fastest there.

``dst[y, x] = sum_ij w[i, j] * src[y + i, x + j]`` for a ``src`` of shape
``(rows + kh - 1, columns + kw - 1)``. Four methods compute it:

* ``dense`` — every tap, the reference direct method;
* ``sparse`` — only the non-zero taps (a motion streak fills a fraction of its box);
* ``separable`` — a sum of rank-1 row/column passes from the kernel's SVD, used only when
  the truncated terms hold less than ``SEPARABLE_TOLERANCE`` of the kernel's norm
  (a Gaussian is exactly rank 1);
* ``fft`` — circular correlation on a padded transform (pyvkfft), when installed.

:func:`plan_correlation` prunes them by arithmetic cost, then times the survivors on the
device and keeps the fastest: measured, not guessed.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

import numpy as np
import pyopencl as cl

from streamer.restoration.copy_block import BlockCopy
from streamer.errors import ParameterError
from streamer.restoration.kernels import KernelLibrary

log = logging.getLogger(__name__)

METHODS = ("dense", "sparse", "separable", "fft")
SEPARABLE_TOLERANCE = 1e-6
_MAX_SEPARABLE_RANK = 8


BLOCK_COLUMNS = 8  # must match opencl/convolution.cl
BLOCK_ROWS = 4


def source_buffer(context: cl.Context, rows: int, columns: int) -> cl.Buffer:
    """A device buffer for a correlation source of ``rows × columns`` floats, with the slack
    the blocked kernels read past its end."""
    slack = (BLOCK_ROWS + 1) * columns + BLOCK_COLUMNS
    return cl.Buffer(context, cl.mem_flags.READ_WRITE, (rows * columns + slack) * 4)


def _blocks(columns: int, rows: int) -> tuple[int, int]:
    return (-(-columns // BLOCK_COLUMNS), -(-rows // BLOCK_ROWS))


def _float_buffer(context: cl.Context, array: np.ndarray) -> cl.Buffer:
    return cl.Buffer(
        context,
        cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
        hostbuf=np.ascontiguousarray(array, dtype=np.float32),
    )


class Correlation(ABC):
    """One planned valid correlation: fixed kernel and output shape, reusable buffers."""

    method: str

    def __init__(self, queue: cl.CommandQueue, weights: np.ndarray, out_shape: tuple[int, int]):
        self.queue = queue
        self.weights = weights
        self.out_shape = out_shape
        self.kh, self.kw = weights.shape
        self.src_shape = (out_shape[0] + self.kh - 1, out_shape[1] + self.kw - 1)

    @abstractmethod
    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        """Enqueue ``dst = valid_correlate(src, weights)``."""

    def __call__(self, src: np.ndarray) -> np.ndarray:
        """Host convenience (tests): correlate a host array, return the host result."""
        context = self.queue.context
        src_buffer = source_buffer(context, *self.src_shape)
        cl.enqueue_copy(self.queue, src_buffer, np.ascontiguousarray(src, dtype=np.float32))
        dst_buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE, int(np.prod(self.out_shape)) * 4)
        self.enqueue(src_buffer, dst_buffer)
        out = np.empty(self.out_shape, dtype=np.float32)
        cl.enqueue_copy(self.queue, out, dst_buffer)
        return out


class DenseCorrelation(Correlation):
    """Every tap of the kernel."""

    method = "dense"

    def __init__(self, queue, library: KernelLibrary, weights, out_shape):
        super().__init__(queue, weights, out_shape)
        program = library.program("convolution", KH=self.kh, KW=self.kw)
        self._kernel = cl.Kernel(program, "correlate_dense")
        self._weights = _float_buffer(queue.context, weights)

    def enqueue(self, src, dst):
        rows, columns = self.out_shape
        self._kernel(
            self.queue, _blocks(columns, rows), None, src, self._weights, dst,
            np.int32(columns), np.int32(rows),
        )


def _int_buffer(context: cl.Context, array: np.ndarray) -> cl.Buffer:
    return cl.Buffer(context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                     hostbuf=np.ascontiguousarray(array, dtype=np.int32))


class _Taps:
    """One launch of ``correlate_taps``: fixed offsets and weights."""

    def __init__(self, queue, kernel: cl.Kernel, offsets: np.ndarray, weights: np.ndarray):
        self.queue = queue
        self.kernel = kernel
        self.count = len(offsets)
        self.offsets = _int_buffer(queue.context, offsets)
        self.weights = _float_buffer(queue.context, weights)

    def enqueue(self, src, pitch: int, dst, columns: int, rows: int, accumulate: bool = False):
        self.kernel(
            self.queue, _blocks(columns, rows), None, src, np.int32(pitch), self.offsets,
            self.weights, np.int32(self.count), dst, np.int32(columns), np.int32(rows),
            np.int32(accumulate),
        )


class SparseCorrelation(Correlation):
    """Only the non-zero taps."""

    method = "sparse"

    def __init__(self, queue, library: KernelLibrary, weights, out_shape):
        super().__init__(queue, weights, out_shape)
        kernel = cl.Kernel(library.program("convolution", KH=self.kh, KW=self.kw), "correlate_taps")
        rows, columns = np.nonzero(weights)
        self.taps = len(rows)
        self._taps = _Taps(queue, kernel, rows * self.src_shape[1] + columns, weights[rows, columns])

    def enqueue(self, src, dst):
        rows, columns = self.out_shape
        self._taps.enqueue(src, self.src_shape[1], dst, columns, rows)


def separable_terms(weights: np.ndarray, tolerance: float = SEPARABLE_TOLERANCE):
    """Column/row vector pairs whose outer products sum to ``weights`` within ``tolerance``
    (relative Frobenius norm), or None when more than a few terms would be needed."""
    u, s, vt = np.linalg.svd(weights.astype(np.float64))
    norm = np.sqrt((s**2).sum())
    if norm == 0:
        return None
    for rank in range(1, min(_MAX_SEPARABLE_RANK, len(s)) + 1):
        residual = np.sqrt((s[rank:] ** 2).sum()) / norm
        if residual <= tolerance:
            return [(u[:, r] * s[r], vt[r]) for r in range(rank)]
    return None


class SeparableCorrelation(Correlation):
    """A sum of rank-1 terms: a row pass then a column pass per term."""

    method = "separable"

    def __init__(self, queue, library: KernelLibrary, weights, out_shape, terms):
        super().__init__(queue, weights, out_shape)
        kernel = cl.Kernel(library.program("convolution", KH=self.kh, KW=self.kw), "correlate_taps")
        self.rank = len(terms)
        width = out_shape[1]
        self._terms = [
            (_Taps(queue, kernel, np.arange(self.kw), row),
             _Taps(queue, kernel, np.arange(self.kh) * width, column))
            for column, row in terms
        ]
        self._scratch = source_buffer(queue.context, self.src_shape[0], width)

    def enqueue(self, src, dst):
        rows, columns = self.out_shape
        for index, (row_pass, column_pass) in enumerate(self._terms):
            row_pass.enqueue(src, self.src_shape[1], self._scratch, columns, self.src_shape[0])
            column_pass.enqueue(self._scratch, columns, dst, columns, rows, accumulate=index > 0)


def fft_available() -> bool:
    """Whether pyvkfft (the OpenCL FFT used by the ``fft`` method) is importable."""
    try:
        import pyvkfft.opencl  # noqa: F401
    except Exception:  # ImportError, or a build without OpenCL support
        return False
    return True


def _fast_length(n: int) -> int:
    """Smallest length >= n whose prime factors are 2, 3, 5 and 7 (fast for VkFFT)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class FFTCorrelation(Correlation):
    """Circular correlation on a transform at least as large as ``src``: since every output
    reads ``src`` rows/columns below ``rows + kh - 1``, nothing wraps around."""

    method = "fft"

    def __init__(self, queue, library: KernelLibrary, weights, out_shape):
        super().__init__(queue, weights, out_shape)
        from pyvkfft.opencl import VkFFTApp

        import pyopencl.array as cl_array

        program = library.program("convolution", KH=self.kh, KW=self.kw)
        self._copy = BlockCopy(queue, library)
        self._multiply = cl.Kernel(program, "multiply_conjugate")
        self.fft_shape = (_fast_length(self.src_shape[0]), _fast_length(self.src_shape[1]))
        height, width = self.fft_shape
        self._real = cl_array.zeros(queue, self.fft_shape, np.float32)
        self._spectrum = cl_array.empty(queue, (height, width // 2 + 1), np.complex64)
        self._app = VkFFTApp(self.fft_shape, np.float32, queue, r2c=True, inplace=False, ndim=2)
        padded = np.zeros(self.fft_shape, dtype=np.float32)
        padded[: self.kh, : self.kw] = weights
        self._real.set(padded)
        self._kernel_spectrum = cl_array.empty_like(self._spectrum)
        self._app.fft(self._real, self._kernel_spectrum)
        self._real.fill(0)

    def enqueue(self, src, dst):
        rows, columns = self.out_shape
        src_rows, src_columns = self.src_shape
        width = self.fft_shape[1]
        self._copy(src, src_columns, self._real.data, width, src_rows, src_columns)
        self._app.fft(self._real, self._spectrum)
        count = self._spectrum.size
        self._multiply(
            self.queue, ((count + 255) // 256 * 256,), None, self._spectrum.data,
            self._kernel_spectrum.data, np.int32(count),
        )
        self._app.ifft(self._spectrum, self._real)
        self._copy(self._real.data, width, dst, columns, rows, columns)
        # The next call writes only the src block; the rest of the transform must be 0 again.
        self._real.fill(0)


def _estimated_cost(method: str, weights: np.ndarray, out_shape, terms) -> float | None:
    """Rough multiply-adds per output pixel, to skip methods that cannot win."""
    kh, kw = weights.shape
    if method == "dense":
        return float(kh * kw)
    if method == "sparse":
        taps = np.count_nonzero(weights)
        return 1.5 * taps if taps < 0.7 * kh * kw else None
    if method == "separable":
        return 1.2 * len(terms) * (kh + kw) if terms else None
    if method == "fft":
        if not fft_available():
            return None
        size = (out_shape[0] + kh) * (out_shape[1] + kw)
        return 40.0 * np.log2(size)
    raise ParameterError(f"unknown convolution method {method!r}; choose from {METHODS}")


def build_correlation(
    method: str, queue, library: KernelLibrary, weights: np.ndarray, out_shape
) -> Correlation:
    """Construct one method's correlation (no timing)."""
    if method == "dense":
        return DenseCorrelation(queue, library, weights, out_shape)
    if method == "sparse":
        return SparseCorrelation(queue, library, weights, out_shape)
    if method == "separable":
        terms = separable_terms(weights)
        if terms is None:
            raise ParameterError(
                "this PSF is not separable within "
                f"{SEPARABLE_TOLERANCE:g} with at most {_MAX_SEPARABLE_RANK} terms; "
                "use method dense, sparse or fft"
            )
        return SeparableCorrelation(queue, library, weights, out_shape, terms)
    if method == "fft":
        if not fft_available():
            raise ParameterError("the fft method needs pyvkfft: pip install 'streamer[fft]'")
        return FFTCorrelation(queue, library, weights, out_shape)
    raise ParameterError(f"unknown convolution method {method!r}; choose from {METHODS}")


def time_correlation(correlation: Correlation, repeats: int = 2) -> float:
    """Best wall time of ``repeats`` runs on scratch buffers, seconds."""
    context = correlation.queue.context
    src = source_buffer(context, *correlation.src_shape)
    dst = cl.Buffer(context, cl.mem_flags.READ_WRITE, int(np.prod(correlation.out_shape)) * 4)
    cl.enqueue_fill_buffer(correlation.queue, src, np.float32(1), 0, src.size)
    correlation.enqueue(src, dst)  # warm-up: first launch pays lazy compilation
    correlation.queue.finish()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        correlation.enqueue(src, dst)
        correlation.queue.finish()
        best = min(best, time.perf_counter() - started)
    return best


def plan_correlation(
    queue, library: KernelLibrary, weights: np.ndarray, out_shape, method: str = "auto"
) -> tuple[Correlation, dict[str, float]]:
    """Plan the correlation by ``method``, or with ``auto`` the fastest measured one.

    Returns the plan and the seconds measured for each method timed (empty unless auto).
    """
    if method != "auto":
        return build_correlation(method, queue, library, weights, out_shape), {}
    terms = separable_terms(weights)
    costs = {
        name: cost
        for name in METHODS
        if (cost := _estimated_cost(name, weights, out_shape, terms)) is not None
    }
    cheapest = min(costs.values())
    candidates = [name for name, cost in costs.items() if cost <= 4.0 * cheapest]
    if len(candidates) == 1:
        return build_correlation(candidates[0], queue, library, weights, out_shape), {}
    timings: dict[str, float] = {}
    best: Correlation | None = None
    for name in candidates:
        correlation = build_correlation(name, queue, library, weights, out_shape)
        timings[name] = time_correlation(correlation)
        if best is None or timings[name] < timings[best.method]:
            best = correlation
    log.info(
        "convolution %dx%d on %s: %s (measured %s)",
        *weights.shape, out_shape, best.method,
        ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in timings.items()),
    )
    return best, timings
