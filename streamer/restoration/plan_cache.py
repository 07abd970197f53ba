"""Where measured plans are remembered: the cache directory and its ``plans.json``.

The correlation method chosen by timing (``correlation_plan``) and FFTW's transform sizes
(``host_transforms``) are kept per device or host in one small JSON file
(``$STREAMER_CACHE_DIR/plans.json``, default ``~/.cache/streamer``), written atomically and
shared by the processes of a machine; FFTW's wisdom sits beside it. Delete it to measure again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "STREAMER_CACHE_DIR"


def cache_directory() -> Path:
    """``$STREAMER_CACHE_DIR``, else ``~/.cache/streamer``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "streamer")


class PlanCache:
    """Measured method choices, one JSON file shared by the processes of a machine."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_directory() / "plans.json"

    def _read(self) -> dict[str, dict]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def entries(self) -> dict[str, dict]:
        """Every stored choice, by key."""
        return self._read()

    def get(self, key: str) -> dict | None:
        """The stored choice for ``key``, or None."""
        return self._read().get(key)

    def put(self, key: str, entry: dict) -> None:
        """Store a choice (merged with what other processes stored meanwhile)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            entries = self._read()
            entries[key] = entry
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
            os.replace(temporary, self.path)
        except OSError as error:  # a read-only home only costs a re-measurement next time
            log.warning("cannot write the plan cache %s: %s", self.path, error)
