"""streamer: real-time restoration of astronomical CCD frames (median background removal and
Richardson-Lucy deconvolution on OpenCL devices).

One call per operation, numpy in and out (see :mod:`streamer.restoration.one_call`)::

    import streamer
    background = streamer.median_filter(frame, 31)
    sharp = streamer.richardson_lucy(frame, psf, num_iter=30)
    restored = streamer.restore(frame)

They load OpenCL on first use only: ``import streamer`` works where pyopencl does not (the
camera and the sink run there).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

_ONE_CALL = ("median_filter", "richardson_lucy", "restore", "use_device", "current_device")

try:
    __version__ = version("streamer")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name in _ONE_CALL:
        from streamer.restoration import one_call

        return getattr(one_call, name)
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ONE_CALL])
