"""Float64 NumPy references of the project's algorithms, written from the equations, sharing
no code with the OpenCL path."""

from __future__ import annotations

import numpy as np
from scipy.signal import correlate


def richardson_lucy_reference(data: np.ndarray, psf: np.ndarray, num_iter: int,
                              weight: np.ndarray | None = None) -> np.ndarray:
    """Richardson–Lucy on the extended domain (frame + PSF radius), weights w, normalised by
    h' ⊛ w — the boundary rule of streamer.restoration.richardson_lucy — in float64.

    u0: the data (excluded pixels: the mean of the valid ones) with edge rows/columns
    replicated into the margin, floored at 1e-3 × that mean.
    """
    data = np.asarray(data, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    ry, rx = psf.shape[0] // 2, psf.shape[1] // 2
    height, width = data.shape
    w = np.ones_like(data) if weight is None else np.asarray(weight, dtype=np.float64)
    flipped = psf[::-1, ::-1]
    mean = data[w > 0].mean()
    start = np.where(w > 0, data, mean)
    u = np.maximum(np.pad(start, ((ry, ry), (rx, rx)), mode="edge"), max(mean * 1e-3, 1e-11))

    def backward(frame_values: np.ndarray) -> np.ndarray:
        # h' ⊛ x on the extended domain, x zero outside the frame.
        padded = np.pad(frame_values, ((2 * ry, 2 * ry), (2 * rx, 2 * rx)))
        return correlate(padded, psf, mode="valid")

    norm = backward(w)
    for _ in range(num_iter):
        model = correlate(u, flipped, mode="valid")          # h ⊛ u on the frame
        ratio = np.where((w > 0) & (model > 1e-12), w * data / np.where(model > 0, model, 1), 0.0)
        correction = backward(ratio)
        u = np.where(norm > 1e-6, u * correction / np.where(norm > 0, norm, 1), 0.0)
    return u[ry : ry + height, rx : rx + width]


def measure_fwhm(image: np.ndarray, row: int, column: int, half: int = 6) -> float:
    """FWHM of a star from a least-squares fit of a circular Gaussian plus a constant to the
    box of side ``2 * half + 1`` centred on it."""
    from scipy.optimize import curve_fit

    box = image[row - half : row + half + 1, column - half : column + half + 1].astype(np.float64)
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1]

    def model(coordinates, amplitude, y0, x0, sigma, level):
        y, x = coordinates
        return amplitude * np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * sigma**2)) + level

    start = (box.max() - np.median(box), 0.0, 0.0, 1.5, np.median(box))
    parameters, _ = curve_fit(model, (ys.ravel(), xs.ravel()), box.ravel(), p0=start, maxfev=5000)
    return float(2.0 * np.sqrt(2.0 * np.log(2.0)) * abs(parameters[3]))
