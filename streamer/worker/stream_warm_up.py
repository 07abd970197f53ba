"""Warming up on the stream's own newest frame, before a worker joins the group.

A worker joining a running group (a new machine, a restart after an upgrade that emptied the
caches) would otherwise pay its kernel builds, PoCL's first launches and its first plans on
the first frame it is given — 7–9 s more than a warm frame at 2048² on the development
machine, while that partition waits. The frames already on the input topic say what is
coming: their shape, their type, and (once measured) their PSF's size, hence the kernels,
plans and FFT sizes the frames to come will need. So the worker reads the newest complete
frame of the fullest partition — without a group, committing nothing, read_committed — and
restores it once on its device as a camera of its own (``warm-up``), catalogue maps included,
before it subscribes. A topic with no frame yet gives nothing to warm on; a frame that cannot
be read or restored is logged and skipped: warming up never stops a worker. Nor may it
crash-loop one: a frame that kills the process (the kind the attempts count dead-letters,
:mod:`streamer.worker.attempts`) would be the newest frame at every restart, so the frame being
warmed on is written to ``$STREAMER_CACHE_DIR/warm-up-frame-<device>`` first and removed
after; a worker that finds it there at its start died warming on that frame and does not try
it again (one file per device: the workers of one machine, one per GPU, warm side by side).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.errors import WarmUpCrashedError
from streamer.restoration.plan_cache import cache_directory
from streamer.restoration.restorer import Restorer
from streamer.settings import StreamerSettings
from streamer.streaming.codec import FrameLimits, decode_payload, parse_envelope
from streamer.streaming.framing import AssembledFrame, PartitionAssembler, headers_dict
from streamer.streaming.kafka_clients import consumer, start_client, topic_partitions
from streamer.streaming.messages import CHUNK_HEADER
from streamer.worker.warm_up import WARM_CAMERA

log = logging.getLogger(__name__)

PROBE_RECORDS = 16      # read this far back from the end to learn a frame's chunk count
LOOKBACK_FRAMES = 2     # then this many frames' records, so one is whole after interleaving
POLL_MS = 500
GUARD_FILE = "warm-up-frame"


def guard_file(device_name: str) -> Path:
    """Where a warm-up on ``device_name`` records the frame it is on."""
    return cache_directory() / f"{GUARD_FILE}-{re.sub(r'[^A-Za-z0-9._-]+', '_', device_name)}"


def guarded(path: Path, key: str) -> None:
    """Record that a warm-up on ``key`` begins.

    Raises
    ------
    WarmUpCrashedError
        The record of an earlier warm-up on the same frame is still there.
    """
    if path.exists() and path.read_text().strip() == key:
        raise WarmUpCrashedError(
            f"the last warm-up on frame {key} never finished; it is not tried again (delete "
            f"{path} to allow it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key)


async def newest_frame(settings: StreamerSettings, topic: str, timeout_seconds: float = 30.0
                       ) -> AssembledFrame | None:
    """The newest whole frame of ``topic``'s fullest partition, or None when the topic holds
    none (or reading it takes longer than ``timeout_seconds``)."""
    client = consumer(settings, group_id=None)
    await start_client(client)
    try:
        return await asyncio.wait_for(_newest(client, settings, topic), timeout_seconds)
    except asyncio.TimeoutError:
        log.warning("warm-up: no whole frame read from %s within %.0f s", topic,
                    timeout_seconds)
        return None
    finally:
        await client.stop()


async def _newest(client: AIOKafkaConsumer, settings: StreamerSettings, topic: str
                  ) -> AssembledFrame | None:
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        return None
    ends = await client.end_offsets(partitions)
    begins = await client.beginning_offsets(partitions)
    filled = [tp for tp in partitions if ends[tp] > begins[tp]]
    if not filled:
        return None
    tp = max(filled, key=lambda t: ends[t])
    client.assign([tp])
    count = await _chunk_count(client, tp, max(begins[tp], ends[tp] - PROBE_RECORDS))
    client.seek(tp, max(begins[tp], ends[tp] - LOOKBACK_FRAMES * (count + 1) - 2))
    assembler = PartitionAssembler(tp.partition, settings.max_frame_bytes)
    newest, idle = None, 0
    while await client.position(tp) < ends[tp] and idle < 4:
        records = (await client.getmany(tp, timeout_ms=POLL_MS)).get(tp, [])
        idle = 0 if records else idle + 1  # a transaction's end marker is never returned
        for record in records:
            assembler.add(record.offset, record.value, headers_dict(record.headers))
        for item in assembler.ready():
            if item.error is None:
                newest = item
            assembler.finish(item)
    return newest


async def _chunk_count(client: AIOKafkaConsumer, tp: TopicPartition, start: int) -> int:
    """The chunk count in the headers of the last record from ``start`` on (1 if none)."""
    client.seek(tp, start)
    records = (await client.getmany(tp, timeout_ms=POLL_MS * 4)).get(tp, [])
    if not records:
        return 1
    header = headers_dict(records[-1].headers).get(CHUNK_HEADER, b"0/1")
    try:
        return max(1, int(header.decode().split("/")[1]))
    except (ValueError, IndexError, UnicodeDecodeError):
        return 1


def warm_on_frame(restorer: Restorer, item: AssembledFrame, limits: FrameLimits,
                  guard: Path | None = None) -> str:
    """Restore ``item`` once as the warm-up camera (catalogue maps too, when the worker makes
    catalogues); what it was, for the log. Raises what decoding or restoring raises, and
    WarmUpCrashedError when ``guard`` (default :func:`guard_file`) shows that a warm-up on
    this frame died."""
    raw = parse_envelope(item.envelope_json)
    guard = guard or guard_file(restorer.device_name)
    guarded(guard, f"{raw.frame_id} (partition {item.partition}, offset {item.first_offset})")
    image = decode_payload(raw, item.payload, limits)
    restorer.restore(image.data, header=image.header, camera_id=WARM_CAMERA,
                     snr_maps=restorer.settings.sources)
    # Removed only on success: a frame that raised is not worth a second try either.
    guard.unlink(missing_ok=True)
    height, width = image.data.shape
    return f"{height}x{width}:{image.data.dtype} (camera {raw.camera_id}'s newest frame)"
