"""A corpus of bad raw records, each the way a real fault or a hostile producer makes it:
malformed transport, lying envelopes, payloads that do not decode, dtypes that are not
numbers, frames with no signal, decompression bombs, chunk groups that never complete."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streamer.imaging.fits_io import image_bytes
from streamer.streaming.framing import frame_records, payload_digest
from streamer.streaming.messages import RawFrame

Record = tuple[bytes, list[tuple[str, bytes]]]


@dataclass
class Case:
    """One kind of bad record: its records, and the error type it must be dead-lettered with
    (None: any)."""

    name: str
    records: list[Record]
    error: str | None


def _envelope(frame_id: str, payload: bytes, *, shape=(16, 16), dtype="uint16",
              encoding="fits", **changes) -> dict:
    values = dict(frame_id=frame_id, camera_id="poison", exposure_start=dt.datetime.now(
        dt.timezone.utc).isoformat(), exposure_seconds=1.0, shape=list(shape), dtype=dtype,
        encoding=encoding, payload_bytes=len(payload), payload_digest=payload_digest(payload),
        chunk_count=1, published_at=dt.datetime.now(dt.timezone.utc).isoformat())
    values.update(changes)
    return values


def _records(envelope: dict | bytes, payload: bytes, chunk_bytes: int = 1 << 20) -> list[Record]:
    text = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    return frame_records(text, "raw", payload, chunk_bytes)


def _chunk(envelope: dict, payload: bytes, header: str) -> Record:
    return payload, [("streamer-kind", b"raw"),
                     ("streamer-envelope", json.dumps(envelope).encode()),
                     ("streamer-chunk", header.encode())]


def _fits(data: np.ndarray | None, extension: fits.BinTableHDU | None = None) -> bytes:
    hdus = [fits.PrimaryHDU(data)]
    if extension is not None:
        hdus.append(extension)
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def _bomb(side: int) -> bytes:
    hdu = fits.CompImageHDU(np.zeros((side, side), np.uint8), compression_type="GZIP_1")
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def _fits_case(name: str, payload: bytes, error: str | None, **envelope) -> Case:
    return Case(name, _records(_envelope(f"poison-{name}", payload, **envelope), payload), error)


def _raw_case(name: str, array: np.ndarray, error: str | None, dtype: str | None = None,
              shape=None) -> Case:
    payload = array.tobytes()
    envelope = _envelope(f"poison-{name}", payload, shape=shape or array.shape,
                         dtype=dtype or str(array.dtype), encoding="raw")
    return Case(name, _records(envelope, payload), error)


def corpus(bomb_side: int = 2048) -> list[Case]:
    """At least 30 kinds of bad records."""
    rng = np.random.default_rng(0)
    good = (rng.random((16, 16)) * 1000).astype(np.uint16)
    fits_payload = _fits(good)
    cases = [
        Case("no headers", [(b"just some bytes", [])], "ChunkError"),
        Case("envelope not JSON", _records(b"{not json", fits_payload), "EnvelopeError"),
        Case("envelope not an object", _records(b"[1, 2, 3]", fits_payload), "EnvelopeError"),
        Case("envelope missing fields", _records(b'{"frame_id": "half"}', fits_payload),
             "EnvelopeError"),
        Case("oversize frame id", _records(_envelope("x" * 500, fits_payload), fits_payload),
             "EnvelopeError"),
        Case("unknown encoding", _records(_envelope("poison-enc", fits_payload, encoding="png"),
                                          fits_payload), "EnvelopeError"),
        Case("payload size lies", _records(_envelope("poison-size", fits_payload,
                                                     payload_bytes=len(fits_payload) + 7),
                                           fits_payload), "ChecksumError"),
        Case("truncated payload", _records(_envelope("poison-trunc", fits_payload),
                                           fits_payload[:1000]), "ChecksumError"),
        Case("checksum mismatch", _records(_envelope("poison-sha", fits_payload,
                                                     payload_digest="blake3:" + "f" * 64), fits_payload),
             "ChecksumError"),
        _fits_case("not FITS", b"definitely not a FITS file" * 10, "FrameDecodeError"),
        _fits_case("truncated FITS", fits_payload[:3000], "FrameDecodeError"),
        _fits_case("table only", _fits(None, fits.BinTableHDU.from_columns(
            [fits.Column("a", "J", array=np.arange(3))])), "FrameDecodeError"),
        _fits_case("cube", _fits(np.zeros((3, 16, 16), np.uint16)), None, shape=(16, 16)),
        _fits_case("all NaN", _fits(np.full((16, 16), np.nan, np.float32)), "NoValidPixelError"),
        _fits_case("all zero", _fits(np.zeros((16, 16), np.uint16)), "NoSignalError"),
        _fits_case("all saturated", _fits(np.full((16, 16), 65535, np.uint16)), "NoSignalError"),
        _fits_case("one pixel", _fits(np.ones((1, 1), np.float32)), "NoSignalError",
                   shape=(1, 1)),
        _fits_case("shape disagrees", fits_payload, "FrameDecodeError", shape=(20, 20)),
        _fits_case("decompression bomb", _bomb(bomb_side), "FrameTooLargeError",
                   shape=(bomb_side, bomb_side)),
        _raw_case("datetime64", np.zeros((16, 16), "datetime64[ns]"), "FrameDecodeError"),
        _raw_case("complex", np.zeros((16, 16), np.complex64) + 1j, "FrameDecodeError"),
        _raw_case("bool", rng.random((16, 16)) > 0.5, "FrameDecodeError"),
        _raw_case("strings", np.full((16, 16), "abcd"), "FrameDecodeError"),
        _raw_case("unknown dtype", good, "FrameDecodeError", dtype="float99"),
        _raw_case("raw size disagrees", good[:5], "FrameDecodeError", shape=(16, 16)),
        _raw_case("negative shape", good, None, shape=(-16, -16)),
        _raw_case("huge declared shape", good, "FrameTooLargeError", shape=(100_000, 100_000)),
    ]
    envelope = _envelope("poison-chunks", b"x" * 300, chunk_count=3)
    counted = _envelope("poison-count", b"xy", chunk_count=5)
    duplicated = _envelope("poison-dup", b"x" * 200, chunk_count=2)
    cases += [
        Case("absurd chunk count", [_chunk(_envelope("poison-absurd", b"x" * 100,
                                                     chunk_count=1_000_000_000), b"x" * 100,
                                           "0/1000000000")], "FrameTooLargeError"),
        Case("count disagrees with envelope",
             [_chunk(counted, b"x", "0/2"), _chunk(counted, b"y", "1/2")], "ChunkError"),
        Case("chunk gap", [_chunk(envelope, b"x" * 100, "0/3"),
                           _chunk(envelope, b"x" * 100, "2/3")], "ChunkError"),
        Case("chunk duplicate", [_chunk(duplicated, b"x" * 100, "0/2"),
                                 _chunk(duplicated, b"x" * 100, "0/2")], "ChunkError"),
        Case("chunk index out of range", [_chunk(_envelope("poison-range", b"x"), b"x", "3/2")],
             "ChunkError"),
        Case("malformed chunk header", [_chunk(_envelope("poison-hdr", b"x"), b"x", "abc")],
             "ChunkError"),
        Case("never completes", [_chunk(_envelope("poison-stall", b"x" * 200, chunk_count=2),
                                        b"x" * 100, "0/2")], "ChunkError"),
    ]
    return cases


def good_frame(index: int) -> tuple[RawFrame, bytes]:
    """A small valid frame (a star field) with a frame id of its own."""
    from streamer.imaging.psf import gaussian_psf
    from streamer.imaging.synthetic import star_field

    data = np.clip(np.round(star_field((64, 64), gaussian_psf(2.0), stars=6, margin=8,
                                       seed=index).image), 0, 65535).astype(np.uint16)
    payload = image_bytes(data)
    now = dt.datetime.now(dt.timezone.utc)
    envelope = RawFrame(frame_id=f"good-{index}", camera_id="good", exposure_start=now,
                        exposure_seconds=1.0, shape=data.shape, dtype="uint16", encoding="fits",
                        payload_bytes=len(payload), payload_digest=payload_digest(payload),
                        chunk_count=1, source_name=f"good_{index:03d}.fits", published_at=now)
    return envelope, payload
