"""``streamer sources export``: an archive's (or one night's) catalogues as trackers read them.

* ``--format ades`` — the Minor Planet Center's ADES, pipe-separated (PSV): one optical
  observation per source with a sky position, ``trkSub`` naming the frame and source,
  ``mode`` CCD, ``stn`` the observatory code, ``obsTime`` the mid-exposure (UTC), ``ra``,
  ``dec``, ``rmsRA`` (along RA·cos Dec), ``rmsDec`` (arcsec), ``astCat``, ``mag``, ``rmsMag``,
  ``band`` and ``notes``.
* ``--format csv`` — the columns THOR and HelioLinC read: ``obs_id``, ``mjd_utc``, ``ra``,
  ``dec``, ``ra_sigma``, ``dec_sigma`` (arcsec), ``mag``, ``mag_sigma``, ``filter``,
  ``observatory_code``, plus ``frame_id``, ``snr``, ``flags``, ``trail_length``,
  ``trail_angle``.

Frames without a WCS have no sky positions and are left out (counted on stderr).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.errors import NotInArchiveError, ParameterError

ADES_FIELDS = ("trkSub", "mode", "stn", "obsTime", "ra", "dec", "rmsRA", "rmsDec", "astCat",
               "mag", "rmsMag", "band", "notes")
CSV_FIELDS = ("obs_id", "mjd_utc", "ra", "dec", "ra_sigma", "dec_sigma", "mag", "mag_sigma",
              "filter", "observatory_code", "frame_id", "snr", "flags", "trail_length",
              "trail_angle")
_STATION = re.compile(r"^[0-9A-Z]{3}$")
_NIGHT = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Observation:
    """One source with a sky position, from an archived catalogue."""

    frame_id: str
    source_id: int
    mid_exposure: str
    mjd: float
    ra: float
    dec: float
    ra_error: float
    dec_error: float
    mag: float | None
    mag_error: float | None
    band: str | None
    snr: float
    flags: int
    trail_length: float | None
    trail_angle: float | None


def observations(archive: Path, night: str | None = None) -> tuple[list[Observation], int]:
    """The sources with sky positions of the archive's catalogues (one night's, or all),
    in time order, and how many catalogues had no WCS."""
    from astropy.table import Table

    if night is not None and not _NIGHT.match(night):
        raise ParameterError(f"--night {night!r}: expected YYYY-MM-DD")
    base = Path(archive) / "sources"
    if night is not None:
        base = base / night
    if not base.is_dir():
        raise NotInArchiveError(f"no catalogues in {base}: is it a sink's archive (with "
                                "sources/), and the night right?")
    found, without_wcs = [], 0
    for path in sorted(base.rglob("*.ecsv")):
        table = Table.read(path, format="ascii.ecsv")
        meta = table.meta
        if not meta.get("wcs"):
            without_wcs += 1
            continue
        for row in table:
            found.append(Observation(
                frame_id=meta["frame_id"], source_id=int(row["id"]),
                mid_exposure=str(meta["mid_exposure"]), mjd=float(meta["mjd"]),
                ra=float(row["ra"]), dec=float(row["dec"]), ra_error=float(row["ra_error"]),
                dec_error=float(row["dec_error"]), mag=_value(row["mag"]),
                mag_error=_value(row["mag_error"]), band=meta.get("band"),
                snr=float(row["snr"]), flags=int(row["flags"]),
                trail_length=_value(row["trail_length"]), trail_angle=_value(row["trail_angle"])))
    found.sort(key=lambda o: (o.mjd, o.frame_id, o.source_id))
    return found, without_wcs


def _value(cell) -> float | None:
    if cell is None or np.ma.is_masked(cell):
        return None
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None  # masked
    return value if math.isfinite(value) else None


def ades_psv(rows: list[Observation], station: str, astrometric_catalog: str) -> str:
    """ADES pipe-separated values (version 2017) of ``rows`` observed at ``station``."""
    lines = ["# version=2017", "# observatory", f"! mpcCode {station}",
             "|".join(ADES_FIELDS)]
    for row in rows:
        trail = "" if row.trail_length is None else "trail"
        values = {
            "trkSub": _tracklet(row.frame_id, row.source_id),
            "mode": "CCD", "stn": station, "obsTime": _ades_time(row.mid_exposure),
            "ra": f"{row.ra:.7f}", "dec": f"{row.dec:+.7f}", "rmsRA": f"{row.ra_error:.3f}",
            "rmsDec": f"{row.dec_error:.3f}", "astCat": astrometric_catalog,
            "mag": "" if row.mag is None else f"{row.mag:.3f}",
            "rmsMag": "" if row.mag_error is None else f"{row.mag_error:.3f}",
            "band": (row.band or "")[:3], "notes": trail,
        }
        lines.append("|".join(values[name] for name in ADES_FIELDS))
    return "\n".join(lines) + "\n"


def _tracklet(frame_id: str, source_id: int) -> str:
    """An ADES ``trkSub`` (at most 8 characters) unique per frame and source."""
    import hashlib

    digest = int(hashlib.sha256(f"{frame_id}#{source_id}".encode()).hexdigest(), 16)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    for _ in range(8):
        digest, rest = divmod(digest, 36)
        text += alphabet[rest]
    return text


def _ades_time(text: str) -> str:
    """ISO UTC with a Z and millisecond precision, as ADES writes ``obsTime``."""
    import datetime as dt

    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def tracker_csv(rows: list[Observation], station: str) -> str:
    """The CSV THOR and HelioLinC read (see the module notes)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow([f"{row.frame_id}#{row.source_id}", f"{row.mjd:.8f}", f"{row.ra:.8f}",
                         f"{row.dec:.8f}", f"{row.ra_error:.4f}", f"{row.dec_error:.4f}",
                         "" if row.mag is None else f"{row.mag:.4f}",
                         "" if row.mag_error is None else f"{row.mag_error:.4f}",
                         row.band or "", station, row.frame_id, f"{row.snr:.2f}", row.flags,
                         "" if row.trail_length is None else f"{row.trail_length:.2f}",
                         "" if row.trail_angle is None else f"{row.trail_angle:.2f}"])
    return out.getvalue()


