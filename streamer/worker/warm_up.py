"""A worker's warm-up: the frames it expects restored once before it joins the group.

A new machine restores its first frame of a shape tens of seconds later than a warm one
(kernel builds, convolution and FFT-size measurements; the measurements are then kept on disk,
:mod:`streamer.restoration.plan_cache`). Paid inside the group, that stalls the partitions the
worker was just given; paid before it subscribes, nobody waits. ``warm_up`` in the settings
names the frames (``"2048x2048:uint16"``); each is restored once as a synthetic star field with
the restorer's own PSF state (camera ``warm-up``), so no camera's PSF or levels are touched.
A frame whose PSF measures to another kernel size still plans that size on its first frame.
"""

from __future__ import annotations

import re
import time

import numpy as np

from streamer.errors import ParameterError
from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import WARM_FRAME_PATTERN

WARM_CAMERA = "warm-up"
_SPEC = re.compile(WARM_FRAME_PATTERN)


def parse_warm_frame(spec: str) -> tuple[tuple[int, int], np.dtype]:
    """``"HEIGHTxWIDTH[:dtype]"`` (dtype uint16 when left out) as a shape and a dtype.

    Raises
    ------
    ParameterError
        The spec is not of that form, or names no real number type.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise ParameterError(f"warm-up frame {spec!r} must read HEIGHTxWIDTH[:dtype], "
                         f"e.g. 2048x2048:uint16")
    height, width = int(match[1]), int(match[2])
    try:
        dtype = np.dtype(match[3] or "uint16")
    except TypeError as error:
        raise ParameterError(f"warm-up frame {spec!r}: {error}") from error
    if height < 16 or width < 16 or dtype.kind not in "uif":
        raise ParameterError(f"warm-up frame {spec!r}: at least 16x16 pixels of an integer or "
                         f"float type")
    return (height, width), dtype


def warm_frame(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A synthetic star field of ``shape`` in ``dtype`` (clipped to an integer type's range)."""
    field = star_field(shape, gaussian_psf(3.0), stars=max(50, shape[0] * shape[1] // 5000),
                       seed=0).image
    if dtype.kind in "ui":
        limits = np.iinfo(dtype)
        field = np.clip(np.round(field), limits.min, limits.max)
    return field.astype(dtype)


def warm_up(restorer: Restorer, specs: list[str]) -> float:
    """Restore one frame of each spec (:func:`parse_warm_frame`); the seconds it took."""
    started = time.perf_counter()
    for spec in specs:
        restorer.restore(warm_frame(*parse_warm_frame(spec)), camera_id=WARM_CAMERA,
                         snr_maps=restorer.settings.sources)
    return time.perf_counter() - started
