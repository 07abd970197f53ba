"""The data-quality plane that travels with a restored frame: why each pixel is, or is not, to
be trusted (as HST's and Rubin's DQ / mask planes: one bit per reason)."""

from __future__ import annotations

import enum

import numpy as np


class Quality(enum.IntFlag):
    """Bits of the ``DQ`` extension (0: a good pixel)."""

    INVALID = 1       # NaN or infinite in the input: no data (NaN in the output)
    MASKED = 2        # masked by the caller or the camera (NaN in the output)
    SATURATED = 4     # at or above the saturation level, or next to such a pixel
    NONLINEAR = 8     # above the linear limit (not saturated)
    FILLED = 16       # replaced by a PSF fitted to the star's linear wings before restoring
    EDGE = 32         # within the PSF's radius of the frame's edge: half of its light unseen


def quality_plane(shape: tuple[int, int], *, invalid: np.ndarray | None = None,
                  masked: np.ndarray | None = None, saturated: np.ndarray | None = None,
                  nonlinear: np.ndarray | None = None, filled: np.ndarray | None = None,
                  edge: int = 0) -> np.ndarray:
    """The uint8 plane of :class:`Quality` bits for a frame of ``shape``; each reason's
    pixels a boolean mask or their row-major positions (integers: a few thousand saturated
    pixels, not a frame)."""
    plane = np.zeros(shape, dtype=np.uint8)
    for bit, where in ((Quality.INVALID, invalid), (Quality.MASKED, masked),
                       (Quality.SATURATED, saturated), (Quality.NONLINEAR, nonlinear),
                       (Quality.FILLED, filled)):
        if where is None:
            continue
        where = np.asarray(where)
        if where.dtype != bool:
            if where.ndim != 1 or where.dtype.kind not in "iu":
                raise TypeError(f"the {Quality(bit).name} pixels must be a boolean mask of "
                                f"the frame's shape or row-major positions, not "
                                f"{where.dtype} of shape {where.shape}")
            plane.ravel()[where] |= np.uint8(bit)
        # A ufunc's where= instead of boolean indexing, and nothing for an empty mask: five
        # masks indexed into a 4096² plane cost 0.04 s, most of them empty.
        elif where.any():
            np.bitwise_or(plane, np.uint8(bit), out=plane, where=where)
    if edge > 0:
        border = np.uint8(Quality.EDGE)
        plane[:edge] |= border
        plane[-edge:] |= border
        plane[:, :edge] |= border
        plane[:, -edge:] |= border
    return plane


def quality_counts(plane: np.ndarray) -> dict[str, int]:
    """Pixels carrying each bit, by name (for metrics and logs)."""
    return {flag.name.lower(): int(np.count_nonzero(plane & np.uint8(flag))) for flag in Quality}


def quality_keywords() -> dict[str, tuple[int, str]]:
    """FITS cards that document the bits in the ``DQ`` extension's header."""
    return {f"DQBIT{index}": (int(flag), flag.name) for index, flag in enumerate(Quality)}
