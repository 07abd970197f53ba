"""``streamer bench --profile science``: what a restoration does to a frame's science, measured
against a truth table on fields drawn independently (:mod:`.truth`), beside the raw frame.

For each field (a well-sampled Moffat field with close pairs, a saturated int16 plate, and a
sparse field of mostly faint stars with heavier wings):
the PSF measured against the truth's, restored over input aperture flux by S/N, star FWHM
before and after, close pairs split, the depth of dark rings around bright stars, the sky's
noise and how much of it sits at one value, centroid errors of bright stars, and saturated
stars restored as donuts — for each way a frame can be restored (``restored_as`` estimate or
residual, ``target_fwhm`` full or automatic).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.imaging.moments import half_maximum_fwhm
from streamer.imaging.quality import measure_input, moat_depth
from streamer.operations.science.measure import (
    centroid_errors, ideal_restoration, isolated, neighbour_light, normalised_residuals,
    sky_pixels, split_pairs, star_fluxes,
)
from streamer.operations.science.truth import Detector, Seeing, TruthField, truth_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings

# A star's input measurement is its own when its neighbours move it by less than this share of
# its flux (see measure.neighbour_light); the others' restored/input ratios measure the
# neighbours' wings on the input as much as the restoration.
OWN_MEASUREMENT = 0.01

MODES = {"classic (estimate, full)": {"restored_as": "estimate", "target_fwhm": 0.0,
                                      "accelerate": False},
         "estimate, target": {"restored_as": "estimate", "target_fwhm": None},
         "default (residual, target)": {"restored_as": "residual", "target_fwhm": None}}


@dataclass
class FieldCase:
    """A truth field the profile restores."""

    name: str
    field: TruthField


def fields(size: int) -> list[FieldCase]:
    """The profile's fields at ``size`` pixels a side."""
    stars = max(100, size * size // 1200)
    return [
        FieldCase("moffat FWHM 3.6 px, beta 3, pairs", truth_field(
            (size, size), Seeing(3.6, 3.0, 0.05, 20.0), stars=stars, pairs=stars // 6,
            seed=11)),
        FieldCase("int16 plate, soft saturation at 13000", truth_field(
            (size, size), Seeing(2.4, 3.0, 0.05, 20.0),
            Detector(gain=1.0, read_noise=20.0, saturation=13000.0, soft=True, dtype="int16"),
            stars=stars // 2, seed=3)),
        # Few stars, mostly faint, on heavier wings: enough faint stars whose measurement on
        # the input is their own to read restored/input flux at S/N 5-20.
        FieldCase("sparse moffat FWHM 3.0 px, beta 2.5", truth_field(
            (size, size), Seeing(3.0, 2.5, 0.1, 40.0), stars=max(40, size * size // 5000),
            snr=(3.0, 300.0), seed=5)),
    ]


def _robust_sigma(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _donuts(field: TruthField, restored: np.ndarray) -> tuple[int, int]:
    """Isolated saturated stars whose restored core is fainter than the ring around it."""
    stars = field.stars
    height, width = restored.shape
    donuts = checked = 0
    for star in stars[stars["saturated"]]:
        others = np.sort(np.hypot(stars["x"] - star["x"], stars["y"] - star["y"]))
        row, column = int(round(star["y"])), int(round(star["x"]))
        if others[1] < 8 or not (8 < row < height - 8 and 8 < column < width - 8):
            continue
        box = restored[row - 4: row + 5, column - 4: column + 5]
        ys, xs = np.mgrid[-4:5, -4:5]
        ring = box[(np.hypot(ys, xs) >= 2) & (np.hypot(ys, xs) < 4)]
        checked += 1
        donuts += bool(not np.isfinite(box[3:6, 3:6]).all()
                       or box[3:6, 3:6].max() <= np.nanmax(ring))
    return donuts, checked


@dataclass
class Selection:
    """What every image of a field is measured on, chosen once from the truth and the input:
    the isolated stars, those whose input measurement is their own, and the sky pixels."""

    indices: np.ndarray
    own: np.ndarray
    sky: np.ndarray


def selection(field: TruthField, input_frame: np.ndarray) -> Selection:
    """The :class:`Selection` of ``field`` given its input (background-equalised) frame."""
    indices = isolated(field)
    own = np.abs(neighbour_light(field, input_frame, indices)) < OWN_MEASUREMENT
    return Selection(indices, own, sky_pixels(field))


def measure(field: TruthField, image: np.ndarray, input_frame: np.ndarray,
            sigma: float, chosen: Selection, error: np.ndarray | None = None
            ) -> dict[str, Any]:
    """The science figures of ``image`` (the raw frame or a restoration; ``error`` its noise
    map) on the stars and sky ``chosen``."""
    indices, own, where = chosen.indices, chosen.own, chosen.sky
    fluxes = star_fluxes(field, input_frame, image, sigma, indices)
    quality = measure_input(np.nan_to_num(image, nan=float(np.nanmedian(image))))
    sky = image[where]
    sky = sky[np.isfinite(sky)]
    bright = indices[fluxes.snr > 100]
    donuts, checked = _donuts(field, image)
    normalised = (normalised_residuals(image, error, float(np.median(sky)), where)
                  if error is not None and sky.size else (math.nan, math.nan))
    return {
        "flux_ratio_by_snr": fluxes.ratio_by_bin(own),
        "flux_ratio_near_others": fluxes.ratio_by_bin(),
        "star_fwhm": quality.fwhm,
        "pairs_split": split_pairs(field, image, _robust_sigma(sky)),
        "moat_sigma": moat_depth(image, quality.positions, quality.fwhm or field.seeing.fwhm),
        "sky_robust_sigma": _robust_sigma(sky),
        "sky_share_at_mode": float(np.mean(sky == np.median(sky))) if sky.size else math.nan,
        "sky_over_err_sigma_p999": normalised,
        "bright_centroid_error": float(np.median(centroid_errors(field, image, bright)))
        if bright.size else math.nan,
        "saturated_donuts": f"{donuts} of {checked}",
    }


def collect(size: int = 768, device: str | None = None) -> dict[str, Any]:
    """Every field, raw and restored each way: the profile's JSON document."""
    out: dict[str, Any] = {"fields": {}}
    for case in fields(size):
        field = case.field
        base = Restorer(RestorationSettings(), device)
        data = base.background_equalised(field.image)
        chosen = selection(field, data)
        started = time.perf_counter()
        prepared = base.preparer.prepare(field.image)
        psf, noise = prepared.psf, prepared.noise
        raw_error = np.sqrt(noise.variance(data - float(np.median(data))))
        rows: dict[str, Any] = {
            "psf_fwhm_error": psf.fwhm / half_maximum_fwhm(field.psf) - 1.0,
            "psf_seconds": time.perf_counter() - started,
            "raw": measure(field, data, data, field.sigma(), chosen, raw_error),
        }
        # The yardstick: the truth at the default's target resolution, in the data's own noise
        # and median-window artefacts (no field with saturated stars).
        ideal = ideal_restoration(field, data, base.preparer.resolution_for(psf).fwhm)
        if ideal is not None:
            rows["ideal at target"] = measure(field, ideal, data, field.sigma(), chosen,
                                              raw_error)
        for name, settings in MODES.items():
            restorer = Restorer(RestorationSettings(**settings), device)
            restored = restorer.restore(field.image)
            rows[name] = measure(field, restored.data, data, field.sigma(), chosen,
                                 restored.error)
            rows[name]["iterations"] = restored.deconvolution.iterations
            rows[name]["stopped_by"] = restored.deconvolution.stopped_by
        out["fields"][case.name] = rows
    return out


def print_profile(result: dict[str, Any]) -> None:
    """The human-readable form of :func:`collect`'s result."""
    for name, rows in result["fields"].items():
        print(f"\n{name}: measured PSF FWHM {rows['psf_fwhm_error']:+.1%} against the truth")
        columns = [key for key in rows if isinstance(rows[key], dict)]
        print(f"{'':24}" + "".join(f"{c:>30}" for c in columns))
        for figure in rows["raw"]:
            cells = (_text(rows[column].get(figure)) for column in columns)
            print(f"{figure:24}" + "".join(f"{cell:>30}" for cell in cells))
    print("\nflux_ratio_by_snr: restored/input aperture flux (3 FWHM, local sky) at S/N 5-20, "
          "20-100, 100-1000, >1000 of isolated stars whose input measurement is their own "
          "(neighbours move it < 1 %); flux_ratio_near_others: every star with no other within "
          "6 FWHM; pairs_split: pairs shown as two at 1-1.5, 1.5-2, 2-2.5 FWHM; "
          "sky_over_err: robust sigma and 99.9th percentile of |sky / ERR| (1 and 3.3 when unit "
          "normal)")


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{v[0]:.3f}" if isinstance(v, tuple) and isinstance(v[0], float)
                        else f"{v[0]}/{v[1]}" for v in value.values()).replace("nan", "-")
    if isinstance(value, tuple):
        return " ".join(_text(v) for v in value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)
