"""The message contract: schemas in schemas/ match the models; envelopes validate."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from streamer.errors import ChecksumError, EnvelopeError
from streamer.streaming.codec import check_payload, parse_envelope
from streamer.streaming.framing import payload_digest
from streamer.streaming.messages import SCHEMA_VERSION, MODELS, RawFrame
from streamer.streaming.schemas import SCHEMA_DIR, render_schemas, stale_schemas


def test_schema_files_match_the_models():
    stale = stale_schemas()
    assert stale == [], f"run `streamer schemas write`: {stale} drifted"


def test_drift_is_detected(tmp_path):
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    assert stale_schemas(tmp_path) == []
    edited = json.loads((tmp_path / "raw_frame.schema.json").read_text())
    edited["properties"]["frame_id"]["maxLength"] = 5
    (tmp_path / "raw_frame.schema.json").write_text(json.dumps(edited))
    assert stale_schemas(tmp_path) == ["raw_frame.schema.json"]


def test_every_model_has_a_versioned_schema():
    assert {f"{name}.schema.json" for name in MODELS} == {p.name for p in SCHEMA_DIR.glob("*.json")}
    for path in SCHEMA_DIR.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["properties"]["schema_version"]["default"] == SCHEMA_VERSION == 4
        assert schema["properties"]["schema_version"]["enum"] == [1, 2, 3, 4]
        assert schema["$id"].endswith(f"/v{SCHEMA_VERSION}/{path.name}")


def test_version_1_records_still_validate():
    record = _raw().model_dump(mode="json")
    record["schema_version"] = 1
    assert RawFrame.model_validate(record).schema_version == 1


def _raw(**changes):
    values = dict(frame_id="cam1:1", camera_id="cam1",
                  exposure_start=dt.datetime(2026, 11, 24, 22, tzinfo=dt.timezone.utc),
                  exposure_seconds=30.0, shape=(10, 12), dtype="uint16", encoding="fits",
                  payload_bytes=2880, payload_digest="blake3:" + "0" * 64, chunk_count=1,
                  published_at=dt.datetime(2026, 11, 24, 22, 0, 31, tzinfo=dt.timezone.utc))
    values.update(changes)
    return RawFrame(**values)


def test_envelope_round_trip():
    raw = _raw()
    assert parse_envelope(raw.model_dump_json().encode()) == raw


@pytest.mark.parametrize("change", [{"payload_digest": "xyz"}, {"chunk_count": 0},
                                    {"encoding": "png"}, {"exposure_seconds": -1}])
def test_invalid_envelopes_are_refused(change):
    with pytest.raises(ValidationError):
        _raw(**change)


def test_parse_envelope_errors_name_the_field():
    with pytest.raises(EnvelopeError, match="frame_id"):
        parse_envelope(b'{"camera_id": "cam1"}')
    with pytest.raises(EnvelopeError, match="no envelope"):
        parse_envelope(None)


def test_payloads_are_checked_by_the_digest_their_envelope_names():
    """streamer writes BLAKE3; a camera's SHA-256 is checked as SHA-256 (both against
    hashlib's and the blake3 package's own figures for the same bytes)."""
    import hashlib

    import blake3

    payload = bytes(range(256)) * 20
    assert payload_digest(payload) == "blake3:" + blake3.blake3(payload).hexdigest()
    assert payload_digest(payload, "sha256") == "sha256:" + hashlib.sha256(payload).hexdigest()
    for algorithm in ("blake3", "sha256"):
        envelope = _raw(payload_bytes=len(payload),
                        payload_digest=payload_digest(payload, algorithm))
        check_payload(envelope, payload)
        with pytest.raises(ChecksumError, match=f"differs from the envelope's {algorithm}:"):
            check_payload(envelope, payload[:-1] + b"x")
    with pytest.raises(ValidationError):  # no algorithm named: not a digest
        _raw(payload_digest="0" * 64)


def test_version_3_digests_read_as_sha256():
    """A version-3 camera's ``payload_sha256`` is that payload's SHA-256 under the version-4
    name, and its payload checks."""
    payload = b"version three" * 100
    record = _raw(payload_bytes=len(payload)).model_dump(mode="json")
    del record["payload_digest"]
    record.update(schema_version=3, payload_sha256=payload_digest(payload, "sha256")[7:])
    raw = parse_envelope(json.dumps(record).encode())
    assert raw.schema_version == 3 and raw.payload_digest == payload_digest(payload, "sha256")
    check_payload(raw, payload)
