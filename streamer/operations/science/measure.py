"""What an astronomer measures on a restored frame against the truth it was drawn from: the
flux of each star in an aperture against its local sky (restored over input, by S/N), star
sizes, centroids, whether close pairs come apart, the depth of any dark ring around bright
stars, and whether the noise map makes the sky's residuals unit normal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.operations.science.truth import TruthField

SNR_BINS = ((5.0, 20.0), (20.0, 100.0), (100.0, 1000.0), (1000.0, math.inf))


def aperture_flux(image: np.ndarray, x: float, y: float, radius: float,
                  annulus: tuple[float, float]) -> tuple[float, float, int]:
    """Flux within ``radius`` of ``(x, y)`` less the local sky (the median of the annulus),
    the sky per pixel, and the aperture's pixel count; NaN when the aperture holds a NaN."""
    outer = int(math.ceil(annulus[1])) + 1
    row, column = int(round(y)), int(round(x))
    top, left = max(row - outer, 0), max(column - outer, 0)
    box = np.asarray(image[top: row + outer + 1, left: column + outer + 1], dtype=np.float64)
    ys, xs = np.mgrid[top: top + box.shape[0], left: left + box.shape[1]]
    distance = np.hypot(ys - y, xs - x)
    inside = distance <= radius
    ring = (distance >= annulus[0]) & (distance <= annulus[1]) & np.isfinite(box)
    if not np.isfinite(box[inside]).all() or ring.sum() < 8:
        return math.nan, math.nan, int(inside.sum())
    sky = float(np.median(box[ring]))
    return float(box[inside].sum() - sky * inside.sum()), sky, int(inside.sum())


@dataclass
class StarFluxes:
    """Per isolated star: its true flux, its aperture flux in the input and in the restored
    frame, and its S/N."""

    truth: np.ndarray
    input: np.ndarray
    restored: np.ndarray
    snr: np.ndarray

    def ratio_by_bin(self, where: np.ndarray | None = None) -> dict[str, tuple[float, int]]:
        """Restored over input aperture flux, per S/N bin: ``1 + median((F_restored -
        F_input) / F_true)`` and the number of stars (of those ``where`` is true). The
        difference shares the two frames' noise, so it is not biased as a ratio of two noisy
        fluxes is at low S/N."""
        out = {}
        excess = (self.restored - self.input) / self.truth
        chosen = np.ones(excess.shape, dtype=bool) if where is None else where
        for low, high in SNR_BINS:
            inside = (self.snr >= low) & (self.snr < high) & np.isfinite(excess) & chosen
            label = f"{low:g}-{high:g}" if math.isfinite(high) else f">{low:g}"
            out[label] = (1.0 + float(np.median(excess[inside])) if inside.any() else math.nan,
                          int(inside.sum()))
        return out


def isolated(field: TruthField, distance_fwhm: float = 6.0, margin_fwhm: float = 8.0
             ) -> np.ndarray:
    """Indices of single stars with no other star within ``distance_fwhm`` FWHM and at least
    ``margin_fwhm`` FWHM from the edges (so their aperture and annulus are theirs alone)."""
    stars = field.stars
    fwhm = field.seeing.fwhm
    xy = np.column_stack([stars["x"], stars["y"]])
    nearest = np.array([np.sort(np.hypot(*(xy - p).T))[1] if len(xy) > 1 else np.inf
                        for p in xy])
    height, width = field.image.shape
    margin = margin_fwhm * fwhm
    inside = ((stars["x"] > margin) & (stars["x"] < width - 1 - margin)
              & (stars["y"] > margin) & (stars["y"] < height - 1 - margin))
    return np.flatnonzero((stars["pair"] < 0) & ~stars["saturated"]
                          & (nearest > distance_fwhm * fwhm) & inside)


