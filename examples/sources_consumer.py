"""Print each frame's sources as they are published: a tracker's first consumer.

    python examples/sources_consumer.py --bootstrap-servers localhost:9092 [--frames N]

Plain aiokafka, read_committed (a frame's catalogue is committed with its restored frame, so
an aborted frame's never shows). A catalogue is one record, or several chunks for a crowded
field: the ``streamer-envelope`` header holds the frame-level figures, ``streamer-chunk``
says ``index/count``, and the values joined are the JSON array of sources.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiokafka import AIOKafkaConsumer


async def consume(bootstrap: str, topic: str, frames: int | None) -> None:
    """Print the catalogues of ``topic`` from its start (``frames`` of them, or forever)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    parts: dict[tuple[int, str], list[bytes]] = {}  # (partition, frame id) -> chunks so far
    seen = 0
    try:
        async for record in consumer:
            headers = dict(record.headers or ())
            envelope = json.loads(headers["streamer-envelope"])
            index, count = map(int, headers["streamer-chunk"].decode().split("/"))
            key = (record.partition, envelope["frame_id"])
            parts.setdefault(key, []).append(record.value)
            if index + 1 < count:
                continue
            sources = json.loads(b"".join(parts.pop(key)))
            print(f"{envelope['frame_id']}  mid-exposure {envelope['mid_exposure']} "
                  f"(MJD {envelope['mjd']:.6f})  {envelope['count']} sources, "
                  f"5σ limit {envelope['limiting_mag']:.2f} mag, seeing "
                  f"{envelope['seeing']:.2f} px, {envelope['trails']} trails")
            for source in sources:
                where = (f"RA {source['ra']:.6f} Dec {source['dec']:+.6f}"
                         if source.get("ra") is not None else
                         f"x {source['x']:.2f} y {source['y']:.2f}")
                mag = ("mag –" if source["mag"] is None else
                       f"mag {source['mag']:.3f} ± {source['mag_error']:.3f}")
                print(f"  #{source['id']:<4} {where}  {mag}  S/N {source['snr']:.1f}  "
                      f"flags {source['flags']}")
            seen += 1
            if frames is not None and seen >= frames:
                break
    finally:
        await consumer.stop()


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="Print each frame's sources.")
    parser.add_argument("--bootstrap-servers", default="localhost:9092")
    parser.add_argument("--topic", default="frames.sources")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    args = parser.parse_args()
    asyncio.run(consume(args.bootstrap_servers, args.topic, args.frames))


if __name__ == "__main__":
    main()
