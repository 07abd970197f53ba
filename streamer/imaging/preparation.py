"""What the host measures on a frame before it goes to the device: its validity, the input's
quality, the noise model and the PSF to restore it with — with each camera's recent PSF kept
(:class:`~streamer.imaging.psf_tracker.PSFTracker`) for frames that show few stars.

NumPy (and sep) work only: the worker runs it on its host stage while the device restores the
previous frame, and ``Restorer.restore`` runs it first when a caller gives a bare frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from astropy.io import fits

from streamer.imaging.noise import NoiseModel, noise_model
from streamer.imaging.psf import PSFSpec
from streamer.imaging.psf_measure import PSFMeasurement, PSFMeasureSettings, describe
from streamer.imaging.psf_tracker import PSFTracker
from streamer.imaging.quality import InputQuality, measure_input
from streamer.imaging.validation import validated_frame


@dataclass
class PreparedFrame:
    """Host measurements of a frame, made before it reaches the device."""

    noise: NoiseModel
    psf: PSFMeasurement
    seconds: float
    quality: InputQuality | None = None


class PSFSettings(Protocol):
    """The PSF fields of the restoration settings (``streamer.settings.RestorationSettings``)."""

    psf: PSFSpec
    psf_fallback: PSFSpec
    psf_measure: PSFMeasureSettings
    psf_smoothing: float


class FramePreparer:
    """Prepares frames for the device: checks them and measures noise and PSF; holds each
    camera's PSF state.

    Parameters
    ----------
    psf : PSFSpec
        ``auto`` measures each frame's PSF; a model or file is used as it is.
    fallback : PSFSpec
        The PSF of a camera that has not shown a measurable star yet.
    measure : PSFMeasureSettings
    smoothing : float
        Weight of a frame's PSF in its camera's running mean (1: no smoothing).
    """

    def __init__(self, psf: PSFSpec, fallback: PSFSpec,
                 measure: PSFMeasureSettings = PSFMeasureSettings(),
                 smoothing: float = 0.3) -> None:
        self.fixed_psf = None if psf.measured else psf.build()
        self.tracker = PSFTracker(fallback.build(), str(fallback), measure, smoothing)

    @classmethod
    def from_settings(cls, settings: PSFSettings) -> FramePreparer:
        """The preparer the restoration settings describe."""
        return cls(settings.psf, settings.psf_fallback, settings.psf_measure,
                   settings.psf_smoothing)

    @property
    def default_psf(self) -> np.ndarray:
        """The configured PSF, or the fallback when PSFs are measured (for planning ahead)."""
        return self.fixed_psf if self.fixed_psf is not None else self.tracker.fallback

    def choose_psf(self, image: np.ndarray, valid: np.ndarray, header: fits.Header | None = None,
                   camera_id: str = "default") -> PSFMeasurement:
        """The PSF for this frame: the configured one, or measured (per camera)."""
        if self.fixed_psf is not None:
            return describe(self.fixed_psf, "configured", 0, 0)
        return self.tracker.psf_for(camera_id, image, ~valid, header)

    def prepare(self, frame: Any, header: fits.Header | None = None,
                camera_id: str = "default", mask: Any | None = None, *,
                quality: bool = False) -> PreparedFrame:
        """Check ``frame`` (see :mod:`streamer.imaging.validation`) and measure its noise and
        PSF (and, with ``quality``, the input's quality figures); the camera's PSF state is
        updated.

        Raises
        ------
        FrameShapeError, FrameDtypeError, MaskError, NoValidPixelError
        """
        started = time.perf_counter()
        image, valid = validated_frame(frame, mask)
        measured = measure_input(np.asarray(frame)) if quality else None
        noise = noise_model(image, header, measured.sky if measured is not None else None)
        psf = self.choose_psf(image, valid, header, camera_id)
        return PreparedFrame(noise, psf, time.perf_counter() - started, measured)
