"""What the host measures on a frame before it goes to the device: its validity, the input's
quality, the noise model, where it saturates and stops being linear, the PSF to restore it with
— with each camera's recent PSF and levels kept (:class:`~streamer.imaging.psf_tracker.
PSFTracker`) for frames that show few stars — and saturated or non-linear star cores refilled
from their linear wings (:mod:`streamer.imaging.saturated_stars`), with the data-quality plane
that says which pixels were (:mod:`streamer.imaging.data_quality`).

NumPy (and sep) work only: the worker runs it on its host stage while the device restores the
previous frame, and ``Restorer.restore`` runs it first when a caller gives a bare frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from astropy.io import fits

from streamer.imaging import psf_stars
from streamer.imaging.data_quality import quality_plane
from streamer.imaging.mesh_background import MeshLevel
from streamer.imaging.noise import NoiseModel, noise_model
from streamer.imaging.psf import PSFSpec
from streamer.imaging.psf_measure import (
    PSFMeasurement, PSFMeasureSettings, configured_saturation, describe,
)
from streamer.imaging.psf_tracker import PSF_STEP, PSFTracker
from streamer.imaging.quality import InputQuality, measure_input
from streamer.imaging.saturated_stars import CoreFit, bleed_tail_pixels, refill_core_pixels
from streamer.imaging.saturation import Saturation, frame_saturation, saturation_pixels
from streamer.imaging.sparse_masks import as_mask
from streamer.imaging.target_resolution import Resolution, resolution_for
from streamer.imaging.validation import (
    checked_mask, excluded, float32_copy, validated_frame,
)
from streamer.turns import Ticket, Turns, in_turn

LEVELS_STEP = "levels"  # the turn in which a camera's saturation levels are read and updated


def preparation_turns() -> Turns:
    """The ordered turns (:mod:`streamer.turns`) of frames prepared on several threads."""
    return Turns((LEVELS_STEP, PSF_STEP))


@dataclass
class PreparedFrame:
    """Host measurements of a frame, made before it reaches the device.

    ``data`` is the frame to restore when it differs from the input (cores refilled; float32),
    ``mask`` the pixels to leave out of the likelihood (the caller's mask and cores that could
    not be refilled), ``quality_flags`` the data-quality plane of the output."""

    noise: NoiseModel
    psf: PSFMeasurement
    seconds: float
    quality: InputQuality | None = None
    saturation: Saturation = Saturation()
    data: np.ndarray | None = None
    mask: np.ndarray | None = None
    quality_flags: np.ndarray | None = None
    refilled: tuple[CoreFit, ...] = ()
    resolution: Resolution | None = None
    background: MeshLevel | None = None  # the frame's 64 px mesh background (the catalogue's)
    # The frame less that background (float32) when nothing is excluded: the catalogue's own,
    # handed over to it (it is changed in place there).
    subtracted: np.ndarray | None = None


class PSFSettings(Protocol):
    """The PSF fields of the restoration settings (``streamer.settings.RestorationSettings``)."""

    psf: PSFSpec
    psf_fallback: PSFSpec
    psf_measure: PSFMeasureSettings
    psf_smoothing: float
    target_fwhm: float | None
    window: int


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
    target_fwhm : float, optional
        The restored frame's resolution (:mod:`streamer.imaging.target_resolution`); None:
        chosen from each PSF, 0: deconvolve fully.
    window : int, optional
        Eq. 1's median window: the kernel is made from the PSF as it leaves a star
        (:mod:`streamer.imaging.windowed_psf`); None: from the PSF itself.
    """

    def __init__(self, psf: PSFSpec, fallback: PSFSpec,
                 measure: PSFMeasureSettings = PSFMeasureSettings(),
                 smoothing: float = 0.3, target_fwhm: float | None = None,
                 window: int | None = None) -> None:
        self.fixed_psf = None if psf.measured else psf.build()
        self.tracker = PSFTracker(fallback.build(), str(fallback), measure, smoothing)
        self.measure = measure
        self.target_fwhm = target_fwhm
        self.window = window
        self._levels: dict[str, Saturation] = {}  # each camera's last levels seen in its data

    @classmethod
    def from_settings(cls, settings: PSFSettings) -> FramePreparer:
        """The preparer the restoration settings describe."""
        return cls(settings.psf, settings.psf_fallback, settings.psf_measure,
                   settings.psf_smoothing, settings.target_fwhm, settings.window)

    @property
    def default_psf(self) -> np.ndarray:
        """The configured PSF, or the fallback when PSFs are measured (for planning ahead)."""
        return self.fixed_psf if self.fixed_psf is not None else self.tracker.fallback

    def choose_psf(self, image: np.ndarray, valid: np.ndarray, header: fits.Header | None = None,
                   camera_id: str = "default", saturation: Saturation | None = None,
                   detection: psf_stars.Detection | None = None,
                   ticket: Ticket | None = None, invalid: np.ndarray | None = None
                   ) -> PSFMeasurement:
        """The PSF for this frame: the configured one, or measured (per camera);
        ``invalid``: ``~valid``, when made already."""
        if self.fixed_psf is not None:
            return describe(self.fixed_psf, "configured", 0, 0)
        return self.tracker.psf_for(camera_id, image, None, header, saturation, detection,
                                    ticket, ~valid if invalid is None else invalid)

    def prepare(self, frame: Any, header: fits.Header | None = None,
                camera_id: str = "default", mask: Any | None = None, *,
                quality: bool = False, psf: PSFMeasurement | None = None,
                ticket: Ticket | None = None) -> PreparedFrame:
        """Check ``frame`` (see :mod:`streamer.imaging.validation`), find its saturation
        level and linear limit, measure its noise and PSF (and, with ``quality``, the input's
        quality figures), refill its saturated and non-linear star cores; the camera's PSF
        and levels are updated. A given ``psf`` is used instead of measuring one. Frames
        prepared on several threads carry a ``ticket`` (:mod:`streamer.turns`): the camera's
        levels and PSF are then read and updated in fetch order.

        Raises
        ------
        FrameShapeError, FrameDtypeError, MaskError, NoValidPixelError
        """
        started = time.perf_counter()
        user_mask = None if mask is None else checked_mask(mask, np.shape(frame))
        # A 16-bit frame is read as it is: half the bytes of a float32 copy, the same values
        # (and psf_stars._less_background's float32 arithmetic); a copy is made only for
        # cores to refill (_refill).
        image, valid = validated_frame(frame, user_mask, narrow=user_mask is None)
        raw = np.asarray(frame)
        # One detection pass for the PSF's stars, the saturation and the input's quality.
        invalid = excluded(valid)  # every pixel left out: non-finite, or the caller's mask
        detection = psf_stars.detect(image, invalid, self.measure.detect_sigma)
        measured = measure_input(raw, objects=detection.objects) if quality else None
        noise = noise_model(image, header, measured.sky if measured is not None else None)
        with in_turn(ticket, LEVELS_STEP):
            saturation = self._saturation(raw, header, detection, camera_id)
        if psf is None:
            psf = self.choose_psf(image, valid, header, camera_id, saturation, detection,
                                  ticket, invalid)
        prepared = PreparedFrame(noise, psf, 0.0, measured, saturation,
                                 background=detection.background,
                                 subtracted=detection.subtracted if detection.plain else None)
        # A converted frame is prepare's own: its cores are refilled in place, not copied.
        self._refill(prepared, image, valid, detection, user_mask,
                     finite=np.issubdtype(raw.dtype, np.integer),
                     own=not np.may_share_memory(image, raw),
                     nonfinite=invalid if user_mask is None else None)
        prepared.resolution = self.resolution_for(psf)
        prepared.seconds = time.perf_counter() - started
        return prepared

    def resolution_for(self, psf: PSFMeasurement) -> Resolution:
        """The target the frame is restored to and the kernel RL deconvolves
        (:mod:`streamer.imaging.target_resolution`)."""
        return resolution_for(psf, self.target_fwhm, self.window)

    def _saturation(self, raw: np.ndarray, header: fits.Header | None,
                    detection: psf_stars.Detection, camera_id: str) -> Saturation:
        found = frame_saturation(raw, header, detection, configured_saturation(self.measure),
                                 self._levels.get(camera_id))
        if "data" in found.source:
            self._levels[camera_id] = found
        return found

    def _refill(self, prepared: PreparedFrame, image: np.ndarray, valid: np.ndarray,
                detection: psf_stars.Detection, user_mask: np.ndarray | None,
                finite: bool = False, own: bool = False,
                nonfinite: np.ndarray | None = None) -> None:
        """Saturated and non-linear cores refilled with the PSF fitted to their wings; the
        likelihood mask and the data-quality plane (``finite``: every pixel is, an integer
        frame's; ``own``: ``image`` is this preparation's to refill in place; a 16-bit frame
        is converted to float32 here, only when it has cores to refill; ``nonfinite``: the
        frame's non-finite pixels, when mapped already). The saturated
        pixels are a few thousand: kept as positions, made a frame only for the device's
        mask."""
        saturated, nonlinear = saturation_pixels(image, prepared.saturation, detection)
        bad = np.union1d(saturated, nonlinear)
        bad = bad[valid.ravel()[bad]]
        filled, masked = None, user_mask
        if bad.size:
            if image.dtype != np.float32 or not own:
                # into a kept frame-sized array (no fresh pages), refilled in place
                image, own = float32_copy(image), True
            # sep's sky, where the wings sit on: the frame less the detection's subtracted one
            data, filled, fits = refill_core_pixels(image, bad, valid, prepared.psf.psf, None,
                                                    above=detection.subtracted, in_place=own)
            prepared.data, prepared.refilled = data, tuple(fits)
            unfitted = np.setdiff1d(bad, filled, assume_unique=True)
            if unfitted.size:
                # A bleed's tail below S goes with it (flagged masked in the DQ plane).
                tails = bleed_tail_pixels(image.shape, unfitted, detection.subtracted,
                                          prepared.noise.sigma)
                unfitted_mask = as_mask(image.shape, unfitted)
                if tails.size:
                    tail_mask = as_mask(image.shape, tails)
                    unfitted_mask |= tail_mask
                    masked = tail_mask if user_mask is None else (tail_mask | user_mask)
                prepared.mask = (unfitted_mask if user_mask is None
                                 else (unfitted_mask | user_mask))
        if prepared.mask is None and user_mask is not None:
            prepared.mask = user_mask
        prepared.quality_flags = quality_plane(
            image.shape, invalid=None if finite else (
                ~np.isfinite(image) if nonfinite is None else nonfinite), masked=masked,
            saturated=saturated, nonlinear=nonlinear, filled=filled,
            edge=max(prepared.psf.psf.shape) // 2)
