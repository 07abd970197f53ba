"""Float64 NumPy references of the project's algorithms, written from the equations, sharing
no code with the OpenCL path."""

from __future__ import annotations

import numpy as np
from scipy.signal import correlate


def richardson_lucy_reference(data: np.ndarray, psf: np.ndarray, num_iter: int,
                              weight: np.ndarray | None = None, background: float = 0.0,
                              damping: float = 0.0, sigma: float = 1.0,
                              inverse_gain: float = 0.0, sky: float | None = None,
                              accelerate: bool = False, max_alpha: float = 0.95) -> np.ndarray:
    """Richardson–Lucy on the extended domain (frame + PSF radius), weights w, normalised by
    h' ⊛ w — the boundary rule of streamer.restoration.richardson_lucy — in float64; with the
    model ``h ⊛ u + background`` and White's damping at ``damping`` sigmas (variance
    ``sigma² + max(M - sky, 0) · inverse_gain``; ``sky`` defaults to ``background``). Returns
    ``u + background`` levelled to the data's sum over the valid pixels.

    u0: the data (excluded pixels: the mean of the valid ones) less the background, edge
    rows/columns replicated into the margin, floored at 1e-3 × the data's mean.

    ``accelerate``: Biggs & Andrews (1997) — each RL step x_{k+1} = ψ(y_k) is taken from
    y_k = max(x_k + α (x_k − x_{k−1}), 0), α = <g_{k−1}, g_{k−2}> / <g_{k−2}, g_{k−2}> clipped
    to [0, max_alpha], g_k = x_{k+1} − y_k (α = 0 until two steps exist); the last step is not
    extrapolated.
    """
    data = np.asarray(data, dtype=np.float64)
    psf = np.asarray(psf, dtype=np.float64)
    sky = background if sky is None else sky
    ry, rx = psf.shape[0] // 2, psf.shape[1] // 2
    height, width = data.shape
    w = np.ones_like(data) if weight is None else np.asarray(weight, dtype=np.float64)
    flipped = psf[::-1, ::-1]
    mean = data[w > 0].mean()
    start = np.where(w > 0, data, mean) - background
    u = np.maximum(np.pad(start, ((ry, ry), (rx, rx)), mode="edge"), max(mean * 1e-3, 1e-11))

    def backward(frame_values: np.ndarray) -> np.ndarray:
        # h' ⊛ x on the extended domain, x zero outside the frame.
        padded = np.pad(frame_values, ((2 * ry, 2 * ry), (2 * rx, 2 * rx)))
        return correlate(padded, psf, mode="valid")

    norm = backward(w)
    previous_x = previous_g = None
    for iteration in range(num_iter):
        start_point = u
        model = correlate(u, flipped, mode="valid") + background    # h ⊛ u + b on the frame
        safe = np.where(model > 1e-12, model, 1.0)
        if damping > 0:
            variance = sigma**2 + np.maximum(model - sky, 0.0) * inverse_gain
            damped = np.minimum((data - model) ** 2 / (damping**2 * variance), 1.0)
            factor = damped**9 * (10.0 - 9.0 * damped)
            ratio = 1.0 + factor * (data - model) / safe
        else:
            ratio = data / safe
        ratio = np.where((w > 0) & (model > 1e-12), w * ratio, 0.0)
        u = np.where(norm > 1e-6, u * backward(ratio) / np.where(norm > 0, norm, 1), 0.0)
        if accelerate and iteration < num_iter - 1:
            g = u - start_point
            alpha = 0.0
            if previous_g is not None and np.sum(previous_g**2) > 0:
                alpha = min(max(np.sum(g * previous_g) / np.sum(previous_g**2), 0.0), max_alpha)
            x = u
            u = np.maximum(x + alpha * (x - previous_x), 0.0) if previous_x is not None else x
            previous_x, previous_g = x, g
    out = u[ry : ry + height, rx : rx + width] + background
    valid = w > 0
    return out - (out[valid].sum() - data[valid].sum()) / valid.sum()


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


def point_sources(shape: tuple[int, int], rows: np.ndarray, columns: np.ndarray,
                  fluxes: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The true stars seen through a Gaussian of ``sigma`` pixels (exact at sub-pixel
    positions): what a perfect restoration looks like at that resolution."""
    image = np.zeros(shape)
    reach = int(np.ceil(6 * sigma))
    for row, column, flux in zip(rows, columns, fluxes):
        r0, c0 = int(row), int(column)
        ys, xs = np.mgrid[max(r0 - reach, 0): min(r0 + reach + 1, shape[0]),
                          max(c0 - reach, 0): min(c0 + reach + 1, shape[1])]
        image[ys, xs] += flux * np.exp(-((ys - row) ** 2 + (xs - column) ** 2) / (2 * sigma**2))
    return image / (2 * np.pi * sigma**2)


def restoration_error(restored: np.ndarray, truth: np.ndarray, sigma: float = 1.0) -> float:
    """Relative distance of a restoration (its sky level removed) from the truth, both seen
    at the resolution of a Gaussian of ``sigma`` pixels (``truth`` from
    :func:`point_sources` with the same sigma)."""
    from astropy.stats import sigma_clipped_stats
    from scipy.ndimage import gaussian_filter

    finite = np.isfinite(restored)
    _, sky, _ = sigma_clipped_stats(restored[finite][::7])
    smoothed = gaussian_filter(np.where(finite, restored, sky) - sky, sigma)
    return float(np.linalg.norm(smoothed - truth) / np.linalg.norm(truth))
