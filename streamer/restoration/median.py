"""Exact median filter on an OpenCL device.

Equal, element for element, to ``scipy.ndimage.median_filter(image, size=window,
mode="reflect")`` for float32 and uint16 frames. Two methods, chosen by device type:

* ``histogram`` (CPUs): each work item slides its window down a column, at O(window) per
  pixel instead of a sort of window² values (``opencl/median.cl``);
* ``tiled`` (GPUs): each work-group stages its tile of the frame in local memory and every work
  item radix-selects its median there, two key bits per pass, with no per-item state
  (``opencl/median_tiled.cl``); for windows whose tile fits the device's local memory.

Everything a frame
needs before the filter — its keys, the reflect padding, the quantile bins — is made on the
device from the frame as uploaded, in its own type (``opencl/prepare.cl``,
``opencl/quantiles.cl``).
"""

from __future__ import annotations

import math

import numpy as np
import pyopencl as cl

from streamer.errors import ParameterError
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.device import check_deadline
from streamer.restoration.kernels import BUFFER, LOCAL, KernelDeclaration, KernelLibrary

NBINS = 16384
COARSE_SHIFT = 7
INVALID_KEY = 0xFFFFFFFF
MAX_WINDOW = 255
MAX_SAMPLE = 1 << 16           # keys sorted on the device to place the bin edges
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.uint16))
METHODS = ("histogram", "tiled")
TILE_SHAPES = ((16, 16), (16, 8), (8, 8))   # work-group (columns, rows), largest that fits
TILED_PIXELS_PER_LAUNCH = 1 << 22            # a deadline is checked between launches
INPUT_TYPES = {np.dtype(np.float32): "float", np.dtype(np.uint16): "ushort",
               np.dtype(np.int16): "short", np.dtype(np.uint8): "uchar",
               np.dtype(np.int32): "int", np.dtype(np.uint32): "uint"}

PREPARE_FRAME = KernelDeclaration(
    "prepare", "prepare_frame", raw=BUFFER, mask=BUFFER, has_mask=np.int32,
    exclude_nonfinite=np.int32, keys=BUFFER, image=BUFFER, weight=BUFFER,
    write_image=np.int32, width=np.int32, height=np.int32, radius=np.int32)
SAMPLE_KEYS = KernelDeclaration(
    "quantiles", "sample_keys", keys=BUFFER, width=np.int32, height=np.int32,
    radius=np.int32, samples=np.int32, sampled=np.int32, sample=BUFFER)
BITONIC_STEP = KernelDeclaration("quantiles", "bitonic_step", data=BUFFER, j=np.int32,
                                 k=np.int32)
QUANTILE_EDGES = KernelDeclaration(
    "quantiles", "quantile_edges", sorted=BUFFER, samples=np.int32, bin_low=BUFFER,
    bin_high=BUFFER, fill=BUFFER)
ASSIGN_BINS = KernelDeclaration(
    "median", "assign_bins", keys=BUFFER, bin_low=BUFFER, fill=BUFFER, bins=BUFFER,
    count=np.uint32)
# The histogram method's window state, per work item: the names of median_columns' buffers.
WINDOW_STATE = ("hist", "coarse", "head", "slot_key", "slot_bin", "slot_next", "slot_prev")
MEDIAN_COLUMNS = KernelDeclaration(
    "median", "median_columns", keys=BUFFER, bins=BUFFER, bin_low=BUFFER, bin_high=BUFFER,
    out=BUFFER, **dict.fromkeys(WINDOW_STATE, BUFFER), width=np.int32, height=np.int32,
    padded_width=np.int32, column_offset=np.int32, strip_height=np.int32)
MEDIAN_TILED = KernelDeclaration(
    "median_tiled", "median_tiled", keys=BUFFER, out=BUFFER, width=np.int32,
    height=np.int32, padded_width=np.int32, row_offset=np.int32, tile=LOCAL)


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
    """Order-preserving uint32 keys (the host form of ``prepare.cl``'s, for tests)."""
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


def tile_shape(device: cl.Device, window: int) -> tuple[int, int] | None:
    """The largest work-group tile (columns, rows) whose padded block of keys fits the
    device's local memory and work-group size for ``window``, or None."""
    for columns, rows in TILE_SHAPES:
        staged = (columns + window - 1) * (rows + window - 1) * 4
        if staged <= device.local_mem_size and columns * rows <= device.max_work_group_size:
            return columns, rows
    return None


