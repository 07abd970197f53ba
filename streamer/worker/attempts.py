"""A frame's attempts, counted across worker restarts, so that no frame can crash-loop a
worker.

After a partition changes hands, the frame at its committed offset is the one a previous
owner may have died on (killed, out of memory, a driver fault). Before the device touches it,
the new owner commits that same offset once more, in a transaction, with the attempt number as
the offset's metadata (``streamer-attempt <offset> <n>``); the frame's normal commit, one offset
further, clears it. The next owner reads the metadata back: a frame that has been attempted
``retry_budget`` times goes to dead letters without being tried again.
"""

from __future__ import annotations

import re

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

_MARKER = re.compile(r"^streamer-attempt (\d+) (\d+)$")


def marker(offset: int, attempt: int) -> OffsetAndMetadata:
    """The committed offset that records ``attempt`` on the frame at ``offset``."""
    return OffsetAndMetadata(offset, f"streamer-attempt {offset} {attempt}")


def attempts_from(committed: OffsetAndMetadata | None) -> tuple[int, int] | None:
    """``(offset, attempts)`` recorded by a committed offset, or None when it records none."""
    if committed is None or committed.offset < 0:
        return None
    match = _MARKER.match(committed.metadata or "")
    if not match or int(match.group(1)) != committed.offset:
        return None
    return committed.offset, int(match.group(2))


async def recorded_attempts(admin, group_id: str, partitions: list[TopicPartition]
                            ) -> dict[int, tuple[int, int]]:
    """Partition → (offset, attempts) for the partitions whose committed offset records
    attempts."""
    offsets = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
    found = {}
    for tp, committed in (offsets or {}).items():
        recorded = attempts_from(committed)
        if recorded is not None:
            found[tp.partition] = recorded
    return found
