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

from streamer.errors import RetryBudgetError
from streamer.worker.partitions import PartitionState, Suspect

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


async def count_attempt(state: PartitionState, first_offset: int, group_id: str,
                        retry_budget: int) -> RetryBudgetError | None:
    """For the frame a previous owner may have died on (the partition's suspect): the error
    that dead-letters it when its attempts are spent, else None after recording one more
    attempt (committed before the frame is decoded). Other frames pass with None."""
    # The suspect is read while the partition is acquired, and records can arrive before
    # that ends: wait, or the first frame would slip past uncounted.
    await state.ready.wait()
    suspect = state.suspect
    if not state.owned or suspect is None or not suspect.is_frame_at(first_offset):
        return None
    state.suspect = None
    earlier = suspect.earlier_attempts
    if earlier >= retry_budget:
        return RetryBudgetError(
            f"gave up after {earlier} attempts: a worker stopped (crashed, killed, or its "
            "device failed) each time it restored this frame")
    if state.publisher.started:
        # Uncounted (a failed commit), the frame is still restored; the publisher renewed its
        # producer, so the frame's own transaction starts clean.
        await state.publisher.commit_offsets(
            {state.topic_partition: marker(first_offset, earlier + 1)}, group_id,
            f"an attempt at {state.topic}[{state.partition}]@{first_offset}")
    return None


def suspect_of(committed: int | None, recorded: tuple[int, int] | None) -> Suspect:
    """The suspect of a partition whose committed offset is ``committed`` and whose recorded
    attempts are ``recorded`` (:func:`recorded_attempts`)."""
    earlier = recorded[1] if recorded is not None and recorded[0] == committed else 0
    return Suspect(committed, earlier)
