"""The per-frame restoration on the device: background equalisation, then Richardson–Lucy
with the frame's PSF and noise.

:class:`Restorer` holds restoration settings over a :class:`~streamer.restoration.device.
DeviceSession` (the device's context, kernels and plans, shared in the process), so a stream of
frames pays no compilation or allocation after the first. Its device work is
:meth:`Restorer.restore_prepared`: one upload, the kernels, one download. :meth:`Restorer.restore`
first runs the host's measurements (:class:`~streamer.imaging.preparation.FramePreparer`:
validation, noise, the frame's PSF) for callers that give a bare frame; the worker runs those
on its host stage instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyopencl as cl

from streamer.errors import NoValidPixelError
from streamer.imaging.mesh_background import MeshLevel
from streamer.imaging.noise import NoiseModel
from streamer.imaging.preparation import FramePreparer, PreparedFrame
from streamer.imaging.psf_measure import PSFMeasurement, describe
from streamer.imaging.saturation import Saturation
from streamer.imaging.target_resolution import Resolution
from streamer.sources.detection import SNRMaps
from streamer.imaging.validation import checked_image, checked_mask
from streamer.restoration.capacity import FrameCapacity
from streamer.restoration.detection_maps import DetectionMaps
from streamer.restoration.plan_cache import PlanCache
from streamer.restoration.restoration_plans import PSF_SIDES, RestorationPlans, padded_psf
from streamer.restoration.device import MAX_PLANS, DeviceSession, open_session
from streamer.restoration.median import INPUT_TYPES, validate_window
from streamer.restoration.transfers import Transfers
from streamer.restoration.richardson_lucy import (
    STAT, DeconvolutionReport, validate_damping, validate_iterations,
)
from streamer.settings import RestorationSettings

log = logging.getLogger(__name__)

__all__ = ["MAX_PLANS", "PSF_SIDES", "Restoration", "Restorer", "padded_psf", "upload_form"]



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
    quality_flags: np.ndarray | None = None   # the DQ plane (streamer.imaging.data_quality)
    error: np.ndarray | None = None           # the data's per-pixel sigma (the ERR extension)
    resolution: Resolution | None = None       # the target PSF and the kernel deconvolved
    saturation: Saturation = field(default_factory=Saturation)
    refilled: int = 0                          # saturated or non-linear cores refilled
    snr_maps: SNRMaps | None = None            # the catalogue's detection maps, when asked
    background: MeshLevel | None = None        # the input's mesh background (preparation's)
    subtracted: np.ndarray | None = None       # the input less it (preparation's, handed on)


def upload_form(frame: Any) -> np.ndarray:
    """The frame as it is uploaded: C-contiguous, native byte order, in its own type when the
    device path reads that type, else float32. Checked first (FrameShapeError,
    FrameDtypeError)."""
    frame = checked_image(frame)
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
    names = ("upload", "median", "richardson_lucy", "download", "detection")
    return {name: (b - a) * 1e-9 for name, a, b in zip(names, ends, ends[1:])}


class Restorer(RestorationPlans):
    """Restores frames on one OpenCL device with one set of restoration settings.

    Parameters
    ----------
    settings : RestorationSettings
        Window, PSF (``auto``: measured per frame), iterations, damping, stopping rules and
        convolution method.
    device : str, optional
        Device spec (see :mod:`streamer.restoration.device`); default: ``$STREAMER_DEVICE``
        or auto. Ignored when ``session`` is given.
    cache : PlanCache, optional
        Where measured convolution choices are kept (default: the user's cache folder).
    session : DeviceSession, optional
        The device session to work in (default: the process's session of ``device``).

    Example
    -------
    >>> restorer = Restorer(RestorationSettings(window=31))     # doctest: +SKIP
    >>> restored = restorer.restore(frame).data                   # doctest: +SKIP
    """

    def __init__(self, settings: RestorationSettings, device: str | None = None,
                 cache: PlanCache | None = None, *, session: DeviceSession | None = None
                 ) -> None:
        validate_window(settings.window)
        validate_iterations(settings.iterations, settings.tolerance)
        validate_damping(settings.damping)
        self.settings = settings
        self.preparer = FramePreparer.from_settings(settings)
        self.session = session if session is not None else open_session(device)
        self.device = self.session.device
        self.device_name = self.session.name
        self.cache = cache if cache is not None else PlanCache()
        self.capacity = FrameCapacity(self.session.memory, settings.window)
        self._mask: cl.Buffer | None = None
        self.detection_maps = DetectionMaps(self.session.queue, self.session.library,
                                            self.session.plans, settings.method, self.cache)

    @property
    def fixed_psf(self) -> np.ndarray | None:
        """The configured PSF, or None when each frame's PSF is measured."""
        return self.preparer.fixed_psf

    # -- per frame --------------------------------------------------------------------------
    def restore(self, frame: Any, mask: Any | None = None, *, header=None,
                camera_id: str = "default", psf: PSFMeasurement | np.ndarray | None = None,
                noise: NoiseModel | None = None, deadline: float | None = None,
                snr_maps: bool = False) -> Restoration:
        """Restore one frame: the host's measurements it still needs, then the device.

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
            The PSF to use, when measured already.
        noise : NoiseModel, optional
            The frame's noise, when measured already.
        deadline : float, optional
            ``time.monotonic()`` by which the frame must be done; checked between median
            batches and RL iterations (FrameDeadlineError).
        snr_maps : bool
            Also the catalogue's detection maps (:mod:`streamer.restoration.detection_maps`).

        Returns
        -------
        Restoration
            float32 restored image (NaN where the input was excluded), the background shift
            ``min(B)``, the Richardson–Lucy report, the PSF, the noise, stage timings and the
            bytes moved between host and device.

        Raises
        ------
        FrameShapeError, FrameDtypeError, MaskError, NoValidPixelError
            A frame that is not a 2-D image of real numbers, a mask of another shape, no
            valid pixel (:mod:`streamer.imaging.validation`).
        FrameTooLargeError
            More than the device (or this host) can hold.
        FrameDeadlineError
            Not done by ``deadline``.
        """
        frame = upload_form(frame)
        mask = None if mask is None else checked_mask(mask, frame.shape)
        if isinstance(psf, np.ndarray):
            psf = describe(psf, "given", 0, 0)
        timings: dict[str, float] = {}
        if noise is not None and psf is not None:  # measured by the caller: nothing to do here
            prepared = PreparedFrame(noise, psf, 0.0, mask=mask)
        else:
            prepared = self.preparer.prepare(frame, header, camera_id, mask, psf=psf)
            timings["prepare"] = prepared.seconds - prepared.psf.seconds
            timings["psf"] = prepared.psf.seconds
            prepared.noise = noise or prepared.noise
        return self.restore_prepared(frame, prepared, deadline, timings, snr_maps)

    def restore_prepared(self, frame: np.ndarray, prepared: PreparedFrame,
                         deadline: float | None = None,
                         timings: dict[str, float] | None = None,
                         snr_maps: bool = False) -> Restoration:
        """The device's work alone, for a frame the host has checked and measured
        (:meth:`FramePreparer.prepare`): one upload — of ``prepared.data`` where cores were
        refilled — the median and Richardson–Lucy with ``prepared.mask`` left out, one
        download (under the session's lock); with ``snr_maps``, the catalogue's detection
        maps too (:mod:`streamer.restoration.detection_maps`).

        Raises
        ------
        FrameTooLargeError, NoValidPixelError, FrameDeadlineError
        """
        data = upload_form(prepared.data if prepared.data is not None else frame)
        if prepared.resolution is None:
            prepared.resolution = self.preparer.resolution_for(prepared.psf)
        kernel = prepared.resolution.kernel
        self.capacity.check(data.shape, data.dtype, max(kernel.shape))
        with self.session.lock:
            restoration = self._restore_on_device(
                data, prepared.mask, prepared.psf, kernel, prepared.noise,
                dict(timings or {}), deadline, prepared.resolution if snr_maps else None,
                prepared.background)
        restoration.resolution = prepared.resolution
        restoration.quality_flags = prepared.quality_flags
        restoration.saturation = prepared.saturation
        restoration.refilled = len(prepared.refilled)
        restoration.background = prepared.background
        restoration.subtracted = prepared.subtracted
        return restoration

    def device_healthy(self) -> bool:
        """Whether this restorer's device still builds and runs a kernel."""
        return self.session.healthy()

    def _restore_on_device(self, frame: np.ndarray, mask: np.ndarray | None,
                           psf: PSFMeasurement, kernel: np.ndarray, noise: NoiseModel,
                           timings: dict[str, float], deadline: float | None,
                           maps_for: Resolution | None = None,
                           level: MeshLevel | None = None) -> Restoration:
        """One upload, the device work (RL with ``kernel``, the residuals added back), one
        download; with ``maps_for``, the detection maps at that resolution's target (read
        through the frame's mesh background ``level`` where it is known)."""
        started = time.perf_counter()
        shape = frame.shape
        queue = self.session.queue
        background = self.background(shape, frame.dtype)
        deconvolution = self.deconvolution(shape, padded_psf(kernel))
        meter = deconvolution.meter
        meter.reset()
        marks = [cl.enqueue_marker(queue)]
        meter.upload(background.raw, frame)
        mask_buffer = None
        if mask is not None:
            mask_buffer = self._mask_buffer(shape)
            meter.upload(mask_buffer, np.ascontiguousarray(mask, dtype=np.uint8))
        marks.append(cl.enqueue_marker(queue))
        background.run(deconvolution.weight, deconvolution.data, deconvolution.statistics,
                       STAT["SKY"], mask_buffer, deadline)
        marks.append(cl.enqueue_marker(queue))
        valid, data_flux = deconvolution.count_valid()
        if valid == 0:
            raise NoValidPixelError("the frame has no valid pixel (all NaN/inf or masked)")
        deconvolution.update_norm(valid == frame.size)
        timings["median"] = time.perf_counter() - started
        started = time.perf_counter()
        settings = self.settings
        report = deconvolution.run(settings.iterations, settings.tolerance, noise,
                                   settings.damping, settings.stop_at_noise, settings.pedestal,
                                   deadline, output=settings.restored_as,
                                   plateau=settings.plateau,
                                   accelerate=settings.accelerate)
        marks.append(cl.enqueue_marker(queue))
        restored = deconvolution.download()
        error = deconvolution.download_noise_map() if settings.noise_map else None
        shift = float(meter.download(np.empty(1, np.float32), background.minimum)[0])
        marks.append(cl.enqueue_marker(queue))
        maps = None if maps_for is None else self.detection_maps.compute(
            background, deconvolution, psf.psf, maps_for.target, noise.sky, noise.sigma,
            self.settings.source_threshold, psf.fwhm, level)
        if maps is not None:
            marks.append(cl.enqueue_marker(queue))
        queue.finish()
        timings["richardson_lucy"] = time.perf_counter() - started
        return Restoration(restored, shift, report, psf, noise, timings, frame.size - valid,
                           data_flux, report.flux, meter.frame, device_seconds(marks),
                           error=error, snr_maps=maps)

    def _mask_buffer(self, shape: tuple[int, int]) -> cl.Buffer:
        if self._mask is None or self._mask.size < shape[0] * shape[1]:
            self._mask = cl.Buffer(self.session.context, cl.mem_flags.READ_ONLY,
                                   shape[0] * shape[1])
        return self._mask

    def background_equalised(self, frame: np.ndarray) -> np.ndarray:
        """Eq. 1 + eq. 2 only (``C``), for inspection and tests."""
        frame = upload_form(frame)
        with self.session.lock:
            background = self.background(frame.shape, frame.dtype)
            plan = self.plan(frame.shape)
            plan.meter.upload(background.raw, frame)
            background.run(plan.weight, plan.data, plan.statistics, STAT["SKY"])
            return plan.meter.download(np.empty(frame.shape, dtype=np.float32), plan.data)

    @property
    def kernel_build_seconds(self) -> float:
        """Total OpenCL compile time of the device session so far."""
        return self.session.kernel_build_seconds
