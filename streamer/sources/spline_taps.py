"""A PSF's cubic-spline coefficients read at sub-pixel positions for many boxes at once: the
B-spline taps along one axis as a small matrix per source, and each coefficient's share of the
whole shifted PSF's sum — SciPy's ``shift(..., order=3, mode="constant", prefilter=False)``,
edge taps mirrored as SciPy mirrors them (:meth:`streamer.sources.photometry.SplinePSF.
placed_many`)."""

from __future__ import annotations

import numpy as np


def cubic_bspline(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline's weight at offset ``t``."""
    t = np.abs(t)
    return np.where(t < 1.0, 2.0 / 3.0 - t**2 + t**3 / 2.0,
                    np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))


def mirrored(index: np.ndarray, size: int) -> np.ndarray:
    """Indices past a grid's edges reflected about its edge pixels (SciPy's ``mirror``)."""
    period = max(2 * size - 2, 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def box_taps(origin: np.ndarray, shift: np.ndarray, start: np.ndarray, side: int, size: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, per source whose PSF grid starts at ``origin`` and is read ``shift``
    (0-1) back: the first of the ``min(side + 3, size)`` consecutive coefficients its box
    reads, and the weights (``side`` × those) that take them to the box's pixels — zero off
    the PSF's footprint, where :func:`streamer.sources.photometry.add_placed` adds nothing."""
    count = origin.size
    grid = (start - origin)[:, None] + np.arange(side)   # the PSF-grid index of each pixel
    read = grid - shift[:, None]
    taps = np.floor(read).astype(int)[:, :, None] - 1 + np.arange(4)
    weights = cubic_bspline(read[:, :, None] - taps)
    weights *= ((grid >= 0) & (grid < size) & (read >= 0))[:, :, None]
    # A box's taps run over side + 3 consecutive coefficients; mirrored at the edges, those
    # it reads inside the footprint stay within the same span, moved inside the grid.
    span = min(side + 3, size)
    first = np.clip(taps[:, 0, 0], 0, size - span)
    matrix = np.zeros((count, side, span))
    sources = np.arange(count)[:, None, None]
    pixels = np.arange(side)[None, :, None]
    place = np.clip(mirrored(taps, size) - first[:, None, None], 0, span - 1)
    np.add.at(matrix, (sources, pixels, place), weights)
    return first, matrix


def shifted_sums(shift: np.ndarray, size: int) -> np.ndarray:
    """Per source, how much each coefficient adds to the sum of the whole PSF read ``shift``
    back along one axis, as SciPy's shift with ``mode="constant"`` reads it: nothing before
    the grid's start, and taps past an edge mirrored about the edge pixel."""
    read = np.arange(size)[None, :] - shift[:, None]
    first = np.floor(read).astype(int) - 1
    sums = np.zeros((shift.size, size))
    sources = np.arange(shift.size)[:, None]
    for tap in range(4):
        index = first + tap
        np.add.at(sums, (sources, mirrored(index, size)),
                  cubic_bspline(read - index) * (read >= 0))
    return sums
