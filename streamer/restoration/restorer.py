"""The per-frame restoration on numpy arrays: background equalisation, then Richardson–Lucy.

:class:`Restorer` is what a worker holds: it owns the OpenCL context and queue, builds each
kernel once, and keeps one plan (device buffers, chosen convolution method) per frame shape,
so a stream of same-shaped frames pays no compilation or allocation after the first.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyopencl as cl

from streamer.restoration.background import BackgroundEqualiser
from streamer.restoration.device import DEVICE_ENV_VAR, describe_device, select_device
from streamer.errors import FrameError, ParameterError
from streamer.settings import RestorationSettings
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.median import validate_window
from streamer.restoration.richardson_lucy import DeconvolutionReport, RichardsonLucy, validate_iterations

log = logging.getLogger(__name__)



@dataclass
class Restoration:
    """A restored frame and what was done to it."""

    data: np.ndarray
    background_shift: float
    deconvolution: DeconvolutionReport
    timings: dict[str, float] = field(default_factory=dict)
    masked_pixels: int = 0
    flux_in: float = 0.0   # sum of C (eq. 2) over valid pixels
    flux_out: float = 0.0  # sum of the restored frame over the same pixels


@dataclass
class _ShapePlan:
    background: BackgroundEqualiser
    deconvolution: RichardsonLucy


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


class Restorer:
    """Restores frames on one OpenCL device, reusing compiled kernels and buffers.

    Parameters
    ----------
    settings : RestorationSettings
        Window, PSF, iterations, tolerance and convolution method.
    device : str, optional
        Device spec (see :mod:`streamer.restoration.device`); default: ``$STREAMER_DEVICE`` or auto.

    Example
    -------
    >>> restorer = Restorer(RestorationSettings(window=31))     # doctest: +SKIP
    >>> restored = restorer.restore(frame).data                   # doctest: +SKIP
    """

    def __init__(self, settings: RestorationSettings, device: str | None = None) -> None:
        validate_window(settings.window)
        validate_iterations(settings.iterations, settings.tolerance)
        self.settings = settings
        self.psf = settings.psf.build()
        self.device = select_device(device if device is not None else os.environ.get(DEVICE_ENV_VAR))
        self.device_name = describe_device(self.device)
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        self.library = KernelLibrary(self.context)
        self._plans: dict[tuple[int, int], _ShapePlan] = {}

    def plan(self, shape: tuple[int, int]) -> _ShapePlan:
        """The plan (background equaliser and RL, buffers, convolution choice) for a shape,
        built on first use."""
        plan = self._plans.get(shape)
        if plan is None:
            started = time.perf_counter()
            plan = _ShapePlan(
                BackgroundEqualiser(self.queue, self.library, shape, self.settings.window),
                RichardsonLucy(self.queue, self.library, shape, self.psf, self.settings.method),
            )
            self.queue.finish()
            log.info(
                "planned %dx%d frames in %.2f s (convolution: %s)",
                *shape, time.perf_counter() - started, plan.deconvolution.method,
            )
            self._plans[shape] = plan
        return plan

    def restore(self, frame: np.ndarray, mask: np.ndarray | None = None) -> Restoration:
        """Restore one frame.

        Parameters
        ----------
        frame : ndarray
            2-D image, any real dtype; NaN/inf pixels are excluded.
        mask : ndarray of bool, optional
            True where a pixel is bad (saturated, hot, cosmic ray): excluded like NaN.

        Returns
        -------
        Restoration
            float32 restored image (NaN where the input was excluded), the background shift
            ``min(B)``, the Richardson–Lucy report and stage timings in seconds.

        Raises
        ------
        FrameError
            Not 2-D, empty, or no valid pixel.
        """
        timings: dict[str, float] = {}
        started = time.perf_counter()
        image, valid = validated_frame(frame, mask)
        excluded = int(valid.size - np.count_nonzero(valid))
        filled = image
        if excluded:
            filled = np.where(valid, image, np.median(image[valid])).astype(np.float32)
        weight = valid.astype(np.float32)
        plan = self.plan(image.shape)
        timings["prepare"] = time.perf_counter() - started

        started = time.perf_counter()
        deconvolution = plan.deconvolution
        deconvolution.set_weights(weight)
        shift = plan.background.run(filled, deconvolution.weight, deconvolution.data)
        self.queue.finish()
        timings["median"] = time.perf_counter() - started

        started = time.perf_counter()
        report = deconvolution.run(self.settings.iterations, self.settings.tolerance)
        restored = deconvolution.download()
        timings["richardson_lucy"] = time.perf_counter() - started
        if excluded:
            restored[~valid] = np.nan
        flux_out = float(np.nansum(restored, dtype=np.float64))
        return Restoration(restored, shift, report, timings, excluded,
                           deconvolution.data_flux, flux_out)

    def background_equalised(self, frame: np.ndarray) -> np.ndarray:
        """Eq. 1 + eq. 2 only (``C``), for inspection and tests."""
        image = np.ascontiguousarray(frame, dtype=np.float32)
        plan = self.plan(image.shape)
        plan.deconvolution.set_weights(None)
        plan.background.run(image, plan.deconvolution.weight, plan.deconvolution.data)
        out = np.empty(image.shape, dtype=np.float32)
        cl.enqueue_copy(self.queue, out, plan.deconvolution.data)
        return out

    @property
    def kernel_build_seconds(self) -> float:
        """Total OpenCL compile time so far."""
        return self.library.build_seconds
