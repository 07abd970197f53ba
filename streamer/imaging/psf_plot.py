"""A picture of a PSF for people: the PSF itself (log stretch) beside its radial profile.

Drawn with Pillow, no plotting library: the profile panel plots every pixel of the PSF against
its distance from the centre (grey dots) and the azimuthal mean (line), on a logarithmic scale
from the peak down to 10⁻⁴ of it, with the half maximum marked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from streamer.imaging.psf_measure import PSFMeasurement

PANEL = 320
DECADES = 4


def _psf_panel(psf: np.ndarray) -> Image.Image:
    peak = psf.max()
    logarithm = np.log10(np.clip(psf / peak, 10.0**-DECADES, 1.0))
    pixels = ((logarithm + DECADES) / DECADES * 255.0).astype(np.uint8)
    # FITS orientation: row 0 at the bottom.
    image = Image.fromarray(pixels[::-1], mode="L").resize((PANEL, PANEL), Image.NEAREST)
    return image.convert("RGB")


def _profile_panel(psf: np.ndarray, measurement: PSFMeasurement) -> Image.Image:
    panel = Image.new("RGB", (PANEL + 60, PANEL), "white")
    draw = ImageDraw.Draw(panel)
    left, top, right, bottom = 48, 10, PANEL + 50, PANEL - 30
    half = psf.shape[0] // 2
    ys, xs = np.mgrid[-half: half + 1, -(psf.shape[1] // 2): psf.shape[1] // 2 + 1]
    radius = np.hypot(ys, xs).ravel()
    values = (psf / psf.max()).ravel()
    limit = max(float(radius.max()), 1.0)

    def to_x(r: float) -> float:
        return left + (right - left) * r / limit

    def to_y(v: float) -> float:
        logarithm = math.log10(min(max(v, 10.0**-DECADES), 1.0))
        return top + (bottom - top) * (-logarithm / DECADES)

    draw.rectangle([left, top, right, bottom], outline="black")
    for decade in range(DECADES + 1):
        y = to_y(10.0**-decade)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"1e-{decade}" if decade else "1", fill="black")
    for tick in range(0, int(limit) + 1, max(1, int(limit) // 6)):
        x = to_x(tick)
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 4, bottom + 6), str(tick), fill="black")
    draw.text(((left + right) / 2 - 40, bottom + 16), "radius [pixels]", fill="black")
    for r, v in zip(radius, values):
        if v > 0:
            draw.point((to_x(r), to_y(v)), fill=(150, 150, 150))
    edges = np.arange(0.0, limit + 1.0, 1.0)
    means = [(a + 0.5, values[(radius >= a) & (radius < a + 1)].mean())
             for a in edges if np.any((radius >= a) & (radius < a + 1))]
    points = [(to_x(r), to_y(v)) for r, v in means if v > 0]
    if len(points) > 1:
        draw.line(points, fill=(200, 30, 30), width=2)
    hwhm = measurement.fwhm / 2.0
    draw.line([to_x(hwhm), top, to_x(hwhm), bottom], fill=(30, 90, 200))
    draw.text((to_x(hwhm) + 3, top + 2), "HWHM", fill=(30, 90, 200))
    return panel


def write_psf_png(path: str | Path, measurement: PSFMeasurement) -> None:
    """The PSF (left) and its radial profile (right) with a one-line caption, as a PNG."""
    psf = np.asarray(measurement.psf, dtype=np.float64)
    caption = (f"{measurement.method}: FWHM {measurement.fwhm:.2f} px, ellipticity "
               f"{measurement.ellipticity:.3f} at {measurement.angle:.0f} deg, "
               f"{measurement.stars_used} stars, {psf.shape[0]}x{psf.shape[1]}")
    left, right = _psf_panel(psf), _profile_panel(psf, measurement)
    canvas = Image.new("RGB", (left.width + right.width + 10, PANEL + 24), "white")
    canvas.paste(left, (0, 24))
    canvas.paste(right, (left.width + 10, 24))
    ImageDraw.Draw(canvas).text((6, 6), caption, fill="black")
    canvas.save(Path(path), format="PNG")
