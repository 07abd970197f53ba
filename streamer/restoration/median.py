"""Exact median filter on an OpenCL device.

Equal, element for element, to ``scipy.ndimage.median_filter(image, size=window,
mode="reflect")`` for float32 and uint16 frames, with a cost of O(window) per pixel instead
of a sort of window² values (see ``opencl/median.cl`` for the algorithm).
"""

from __future__ import annotations

import math

import numpy as np
import pyopencl as cl

from streamer.errors import ParameterError
from streamer.restoration.kernels import KernelLibrary

NBINS = 16384
COARSE_SHIFT = 7  # must match opencl/median.cl
MAX_WINDOW = 255
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.uint16))
_SAMPLE_LIMIT = 1 << 20


def validate_window(window: int) -> int:
    """Return ``window`` if it is an odd integer from 3 to 255, else raise ParameterError."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise ParameterError(f"median window must be an odd integer, got {window!r}")
    if window < 3 or window > MAX_WINDOW or window % 2 == 0:
        raise ParameterError(
            f"median window must be odd and between 3 and {MAX_WINDOW}, got {window}"
        )
    return int(window)


def to_keys(image: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys: comparing keys compares the pixel values."""
    if image.dtype == np.uint16:
        return image.astype(np.uint32)
    bits = np.ascontiguousarray(image, dtype=np.float32).view(np.uint32)
    # Negative floats: flip every bit (reverses their order); positive: set the sign bit.
    return np.where(bits >> 31 != 0, ~bits, bits | np.uint32(0x80000000))


