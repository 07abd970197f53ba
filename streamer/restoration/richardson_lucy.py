"""Richardson–Lucy deconvolution on an OpenCL device.

Notes
-----
Richardson (1972), Lucy (1974); eq. 3 of the brief::

    u_{t+1} = u_t · ( h' ⊛ ( w·C / (h ⊛ u_t) ) ) / ( h' ⊛ w )

with ``h`` the PSF (sum 1, centred), ``h'`` it flipped, ``C`` the non-negative data and ``w``
the pixel weights (1 valid, 0 for NaN/masked pixels: they leave the likelihood instead of
spreading). The estimate ``u`` lives on the *extended* domain — the frame plus the PSF radius
on every side — so light that the PSF carries across the frame edge has somewhere to come
from; dividing by ``h' ⊛ w`` keeps the update unbiased near edges and masked pixels
(Bertero & Boccacci 2005, A&A 437, 369). This is what removes the edge ringing and dark halos
of zero- or wrap-around boundaries. Ratios where the model is below ``TINY`` are 0 (no
division by zero); margin pixels that send less than ``NORM_FLOOR`` of their light onto valid
pixels are not estimated (0); the multiplicative update keeps ``u >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyopencl as cl

from streamer.restoration.convolution import Correlation, plan_correlation, source_buffer
from streamer.restoration.copy_block import BlockCopy
from streamer.errors import ParameterError
from streamer.restoration.kernels import KernelLibrary

TINY = 1e-12
NORM_FLOOR = 1e-6
_GROUP = 256  # must match GROUP in opencl/richardson_lucy.cl


def validate_iterations(num_iter: int, tolerance: float | None) -> None:
    """Raise ParameterError unless ``num_iter >= 1`` and ``tolerance`` is None or in (0, 1)."""
    if isinstance(num_iter, bool) or int(num_iter) != num_iter or num_iter < 1:
        raise ParameterError(f"iterations must be an integer >= 1, got {num_iter!r}")
    if tolerance is not None and not 0 < tolerance < 1:
        raise ParameterError(f"stopping tolerance must be in (0, 1), got {tolerance!r}")


@dataclass
class DeconvolutionReport:
    """What a run of Richardson–Lucy did."""

    iterations: int
    relative_change: float
    method: str
    method_timings: dict[str, float] = field(default_factory=dict)


def _grid(columns: int, rows: int) -> tuple[int, int]:
    return ((columns + 15) // 16 * 16, rows)


class RichardsonLucy:
    """Richardson–Lucy planned for one frame shape and PSF on one device.

    Parameters
    ----------
    queue : pyopencl.CommandQueue
    library : KernelLibrary
    shape : (int, int)
        Frame rows and columns.
    psf : ndarray
        Validated PSF (odd sides, sum 1; see :func:`streamer.imaging.psf.validate_psf`).
    method : str
        ``auto`` (fastest measured), ``dense``, ``sparse``, ``separable`` or ``fft``.
    """

    def __init__(
        self,
        queue: cl.CommandQueue,
        library: KernelLibrary,
        shape: tuple[int, int],
        psf: np.ndarray,
        method: str = "auto",
    ) -> None:
        self.queue = queue
        self.shape = (int(shape[0]), int(shape[1]))
        height, width = self.shape
        self.radius = (psf.shape[0] // 2, psf.shape[1] // 2)
        ry, rx = self.radius
        self.extended_shape = (height + 2 * ry, width + 2 * rx)
        self.ratio_shape = (height + 4 * ry, width + 4 * rx)
        program = library.program(
            "richardson_lucy", TINY=f"{TINY:e}f", NORM_FLOOR=f"{NORM_FLOOR:e}f"
        )
        self._ratio = cl.Kernel(program, "rl_ratio")
        self._copy = BlockCopy(queue, library)
        self._initial = cl.Kernel(program, "rl_initial_estimate")
        self._update = cl.Kernel(program, "rl_update")

        weights = np.asarray(psf, dtype=np.float64)
        # model = h ⊛ u on the frame: a valid correlation of u with the flipped PSF.
        self.forward: Correlation
        self.forward, self.method_timings = plan_correlation(
            queue, library, weights[::-1, ::-1], self.shape, method
        )
        # h' ⊛ ratio on the extended domain: a valid correlation with the PSF itself.
        self.backward, _ = plan_correlation(
            queue, library, weights, self.extended_shape, self.forward.method
        )
        self.method = self.forward.method

        context = queue.context
        flags = cl.mem_flags
        frame_bytes = height * width * 4
        extended_count = self.extended_shape[0] * self.extended_shape[1]
        self.data = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.weight = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.model = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.restored = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.ratio = source_buffer(context, *self.ratio_shape)
        cl.enqueue_fill_buffer(queue, self.ratio, np.float32(0), 0, self.ratio.size)
        self.estimate = source_buffer(context, *self.extended_shape)
        self.correction = cl.Buffer(context, flags.READ_WRITE, extended_count * 4)
        self.norm = cl.Buffer(context, flags.READ_WRITE, extended_count * 4)
        self._groups = (extended_count + _GROUP - 1) // _GROUP
        self._partial_change = np.empty(self._groups, dtype=np.float32)
        self._partial_total = np.empty(self._groups, dtype=np.float32)
        self._partial_change_buffer = cl.Buffer(context, flags.READ_WRITE, self._groups * 4)
        self._partial_total_buffer = cl.Buffer(context, flags.READ_WRITE, self._groups * 4)
        self._weights_signature: bytes | None = None
        self._valid: np.ndarray | None = None
        self.data_flux = 0.0  # sum of the valid data C of the last run (flux in)

    # -- per frame --------------------------------------------------------------------------
    def set_weights(self, weight: np.ndarray | None) -> None:
        """Upload the pixel weights (1 valid, 0 excluded) and compute ``h' ⊛ w``; skipped when
        they equal the previous frame's."""
        height, width = self.shape
        if weight is None:
            weight = np.ones(self.shape, dtype=np.float32)
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        signature = weight.tobytes() if not np.all(weight == 1) else b"all-valid"
        if signature == self._weights_signature:
            return
        self._valid = None if signature == b"all-valid" else weight > 0
        cl.enqueue_copy(self.queue, self.weight, weight)
        # The weights go where the ratio goes (2 radii in), for h' ⊛ w.
        ry, rx = self.radius
        self._copy(self.weight, width, self.ratio, self.ratio_shape[1], height, width,
                   dst_origin=(2 * ry, 2 * rx))
        self.backward.enqueue(self.ratio, self.norm)
        self._weights_signature = signature

    def set_data(self, data: np.ndarray) -> None:
        """Upload non-negative data ``C`` (excluded pixels may hold anything finite)."""
        cl.enqueue_copy(self.queue, self.data, np.ascontiguousarray(data, dtype=np.float32))

    def run(self, num_iter: int, tolerance: float | None = None) -> DeconvolutionReport:
        """Iterate on the data in ``self.data`` (weights already set); the result is left in
        ``self.restored`` (frame-sized) and ``self.estimate`` (extended)."""
        validate_iterations(num_iter, tolerance)
        height, width = self.shape
        ry, rx = self.radius
        mean = self._mean_valid_data()
        self._initial(
            self.queue, _grid(*self.extended_shape[::-1]), None, self.data, self.weight,
            self.estimate, np.int32(width), np.int32(height), np.int32(ry), np.int32(rx),
            np.float32(mean), np.float32(max(mean * 1e-3, TINY * 10)),
        )
        change = float("nan")
        done = 0
        for done in range(1, num_iter + 1):
            measure = tolerance is not None or done == num_iter
            self.forward.enqueue(self.estimate, self.model)
            self._ratio(
                self.queue, _grid(width, height), None, self.data, self.weight, self.model,
                self.ratio, np.int32(width), np.int32(height), np.int32(ry), np.int32(rx),
            )
            self.backward.enqueue(self.ratio, self.correction)
            count = self.extended_shape[0] * self.extended_shape[1]
            self._update(
                self.queue, (self._groups * _GROUP,), (_GROUP,), self.estimate,
                self.correction, self.norm, np.int32(count), np.int32(measure),
                self._partial_change_buffer, self._partial_total_buffer,
            )
            if measure:
                change = self._relative_change()
                if tolerance is not None and change < tolerance:
                    break
        self._copy(self.estimate, self.extended_shape[1], self.restored, width, height, width,
                   src_origin=(ry, rx))
        return DeconvolutionReport(done, change, self.method, dict(self.method_timings))

    def _relative_change(self) -> float:
        cl.enqueue_copy(self.queue, self._partial_change, self._partial_change_buffer)
        cl.enqueue_copy(self.queue, self._partial_total, self._partial_total_buffer)
        total = float(self._partial_total.astype(np.float64).sum())
        return float(self._partial_change.astype(np.float64).sum()) / total if total > 0 else 0.0

    def _mean_valid_data(self) -> float:
        # u0 needs a fill value and a floor scale; the host copy is cheap next to iterating.
        data = np.empty(self.shape, dtype=np.float32)
        cl.enqueue_copy(self.queue, data, self.data)
        values = data[self._valid] if self._valid is not None else data
        self.data_flux = float(values.sum(dtype=np.float64))
        return self.data_flux / max(values.size, 1)

    def download(self) -> np.ndarray:
        """The restored frame (rows×cols float32) from the last run."""
        out = np.empty(self.shape, dtype=np.float32)
        cl.enqueue_copy(self.queue, out, self.restored)
        return out

    def __call__(
        self,
        data: np.ndarray,
        num_iter: int = 30,
        weight: np.ndarray | None = None,
        tolerance: float | None = None,
    ) -> tuple[np.ndarray, DeconvolutionReport]:
        """Deconvolve host data; returns the restored frame and the report."""
        if data.shape != self.shape:
            raise ParameterError(f"this plan is for frames of shape {self.shape}, got {data.shape}")
        self.set_weights(weight)
        self.set_data(data)
        report = self.run(num_iter, tolerance)
        return self.download(), report

