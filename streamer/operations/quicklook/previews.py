"""PNG renderings of archived frames for the page: input and restored with the same asinh
stretch the offline previews use (:func:`streamer.imaging.preview.stretch_to_bytes`), and the
PSF the frame was restored with on a logarithmic scale.

Frames are binned (mean of blocks) to the side the page shows them at (``side``, a power of
of 64 up to :data:`MAX_SIDE`) before stretching: block means keep a restored star's flux,
where a browser shrinking a full-size PNG samples pixels and can skip a one-pixel peak (the
star then shows as its dark surroundings). Renderings are cached by file, modification time
and side.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image

from streamer.errors import NotInArchiveError
from streamer.imaging.fits_io import read_image_bytes
from streamer.imaging.preview import stretch_to_bytes

MAX_SIDE = 2048
MIN_SIDE = 128
DEFAULT_SIDE = 1024
PSF_SIDE = 192
DECADES = 4
_CACHE_SIZE = 64


def snapped_side(side: int) -> int:
    """``side`` rounded up to a multiple of 64 within [MIN_SIDE, MAX_SIDE] (few cache
    keys)."""
    side = min(max(int(side), MIN_SIDE), MAX_SIDE)
    return -(-side // 64) * 64


def binned(image: np.ndarray, max_side: int = DEFAULT_SIDE) -> np.ndarray:
    """``image`` reduced by the smallest integer factor that brings both sides to
    ``max_side`` or less (block means; NaN blocks stay NaN)."""
    factor = max(1, -(-max(image.shape) // max_side))
    if factor == 1:
        return image
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:height, :width].reshape(height // factor, factor, width // factor, factor)
    with np.errstate(invalid="ignore"):
        return np.nanmean(blocks.astype(np.float64), axis=(1, 3)) if np.isnan(blocks).any() \
            else blocks.mean(axis=(1, 3))


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    # FITS orientation: row 0 at the bottom, as astronomers display frames.
    Image.fromarray(np.ascontiguousarray(pixels[::-1]), mode="L").save(out, format="PNG")
    return out.getvalue()


def frame_png(path: Path, side: int = DEFAULT_SIDE) -> bytes:
    """The frame in a FITS file as a stretched greyscale PNG, binned to ``side`` or less."""
    try:
        image = read_image_bytes(path.read_bytes()).data
    except Exception as error:  # a file the sink wrote should read; say which one did not
        raise NotInArchiveError(f"{path.name} cannot be shown: {error}") from error
    return _png(stretch_to_bytes(binned(np.asarray(image, dtype=np.float64), side)))


def psf_png(path: Path) -> bytes:
    """The ``PSF`` extension of a restored frame, log-stretched over four decades."""
    with fits.open(path, memmap=False) as hdus:
        if "PSF" not in hdus:
            raise NotInArchiveError(f"{path.name} carries no PSF extension")
        psf = np.asarray(hdus["PSF"].data, dtype=np.float64)
    peak = psf.max() if psf.size and psf.max() > 0 else 1.0
    logarithm = np.log10(np.clip(psf / peak, 10.0**-DECADES, 1.0))
    pixels = ((logarithm + DECADES) / DECADES * 255.0).astype(np.uint8)
    scale = max(1, PSF_SIDE // max(pixels.shape))
    return _png(np.kron(pixels, np.ones((scale, scale), dtype=np.uint8)))


class Previews:
    """Renderings of recent files, least recently used dropped (thread-safe)."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, path: Path, kind: str, side: int = DEFAULT_SIDE) -> bytes:
        """The PNG of ``path`` (``frame``, binned to ``side`` snapped by
        :func:`snapped_side`, or ``psf``)."""
        side = snapped_side(side)
        key = (str(path), path.stat().st_mtime_ns, f"{kind}:{side}")
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        png = psf_png(path) if kind == "psf" else frame_png(path, side)
        with self._lock:
            self._cache[key] = png
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return png
