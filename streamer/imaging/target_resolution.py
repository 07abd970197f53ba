"""The resolution a frame is restored to, and the kernel that takes it there.

Richardson–Lucy run with the whole PSF ``h`` drives stars towards points: on a sampled
detector they end at one or two pixels, undersampled — centroids jitter, photometry in small
apertures depends on where a star falls in its pixel, faint stars gather light from the noise
around them, and the sky turns into a floor with speckles. "Deconvolution with correct
sampling" (Magain, Courbin & Sohy 1998) restores instead to a finite resolution: a target PSF
``g`` (a round Gaussian of a couple of pixels' FWHM) that the pixels sample properly. Only the
part of ``h`` that is wider than ``g`` is deconvolved: the kernel ``k`` with ``h = k ⊛ g``.

``k`` is found by Richardson–Lucy on the PSF itself — the data ``h``, the "PSF" ``g``, a flat
start — which keeps it non-negative and normalised without the regularisation a Fourier
division needs; it stops once ``g ⊛ k`` matches ``h`` to ``MATCH`` of its peak.

The target: ``TARGET_SHARE`` of the PSF's minor-axis FWHM, at least ``MIN_TARGET_FWHM`` pixels,
and never more than ``MAX_TARGET_SHARE`` of it (so stars come out at least 20 % sharper). A
PSF already narrower than that minimum (an undersampled frame) is restored to
``MAX_TARGET_SHARE`` of its own width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.imaging.psf import validate_psf
from streamer.imaging.psf_measure import PSFMeasurement
from streamer.imaging.windowed_psf import windowed_psf

MIN_TARGET_FWHM = 2.0      # pixels: what a detector samples properly (Nyquist for a Gaussian)
TARGET_SHARE = 0.55        # of the PSF's minor-axis FWHM, when that is above the minimum
MAX_TARGET_SHARE = 0.8     # never wider than this share: stars at least 20 % sharper
MATCH = 2e-3               # g ⊛ k matches h to this share of h's peak
MAX_ITERATIONS = 400


def target_fwhm(psf_fwhm: float, ellipticity: float = 0.0, setting: float | None = None
                ) -> float:
    """The target's FWHM (pixels) for a PSF of ``psf_fwhm`` (geometric mean of its axes) and
    ``ellipticity``: ``setting`` when given (0: no target, deconvolve fully), else the rule of
    the module notes."""
    if setting is not None:
        return float(setting)
    minor = psf_fwhm * math.sqrt(max(1.0 - ellipticity, 0.05))
    return min(max(MIN_TARGET_FWHM, TARGET_SHARE * minor), MAX_TARGET_SHARE * minor)


def gaussian_target(fwhm: float, shape: tuple[int, int]) -> np.ndarray:
    """A round Gaussian of ``fwhm`` pixels on a centred array of ``shape``, integrated over
    each pixel (sum 1)."""
    from scipy.special import erf

    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    scale = math.sqrt(2.0) * sigma

    def pixel_profile(size: int) -> np.ndarray:
        edges = np.arange(size + 1, dtype=np.float64) - (size / 2.0)
        mass = np.diff(erf(edges / scale)) / 2.0
        return mass / mass.sum()

    return np.outer(pixel_profile(shape[0]), pixel_profile(shape[1]))


def narrower_kernel(psf: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``k`` ≥ 0, sum 1, centred, with ``target ⊛ k ≈ psf`` (Richardson–Lucy on the PSF).
    ``psf`` itself when the target is not narrower than it (nothing to undo)."""
    h = np.asarray(psf, dtype=np.float64)
    h = h / h.sum()
    g = np.asarray(target, dtype=np.float64)
    convolved, correlated = _linear_operators(g, h.shape)
    k = np.full(h.shape, 1.0 / h.size)
    tiny = 1e-12 * h.max()
    for _ in range(MAX_ITERATIONS):
        model = convolved(k)
        if np.max(np.abs(model - h)) <= MATCH * h.max():
            break
        k *= np.clip(correlated(h / np.maximum(model, tiny)), 0.0, None)
    k /= k.sum()
    return validate_psf(_recentred(k), "restoration kernel")