def neighbour_light(field: TruthField, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per star of ``indices``: how much its neighbours move its aperture flux on ``data``
    (3 FWHM, sky the median of 4–6 FWHM), over its true flux — the measurement less the same
    one with the neighbours' true images taken out of the data, its noise left in. A bright
    neighbour's wing in the sky annulus moves the median by far more than its noiseless
    light there suggests, so a distance alone does not make a star's measurement its own."""
    fwhm = field.seeing.fwhm
    radius, annulus = 3.0 * fwhm, (4.0 * fwhm, 6.0 * fwhm)
    half = int(math.ceil(annulus[1])) + 2
    starlight = field.expected - field.sky
    height, width = data.shape
    out = np.full(len(indices), np.inf)
    for slot, index in enumerate(indices):
        star = field.stars[index]
        column, row = int(round(star["x"])), int(round(star["y"]))
        if not (half <= row < height - half and half <= column < width - half):
            continue
        box = (slice(row - half, row + half + 1), slice(column - half, column + half + 1))
        own = star["flux"] * field.seeing.image(half, star["x"] - column, star["y"] - row)
        local = np.asarray(data[box], dtype=np.float64)
        x, y = half + star["x"] - column, half + star["y"] - row
        measured, _, _ = aperture_flux(local, x, y, radius, annulus)
        alone, _, _ = aperture_flux(local - (starlight[box] - own), x, y, radius, annulus)
        out[slot] = (measured - alone) / star["flux"]
    return out


def star_fluxes(field: TruthField, input_image: np.ndarray, restored: np.ndarray,
                sigma: float, indices: np.ndarray) -> StarFluxes:
    """Aperture fluxes of ``indices`` (3 FWHM radius, sky from 4 to 6 FWHM) on the input and
    the restored frame, and the S/N of the input's."""
    fwhm = field.seeing.fwhm
    radius, annulus = 3.0 * fwhm, (4.0 * fwhm, 6.0 * fwhm)
    before, after, snr = [], [], []
    truth = field.stars["flux"][indices]
    for index in indices:
        star = field.stars[index]
        flux, _, pixels = aperture_flux(input_image, star["x"], star["y"], radius, annulus)
        restored_flux, _, _ = aperture_flux(restored, star["x"], star["y"], radius, annulus)
        before.append(flux)
        after.append(restored_flux)
        noise = math.sqrt(pixels * sigma**2 + max(flux, 0.0) / field.detector.gain)
        snr.append(flux / noise if noise > 0 else 0.0)
    return StarFluxes(truth, np.array(before), np.array(after), np.array(snr))


def sky_pixels(field: TruthField, clear_fwhm: float = 5.0) -> np.ndarray:
    """Pixels farther than ``clear_fwhm`` FWHM from every star (and from the edges)."""
    height, width = field.image.shape
    far = np.ones((height, width), dtype=bool)
    reach = int(math.ceil(clear_fwhm * field.seeing.fwhm))
    for star in field.stars:
        row, column = int(round(star["y"])), int(round(star["x"]))
        top, left = max(row - reach, 0), max(column - reach, 0)
        far[top: row + reach + 1, left: column + reach + 1] = False
    far[:reach] = far[-reach:] = False
    far[:, :reach] = far[:, -reach:] = False
    return far


def normalised_residuals(restored: np.ndarray, error: np.ndarray, sky: np.ndarray,
                         where: np.ndarray) -> tuple[float, float]:
    """Robust σ (1.4826 MAD) and 99.9th percentile of ``|restored - sky| / error`` over
    ``where``: 1 and about 3.3 for unit-normal residuals."""
    z = ((restored - sky) / error)[where]
    z = z[np.isfinite(z)]
    robust = 1.4826 * float(np.median(np.abs(z - np.median(z))))
    return robust, float(np.percentile(np.abs(z), 99.9))


def split_pairs(field: TruthField, image: np.ndarray, sigma: float
                ) -> dict[str, tuple[int, int]]:
    """Per separation bin (FWHM of the input), pairs that ``image`` shows as two: the
    profile along the line between the two stars dips between its two maxima by more than
    3 ``sigma`` (the frame's sky noise) below the fainter maximum, each maximum within a
    third of the separation of its star. Returns (split, all) per bin."""
    stars = field.stars
    bins = {"1-1.5": (1.0, 1.5), "1.5-2": (1.5, 2.0), "2-2.5": (2.0, 2.5)}
    counts = {label: [0, 0] for label in bins}
    for pair in np.unique(stars["pair"][stars["pair"] >= 0]):
        a, b = stars[stars["pair"] == pair]
        label = next((name for name, (lo, hi) in bins.items()
                      if lo <= a["separation"] < hi), None)
        if label is None:
            continue
        counts[label][1] += 1
        counts[label][0] += _two_peaks(image, a, b, sigma)
    return {label: (split, total) for label, (split, total) in counts.items()}


def _two_peaks(image: np.ndarray, a: np.void, b: np.void, sigma: float) -> bool:
    from scipy.ndimage import map_coordinates

    distance = math.hypot(a["x"] - b["x"], a["y"] - b["y"])
    steps = np.linspace(-0.5, 1.5, int(8 * distance) + 9)  # a third beyond each star too
    xs = a["x"] + steps * (b["x"] - a["x"])
    ys = a["y"] + steps * (b["y"] - a["y"])
    profile = map_coordinates(np.nan_to_num(np.asarray(image, dtype=np.float64)), [ys, xs],
                              order=1)
    near_a = np.abs(steps) <= 1.0 / 3.0
    near_b = np.abs(steps - 1.0) <= 1.0 / 3.0
    peak_a, peak_b = profile[near_a].max(), profile[near_b].max()
    at_a = np.flatnonzero(near_a)[np.argmax(profile[near_a])]
    at_b = np.flatnonzero(near_b)[np.argmax(profile[near_b])]
    if at_b <= at_a + 1:
        return False
    dip = profile[at_a: at_b + 1].min()
    return bool(min(peak_a, peak_b) - dip > 3.0 * sigma)


def centroid_errors(field: TruthField, image: np.ndarray, indices: np.ndarray,
                    half: int = 3) -> np.ndarray:
    """Distance (pixels) between each star's true centre and the centroid of ``image`` in a
    ``2 half + 1`` box around it, less the box's median."""
    errors = []
    for index in indices:
        star = field.stars[index]
        row, column = int(round(star["y"])), int(round(star["x"]))
        box = np.asarray(image[row - half: row + half + 1, column - half: column + half + 1],
                         dtype=np.float64)
        box = np.clip(box - np.median(box), 0.0, None)
        if not np.isfinite(box).all() or box.sum() <= 0:
            continue
        ys, xs = np.mgrid[-half: half + 1, -half: half + 1]
        errors.append(math.hypot(row + (ys * box).sum() / box.sum() - star["y"],
                                 column + (xs * box).sum() / box.sum() - star["x"]))
    return np.array(errors)


def stars_at(field: TruthField, fwhm: float) -> np.ndarray:
    """The field's true stars as a round Gaussian of ``fwhm`` pixels would show them
    (integrated over each pixel), on a frame of the field's shape."""
    from scipy.special import erf

    height, width = field.image.shape
    scale = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) * math.sqrt(2.0)
    half = int(math.ceil(4 * fwhm))
    out = np.zeros((height, width))
    for star in field.stars:
        row, column = int(round(star["y"])), int(round(star["x"]))
        top, left = max(row - half, 0), max(column - half, 0)
        bottom, right = min(row + half + 1, height), min(column + half + 1, width)
        if top >= bottom or left >= right:
            continue
        rows = np.diff(erf((np.arange(top, bottom + 1) - 0.5 - star["y"]) / scale)) / 2.0
        columns = np.diff(erf((np.arange(left, right + 1) - 0.5 - star["x"]) / scale)) / 2.0
        out[top:bottom, left:right] += star["flux"] * np.outer(rows, columns)
    return out


def ideal_restoration(field: TruthField, data: np.ndarray, fwhm: float) -> np.ndarray | None:
    """What a perfect restoration to a round Gaussian of ``fwhm`` pixels would write: ``data``
    (the frame as the restorer sees it, background equalised) with each true star's image
    replaced by the star at that resolution — the same noise and the same median-window
    artefacts. The yardstick of what a restoration can reach on the frame; None for a field
    with saturated stars (their true images are not in the data)."""
    if field.stars["saturated"].any():
        return None
    return data - (field.expected - field.sky) + stars_at(field, fwhm)
