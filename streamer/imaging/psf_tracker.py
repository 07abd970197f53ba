"""Each camera's recent PSF, so that every frame gets a good one.

Every frame is measured (:func:`~streamer.imaging.psf_measure.measure_psf`). The tracker then
decides per camera:

* a measurement from enough stars (``empirical``/``streak``) that agrees with the camera's
  recent PSF (FWHM within ``SEEING_CHANGE``, ellipticity within 0.1) is **smoothed** into it —
  a running mean that averages the stars' noise over frames; one that disagrees means the
  seeing (or focus, or tracking) changed, and **replaces** it;
* a fit to a few stars (``moffat``) that agrees with the recent PSF keeps the recent PSF (it
  is better measured), one that disagrees is used as it is;
* no stars: the camera's last good PSF (``previous``), else the configured fallback
  (``fallback``) — each with a warning, which the metrics carry as a flag.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streamer.errors import PSFError, TooFewStarsError
from streamer.imaging.psf_measure import (
    PSFMeasurement, PSFMeasureSettings, describe, measure_psf,
)
from streamer.imaging.psf_stars import Detection
from streamer.imaging.saturation import Saturation
from streamer.turns import Ticket, in_turn

log = logging.getLogger(__name__)

SEEING_CHANGE = 0.10     # relative FWHM change that counts as new seeing
SHAPE_CHANGE = 0.10      # ellipticity change that counts as a new PSF shape
PSF_STEP = "psf"         # the step of the turns (streamer.turns) that reads and updates the state


@dataclass
class _CameraPSF:
    psf: np.ndarray
    measurement: PSFMeasurement
    frames: int           # frames averaged into it


def _padded_to(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    pad_y, pad_x = (shape[0] - psf.shape[0]) // 2, (shape[1] - psf.shape[1]) // 2
    return np.pad(psf, ((pad_y, pad_y), (pad_x, pad_x)))


def blend(previous: np.ndarray, current: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) · previous + weight · current`` of two centred PSFs (padded to a common
    size), renormalised."""
    shape = (max(previous.shape[0], current.shape[0]), max(previous.shape[1], current.shape[1]))
    mixed = (1.0 - weight) * _padded_to(previous, shape) + weight * _padded_to(current, shape)
    return mixed / mixed.sum()


def agrees(a: PSFMeasurement, b: PSFMeasurement) -> bool:
    """Whether two PSFs describe the same seeing: FWHM within 10 %, ellipticity within 0.1."""
    return (abs(a.fwhm / b.fwhm - 1.0) <= SEEING_CHANGE
            and abs(a.ellipticity - b.ellipticity) <= SHAPE_CHANGE)


class PSFTracker:
    """Per-camera PSF state for a stream of frames.

    Parameters
    ----------
    fallback : ndarray
        The configured PSF for a camera that has never shown a star.
    fallback_name : str
        How the fallback is named in warnings and metrics (its spec).
    settings : PSFMeasureSettings
    smoothing : float
        Weight of a new agreeing measurement in the running mean (1: no smoothing).
    """

    def __init__(self, fallback: np.ndarray, fallback_name: str,
                 settings: PSFMeasureSettings = PSFMeasureSettings(),
                 smoothing: float = 0.3) -> None:
        self.fallback = fallback
        self.fallback_name = fallback_name
        self.settings = settings
        self.smoothing = smoothing
        self._cameras: dict[str, _CameraPSF] = {}

    def psf_for(self, camera_id: str, image: np.ndarray, mask: np.ndarray | None = None,
                header: fits.Header | None = None, saturation: Saturation | None = None,
                detection: Detection | None = None, ticket: Ticket | None = None,
                invalid: np.ndarray | None = None) -> PSFMeasurement:
        """Measure ``image`` and return the PSF to restore it with (see the module notes);
        ``invalid`` instead of ``mask``: every pixel to leave out, non-finite ones included.
        Never raises for want of a PSF: a frame whose stars give none, or give one that fails
        its checks, gets the camera's last good PSF or the fallback, with a warning.

        The measurement is the frame's own; with a ``ticket`` (frames prepared on several
        threads, :mod:`streamer.turns`) the camera's state is read and updated in its turn."""
        started = time.perf_counter()
        measured: PSFMeasurement | None = None
        try:
            measured = measure_psf(image, mask, header, self.settings, saturation, detection,
                                   invalid)
        except TooFewStarsError as error:
            reason = f"no PSF stars ({error})"
        except PSFError as error:  # a measured PSF that failed its own checks
            reason = f"the measured PSF is unusable ({error})"
        with in_turn(ticket, PSF_STEP):
            state = self._cameras.get(camera_id)
            if measured is None:
                return self._without_stars(camera_id, state, reason, started)
            return self._settled(camera_id, state, measured, started)

    def _settled(self, camera_id: str, state: _CameraPSF | None, measured: PSFMeasurement,
                 started: float) -> PSFMeasurement:
        """The PSF a measurement gives against the camera's ``state``; the state updated."""
        if measured.method == "moffat":
            if state is not None and agrees(measured, state.measurement):
                return describe(state.psf, "previous", measured.stars_used,
                                measured.stars_found, time.perf_counter() - started)
            self._cameras[camera_id] = _CameraPSF(measured.psf, measured, 1)
            return measured
        if state is not None and agrees(measured, state.measurement) \
                and state.measurement.method == measured.method:
            psf = blend(state.psf, measured.psf, self.smoothing)
            result = describe(psf, measured.method, measured.stars_used, measured.stars_found,
                              time.perf_counter() - started)
            self._cameras[camera_id] = _CameraPSF(psf, result, state.frames + 1)
            return result
        if state is not None:
            log.info("camera %s: PSF changed (FWHM %.2f -> %.2f px, ellipticity %.2f -> %.2f)",
                     camera_id, state.measurement.fwhm, measured.fwhm,
                     state.measurement.ellipticity, measured.ellipticity)
        self._cameras[camera_id] = _CameraPSF(measured.psf, measured, 1)
        return measured

    def _without_stars(self, camera_id: str, state: _CameraPSF | None, reason: str,
                       started: float) -> PSFMeasurement:
        if state is not None:
            warning = f"{reason}; using camera {camera_id}'s last good PSF"
            log.warning("%s", warning)
            return describe(state.psf, "previous", 0, 0, time.perf_counter() - started, warning)
        warning = f"{reason}; using the configured PSF {self.fallback_name}"
        log.warning("camera %s: %s", camera_id, warning)
        return describe(self.fallback, "fallback", 0, 0, time.perf_counter() - started, warning)

    def cameras(self) -> dict[str, PSFMeasurement]:
        """The recent PSF of every camera seen."""
        # A copy first: frames on other threads may add a camera meanwhile.
        return {camera: state.measurement for camera, state in list(self._cameras.items())}