def _linear_operators(g: np.ndarray, shape: tuple[int, int]):
    """``g ⊛ x`` and ``g ⋆ x`` (correlation) for ``shape``-d arrays ``x``, cut to ``x``'s
    shape about ``g``'s centre. A separable ``g`` (the Gaussian target: an outer product)
    as two small matrix products — the RL above runs up to 400 iterations, and two FFT pairs
    each cost 0.06-0.09 s a frame in NumPy's per-call overhead, the products a tenth of
    that; any other ``g`` by FFTs of the linear convolution's padded size."""
    top, left = g.shape[0] // 2, g.shape[1] // 2
    u, s, vt = np.linalg.svd(g)
    if s.size > 1 and s[1] <= 1e-12 * s[0]:
        rows = _convolution_matrix(u[:, 0] * np.sqrt(s[0]), shape[0], top)
        columns = _convolution_matrix(vt[0] * np.sqrt(s[0]), shape[1], left)
        return (lambda x: rows @ x @ columns.T), (lambda x: rows.T @ x @ columns)
    size = (shape[0] + g.shape[0], shape[1] + g.shape[1])
    spectrum = np.fft.rfft2(g, size)
    flipped = np.fft.rfft2(g[::-1, ::-1], size)

    def through(x: np.ndarray, kernel_spectrum: np.ndarray) -> np.ndarray:
        full = np.fft.irfft2(np.fft.rfft2(x, size) * kernel_spectrum, size)
        return full[top: top + shape[0], left: left + shape[1]]

    return (lambda x: through(x, spectrum)), (lambda x: through(x, flipped))


def _convolution_matrix(profile: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``M`` with ``(M @ x)[i] = Σ_a profile[i + offset − a] x[a]``: 1-D linear convolution
    with ``profile``, cut to ``x``'s ``length`` from ``offset``."""
    lag = np.arange(length)[:, None] + offset - np.arange(length)[None, :]
    inside = (lag >= 0) & (lag < profile.size)
    return np.where(inside, profile[np.clip(lag, 0, profile.size - 1)], 0.0)


def _recentred(kernel: np.ndarray) -> np.ndarray:
    """The kernel moved so its centroid is on the central pixel (RL on a PSF keeps the PSF's
    centroid; only rounding can move it)."""
    rows, columns = np.indices(kernel.shape)
    centre = ((kernel.shape[0] - 1) / 2.0, (kernel.shape[1] - 1) / 2.0)
    dy = centre[0] - float((rows * kernel).sum())
    dx = centre[1] - float((columns * kernel).sum())
    if abs(dy) < 0.25 and abs(dx) < 0.25:
        return kernel
    from scipy.ndimage import shift

    moved = np.clip(shift(kernel, (dy, dx), order=1, mode="constant"), 0.0, None)
    return moved / moved.sum()


@dataclass(frozen=True)
class Resolution:
    """What a frame is restored to: the target PSF ``target`` (FWHM ``fwhm`` pixels; None when
    restored fully) and the kernel RL deconvolves (``h`` itself when there is no target)."""

    fwhm: float
    target: np.ndarray | None
    kernel: np.ndarray


def resolution_for(psf: PSFMeasurement, setting: float | None = None,
                   window: int | None = None) -> Resolution:
    """The target and kernel for a frame of PSF ``psf`` (``setting``: see :func:`target_fwhm`).
    With eq. 1's ``window`` the kernel is made from the PSF as that window leaves a star
    (:mod:`streamer.imaging.windowed_psf`), the profile stars have in the data RL fits; full
    deconvolution (no target) is textbook RL and deconvolves the PSF as given."""
    fwhm = target_fwhm(psf.fwhm, psf.ellipticity, setting)
    if fwhm <= 0:
        return Resolution(0.0, None, psf.psf)
    h = psf.psf if window is None else windowed_psf(psf.psf, window, psf.ellipticity)
    target = gaussian_target(fwhm, psf.psf.shape)
    return Resolution(fwhm, target, narrower_kernel(h, target))
