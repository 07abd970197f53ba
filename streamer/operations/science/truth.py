"""Star fields with a truth table, drawn independently of streamer's own simulator
(:mod:`streamer.imaging.synthetic`), so that a restoration is judged against something it was
not built from.

Each star is an elliptical Moffat profile (Moffat 1969) **integrated over each pixel** (5×5
samples a pixel) and scaled to its true total flux, the normalisation written out from the
profile's analytic integral ``π α² / (β − 1)``. Noise is Poisson in electrons (a gain) plus
Gaussian read noise; the sky may slope. A detector can saturate hard (a converter's clip) or,
as a photographic plate does, softly: linear up to a knee, then rolling off towards a ceiling.
Close pairs are placed at known separations, in FWHM, to test what restoration separates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SUBSAMPLES = 5          # samples per pixel side when integrating a profile over a pixel
REACH_FWHM = 10.0       # a star is drawn out to this many FWHM from its centre

STAR_DTYPE = np.dtype([("x", "f8"), ("y", "f8"), ("flux", "f8"), ("peak", "f8"),
                       ("saturated", "?"), ("pair", "i4"), ("separation", "f8")])


@dataclass(frozen=True)
class Seeing:
    """The truth PSF: an elliptical Moffat of ``fwhm`` pixels (geometric mean of the axes)."""

    fwhm: float
    beta: float = 3.0
    ellipticity: float = 0.0   # 1 - b/a
    angle: float = 0.0         # major axis, degrees from +x

    @property
    def alpha(self) -> float:
        """Moffat's core width for this FWHM and β."""
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def profile(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Surface brightness at offsets ``dx, dy`` for a total flux of 1."""
        theta = math.radians(self.angle)
        along = dx * math.cos(theta) + dy * math.sin(theta)
        across = -dx * math.sin(theta) + dy * math.cos(theta)
        stretch = math.sqrt(1.0 - self.ellipticity)  # axes a = α/stretch, b = α·stretch
        r2 = ((along * stretch) ** 2 + (across / stretch) ** 2) / self.alpha**2
        total = math.pi * self.alpha**2 / (self.beta - 1.0)  # ∫ (1 + r²/α²)^-β over the plane
        return (1.0 + r2) ** (-self.beta) / total

    def image(self, half: int, x: float = 0.0, y: float = 0.0) -> np.ndarray:
        """The profile integrated over the pixels of a ``2 half + 1`` box, centred at
        ``(x, y)`` from the box centre; sums to the flux inside the box."""
        offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5
        pixels = np.arange(-half, half + 1, dtype=np.float64)
        fine = (pixels[:, None] + offsets[None, :]).ravel()
        dy, dx = np.meshgrid(fine - y, fine - x, indexing="ij")
        values = self.profile(dx, dy)
        side = 2 * half + 1
        return values.reshape(side, SUBSAMPLES, side, SUBSAMPLES).mean(axis=(1, 3))


@dataclass(frozen=True)
class Detector:
    """How light becomes counts: gain (e⁻/ADU), read noise (e⁻), saturation and its kind."""

    gain: float = 2.0
    read_noise: float = 5.0
    saturation: float | None = None   # ADU where the output stops rising
    soft: bool = False                # a plate: linear to knee·saturation, then rolling off
    knee: float = 0.6
    dtype: str = "float32"

    def respond(self, counts: np.ndarray) -> np.ndarray:
        """Counts after the detector's non-linearity and clipping."""
        if self.saturation is None:
            return counts
        level = self.saturation
        if not self.soft:
            return np.minimum(counts, level)
        knee = self.knee * level
        rolled = level - (level - knee) * np.exp(-(counts - knee) / (level - knee))
        return np.where(counts <= knee, counts, rolled)


@dataclass
class TruthField:
    """A frame and the truth it was drawn from."""

    image: np.ndarray        # what the camera wrote
    expected: np.ndarray     # noiseless, linear: sky + stars (ADU)
    sky: np.ndarray          # the sky alone (ADU)
    stars: np.ndarray        # STAR_DTYPE rows
    seeing: Seeing
    detector: Detector
    psf: np.ndarray          # the truth PSF, pixel-integrated, centred, sum 1

    def sigma(self) -> float:
        """Sky noise in ADU at the median sky."""
        sky = float(np.median(self.sky)) * self.detector.gain
        return math.sqrt(sky + self.detector.read_noise**2) / self.detector.gain


def _positions(rng: np.random.Generator, count: int, shape: tuple[int, int], margin: float
               ) -> np.ndarray:
    height, width = shape
    return np.column_stack([rng.uniform(margin, width - 1 - margin, count),
                            rng.uniform(margin, height - 1 - margin, count)])


def _fluxes_for_snr(rng: np.random.Generator, count: int, snr: tuple[float, float],
                    seeing: Seeing, sigma: float) -> np.ndarray:
    """Fluxes whose peak S/N (against the sky noise) is log-uniform in ``snr``."""
    peak_fraction = seeing.image(0)[0, 0]
    peaks = np.exp(rng.uniform(math.log(snr[0]), math.log(snr[1]), count)) * sigma
    return peaks / peak_fraction


def truth_field(shape: tuple[int, int], seeing: Seeing, detector: Detector = Detector(), *,
                stars: int = 400, pairs: int = 0, snr: tuple[float, float] = (3.0, 3000.0),
                pair_separations: tuple[float, float] = (0.8, 2.5), sky: float = 300.0,
                gradient: float = 0.0, seed: int = 0) -> TruthField:
    """A frame of ``stars`` isolated-at-random stars and ``pairs`` close pairs (separations
    uniform in ``pair_separations`` FWHM, flux ratio 1 to 3), peak S/N log-uniform in ``snr``.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    background = sky + gradient * np.linspace(0.0, 1.0, width)[None, :] * np.ones((height, 1))
    sigma = math.sqrt(sky * detector.gain + detector.read_noise**2) / detector.gain
    margin = 3.0 * seeing.fwhm
    rows = _single_stars(rng, stars, shape, margin, seeing, sigma, snr)
    rows += _pairs(rng, pairs, shape, margin, seeing, sigma, pair_separations)
    table = np.array(rows, dtype=STAR_DTYPE)
    stars_image = np.zeros(shape, dtype=np.float64)
    half = int(math.ceil(REACH_FWHM * seeing.fwhm))
    for star in table:
        _add_star(stars_image, seeing, star["x"], star["y"], star["flux"], half)
    expected = background + stars_image
    electrons = rng.poisson(np.clip(expected, 0, None) * detector.gain).astype(np.float64)
    electrons += rng.normal(0.0, detector.read_noise, shape)
    observed = detector.respond(electrons / detector.gain)
    table["peak"] = [expected[int(round(s["y"])), int(round(s["x"]))] for s in table]
    if detector.saturation is not None:
        limit = detector.knee * detector.saturation if detector.soft else detector.saturation
        table["saturated"] = table["peak"] >= limit
    image = _stored(observed, detector.dtype)
    return TruthField(image, expected, background, table, seeing, detector,
                      _normalised(seeing.image(half)))


def _single_stars(rng, count, shape, margin, seeing, sigma, snr) -> list[tuple]:
    xy = _positions(rng, count, shape, margin)
    fluxes = _fluxes_for_snr(rng, count, snr, seeing, sigma) if count else []
    return [(x, y, f, 0.0, False, -1, 0.0) for (x, y), f in zip(xy, fluxes)]


def _pairs(rng, count, shape, margin, seeing, sigma, separations) -> list[tuple]:
    rows = []
    xy = _positions(rng, count, shape, margin + separations[1] * seeing.fwhm)
    primaries = _fluxes_for_snr(rng, count, (30.0, 300.0), seeing, sigma) if count else []
    for index, ((x, y), flux) in enumerate(zip(xy, primaries)):
        separation = rng.uniform(*separations)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        dx, dy = (separation * seeing.fwhm / 2.0 * math.cos(angle),
                  separation * seeing.fwhm / 2.0 * math.sin(angle))
        secondary = flux / rng.uniform(1.0, 3.0)
        rows.append((x + dx, y + dy, flux, 0.0, False, index, separation))
        rows.append((x - dx, y - dy, secondary, 0.0, False, index, separation))
    return rows


def _add_star(image: np.ndarray, seeing: Seeing, x: float, y: float, flux: float,
              half: int) -> None:
    column, row = int(round(x)), int(round(y))
    stamp = flux * seeing.image(half, x - column, y - row)
    top, left = row - half, column - half
    rows = slice(max(top, 0), min(row + half + 1, image.shape[0]))
    columns = slice(max(left, 0), min(column + half + 1, image.shape[1]))
    image[rows, columns] += stamp[rows.start - top: rows.stop - top,
                                  columns.start - left: columns.stop - left]


def _normalised(psf: np.ndarray) -> np.ndarray:
    return psf / psf.sum()


def _stored(observed: np.ndarray, dtype: str) -> np.ndarray:
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        return np.clip(np.round(observed), info.min, info.max).astype(kind)
    return observed.astype(kind)
