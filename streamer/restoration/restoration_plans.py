"""The device plans a restorer works with: the background equaliser per frame shape and
input type, the Richardson–Lucy plan per frame shape and PSF size — made on first use, kept in
the device session's :class:`~streamer.restoration.plan_store.PlanStore` — and the method
measurements a worker puts off until its device is idle
(:mod:`streamer.restoration.deferred_measurements`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from streamer.imaging.preparation import FramePreparer
from streamer.restoration.background import BackgroundEqualiser
from streamer.restoration.deferred_measurements import Cancelled, DeferredMeasurements
from streamer.restoration.detection_maps import DetectionMaps
from streamer.restoration.device import DeviceSession
from streamer.restoration.plan_cache import PlanCache
from streamer.restoration.richardson_lucy import RichardsonLucy
from streamer.settings import RestorationSettings

log = logging.getLogger(__name__)

# PSF sides a measured PSF is padded up to, so that frame-to-frame size changes reuse a plan.
PSF_SIDES = (3, 5, 7, 9, 11, 13, 15, 17, 21, 25, 29, 33, 41, 49, 57, 65, 81, 97, 129)


def padded_psf(psf: np.ndarray) -> np.ndarray:
    """``psf`` zero-padded to a square side from :data:`PSF_SIDES` (its next size up)."""
    side = max(psf.shape)
    target = next((s for s in PSF_SIDES if s >= side), side)
    pad_y, pad_x = (target - psf.shape[0]) // 2, (target - psf.shape[1]) // 2
    return np.pad(psf, ((pad_y, pad_y), (pad_x, pad_x)))


def _superseded(plan: RichardsonLucy, deferred: DeferredMeasurements) -> bool:
    """Whether a measurement put off for ``plan`` (its method, its FFT sizes) has run and
    chosen otherwise: plan anew."""
    return plan.forward.superseded_by(deferred) or plan.backward.superseded_by(deferred)


class RestorationPlans:
    """The plans part of :class:`~streamer.restoration.restorer.Restorer`: it reads the
    restorer's ``settings``, ``session``, ``cache``, ``preparer`` and ``detection_maps``."""

    settings: RestorationSettings
    session: DeviceSession
    cache: PlanCache
    preparer: FramePreparer
    detection_maps: DetectionMaps
    defers_measurements = False

    def defer_measurements(self) -> None:
        """From now on, a case not measured yet on this device takes the method measured
        fastest for the nearest case (else the estimate's) and the smallest FFT size, and its
        measurements are queued (the worker does this once it is warm, so a new PSF size
        mid-stream makes no frame wait); :meth:`measure_pending` runs them, and the next plan
        asked for switches to what they chose."""
        self.defers_measurements = True
        self.detection_maps.deferred = self.session.measurements

    @property
    def measurements_pending(self) -> int:
        """Method measurements queued on this restorer's device."""
        return self.session.measurements.pending

    def measure_pending(self, cancelled: Cancelled | None = None) -> bool:
        """Run the oldest queued method measurement (holding the device); whether one ran to
        its end. ``cancelled`` is asked between its steps (a stopping worker's): it then
        stays queued."""
        with self.session.lock:
            return self.session.measurements.run_next(cancelled) is not None

    def background(self, shape: tuple[int, int], dtype: np.dtype | type = np.float32
                   ) -> BackgroundEqualiser:
        """The background equaliser for frames of ``shape`` arriving as ``dtype`` (built on
        first use)."""
        method = self.settings.median_method
        key = (shape, np.dtype(dtype).str, self.settings.window, method)
        session = self.session
        return session.plans.get_or_make("background", key, lambda: BackgroundEqualiser(
            session.queue, session.library, shape, self.settings.window, dtype,
            None if method == "auto" else method))

    def deconvolution(self, shape: tuple[int, int], psf: np.ndarray) -> RichardsonLucy:
        """The Richardson–Lucy plan for ``shape`` loaded with ``psf`` (planned on first use
        of this frame shape and PSF size, or when the PSF needs another method)."""
        key = (shape, psf.shape, self.settings.method, str(self.cache.path))
        plans = self.session.plans
        plan = plans.get("richardson_lucy", key)
        if (isinstance(plan, RichardsonLucy) and plan.accepts(psf)
                and not _superseded(plan, self.session.measurements)):
            plan.set_psf(psf)
            return plan
        started = time.perf_counter()
        plan = RichardsonLucy(self.session.queue, self.session.library, shape, psf,
                              self.settings.method, self.cache,
                              self.session.measurements if self.defers_measurements else None)
        self.session.queue.finish()
        log.info("planned %dx%d frames with %dx%d PSFs in %.2f s (convolution: %s)",
                 *shape, *psf.shape, time.perf_counter() - started, plan.method)
        return plans.put("richardson_lucy", key, plan)

    def plan(self, shape: tuple[int, int], psf: np.ndarray | None = None) -> RichardsonLucy:
        """Make the plans for ``shape`` (and ``psf``, default the configured or fallback one)
        ahead of the first frame; returns the Richardson–Lucy plan."""
        with self.session.lock:
            self.background(shape)
            chosen = psf if psf is not None else self.preparer.default_psf
            return self.deconvolution(shape, padded_psf(chosen))

    @property
    def plan_count(self) -> int:
        """Plans the device session holds for restorations (bounded by ``MAX_PLANS`` per
        kind)."""
        return self.session.plans.count("background", "richardson_lucy")
