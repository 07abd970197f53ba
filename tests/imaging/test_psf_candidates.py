"""The PSF star candidates picked with all boxes at once against the box-by-box rule: unflagged,
bright, inside the frame, no excluded pixel in the box, peaking below the linear limit."""

from __future__ import annotations

import numpy as np

from streamer.imaging import psf_stars
from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field


def _one_by_one(detection, image, invalid, peak_limit, half):
    objects = detection.objects
    rows, columns = detection.rows, detection.columns
    height, width = image.shape
    chosen = []
    for index in detection.unflagged():
        if objects["peak"][index] < psf_stars.MIN_PEAK_SNR * detection.noise:
            continue
        if not (half <= rows[index] < height - half and half <= columns[index] < width - half):
            continue
        box = (slice(rows[index] - half, rows[index] + half + 1),
               slice(columns[index] - half, columns[index] + half + 1))
        if invalid[box].any() or (peak_limit is not None
                                  and np.nanmax(image[box]) >= peak_limit):
            continue
        chosen.append(index)
    chosen = np.asarray(chosen, dtype=int)
    return chosen[np.argsort(objects["flux"][chosen])[::-1]]


def test_candidates_at_once_follow_the_box_by_box_rule():
    field = star_field((700, 700), gaussian_psf(3.0, size=25), stars=700, seed=9)
    image = field.image.astype(np.float32)
    image[200:260, 300:380] = np.nan
    invalid = ~np.isfinite(image)
    detection = psf_stars.detect(image, invalid, 5.0)
    peaks = np.sort(detection.objects["peak"])
    limit = float(peaks[int(0.9 * peaks.size)] + np.median(image[~invalid]))
    for peak_limit in (None, limit):
        for half in (7, 15):
            ours = psf_stars.candidates(detection, image, invalid, peak_limit, half)
            reference = _one_by_one(detection, image, invalid, peak_limit, half)
            assert ours.size > 20 and np.array_equal(ours, reference)
    # the limit and the excluded patch both removed some
    everything = psf_stars.candidates(detection, image, np.zeros_like(invalid), None, 7)
    assert psf_stars.candidates(detection, image, invalid, limit, 7).size < everything.size
