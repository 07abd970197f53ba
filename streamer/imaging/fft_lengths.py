"""Transform lengths FFTs do fast: those whose prime factors are all small."""

from __future__ import annotations


def smooth_length(length: int, factors: tuple[int, ...], step: int = 1) -> int:
    """The least of ``length``, ``length + step``, ``length + 2 step``, … whose prime factors
    are all among ``factors``."""
    candidate = length
    while True:
        rest = candidate
        for factor in factors:
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return candidate
        candidate += step
