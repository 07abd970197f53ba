"""Keeping a long-running worker's memory flat.

A worker allocates and frees a frame's worth of buffers per frame in several threads (the
host threads that decode and encode, the device thread). glibc gives each thread its own
malloc arena and keeps freed pages in them, so resident memory creeps up for a quarter of an
hour before it levels off (seen in the 30-minute soak: +8 % before the plateau). Capping the
arenas and handing freed pages back to the system after frames keeps it flat. Both are glibc
calls; elsewhere they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


_LIBC = _glibc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before the worker starts its threads); whether it
    applied."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, arenas))


def give_back() -> None:
    """Return freed heap pages to the system (``malloc_trim``): a few milliseconds."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
