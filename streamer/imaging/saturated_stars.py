"""Saturated and non-linear star cores, refilled from the star's own linear wings.

Left in Richardson–Lucy's likelihood, a flat-topped core has only one non-negative explanation
— a ring — so saturated stars come out as donuts; left out of it (weight 0), a core larger
than the PSF's reach has nothing to be estimated from and comes out as a hole. What DAOPHOT
does for photometry (Stetson 1987: pixels above the "high good datum" are excluded and the
star is fitted on its wings) is done here to the data: each connected region of saturated or
non-linear pixels is fitted on the unaffected pixels around it with the frame's PSF — a
sub-pixel centre, an amplitude and a local sky — and its pixels are replaced by that model.
Restoration then sees a star of the PSF's shape and the flux its wings imply; the data-quality
plane marks the replaced pixels ``FILLED``. A region whose wings cannot carry a fit (too few
clean pixels, a non-positive amplitude) is left to the mask: weight 0, NaN in the output. So
is one the fit does not explain: a clipped or compressed pixel's true value is at least what
was recorded, so a model that stays below half the recorded values over a quarter of the
region (the bleed a saturated star spills along its columns, hundreds of pixels long, that
one PSF cannot reach) would replace light by sky, and Richardson–Lucy would answer with a
trough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.imaging import psf_stack
from streamer.imaging.saturation import BLEED_ASPECT
from streamer.imaging.sparse_masks import as_mask, label_pixels

MIN_WING_PIXELS = 12       # clean pixels a fit needs around a core
WING_FRACTION = 1e-3       # pixels where the PSF is below this share of its peak are not used
SHIFT_STEPS = (-0.5, -0.25, 0.0, 0.25, 0.5)   # sub-pixel centres tried (pixels)
BELOW_RECORDED = 0.5       # a model below half a bad pixel's recorded value ...
BELOW_SHARE = 0.25         # ... on more than a quarter of the region does not explain it
TAIL_SIGMAS = 10.0         # a masked bleed's tail: pixels this far above the sky along its axis
TAIL_REACH = 256           # ... followed this far at most (pixels)


@dataclass(frozen=True)
class CoreFit:
    """One refilled core: its centre (row, column), flux (the PSF's total times the fitted
    amplitude) and local sky, and the number of pixels replaced."""

    row: float
    column: float
    flux: float
    sky: float
    pixels: int


def refill_cores(image: np.ndarray, bad: np.ndarray, valid: np.ndarray, psf: np.ndarray,
                 background: np.ndarray | float | None = 0.0,
                 above: np.ndarray | None = None, in_place: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, list[CoreFit]]:
    """The frame with each region of ``bad`` pixels replaced by a PSF fitted to its clean
    surroundings above ``background`` (the frame's sky; a constant fitted beside the star
    would take the wings' light for sky); the mask of replaced pixels; the fits. ``image`` is
    not modified (``in_place``: it is, and returned — a float32 frame the caller owns; the
    copy is a whole-frame pass); regions that cannot be fitted are left as they are (and not
    in the mask). ``above``: the frame less its background, when made already (the
    background is then ``image − above``, read only around the cores: no whole-frame
    passes)."""
    filled, replaced, fits = refill_core_pixels(image, np.flatnonzero(bad), valid, psf,
                                                background, above, in_place)
    return filled, as_mask(image.shape, replaced), fits


def refill_core_pixels(image: np.ndarray, bad: np.ndarray, valid: np.ndarray,
                       psf: np.ndarray, background: np.ndarray | float | None = 0.0,
                       above: np.ndarray | None = None, in_place: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, list[CoreFit]]:
    """:func:`refill_cores` of the bad pixels at the row-major positions ``bad`` (ascending,
    each once), the replaced ones returned as positions (ascending): no frame-sized masks."""
    filled = image if in_place and image.dtype == np.float32 else np.array(image, np.float32)
    replaced: list[np.ndarray] = []
    fits: list[CoreFit] = []
    if bad.size == 0:
        return filled, np.zeros(0, np.int64), fits
    labels, _, boxes = label_pixels(image.shape, bad)
    half = max(psf.shape) // 2
    if above is None:
        above = filled - np.asarray(background if background is not None else 0.0,
                                    dtype=np.float32)
    width = image.shape[1]
    for index, box in enumerate(boxes, start=1):
        fit = _fit_core(above, labels, index, box, valid, psf, half)
        if fit is None:
            continue
        core, model = fit
        region = labels[core.box] == index
        recorded = above[core.box][region]
        if np.mean(model[region] < BELOW_RECORDED * recorded) > BELOW_SHARE:
            continue  # not one star's core: left to the mask
        sky = (np.broadcast_to(np.asarray(background, dtype=np.float32), image.shape)[core.box]
               if background is not None or above is None
               else filled[core.box] - above[core.box])
        filled[core.box][region] = (model + sky)[region]
        rows, columns = np.nonzero(region)
        replaced.append((rows + core.box[0].start) * width + columns + core.box[1].start)
        fits.append(CoreFit(core.row, core.column, core.flux, core.sky, int(region.sum())))
    replaced_at = np.unique(np.concatenate(replaced)) if replaced else np.zeros(0, np.int64)
    return filled, replaced_at, fits


@dataclass(frozen=True)
class _Core:
    box: tuple[slice, slice]
    row: float
    column: float
    flux: float
    sky: float


def bleed_tails(unfitted: np.ndarray, above: np.ndarray, sigma: float) -> np.ndarray:
    """The pixels past the ends of elongated regions left to the mask (bleeds) that run on,
    along the region's long axis, ``TAIL_SIGMAS`` above the sky: charge spilled below the
    saturation level, which no PSF shaped. Left in the likelihood, Richardson–Lucy explains the
    tail's sharp end with the masked pixels' estimate and digs a trough past it (−40 σ for 50
    rows on the CFHT A370 frame). ``above`` is the frame less its sky."""
    return as_mask(unfitted.shape, bleed_tail_pixels(unfitted.shape, np.flatnonzero(unfitted),
                                                     above, sigma))


def bleed_tail_pixels(shape: tuple[int, int], unfitted: np.ndarray, above: np.ndarray,
                      sigma: float) -> np.ndarray:
    """:func:`bleed_tails` of the regions whose pixels are the row-major positions
    ``unfitted`` (ascending, each once), as positions (ascending)."""
    from scipy import ndimage

    tails = []
    labels, _, boxes = label_pixels(shape, unfitted)
    for index, box in enumerate(boxes, start=1):
        tall, wide = box[0].stop - box[0].start, box[1].stop - box[1].start
        if max(tall, wide) < BLEED_ASPECT * min(tall, wide):
            continue  # a round region is a star's core, not a bleed
        axis = 0 if tall > wide else 1
        window = list(box)
        window[axis] = slice(max(box[axis].start - TAIL_REACH, 0),
                             min(box[axis].stop + TAIL_REACH, shape[axis]))
        window = tuple(window)
        seed = labels[window] == index
        structure = np.zeros((3, 3), dtype=bool)
        structure[(slice(None), 1) if axis == 0 else (1, slice(None))] = True
        # Only the region's window is compared with the threshold, not the whole frame.
        bright = above[window] > TAIL_SIGMAS * sigma
        grown = ndimage.binary_propagation(seed, structure=structure, mask=bright | seed)
        # Any region's pixels, this one's or another's in its window, are not its tail.
        rows, columns = np.nonzero(grown & (labels[window] == 0))
        tails.append((rows + window[0].start) * shape[1] + columns + window[1].start)
    return np.unique(np.concatenate(tails)) if tails else np.zeros(0, np.int64)


def _fit_core(image: np.ndarray, labels: np.ndarray, index: int, box: tuple[slice, slice],
              valid: np.ndarray, psf: np.ndarray, half: int) -> tuple[_Core, np.ndarray] | None:
    """The best PSF fit to the clean pixels (valid, in no region of ``labels``) around region
    ``index``, and the model over the fit's box; None when the wings cannot carry it."""
    rows, columns = np.nonzero(labels[box] == index)
    centre_row = box[0].start + rows.mean()
    centre_column = box[1].start + columns.mean()
    reach = half + max(box[0].stop - box[0].start, box[1].stop - box[1].start) // 2
    height, width = image.shape
    top, left = max(int(centre_row) - reach, 0), max(int(centre_column) - reach, 0)
    fit_box = (slice(top, min(int(centre_row) + reach + 1, height)),
               slice(left, min(int(centre_column) + reach + 1, width)))
    data = image[fit_box].astype(np.float64)
    usable = valid[fit_box] & (labels[fit_box] == 0)
    best = None
    centres = [(centre_row + dy, centre_column + dx) for dy in SHIFT_STEPS for dx in SHIFT_STEPS]
    # Band-limited (Fourier) shifts: a bilinear one blurs an undersampled PSF's core and the
    # amplitude fitted to it comes out several per cent low.
    moved = psf_stack.shifted_many([psf] * len(centres),
                                   [(r - round(r), c - round(c)) for r, c in centres])
    for (row, column), shifted in zip(centres, moved):
        profile = _placed(np.nan_to_num(shifted), round(row) - top, round(column) - left,
                          data.shape)
        use = usable & (profile > WING_FRACTION * psf.max())
        if np.count_nonzero(use) < MIN_WING_PIXELS:
            continue
        wing, target = profile[use], data[use]
        amplitude = float(wing @ target / (wing @ wing))
        cost = float(np.sum((amplitude * wing - target) ** 2))
        if amplitude > 0 and (best is None or cost < best[0]):
            best = (cost, row, column, amplitude, profile)
    if best is None:
        return None
    _, row, column, amplitude, profile = best
    core = _Core(fit_box, row, column, float(amplitude * psf.sum()), 0.0)
    return core, (amplitude * profile).astype(np.float32)


def _placed(psf: np.ndarray, row: int, column: int, shape: tuple[int, int]) -> np.ndarray:
    """``psf`` with its central pixel at (``row``, ``column``) of an array of ``shape``, zero
    elsewhere."""
    out = np.zeros(shape, dtype=np.float64)
    ph, pw = psf.shape
    top, left = row - ph // 2, column - pw // 2
    rows = slice(max(top, 0), min(top + ph, shape[0]))
    columns = slice(max(left, 0), min(left + pw, shape[1]))
    if rows.start < rows.stop and columns.start < columns.stop:
        out[rows, columns] = psf[rows.start - top: rows.stop - top,
                                 columns.start - left: columns.stop - left]
    return out
