"""The per-frame restoration on numpy arrays: background equalisation, then Richardson–Lucy
with the frame's PSF and noise.

:class:`Restorer` is what a worker holds: it owns the OpenCL context and queue, builds each
kernel once, and keeps plans (device buffers, chosen convolution method) per frame shape and
PSF size — a bounded number of each, least recently used dropped — so a stream of frames pays
no compilation or allocation after the first. With ``psf=auto`` it measures each frame's PSF
(:class:`~streamer.imaging.psf_tracker.PSFTracker`, per camera) unless the caller (the
worker's decode stage) measured it already.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import pyopencl as cl

from streamer.errors import FrameError, FrameTooLargeError, ParameterError
from streamer.imaging.noise import NoiseModel, noise_model
from streamer.imaging.psf_measure import PSFMeasurement, describe
from streamer.imaging.psf_tracker import PSFTracker
from streamer.restoration.background import BackgroundEqualiser
from streamer.restoration.correlation_plan import PlanCache
from streamer.restoration.device import DEVICE_ENV_VAR, describe_device, select_device
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.median import INPUT_TYPES, validate_window
from streamer.restoration.transfers import Transfers
from streamer.restoration.richardson_lucy import (
    STAT, DeconvolutionReport, RichardsonLucy, validate_damping, validate_iterations,
)
from streamer.settings import RestorationSettings

log = logging.getLogger(__name__)

MAX_PLANS = 4   # plans kept per kind (frame shapes, PSF sizes): device memory stays bounded
# PSF sides a measured PSF is padded up to, so that frame-to-frame size changes reuse a plan.
PSF_SIDES = (3, 5, 7, 9, 11, 13, 15, 17, 21, 25, 29, 33, 41, 49, 57, 65, 81, 97, 129)


@dataclass
class Restoration:
    """A restored frame and what was done to it."""

    data: np.ndarray
    background_shift: float
    deconvolution: DeconvolutionReport
    psf: PSFMeasurement
    noise: NoiseModel
    timings: dict[str, float] = field(default_factory=dict)
    masked_pixels: int = 0
    flux_in: float = 0.0   # sum of C (eq. 2) over valid pixels
    flux_out: float = 0.0  # sum of the restored frame over the same pixels
    transfers: Transfers = field(default_factory=Transfers)
    device_seconds: dict[str, float] = field(default_factory=dict)  # from profiling events


def validated_frame(frame: np.ndarray, mask: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The frame as contiguous float32 and its valid-pixel map (finite and not masked).

    Raises
    ------
    FrameError
        Not 2-D, empty, not real numbers, or no valid pixel.
    ParameterError
        A mask whose shape differs from the frame's.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise FrameError(f"a frame must be a 2-D image, got shape {frame.shape}")
    if frame.size == 0:
        raise FrameError("the frame is empty (0 pixels)")
    if not np.issubdtype(frame.dtype, np.number) or np.iscomplexobj(frame):
        raise FrameError(f"a frame must hold real numbers, got dtype {frame.dtype}")
    image = np.ascontiguousarray(frame, dtype=np.float32)
    valid = np.isfinite(image)
    if mask is not None:
        if np.shape(mask) != image.shape:
            raise ParameterError(f"mask shape {np.shape(mask)} differs from frame {image.shape}")
        valid &= ~np.asarray(mask).astype(bool)
    if not valid.any():
        raise FrameError("the frame has no valid pixel (all NaN/inf or masked)")
    return image, valid


def upload_form(frame: np.ndarray) -> np.ndarray:
    """The frame as it is uploaded: C-contiguous, native byte order, in its own type when the
    device path reads that type, else float32. Checks that it is a non-empty 2-D image of real
    numbers (FrameError otherwise)."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise FrameError(f"a frame must be a 2-D image, got shape {frame.shape}")
    if frame.size == 0:
        raise FrameError("the frame is empty (0 pixels)")
    if not np.issubdtype(frame.dtype, np.number) or np.iscomplexobj(frame):
        raise FrameError(f"a frame must hold real numbers, got dtype {frame.dtype}")
    native = frame.dtype.newbyteorder("=")
    if native not in INPUT_TYPES:
        native = np.dtype(np.float32)
    return np.ascontiguousarray(frame, dtype=native)


def device_seconds(marks: list[cl.Event]) -> dict[str, float]:
    """Device time of each stage, from markers enqueued between them (profiling events; empty
    when the queue does not profile)."""
    try:
        ends = [mark.profile.end for mark in marks]
    except (cl.Error, cl.RuntimeError):
        return {}
    names = ("upload", "median", "richardson_lucy", "download")
    return {name: (b - a) * 1e-9 for name, a, b in zip(names, ends, ends[1:])}


