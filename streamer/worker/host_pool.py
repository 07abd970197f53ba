"""The worker's host threads: decode-and-measure and encode-and-catalogue of consecutive frames
run on one pool, several frames at once, so a fast device is not left waiting for one core.

One first-in, first-out pool for both host stages, ``host_threads`` wide (0: one thread per
core this process may use): never more host work at once than there are cores, and the frames'
order is kept by the queues that hold the pool's futures, not by the threads. What a frame's
host work reads or updates of earlier frames (a camera's PSF and saturation levels) is passed
in fetch order by :mod:`streamer.turns`.

Memory is bounded by the frames in flight: at most ``max(prefetch_frames, threads)`` fetched
frames decoded or decoding ahead of the device, one on it, and ``threads`` being encoded.
Where the host work holds the GIL (sep's extraction and its photometry do), threads take
turns; NumPy, SciPy's FFTs and astropy's I/O release it, and that is where the gain is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class HostPool:
    """``threads`` host threads (0: :func:`available_cores`) shared by the worker's host
    stages."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads if threads > 0 else available_cores()
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="host")

    def submit(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``function(*args)`` on a host thread; the future, on the running loop."""
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Stop the threads (frames being worked on are abandoned; queued ones cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
