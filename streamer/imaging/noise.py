"""The noise model of a frame: sky level, sky noise and the variance that a source adds.

Damped Richardson–Lucy needs to know where the model fits the data *within the noise*, and the
discrepancy stopping rule needs the noise to know when the data are explained. Both use

    var(pixel) = sigma² + max(signal, 0) · inverse_gain

where ``sigma`` is the sky noise (sigma-clipped), and ``inverse_gain`` the variance one ADU
of source signal adds (Poisson statistics in electrons: 1 / gain in e-/ADU). The gain comes
from the header (``GAIN`` or ``EGAIN``) when it is there and plausible; otherwise it is
estimated from the sky itself as ``sigma² / sky`` — exact for a sky-noise-limited frame, and
an over-estimate of the source variance (so more damping, never less) when read noise counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streamer.imaging.quality import SkyStatistics, sky_statistics

_GAIN_KEYWORDS = ("GAIN", "EGAIN", "CCDGAIN")


@dataclass(frozen=True)
class NoiseModel:
    """Sky level and noise (ADU) of a frame, and the source variance per ADU."""

    sky: float
    sigma: float
    inverse_gain: float

    def variance(self, signal: np.ndarray | float) -> np.ndarray | float:
        """Variance of pixels holding ``signal`` ADU above the sky."""
        return self.sigma**2 + np.maximum(signal, 0.0) * self.inverse_gain


def header_gain(header: fits.Header | None) -> float | None:
    """The gain in e-/ADU from the header, when one is given and plausible (0.01–1000)."""
    if header is None:
        return None
    for keyword in _GAIN_KEYWORDS:
        value = header.get(keyword)
        try:
            gain = float(value)
        except (TypeError, ValueError):
            continue
        if 0.01 <= gain <= 1000.0:
            return gain
    return None


def noise_model(image: np.ndarray, header: fits.Header | None = None,
                sky: SkyStatistics | None = None) -> NoiseModel:
    """The noise model of ``image`` (its sky statistics measured unless given)."""
    sky = sky or sky_statistics(image)
    sigma = max(float(sky.noise), 1e-12)
    gain = header_gain(header)
    if gain is not None:
        inverse_gain = 1.0 / gain
    elif sky.background > 3.0 * sigma:
        inverse_gain = sigma**2 / sky.background
    else:
        inverse_gain = 0.0  # bias-subtracted or sky-free frame: sky noise only
    return NoiseModel(sky=float(sky.background), sigma=sigma, inverse_gain=inverse_gain)
