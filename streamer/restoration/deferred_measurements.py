"""Method and FFT-size measurements put off until the device has time for them.

Choosing a correlation method by timing means building every candidate's kernels and running
each (:mod:`streamer.restoration.correlation_plan`), and ``host_fft`` times FFT sizes too
(:mod:`streamer.restoration.host_transforms`): 2–9 s for a 2048² frame on this machine's CPU
device, most of it compiling. A worker that meets a new PSF size mid-stream would make that
frame wait, and its partitions with it. With measurements deferred, the plan takes at once
the method this device measured fastest for the nearest case (else the arithmetic estimate's)
and the smallest FFT size, and the measurement waits here until the worker's device thread is
idle or between frames (:meth:`~streamer.restoration.restorer.Restorer.measure_pending`),
stopping between its candidates when asked to. Once measured, the choice is in the plan
cache, and a plan made without it is replaced the next time it is asked for — unless the
measurement chose the same.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

log = logging.getLogger(__name__)

Cancelled = Callable[[], bool]  # asked between a measurement's steps: stop now?


class MeasurementCancelled(Exception):
    """A measurement stopped between its steps (the worker is stopping): it stays queued."""


def check(cancelled: Cancelled | None) -> None:
    """Raise :class:`MeasurementCancelled` if ``cancelled`` says so (a measurement's steps
    call this between candidates)."""
    if cancelled is not None and cancelled():
        raise MeasurementCancelled()


class DeferredMeasurements:
    """Pending measurements, one per plan-cache key, run one at a time in the order added;
    and what each chose. Thread-safe: planning adds on the device thread, a worker asks how
    many are pending from its event loop."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Callable[[Cancelled | None], str]] = OrderedDict()
        self._chosen: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def add(self, key: str, measure: Callable[[Cancelled | None], str]) -> None:
        """Queue ``measure`` (which returns what it chose, and checks the callable it is given
        between its steps, :func:`check`) for ``key``, unless that key is queued or was
        measured already."""
        with self._lock:
            if key not in self._jobs and key not in self._chosen:
                self._jobs[key] = measure

    @property
    def pending(self) -> int:
        """Measurements waiting."""
        with self._lock:
            return len(self._jobs)

    def run_next(self, cancelled: Cancelled | None = None) -> str | None:
        """Run the oldest waiting measurement (the caller holds the device); its key, or None
        when nothing waits or ``cancelled`` stopped it between two of its steps (it is then
        first in line again). A measurement that fails is logged and leaves its plans as they
        are: the estimate's method works, only perhaps not the fastest."""
        with self._lock:
            if not self._jobs:
                return None
            key, measure = self._jobs.popitem(last=False)
        try:
            chosen: str | None = measure(cancelled)
        except MeasurementCancelled:
            with self._lock:
                self._jobs[key] = measure
                self._jobs.move_to_end(key, last=False)
            return None
        except Exception as error:  # noqa: BLE001 - a failed timing must not stop the worker
            log.warning("deferred method measurement failed (%s: %s); the estimated method "
                        "stays", type(error).__name__, error)
            chosen = None
        with self._lock:
            self._chosen[key] = chosen
        return key

    def supersedes(self, key: str | None, value: str) -> bool:
        """Whether a plan made without the measurement ``key`` (with ``value``: the method,
        or the FFT size as ``"RxC"``) is to be replaced: it ran and chose otherwise."""
        if key is None:
            return False
        with self._lock:
            chosen = self._chosen.get(key)
        return chosen is not None and chosen != value
