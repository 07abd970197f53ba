"""Chunking and reassembly, without Kafka: the offsets to commit, interleaved frames, frames
whose start is before the reader's position, and malformed chunks."""

from __future__ import annotations

import pytest

from streamer.errors import ChunkError, FrameTooLargeError
from streamer.streaming.framing import PartitionAssembler, frame_records, headers_dict


def _records(envelope: bytes, payload: bytes, chunk: int):
    return [(value, headers_dict(headers)) for value, headers in frame_records(envelope, "raw", payload, chunk)]


def test_split_and_join_round_trip():
    payload = bytes(range(256)) * 40
    assembler = PartitionAssembler(0, 1 << 20)
    for offset, (value, headers) in enumerate(_records(b'{"a":1}', payload, 1000)):
        assert assembler.ready() == [] or offset == 0
        assembler.add(offset, value, headers)
    (item,) = assembler.ready()
    assert item.payload == payload and item.offsets == list(range(11)) and item.error is None
    assert assembler.finish(item) == 11


def test_empty_payload_is_one_record():
    records = frame_records(b"{}", "raw", b"", 10)
    assert len(records) == 1 and records[0][0] == b""


def test_interleaved_frames_are_handed_out_in_first_offset_order():
    a = _records(b"A", b"a" * 30, 10)  # 3 chunks
    b = _records(b"B", b"b" * 20, 10)  # 2 chunks
    order = [a[0], b[0], b[1], a[1], a[2]]  # offsets 0..4
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(0, *order[0])
    assembler.add(1, *order[1])
    assembler.add(2, *order[2])
    assert assembler.ready() == []  # B is complete but A, which started first, is not
    assembler.add(3, *order[3])
    assembler.add(4, *order[4])
    first, second = assembler.ready()
    assert (first.envelope_json, first.offsets) == (b"A", [0, 3, 4])
    assert (second.envelope_json, second.offsets) == (b"B", [1, 2])
    assert assembler.finish(first) == 1   # B (from offset 1) is not handled yet
    assert assembler.finish(second) == 5


def test_restart_inside_an_interleaving_skips_the_finished_frame():
    # After A (offsets 0,3,4) was handled and offset 1 committed, a new reader starts at 1:
    # it must rebuild B and skip A's remaining chunks, not wait for A's chunk 0 forever.
    a = _records(b"A", b"a" * 30, 10)
    b = _records(b"B", b"b" * 20, 10)
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(1, *b[0])
    assembler.add(2, *b[1])
    assembler.add(3, *a[1])
    assembler.add(4, *a[2])
    (item,) = assembler.ready()
    assert item.envelope_json == b"B" and assembler.skipped == 2
    assert assembler.finish(item) == 5


def test_record_without_headers_is_rejected_in_place():
    good = _records(b"G", b"g" * 5, 10)
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(0, b"garbage", {})
    assembler.add(1, *good[0])
    bad, ok = assembler.ready()
    assert isinstance(bad.error, ChunkError) and bad.payload == b"garbage"
    assert ok.error is None
    assert assembler.finish(bad) == 1 and assembler.finish(ok) == 2


def test_gap_in_chunks_is_an_error():
    chunks = _records(b"A", b"a" * 30, 10)
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(0, *chunks[0])
    assembler.add(1, *chunks[2])
    (item,) = assembler.ready()
    assert isinstance(item.error, ChunkError) and "arrived after" in str(item.error)


def test_malformed_chunk_header():
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(0, b"x", {"streamer-envelope": b"{}", "streamer-chunk": b"seven"})
    (item,) = assembler.ready()
    assert isinstance(item.error, ChunkError)


def test_frames_over_the_limit_are_rejected_without_buffering_them():
    chunks = _records(b"A", b"a" * 100, 10)
    assembler = PartitionAssembler(0, 35)
    for offset, (value, headers) in enumerate(chunks):
        assembler.add(offset, value, headers)
    (item,) = assembler.ready()
    assert isinstance(item.error, FrameTooLargeError)
    assert assembler.skipped == len(chunks) - 1  # refused at its first chunk: nothing held
    assert assembler.finish(item) == len(chunks)


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 100])
def test_chunk_counts(size):
    assert len(frame_records(b"E", "raw", b"z" * size, 10)) == max(1, -(-size // 10))


def _chunk(envelope: bytes, index: int, count: int, value: bytes = b"x"):
    return value, {"streamer-kind": b"raw", "streamer-envelope": envelope,
                   "streamer-chunk": f"{index}/{count}".encode()}


def test_an_absurd_chunk_count_fails_at_once():
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(0, *_chunk(b"E1", 0, 1_000_000_000, b"x" * 100))
    assembler.add(1, *_records(b"E2", b"good", 10)[0])
    first, second = assembler.ready()
    assert isinstance(first.error, FrameTooLargeError) and second.error is None


def test_the_header_count_must_match_the_envelope():
    envelope = b'{"frame_id": "f", "chunk_count": 3}'
    assembler = PartitionAssembler(0, 1 << 20)
    assembler.add(0, *_chunk(envelope, 0, 2, b"a"))
    assert assembler.ready() == []                 # its chunks are still gathered …
    assembler.add(1, *_chunk(envelope, 1, 2, b"b"))
    (item,) = assembler.ready()                    # … so the dead letter keeps every byte
    assert isinstance(item.error, ChunkError) and "envelope 3" in str(item.error)
    assert item.payload == b"ab" and item.offsets == [0, 1]


def test_an_incomplete_frame_expires_after_its_timeout():
    now = [0.0]
    assembler = PartitionAssembler(0, 1 << 20, timeout_seconds=60, clock=lambda: now[0])
    assembler.add(0, *_chunk(b"E1", 0, 2))            # its second chunk never comes
    assembler.add(1, *_records(b"E2", b"later", 10)[0])
    assert assembler.ready() == []                     # the head waits …
    now[0] = 61.0
    stalled, later = assembler.ready()                 # … but not forever
    assert isinstance(stalled.error, ChunkError) and "1 of 2 chunks" in str(stalled.error)
    assert later.error is None and later.payload == b"later"
    assembler.finish(stalled)
    assert assembler.finish(later) == 2


def test_an_incomplete_frame_expires_after_enough_later_records():
    assembler = PartitionAssembler(0, 1 << 20, span_records=5)
    assembler.add(0, *_chunk(b"E1", 0, 2))
    for offset in range(1, 8):
        assembler.add(offset, *_records(f"E{offset + 1}".encode(), b"ok", 10)[0])
    items = assembler.ready()
    assert isinstance(items[0].error, ChunkError) and len(items) == 8


def test_a_payload_is_cut_into_views_not_copies():
    # A restored frame's payload (a buffer the FITS writer filled) is cut into views of it:
    # the chunks put back together are the payload, and changing the payload shows in them.
    import numpy as np

    from streamer.streaming.framing import split_payload

    buffer = np.arange(10_000, dtype=np.uint32).view(np.uint8)
    chunks = split_payload(buffer.data, 4096)
    assert [len(chunk) for chunk in chunks] == [4096] * 9 + [40_000 - 9 * 4096]
    assert b"".join(chunks) == buffer.tobytes()
    buffer[5000] ^= 0xFF
    assert chunks[1][5000 - 4096] == buffer[5000]  # a view: no copy was made
    assert split_payload(b"", 4096) == [b""] and split_payload(b"abc", 2) == [b"ab", b"c"]
