"""streamer: real-time restoration of astronomical CCD frames (median background removal and
Richardson-Lucy deconvolution on OpenCL devices)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamer")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
