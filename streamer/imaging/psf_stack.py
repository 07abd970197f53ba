"""The empirical PSF: stars registered to a common centre and stacked (the ePSF of Anderson &
King 2000, at the frame's own sampling), and the analytic fits that back it.

Each stamp is shifted by a Fourier phase ramp — band-limited interpolation, which keeps a
near-Nyquist star's width where a cubic spline broadens a 2-pixel FWHM by 4–7 % — normalised
by its flux and combined with the others in a sigma-clipped mean; NaN pixels (masked
neighbours) take no part. Centres are refined against the stack and the stack rebuilt. Where
the stack's signal-to-noise falls below a few, an elliptical Moffat fitted to it takes over,
so the PSF keeps its wings without keeping its noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.imaging.clipped_stats import nan_median
from streamer.imaging.fft_lengths import smooth_length
from streamer.imaging.moffat_fit import fit_moffat, moffat_model
from streamer.imaging.sparse_masks import grown


def shifted(stamp: np.ndarray, dy: float, dx: float, pad: int = 8) -> np.ndarray:
    """``stamp`` moved by a sub-pixel ``(dy, dx)``; NaN pixels stay NaN (grown by the
    interpolation's reach of one pixel) and take no part in moving the others."""
    return shifted_many([stamp], [(dy, dx)], pad)[0]


def shifted_many(stamps: list[np.ndarray], shifts: list[tuple[float, float]], pad: int = 8,
                 transform: Transform | None = None) -> list[np.ndarray]:
    """:func:`shifted` for many stamps of one shape at once; ``transform``: the stamps'
    :func:`transformed`, when made already (a stack registers the same stamps five times).

    The shift is the band-limited one of each stamp zero-padded by at least ``pad`` to an
    odd length ``P`` (a phase ramp on its discrete Fourier transform), written as what it is
    on the stamp's own pixels: along each axis a matrix of the periodic sinc (Dirichlet
    kernel) ``sin(π x) / (P sin(π x / P))`` at ``x = i − j − d``, one product a side
    (for a 4096² frame's PSF stars a quarter of the time two batched FFTs took). The same
    values as the transforms', to rounding."""
    if len({stamp.shape for stamp in stamps}) != 1:  # none, or shapes that do not stack
        return [shifted_many([stamp], [move], pad)[0] for stamp, move in zip(stamps, shifts)]
    made = transform if transform is not None else transformed(stamps, pad)
    if made.invalid.shape != (len(shifts), *stamps[0].shape):
        raise ValueError(f"a transform of {made.invalid.shape[0]} stamps of "
                         f"{made.invalid.shape[1:]} px for {len(shifts)} of "
                         f"{stamps[0].shape} px: transform these stamps")
    height, width = made.invalid.shape[1:]
    dy = np.array([shift[0] for shift in shifts], dtype=np.float64)
    dx = np.array([shift[1] for shift in shifts], dtype=np.float64)
    along_rows = _shift_matrices(height, made.padded[0], dy)
    along_columns = _shift_matrices(width, made.padded[1], dx)
    moved = np.matmul(np.matmul(along_rows, made.filled), along_columns.transpose(0, 2, 1))
    out = list(moved)
    holed = np.flatnonzero(made.invalid.any(axis=(1, 2)))
    if holed.size:
        spread = _moved_holes(made.invalid[holed], dy[holed], dx[holed])
        for index, grown_holes in zip(holed, spread):
            out[index][grown_holes] = np.nan
    return out


def _shift_matrices(length: int, padded: int, moves: np.ndarray) -> np.ndarray:
    """For each move ``d``, the ``length`` × ``length`` matrix taking an axis's pixels to
    the same axis band-limited shifted by ``d`` on a zero-padded circle of ``padded`` (odd)
    pixels: entry ``(i, j)`` is the Dirichlet kernel ``sin(π x) / (P sin(π x / P))`` at
    ``x = i − j − d``."""
    steps = np.arange(-(length - 1), length)                       # i − j
    whole = np.rint(moves)
    fraction = moves - whole                                       # in [−½, ½], exact
    # The kernel has period P (odd): x is taken to its nearest turn, so the sines below are
    # of small arguments. Its numerator, sin(π (k − d)) for an integer k = i − j − whole − P w,
    # is −(−1)^k sin(π · fraction): exact signs, and no sine of a large or near-whole argument
    # (whose rounding, divided by a denominator near zero, was off by up to 1.7 px units).
    x = steps[None, :] - moves[:, None]
    turns = np.rint(x / padded)
    x = x - padded * turns
    parity = (steps[None, :] - whole[:, None].astype(np.int64)
              - turns.astype(np.int64)) % 2
    numerator = np.where(parity == 0, -1.0, 1.0) * np.sin(np.pi * fraction)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(x == 0.0, 1.0, numerator / (padded * np.sin(np.pi * x / padded)))
    picks = np.arange(length)[:, None] - np.arange(length)[None, :] + (length - 1)
    return kernel[:, picks]


@dataclass(frozen=True)
class Transform:
    """Stamps of one shape ready to be moved: their pixels with NaN as 0, the NaN pixels,
    and the odd lengths they are padded to."""

    filled: np.ndarray            # stamps × rows × columns, float64, NaN as 0
    invalid: np.ndarray           # stamps × rows × columns, bool
    padded: tuple[int, int]       # the padded stamp's shape
    pad: int


def transformed(stamps: list[np.ndarray], pad: int = 8) -> Transform:
    """The :class:`Transform` of ``stamps`` (one shape) for :func:`shifted_many`."""
    cube = np.array(stamps, dtype=np.float64)
    invalid = ~np.isfinite(cube)
    # At least ``pad`` zeros each side, and more after to a length FFTs do fast (the shifts
    # were transforms; the lengths, and so the shifts, are kept).
    height, width = cube.shape[1:]
    padded = (_odd_fast_length(height + 2 * pad), _odd_fast_length(width + 2 * pad))
    return Transform(np.where(invalid, 0.0, cube), invalid, padded, pad)


def _moved_holes(invalid: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Where each stack of NaN masks reaches once moved by ``(dy, dx)`` and grown by the
    4-neighbour cross: SciPy's ``binary_dilation(shift(mask, (dy, dx), order=1) > 0.01)``
    (bilinear; an output pixel whose source lies past the edge reads 0) for all at once."""
    moved = invalid.astype(np.float64)
    for axis, steps in ((1, dy), (2, dx)):
        length = moved.shape[axis]
        source = np.arange(length)[None, :] - steps[:, None]       # stamps × length
        inside = (source >= 0) & (source <= length - 1)
        low = np.clip(np.floor(source).astype(int), 0, max(length - 2, 0))
        high = np.minimum(low + 1, length - 1)
        upper = np.where(inside, source - low, 0.0)
        lower = np.where(inside, 1.0 - upper, 0.0)
        take = (lambda index: np.take_along_axis(moved, index[:, :, None], 1)) if axis == 1 \
            else (lambda index: np.take_along_axis(moved, index[:, None, :], 2))
        shape = (-1, length, 1) if axis == 1 else (-1, 1, length)
        moved = lower.reshape(shape) * take(low) + upper.reshape(shape) * take(high)
    return grown(moved > 0.01, 1)


def _odd_fast_length(length: int) -> int:
    """The least odd length from ``length`` on whose factors are all 3, 5, 7 or 11 (fast
    for the FFT). Odd, as an odd stamp padded evenly is: an even length has a Nyquist row
    and column, which a phase ramp can only damp (by cos πd), not shift."""
    return smooth_length(length if length % 2 else length + 1, (3, 5, 7, 11), step=2)


def _registered(stamps: list[np.ndarray], centres: list[tuple[float, float]], half: int,
                transform: Transform | None = None) -> list[np.ndarray]:
    """Each stamp moved so its ``centre`` falls on its central pixel, cropped to ``half``."""
    if not stamps:
        return []
    middles = [(stamp.shape[0] - 1) / 2.0 for stamp in stamps]
    moved = shifted_many(stamps, [(m - cy, m - cx) for m, (cy, cx) in zip(middles, centres)],
                         transform=transform)
    crops = [int(m) - half for m in middles]
    return [layer[c: c + 2 * half + 1, c: c + 2 * half + 1] for layer, c in zip(moved, crops)]


def stack(stamps: list[np.ndarray], centres: list[tuple[float, float]], half: int,
          aperture: float, transform: Transform | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped mean of the registered, flux-normalised stamps (cropped to ``half``),
    and the per-pixel standard error of that mean. A stamp's flux is its sum within
    ``aperture`` pixels; masked pixels there take the other stamps' mean."""
    from astropy.stats import sigma_clip

    ys, xs = np.mgrid[-half: half + 1, -half: half + 1]
    inside = ys**2 + xs**2 <= aperture**2
    layers = np.array(_registered(stamps, centres, half, transform))
    if layers.size == 0:
        raise ValueError("no stamps to stack")
    # All the layers at once (a loop over them was a third of a stack's time). A first,
    # unweighted look fills each layer's masked aperture pixels for its flux.
    ring = layers[:, inside]                                   # stamps × aperture pixels
    guess = np.nan_to_num(nan_median(layers / np.nansum(ring, axis=1)[:, None, None], 0))
    known = np.isfinite(ring)
    share = np.where(known, guess[inside], 0.0).sum(axis=1) / max(guess[inside].sum(), 1e-300)
    flux = np.where(known, ring, 0.0).sum(axis=1) / np.maximum(share, 1e-3)
    normalised = layers[flux > 0] / flux[flux > 0, None, None]
    cube = sigma_clip(np.ma.masked_invalid(normalised), sigma=3.0, maxiters=3, axis=0)
    mean = np.ma.mean(cube, axis=0).filled(0.0)
    used = np.maximum(np.ma.count(cube, axis=0), 1)
    error = np.ma.std(cube, axis=0).filled(0.0) / np.sqrt(used)
    return mean, np.where(np.ma.count(cube, axis=0) > 0, error, np.inf)


def refine(stamps: list[np.ndarray], centres: list[tuple[float, float]], psf: np.ndarray,
           transform: Transform | None = None) -> list[tuple[float, float]]:
    """Centres refined against the stack: each star's PSF-weighted centroid offset (the
    centroid of PSF × star lies halfway between their centres)."""
    if not stamps:
        return []
    half = psf.shape[0] // 2
    ys, xs = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float64)
    weight = np.clip(psf, 0.0, None)
    layers = np.array(_registered(stamps, centres, half, transform))
    product = np.nan_to_num(weight * layers)
    total = product.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        dy = np.clip(2.0 * (product * ys).sum(axis=(1, 2)) / total, -0.5, 0.5)
        dx = np.clip(2.0 * (product * xs).sum(axis=(1, 2)) / total, -0.5, 0.5)
    return [(cy + float(move_y), cx + float(move_x)) if weighed > 0 else (cy, cx)
            for (cy, cx), move_y, move_x, weighed in zip(centres, dy, dx, total)]


def blend_wings(mean: np.ndarray, error: np.ndarray, start_fwhm: float) -> np.ndarray:
    """The stack where its S/N is high, an elliptical Moffat fitted to it where it is not;
    a constant under the stack (what the local sky subtraction left) removed first."""
    half = mean.shape[0] // 2
    floor = np.where(np.isfinite(error), np.maximum(error, 1e-6 * mean.max()), 1e6 * mean.max())
    *_, pedestal = fit_moffat([mean], [floor], start_fwhm, constant=True)
    mean = mean - pedestal
    fwhm, beta, ellipticity, angle, _ = fit_moffat([mean], [floor], start_fwhm)
    model = moffat_model(np.array([1.0, fwhm, beta, ellipticity, angle, 0.0, 0.0]), half)
    core = mean > mean.max() / 2.0
    model *= mean[core].sum() / model[core].sum()
    trust = np.clip((mean / floor - 2.0) / 3.0, 0.0, 1.0)
    return trust * mean + (1.0 - trust) * model
