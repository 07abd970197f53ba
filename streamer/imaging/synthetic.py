"""Synthetic star fields with a known truth, for tests, benchmarks and the camera simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


Profile = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _positions(rng: np.random.Generator, shape: tuple[int, int], count: int, margin: int,
               cluster: tuple[float, float, float, int] | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    rows = rng.uniform(margin, height - margin, count)
    columns = rng.uniform(margin, width - margin, count)
    if cluster is not None:  # a Plummer-like core: radius r holds r^3 / (r^2 + a^2)^1.5
        row, column, scale, members = cluster
        fraction = rng.uniform(0.0, 0.97, members)
        radius = scale / np.sqrt(fraction ** (-2.0 / 3.0) - 1.0)
        angle = rng.uniform(0.0, 2.0 * np.pi, members)
        rows = np.concatenate([rows, row + radius * np.sin(angle)])
        columns = np.concatenate([columns, column + radius * np.cos(angle)])
        inside = (rows > 0) & (rows < height - 1) & (columns > 0) & (columns < width - 1)
        rows, columns = rows[inside], columns[inside]
    return rows, columns


def analytic_star_field(
    shape: tuple[int, int],
    profile: Profile,
    radius: int,
    stars: int = 200,
    flux_range: tuple[float, float] = (2e3, 5e4),
    sky: float = 200.0,
    gradient: float = 100.0,
    margin: int = 16,
    seed: int = 0,
    cluster: tuple[float, float, float, int] | None = None,
    saturation: float | None = None,
) -> StarField:
    """A frame of stars at sub-pixel positions, each drawn from an analytic ``profile``
    (``profile(dx, dy)`` at offsets from the star's centre, e.g. a partial of
    :func:`streamer.imaging.psf.moffat_profile`) over a box of ``±radius`` pixels, with a sky
    gradient, Poisson noise and, when ``saturation`` is given, pixels clipped there.

    ``cluster=(row, column, scale, members)`` adds a crowded, Plummer-like cluster. Fluxes
    are drawn log-uniform in ``flux_range``. The returned ``psf`` is the profile centred on a
    pixel and normalised (the true PSF); ``truth`` holds each star's flux at its nearest
    pixel, ``rows``/``columns`` the exact positions.
    """
    rng = np.random.default_rng(seed)
    rows, columns = _positions(rng, shape, stars, min(margin, shape[0] // 4, shape[1] // 4),
                               cluster)
    fluxes = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), rows.size))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    centred = profile(*np.meshgrid(offsets, offsets, indexing="xy"))
    norm = centred.sum()
    expected = np.zeros(shape, dtype=np.float64)
    height, width = shape
    for row, column, flux in zip(rows, columns, fluxes):
        top, left = int(np.floor(row)) - radius, int(np.floor(column)) - radius
        ys = np.arange(top, top + 2 * radius + 2)
        xs = np.arange(left, left + 2 * radius + 2)
        keep_y, keep_x = (ys >= 0) & (ys < height), (xs >= 0) & (xs < width)
        dx, dy = np.meshgrid(xs[keep_x] - column, ys[keep_y] - row, indexing="xy")
        expected[np.ix_(ys[keep_y], xs[keep_x])] += flux * profile(dx, dy) / norm
    truth = np.zeros(shape, dtype=np.float64)
    np.add.at(truth, (np.clip(np.rint(rows).astype(int), 0, height - 1),
                      np.clip(np.rint(columns).astype(int), 0, width - 1)), fluxes)
    background = sky + gradient * np.linspace(0.0, 1.0, width)[None, :] * np.ones((height, 1))
    image = rng.poisson(expected + background).astype(np.float32)
    if saturation is not None:
        image = np.minimum(image, np.float32(saturation))
    return StarField(image, truth, rows, columns, fluxes, centred / norm, background)
