"""Synthetic star fields with a known truth, for tests, benchmarks and the camera simulator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StarField:
    """A blurred, noisy frame and what it was made from."""

    image: np.ndarray          # observed frame, float32
    truth: np.ndarray          # point sources on a zero background, float64
    rows: np.ndarray
    columns: np.ndarray
    fluxes: np.ndarray
    psf: np.ndarray
    background: np.ndarray     # the sky (level + gradient) that was added


def _convolve_same(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Linear convolution, same size, zero outside (numpy FFT: no SciPy needed)."""
    ph, pw = psf.shape
    shape = (image.shape[0] + ph - 1, image.shape[1] + pw - 1)
    product = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(psf, shape), shape)
    top, left = ph // 2, pw // 2
    return product[top : top + image.shape[0], left : left + image.shape[1]]


def star_field(
    shape: tuple[int, int],
    psf: np.ndarray,
    stars: int = 200,
    flux_range: tuple[float, float] = (2e3, 5e4),
    sky: float = 200.0,
    gradient: float = 100.0,
    margin: int = 16,
    seed: int = 0,
) -> StarField:
    """A frame of point stars blurred by ``psf`` with Poisson noise and a sky gradient.

    Stars lie at integer pixels at least ``margin`` from the edges; the sky rises linearly by
    ``gradient`` across the columns.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    margin = min(margin, height // 4, width // 4)
    rows = rng.integers(margin, height - margin, stars)
    columns = rng.integers(margin, width - margin, stars)
    fluxes = rng.uniform(*flux_range, stars)
    truth = np.zeros(shape, dtype=np.float64)
    np.add.at(truth, (rows, columns), fluxes)
    background = sky + gradient * np.linspace(0.0, 1.0, width)[None, :] * np.ones((height, 1))
    expected = np.clip(_convolve_same(truth, psf), 0.0, None) + background
    image = rng.poisson(expected).astype(np.float32)
    return StarField(image, truth, rows, columns, fluxes, psf, background)
