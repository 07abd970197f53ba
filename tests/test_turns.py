"""Ordered turns (streamer.turns) and thread-safe warning filters (streamer.quiet): what lets
the worker's host stages run several frames at once without a frame seeing a camera's state
out of order, or one thread's warning filter leaking into another's."""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from streamer.quiet import filtered_warnings
from streamer.turns import Turns


def test_steps_are_passed_in_ticket_order_whatever_order_the_threads_arrive_in():
    turns = Turns(("a",))
    tickets = [turns.ticket() for _ in range(4)]
    order: list[int] = []

    def work(ticket, delay: float) -> None:
        time.sleep(delay)  # the later tickets arrive first
        with ticket.step("a"):
            order.append(ticket.number)

    threads = [threading.Thread(target=work, args=(t, 0.05 * (3 - t.number))) for t in tickets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]


def test_a_ticket_that_skips_its_steps_lets_the_next_one_through():
    turns = Turns(("levels", "psf"))
    first, second = turns.ticket(), turns.ticket()
    entered = threading.Event()

    def later() -> None:
        with second.step("psf"):
            entered.set()

    thread = threading.Thread(target=later)
    thread.start()
    assert not entered.wait(0.2)  # the first frame has not passed "psf" yet
    first.finish()                # it failed before its steps: passes both in turn
    assert entered.wait(5)
    thread.join(5)


def test_closed_turns_wait_for_nobody():
    turns = Turns(("a",))
    turns.ticket()  # a frame cancelled before it ran: never passes
    stuck = turns.ticket()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (stuck.finish(), done.set()))
    thread.start()
    assert not done.wait(0.2)
    turns.close()
    assert done.wait(5)


def test_a_step_is_passed_once():
    ticket = Turns(("a",)).ticket()
    with ticket.step("a"):
        pass
    with pytest.raises(RuntimeError, match="passed step 'a' already"):
        with ticket.step("a"):
            pass


def test_a_pool_with_fewer_threads_than_tickets_never_deadlocks():
    """Tickets handed to a first-in, first-out pool in order: every earlier ticket is running
    when a later one waits."""
    turns = Turns(("a", "b"))
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def work(ticket) -> None:
        for step in ("a", "b"):
            time.sleep(0.001 * (7 - ticket.number % 7))
            with ticket.step(step):
                seen[step].append(ticket.number)

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(work, turns.ticket()) for _ in range(20)]
        for future in futures:
            future.result(timeout=10)
    assert seen["a"] == list(range(20)) and seen["b"] == list(range(20))


def test_filtered_warnings_lets_one_thread_in_and_restores_the_filters():
    before = list(warnings.filters)
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with filtered_warnings("ignore"):
            inside.set()
            release.wait(5)

    def second() -> None:
        with filtered_warnings("error", UserWarning):
            second_in.set()

    one, two = threading.Thread(target=first), threading.Thread(target=second)
    one.start()
    assert inside.wait(5)
    two.start()
    # Bare catch_warnings would let the second thread in here, and the first thread's exit
    # would then put back the filter list the second one had set ("error") for good.
    assert not second_in.wait(0.2)
    release.set()
    one.join(5)
    two.join(5)
    assert second_in.is_set()
    assert warnings.filters == before
