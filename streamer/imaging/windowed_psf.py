"""The PSF as eq. 1's median window leaves a star: the kernel Richardson–Lucy must fit ``C``.

Eq. 1 subtracts from every pixel the median of the window around it. A star stands far above
its sky, so the median around a pixel near it is the median of the star's own light there: a
bright star of profile ``F·h`` arrives in ``C`` as ``F·(h − M(h))``, where ``M`` is the
window's median of ``h`` itself. For a compact PSF ``M(h)`` is zero (fewer than half of any
window's pixels hold light); a PSF with a wide halo loses the halo (the CFHT frame of
mpdaf's test data: 16 % of its PSF's light lies beyond 3 FWHM). Deconvolving ``C`` with the
whole ``h`` then asks the model for a halo the data no longer has: RL moves the halo's light
into the star's core and the residual restoration (``C + s − k ⊛ s``) digs a dark ring where
the halo was — +25 to +36 % of aperture flux and a ring of 1.1σ on that frame.

Farther than half a window from a round star's centre, the window no longer holds the star's
core and takes the halo around the pixel for sky: noise makes that median follow the halo's
local mean, where the noiseless median of ``h`` leaves a part of it. The halo there is cut.
An elongated PSF (a trail) keeps its length: along a trail the window's median is the sky, so
eq. 1 leaves the trail in ``C``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

TRAIL_ELLIPTICITY = 0.5   # from this ellipticity on a PSF is a trail (as psf_measure calls it)


def window_median(psf: np.ndarray, window: int, where: np.ndarray | None = None
                  ) -> np.ndarray:
    """The median of ``psf`` (zero outside its array) in the ``window``-sided square around
    each of its pixels (those ``where`` is true; zero elsewhere): eq. 1's background under a
    star of profile ``psf``."""
    h = np.asarray(psf, dtype=np.float64)
    out = np.zeros_like(h)
    if np.count_nonzero(h) * 2 < window * window:
        # Under half of any window holds light: every median is the zeros around the star.
        return out
    half = window // 2
    windows = sliding_window_view(np.pad(h, half), (window, window))
    chosen = np.ones(h.shape, dtype=bool) if where is None else where
    out[chosen] = np.median(windows[chosen].reshape(-1, window * window), axis=1)
    return out


def windowed_psf(psf: np.ndarray, window: int, ellipticity: float = 0.0) -> np.ndarray:
    """``h − M(h)`` clipped at zero, beyond half a window from the centre cut to zero unless
    the PSF is a trail (``ellipticity`` ≥ :data:`TRAIL_ELLIPTICITY`), renormalised: the
    profile a star has in eq. 1's output, which is what RL deconvolves. Returns the PSF itself
    (as float64, sum 1) where the window leaves it whole."""
    h = np.asarray(psf, dtype=np.float64)
    h = h / h.sum()
    inside = None
    if ellipticity < TRAIL_ELLIPTICITY:
        rows, columns = np.indices(h.shape)
        distance = np.hypot(rows - (h.shape[0] - 1) / 2.0, columns - (h.shape[1] - 1) / 2.0)
        inside = distance <= window / 2.0
    out = np.clip(h - window_median(h, window, inside), 0.0, None)
    if inside is not None:
        out[~inside] = 0.0
    if not out.any():
        return h
    return out / out.sum()
