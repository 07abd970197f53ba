"""The worker's exactly-once logic without a broker: the transaction stage (Committer), the
attempt counting and the per-partition state, driven with fake publishers. The same logic on
the real broker, with SIGKILLs and restarts: tests/streaming/test_streaming.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from streamer.errors import RetryBudgetError, UnexpectedFrameError
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from streamer.streaming.framing import PartitionAssembler, frame_records
from streamer.streaming.publisher import Outcome, OutgoingRecord, Published
from streamer.worker.attempts import attempts_from, count_attempt, suspect_of
from streamer.worker.committer import Committer
from streamer.worker.items import DecodedFrame, FrameOutcome
from streamer.worker.partitions import Assignment, PartitionState, Suspect

SETTINGS = StreamerSettings()


@dataclass
class FakePublisher:
    """Records what would be committed; answers with ``outcomes`` in turn (then COMMITTED)."""

    outcomes: list[Outcome] = field(default_factory=list)
    transactions: list[tuple[list[OutgoingRecord], dict]] = field(default_factory=list)
    offset_commits: list[dict] = field(default_factory=list)
    started: bool = True
    fail_offset_commit: bool = False

    async def publish(self, records, offsets=None, group_id=None, *, what="", keep_trying=None,
                      **_) -> Published:
        await asyncio.sleep(0)
        if keep_trying is not None and not keep_trying():
            return Published(Outcome.ABANDONED)
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.COMMITTED
        if outcome is Outcome.COMMITTED:
            self.transactions.append((list(records), dict(offsets or {})))
        return Published(outcome, 1)

    async def commit_offsets(self, offsets, group_id, what="") -> bool:
        if self.fail_offset_commit:
            return False
        self.offset_commits.append(dict(offsets))
        return True


def state_with_frames(count: int, partition: int = 0, publisher: FakePublisher | None = None
                      ) -> tuple[PartitionState, list]:
    """A partition state whose assembler has ``count`` one-chunk frames at offsets 0.."""
    assembler = PartitionAssembler(partition, 1 << 20)
    for offset in range(count):
        [(value, headers)] = frame_records(f'{{"frame_id": "f{offset}"}}'.encode(), "raw",
                                           b"pixels", 1 << 20)
        assembler.add(offset, value, dict(headers))
    state = PartitionState("frames.raw", partition, assembler, publisher or FakePublisher())
    state.ready.set()
    return state, assembler.ready()


def outcome(state: PartitionState, item, error=None) -> FrameOutcome:
    decoded = DecodedFrame(state, item, None, None, error, 0.0)
    return FrameOutcome(decoded, [OutgoingRecord("out", b"k", item.payload)], error, None)


def finished(item: FrameOutcome) -> asyncio.Future[FrameOutcome]:
    """An outcome as the encode stage queues it: a future, here already done."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(item)
    return future


async def commit_all(committer: Committer, assignment: Assignment, outcomes: list[FrameOutcome],
                     ) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(committer.run(stop, max_frames=None))
    for item in outcomes:
        assignment.taken(item.decoded.state)
        await committer.results.put(finished(item))
    while not committer.results.empty() or assignment.busy:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)


def make_committer(assignment: Assignment) -> Committer:
    return Committer(SETTINGS, StreamerMetrics("worker"), assignment, asyncio.Queue(maxsize=1),
                     "w1")


def test_each_frame_commits_its_records_and_the_next_offset_in_one_transaction():
    async def scenario():
        assignment = Assignment()
        state, items = state_with_frames(3)
        assignment.add(state)
        committer = make_committer(assignment)
        error = UnexpectedFrameError("bad")
        await commit_all(committer, assignment,
                         [outcome(state, items[0]), outcome(state, items[1], error),
                          outcome(state, items[2])])
        return committer, state

    committer, state = asyncio.run(scenario())
    tp = TopicPartition("frames.raw", 0)
    assert [offsets for _, offsets in state.publisher.transactions] == [{tp: 1}, {tp: 2}, {tp: 3}]
    assert [records[0].value for records, _ in state.publisher.transactions] == [b"pixels"] * 3
    assert (committer.restored, committer.failed) == (2, 1)
    assert committer.metrics.registry.get_sample_value(
        "streamer_frames_failed_total", {"reason": "UnexpectedFrameError"}) == 1
    assert state.busy == 0


