"""The PSF stars' detection from the pixels above the threshold
(streamer.imaging.filtered_objects) against SciPy's correlation and sep's own extraction of the
whole frame (its default filter, its deblending and cleaning)."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from scipy.spatial import cKDTree

from streamer.imaging import filtered_objects, psf_stars, sep_calls
from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field

MERGED = 1  # sep's flag of a deblended object


@pytest.fixture(scope="module")
def crowded():
    """A crowded field (pairs to deblend), less its background, and its noise."""
    field = star_field((700, 650), gaussian_psf(3.0, size=25), stars=900, seed=21)
    frame = np.clip(np.round(field.image), 0, 65535).astype(np.uint16)
    subtracted, background, _ = psf_stars._less_background(frame, None)
    return subtracted, float(background.globalrms)


def test_the_objects_are_seps(crowded):
    """Every object sep finds on the whole frame, at its position; the undeblended ones with
    sep's fields and segments; the deblended ones the same pieces of the same objects (sep
    hands a blend's shared pixels out by its own random draws, whose sequence depends on the
    objects before it, so a piece's pixels differ by a few)."""
    subtracted, noise = crowded
    theirs, their_segments = sep_calls.extract(
        subtracted, 5.0, err=noise, minarea=5, deblend_cont=0.005, segmentation_map=True,
        deblend_nthresh=psf_stars.DEBLEND_THRESHOLDS)
    ours, segment_map = filtered_objects.extract(
        subtracted, 5.0 * noise, minarea=5, deblend_cont=0.005,
        deblend_nthresh=psf_stars.DEBLEND_THRESHOLDS)
    assert len(ours) == len(theirs) > 500
    our_segments = segment_map.whole()
    assert np.array_equal(segment_map.positions, np.flatnonzero(our_segments > 0))
    assert np.array_equal(segment_map.labels, our_segments.ravel()[segment_map.positions])
    merged = (theirs["flag"] & MERGED) > 0
    assert merged.sum() >= 10  # the field has blends to deblend
    distance, match = cKDTree(np.column_stack([ours["x"], ours["y"]])).query(
        np.column_stack([theirs["x"], theirs["y"]]))
    assert np.unique(match).size == len(theirs)
    assert distance[~merged].max() < 1e-4 and distance[merged].max() < 0.5
    alone, same = ~merged, match[~merged]
    for field in ("npix", "tnpix", "xmin", "xmax", "ymin", "ymax", "xpeak", "ypeak", "xcpeak",
                  "ycpeak", "flag"):
        assert np.array_equal(ours[field][same], theirs[field][alone]), field
    for field in ("flux", "cflux", "peak", "cpeak", "x2", "y2", "a", "b", "cxx", "cyy"):
        np.testing.assert_allclose(ours[field][same], theirs[field][alone], rtol=1e-5,
                                   err_msg=field)
    spread = np.sqrt(theirs["x2"][alone] * theirs["y2"][alone])
    assert np.all(np.abs(ours["xy"][same] - theirs["xy"][alone]) <= 1e-5 * spread)
    # Segments: the same pixels in objects, and each undeblended object's exactly its own.
    assert np.array_equal(our_segments > 0, their_segments > 0)
    relabelled = np.zeros(len(theirs) + 1, np.int64)
    relabelled[1:] = match + 1
    theirs_as_ours = relabelled[their_segments]
    lone = np.isin(their_segments, np.flatnonzero(alone) + 1)
    assert np.array_equal(theirs_as_ours[lone], our_segments[lone])
    agree = np.mean(theirs_as_ours[their_segments > 0] == our_segments[their_segments > 0])
    assert agree > 0.99


def test_the_detection_takes_the_pixel_path_only_with_nothing_excluded(monkeypatch, crowded):
    """A frame with excluded pixels still goes to sep with its mask (the filter and the
    threshold would need the mask's own rules); the rest to the pixel path, whose objects the
    PSF's detection then holds."""
    field = star_field((300, 280), gaussian_psf(3.0, size=25), stars=120, seed=5)
    frame = field.image.astype(np.float32)
    calls = []
    real = filtered_objects.extract
    monkeypatch.setattr(filtered_objects, "extract",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    nothing = np.zeros(frame.shape, bool)
    clean = psf_stars.detect(frame, nothing, 5.0)
    assert calls and len(clean.objects) > 50
    excluded = nothing.copy()
    excluded[:10, :10] = True
    calls.clear()
    masked = psf_stars.detect(np.where(excluded, np.nan, frame), excluded, 5.0)
    assert not calls and len(masked.objects) > 50
    reference = sep.extract(clean.subtracted, 5.0, err=clean.noise, minarea=5,
                            deblend_cont=0.005, deblend_nthresh=psf_stars.DEBLEND_THRESHOLDS)
    assert len(clean.objects) == len(reference)
    # More pixels above the threshold than sep's default stack: sep on the whole frame.
    calls.clear()
    monkeypatch.setattr(psf_stars.sep_calls, "DEFAULT_PIXSTACK", 100)
    full = psf_stars.detect(frame, nothing, 5.0)
    assert calls and full.segment_map._whole is not None  # sep's own map, as it gave it
    assert np.array_equal(full.objects, reference)


def test_a_window_whose_deblending_overflows_falls_back_to_seps_own_retries():
    """One object of 4900 peaks (a lattice): sep's deblending of its window overflows, and the
    detection falls through to the whole-frame sep calls, which raise the threshold until
    they succeed — as the frame with an excluded pixel does, not an error."""
    rng = np.random.default_rng(0)
    frame = rng.normal(100, 3, (512, 512)).astype(np.float32)
    lattice = np.zeros((350, 350), np.float32)
    lattice[::5, :] = lattice[:, ::5] = 60
    for row in range(0, 350, 5):
        for column in range(0, 350, 5):
            lattice[row, max(column - 1, 0): column + 2] += 400
            lattice[max(row - 1, 0): row + 2, column] += 400
    frame[100:450, 100:450] += lattice
    subtracted, background, _ = psf_stars._less_background(frame, None)
    with pytest.raises(Exception, match="deblending overflow"):
        filtered_objects.extract(subtracted, 5.0 * float(background.globalrms), 5, 0.005,
                                 psf_stars.DEBLEND_THRESHOLDS)
    found = psf_stars.detect(frame, np.zeros(frame.shape, bool), 5.0)
    one_excluded = np.zeros(frame.shape, bool)
    one_excluded[0, 0] = True
    assert len(found.objects) == len(psf_stars.detect(frame, one_excluded, 5.0).objects) > 4000
