"""Where a frame stops being linear: its saturation level and its linear limit, found from the
data when no one says.

A CCD's converter clips at a level (often well below the integer type's maximum: a 14-bit
converter in 16-bit words, a frame flat-fielded after clipping), and a photographic plate rolls
off softly towards its ceiling — on a Schmidt plate whose emulsion saturates near 13,000 ADU
half the stars can sit there. Neither is the dtype's maximum, and few headers say. Stars that
touch the ceiling, or peak in the non-linear range below it, have flat or flattened cores:
stacked into a PSF they make it far too wide, kept in Richardson–Lucy's likelihood they
become donuts.

Two numbers, from the first source that gives them (the configured value, the header's
``SATURATE``/``SATLEVEL`` and ``MAXLIN``, then the frame's own stars):

* **saturation level** S — pixels at or above it hold no information about the sky. From the
  data: at least three flat-topped sources (several pixels within 0.5 % of their maximum) whose
  maxima agree within 3 %, or one flat top of a dozen pixels (SExtractor's ``SATUR_LEVEL`` made
  automatic; the pile-up a clipped converter or a saturated emulsion leaves); or, on a
  flat-fielded frame whose clipped plateau is no longer flat to 0.5 %, a **bleed**: the
  charge of a saturated star spilling along the columns (or rows), pixels within 10 % of the
  source's maximum running ten or more pixels along a detector axis and three times further
  than across it — S is then the plateau's 5th percentile;
* **linear limit** L — stars peaking above it are no longer scaled copies of the PSF. A linear
  detector keeps a star's peak-to-flux ratio whatever its brightness; the limit is where that
  ratio, followed from faint to bright stars, falls 10 % below the faint stars'. Without enough
  stars to follow it: ``LINEAR_FRACTION`` of S.

PSF stars peak below L; Richardson–Lucy leaves pixels at or above S (and their neighbours) and
above L out of its likelihood (:func:`saturation_mask`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streamer.imaging.psf_stars import Detection
from streamer.imaging.validation import as_stored, at_or_above

LINEAR_FRACTION = 0.8      # L from S when the stars cannot show it
FLAT_TOLERANCE = 0.005     # a flat top: pixels within this fraction of the maximum
FLAT_PIXELS = 3            # ... at least this many of them (an undersampled star clips few)
FLAT_PIXELS_ALONE = 12     # one flat top this large is enough to set S
AGREEMENT = 0.03           # flat-topped maxima agreeing this closely are one ceiling
RATIO_DROP = 0.10          # the peak/flux ratio falling this much marks the linear limit
RUNNING_STARS = 9          # stars in the running median of the ratio
MIN_RATIO_STARS = 15       # stars needed to follow the ratio at all
BRIGHT_SIGMAS = 50.0       # a source must peak this far above the sky to count as flat-topped
NEAR_TOP = 0.85            # ... and reach this share of the brightest source's maximum
GROW_SATURATED = 2         # pixels a saturated region is grown by (bleeding, the PSF's core)
BLEED_TOLERANCE = 0.10     # a bleed's plateau: pixels within this fraction of its maximum
BLEED_LENGTH = 10          # ... running at least this many pixels along a detector axis
BLEED_ASPECT = 3.0         # ... and this many times further than across it
BLEED_FLOOR = 5.0          # S: this percentile of the plateau's values
GROW_NONLINEAR = 1


@dataclass(frozen=True)
class Saturation:
    """A frame's saturation level and linear limit (ADU, as stored), and where they came
    from (``configured``, ``header``, ``data``, ``camera``: an earlier frame's, or ``none``)."""

    level: float | None = None
    linear_limit: float | None = None
    source: str = "none"

    @property
    def psf_limit(self) -> float | None:
        """The peak a PSF star must stay below."""
        if self.linear_limit is not None:
            return self.linear_limit
        return None if self.level is None else LINEAR_FRACTION * self.level

    @property
    def known(self) -> bool:
        """Whether any limit is known."""
        return self.level is not None or self.linear_limit is not None


def header_saturation(header: fits.Header | None) -> Saturation | None:
    """The levels a header states: ``SATURATE``/``SATLEVEL`` (S), ``MAXLIN``/``LINLIMIT`` (L);
    None when it states neither."""
    if header is None:
        return None
    level = _positive(header, ("SATURATE", "SATLEVEL"))
    linear = _positive(header, ("MAXLIN", "LINLIMIT"))
    if level is None and linear is None:
        return None
    return Saturation(level, linear, "header")


def _positive(header: fits.Header, keywords: tuple[str, ...]) -> float | None:
    for keyword in keywords:
        value = header.get(keyword)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def data_saturation(image: np.ndarray, detection: Detection) -> Saturation:
    """S and L from a frame's sources (:func:`~streamer.imaging.psf_stars.detect`): flat tops
    of the stored values, and the peak-to-flux ratio in a fixed aperture above the
    background."""
    objects = detection.objects
    count = len(objects)
    if count == 0:
        return Saturation()
    # Only the sources' own pixels are read (a few per cent of a frame): whole-frame label
    # statistics sorted all 16 M pixels of a 4096² frame, 2 s of the host's budget.
    inside = detection.in_segments()
    labels = detection.segment_map.labels.astype(np.intp) - 1  # the labels at ``inside``
    values = np.nan_to_num(np.asarray(image).ravel()[inside].astype(np.float64), nan=-np.inf)
    maxima = np.full(count, -np.inf)
    np.maximum.at(maxima, labels, values)
    amplitude = np.asarray(objects["peak"], dtype=np.float64)  # above the background
    tolerance = np.maximum(FLAT_TOLERANCE * amplitude, 2.0 * detection.noise)
    near_top = values >= (maxima - tolerance)[labels]
    flat_pixels = np.bincount(labels[near_top], minlength=count).astype(np.float64)
    # Only a bright source can be flat for want of range: a faint one is flat within noise.
    flat_pixels[amplitude < BRIGHT_SIGMAS * detection.noise] = 0
    level = _ceiling(maxima, flat_pixels)
    if level is None:
        level = _bleed_level(np.shape(image), inside, labels, values, maxima)
    linear = _linear_limit(maxima, _aperture_fluxes(detection), objects["peak"],
                           detection.noise, flat_pixels, level)
    if level is None and linear is None:
        return Saturation()
    return Saturation(level, linear, "data")


def _aperture_fluxes(detection: Detection) -> np.ndarray:
    """Every source's flux in one fixed circle (1.5 typical FWHM in radius): a fixed share of a
    linear star's light, whatever its brightness (an isophotal flux is not)."""
    import sep

    objects = detection.objects
    radius = 1.5 * 2.3548 * float(np.median(objects["a"]))
    flux, _, _ = sep.sum_circle(detection.subtracted, objects["x"], objects["y"],
                                max(radius, 1.5), subpix=1)
    return np.asarray(flux, dtype=np.float64)


def _ceiling(maxima: np.ndarray, flat_pixels: np.ndarray) -> float | None:
    """The level shared by flat-topped sources near the top of the frame's range (nothing
    rises far past a ceiling), or None."""
    flat = np.flatnonzero(flat_pixels >= FLAT_PIXELS)
    flat = flat[maxima[flat] >= NEAR_TOP * maxima.max()]
    if flat.size == 0:
        return None
    top = maxima[flat]
    # The ceiling is the most populated level among flat tops; bright galaxies or nebulae
    # can be flat too, but not at one shared level.
    centre = float(np.median(top[top >= np.percentile(top, 50)]))
    shared = flat[np.abs(top - centre) <= AGREEMENT * abs(centre)]
    if shared.size >= 3 or (shared.size >= 1 and flat_pixels[shared].max() >= FLAT_PIXELS_ALONE):
        return float(np.min(maxima[shared]) * (1.0 - FLAT_TOLERANCE))
    return None


def _bleed_level(shape: tuple[int, ...], inside: np.ndarray, labels: np.ndarray,
                 values: np.ndarray, maxima: np.ndarray) -> float | None:
    """S from a bleed (module notes), or None. ``inside`` are the flat indices of the
    sources' pixels, ``labels`` their sources, ``values`` their stored values."""
    count = maxima.size
    top = maxima >= NEAR_TOP * maxima.max()
    high = top[labels] & (values >= (1.0 - BLEED_TOLERANCE) * maxima[labels])
    if not high.any():
        return None
    rows, cols = np.divmod(inside[high], shape[1])
    owners = labels[high]
    spans = []
    for coordinate in (rows, cols):
        low, high_end = np.full(count, np.iinfo(np.intp).max), np.full(count, -1)
        np.minimum.at(low, owners, coordinate)
        np.maximum.at(high_end, owners, coordinate)
        spans.append(np.where(high_end >= 0, high_end - low + 1, 0))
    along, across = np.maximum(*spans), np.minimum(*spans)
    bleeding = (along >= BLEED_LENGTH) & (along >= BLEED_ASPECT * np.maximum(across, 1))
    if not bleeding.any():
        return None
    plateau = values[high][bleeding[owners]]
    return float(np.percentile(plateau, BLEED_FLOOR))


def _linear_limit(maxima: np.ndarray, fluxes: np.ndarray, peaks: np.ndarray, noise: float,
                  flat_pixels: np.ndarray, level: float | None) -> float | None:
    """The raw maximum at which the running peak/flux ratio of bright, unflattened stars
    drops ``RATIO_DROP`` below the faint stars'; None when it never does (or cannot be
    followed)."""
    usable = (flat_pixels < FLAT_PIXELS) & (peaks > 30.0 * noise) & (fluxes > 0)
    if level is not None:
        usable &= maxima < level
    if np.count_nonzero(usable) < MIN_RATIO_STARS:
        return None
    order = np.flatnonzero(usable)[np.argsort(peaks[usable])]
    ratio = peaks[order] / fluxes[order]
    running = running_median(ratio, RUNNING_STARS // 2)
    reference = float(np.median(ratio[: max(RUNNING_STARS, ratio.size // 3)]))
    low = np.flatnonzero(running < (1.0 - RATIO_DROP) * reference)
    low = low[low >= ratio.size // 3]  # the faint third defines the reference
    if low.size == 0:
        return None
    first = int(low[0])
    if np.all(running[first:] < (1.0 - RATIO_DROP / 2) * reference):
        return float(maxima[order[max(first - RUNNING_STARS // 2, 0)]])
    return None  # a dip that recovers is scatter, not a limit


def running_median(values: np.ndarray, half: int) -> np.ndarray:
    """The median of ``values[i - half : i + half + 1]`` (cut at the ends) for every ``i``: the
    full windows at once, the cut ones at the ends one by one (a median per star in Python
    cost 0.09 s for the 3300 stars of a 4096² frame)."""
    from numpy.lib.stride_tricks import sliding_window_view

    count = values.size
    running = np.empty(count)
    if count > 2 * half:
        running[half: count - half] = np.median(sliding_window_view(values, 2 * half + 1),
                                                axis=1)
        ends = [*range(half), *range(count - half, count)]
    else:
        ends = list(range(count))
    for index in ends:
        running[index] = np.median(values[max(0, index - half): index + half + 1])
    return running


def frame_saturation(image: np.ndarray, header: fits.Header | None, detection: Detection,
                     configured: Saturation | None = None,
                     previous: Saturation | None = None) -> Saturation:
    """A frame's S and L. A configured level wins; otherwise the lower of what the header
    states and what the stars show (a flat-fielded clip sits below the converter's stated
    level), then the camera's ``previous`` values for a frame whose stars show nothing, then
    an integer type's maximum. L never exceeds S; without one, L is ``LINEAR_FRACTION`` of
    S."""
    if configured is not None and configured.level is not None:
        measured = data_saturation(image, detection)
        linear = configured.linear_limit
        if linear is None and measured.linear_limit is not None:
            linear = measured.linear_limit
        return _bounded(configured.level, linear, "configured")
    stated, measured = header_saturation(header), data_saturation(image, detection)
    level = _lowest(stated and stated.level, measured.level)
    linear = _lowest(stated and stated.linear_limit, measured.linear_limit)
    sources = [c.source for c in (stated, measured)
               if c is not None and (c.level is not None or c.linear_limit is not None)]
    if level is None and linear is None and previous is not None and _fits(image, previous):
        return Saturation(previous.level, previous.linear_limit, "camera")
    if level is None and np.issubdtype(np.asarray(image).dtype, np.integer):
        level = float(np.iinfo(np.asarray(image).dtype).max)  # a converter's word at least
        sources.append("dtype")
    return _bounded(level, linear, "+".join(sources) or "none")


def _fits(image: np.ndarray, previous: Saturation, share: float = 0.05) -> bool:
    """Whether an earlier frame's levels can be this frame's: fewer than ``share`` of its
    pixels (a sample) at or above its linear limit. A frame from another camera or setting
    (the files of one batch) must not be masked whole by a level that is not its own."""
    limit = previous.linear_limit if previous.linear_limit is not None else previous.level
    if limit is None:
        return True
    sample = np.asarray(image).ravel()[::16]
    sample = sample[np.isfinite(sample)]
    return sample.size > 0 and float(np.mean(sample >= limit)) < share


def _lowest(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _bounded(level: float | None, linear: float | None, source: str) -> Saturation:
    if level is not None:
        linear = min(linear, level) if linear is not None else LINEAR_FRACTION * level
    return Saturation(level, linear, source)


def saturation_mask(image: np.ndarray, saturation: Saturation) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the saturated pixels (at or above S, grown by ``GROW_SATURATED``) and of the
    non-linear ones (at or above L, grown by ``GROW_NONLINEAR``, not saturated)."""
    from streamer.imaging.sparse_masks import as_mask

    shape = np.shape(image)
    return tuple(as_mask(shape, flat) for flat in saturation_pixels(image, saturation))


def saturation_pixels(image: np.ndarray, saturation: Saturation,
                      detection: Detection | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`saturation_mask`'s two masks as their pixels' row-major positions (ascending):
    a few thousand pixels, not two frames (the pass over the frame through ``detection``'s
    :meth:`~streamer.imaging.psf_stars.Detection.at_or_above`, when given)."""
    from streamer.imaging.sparse_masks import grown_positions

    data = np.asarray(image)
    none = np.zeros(0, np.int64)
    levels = [level for level in (saturation.level, saturation.linear_limit) if level is not None]
    if not levels:
        return none, none
    # One pass over the frame at the lower level; the few pixels found are sorted out after.
    hot = (detection.at_or_above(image, min(levels)) if detection is not None
           else at_or_above(data, min(levels)))
    if hot.size == 0:
        return none, none
    values = data.ravel()[hot]
    saturated, nonlinear = none, none
    if saturation.level is not None:
        hit = hot[values >= as_stored(data, saturation.level)]
        if hit.size:
            saturated = grown_positions(data.shape, hit, GROW_SATURATED)
    if saturation.linear_limit is not None:
        hit = hot[values >= as_stored(data, saturation.linear_limit)]
        if hit.size:
            nonlinear = np.setdiff1d(grown_positions(data.shape, hit, GROW_NONLINEAR),
                                     saturated, assume_unique=True)
    return saturated, nonlinear


def describe_saturation(saturation: Saturation) -> str:
    """One line for logs and warnings."""
    def text(value: float | None) -> str:
        return "unknown" if value is None or not math.isfinite(value) else f"{value:.6g}"

    return (f"saturation {text(saturation.level)}, linear to {text(saturation.linear_limit)} "
            f"({saturation.source})")
