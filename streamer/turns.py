"""Ordered turns: frames prepared on several threads pass their stateful steps in fetch order.

Preparing a frame is mostly the frame's own work (quality, noise, detection, the PSF measured
from its stars), which runs in parallel; a few steps read and update what the camera's earlier
frames left (the saturation levels last seen, the PSF's running mean). Those steps must see
the frames in the order they were fetched, or the restored frames would depend on which thread
was quicker. A :class:`Ticket` is taken per frame, in fetch order, before its work is handed to
a thread; at each named step the thread waits until every earlier ticket has passed that step.
A frame that fails before a step still passes it (:meth:`Ticket.finish`), so no later frame
waits for it forever; nor does anyone wait once the turns are closed (the worker is stopping).

Tickets must be handed to a first-in, first-out pool in ticket order: then every earlier
ticket is already running when a later one waits, and no wait can be circular.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager


class Turns:
    """Hands out tickets in order and keeps, per step, the ticket whose turn it is.

    Parameters
    ----------
    steps : tuple of str
        The steps that must be passed in ticket order.
    """

    def __init__(self, steps: tuple[str, ...]) -> None:
        self.steps = steps
        self._changed = threading.Condition()
        self._issued = 0
        self._next = dict.fromkeys(steps, 0)  # per step, the ticket allowed in
        self._closed = False

    def ticket(self) -> Ticket:
        """The next ticket; take them in the order the frames must pass."""
        with self._changed:
            number = self._issued
            self._issued += 1
        return Ticket(self, number)

    def close(self) -> None:
        """Let every waiting and later ticket through at once (nobody waits any more)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _wait(self, step: str, number: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._next[step] >= number)

    def _passed(self, step: str, number: int) -> None:
        with self._changed:
            self._next[step] = max(self._next[step], number + 1)
            self._changed.notify_all()


class Ticket:
    """One frame's place in the :class:`Turns`."""

    def __init__(self, turns: Turns, number: int) -> None:
        self.turns = turns
        self.number = number
        self._passed: set[str] = set()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run the block once every earlier ticket has passed step ``name``; pass it after."""
        if name in self._passed:
            raise RuntimeError(f"ticket {self.number} passed step {name!r} already")
        self.turns._wait(name, self.number)
        try:
            yield
        finally:
            self._pass(name)

    def finish(self) -> None:
        """Pass, in turn, every step not passed yet (the frame failed or skipped them)."""
        for name in self.turns.steps:
            if name not in self._passed:
                self.turns._wait(name, self.number)
                self._pass(name)

    def _pass(self, name: str) -> None:
        self._passed.add(name)
        self.turns._passed(name, self.number)


def in_turn(ticket: Ticket | None, step: str) -> ContextManager[None]:
    """``ticket.step(step)``, or nothing to wait for when there is no ticket (one thread)."""
    return nullcontext() if ticket is None else ticket.step(step)