def test_a_frame_finished_out_of_order_commits_only_up_to_the_oldest_unfinished():
    async def scenario():
        assignment = Assignment()
        state, items = state_with_frames(3)
        assignment.add(state)
        committer = make_committer(assignment)
        await commit_all(committer, assignment, [outcome(state, items[1])])
        return state

    state = asyncio.run(scenario())
    # Frame 0 is not handled yet: committing past it would lose it on a crash.
    assert [offsets for _, offsets in state.publisher.transactions] == \
        [{TopicPartition("frames.raw", 0): 0}]


def test_frames_of_a_revoked_partition_are_dropped_uncommitted():
    async def scenario():
        assignment = Assignment()
        state, items = state_with_frames(2)
        assignment.add(state)
        committer = make_committer(assignment)
        assignment.taken(state)
        assignment.remove(0)  # revoked while the frame was on the device
        await committer.results.put(finished(outcome(state, items[0])))
        stop = asyncio.Event()
        task = asyncio.create_task(committer.run(stop))
        while not committer.results.empty() or state.busy:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        return committer, state

    committer, state = asyncio.run(scenario())
    assert state.publisher.transactions == [] and committer.restored == 0 and state.busy == 0


def test_a_fenced_or_abandoned_frame_is_not_counted():
    async def scenario():
        assignment = Assignment()
        publisher = FakePublisher(outcomes=[Outcome.FENCED, Outcome.ABANDONED])
        state, items = state_with_frames(3, publisher=publisher)
        assignment.add(state)
        committer = make_committer(assignment)
        await commit_all(committer, assignment, [outcome(state, item) for item in items])
        return committer, publisher

    committer, publisher = asyncio.run(scenario())
    assert committer.restored == 1 and len(publisher.transactions) == 1


def test_release_waits_for_frames_in_flight():
    async def scenario():
        assignment = Assignment()
        state, _ = state_with_frames(1)
        assignment.add(state)
        assignment.taken(state)
        waiting = asyncio.create_task(assignment.drained([state]))
        await asyncio.sleep(0.05)
        blocked = not waiting.done()
        assignment.finished(state)
        await asyncio.wait_for(waiting, 1)
        return blocked

    assert asyncio.run(scenario())


def test_a_partition_assigned_again_starts_from_a_fresh_state():
    async def scenario():
        assignment = Assignment()
        first, _ = state_with_frames(1)
        assignment.add(first)
        removed = assignment.remove(0)
        second, _ = state_with_frames(1)
        assignment.add(second)
        return first, removed, second, assignment

    first, removed, second, assignment = asyncio.run(scenario())
    assert removed is first and not first.owned and first.ready.is_set()
    assert second.owned and assignment.get(0) is second and assignment.acquired[0] == 2


def test_the_suspect_frame_gets_one_attempt_recorded_before_it_is_decoded():
    async def scenario():
        state, items = state_with_frames(2)
        state.suspect = suspect_of(0, (0, 1))  # a previous owner died once on frame 0
        first = await count_attempt(state, items[0].first_offset, "group", retry_budget=2)
        second = await count_attempt(state, items[1].first_offset, "group", retry_budget=2)
        return state, first, second

    state, first, second = asyncio.run(scenario())
    assert first is None and second is None
    [commit] = state.publisher.offset_commits
    recorded = attempts_from(commit[TopicPartition("frames.raw", 0)])
    assert recorded == (0, 2) and state.suspect is None


def test_a_frame_whose_attempts_are_spent_goes_to_dead_letters_untried():
    async def scenario():
        state, items = state_with_frames(1)
        state.suspect = Suspect(0, 2)
        return state, await count_attempt(state, 0, "group", retry_budget=2)

    state, spent = asyncio.run(scenario())
    assert isinstance(spent, RetryBudgetError) and "gave up after 2 attempts" in str(spent)
    assert state.publisher.offset_commits == []


def test_counting_waits_until_the_partition_is_acquired():
    async def scenario():
        state, _ = state_with_frames(1)
        state.ready.clear()
        state.suspect = None  # not read yet
        counting = asyncio.create_task(count_attempt(state, 0, "group", retry_budget=2))
        await asyncio.sleep(0.05)
        waited = not counting.done()
        state.suspect = Suspect(None, 0)  # read at acquisition: nothing committed yet
        state.ready.set()
        await counting
        return waited, state

    waited, state = asyncio.run(scenario())
    assert waited and len(state.publisher.offset_commits) == 1


def test_suspects_read_from_committed_offsets():
    assert suspect_of(5, (5, 1)) == Suspect(5, 1)
    assert suspect_of(6, (5, 1)) == Suspect(6, 0)   # the marker was of an older frame
    assert suspect_of(None, None) == Suspect(None, 0)