def from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`to_keys`."""
    if np.dtype(dtype) == np.uint16:
        return keys.astype(np.uint16)
    bits = np.where(keys >> 31 != 0, keys & np.uint32(0x7FFFFFFF), ~keys)
    return bits.astype(np.uint32).view(np.float32)


def _quantile_bins(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges at the quantiles of a sample of the frame, so every bin holds few pixels of
    any window. Any monotone binning gives the exact median; this one keeps it fast."""
    flat = keys.ravel()
    step = max(1, flat.size // _SAMPLE_LIMIT)
    sample = np.sort(flat[::step])
    positions = (np.arange(NBINS, dtype=np.int64) * sample.size) // NBINS
    low = sample[positions].astype(np.int64)
    low[0] = 0
    high = np.empty_like(low)
    high[:-1] = low[1:] - 1
    high[-1] = 0xFFFFFFFF
    # Empty bins (equal edges) are never the median bin; keep their bounds well formed.
    high = np.maximum(high, low)
    return low.astype(np.uint32), high.astype(np.uint32)


class MedianFilter:
    """An exact median filter planned for one frame shape, window and dtype on one device.

    Compiles the kernels once and keeps the device buffers, so repeated frames of the same
    shape pay neither compilation nor allocation.

    Parameters
    ----------
    queue : pyopencl.CommandQueue
        The queue (and so the context and device) to run on.
    library : KernelLibrary
        The program cache of that context.
    shape : (int, int)
        Frame shape (rows, columns); any size, also smaller than the window.
    window : int
        Odd window side, 3 to 255.
    dtype : numpy dtype
        ``float32`` or ``uint16``.
    memory_budget_bytes : int, optional
        Device memory the per-column window state may use; columns are processed in batches
        to stay under it. Default: a quarter of the device memory, at most 1 GiB.
    strips : int, optional
        Horizontal strips each column is cut into (more parallel work for GPUs); default
        chosen from the device type.
    """

    def __init__(
        self,
        queue: cl.CommandQueue,
        library: KernelLibrary,
        shape: tuple[int, int],
        window: int,
        dtype: np.dtype | type = np.float32,
        memory_budget_bytes: int | None = None,
        strips: int | None = None,
    ) -> None:
        self.window = validate_window(window)
        self.dtype = np.dtype(dtype)
        if self.dtype not in SUPPORTED_DTYPES:
            raise ParameterError(
                f"median filter supports float32 and uint16 frames, got {self.dtype}; "
                "convert the frame first"
            )
        if len(shape) != 2 or min(shape) < 1:
            raise ParameterError(f"median filter needs a non-empty 2-D shape, got {shape}")
        self.queue = queue
        self.shape = (int(shape[0]), int(shape[1]))
        self.radius = self.window // 2
        height, width = self.shape
        self.padded_shape = (height + 2 * self.radius, width + 2 * self.radius)
        context = queue.context
        device = queue.device
        program = library.program("median", WINDOW=self.window, NBINS=NBINS)
        self._assign_bins = cl.Kernel(program, "assign_bins")
        self._median_columns = cl.Kernel(program, "median_columns")

        self._plan_work(device, memory_budget_bytes, strips)
        flags = cl.mem_flags
        padded_count = self.padded_shape[0] * self.padded_shape[1]
        self.keys_buffer = cl.Buffer(context, flags.READ_ONLY, padded_count * 4)
        self.bins_buffer = cl.Buffer(context, flags.READ_WRITE, padded_count * 2)
        self.bin_low_buffer = cl.Buffer(context, flags.READ_ONLY, NBINS * 4)
        self.bin_high_buffer = cl.Buffer(context, flags.READ_ONLY, NBINS * 4)
        self.output_buffer = cl.Buffer(context, flags.READ_WRITE, height * width * 4)
        items = self.columns_per_launch * self.strips
        kcount = self.window * self.window
        self._scratch = [
            cl.Buffer(context, flags.READ_WRITE, items * NBINS * 2),  # hist
            cl.Buffer(context, flags.READ_WRITE, items * (NBINS >> COARSE_SHIFT) * 2),
            cl.Buffer(context, flags.READ_WRITE, items * NBINS * 2),  # list heads
            cl.Buffer(context, flags.READ_WRITE, items * kcount * 4),  # slot keys
            cl.Buffer(context, flags.READ_WRITE, items * kcount * 2),  # slot bins
            cl.Buffer(context, flags.READ_WRITE, items * kcount * 2),  # next
            cl.Buffer(context, flags.READ_WRITE, items * kcount * 2),  # prev
        ]

    def _plan_work(
        self, device: cl.Device, memory_budget_bytes: int | None, strips: int | None
    ) -> None:
        height, width = self.shape
        kcount = self.window * self.window
        per_item = NBINS * 4 + (NBINS >> COARSE_SHIFT) * 2 + kcount * 10
        is_gpu = bool(device.type & cl.device_type.GPU)
        wanted_items = device.max_compute_units * (256 if is_gpu else 8)
        # Each strip re-reads a window of rows, so strips are never shorter than the window.
        max_strips = max(1, math.ceil(height / max(self.window, 32)))
        self.strips = min(max_strips, strips or max(1, math.ceil(wanted_items / width)))
        self.strip_height = math.ceil(height / self.strips)
        self.strips = math.ceil(height / self.strip_height)
        budget = memory_budget_bytes or min(device.global_mem_size // 4, 1 << 30)
        budget = min(budget, device.max_mem_alloc_size // 4 * 10 // NBINS * per_item)
        columns = max(1, budget // (per_item * self.strips))
        self.columns_per_launch = min(width, columns)

    def upload(self, image: np.ndarray) -> None:
        """Send a frame's padded keys and its bins to the device (host work: keys, padding,
        a quantile sample)."""
        if image.shape != self.shape or image.dtype != self.dtype:
            raise ParameterError(
                f"this median plan is for {self.dtype} frames of shape {self.shape}, "
                f"got {image.dtype} {image.shape}"
            )
        keys = to_keys(image)
        bin_low, bin_high = _quantile_bins(keys)
        # numpy's "symmetric" padding is SciPy's "reflect" (d c b a | a b c d | d c b a),
        # repeated for windows larger than the frame.
        padded = np.pad(keys, self.radius, mode="symmetric")
        queue = self.queue
        cl.enqueue_copy(queue, self.keys_buffer, np.ascontiguousarray(padded))
        cl.enqueue_copy(queue, self.bin_low_buffer, bin_low)
        cl.enqueue_copy(queue, self.bin_high_buffer, bin_high)
        count = padded.size
        self._assign_bins(
            queue, (count,), None, self.keys_buffer, self.bin_low_buffer, self.bins_buffer,
            np.uint32(count),
        )

    def run(self) -> cl.Buffer:
        """Filter the uploaded frame; return the device buffer of median keys (rows×cols)."""
        height, width = self.shape
        for offset in range(0, width, self.columns_per_launch):
            columns = min(self.columns_per_launch, width - offset)
            self._median_columns(
                self.queue, (columns, self.strips), None,
                self.keys_buffer, self.bins_buffer, self.bin_low_buffer, self.bin_high_buffer,
                self.output_buffer, *self._scratch,
                np.int32(width), np.int32(height), np.int32(self.padded_shape[1]),
                np.int32(offset), np.int32(self.strip_height),
            )
        return self.output_buffer

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Median-filter ``image``; returns an array of the same shape and dtype."""
        self.upload(image)
        self.run()
        keys = np.empty(self.shape, dtype=np.uint32)
        cl.enqueue_copy(self.queue, keys, self.output_buffer)
        return from_keys(keys, self.dtype)
