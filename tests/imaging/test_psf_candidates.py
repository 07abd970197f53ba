"""The PSF star candidates picked with all boxes at once against the box-by-box rule: unflagged,
bright, inside the frame, no excluded pixel in the box, peaking below the linear limit."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("pairs_limit", [psf_stars.PAIRS_LIMIT, 0])
def test_candidates_at_once_follow_the_box_by_box_rule(monkeypatch, pairs_limit):
    # Both ways the boxes are tested: against the flagged pixels of their rows, and (past
    # the pairs limit) reading every box.
    monkeypatch.setattr(psf_stars, "PAIRS_LIMIT", pairs_limit)
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
            listed = psf_stars.flagged_pixels(image, invalid, peak_limit)  # listed once
            assert np.array_equal(psf_stars.candidates(detection, image, invalid, peak_limit,
                                                       half, listed), reference)
    # the limit and the excluded patch both removed some
    everything = psf_stars.candidates(detection, image, np.zeros_like(invalid), None, 7)
    assert psf_stars.candidates(detection, image, invalid, limit, 7).size < everything.size


def test_a_frame_with_nothing_excluded_is_detected_as_a_float_copy_would_be():
    # No float32 copy where nothing is excluded and the arithmetic is float32's anyway (a
    # 16-bit frame, a clean float32 one): the same background, frame less it, objects and
    # segments as the float64 frame, which goes through the float32 copy.
    field = star_field((1100, 1030), gaussian_psf(3.0, size=25), stars=500, seed=12)
    image = np.clip(np.round(field.image), 0, 65535).astype(np.uint16)
    nothing = np.zeros(image.shape, bool)
    copied = psf_stars.detect(image.astype(np.float64), nothing, 5.0)
    assert len(copied.objects) > 300
    for frame in (image, image.astype(np.float32)):
        direct = psf_stars.detect(frame, nothing, 5.0)
        assert np.array_equal(direct.subtracted, copied.subtracted)
        assert np.array_equal(direct.background.nodes, copied.background.nodes)
        assert np.array_equal(direct.objects, copied.objects)
        assert np.array_equal(direct.segments, copied.segments)


def test_clear_cores_at_once_follow_the_one_by_one_rule():
    # A candidate is dropped when any other source (flagged or not) within the core radius is
    # brighter than CORE_NEIGHBOUR_FLUX of it: one query for all, against one per candidate.
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(13)
    count = 2000
    objects = np.zeros(count, dtype=[("x", float), ("y", float), ("flux", float)])
    objects["x"], objects["y"] = rng.uniform(0, 600, count), rng.uniform(0, 600, count)
    objects["flux"] = 10.0 ** rng.uniform(1, 5, count)
    detection = psf_stars.Detection(objects, np.zeros((1, 1), np.float32),
                                    np.zeros((1, 1), np.int32), 1.0)
    candidates = np.argsort(objects["flux"])[::-1][:700]
    points = np.column_stack([objects["y"], objects["x"]])
    tree = cKDTree(points)
    expected = [index for index in candidates
                if not any(n != index and objects["flux"][n]
                           > psf_stars.CORE_NEIGHBOUR_FLUX * objects["flux"][index]
                           for n in tree.query_ball_point(points[index], 12.0))]
    kept = psf_stars.clear_cores(detection, candidates, 12.0)
    assert 50 < len(expected) < 650 and np.array_equal(kept, expected)
    assert psf_stars.clear_cores(detection, np.zeros(0, int), 12.0).size == 0
    lonely = psf_stars.clear_cores(detection, candidates[:5], 0.0)  # no neighbour in reach
    assert np.array_equal(lonely, candidates[:5])


def _local_sky(values: np.ndarray) -> np.ndarray | float:
    """The one-stamp reference: a plane fitted to a stamp's outer ring (its three outermost pixel rings), outliers
    clipped: the mesh background is too coarse near galaxies, nebulae and cluster cores, and a
    constant or a slope left in every stamp would stack into a pedestal under the PSF."""
    half = values.shape[0] // 2
    ys, xs = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float64)
    ring = (np.maximum(np.abs(ys), np.abs(xs)) >= half - 2) & np.isfinite(values)
    if ring.sum() < 12:
        return 0.0
    design = np.column_stack([np.ones(ring.sum()), ys[ring], xs[ring]])
    target = values[ring]
    keep = np.ones(target.size, dtype=bool)
    for _ in range(3):  # fit, then drop 3-sigma outliers (sigma from the MAD) and refit
        coefficients = np.linalg.lstsq(design[keep], target[keep], rcond=None)[0]
        residual = target - design @ coefficients
        spread = 1.4826 * np.median(np.abs(residual[keep] - np.median(residual[keep])))
        new_keep = np.abs(residual) <= 3.0 * spread if spread > 0 else keep
        if new_keep.sum() < 12 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return coefficients[0] + coefficients[1] * ys + coefficients[2] * xs


def test_the_preparation_detects_on_a_16_bit_frame_as_it_is(monkeypatch):
    # The 16-bit frame itself, not its float32 copy (half the bytes to read): the same
    # detection as the copy's.
    from streamer.imaging.preparation import FramePreparer
    from streamer.settings import RestorationSettings

    field = star_field((600, 520), gaussian_psf(3.0, size=25), stars=200, seed=8)
    image = np.clip(np.round(field.image), 0, 65535).astype(np.uint16)
    seen = []
    real = psf_stars.detect
    monkeypatch.setattr(psf_stars, "detect", lambda data, *args: seen.append(data) or
                        seen.append(real(data, *args)) or seen[-1])
    FramePreparer.from_settings(RestorationSettings(sources=False)).prepare(image)
    given, detection = seen
    assert given is image
    copied = real(image.astype(np.float32), np.zeros(image.shape, bool), 5.0)
    assert np.array_equal(detection.subtracted, copied.subtracted)
    assert np.array_equal(detection.objects, copied.objects) and len(copied.objects) > 100


def _stamp_one_by_one(detection, index, half):
    """The stamp of one source as it was cut before the stamps were batched."""
    from streamer.imaging.sparse_masks import grown

    row, column = detection.rows[index], detection.columns[index]
    box = (slice(row - half, row + half + 1), slice(column - half, column + half + 1))
    values = np.asarray(detection.subtracted[box], dtype=np.float64)
    segments = detection.segments[box]
    values = np.where(grown((segments != 0) & (segments != index + 1), 2), np.nan, values)
    return values - _local_sky(values)


def test_stamps_at_once_are_the_one_by_one_stamps():
    # Cut, masked (neighbours' segments grown by two) and levelled by the clipped plane of
    # their outer rings together: the same stamps as one at a time, on a crowded field whose
    # stamps hold neighbours, a galaxy-like gradient and a few wild pixels.
    field = star_field((500, 520), gaussian_psf(3.0, size=25), stars=900, seed=14)
    image = field.image.astype(np.float32)
    ys, xs = np.mgrid[:500, :520]
    image += (300.0 * np.exp(-((ys - 250) ** 2 + (xs - 260) ** 2) / 2e4)).astype(np.float32)
    image[::37, ::41] += 5000.0
    detection = psf_stars.detect(image, np.zeros(image.shape, bool), 5.0)
    inside = np.flatnonzero((detection.rows >= 12) & (detection.rows < 488)
                            & (detection.columns >= 12) & (detection.columns < 508))
    assert inside.size > 300
    batched = psf_stars.stamps(detection, inside, 11)
    masked = 0
    for index, stamp in zip(inside, batched):
        expected = _stamp_one_by_one(detection, index, 11)
        assert np.array_equal(np.isnan(stamp), np.isnan(expected))
        assert np.allclose(stamp, expected, rtol=0, atol=1e-9 * np.nanmax(np.abs(expected)),
                           equal_nan=True)
        masked += np.isnan(stamp).any()
    assert masked > 50  # neighbours were masked out of many
    assert psf_stars.stamps(detection, np.zeros(0, int), 11) == []


def test_local_skies_of_starved_and_one_line_rings():
    # Under 12 finite ring pixels: no plane; all of them on one row: the normal equations are
    # singular and least squares answers, as local_sky's lstsq does.
    rng = np.random.default_rng(15)
    cube = rng.normal(5.0, 1.0, (3, 15, 15))
    cube[0, :, :] = np.nan
    cube[0, 0, :5] = 1.0                        # 5 finite ring pixels
    cube[1, :, :] = np.nan
    cube[1, 0, :] = rng.normal(5.0, 1.0, 15)   # one row of the ring
    skies = psf_stars.local_skies(cube)
    assert np.all(skies[0] == 0.0)
    for layer, sky in zip(cube[1:], skies[1:]):
        assert np.allclose(sky, _local_sky(layer), rtol=0, atol=1e-9)
