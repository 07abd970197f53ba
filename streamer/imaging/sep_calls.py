"""sep's extraction behind one lock, with the pixel stack each call needs.

sep's pixel stack (the pixels of the objects a scan holds open) is one process-wide setting,
and each extraction allocates all of it: 0.7 ms at sep's default of 300 000 pixels, 70 ms at
4 M. A small box wants a small stack and a crowded 4096² frame a large one, and the worker's
host stages run in threads — so the stack is set and used under one lock (sep holds the GIL
through an extraction anyway: the lock costs no parallelism), and sep's default is set back
after each call for code that calls sep itself.
"""

from __future__ import annotations

import threading

import numpy as np

DEFAULT_PIXSTACK = 300_000  # sep's own default
SUB_OBJECT_LIMIT = 4096     # deblended pieces per object (sep: 1024)
_LOCK = threading.Lock()


def extract(data: np.ndarray, threshold: float, *, pixstack: int = DEFAULT_PIXSTACK,
            **options) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``sep.extract(data, threshold, **options)`` with a pixel stack of ``pixstack``."""
    import sep

    with _LOCK:
        sep.set_extract_pixstack(int(pixstack))
        sep.set_sub_object_limit(SUB_OBJECT_LIMIT)
        try:
            return sep.extract(data, threshold, **options)
        finally:  # sep's default for whoever calls it directly next
            sep.set_extract_pixstack(DEFAULT_PIXSTACK)


def overflowed(error: Exception) -> bool:
    """Whether sep's (bare) exception says a buffer overflowed."""
    text = str(error)
    return "overflow" in text or "full" in text
