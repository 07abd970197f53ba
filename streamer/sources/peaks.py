"""The local peaks of an S/N map: 3×3 maxima above a threshold, each with at least ``MINAREA``
of its 3×3 pixels above it too (one noise spike is not a star), at its 3×3 light-weighted
centroid. The catalogue takes the restored frame's peaks as candidates for the stars a
matched filter merges (:mod:`streamer.sources.detection`).

Made here from a whole map (:func:`local_peaks`), or from the candidates the device found on
its own copy of the map (:class:`PeakCandidates`, :mod:`streamer.restoration.restored_peaks`):
every local maximum above a floor below the threshold, with its 3×3 neighbourhood, so that the
map's sky level — measured on the host, on a sample the device sends with them — can be taken
off before the threshold is applied, and the map itself never crosses to the host. Both give
the same peaks, bit for bit: the second half of the work is one function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from streamer.imaging.clipped_stats import clipped_stats
from streamer.imaging.pixel_objects import MINAREA

log = logging.getLogger(__name__)

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # a neighbourhood's order
SKY_SAMPLE = 1 << 18  # pixels of a map its sky mode is measured on


@dataclass(frozen=True)
class PeakCandidates:
    """A map's local maxima above ``floor`` (rows, columns, row-major order) with their 3×3
    neighbourhoods (``near``, one row of 9 per candidate, row by row; ``-inf`` where a
    neighbour is excluded or past the edge), and every :func:`sky_step`-th pixel of the map
    (``sample``) for its sky level."""

    rows: np.ndarray
    columns: np.ndarray
    near: np.ndarray
    floor: float
    sample: np.ndarray

    def peaks(self, threshold: float, sky: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What :func:`local_peaks` finds on the map less ``sky`` at ``threshold``."""
        if threshold + sky < self.floor:
            # The device's floor sits a margin below the threshold; a sky that far below zero
            # says the restored frame's background went wrong. The peaks between are lost.
            log.warning("the restored map's sky (%.2f) is below the floor its peaks were "
                        "found above (%.2f less the threshold %.2f): some blends' stars may "
                        "be missed", sky, self.floor, threshold)
        near = self.near - sky  # float32, as the whole map less its sky would be
        keep = near[:, 4] > threshold
        return peaks_of(self.rows[keep], self.columns[keep], near[keep], threshold)


def sky_step(shape: tuple[int, ...]) -> int:
    """Every how many pixels of each axis a map's sky mode reads (about ``SKY_SAMPLE``)."""
    return max(1, int(np.sqrt(shape[0] * shape[1] / SKY_SAMPLE)))


def sky_mode(snr: np.ndarray) -> float:
    """The sky level of a map with a flat sky (the device's map of the restored frame, whose
    sky the median background flattened): :func:`sample_sky_mode` of every
    :func:`sky_step`-th pixel."""
    step = sky_step(snr.shape)
    return sample_sky_mode(np.asarray(snr[::step, ::step]))


def sample_sky_mode(sample: np.ndarray) -> float:
    """SExtractor's mode of a sample of a map with a flat sky: 2.5 median − 1.5 mean of the
    3σ-clipped pixels, the median where that is skewed. The sky of ``C`` that the device
    subtracted (``−min B``) sat 0.78 below it in S/N on the sources profile's field — enough
    to cost faint restored peaks their threshold."""
    sample = sample[np.isfinite(sample)]
    if sample.size < 100:
        return 0.0
    mean, median, std = clipped_stats(sample, sigma=3.0, maxiters=5)
    skewed = std > 0 and abs(mean - median) > 0.3 * std
    return float(median if skewed else 2.5 * median - 1.5 * mean)


def local_peaks(snr: np.ndarray, threshold: float, mask: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The local maxima (3×3, edges repeated) of ``snr`` above ``threshold`` with at least
    ``MINAREA`` of their 3×3 pixels above it too: positions refined to the 3×3 light-weighted
    centroid, and heights. Masked pixels neither peak nor hide a neighbour's peak. Only the
    pixels above the threshold are looked at — a few per cent of a frame — so there is no
    whole-frame filter (0.66 s at 4096²): these are candidates, each vetted on the data."""
    values = np.asarray(snr)
    rows, columns = local_maxima(values, threshold, mask)
    return peaks_of(rows, columns, neighbourhoods(values, rows, columns, mask), threshold)


def local_maxima(values: np.ndarray, threshold: float, mask: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns (row-major order) of the pixels of ``values`` above
    ``threshold`` that no unmasked pixel of their 3×3 neighbourhood (edges repeated)
    exceeds, masked pixels left out."""
    above = values > threshold
    if mask is not None:
        above &= ~mask
    rows, columns = np.nonzero(above)
    height, width = values.shape
    centre = values[rows, columns]
    # Each neighbour test thins the candidates: most pixels above the threshold are a star's
    # flank and fail within a test or two.
    for dy, dx in _OFFSETS:
        if dy == dx == 0:
            continue
        near_rows = np.clip(rows + dy, 0, height - 1)
        near_columns = np.clip(columns + dx, 0, width - 1)
        peak = values[near_rows, near_columns] <= centre  # the edge repeated: mode="nearest"
        if mask is not None:
            peak |= mask[near_rows, near_columns]
        rows, columns, centre = rows[peak], columns[peak], centre[peak]
    return rows, columns


def neighbourhoods(values: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                   mask: np.ndarray | None) -> np.ndarray:
    """The 3×3 neighbourhood of each pixel ``(rows, columns)`` of ``values``, one row of 9
    (row by row) per pixel, ``-inf`` where a neighbour is masked or past the edge."""
    height, width = values.shape
    near = np.empty((rows.size, 9), dtype=values.dtype)
    for index, (dy, dx) in enumerate(_OFFSETS):
        near_rows, near_columns = rows + dy, columns + dx
        inside = ((near_rows >= 0) & (near_rows < height) & (near_columns >= 0)
                  & (near_columns < width))
        near_rows = np.clip(near_rows, 0, height - 1)
        near_columns = np.clip(near_columns, 0, width - 1)
        if mask is not None:
            inside &= ~mask[near_rows, near_columns]
        near[:, index] = np.where(inside, values[near_rows, near_columns], -np.inf)
    return near


def peaks_of(rows: np.ndarray, columns: np.ndarray, near: np.ndarray, threshold: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The peaks among local maxima ``(rows, columns)`` whose 3×3 ``neighbourhoods`` hold at
    least ``MINAREA`` pixels above ``threshold``: x, y at the light-weighted centroid of those
    pixels, and the maxima's heights."""
    total, sum_y, sum_x, crowd = (np.zeros(rows.size) for _ in range(4))
    for index, (dy, dx) in enumerate(_OFFSETS):
        value = near[:, index]
        weight = np.where(value > threshold, value, 0.0)
        crowd += value > threshold
        total += weight
        sum_y += dy * weight
        sum_x += dx * weight
    keep = crowd >= MINAREA
    return ((columns + sum_x / total)[keep], (rows + sum_y / total)[keep],
            near[:, 4][keep].astype(float))
