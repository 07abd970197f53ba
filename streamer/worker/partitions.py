"""What a worker holds per input partition, in one object made at assignment and dropped at
revocation (as aiokafka's ``Assignment`` holds a ``TopicPartitionState`` per partition).

A frame in the pipeline carries the :class:`PartitionState` it was fetched under. Once the
partition is revoked that state is marked so, and every stage that meets the frame drops it:
the next owner redoes it. A partition assigned again gets a fresh state, so nothing of the
previous ownership — chunks, attempts, a producer, counts — can leak into the new one.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from streamer.streaming.framing import PartitionAssembler
from streamer.streaming.publisher import TransactionalPublisher


@dataclass
class Suspect:
    """The frame at a partition's committed offset when it was assigned — the one a previous
    owner may have died on — and the attempts recorded on it (``offset`` None: nothing was
    committed yet, the partition's first frame)."""

    offset: int | None
    earlier_attempts: int

    def is_frame_at(self, offset: int) -> bool:
        """Whether the frame starting at ``offset`` is the suspect."""
        return self.offset is None or self.offset == offset


@dataclass(eq=False)
class PartitionState:
    """One owned input partition: its chunk assembler, its transactional publisher (whose id
    fences the partition's previous owner), the suspect frame, and the frames in flight."""

    topic: str
    partition: int
    assembler: PartitionAssembler
    publisher: TransactionalPublisher
    # Set once the publisher has started and the attempts are read: frames wait for it.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    suspect: Suspect | None = None
    busy: int = 0                 # frames past the fetch stage, neither committed nor dropped
    fetched_to: int | None = None  # the offset after the last data record fetched
    revoked: bool = False

    @property
    def topic_partition(self) -> TopicPartition:
        """The Kafka topic-partition."""
        return TopicPartition(self.topic, self.partition)

    @property
    def owned(self) -> bool:
        """Whether this worker still owns the partition under this state."""
        return not self.revoked


class Assignment:
    """The partitions a worker owns now, each with its :class:`PartitionState`."""

    def __init__(self) -> None:
        self._states: dict[int, PartitionState] = {}
        self._changed = asyncio.Event()
        # Times each partition was assigned to this worker (a rebalance shows as a second).
        self.acquired: collections.Counter[int] = collections.Counter()

    def add(self, state: PartitionState) -> None:
        """Own ``state``'s partition (replacing any stale state of it)."""
        old = self._states.get(state.partition)
        if old is not None:
            old.revoked = True
        self._states[state.partition] = state
        self.acquired[state.partition] += 1

    def remove(self, partition: int) -> PartitionState | None:
        """Give the partition up: its state is marked revoked (frames waiting on its publisher
        are woken to find that out) and returned."""
        state = self._states.pop(partition, None)
        if state is not None:
            state.revoked = True
            state.ready.set()
        return state

    def get(self, partition: int) -> PartitionState | None:
        """The state of an owned partition, or None."""
        return self._states.get(partition)

    def states(self) -> list[PartitionState]:
        """Every owned partition's state, by partition."""
        return [self._states[p] for p in sorted(self._states)]

    @property
    def busy(self) -> bool:
        """Whether any owned partition has frames in flight past the fetch stage."""
        return any(state.busy for state in self._states.values())

    def taken(self, state: PartitionState) -> None:
        """A frame of ``state`` entered the device stage."""
        state.busy += 1

    def finished(self, state: PartitionState) -> None:
        """A frame of ``state`` was committed or dropped."""
        state.busy -= 1
        self._changed.set()

    async def drained(self, states: list[PartitionState]) -> None:
        """Wait until no frame of ``states`` is in flight (they commit before the partitions
        are given up)."""
        while any(state.busy for state in states):
            self._changed.clear()
            await self._changed.wait()
