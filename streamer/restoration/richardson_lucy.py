"""Richardson–Lucy deconvolution on an OpenCL device, damped where the data are explained.

Notes
-----
Richardson (1972), Lucy (1974); eq. 3 of the brief::

    u_{t+1} = u_t · ( h' ⊛ ( w · r_t ) ) / ( h' ⊛ w ),   r_t = C / (h ⊛ u_t + b)

with ``h`` the PSF (sum 1, centred), ``h'`` it flipped, ``C`` the non-negative data and ``w``
the pixel weights (1 valid, 0 for NaN/masked pixels: they leave the likelihood instead of
spreading). The estimate ``u`` lives on the *extended* domain — the frame plus the PSF radius
on every side — so light that the PSF carries across the frame edge has somewhere to come
from; dividing by ``h' ⊛ w`` keeps the update unbiased near edges and masked pixels
(Bertero & Boccacci 2005, A&A 437, 369). This is what removes the edge ringing and dark halos
of zero- or wrap-around boundaries.

**Damping** (White 1994, in *The Restoration of HST Images and Spectra II*, 104; the STSDAS
``lucy`` task): with a noise model, the ratio becomes ``r = 1 + f(U) (C − M) / M``, where
``U = (C − M)² / (T² var)`` and ``f(U) = U^(N−1) (N − (N−1) U)`` below 1, else 1. Where the
model fits within ``T`` sigma the update stops, so noise is not fitted and no dark moats are
dug around bright stars; elsewhere it is plain RL. ``T = 0`` is plain RL.

**The sky as a known background** (as in STSDAS ``lucy``): the model is ``h ⊛ u + b`` with
``b`` the sky level of ``C`` less a small pedestal (``pedestal`` sigmas of the noise), so the
estimate holds the sources and that pedestal; being non-negative, it cannot dip deeper below
the sky than the pedestal. This is what keeps dark moats from forming around bright stars,
where plain RL leaves the profile several sigma below the sky. The pedestal keeps sky noise
below the sky representable. The output is ``u + b``, levelled by a constant so that its sum
over the valid pixels is the data's: RL's positivity leaves the sky slightly high where the
noise dips below it, and the constant takes that out without touching the sources. With no noise model
(plain use) ``b`` is the given sky, 0 by default: eq. 3 as written.

**Stopping** (the discrepancy principle, Morozov 1966): iterations stop once the model explains
the pixels that hold signal (model above sky + 3σ) to within their noise, reduced
``χ² ≤ 1``; or at the iteration limit; or, when asked, once the relative change of an iteration
falls below a tolerance.

Ratios where the model is below ``TINY`` are 0 (no division by zero); margin pixels that send
less than ``NORM_FLOOR`` of their light onto valid pixels are not estimated (0); the
multiplicative update keeps ``u >= 0``. Sums for the initial estimate and the stopping rules are
reduced on the device: a run reads back a handful of floats, never a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyopencl as cl

from streamer.errors import ParameterError
from streamer.imaging.noise import NoiseModel
from streamer.imaging.psf import validate_psf
from streamer.restoration.convolution import Correlation, source_buffer
from streamer.restoration.copy_block import BlockCopy
from streamer.restoration.copying_iterations import CopyingIterations
from streamer.restoration.correlation_plan import build_correlation, plan_correlation
from streamer.restoration.deferred_measurements import DeferredMeasurements
from streamer.restoration.device import check_deadline
from streamer.restoration.in_place_iterations import InPlaceIterations, IterationArrays
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.plan_cache import PlanCache
from streamer.restoration.reduction import Reduction, reduction_items
from streamer.restoration.rl_acceleration import Acceleration
from streamer.restoration.rl_outputs import Output, OutputWriter, kernel_reach
from streamer.restoration.rl_start import RunStart
from streamer.restoration.rl_stopping import StoppingRule, measured
from streamer.restoration.richardson_lucy_kernels import (
    SIGNAL_SIGMAS, STAT,
)
from streamer.restoration.transfers import TransferMeter


def validate_iterations(num_iter: int, tolerance: float | None) -> None:
    """Raise ParameterError unless ``num_iter >= 1`` and ``tolerance`` is None or in (0, 1)."""
    if isinstance(num_iter, bool) or int(num_iter) != num_iter or num_iter < 1:
        raise ParameterError(f"iterations must be an integer >= 1, got {num_iter!r}")
    if tolerance is not None and not 0 < tolerance < 1:
        raise ParameterError(f"stopping tolerance must be in (0, 1), got {tolerance!r}")


def validate_damping(damping: float) -> float:
    """Return ``damping`` (the threshold T in sigmas) if it is finite and >= 0."""
    if not np.isfinite(damping) or damping < 0:
        raise ParameterError(f"damping threshold must be >= 0 sigmas (0: off), got {damping!r}")
    return float(damping)


@dataclass
class DeconvolutionReport:
    """What a run of Richardson–Lucy did."""

    iterations: int
    relative_change: float
    method: str
    method_timings: dict[str, float] = field(default_factory=dict)
    chi2: float | None = None          # reduced chi² of the signal pixels, last iteration
    stopped_by: str = "iterations"     # iterations | tolerance | discrepancy | plateau
    damping: float = 0.0
    chi2_history: list[float] = field(default_factory=list)  # each measured iteration's
    # The restored frame's sum over its valid pixels, folded on the device: np.nansum of the
    # download to float32 accumulation (NumPy's took 0.05 s a 4096² frame on the host); not
    # finite if a valid pixel's output is not (which the metrics then show).
    flux: float = float("nan")


class RichardsonLucy:
    """Richardson–Lucy planned for one frame shape and PSF shape on one device.

    Parameters
    ----------
    queue : pyopencl.CommandQueue
    library : KernelLibrary
    shape : (int, int)
        Frame rows and columns.
    psf : ndarray
        The PSF: odd sides, finite, non-negative, centred (checked here, PSFError otherwise,
        see :func:`streamer.imaging.psf.validate_psf`); normalised to sum 1. The plan is made
        for its shape; :meth:`set_psf` loads another of the same shape.
    method : str
        ``auto`` (fastest measured), ``dense``, ``sparse``, ``separable``, ``fft`` or
        ``host_fft``.
    cache : PlanCache, optional
        Where ``auto`` finds and keeps its measured choices.
    deferred : DeferredMeasurements, optional
        Where ``auto`` queues a measurement it puts off (the estimate's method meanwhile).
    """

    def __init__(self, queue: cl.CommandQueue, library: KernelLibrary, shape: tuple[int, int],
                 psf: np.ndarray, method: str = "auto", cache: PlanCache | None = None,
                 deferred: DeferredMeasurements | None = None) -> None:
        psf = validate_psf(psf)  # odd, finite, non-negative, centred; normalised to sum 1
        self.queue = queue
        self.library = library
        self.shape = (int(shape[0]), int(shape[1]))
        height, width = self.shape
        self.psf_shape = tuple(psf.shape)
        self.radius = (psf.shape[0] // 2, psf.shape[1] // 2)
        ry, rx = self.radius
        self.extended_shape = (height + 2 * ry, width + 2 * rx)
        self._copy = BlockCopy(queue, library)
        self._reduce = Reduction(queue, library)

        weights = np.asarray(psf, dtype=np.float64)
        # model = h ⊛ u on the frame: a valid correlation of u with the flipped PSF.
        self.forward: Correlation
        self.forward, self.method_timings = plan_correlation(
            queue, library, weights[::-1, ::-1], self.shape, method, cache, deferred)
        # h' ⊛ ratio on the extended domain: a valid correlation with the PSF itself.
        self.backward = build_correlation(self.forward.method, queue, library, weights,
                                          self.extended_shape, cache, deferred)
        self.method = self.forward.method
        self.psf = weights
        self._allocate()
        arrays = IterationArrays(self.data, self.weight, self.estimate, self.norm,
                                 self.statistics, self.shape, self.radius)
        # Its ratio buffer also carries the weights for h' ⊛ w, whichever iteration runs.
        self._copying = CopyingIterations(queue, library, self.forward, self.backward, arrays)
        # host_fft on a CPU: the kernels work on the transforms' own buffers, no copies.
        self._in_place = (InPlaceIterations(queue, library, self.forward, self.backward, arrays)
                          if InPlaceIterations.available(self.forward, self.backward) else None)
        self._writer = OutputWriter(queue, library, arrays, self.restored, self._partial_a,
                                    self._items)
        self._start = RunStart(queue, library, arrays, self._items, self._partial_a,
                               self._partial_b)

    def _allocate(self) -> None:
        context, queue = self.queue.context, self.queue
        flags = cl.mem_flags
        frame_bytes = self.shape[0] * self.shape[1] * 4
        extended_count = self.extended_shape[0] * self.extended_shape[1]
        self.data = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.weight = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.restored = cl.Buffer(context, flags.READ_WRITE, frame_bytes)
        self.estimate = source_buffer(context, *self.extended_shape)
        self._copy.fill(self.estimate, 0.0)
        self.norm = cl.Buffer(context, flags.READ_WRITE, extended_count * 4)
        self.statistics = cl.Buffer(context, flags.READ_WRITE, len(STAT) * 4)
        self._copy.fill(self.statistics, 0.0)
        self._items = reduction_items(queue.device, self.shape[0] * self.shape[1])
        self._partial_a = cl.Buffer(context, flags.READ_WRITE, self._items * 4)
        self._partial_b = cl.Buffer(context, flags.READ_WRITE, self._items * 4)
        self._norm_for: tuple[int, bool] | None = None   # (PSF version, all pixels valid)
        self._psf_version = 0
        self.meter = TransferMeter(queue)
        self._pedestal = 0.0
        self._acceleration: Acceleration | None = None
        self.data_flux = 0.0  # sum of the valid data C of the last run (flux in)

    # -- per frame --------------------------------------------------------------------------
    def accepts(self, psf: np.ndarray) -> bool:
        """Whether :meth:`set_psf` can load ``psf`` into this plan."""
        weights = np.asarray(psf, dtype=np.float64)
        return (tuple(weights.shape) == self.psf_shape
                and self.forward.accepts(weights[::-1, ::-1]) and self.backward.accepts(weights))

    def set_psf(self, psf: np.ndarray) -> None:
        """Load another PSF of the planned shape (the next :meth:`run` deconvolves with it)."""
        weights = validate_psf(psf)
        if not self.accepts(weights):
            raise ParameterError(
                f"this Richardson-Lucy plan ({self.method}) takes {self.psf_shape} PSFs of "
                f"its kind, not a {weights.shape} one; plan anew")
        if np.array_equal(weights, self.psf):
            return
        self.forward.set_weights(weights[::-1, ::-1])
        self.backward.set_weights(weights)
        self.psf = weights
        self._psf_version += 1  # h' ⊛ w depends on the PSF

    def set_weights(self, weight: np.ndarray | None) -> None:
        """Upload host pixel weights (1 valid, 0 excluded; None: all valid) and compute
        ``h' ⊛ w``. The restorer's device path writes the weights on the device instead and
        calls :meth:`update_norm`."""
        if weight is None:
            weight = np.ones(self.shape, dtype=np.float32)
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.meter.upload(self.weight, weight)
        self._norm_for = None
        self.update_norm(bool(np.all(weight > 0)))

    def update_norm(self, all_valid: bool) -> None:
        """Compute ``h' ⊛ w`` from the weights in ``self.weight`` — unless every pixel is
        valid and it was computed for all-valid weights and this PSF already."""
        key = (self._psf_version, True)
        if all_valid and self._norm_for == key:
            return
        self.compute_norm()
        self._norm_for = key if all_valid else None

    def count_valid(self) -> tuple[int, float]:
        """The number of valid pixels and the sum of the valid data (one small read)."""
        self._start.data_sums()
        values = self._read_statistics()
        return int(round(values[STAT["DATA_COUNT"]])), float(values[STAT["DATA_SUM"]])

    def compute_norm(self) -> None:
        """``h' ⊛ w`` from the weights already in ``self.weight``."""
        height, width = self.shape
        ry, rx = self.radius
        # The weights go where the ratio goes (2 radii in), for h' ⊛ w.
        ratio, ratio_width = self._copying.ratio, self._copying.ratio_shape[1]
        self._copy(self.weight, width, ratio, ratio_width, height, width,
                   dst_origin=(2 * ry, 2 * rx))
        self.backward.enqueue(ratio, self.norm)

    def set_data(self, data: np.ndarray) -> None:
        """Upload non-negative data ``C`` (excluded pixels may hold anything finite)."""
        self.meter.upload(self.data, np.ascontiguousarray(data, dtype=np.float32))

    def set_sky(self, sky: float) -> None:
        """The sky level of the data ``C`` (the background equaliser writes it on the
        device; standalone use sets it here)."""
        self._copy.fill(self.statistics, float(sky), 1)  # the SKY slot is the first

    def run(self, num_iter: int, tolerance: float | None = None,
            noise: NoiseModel | None = None, damping: float = 0.0,
            stop_at_noise: bool = True, pedestal: float = 0.0,
            deadline: float | None = None, output: Output = "estimate",
            plateau: float = 0.0, accelerate: bool = False) -> DeconvolutionReport:
        """Iterate on the data in ``self.data`` (weights set); the result is left in
        ``self.restored`` (frame-sized, in the form ``output`` names: see
        :mod:`streamer.restoration.rl_outputs`) and ``self.estimate`` (extended).

        ``noise`` (the data's sigma and inverse gain; its sky is on the device) enables damping
        at ``damping`` sigmas, the pedestal of ``pedestal`` sigmas, the noise map and, with
        ``stop_at_noise``, the discrepancy and ``plateau`` rules (``rl_stopping``);
        ``accelerate`` extrapolates each step (``rl_acceleration``)."""
        validate_iterations(num_iter, tolerance)
        damping = validate_damping(damping)
        self._pedestal = pedestal * noise.sigma if noise is not None else 0.0
        self._initial_estimate()
        acceleration = self._acceleration_state() if accelerate else None
        variance = noise.sigma**2 if noise is not None else 1.0
        inverse_gain = noise.inverse_gain if noise is not None else 0.0
        threshold_squared = damping**2 if noise is not None else 0.0
        rule = StoppingRule(noise is not None and stop_at_noise, plateau, tolerance)
        change, chi2, stopped_by, done = float("nan"), None, "iterations", 0
        for done in range(1, num_iter + 1):
            measure = tolerance is not None or rule.needs_chi2 or done == num_iter
            if acceleration is not None:
                acceleration.before_update()
            self._iterate(threshold_squared, variance, inverse_gain, measure,
                          noise is not None and measure)
            check_deadline(self.queue, deadline,
                           f"Richardson-Lucy ({done} of {num_iter} iterations)")
            if measure:
                change, chi2 = measured(self._read_statistics(), noise is not None)
                stopped_by = rule.reason(chi2, change) or stopped_by
                if stopped_by != "iterations":
                    break
            if acceleration is not None and done < num_iter:
                acceleration.after_update(self._in_place)
        # Without a noise model every pixel counts as signal: the gate stays open.
        sigma = noise.sigma if noise is not None else 0.0
        self._writer.write(output, self._pedestal, sigma, kernel_reach(self.psf),
                           self._copying, self._in_place,
                           (variance, inverse_gain) if noise is not None else None)
        self._start.output_sum(self.restored)
        return DeconvolutionReport(done, change, self.method, dict(self.method_timings), chi2,
                                   stopped_by, damping if noise is not None else 0.0,
                                   rule.history,
                                   float(self._read_statistics()[STAT["OUTPUT_SUM"]]))

    def _acceleration_state(self) -> Acceleration:
        if self._acceleration is None:  # three extended buffers, made when first asked for
            self._acceleration = Acceleration(self.queue, self.library, self._copying.arrays,
                                              self._items)
        self._acceleration.reset()
        return self._acceleration

    def _initial_estimate(self) -> None:
        self._start.initial_estimate(self._pedestal)
        (self._in_place if self._in_place is not None else self._copying).stage()

    def _iterate(self, threshold_squared: float, variance: float, inverse_gain: float,
                 measure_change: bool, measure_chi2: bool) -> None:
        iterations = self._in_place if self._in_place is not None else self._copying
        iterations.iterate(threshold_squared, variance, inverse_gain, self._pedestal,
                           SIGNAL_SIGMAS, measure_change, measure_chi2)

    def _read_statistics(self) -> np.ndarray:
        values = np.empty(len(STAT), dtype=np.float32)
        return self.meter.download(values, self.statistics).astype(np.float64)

    def read_data_flux(self) -> float:
        """Sum of the valid data of the last run (one float read)."""
        return float(self._read_statistics()[STAT["DATA_SUM"]])

    def download(self) -> np.ndarray:
        """The restored frame (rows×cols float32) from the last run."""
        return self.meter.download(np.empty(self.shape, dtype=np.float32), self.restored)

    def download_noise_map(self) -> np.ndarray | None:
        """The data's per-pixel sigma (rows×cols float32) from the last run; None when it ran
        without a noise model."""
        error = self._writer.noise_map()
        if error is None:
            return None
        return self.meter.download(np.empty(self.shape, dtype=np.float32), error)

    def __call__(self, data: np.ndarray, num_iter: int = 30, weight: np.ndarray | None = None,
                 tolerance: float | None = None, noise: NoiseModel | None = None,
                 damping: float = 0.0, sky: float = 0.0, stop_at_noise: bool = True,
                 pedestal: float = 0.0, output: Output = "estimate", accelerate: bool = False
                 ) -> tuple[np.ndarray, DeconvolutionReport]:
        """Deconvolve host data (``sky``: its sky level); returns the restored frame (as
        ``output`` says) and the report."""
        if data.shape != self.shape:
            raise ParameterError(f"this plan is for frames of shape {self.shape}, got {data.shape}")
        self.set_weights(weight)
        self.set_data(data)
        self.set_sky(sky)
        report = self.run(num_iter, tolerance, noise, damping, stop_at_noise, pedestal,
                          output=output, accelerate=accelerate)
        return self.download(), report