def register(commands: argparse._SubParsersAction) -> None:
    """``streamer sources export``."""
    sources = commands.add_parser("sources", help="the archive's source catalogues for "
                                                  "trackers")
    actions = sources.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", help="ADES PSV (MPC) or CSV (THOR, HelioLinC) of an archive or a night",
        description="Write the sink archive's source catalogues (all, or one night's) as ADES "
                    "pipe-separated values for the Minor Planet Center, or as the CSV THOR and "
                    "HelioLinC read. Frames without a WCS have no sky positions and are left "
                    "out.")
    export.add_argument("--archive", type=Path, required=True, metavar="DIR")
    export.add_argument("--night", help="one night (YYYY-MM-DD); default: all")
    export.add_argument("--format", choices=("ades", "csv"), default="ades")
    export.add_argument("--observatory-code", required=True,
                        help="the MPC observatory code (three letters or digits, e.g. 568)")
    export.add_argument("--astrometric-catalog", default="Gaia2",
                        help="the catalogue the frames' WCS was fitted to (ADES astCat; "
                             "default Gaia2)")
    export.add_argument("--out", type=Path, help="file to write; default: standard output")
    export.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Write the export; 0, or the CLI's error handling for a bad archive or code."""
    station = args.observatory_code.upper()
    if not _STATION.match(station):
        raise ParameterError(f"--observatory-code {args.observatory_code!r}: an MPC code is "
                             "three letters or digits (e.g. 568, I41)")
    rows, without_wcs = observations(args.archive, args.night)
    text = (ades_psv(rows, station, args.astrometric_catalog) if args.format == "ades"
            else tracker_csv(rows, station))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    print(f"{len(rows)} observations"
          + (f"; {without_wcs} catalogue{'s' if without_wcs != 1 else ''} without a WCS left "
             "out" if without_wcs else ""), file=sys.stderr)
    return 0

