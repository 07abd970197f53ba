"""The catalogue's payload, built a column at a time and encoded by pydantic-core: the same
rows as built source by source, and the same numbers, bit for bit, as their json.dumps (NaN
magnitudes and trail figures null, sky positions when there is a WCS; only the spelling of
small exponents differs, 5e-5 for 5e-05); strict JSON (no NaN); a value the schema cannot
hold (a NaN position) refused with a message, as json's allow_nan=False refused it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pytest

from streamer.sources.catalog import FrameSources
from streamer.sources.sky_positions import SkyPositions
from streamer.streaming.messages import RawFrame, utc_now
from streamer.worker.catalogue import catalogue_message, source_rows

_COLUMNS = ("x", "y", "x_error", "y_error", "flux", "flux_error", "snr", "mag", "mag_error",
            "a", "b", "theta", "fwhm", "elongation", "flags", "trail_length", "trail_angle")


def _found(count: int, sky: bool) -> FrameSources:
    rng = np.random.default_rng(count)
    columns = {name: rng.normal(100, 50, count) * 10.0 ** rng.integers(-8, 8, count)
               for name in _COLUMNS}
    columns["flags"] = rng.integers(0, 64, count)
    columns["mag"][::3] = np.nan
    columns["trail_length"][::2] = np.nan
    columns["trail_angle"][1::2] = np.inf
    positions = (SkyPositions(*(rng.uniform(0, 90, count) for _ in range(4))) if sky
                 else None)
    return FrameSources(**columns, sky=positions, zero_point=None, limiting_flux=10.0,
                        limiting_mag=20.0, seeing=3.0, mid_exposure=utc_now(), mjd=60000.0,
                        threshold=5.0)


def _one_by_one(found: FrameSources) -> list[dict]:
    def number(value):
        return float(value) if math.isfinite(value) else None

    rows = []
    for index in range(len(found)):
        row = {"id": index}
        for name in _COLUMNS:
            value = getattr(found, name)[index]
            row[name] = (int(value) if name == "flags" else number(value)
                         if name in ("mag", "mag_error", "trail_length", "trail_angle")
                         else float(value))
        if found.sky is not None:
            row.update(ra=float(found.sky.ra[index]), dec=float(found.sky.dec[index]),
                       ra_error=float(found.sky.ra_error[index]),
                       dec_error=float(found.sky.dec_error[index]))
        rows.append(row)
    return rows


@pytest.mark.parametrize("sky", [False, True])
def test_the_payload_is_jsons_bytes(sky):
    found = _found(500, sky)
    raw = RawFrame(frame_id="cam1:x", camera_id="cam1",
                   exposure_start=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
                   exposure_seconds=1.0, shape=(96, 96), dtype="float32", encoding="fits",
                   payload_bytes=1, payload_digest="blake3:" + "0" * 64, chunk_count=1,
                   published_at=utc_now())
    expected = _one_by_one(found)
    assert source_rows(found) == expected
    _, payload = catalogue_message(found, raw, (96, 96), "w", 1 << 20)
    reference = json.dumps(expected, separators=(",", ":"), allow_nan=False).encode()

    def strict(constant):
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(payload, parse_constant=strict) == json.loads(reference) == expected
    assert json.loads(payload)[0]["mag"] is None and len(json.loads(payload)) == 500
    assert abs(len(payload) - len(reference)) < 0.02 * len(reference)


def test_a_value_the_schema_cannot_hold_is_refused():
    found = _found(20, sky=True)
    broken = dataclasses.replace(found, x=np.where(np.arange(20) == 4, np.nan, found.x))
    with pytest.raises(ValueError, match="x is not finite for 1 source"):
        source_rows(broken)
    sky = dataclasses.replace(found.sky, dec=np.full(20, np.inf))
    with pytest.raises(ValueError, match="dec is not finite for 20 source"):
        source_rows(dataclasses.replace(found, sky=sky))
