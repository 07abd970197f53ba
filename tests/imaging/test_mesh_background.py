"""The mesh background measured on a sample of the pixels against sep's own on all of them."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from scipy.ndimage import gaussian_filter

from streamer.imaging.fits_io import read_image
from streamer.imaging.mesh_background import MeshBackground, MeshLevel, levelled
from tests.conftest import ASTROPY_FITS_DATA

M13 = ASTROPY_FITS_DATA / "hdu" / "compressed" / "tests" / "data" / "m13.fits"


def _field(size: int, seed: int = 0) -> np.ndarray:
    """Correlated noise (σ 1 before smoothing), stars, a sky gradient and a galaxy-like
    bump of 20 units: a matched-filter map or a frame with structure on the mesh's scale."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (size, size))
    rows, columns = rng.integers(0, size, (2, size * size // 800))
    image[rows, columns] += rng.exponential(30.0, rows.size)
    image = 3.0 * gaussian_filter(image, 1.5)
    yy, xx = np.mgrid[0:size, 0:size]
    image += (5.0 * np.sin(xx / 700.0) + 3.0 * np.cos(yy / 500.0)
              + 20.0 * np.exp(-((xx - size / 3) ** 2 + (yy - size / 2) ** 2) / (2 * 300.0**2)))
    return image.astype(np.float32)


def _compare(data: np.ndarray, mesh: int, mask: np.ndarray | None = None, stride: int = 2):
    reference = sep.Background(data, mask=mask, bw=mesh, bh=mesh)
    sampled = MeshBackground(data, mesh, mask, stride=stride)
    # in units of the frame's noise: sep's own rms spline can dip towards 0 past the end
    # nodes of a small grid (M13's corners)
    scale = reference.globalrms
    return ((sampled.back() - reference.back()) / scale,
            (sampled.rms() - reference.rms()) / scale, sampled, reference)


@pytest.mark.parametrize("size", [2048, 1100])
def test_sampled_background_is_seps_within_a_few_hundredths_of_its_rms(size: int) -> None:
    # 1100 leaves a partial last cell (sep's nodes stay evenly spaced past the edge)
    mask = np.zeros((size, size), bool)
    mask[100:180, 300:700] = True
    back, rms, sampled, reference = _compare(_field(size), 64, mask)
    assert sampled.stride == 2
    # The estimates come from different pixels; their difference is sampling noise.
    assert abs(back.mean()) < 0.01 and back.std() < 0.06
    assert np.percentile(np.abs(back), 99.9) < 0.4
    assert abs(rms.mean()) < 0.005 and np.percentile(np.abs(rms), 99.9) < 0.12
    assert sampled.globalrms == pytest.approx(reference.globalrms, rel=0.01)
    assert sampled.back().dtype == np.float32 and sampled.back().shape == (size, size)


def test_a_crowded_real_frame_sampled_keeps_its_background() -> None:
    # M13's cluster fills the frame: a cell's mode moves most with the sample there
    data = np.ascontiguousarray(read_image(M13).data, dtype=np.float32)
    back, rms, sampled, reference = _compare(data, 64)
    assert np.median(np.abs(back)) < 0.1 and np.percentile(np.abs(back), 90) < 0.25
    assert np.percentile(np.abs(rms), 90) < 0.15
    assert sampled.globalrms == pytest.approx(reference.globalrms, rel=0.02)


def test_the_spline_interpolates_seps_nodes_exactly_on_a_smooth_sky() -> None:
    # A noiseless sky: both estimates are the sky itself, so any difference is the
    # evaluation (node positions, the spline, its edges), not the sample.
    size = 1024
    yy, xx = np.mgrid[0:size, 0:size]
    sky = (100.0 + 0.01 * xx + 0.02 * yy + 5.0 * np.sin(xx / 300.0)).astype(np.float32)
    reference = sep.Background(sky, bw=64, bh=64).back()
    assert np.abs(MeshBackground(sky, 64, stride=2).back() - reference).max() < 0.05


def test_subtraction_in_place_and_small_frames_are_seps_own() -> None:
    data = _field(2048, seed=1)
    sampled = MeshBackground(data, 64)
    copy = data.copy()
    sampled.subfrom(copy)
    np.testing.assert_array_equal(copy, levelled(data, sampled.level()))
    assert np.abs(copy - (data - sampled.back())).max() <= 1e-6 * np.abs(data).max()
    small = _field(512, seed=2)
    own = MeshBackground(small, 64)
    assert own.stride == 1
    np.testing.assert_array_equal(own.back(), sep.Background(small, bw=64, bh=64).back())


@pytest.mark.parametrize("size", [512, 2048])
def test_each_call_gives_a_new_array(size: int) -> None:
    # callers level maps in place (the S/N map's levelling does): that must not reach back
    background = MeshBackground(_field(size, seed=4), 64)
    for sampled in (False, True):
        first = background.back(sampled)
        first += 1000.0
        assert np.all(background.back(sampled) < first)
        rms = background.rms(sampled)
        rms *= 0.0
        assert np.all(background.rms(sampled) > 0)


def test_a_presampled_mask_and_a_mesh_the_stride_cannot_divide() -> None:
    data = _field(2048, seed=3)
    mask = np.zeros(data.shape, bool)
    mask[::7, :] = True
    whole = MeshBackground(data, 64, mask)
    presampled = MeshBackground(data, 64, whole.sampled(mask))
    np.testing.assert_array_equal(whole.back(), presampled.back())
    with pytest.raises(ValueError, match="cannot be sampled every 2"):
        MeshBackground(data, 63, stride=2)


def test_a_level_is_the_background_and_adds_on_its_nodes() -> None:
    frame = _field(1280, 11)[:1024]
    background = MeshBackground(frame, 64)
    level = background.level()
    assert level is not None and level.nodes.shape == (16, 20)
    assert np.array_equal(level.evaluate(), background.back())
    assert np.allclose(level.evaluate(4), background.back()[::4, ::4], rtol=0, atol=1e-3)
    rms = background.rms_level()
    combined = level.combined(rms, scale=2.5, offset=-3.0)
    assert np.allclose(combined.evaluate(), background.back() + 2.5 * (background.rms() - 3.0),
                       rtol=1e-5, atol=1e-3)
    assert np.allclose(level.scaled(2.0, 1.0).evaluate(), 2.0 * (background.back() + 1.0),
                       rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="different meshes"):
        level.combined(MeshBackground(frame, 32).level())
    assert MeshBackground(frame[:512, :512], 64).level() is None  # sep's own, every pixel


def test_a_sample_given_is_measured_as_the_frame_would_be() -> None:
    frame = _field(1024, 12)
    whole = MeshBackground(frame, 64, stride=4)
    given = MeshBackground(np.array(frame[::4, ::4]), 64, stride=4, shape=frame.shape)
    assert np.array_equal(whole.back(), given.back())
    assert np.array_equal(whole.rms(), given.rms())
    with pytest.raises(ValueError, match="stride"):
        MeshBackground(np.array(frame[::4, ::4]), 64, shape=frame.shape)


@pytest.mark.parametrize("shape, mesh", [((1100, 1300), 64), ((300, 200), 32), ((130, 100), 64),
                                         ((70, 90), 64), ((50, 40), 64)])
def test_levelling_a_few_rows_at_a_time_is_the_whole_levels_arithmetic(shape, mesh) -> None:
    # (values − level) / max(scale, 1) with the levels evaluated a block of rows at a time,
    # segment by segment (one, two and many node rows; partial last cells): the levels
    # evaluated whole, to float32 rounding; in place too; and a level read at points.
    rng = np.random.default_rng(shape[0])
    cells = (-(-shape[0] // mesh), -(-shape[1] // mesh))
    level = MeshLevel(rng.normal(0, 3, cells).astype(np.float32), shape, mesh)
    scale = MeshLevel(rng.normal(1.1, 0.3, cells).astype(np.float32), shape, mesh)
    values = rng.normal(0, 20, shape).astype(np.float32)
    whole = (values - level.evaluate()) / np.maximum(scale.evaluate(), np.float32(1.0))
    ours = levelled(values, level, scale)
    assert ours.dtype == np.float32 and np.abs(ours - whole).max() <= 2e-6 * np.abs(whole).max()
    counts = rng.integers(0, 65535, shape).astype(np.uint16)
    less = levelled(counts, level)
    assert np.abs(less - (counts - level.evaluate())).max() <= 1e-6 * 65535
    # 16-bit frames (converted, then levelled in place): the float32 copy's arithmetic to
    # the bit.
    assert np.array_equal(less, levelled(counts.astype(np.float32), level))
    signed = (counts.astype(np.int32) - 32768).astype(np.int16)
    assert np.array_equal(levelled(signed, level), levelled(signed.astype(np.float32), level))
    in_place = values.copy()
    assert levelled(in_place, level, scale, out=in_place) is in_place
    assert np.array_equal(in_place, ours)
    rows, columns = rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)
    assert np.allclose(level.at(rows, columns), level.evaluate()[rows, columns], rtol=0,
                       atol=1e-5)