def _available_host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def capacity_problem(device: cl.Device, shape: tuple[int, ...], dtype: np.dtype, window: int,
                     psf_side: int) -> str | None:
    """Why a frame of ``shape`` would not fit (device memory, one allocation, host memory),
    or None. Estimates from the buffers the plans allocate."""
    if len(shape) != 2:
        return None
    height, width = shape
    pixels = height * width
    radius = window // 2
    padded = (height + 2 * radius) * (width + 2 * radius)
    extended = (height + 4 * psf_side) * (width + 4 * psf_side)
    largest = max(padded * 4, extended * 4)
    device_bytes = (pixels * (dtype.itemsize + 4 * 6) + padded * 6 + extended * 16
                    + min(device.global_mem_size // 4, 1 << 30))  # + the median's state
    if largest > device.max_mem_alloc_size:
        return (f"a {height}x{width} frame needs a {largest >> 20} MiB buffer, above the "
                f"device's largest allocation ({device.max_mem_alloc_size >> 20} MiB)")
    if device_bytes > 0.9 * device.global_mem_size:
        return (f"a {height}x{width} frame needs about {device_bytes >> 20} MiB of device "
                f"memory, above the {device.global_mem_size >> 20} MiB the device has")
    available = _available_host_memory()
    host_bytes = pixels * (dtype.itemsize + 4 * 6) + extended * 12
    if available is not None and host_bytes > 0.8 * available:
        return (f"a {height}x{width} frame needs about {host_bytes >> 20} MiB of host memory, "
                f"above the {available >> 20} MiB available")
    return None


def padded_psf(psf: np.ndarray) -> np.ndarray:
    """``psf`` zero-padded to a square side from :data:`PSF_SIDES` (its next size up)."""
    side = max(psf.shape)
    target = next((s for s in PSF_SIDES if s >= side), side)
    pad_y, pad_x = (target - psf.shape[0]) // 2, (target - psf.shape[1]) // 2
    return np.pad(psf, ((pad_y, pad_y), (pad_x, pad_x)))


Key = TypeVar("Key")
Plan = TypeVar("Plan")


class _Plans(Generic[Key, Plan]):
    """At most ``limit`` plans, the least recently used dropped first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._plans: OrderedDict[Key, Plan] = OrderedDict()

    def get(self, key: Key) -> Plan | None:
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
        return plan

    def put(self, key: Key, plan: Plan) -> None:
        self._plans[key] = plan
        self._plans.move_to_end(key)
        while len(self._plans) > self.limit:
            self._plans.popitem(last=False)

    def __len__(self) -> int:
        return len(self._plans)


class Restorer:
    """Restores frames on one OpenCL device, reusing compiled kernels and buffers.

    Parameters
    ----------
    settings : RestorationSettings
        Window, PSF (``auto``: measured per frame), iterations, damping, stopping rules and
        convolution method.
    device : str, optional
        Device spec (see :mod:`streamer.restoration.device`); default: ``$STREAMER_DEVICE``
        or auto.
    cache : PlanCache, optional
        Where measured convolution choices are kept (default: the user's cache folder).

    Example
    -------
    >>> restorer = Restorer(RestorationSettings(window=31))     # doctest: +SKIP
    >>> restored = restorer.restore(frame).data                   # doctest: +SKIP
    """

    def __init__(self, settings: RestorationSettings, device: str | None = None,
                 cache: PlanCache | None = None) -> None:
        validate_window(settings.window)
        validate_iterations(settings.iterations, settings.tolerance)
        validate_damping(settings.damping)
        self.settings = settings
        self.fixed_psf = None if settings.psf.measured else settings.psf.build()
        self.tracker = PSFTracker(settings.psf_fallback.build(), str(settings.psf_fallback),
                                  settings.psf_measure, settings.psf_smoothing)
        self.device = select_device(device if device is not None else os.environ.get(DEVICE_ENV_VAR))
        self.device_name = describe_device(self.device)
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(
            self.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self.library = KernelLibrary(self.context)
        self.cache = cache if cache is not None else PlanCache()
        self._backgrounds: _Plans[tuple, BackgroundEqualiser] = _Plans(MAX_PLANS)
        self._deconvolutions: _Plans[tuple, RichardsonLucy] = _Plans(MAX_PLANS)

    # -- plans ------------------------------------------------------------------------------
    def background(self, shape: tuple[int, int], dtype: np.dtype | type = np.float32
                   ) -> BackgroundEqualiser:
        """The background equaliser for frames of ``shape`` arriving as ``dtype`` (built on
        first use)."""
        key = (shape, np.dtype(dtype).str)
        plan = self._backgrounds.get(key)
        if plan is None:
            method = self.settings.median_method
            plan = BackgroundEqualiser(self.queue, self.library, shape, self.settings.window,
                                       dtype, None if method == "auto" else method)
            self._backgrounds.put(key, plan)
        return plan

    def deconvolution(self, shape: tuple[int, int], psf: np.ndarray) -> RichardsonLucy:
        """The Richardson–Lucy plan for ``shape`` loaded with ``psf`` (planned on first use
        of this frame shape and PSF size, or when the PSF needs another method)."""
        key = (shape, psf.shape)
        plan = self._deconvolutions.get(key)
        if plan is not None and plan.accepts(psf):
            plan.set_psf(psf)
            return plan
        started = time.perf_counter()
        plan = RichardsonLucy(self.queue, self.library, shape, psf, self.settings.method,
                              self.cache)
        self.queue.finish()
        log.info("planned %dx%d frames with %dx%d PSFs in %.2f s (convolution: %s)",
                 *shape, *psf.shape, time.perf_counter() - started, plan.method)
        self._deconvolutions.put(key, plan)
        return plan

    def plan(self, shape: tuple[int, int], psf: np.ndarray | None = None) -> RichardsonLucy:
        """Make the plans for ``shape`` (and ``psf``, default the configured or fallback one)
        ahead of the first frame; returns the Richardson–Lucy plan."""
        self.background(shape)
        chosen = psf if psf is not None else (self.fixed_psf if self.fixed_psf is not None
                                              else self.tracker.fallback)
        return self.deconvolution(shape, padded_psf(chosen))

    @property
    def plan_count(self) -> int:
        """Plans held (bounded by ``MAX_PLANS`` per kind)."""
        return len(self._backgrounds) + len(self._deconvolutions)

    # -- per frame --------------------------------------------------------------------------
    def choose_psf(self, image: np.ndarray, valid: np.ndarray, header=None,
                   camera_id: str = "default") -> PSFMeasurement:
        """The PSF for this frame: the configured one, or measured (per camera)."""
        if self.fixed_psf is not None:
            return describe(self.fixed_psf, "configured", 0, 0)
        return self.tracker.psf_for(camera_id, image, ~valid, header)

    def restore(self, frame: np.ndarray, mask: np.ndarray | None = None, *, header=None,
                camera_id: str = "default", psf: PSFMeasurement | np.ndarray | None = None,
                noise: NoiseModel | None = None, deadline: float | None = None) -> Restoration:
        """Restore one frame.

        Parameters
        ----------
        frame : ndarray
            2-D image, any real dtype (uint8/16, int16/32, uint32 and float32 are uploaded as
            they are; others as float32); NaN/inf pixels are excluded.
        mask : ndarray of bool, optional
            True where a pixel is bad (saturated, hot, cosmic ray): excluded like NaN.
        header : astropy.io.fits.Header, optional
            For the gain and the saturation level.
        camera_id : str
            Whose recent PSF helps a frame with few stars (``psf=auto``).
        psf : PSFMeasurement or ndarray, optional
            The PSF to use, when measured already (the worker measures it while decoding).
        noise : NoiseModel, optional
            The frame's noise, when measured already.
        deadline : float, optional
            ``time.monotonic()`` by which the frame must be done; checked between median
            batches and RL iterations (FrameDeadlineError).

        Returns
        -------
        Restoration
            float32 restored image (NaN where the input was excluded), the background shift
            ``min(B)``, the Richardson–Lucy report, the PSF, the noise, stage timings and the
            bytes moved between host and device.

        Raises
        ------
        FrameError
            Not 2-D, empty, not real numbers, or no valid pixel.
        FrameTooLargeError
            More than the device (or this host) can hold.
        FrameDeadlineError
            Not done by ``deadline``.
        """
        timings: dict[str, float] = {}
        started = time.perf_counter()
        frame = upload_form(frame)
        if mask is not None and np.shape(mask) != frame.shape:
            raise ParameterError(f"mask shape {np.shape(mask)} differs from frame {frame.shape}")
        if psf is None or noise is None:  # host measurements, when the caller made none
            image, valid = validated_frame(frame, mask)
            noise = noise or noise_model(image, header)
            timings["prepare"] = time.perf_counter() - started
            started = time.perf_counter()
            psf = psf if psf is not None else self.choose_psf(image, valid, header, camera_id)
            timings["psf"] = time.perf_counter() - started
        if isinstance(psf, np.ndarray):
            psf = describe(psf, "given", 0, 0)
        self.check_capacity(frame.shape, frame.dtype, max(psf.psf.shape))
        return self._restore_on_device(frame, mask, psf, noise, timings, deadline)

    def check_capacity(self, shape: tuple[int, ...], dtype: np.dtype, psf_side: int = 65
                       ) -> None:
        """Raise FrameTooLargeError when a frame of ``shape`` would not fit the device's
        memory (or one of its allocations), or this host's — checked before allocating."""
        problem = capacity_problem(self.device, shape, np.dtype(dtype), self.settings.window,
                                   psf_side)
        if problem:
            raise FrameTooLargeError(problem)

    def device_healthy(self) -> bool:
        """Whether this restorer's device still builds and runs a kernel (after an OpenCL
        error: a frame's fault, or the device's?)."""
        try:
            from streamer.restoration.device import _PROBE_SOURCE

            program = cl.Program(self.context, _PROBE_SOURCE).build()
            buffer = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, 16)
            program.probe(self.queue, (4,), None, buffer)
            out = np.empty(4, dtype=np.float32)
            cl.enqueue_copy(self.queue, out, buffer)
            return bool(np.all(out == 1))
        except Exception:  # any failure at all means the device is not usable
            return False

    def _restore_on_device(self, frame: np.ndarray, mask: np.ndarray | None,
                           psf: PSFMeasurement, noise: NoiseModel,
                           timings: dict[str, float], deadline: float | None) -> Restoration:
        """One upload, the device work, one download."""
        started = time.perf_counter()
        shape = frame.shape
        background = self.background(shape, frame.dtype)
        deconvolution = self.deconvolution(shape, padded_psf(psf.psf))
        meter = deconvolution.meter
        meter.reset()
        marks = [cl.enqueue_marker(self.queue)]
        meter.upload(background.raw, frame)
        mask_buffer = None
        if mask is not None:
            mask_buffer = self._mask_buffer(shape)
            meter.upload(mask_buffer, np.ascontiguousarray(mask, dtype=np.uint8))
        marks.append(cl.enqueue_marker(self.queue))
        background.run(deconvolution.weight, deconvolution.data, deconvolution.statistics,
                       STAT["SKY"], mask_buffer, deadline)
        marks.append(cl.enqueue_marker(self.queue))
        valid, data_flux = deconvolution.count_valid()
        if valid == 0:
            raise FrameError("the frame has no valid pixel (all NaN/inf or masked)")
        deconvolution.update_norm(valid == frame.size)
        timings["median"] = time.perf_counter() - started
        started = time.perf_counter()
        settings = self.settings
        report = deconvolution.run(settings.iterations, settings.tolerance, noise,
                                   settings.damping, settings.stop_at_noise, settings.pedestal,
                                   deadline)
        marks.append(cl.enqueue_marker(self.queue))
        restored = deconvolution.download()
        shift = float(meter.download(np.empty(1, np.float32), background.minimum)[0])
        marks.append(cl.enqueue_marker(self.queue))
        self.queue.finish()
        timings["richardson_lucy"] = time.perf_counter() - started
        flux_out = float(np.nansum(restored, dtype=np.float64))
        return Restoration(restored, shift, report, psf, noise, timings, frame.size - valid,
                           data_flux, flux_out, meter.frame, device_seconds(marks))

    def _mask_buffer(self, shape: tuple[int, int]) -> cl.Buffer:
        if getattr(self, "_mask", None) is None or self._mask.size < shape[0] * shape[1]:
            self._mask = cl.Buffer(self.context, cl.mem_flags.READ_ONLY, shape[0] * shape[1])
        return self._mask

    def background_equalised(self, frame: np.ndarray) -> np.ndarray:
        """Eq. 1 + eq. 2 only (``C``), for inspection and tests."""
        frame = upload_form(frame)
        background = self.background(frame.shape, frame.dtype)
        plan = self.plan(frame.shape)
        plan.meter.upload(background.raw, frame)
        background.run(plan.weight, plan.data, plan.statistics, STAT["SKY"])
        return plan.meter.download(np.empty(frame.shape, dtype=np.float32), plan.data)

    @property
    def kernel_build_seconds(self) -> float:
        """Total OpenCL compile time so far."""
        return self.library.build_seconds