def default_method(device: cl.Device, window: int) -> str:
    """``tiled`` on a GPU whose local memory holds the window's tile, else ``histogram``."""
    if device.type & cl.device_type.GPU and tile_shape(device, window) is not None:
        return "tiled"
    return "histogram"


def input_type(dtype: np.dtype) -> str:
    """The OpenCL type a frame of ``dtype`` is uploaded as (raise ParameterError if none)."""
    try:
        return INPUT_TYPES[np.dtype(dtype).newbyteorder("=")]
    except KeyError:
        raise ParameterError(
            f"frames of dtype {np.dtype(dtype)} are not uploaded as they are; convert to "
            f"one of {sorted(str(d) for d in INPUT_TYPES)}") from None


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
        ``float32`` or ``uint16``: the values the median is taken of (a uint16 frame is
        filtered as integers, anything else as float32).
    input_dtype : numpy dtype, optional
        The type frames arrive in (default ``dtype``); any of :data:`INPUT_TYPES`.
    memory_budget_bytes : int, optional
        Device memory the per-column window state may use; columns are processed in batches
        to stay under it. Default: a quarter of the device memory, at most 1 GiB.
    strips : int, optional
        Horizontal strips each column is cut into (more parallel work for GPUs); default
        chosen from the device type.
    interleaved : bool, optional
        Window state laid out entry by entry across work items (coalesced on GPUs) rather
        than item by item (cache-friendly on CPUs); default from the device type.
    method : {"histogram", "tiled"}, optional
        The algorithm (see the module's docstring); default from the device type
        (:func:`default_method`). ``tiled`` raises ParameterError when the window's tile does
        not fit the device's local memory.
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
        input_dtype: np.dtype | type | None = None,
        interleaved: bool | None = None,
        method: str | None = None,
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
        self.input_dtype = np.dtype(input_dtype or self.dtype)
        self.queue = queue
        self.shape = (int(shape[0]), int(shape[1]))
        self.radius = self.window // 2
        self.padded_shape = (self.shape[0] + 2 * self.radius, self.shape[1] + 2 * self.radius)
        device = queue.device
        self.method = method or default_method(device, self.window)
        if self.method not in METHODS:
            raise ParameterError(f"median method must be one of {METHODS}, got {method!r}")
        self.tile = tile_shape(device, self.window)
        if self.method == "tiled" and self.tile is None:
            raise ParameterError(
                f"a {self.window}x{self.window} median tile does not fit this device's "
                f"{device.local_mem_size} bytes of local memory; use method='histogram'")
        self.interleaved = (bool(device.type & cl.device_type.GPU) if interleaved is None
                            else interleaved)
        self._build_kernels(library)
        self._plan_work(device, memory_budget_bytes, strips)
        self._allocate(queue.context, library)

    def _build_kernels(self, library: KernelLibrary) -> None:
        key_is_float = int(self.dtype == np.float32)
        invalid_key = f"{INVALID_KEY}u"
        self._prepare = library.kernel(PREPARE_FRAME, INPUT_TYPE=input_type(self.input_dtype),
                                       KEY_IS_FLOAT=key_is_float, INVALID_KEY=invalid_key)
        quantiles = {"NBINS": NBINS, "INVALID_KEY": invalid_key}
        self._sample = library.kernel(SAMPLE_KEYS, **quantiles)
        self._bitonic = library.kernel(BITONIC_STEP, **quantiles)
        self._edges = library.kernel(QUANTILE_EDGES, **quantiles)
        median = {"WINDOW": self.window, "NBINS": NBINS, "COARSE_SHIFT": COARSE_SHIFT,
                  "INVALID_KEY": invalid_key, "INTERLEAVED": int(self.interleaved)}
        self._assign_bins = library.kernel(ASSIGN_BINS, **median)
        self._median_columns = library.kernel(MEDIAN_COLUMNS, **median)
        if self.method == "tiled":
            assert self.tile is not None
            self._median_tiled = library.kernel(
                MEDIAN_TILED, WINDOW=self.window, TILE_X=self.tile[0], TILE_Y=self.tile[1],
                KEY_BITS=16 if key_is_float == 0 else 32)

    def _plan_work(
        self, device: cl.Device, memory_budget_bytes: int | None, strips: int | None
    ) -> None:
        height, width = self.shape
        if self.method == "tiled":
            assert self.tile is not None
            self.strips, self.strip_height, self.columns_per_launch = 1, height, 0
            rows = max(1, TILED_PIXELS_PER_LAUNCH // width) // self.tile[1] * self.tile[1]
            self.rows_per_launch = max(self.tile[1], rows)
            return
        kcount = self.window * self.window
        per_item = NBINS * 4 + (NBINS >> COARSE_SHIFT) * 2 + kcount * 10
        wanted_items = device.max_compute_units * (256 if self.interleaved else 8)
        # Each strip re-reads a window of rows, so strips are never shorter than the window.
        max_strips = max(1, math.ceil(height / max(self.window, 32)))
        self.strips = min(max_strips, strips or max(1, math.ceil(wanted_items / width)))
        self.strip_height = math.ceil(height / self.strips)
        self.strips = math.ceil(height / self.strip_height)
        budget = memory_budget_bytes or min(device.global_mem_size // 4, 1 << 30)
        budget = min(budget, device.max_mem_alloc_size // 4 * 10 // NBINS * per_item)
        columns = max(1, budget // (per_item * self.strips))
        # Batches short enough for a deadline to be checked between them on a CPU.
        columns = min(columns, max(64, device.max_compute_units * 256))
        self.columns_per_launch = min(width, columns)

    def _allocate(self, context: cl.Context, library: KernelLibrary) -> None:
        flags = cl.mem_flags
        height, width = self.shape
        padded_count = self.padded_shape[0] * self.padded_shape[1]
        self.samples = min(MAX_SAMPLE, 1 << max(0, math.ceil(math.log2(height * width))))
        self.sampled = min(self.samples, height * width)
        self.input_buffer = cl.Buffer(context, flags.READ_ONLY,
                                      height * width * self.input_dtype.itemsize)
        self.keys_buffer = cl.Buffer(context, flags.READ_WRITE, padded_count * 4)
        self.bins_buffer = cl.Buffer(context, flags.READ_WRITE, padded_count * 2)
        self.sample_buffer = cl.Buffer(context, flags.READ_WRITE, self.samples * 4)
        self.bin_low_buffer = cl.Buffer(context, flags.READ_WRITE, NBINS * 4)
        self.bin_high_buffer = cl.Buffer(context, flags.READ_WRITE, NBINS * 4)
        self.fill_buffer = cl.Buffer(context, flags.READ_WRITE, 4)
        self.output_buffer = cl.Buffer(context, flags.READ_WRITE, height * width * 4)
        self._unused = cl.Buffer(context, flags.READ_WRITE, 4)  # for absent optional inputs
        fill = BlockCopy(self.queue, library)
        fill.fill(self._unused, 0.0)
        self._scratch: dict[str, cl.Buffer] = {}
        if self.method == "tiled":
            return  # no window state outside local memory
        items = self.columns_per_launch * self.strips
        kcount = self.window * self.window
        sizes = [items * NBINS * 2, items * (NBINS >> COARSE_SHIFT) * 2, items * NBINS * 2,
                 items * kcount * 4, items * kcount * 2, items * kcount * 2, items * kcount * 2]
        self._scratch = {name: cl.Buffer(context, flags.READ_WRITE, (size + 3) // 4 * 4)
                         for name, size in zip(WINDOW_STATE, sizes)}
        # The kernel initialises every entry it reads; zeroing the state once per plan as well
        # costs little and keeps memory checkers (Oclgrind) from flagging a reused allocation.
        for buffer in self._scratch.values():
            fill.fill(buffer, 0.0)

    def prepare(self, raw: cl.Buffer, mask: cl.Buffer | None = None,
                image: cl.Buffer | None = None, weight: cl.Buffer | None = None,
                exclude_nonfinite: bool = False) -> None:
        """Enqueue the keys (padded), bins and quantile edges of the frame in ``raw`` (its
        ``input_dtype``, on the device). With ``image``/``weight``, also write the frame as
        float32 and its pixel weights; ``exclude_nonfinite`` excludes inf and ``mask``ed
        pixels too (NaN always is): they take the frame's median in the filter."""
        height, width = self.shape
        padded_height, padded_width = self.padded_shape
        queue = self.queue
        self._prepare(queue, ((padded_width + 15) // 16 * 16, padded_height), None, raw=raw,
                      mask=mask or self._unused, has_mask=int(mask is not None),
                      exclude_nonfinite=int(exclude_nonfinite), keys=self.keys_buffer,
                      image=image or self._unused, weight=weight or self._unused,
                      write_image=int(image is not None), width=width, height=height,
                      radius=self.radius)
        self._sample(queue, (self.samples,), None, keys=self.keys_buffer, width=width,
                     height=height, radius=self.radius, samples=self.samples,
                     sampled=self.sampled, sample=self.sample_buffer)
        k = 2
        while k <= self.samples:
            j = k // 2
            while j > 0:
                self._bitonic(queue, (self.samples,), None, self.sample_buffer, j, k)
                j //= 2
            k *= 2
        self._edges(queue, (NBINS,), None, sorted=self.sample_buffer, samples=self.samples,
                    bin_low=self.bin_low_buffer, bin_high=self.bin_high_buffer,
                    fill=self.fill_buffer)
        count = padded_height * padded_width
        self._assign_bins(queue, (count,), None, keys=self.keys_buffer,
                          bin_low=self.bin_low_buffer, fill=self.fill_buffer,
                          bins=self.bins_buffer, count=count)

    def upload(self, image: np.ndarray) -> None:
        """Send a frame (its ``input_dtype``) to the device and prepare it."""
        if image.shape != self.shape or image.dtype != self.input_dtype:
            raise ParameterError(
                f"this median plan is for {self.input_dtype} frames of shape {self.shape}, "
                f"got {image.dtype} {image.shape}"
            )
        cl.enqueue_copy(self.queue, self.input_buffer, np.ascontiguousarray(image))
        self.prepare(self.input_buffer)

    def run(self, deadline: float | None = None) -> cl.Buffer:
        """Filter the prepared frame; return the device buffer of median keys (rows×cols).
        With a ``deadline`` (``time.monotonic()``), each column batch waits for the previous
        and the filter stops with FrameDeadlineError once it has passed."""
        if self.method == "tiled":
            return self._run_tiled(deadline)
        height, width = self.shape
        for offset in range(0, width, self.columns_per_launch):
            check_deadline(self.queue, deadline,
                           f"median {self.window}x{self.window} of a {height}x{width} frame "
                           f"({offset} of {width} columns)")
            columns = min(self.columns_per_launch, width - offset)
            self._median_columns(
                self.queue, (columns, self.strips), None, keys=self.keys_buffer,
                bins=self.bins_buffer, bin_low=self.bin_low_buffer,
                bin_high=self.bin_high_buffer, out=self.output_buffer, **self._scratch,
                width=width, height=height, padded_width=self.padded_shape[1],
                column_offset=offset, strip_height=self.strip_height)
        return self.output_buffer

    def _run_tiled(self, deadline: float | None) -> cl.Buffer:
        assert self.tile is not None
        height, width = self.shape
        columns, rows = self.tile
        staged = cl.LocalMemory((columns + self.window - 1) * (rows + self.window - 1) * 4)
        for offset in range(0, height, self.rows_per_launch):
            check_deadline(self.queue, deadline,
                           f"median {self.window}x{self.window} of a {height}x{width} frame "
                           f"({offset} of {height} rows)")
            band = min(self.rows_per_launch, height - offset)
            self._median_tiled(
                self.queue, (-(-width // columns) * columns, -(-band // rows) * rows),
                (columns, rows), keys=self.keys_buffer, out=self.output_buffer, width=width,
                height=height, padded_width=self.padded_shape[1], row_offset=offset,
                tile=staged)
        return self.output_buffer

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Median-filter ``image``; returns an array of the same shape and dtype."""
        self.upload(image)
        self.run()
        keys = np.empty(self.shape, dtype=np.uint32)
        cl.enqueue_copy(self.queue, keys, self.output_buffer)
        return from_keys(keys, self.dtype)
