"""Valid-mode 2-D correlation on an OpenCL device, by the method that is fastest there.

``dst[y, x] = sum_ij w[i, j] * src[y + i, x + j]`` for a ``src`` of shape
``(rows + kh - 1, columns + kw - 1)``. Five methods compute it:

* ``dense`` — every tap, the reference direct method;
* ``sparse`` — only the non-zero taps (a motion streak fills a fraction of its box);
* ``separable`` — a sum of rank-1 row/column passes from the kernel's SVD, used only when
  the truncated terms hold less than ``SEPARABLE_TOLERANCE`` of the kernel's norm
  (a Gaussian is exactly rank 1);
* ``fft`` — circular correlation on a padded transform on the device (VkFFT, via pyvkfft);
* ``host_fft`` — the same on the host's cores (SciPy's pocketfft), on buffers mapped without
  a copy: for CPU devices, where the host FFT is the fastest there is
  (:mod:`streamer.restoration.fft_correlation`).

A plan is made for a kernel *shape*; :meth:`Correlation.set_weights` loads the kernel of each
frame, so a PSF measured per frame costs no re-planning. :mod:`correlation_plan` chooses the
method by timing the candidates, and remembers the choice on disk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pyopencl as cl

from streamer.errors import ParameterError
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.deferred_measurements import DeferredMeasurements
from streamer.restoration.kernels import (
    BUFFER, DeclaredKernel, KernelDeclaration, KernelLibrary,
)

SEPARABLE_TOLERANCE = 1e-6
MAX_SEPARABLE_RANK = 8
BLOCK_COLUMNS = 8
BLOCK_ROWS = 4
CORRELATE_DENSE = KernelDeclaration(
    "convolution", "correlate_dense", src=BUFFER, weights=BUFFER, dst=BUFFER, width=np.int32,
    height=np.int32)
CORRELATE_TAPS = KernelDeclaration(
    "convolution", "correlate_taps", src=BUFFER, pitch=np.int32, offsets=BUFFER,
    weights=BUFFER, taps=np.int32, dst=BUFFER, width=np.int32, height=np.int32,
    accumulate=np.int32)


def source_buffer(context: cl.Context, rows: int, columns: int) -> cl.Buffer:
    """A device buffer for a correlation source of ``rows × columns`` floats, with the slack
    the blocked kernels read past its end."""
    slack = (BLOCK_ROWS + 1) * columns + BLOCK_COLUMNS
    return cl.Buffer(context, cl.mem_flags.READ_WRITE, (rows * columns + slack) * 4)


def blocks(columns: int, rows: int) -> tuple[int, int]:
    """Global size of the blocked correlation kernels for an output of ``rows × columns``."""
    return (-(-columns // BLOCK_COLUMNS), -(-rows // BLOCK_ROWS))


def _array_buffer(context: cl.Context, array: np.ndarray, dtype: type) -> cl.Buffer:
    return cl.Buffer(context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                     hostbuf=np.ascontiguousarray(array, dtype=dtype))


class Correlation(ABC):
    """One planned valid correlation: fixed kernel shape and output shape, reusable buffers;
    the kernel's values are set (and may be changed) with :meth:`set_weights`."""

    method: str
    # (plan-cache key, what this plan was made with) of each measurement put off for it: the
    # method the estimate chose, the FFT size (:mod:`streamer.restoration.deferred_measurements`)
    provisional: tuple[tuple[str, str], ...] = ()

    def __init__(self, queue: cl.CommandQueue, kernel_shape: tuple[int, int],
                 out_shape: tuple[int, int]) -> None:
        self.queue = queue
        self.kh, self.kw = int(kernel_shape[0]), int(kernel_shape[1])
        self.out_shape = (int(out_shape[0]), int(out_shape[1]))
        self.src_shape = (self.out_shape[0] + self.kh - 1, self.out_shape[1] + self.kw - 1)
        self.weights: np.ndarray | None = None

    def superseded_by(self, deferred: DeferredMeasurements) -> bool:
        """Whether a measurement put off for this plan has run and chosen otherwise."""
        return any(deferred.supersedes(key, value) for key, value in self.provisional)

    def accepts(self, weights: np.ndarray) -> bool:
        """Whether this plan can load ``weights`` (same shape; a method may ask more)."""
        return tuple(weights.shape) == (self.kh, self.kw)

    def set_weights(self, weights: np.ndarray) -> None:
        """Load a kernel of the planned shape."""
        weights = np.asarray(weights, dtype=np.float64)
        if not self.accepts(weights):
            raise ParameterError(
                f"this {self.method} correlation is planned for {self.kh}x{self.kw} kernels "
                f"of its kind; got {weights.shape[0]}x{weights.shape[1]}")
        self.weights = weights
        self._load(weights)

    @abstractmethod
    def _load(self, weights: np.ndarray) -> None:
        """Put the kernel's values where :meth:`enqueue` reads them."""

    @abstractmethod
    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        """Enqueue ``dst = valid_correlate(src, weights)``."""

    def __call__(self, src: np.ndarray) -> np.ndarray:
        """Host convenience (tests): correlate a host array, return the host result."""
        context = self.queue.context
        src_buffer = source_buffer(context, *self.src_shape)
        # The slack after the source is read by the blocked kernels' unused lanes: zero it.
        whole = np.zeros(src_buffer.size // 4, dtype=np.float32)
        whole[: src.size] = np.ascontiguousarray(src, dtype=np.float32).ravel()
        cl.enqueue_copy(self.queue, src_buffer, whole)
        dst_buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE, int(np.prod(self.out_shape)) * 4)
        self.enqueue(src_buffer, dst_buffer)
        out = np.empty(self.out_shape, dtype=np.float32)
        cl.enqueue_copy(self.queue, out, dst_buffer)
        return out


