"""Warning filters changed for a block, safely from any thread.

``warnings.catch_warnings`` swaps the process's one filter list and puts back, on the way out,
the list it saved on the way in. Two threads inside it at once put back each other's lists, so
a filter meant for a moment ("ignore everything") stays for the whole process, or one thread
hides or raises another thread's warnings. The worker runs the host stages of consecutive
frames on several threads (:mod:`streamer.worker.host_pool`), so a block that must change the
filters goes through :func:`filtered_warnings`, which lets one thread at a time in. Code on the
hot path avoids the need instead: it does not raise the warnings it would have to hide.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_FILTERS = threading.RLock()


@contextmanager
def filtered_warnings(action: warnings._ActionKind,
                      category: type[Warning] = Warning) -> Iterator[None]:
    """Within the block, warnings of ``category`` get ``action`` ("ignore", "error"...); the
    filters are as before afterwards, whatever other threads did meanwhile."""
    with _FILTERS, warnings.catch_warnings():
        warnings.simplefilter(action, category)
        yield
