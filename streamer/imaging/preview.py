"""Before/after PNG previews a person can look at.

Both halves use an asinh stretch between the 0.35 and 99.65 percentiles of each image
(astropy.visualization, without matplotlib), the usual way to show faint sky and bright stars at once. The PNG is
written with zlib from the standard library: no imaging package needed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from astropy.visualization import AsinhStretch, PercentileInterval


def stretch_to_bytes(image: np.ndarray) -> np.ndarray:
    """uint8 rendering of an image (NaN shown black)."""
    image = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, dtype=np.uint8)
    low, high = PercentileInterval(99.3).get_limits(image[finite])
    scaled = np.clip((image - low) / ((high - low) or 1.0), 0.0, 1.0)
    stretched = AsinhStretch(0.1)(np.where(finite, scaled, 0.0), clip=True)
    return (stretched * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write an 8-bit greyscale image; row 0 of ``pixels`` becomes the top row."""
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_before_after(path: str | Path, before: np.ndarray, after: np.ndarray) -> None:
    """Side-by-side PNG: input on the left, restored on the right, FITS orientation (row 0 at
    the bottom, as astronomers display frames)."""
    gap = np.zeros((before.shape[0], 8), dtype=np.uint8)
    side_by_side = np.hstack([stretch_to_bytes(before), gap, stretch_to_bytes(after)])
    write_png(path, side_by_side[::-1])
