"""The checks every frame passes, wherever it enters (worker, ``streamer restore``, the one-call
API, the camera), with one exception per kind of bad frame.

Validate once at the edge, then trust: the functions here are what the entry points call, and
the code behind them does not check again.

* not a non-empty 2-D image → :class:`~streamer.errors.FrameShapeError`
* pixels that are not real numbers → :class:`~streamer.errors.FrameDtypeError`
* a mask of another shape → :class:`~streamer.errors.MaskError`
* no finite, unmasked pixel → :class:`~streamer.errors.NoValidPixelError`
* NaN/inf where every pixel must be finite → :class:`~streamer.errors.NonFinitePixelError`
* one pixel, or all pixels equal → :class:`~streamer.errors.NoSignalError`
"""

from __future__ import annotations

import math
from functools import lru_cache

from typing import Any

import numpy as np

from streamer.errors import (
    FrameDtypeError, FrameShapeError, MaskError, NoSignalError, NonFinitePixelError,
    NoValidPixelError,
)
from streamer.imaging.kept_arrays import FRAMES


def checked_image(image: Any, what: str = "a frame") -> np.ndarray:
    """``image`` as an array, checked to be a non-empty 2-D image of real numbers.

    Raises
    ------
    FrameShapeError
        Not 2-D, or no pixels.
    FrameDtypeError
        Not real numbers (complex, bool, strings, objects, dates).
    """
    array = np.asarray(image)
    if array.ndim != 2:
        raise FrameShapeError(f"{what} must be a 2-D image, got {array.ndim} dimensions "
                              f"{array.shape} (split cubes into single frames first)")
    if array.size == 0:
        raise FrameShapeError(f"{what} is empty: shape {array.shape}, 0 pixels")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise FrameDtypeError(f"{what} must hold real numbers (integers or floats), got dtype "
                              f"{array.dtype}")
    return array


