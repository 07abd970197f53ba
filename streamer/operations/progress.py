"""A minimal progress bar for batches, drawn on stderr only when it is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``[#####.....] 5/10 name  (1.2 s/frame)``, redrawn in place on a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = total > 1 and self.stream.isatty()
        self.started = time.perf_counter()

    def advance(self, label: str) -> None:
        """Count one item done and redraw."""
        self.done += 1
        if not self.enabled:
            return
        filled = self.width * self.done // self.total
        rate = (time.perf_counter() - self.started) / self.done
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label[-40:]:<40} ({rate:.2f} s/frame)")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()
