"""``streamer sources export`` over an archive the sink's own code wrote: ADES PSV and the
trackers' CSV carry every source with a sky position, in time order, with the frame's
mid-exposure time, the observatory code and the band; frames without a WCS are left out and
counted; bad codes and nights are refused."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from streamer.operations.cli import main
from streamer.streaming.archive import Archive
from streamer.streaming.framing import payload_digest
from streamer.streaming.messages import SourceCatalog

START = dt.datetime(2026, 11, 30, 3, 0, 0, tzinfo=dt.timezone.utc)


def _store(archive: Archive, name: str, start: dt.datetime, with_wcs: bool) -> list[dict]:
    rows = []
    for index in range(3):
        row = dict(id=index, x=10.0 + index, y=20.0, x_error=0.05, y_error=0.05, flux=1000.0,
                   flux_error=10.0, snr=100.0, mag=17.5 + index, mag_error=0.011, a=1.2,
                   b=1.1, theta=5.0, fwhm=3.0, elongation=1.1, flags=16 if index == 2 else 0,
                   trail_length=20.0 if index == 2 else None,
                   trail_angle=30.0 if index == 2 else None)
        if with_wcs:
            row.update(ra=150.0 + index * 1e-3, dec=-2.0 - index * 1e-3, ra_error=0.04,
                       dec_error=0.05)
        rows.append(row)
    payload = json.dumps(rows).encode()
    archive.store_sources(SourceCatalog(
        frame_id=f"cam1:{name}", camera_id="cam1", source_name=f"{name}.fits",
        exposure_start=start, exposure_seconds=30.0,
        mid_exposure=start + dt.timedelta(seconds=15), mjd=61374.125 + (start - START).seconds
        / 86400 + 15 / 86400, count=3, trails=1, threshold=5.0, limiting_flux=50.0,
        limiting_mag=20.7, zero_point=25.0, seeing=3.0, band="r", wcs=with_wcs,
        shape=(64, 64), worker_id="w1", measured_at=start, payload_bytes=len(payload),
        payload_digest=payload_digest(payload), chunk_count=1), payload)
    return rows


@pytest.fixture
def archive(tmp_path):
    store = Archive(tmp_path / "archive")
    _store(store, "second", START + dt.timedelta(minutes=2), True)
    _store(store, "first", START, True)
    _store(store, "nowcs", START + dt.timedelta(minutes=1), False)
    return tmp_path / "archive"


def test_ades_psv(archive, capsys):
    assert main(["sources", "export", "--archive", str(archive), "--format", "ades",
                 "--observatory-code", "i41"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:3] == ["# version=2017", "# observatory", "! mpcCode I41"]
    header = lines[3].split("|")
    assert header[:6] == ["trkSub", "mode", "stn", "obsTime", "ra", "dec"]
    records = [dict(zip(header, line.split("|"))) for line in lines[4:]]
    assert len(records) == 6  # two frames with a WCS, three sources each
    assert [r["obsTime"] for r in records[:3]] == ["2026-11-30T03:00:15.000Z"] * 3
    assert records[3]["obsTime"] == "2026-11-30T03:02:15.000Z"  # time order
    first = records[0]
    assert (first["mode"], first["stn"], first["band"], first["astCat"]) == ("CCD", "I41", "r",
                                                                            "Gaia2")
    assert float(first["ra"]) == 150.0 and float(first["dec"]) == -2.0
    assert (first["rmsRA"], first["rmsDec"], first["mag"], first["rmsMag"]) == (
        "0.040", "0.050", "17.500", "0.011")
    assert records[2]["notes"] == "trail" and len({r["trkSub"] for r in records}) == 6
    assert all(len(r["trkSub"]) <= 8 for r in records)
    assert "6 observations; 1 catalogue without a WCS left out" in err


def test_tracker_csv_of_one_night(archive, tmp_path):
    out = tmp_path / "night.csv"
    assert main(["sources", "export", "--archive", str(archive), "--night", "2026-11-29",
                 "--format", "csv", "--observatory-code", "568", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 6
    assert list(rows[0])[:10] == ["obs_id", "mjd_utc", "ra", "dec", "ra_sigma", "dec_sigma",
                                  "mag", "mag_sigma", "filter", "observatory_code"]
    assert rows[0]["obs_id"] == "cam1:first#0" and rows[0]["observatory_code"] == "568"
    assert float(rows[0]["mjd_utc"]) == pytest.approx(61374.125 + 15 / 86400)
    assert rows[2]["trail_length"] == "20.00" and rows[0]["trail_length"] == ""


@pytest.mark.parametrize("args, message", [
    (["--observatory-code", "toolong"], "three letters or digits"),
    (["--observatory-code", "568", "--night", "yesterday"], "expected YYYY-MM-DD"),
    (["--observatory-code", "568", "--night", "2001-01-01"], "no catalogues"),
])
def test_bad_requests_are_refused(archive, capsys, args, message):
    assert main(["sources", "export", "--archive", str(archive), *args]) != 0
    assert message in capsys.readouterr().err
