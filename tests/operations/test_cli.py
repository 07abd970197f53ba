"""`streamer restore`, `streamer devices` and `streamer bench` as a user runs them: a real
process, real FITS files (astropy's M13 test images and synthetic frames)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field

FAST = ["--window", "7", "--iterations", "3", "--psf", "gaussian:fwhm=2"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *map(str, args)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )


def _synthetic_fits(path: Path, dtype=np.float32, bzero=None, bscale=None, shape=(64, 72)):
    field = star_field(shape, gaussian_psf(2.0), stars=10, seed=4)
    header = fits.Header()
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [250.4, 36.46]
    wcs.wcs.crpix = [32, 36]
    wcs.wcs.cdelt = [-0.0003, 0.0003]
    header.update(wcs.to_header())
    header["EXPTIME"] = (30.0, "seconds")
    header["FILTER"] = "V"
    header["DATE-OBS"] = "2026-11-24T22:10:00"
    if np.dtype(dtype).kind in "iu":
        data = np.round(field.image).astype(dtype)
    else:
        data = field.image.astype(dtype)
    hdu = fits.PrimaryHDU(data, header=header)
    if bzero is not None:
        hdu.scale("int16", bzero=bzero, bscale=bscale)
    hdu.writeto(path)
    return field


def test_restore_m13_all_compressions(tmp_path, astropy_m13):
    inputs = []
    for name, source in astropy_m13.items():
        target = tmp_path / f"m13_{name}.fits"
        shutil.copy(source, target)
        inputs.append(target)
    out = tmp_path / "out"
    result = run_cli("restore", *inputs, "-o", out, *FAST, "--preview")
    assert result.returncode == 0, result.stderr
    restored = {}
    for path in inputs:
        with fits.open(out / path.name) as hdus:
            restored[path.name] = hdus[0].data
            header = hdus[0].header
            assert hdus[0].data.dtype == np.dtype(">f4")
            assert header["STRMWIN"] == 7 and header["STRMITER"] == 3
            assert header["STRMPSF"] == "gaussian:fwhm=2"
            assert "pthread" in header["STRMDEV"] or header["STRMDEV"]
            assert any("Richardson-Lucy" in line for line in header["HISTORY"])
        png = (out / path.name).with_suffix(".png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Lossless compressions decode to the same pixels, so they restore identically.
    reference = restored["m13_plain.fits"]
    for name in ("m13_RICE.fits", "m13_GZIP.fits", "m13_PLIO.fits"):
        np.testing.assert_array_equal(restored[name], reference)
    assert np.isfinite(restored["m13_HCOMPRESS.fits"]).all()


def test_header_wcs_and_scaled_integers_kept(tmp_path):
    source = tmp_path / "frame.fits"
    _synthetic_fits(source, dtype=np.float64, bzero=1500.0, bscale=0.5)
    out = tmp_path / "out"
    result = run_cli("restore", source, "-o", out, *FAST)
    assert result.returncode == 0, result.stderr
    with fits.open(out / "frame.fits") as hdus:
        header = hdus[0].header
        assert header["EXPTIME"] == 30.0 and header["FILTER"] == "V"
        assert header["DATE-OBS"] == "2026-11-24T22:10:00"
        assert "BZERO" not in header and header["BITPIX"] == -32
        assert WCS(header).wcs.crval.tolist() == pytest.approx([250.4, 36.46])
        assert header["STRMTMED"] >= 0 and header["STRMTRL"] > 0
        assert hdus[0].data.shape == (64, 72)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_input_dtypes(tmp_path, dtype):
    source = tmp_path / "frame.fits"
    _synthetic_fits(source, dtype=dtype)
    result = run_cli("restore", source, "-o", tmp_path / "out", *FAST)
    assert result.returncode == 0, result.stderr
    with fits.open(tmp_path / "out" / "frame.fits") as hdus:
        # The residual restoration is the data plus sharpened sources: it may dip below 0
        # where the data do (a crowded clump under a 7-pixel window), never to NaN.
        assert np.isfinite(hdus[0].data).all() and hdus[0].header["STRMOUT"] == "residual"
        assert np.nanmin(hdus["ERR"].data) > 0


def test_image_in_first_extension(tmp_path):
    source = tmp_path / "ext.fits"
    data = star_field((40, 50), gaussian_psf(2.0), stars=5).image
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]).writeto(source)
    result = run_cli("restore", source, "-o", tmp_path / "out", *FAST)
    assert result.returncode == 0, result.stderr
    assert fits.getheader(tmp_path / "out" / "ext.fits")["STRMHDU"] == 1


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir()
    text = folder / "notes.fits"
    text.write_text("this is not a FITS file\n" * 20)
    good = folder / "good.fits"
    _synthetic_fits(good)
    truncated = folder / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:4000])
    table = folder / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.arange(3.0))])]).writeto(table)
    all_nan = folder / "nan.fits"
    fits.PrimaryHDU(np.full((20, 20), np.nan, np.float32)).writeto(all_nan)
    empty = folder / "empty.fits"
    fits.PrimaryHDU().writeto(empty)
    cube = folder / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 20, 20), np.float32)).writeto(cube)
    return {
        "not FITS": (text, "not a readable FITS image"),
        "truncated": (truncated, "not a readable FITS image"),
        "no image": (table, "no image HDU"),
        "all NaN": (all_nan, "no finite pixel"),
        "empty": (empty, "no image HDU"),
        "cube": (cube, "3 dimensions"),
    }


def test_bad_inputs_reported_and_batch_goes_on(tmp_path):
    cases = _bad_inputs(tmp_path / "in")
    good = tmp_path / "in" / "good.fits"
    missing = tmp_path / "in" / "absent_*.fits"
    out = tmp_path / "out"
    result = run_cli("restore", *[p for p, _ in cases.values()], good, missing, "-o", out, *FAST)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    for label, (path, message) in cases.items():
        matching = [line for line in lines if str(path) in line]
        assert len(matching) == 1, (label, result.stderr)
        assert message in matching[0], (label, matching[0])
    assert any("absent_*.fits" in line and "no such file" in line for line in lines)
    assert (out / "good.fits").exists()
    assert sorted(p.name for p in out.iterdir()) == ["good.fits"]


def test_globs_are_expanded(tmp_path):
    for i in range(3):
        _synthetic_fits(tmp_path / f"night_{i}.fits")
    result = run_cli("restore", str(tmp_path / "night_*.fits"), "-o", tmp_path / "out", *FAST)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").glob("night_*.fits"))) == 3
    assert "restored 3 of 3 files" in result.stderr


def test_bad_psf_and_window_exit_2(tmp_path):
    source = tmp_path / "frame.fits"
    _synthetic_fits(source)
    result = run_cli("restore", source, "-o", tmp_path / "out", "--psf", "gaussian:fwhm=-2")
    assert result.returncode == 2 and "fwhm" in result.stderr
    result = run_cli("restore", source, "-o", tmp_path / "out", "--window", "8")
    assert result.returncode == 2 and "odd" in result.stderr


def test_device_selection_errors_list_devices(tmp_path):
    result = run_cli("devices")
    assert result.returncode == 0 and result.stdout.startswith("[0]")
    source = tmp_path / "frame.fits"
    _synthetic_fits(source)
    result = run_cli("restore", source, "-o", tmp_path / "out", "--device", "no-such-device")
    assert result.returncode == 3
    assert "no usable OpenCL device matches 'no-such-device'" in result.stderr
    assert "[0]" in result.stderr
    result = run_cli("restore", source, "-o", tmp_path / "out", *FAST,
                     env={"STREAMER_DEVICE": "nonexistent:gpu"})
    assert result.returncode == 3


def test_device_by_index_and_name(tmp_path):
    source = tmp_path / "frame.fits"
    _synthetic_fits(source)
    for spec in ("0", "cpu", "portable:", "auto"):
        result = run_cli("restore", source, "-o", tmp_path / spec.strip(":"), *FAST, "--device", spec)
        assert result.returncode == 0, (spec, result.stderr)


def test_bench_json(tmp_path):
    result = run_cli("bench", "--size", "128", "--iterations", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [row["name"] for row in report["rows"]]
    assert names[0] == "median 31x31"
    assert any("Moffat" in n for n in names) and any("streak" in n for n in names)
    for row in report["rows"][:4]:
        assert row["streamer_seconds"] > 0 and row["reference_seconds"] > 0
        assert row["speedup"] == pytest.approx(row["reference_seconds"] / row["streamer_seconds"])
    assert 0 < report["psf_measurement_fraction"] and report["fresh_process_planning_seconds"] > 0


def test_both_median_methods_restore_the_same_frame(tmp_path):
    source = tmp_path / "frame.fits"
    _synthetic_fits(source)
    outputs = []
    for method in ("histogram", "tiled"):
        result = run_cli("restore", source, "-o", tmp_path / method, *FAST, "--median-method",
                         method)
        assert result.returncode == 0, result.stderr
        outputs.append(fits.getdata(tmp_path / method / "frame.fits"))
    assert np.array_equal(outputs[0], outputs[1])


def test_gpu_profile_runs_anywhere_and_times_both_medians():
    # The profile a GPU session runs (scripts/gpu_bench.sh), here on PoCL at a small size so
    # that the script cannot first fail on the GPU's minutes.
    result = run_cli("bench", "--profile", "gpu", "--size", "256")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    figures = report["streamer"]
    assert figures["frame"] == "256x256 uint16" and figures["restore_seconds"] > 0
    assert figures["device_stage_seconds"] > 0
    assert set(figures["median_seconds_by_method"]) == {"histogram", "tiled"}
    assert figures["median_float32_seconds"] == min(figures["median_seconds_by_method"].values())
    assert figures["bytes_per_pixel"] <= 10.5  # uint16 in, float32 out and its noise map


def test_simulate_then_restore(tmp_path):
    result = run_cli("simulate", "-o", tmp_path / "frames", "--count", "2", "--size", "96",
                     "--psf", "streak:length=9,angle=20")
    assert result.returncode == 0, result.stderr
    frames = sorted((tmp_path / "frames").glob("sim_*.fits"))
    assert len(frames) == 2
    assert fits.getdata(frames[0]).dtype.kind in "iu"
    result = run_cli("restore", str(tmp_path / "frames" / "*.fits"), "-o", tmp_path / "out",
                     "--window", "15", "--iterations", "5", "--psf", "streak:length=9,angle=20")
    assert result.returncode == 0, result.stderr
    assert fits.getheader(tmp_path / "out" / "sim_0000.fits")["SIMPSF"].startswith("streak")


def test_psf_command_writes_fits_and_png(tmp_path, astropy_m13):
    frames = tmp_path / "frames"
    result = run_cli("simulate", "-o", frames, "--count", "1", "--size", "512",
                     "--psf", "moffat:fwhm=3.5,beta=3,ellipticity=0.2,angle=30")
    assert result.returncode == 0, result.stderr
    result = run_cli("psf", frames / "sim_0000.fits", astropy_m13["RICE"], "-o", tmp_path / "psf")
    assert result.returncode == 0, result.stderr
    assert "sim_0000.fits: empirical PSF" in result.stdout and "FWHM 3." in result.stdout
    with fits.open(tmp_path / "psf" / "sim_0000.psf.fits") as hdus:
        psf, header = hdus[0].data, hdus[0].header
    assert psf.shape[0] % 2 == 1 and abs(psf.sum() - 1) < 1e-4
    assert header["PSFMETH"] == "empirical" and 3.2 < header["PSFFWHM"] < 3.8
    assert abs(header["PSFELLIP"] - 0.2) < 0.03 and header["PSFNSTAR"] >= 5
    png = (tmp_path / "psf" / "sim_0000.psf.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "psf" / "m13_rice.psf.png").exists()
    # The measured PSF is a valid --psf file for another run.
    result = run_cli("restore", frames / "sim_0000.fits", "-o", tmp_path / "out", "--window",
                     "15", "--iterations", "3", "--psf", f"file:{tmp_path / 'psf' / 'sim_0000.psf.fits'}")
    assert result.returncode == 0, result.stderr


def test_psf_command_reports_a_frame_without_stars(tmp_path):
    flat = tmp_path / "flat.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(100, 5, (128, 128)).astype(np.float32)
                    ).writeto(flat)
    result = run_cli("psf", flat, "-o", tmp_path / "psf")
    assert result.returncode == 1
    assert "flat.fits" in result.stderr and "no" in result.stderr.lower()


def test_restored_file_carries_its_psf(tmp_path):
    source = tmp_path / "frame.fits"
    _synthetic_fits(source, shape=(160, 170))
    result = run_cli("restore", source, "-o", tmp_path / "out", "--window", "15",
                     "--iterations", "5", "--psf-fallback", "gaussian:fwhm=2")
    assert result.returncode == 0, result.stderr
    with fits.open(tmp_path / "out" / "frame.fits") as hdus:
        assert hdus[1].name == "PSF" and abs(hdus[1].data.sum() - 1) < 1e-4
        primary = hdus[0].header
        assert primary["STRMPSF"] == "auto"
        assert primary["PSFMETH"] in ("empirical", "moffat", "fallback")
        assert primary["PSFMETH"] == hdus[1].header["PSFMETH"]
        assert primary["STRMSTOP"] in ("iterations", "discrepancy") and primary["STRMDAMP"] == 1.0


def test_bench_alternates_sides_and_keeps_each_count_best():
    from streamer.operations.bench import alternating

    calls: list[tuple[str, int]] = []
    # Side "a" costs 1 + n seconds except in round 2, when the host is slow (doubled); side
    # "b" costs 2 + 3 n. The figures must be those of the quiet rounds, not a slope built
    # from one slow and one quiet time.
    slow_round = {"a": [False, True, False], "b": [False, True, False]}

    def side(name: str, setup: float, per: float):
        counts = {2: 0, 6: 0}

        def run(n: int) -> float:
            calls.append((name, n))
            factor = 2.0 if slow_round[name][counts[n]] else 1.0
            counts[n] += 1
            return factor * (setup + per * n)
        return run

    (a_slope, a_setup), (b_slope, b_setup) = alternating([side("a", 1, 1), side("b", 2, 3)], 3)
    assert calls[:4] == [("a", 2), ("a", 6), ("b", 2), ("b", 6)]  # rounds alternate
    assert a_slope == pytest.approx(1.0) and b_slope == pytest.approx(3.0)
    assert a_setup == pytest.approx(3 / 2) and b_setup == pytest.approx(8 / 2)
