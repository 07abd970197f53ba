"""Quality metrics against synthetic frames with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.imaging.psf import gaussian_psf, streak_psf
from streamer.imaging.quality import find_sources, frame_quality, sky_statistics, star_shape
from streamer.imaging.synthetic import star_field


@pytest.mark.parametrize("fwhm", [2.0, 3.0, 5.0])
def test_fwhm_of_a_known_gaussian_star_within_5_percent(fwhm):
    field = star_field((96, 96), gaussian_psf(fwhm, size=41), stars=1, sky=100, gradient=0,
                       flux_range=(2e5, 2e5), margin=40, seed=2)
    sky = sky_statistics(field.image)
    shape = star_shape(field.image, int(field.rows[0]), int(field.columns[0]), sky.background,
                       half=max(8, int(3 * fwhm)))
    assert shape is not None
    assert shape.fwhm == pytest.approx(fwhm, rel=0.05)
    assert shape.ellipticity < 0.05


def test_ellipticity_of_a_streak():
    psf = streak_psf(9, 0.0, 2.0, size=31)
    image = np.zeros((64, 64))
    image[17:48, 17:48] = psf * 1e5
    shape = star_shape(image, 32, 32, 0.0, half=15)
    assert shape is not None and shape.ellipticity > 0.4


def test_sky_and_noise_are_sigma_clipped():
    rng = np.random.default_rng(0)
    image = rng.normal(250.0, 12.0, (400, 400))
    image[::37, ::41] = 1e5  # stars must not bias the sky
    sky = sky_statistics(image)
    assert sky.background == pytest.approx(250.0, abs=0.3)
    assert sky.noise == pytest.approx(12.0, rel=0.03)


def test_sources_found_are_the_stars():
    field = star_field((200, 200), gaussian_psf(2.5), stars=20, flux_range=(5e4, 1e5),
                       margin=20, seed=5)
    sky = sky_statistics(field.image)
    positions, total = find_sources(field.image, sky, limit=100)
    found = {tuple(p) for p in positions}
    assert total >= len(found)
    truth = set(zip(field.rows.tolist(), field.columns.tolist()))
    assert len(truth & found) >= 0.9 * len(truth)  # blends may merge a few
    assert len(found - truth) <= 2


def test_the_psf_detections_serve_as_the_quality_sources():
    # The worker's preparation makes one detection pass: the PSF's stars are the sources the
    # input quality measures (no second sep extraction of the frame).
    from streamer.imaging import psf_stars
    from streamer.imaging.preparation import FramePreparer
    from streamer.settings import RestorationSettings

    field = star_field((200, 200), gaussian_psf(2.5), stars=20, flux_range=(5e4, 1e5),
                       margin=20, seed=5)
    image = field.image.astype(np.float32)
    sky = sky_statistics(image)
    detection = psf_stars.detect(image, np.zeros(image.shape, bool), 5.0)
    positions, total = find_sources(image, sky, objects=detection.objects)
    own, _ = find_sources(image, sky)
    truth = set(zip(field.rows.tolist(), field.columns.tolist()))
    found = {tuple(p) for p in positions}
    assert len(truth & found) >= 0.9 * len(truth) and total == len(detection.objects)
    assert {tuple(p) for p in own[:10]} == {tuple(p) for p in positions[:10]}
    prepared = FramePreparer.from_settings(RestorationSettings()).prepare(image, quality=True)
    assert {tuple(p) for p in prepared.quality.positions} == found
    # A frame with no source at all: none, not an error.
    empty = psf_stars.detect(np.full((50, 50), 3.0, np.float32), np.zeros((50, 50), bool), 5.0)
    none, count = find_sources(np.full((50, 50), 3.0), sky, objects=empty.objects)
    assert none.shape == (0, 2) and count == 0


def test_frame_quality_reports_sharper_stars_after():
    field = star_field((128, 128), gaussian_psf(4.0), stars=15, flux_range=(5e4, 1e5), seed=8)
    sharper = star_field((128, 128), gaussian_psf(2.0), stars=15, flux_range=(5e4, 1e5), seed=8)
    quality = frame_quality(field.image, sharper.image)
    assert quality.fwhm_before == pytest.approx(4.0, rel=0.1)
    assert quality.fwhm_after == pytest.approx(2.0, rel=0.1)
    assert quality.sources >= 10 and quality.stars_measured >= 5
    assert quality.background == pytest.approx(250.0, abs=5)  # sky 200 + half of gradient 100


def test_star_shapes_at_once_equal_one_by_one():
    from streamer.imaging.quality import star_shapes

    field = star_field((300, 300), gaussian_psf(3.0, size=25), stars=60, sky=100, gradient=0,
                       seed=5)
    image = field.image.copy()
    image[100:110, 100:110] = np.nan  # a star's box with excluded pixels: no shape
    positions = np.column_stack([field.rows, field.columns]).astype(int)
    positions = np.vstack([positions, [[2, 150], [105, 104]]])  # at the edge, in the NaN
    shapes = star_shapes(image, positions, 100.0)
    singly = [star_shape(image, int(r), int(c), 100.0) for r, c in positions]
    assert sum(s is not None for s in singly) > 30 and shapes[-2] is None and shapes[-1] is None
    for batch, one in zip(shapes, singly):
        assert (batch is None) == (one is None)
        if one is not None:
            assert batch.fwhm == pytest.approx(one.fwhm, rel=1e-9)
            assert batch.ellipticity == pytest.approx(one.ellipticity, abs=1e-9)