class DenseCorrelation(Correlation):
    """Every tap of the kernel."""

    method = "dense"

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary,
                 kernel_shape: tuple[int, int], out_shape: tuple[int, int]) -> None:
        super().__init__(queue, kernel_shape, out_shape)
        self._kernel = library.kernel(CORRELATE_DENSE, KH=self.kh, KW=self.kw)
        self._weights = cl.Buffer(queue.context, cl.mem_flags.READ_ONLY, self.kh * self.kw * 4)

    def _load(self, weights: np.ndarray) -> None:
        cl.enqueue_copy(self.queue, self._weights, np.ascontiguousarray(weights, np.float32))

    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        rows, columns = self.out_shape
        self._kernel(self.queue, blocks(columns, rows), None, src=src, weights=self._weights,
                     dst=dst, width=columns, height=rows)


class _Taps:
    """One launch of ``correlate_taps``: fixed offsets and weights."""

    def __init__(self, queue: cl.CommandQueue, kernel: DeclaredKernel, offsets: np.ndarray,
                 weights: np.ndarray) -> None:
        self.queue = queue
        self.kernel = kernel
        self.count = len(offsets)
        self.offsets = _array_buffer(queue.context, offsets, np.int32)
        self.weights = _array_buffer(queue.context, weights, np.float32)

    def enqueue(self, src: cl.Buffer, pitch: int, dst: cl.Buffer, columns: int, rows: int,
                accumulate: bool = False) -> None:
        self.kernel(self.queue, blocks(columns, rows), None, src=src, pitch=pitch,
                    offsets=self.offsets, weights=self.weights, taps=self.count, dst=dst,
                    width=columns, height=rows, accumulate=int(accumulate))


class SparseCorrelation(Correlation):
    """Only the non-zero taps."""

    method = "sparse"

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary,
                 kernel_shape: tuple[int, int], out_shape: tuple[int, int]) -> None:
        super().__init__(queue, kernel_shape, out_shape)
        self._kernel = library.kernel(CORRELATE_TAPS, KH=self.kh, KW=self.kw)
        self._taps: _Taps | None = None
        self.taps = 0

    def _load(self, weights: np.ndarray) -> None:
        rows, columns = np.nonzero(weights)
        if rows.size == 0:  # an all-zero kernel still needs one (zero) tap
            rows, columns = np.array([0]), np.array([0])
        self.taps = len(rows)
        self._taps = _Taps(self.queue, self._kernel, rows * self.src_shape[1] + columns,
                           weights[rows, columns])

    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        rows, columns = self.out_shape
        self._taps.enqueue(src, self.src_shape[1], dst, columns, rows)


def separable_terms(weights: np.ndarray, tolerance: float = SEPARABLE_TOLERANCE
                    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Column/row vector pairs whose outer products sum to ``weights`` within ``tolerance``
    (relative Frobenius norm), or None when more than a few terms would be needed."""
    u, s, vt = np.linalg.svd(np.asarray(weights, dtype=np.float64))
    norm = np.sqrt((s**2).sum())
    if norm == 0:
        return None
    for rank in range(1, min(MAX_SEPARABLE_RANK, len(s)) + 1):
        residual = np.sqrt((s[rank:] ** 2).sum()) / norm
        if residual <= tolerance:
            return [(u[:, r] * s[r], vt[r]) for r in range(rank)]
    return None


class SeparableCorrelation(Correlation):
    """A sum of rank-1 terms: a row pass then a column pass per term."""

    method = "separable"

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary,
                 kernel_shape: tuple[int, int], out_shape: tuple[int, int]) -> None:
        super().__init__(queue, kernel_shape, out_shape)
        self._kernel = library.kernel(CORRELATE_TAPS, KH=self.kh, KW=self.kw)
        # The row passes' output, read by the column passes. Their blocks at the bottom and
        # right edges read past the rows the row passes write, into the slack (lanes computed
        # and not stored): zeroed once, with a kernel, so that no uninitialised value enters
        # a computation (Oclgrind follows one through the block's private arrays into the
        # lanes that are stored, and on into the next Richardson-Lucy step).
        self._scratch = source_buffer(queue.context, self.src_shape[0], self.out_shape[1])
        BlockCopy(queue, library).fill(self._scratch, 0.0)
        self._terms: list[tuple[_Taps, _Taps]] = []
        self.rank = 0

    def accepts(self, weights: np.ndarray) -> bool:
        return super().accepts(weights) and separable_terms(weights) is not None

    def _load(self, weights: np.ndarray) -> None:
        width = self.out_shape[1]
        terms = separable_terms(weights)
        self.rank = len(terms)
        self._terms = [
            (_Taps(self.queue, self._kernel, np.arange(self.kw), row),
             _Taps(self.queue, self._kernel, np.arange(self.kh) * width, column))
            for column, row in terms
        ]

    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        rows, columns = self.out_shape
        for index, (row_pass, column_pass) in enumerate(self._terms):
            row_pass.enqueue(src, self.src_shape[1], self._scratch, columns, self.src_shape[0])
            column_pass.enqueue(self._scratch, columns, dst, columns, rows, accumulate=index > 0)
