"""Correlation by FFT: on the device (VkFFT, through pyvkfft) or on the host's cores.

Both compute the valid correlation as a circular one on a transform at least as large as the
source: every output ``(y, x)`` reads source rows ``y … y + kh - 1`` and columns
``x … x + kw - 1``, all inside the transform, so nothing wraps around.

The host path exists because on a CPU device the best FFT is the host's own: FFTW (pyFFTW) or
SciPy's pocketfft on all cores (``host_transforms``), reading and writing the device buffers
through zero-copy maps (PoCL keeps its buffers in host memory). The multiplications and the rest of Richardson–Lucy stay in the
OpenCL kernels.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pyopencl as cl

from streamer.imaging.fft_lengths import smooth_length
from streamer.restoration.convolution import Correlation
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.deferred_measurements import DeferredMeasurements
from streamer.restoration.host_transforms import plan_pair
from streamer.restoration.kernels import BUFFER, KernelDeclaration, KernelLibrary
from streamer.restoration.plan_cache import PlanCache

MULTIPLY_CONJUGATE = KernelDeclaration(
    "convolution", "multiply_conjugate", spectrum=BUFFER, kernel_spectrum=BUFFER,
    count=np.int32)


def fft_available() -> bool:
    """Whether pyvkfft (the device FFT of the ``fft`` method) is importable."""
    try:
        import pyvkfft.opencl  # noqa: F401
    except Exception:  # ImportError, or a build without OpenCL support
        return False
    return True


def fast_length(n: int) -> int:
    """Smallest length >= n whose prime factors are 2, 3, 5 and 7 (fast for VkFFT)."""
    return smooth_length(n, (2, 3, 5, 7))


class FFTCorrelation(Correlation):
    """Correlation with VkFFT on the device."""

    method = "fft"

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary,
                 kernel_shape: tuple[int, int], out_shape: tuple[int, int]) -> None:
        super().__init__(queue, kernel_shape, out_shape)
        import pyopencl.array as cl_array
        from pyvkfft.opencl import VkFFTApp

        self._copy = BlockCopy(queue, library)
        self._multiply = library.kernel(MULTIPLY_CONJUGATE, KH=self.kh, KW=self.kw)
        self.fft_shape = (fast_length(self.src_shape[0]), fast_length(self.src_shape[1]))
        height, width = self.fft_shape
        self._real = cl_array.zeros(queue, self.fft_shape, np.float32)
        self._spectrum = cl_array.empty(queue, (height, width // 2 + 1), np.complex64)
        self._kernel_spectrum = cl_array.empty_like(self._spectrum)
        self._app = VkFFTApp(self.fft_shape, np.float32, queue, r2c=True, inplace=False, ndim=2)

    def _load(self, weights: np.ndarray) -> None:
        padded = np.zeros(self.fft_shape, dtype=np.float32)
        padded[: self.kh, : self.kw] = weights
        self._real.set(padded)
        self._app.fft(self._real, self._kernel_spectrum)
        self._real.fill(0)

    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        rows, columns = self.out_shape
        src_rows, src_columns = self.src_shape
        width = self.fft_shape[1]
        self._copy(src, src_columns, self._real.data, width, src_rows, src_columns)
        self._app.fft(self._real, self._spectrum)
        count = self._spectrum.size
        self._multiply(self.queue, ((count + 255) // 256 * 256,), None, self._spectrum.data,
                       self._kernel_spectrum.data, count)
        self._app.ifft(self._spectrum, self._real)
        self._copy(self._real.data, width, dst, columns, rows, columns)
        # The next call writes only the src block; the rest of the transform must be 0 again.
        self._real.fill(0)


@contextmanager
def mapped(queue: cl.CommandQueue, buffer: cl.Buffer, flags: int,
           shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """The first ``shape`` floats of a device buffer as a host array, for the duration of the
    block (a blocking map: the queue's earlier commands have finished)."""
    array, _ = cl.enqueue_map_buffer(queue, buffer, flags, 0, shape, np.float32,
                                     is_blocking=True)
    try:
        yield array
    finally:
        array.base.release(queue)


class HostFFTCorrelation(Correlation):
    """Correlation with the host's FFT (FFTW through pyFFTW, else SciPy's pocketfft) on all
    cores, reading and writing the device buffers through maps."""

    method = "host_fft"

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary,
                 kernel_shape: tuple[int, int], out_shape: tuple[int, int],
                 workers: int | None = None, cache: PlanCache | None = None,
                 deferred: DeferredMeasurements | None = None) -> None:
        super().__init__(queue, kernel_shape, out_shape)
        self.transforms = plan_pair(self.src_shape, workers,
                                    cache if cache is not None else PlanCache(),
                                    deferred=deferred)
        if self.transforms.measurement is not None:
            self.provisional = (self.transforms.measurement,)
        self.fft_shape = self.transforms.shape
        self.workers = self.transforms.threads
        self._kernel_conjugate: np.ndarray | None = None
        self.view: cl.Buffer | None = None
        self.pitch = 0
        buffer = getattr(self.transforms, "buffer", None)
        if buffer is not None:
            self.view, self.pitch = _device_view(queue, buffer), buffer.shape[1]

    def _load(self, weights: np.ndarray) -> None:
        import scipy.fft

        spectrum = scipy.fft.rfft2(weights, s=self.fft_shape, workers=self.workers)
        # The backward transform is not normalised: 1 / size goes into the kernel's spectrum.
        spectrum = np.conj(spectrum) / self.transforms.size
        # Frequencies a smooth PSF leaves below 1e-30 of its peak would only make denormal
        # products (slow on x86) that change no output digit: zero them.
        spectrum[np.abs(spectrum) < 1e-30 * np.abs(spectrum).max()] = 0
        self._kernel_conjugate = spectrum.astype(np.complex64)

    def transform_in_place(self) -> None:
        """Correlate what the kernels wrote into :attr:`view` (the source at its origin, zero
        elsewhere, rows :attr:`pitch` floats apart); the output is left at its origin."""
        assert self.view is not None and self._kernel_conjugate is not None
        transforms = self.transforms
        rows, pitch = transforms.shape[0], self.pitch
        with mapped(self.queue, self.view, cl.map_flags.READ | cl.map_flags.WRITE,
                    (rows, pitch)):
            transforms.forward()
            transforms.multiply(self._kernel_conjugate)
            transforms.backward()

    def enqueue(self, src: cl.Buffer, dst: cl.Buffer) -> None:
        transforms = self.transforms
        assert self._kernel_conjugate is not None
        with mapped(self.queue, src, cl.map_flags.READ, self.src_shape) as source:
            transforms.load(source)
        transforms.forward()
        transforms.multiply(self._kernel_conjugate)
        transforms.backward()
        with mapped(self.queue, dst, cl.map_flags.WRITE_INVALIDATE_REGION,
                    self.out_shape) as out:
            transforms.unload(out)


def _device_view(queue: cl.CommandQueue, array: np.ndarray) -> cl.Buffer | None:
    """A device buffer on ``array``'s own memory (CL_MEM_USE_HOST_PTR), or None when the
    device maps it elsewhere. Mapped, such a buffer must show ``array`` itself (OpenCL 1.2,
    clEnqueueMapBuffer); PoCL's CPU device then works on it without a copy."""
    view = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE | cl.mem_flags.USE_HOST_PTR,
                     hostbuf=array)
    with mapped(queue, view, cl.map_flags.READ, (1, 1)) as first:
        same = first.__array_interface__["data"][0] == array.__array_interface__["data"][0]
    return view if same else None