def checked_mask(mask: Any, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    """``mask`` as booleans (True: exclude), checked to have the frame's ``shape``.

    Raises
    ------
    MaskError
        Its shape differs from the frame's.
    """
    array = np.asarray(mask)
    if array.shape != tuple(shape):
        raise MaskError(f"{what} has shape {array.shape}, the frame {tuple(shape)}; give one "
                        "value per pixel")
    return array.astype(bool, copy=False)


def valid_pixels(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Where ``image`` is finite and not masked.

    Raises
    ------
    NoValidPixelError
        No such pixel.
    """
    valid = np.isfinite(image)
    if mask is not None:
        valid &= ~mask
    if not valid.any():
        raise NoValidPixelError("the frame has no valid pixel (all NaN/inf or masked)")
    return valid


@lru_cache(maxsize=4)
def uniform_map(shape: tuple[int, int], value: bool) -> np.ndarray:
    """A read-only boolean map of ``shape`` holding ``value`` everywhere, made once a shape:
    an integer frame's valid pixels (all) and excluded ones (none) need no frame-sized
    array of their own each frame."""
    out = np.full(shape, value, bool)
    out.flags.writeable = False
    return out


def excluded(valid: np.ndarray) -> np.ndarray:
    """``~valid``; for :func:`uniform_map`'s all-valid map, its all-excluded-free partner
    (no pass, no new array)."""
    if not valid.flags.writeable and valid is uniform_map(valid.shape, True):
        return uniform_map(valid.shape, False)
    return ~valid


def validated_frame(frame: Any, mask: Any | None = None, *, narrow: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The frame as contiguous float32 and its valid-pixel map (finite and not masked) — the
    checks above, in order. ``narrow``: a contiguous frame of 8 or 16-bit integers in the
    machine's byte order comes back as it is (float32 holds its values exactly; a reader
    that needs float32 converts what it reads)."""
    array = checked_image(frame)
    bad = None if mask is None else checked_mask(mask, array.shape)
    if (array.dtype == np.float32 or (narrow and reads_as_float32(array))) \
            and array.flags.c_contiguous:
        image = array  # the caller's frame, read as it is
    else:  # a converted copy, into a kept frame-sized array nobody holds any more
        image = float32_copy(array)
    if np.issubdtype(array.dtype, np.integer):  # every pixel finite: no pass to find out
        valid = uniform_map(array.shape, True) if bad is None else ~bad
        if not valid.any():
            raise NoValidPixelError("the frame has no valid pixel (all masked)")
        return image, valid
    return image, valid_pixels(image, bad)


def reads_as_float32(array: np.ndarray) -> bool:
    """Whether ``array``'s values are float32's exactly and NumPy reads it at its own
    speed: 8 or 16-bit integers in the machine's byte order, or float32."""
    return array.dtype == np.float32 or (array.dtype.kind in "iu" and array.dtype.itemsize <= 2
                                         and array.dtype.isnative)


def as_stored(frame: np.ndarray, level: float) -> float | np.float32:
    """``level`` as a comparison with ``frame`` should read it: float32 for a frame whose
    values are float32's (a float32 frame compares with a Python float in float32 — NumPy's
    rule for a scalar beside an array — and a 16-bit one read in its place must compare the
    same way), as given otherwise."""
    return np.float32(level) if reads_as_float32(np.asarray(frame)) else level


def at_or_above(frame: np.ndarray, level: float) -> np.ndarray:
    """Row-major positions (ascending) of ``frame``'s pixels at or above ``level`` as it
    compares (:func:`as_stored`); NaN pixels are not."""
    frame = np.asarray(frame)
    stored = as_stored(frame, level)
    if frame.dtype.kind in "iu" and reads_as_float32(frame):
        # An integer is at or above a level exactly when it is at or above the level's
        # ceiling: compared in the frame's own type, not converted to float32 pixel by pixel
        # (a third of the time on a 16-bit 4096² frame).
        if np.isnan(stored):
            return np.zeros(0, np.intp)
        bounds = np.iinfo(frame.dtype)
        ceiling = math.ceil(float(stored)) if np.isfinite(stored) else (
            bounds.max + 1 if stored > 0 else bounds.min)
        if ceiling > bounds.max:
            return np.zeros(0, np.intp)
        return np.flatnonzero(frame >= frame.dtype.type(max(ceiling, bounds.min)))
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(frame >= stored)


def float32_copy(array: np.ndarray) -> np.ndarray:
    """``array`` converted to float32 into a kept frame-sized array nobody holds any more
    (:mod:`streamer.imaging.kept_arrays`)."""
    out = FRAMES.empty(array.shape, np.float32)
    np.copyto(out, array, casting="unsafe")
    return out


def check_finite(image: np.ndarray, what: str = "image") -> None:
    """Raise NonFinitePixelError when ``image`` holds NaN or infinity."""
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        raise NonFinitePixelError(f"{what} has NaN or infinite values; the median of a window "
                                  "holding them is undefined (replace or mask them first)")


SIGNAL_PROBE = 4096  # pixels read first for two different values


def _first_rows(data: np.ndarray) -> np.ndarray:
    """About the first :data:`SIGNAL_PROBE` pixels of ``data``, flat (a view's copy is theirs
    only)."""
    rows = data if data.ndim < 2 else data[: -(-SIGNAL_PROBE // max(1, data[0].size))]
    return rows.ravel()[:SIGNAL_PROBE]


def has_finite(data: np.ndarray) -> bool:
    """Whether any pixel of a float ``data`` is finite (the first rows read first: a frame
    with a finite pixel among them is not read whole); True for integers."""
    if data.dtype.kind != "f":
        return True
    return bool(np.isfinite(_first_rows(data)).any() or np.isfinite(data).any())


def check_signal(data: np.ndarray) -> None:
    """Raise for a frame with nothing to restore: NoValidPixelError when no pixel is finite,
    NoSignalError for one pixel or every finite pixel the same value (all zero, all saturated:
    a camera fault)."""
    if data.size == 0:
        raise NoValidPixelError("the frame has no finite pixel (all NaN/inf)")
    # Two different finite values among the first pixels settle both questions without
    # reading the frame (two passes over it, 10–20 ms at 4096²).
    head = _first_rows(data)
    if np.issubdtype(head.dtype, np.floating):
        head = head[np.isfinite(head)]
    if head.size >= 2 and head.min() != head.max():
        return
    # The extremes of the whole frame first: finite, they are the finite pixels' (a frame
    # with NaN or infinities pays for the copy of its finite pixels, 64 MB at 4096²).
    with np.errstate(invalid="ignore"):
        low, high = data.min(), data.max()
    if np.issubdtype(data.dtype, np.floating) and not (np.isfinite(low) and np.isfinite(high)):
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            raise NoValidPixelError("the frame has no finite pixel (all NaN/inf)")
        low, high = finite.min(), finite.max()
    if data.size < 2:
        raise NoSignalError(f"the frame has {data.size} pixel: nothing to restore")
    if low == high:
        raise NoSignalError(f"every pixel is {low}: no signal (a camera fault?)")
