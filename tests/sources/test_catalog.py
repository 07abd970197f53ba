"""The catalogue against a truth table: a field drawn here (not by our simulator) — Poisson
stars of known flux and position on a Poisson sky, close pairs, a trail — measured by
:func:`streamer.sources.catalog.measure_sources` and matched back to the truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from streamer.imaging.noise import NoiseModel
from streamer.sources.catalog import SourceFlag, measure_sources
from streamer.sources.photometry import _placed

SIDE, SIGMA, SKY = 512, 1.5, 100.0
FWHM = 2.3548 * SIGMA
START = dt.datetime(2026, 11, 30, 3, 0, 0, tzinfo=dt.timezone.utc)


def _gaussian(sigma: float, side: int = 41) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    psf = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    return psf / psf.sum()


def _trail(length: float, angle: float, centre: tuple[float, float], flux: float,
           shape: tuple[int, int]) -> np.ndarray:
    image = np.zeros(shape)
    steps = np.linspace(-length / 2, length / 2, int(length * 4) + 1)
    for t in steps:
        image += (flux / steps.size) * _placed(
            _gaussian(SIGMA), centre[1] + t * np.sin(np.radians(angle)),
            centre[0] + t * np.cos(np.radians(angle)), shape)
    return image


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(11)
    psf = _gaussian(SIGMA)
    unit_error = np.sqrt(SKY) * np.sqrt(4 * np.pi * SIGMA**2)  # a PSF fit's flux error on sky
    count, pairs = 300, 30
    x = rng.uniform(15, SIDE - 15, count)
    y = rng.uniform(15, SIDE - 15, count)
    flux = 10 ** rng.uniform(np.log10(4), 3, count) * unit_error
    px, py = rng.uniform(25, SIDE - 25, pairs), rng.uniform(25, SIDE - 25, pairs)
    separation = rng.uniform(1.0, 2.5, pairs) * FWHM
    angle = rng.uniform(0, np.pi, pairs)
    x = np.concatenate([x, px, px + separation * np.cos(angle)])
    y = np.concatenate([y, py, py + separation * np.sin(angle)])
    flux = np.concatenate([flux, np.full(pairs, 100 * unit_error), np.full(pairs, 60 * unit_error)])
    model = np.full((SIDE, SIDE), SKY)
    for fx, fy, f in zip(x, y, flux):
        model += f * _placed(psf, fy, fx, model.shape)
    # The trail goes where no star is within 25 px of its middle (its light alone is known).
    stars = cKDTree(np.column_stack([x, y]))
    centre = next((cx, cy) for cx in range(60, SIDE - 60, 8) for cy in range(60, SIDE - 60, 8)
                  if stars.query((cx, cy))[0] > 25)
    trail = dict(length=24.0, angle=30.0, centre=(float(centre[0]), float(centre[1])),
                 flux=400 * unit_error)
    model += _trail(trail["length"], trail["angle"], trail["centre"], trail["flux"], model.shape)
    image = rng.poisson(model).astype(np.float64)
    # What the restoration hands the catalogue: the same sky, the stars at a narrower PSF.
    restored = np.full((SIDE, SIDE), SKY) + rng.normal(0, np.sqrt(SKY), (SIDE, SIDE))
    narrow = _gaussian(0.8)
    for fx, fy, f in zip(x, y, flux):
        restored += f * _placed(narrow, fy, fx, restored.shape)
    return dict(image=image, restored=restored, narrow=narrow, psf=psf, x=x, y=y, flux=flux,
                snr=flux / unit_error, unit_error=unit_error, count=count, pairs=pairs,
                separation=separation, trail=trail)


def _measure(field, header=None, restored=True):
    noise = NoiseModel(sky=SKY, sigma=np.sqrt(SKY), inverse_gain=1.0)
    return measure_sources(field["image"], header, field["psf"], FWHM, noise,
                           exposure_start=START, exposure_seconds=30.0,
                           restored=field["restored"] if restored else None,
                           target_psf=field["narrow"] if restored else None)


@pytest.fixture(scope="module")
def catalogue(field):
    return _measure(field)


def _matched(field, catalogue, radius=1.0):
    tree = cKDTree(np.column_stack([field["x"], field["y"]]))
    distance, index = tree.query(np.column_stack([catalogue.x, catalogue.y]))
    return distance, index, distance < radius


def test_isolated_stars_complete_unbiased_with_honest_errors(field, catalogue):
    distance, index, match = _matched(field, catalogue)
    neighbour = cKDTree(np.column_stack([field["x"], field["y"]])).query(
        np.column_stack([field["x"], field["y"]]), k=2)[0][:, 1]
    isolated = (neighbour > 3 * FWHM) & (np.arange(field["x"].size) < field["count"])
    found = np.zeros(field["x"].size, bool)
    found[index[match]] = True
    bright = isolated & (field["snr"] >= 10)
    assert found[bright].mean() >= 0.95
    for low, high in [(5, 10), (10, 20), (20, 100), (100, 1001)]:
        snr = field["snr"][index]
        chosen = match & isolated[index] & (snr >= low) & (snr < high)
        assert chosen.sum() >= 10, (low, high)
        ratio = np.median(catalogue.flux[chosen] / field["flux"][index[chosen]])
        # Near the threshold the stars found are those the noise lifted (selection, not
        # measurement: forced fits at the true positions are unbiased, below).
        tolerance = (-0.02, 0.10) if low < 10 else (-0.02, 0.02)
        assert tolerance[0] <= ratio - 1.0 <= tolerance[1], (low, high, ratio)
        truth = field["flux"][index[chosen]]
        pull = (catalogue.flux[chosen] - truth) / catalogue.flux_error[chosen]
        robust = 1.4826 * np.median(np.abs(pull - np.median(pull)))
        # The same selection narrows the faintest bin's pulls (a distribution cut below): 0.64
        # over its 22 stars here, 0.92 over 17 while sep's cleaning still dropped five of
        # them. The errors' honesty at every S/N is the forced fits' test, below.
        assert (0.6 if low < 10 else 0.8) < robust < 1.2, (low, high, robust)
        rms = np.sqrt(np.mean(distance[chosen] ** 2))
        predicted = np.median(np.hypot(catalogue.x_error[chosen], catalogue.y_error[chosen]))
        assert rms == pytest.approx(predicted, rel=0.3), (low, high, rms, predicted)


def test_few_false_detections(field, catalogue):
    distance, _, match = _matched(field, catalogue, radius=2.0)
    trail_x, trail_y = field["trail"]["centre"]
    on_trail = np.hypot(catalogue.x - trail_x, catalogue.y - trail_y) < 15
    assert np.count_nonzero(~match & ~on_trail) <= 3


def test_close_pairs_are_split_with_the_restored_frame(field, catalogue):
    def split(result) -> np.ndarray:
        _, index, match = _matched(field, result, radius=1.5)
        found = np.zeros(field["x"].size, bool)
        found[index[match]] = True
        first = field["count"] + np.arange(field["pairs"])
        return found[first] & found[first + field["pairs"]]

    apart = field["separation"] / FWHM
    wide = (apart >= 1.5) & (apart < 2.5)
    with_restored, alone = split(catalogue), split(_measure(field, restored=False))
    assert with_restored[wide].mean() >= 0.9
    assert with_restored[apart < 1.5].mean() >= 0.6
    assert with_restored.sum() > alone.sum()  # the restored frame is what splits them


def test_a_trail_is_one_source_with_its_length_angle_and_flux(field, catalogue):
    trail = field["trail"]
    along = np.radians(trail["angle"])
    dx, dy = catalogue.x - trail["centre"][0], catalogue.y - trail["centre"][1]
    on_line = ((np.abs(dx * np.cos(along) + dy * np.sin(along)) < trail["length"] / 2 + FWHM)
               & (np.abs(-dx * np.sin(along) + dy * np.cos(along)) < FWHM))
    assert on_line.sum() == 1  # one source, not fragments
    near = on_line
    source = np.flatnonzero(near)[0]
    assert catalogue.flags[source] & SourceFlag.TRAIL
    assert catalogue.trail_length[source] == pytest.approx(trail["length"], rel=0.15)
    assert catalogue.trail_angle[source] % 180 == pytest.approx(trail["angle"], abs=5)
    assert catalogue.flux[source] == pytest.approx(trail["flux"], rel=0.1)
    assert catalogue.trails == 1


def test_frame_figures_sky_positions_time_and_magnitudes(field):
    header = fits.Header()
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [256.5, 256.5]
    wcs.wcs.cd = np.array([[-0.5, 0.02], [0.02, 0.5]]) / 3600.0
    header.update(wcs.to_header())
    header["MAGZERO"] = 25.0
    result = _measure(field, header)
    ra, dec = wcs.all_pix2world(result.x, result.y, 0)
    assert np.allclose(result.sky.ra, ra, atol=1e-10) and np.allclose(result.sky.dec, dec,
                                                                        atol=1e-10)
    scale = 0.5  # arcsec per pixel
    assert np.allclose(result.sky.dec_error, result.y_error * scale, rtol=0.05)
    assert result.zero_point == 25.0
    good = result.flux > 0
    assert np.allclose(result.mag[good], 25.0 - 2.5 * np.log10(result.flux[good]))
    # The field's PSF is whole in its stamp: the aperture correction finds next to nothing.
    assert result.aperture_stars >= 5 and result.aperture_correction == pytest.approx(1, abs=0.01)
    assert result.limiting_flux == pytest.approx(
        5 * field["unit_error"] * result.aperture_correction, rel=1e-3)
    assert result.limiting_mag == pytest.approx(25.0 - 2.5 * np.log10(result.limiting_flux))
    assert result.mid_exposure == START + dt.timedelta(seconds=15)
    assert result.mjd == pytest.approx(61374.0 + 3.0 / 24 + 15.0 / 86400, abs=1e-8)
    assert result.seeing == FWHM
    no_wcs = _measure(field, None)
    assert no_wcs.sky is None and no_wcs.zero_point is None


def test_forced_fits_at_the_true_positions_are_unbiased_at_every_snr(field):
    from streamer.sources.catalog import _sky_offset, _subtracted
    from streamer.sources.photometry import psf_photometry

    single = np.arange(field["count"])
    data = _subtracted(field["image"])
    data -= _sky_offset(data, field["x"], field["y"], field["snr"], 3 * FWHM)
    result = psf_photometry(data, np.sqrt(SKY), 1.0, field["psf"], FWHM,
                            field["x"][single], field["y"][single])
    for low, high in [(4, 10), (10, 100), (100, 1001)]:
        chosen = (field["snr"][single] >= low) & (field["snr"][single] < high)
        pull = (result.flux[chosen] - field["flux"][single][chosen]) / result.flux_error[chosen]
        assert abs(np.median(pull)) < 0.25, (low, high, np.median(pull))


def test_a_frame_without_stars_gives_an_empty_catalogue(tmp_path):
    from streamer.streaming.archive import Archive
    from streamer.streaming.messages import RawFrame
    from streamer.worker.catalogue import catalogue_message

    sky = np.random.default_rng(12).poisson(SKY, (256, 256)).astype(np.float64)
    noise = NoiseModel(sky=SKY, sigma=np.sqrt(SKY), inverse_gain=1.0)
    result = measure_sources(sky, None, _gaussian(SIGMA), FWHM, noise, exposure_start=START,
                             exposure_seconds=10.0, restored=sky)
    assert len(result) <= 1  # noise alone: at most a stray 5σ peak on 65 kpx
    empty = measure_sources(np.full((64, 64), SKY), None, _gaussian(SIGMA), FWHM, noise,
                            exposure_start=START, exposure_seconds=10.0)
    assert len(empty) == 0 and not empty.capped and empty.limiting_flux > 0
    raw = RawFrame(frame_id="cam1:blank", camera_id="cam1", exposure_start=START,
                   exposure_seconds=10.0, shape=(64, 64), dtype="float64", encoding="fits",
                   payload_bytes=1, payload_digest="blake3:" + "0" * 64, chunk_count=1,
                   source_name="blank.fits", published_at=START)
    envelope, payload = catalogue_message(empty, raw, (64, 64), "w1", 1 << 20)
    assert envelope.count == 0 and payload == b"[]" and envelope.failure is None
    path = Archive(tmp_path / "archive").store_sources(envelope, payload)
    assert path.is_file() and "count: 0" in path.read_text()


def test_a_crowded_field_is_capped_to_its_strongest_sources(field, catalogue):
    noise = NoiseModel(sky=SKY, sigma=np.sqrt(SKY), inverse_gain=1.0)
    capped = measure_sources(field["image"], None, field["psf"], FWHM, noise,
                             exposure_start=START, exposure_seconds=30.0, max_sources=25)
    assert len(capped) <= 25 and capped.capped and not catalogue.capped
    assert np.median(capped.snr) > np.percentile(catalogue.snr, 90)


def test_masked_pixels_flag_their_sources(field):
    noise = NoiseModel(sky=SKY, sigma=np.sqrt(SKY), inverse_gain=1.0)
    image = field["image"].copy()
    star = int(np.argmax(field["flux"][: field["count"]]))
    row, column = int(field["y"][star]), int(field["x"][star])
    image[row - 1: row + 2, column + 2] = np.nan  # a bad column beside a bright star
    result = measure_sources(image, None, field["psf"], FWHM, noise, exposure_start=START,
                             exposure_seconds=30.0)
    nearest = np.argmin(np.hypot(result.x - field["x"][star], result.y - field["y"][star]))
    assert result.flags[nearest] & SourceFlag.MASKED
    assert np.isfinite(result.flux[nearest])


def test_a_trail_at_a_right_angle_is_measured():
    """sep reports the angle as float32, whose π/2 is a hair above float64's π/2 — the value
    sep.sum_ellipse refuses ("invalid aperture parameters"), which lost a real frame's
    catalogue once."""
    from streamer.sources.catalog import _trail_flux
    from streamer.sources.detection import Detections

    image = np.zeros((64, 64))
    image[20:44, 31:34] = 10.0  # a vertical streak
    one = np.ones(1)
    right_angle = np.array([np.float32(np.pi / 2)], dtype=float)
    found = Detections(one * 32, one * 32, one * 50, one * 7, one * 1, right_angle,
                       np.zeros(1, bool), one)
    flux = _trail_flux(image, found, one * 7, one * 1, np.ones(1, bool), one, _gaussian(1.0, 7))
    assert flux[0] == pytest.approx(image.sum(), rel=0.05)


def test_a_blends_positions_are_fitted_not_pulled_together(field, catalogue):
    """A windowed centroid of a star beside a brighter one is pulled toward it; the joint
    PSF fit of a blend's positions takes that out (pairs of S/N 100 and 60 stars at 1–2.5
    FWHM)."""
    from streamer.sources.catalog import _subtracted
    from streamer.sources.detection import detect

    first = field["count"] + np.arange(field["pairs"])
    members = np.concatenate([first, first + field["pairs"]])
    truth = np.column_stack([field["x"][members], field["y"][members]])

    def errors(x, y):
        distance, _ = cKDTree(np.column_stack([x, y])).query(truth)
        return distance[distance < 1.5]

    noise = NoiseModel(sky=SKY, sigma=np.sqrt(SKY), inverse_gain=1.0)
    detected = detect(_subtracted(field["image"]), noise.sigma, field["psf"], FWHM,
                      restored=field["restored"] - SKY, restored_psf=field["narrow"])
    fitted, centroided = errors(catalogue.x, catalogue.y), errors(detected.x, detected.y)
    assert fitted.size >= 0.8 * members.size
    # The tail is where the pull was: 0.10 against 0.21 px at the 90th percentile here.
    assert np.percentile(fitted, 90) < 0.7 * np.percentile(centroided, 90), (
        np.percentile(fitted, 90), np.percentile(centroided, 90))
    # S/N 60-100 stars: √2·σ_PSF/S/N ≈ 0.03 px; blended, a few times that.
    assert np.median(fitted) < 0.1


@pytest.mark.parametrize("piece", [False, True])
def test_a_piece_cut_by_the_deblending_is_no_trail(piece, monkeypatch):
    # sep's deblending hands a blend's outer pixels to its pieces at random, which can stretch
    # a piece past the trail's elongation: a trail is one object, never a piece of one.
    from streamer.sources import catalog
    from streamer.sources.detection import Detections

    image = np.random.default_rng(3).normal(0.0, np.sqrt(SKY), (96, 96))
    image[47:50, 36:60] += 60.0  # a streak along x
    one = np.ones(1)
    found = Detections(one * 48, one * 48, one * 40, one * 7, one * 1.5, one * 0.0,
                       np.zeros(1, bool), one, 1.0, np.array([piece]))
    monkeypatch.setattr(catalog, "_detected", lambda *args, **kwargs: (image, found, False, None))
    noise = NoiseModel(sky=SKY, sigma=np.sqrt(SKY), inverse_gain=1.0)
    result = measure_sources(image, None, _gaussian(SIGMA), FWHM, noise, exposure_start=START,
                             exposure_seconds=30.0)
    assert len(result) == 1 and result.elongation[0] > 2
    assert result.trails == (0 if piece else 1)


def test_the_preparations_frame_less_its_background_is_taken_over():
    # The preparation's PSF-star detection levels a frame with no excluded pixel exactly as
    # the catalogue would (the same mesh level, the same float32 arithmetic): the catalogue
    # takes that array over instead of making it again; a frame with excluded pixels is
    # levelled by each in its own way, and nothing is handed over.
    from streamer.imaging import psf_stars
    from streamer.imaging.mesh_background import levelled
    from streamer.imaging.preparation import FramePreparer
    from streamer.imaging.psf import gaussian_psf
    from streamer.imaging.synthetic import star_field
    from streamer.settings import RestorationSettings
    from streamer.sources import catalog

    field = star_field((1024, 1024), gaussian_psf(3.0), stars=300, seed=4).image
    image = np.clip(np.round(field), 0, 65535).astype(np.uint16)
    detection = psf_stars.detect(image, np.zeros(image.shape, bool), 5.0)
    assert detection.plain
    assert np.array_equal(detection.subtracted, levelled(image, detection.background))
    data, level, excluded = catalog._mesh_subtracted(image, detection.background,
                                                     detection.subtracted)
    assert data is detection.subtracted and level is detection.background and excluded is None
    prepared = FramePreparer.from_settings(RestorationSettings()).prepare(image)
    assert prepared.subtracted is not None
    assert np.array_equal(prepared.subtracted, levelled(image, prepared.background))
    holed = image.astype(np.float32)
    holed[100:104, 200:210] = np.nan
    detection = psf_stars.detect(holed, ~np.isfinite(holed), 5.0)
    assert not detection.plain
    assert FramePreparer.from_settings(RestorationSettings()).prepare(holed).subtracted is None
    data, _, excluded = catalog._mesh_subtracted(holed, detection.background,
                                                 detection.subtracted)
    assert data is not detection.subtracted and excluded.sum() == 40
