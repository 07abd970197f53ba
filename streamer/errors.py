"""The exceptions streamer raises.

One small hierarchy, so callers (the CLI, the workers' dead-letter path) choose what to do by
exception type, never by matching message strings. Every message says what was wrong and what
to do about it.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base class of every error streamer raises on purpose."""

    def __init__(self, message: str, *, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id

    def __str__(self) -> str:
        text = super().__str__()
        return f"frame {self.frame_id}: {text}" if self.frame_id else text


class DeviceError(StreamerError):
    """No usable OpenCL platform or device, or a device that does not match the request."""


class KernelBuildError(StreamerError):
    """An OpenCL program failed to compile on the chosen device."""


class PSFError(StreamerError):
    """A point spread function that is not finite, not normalisable, even-sized or off-centre."""


class FrameError(StreamerError):
    """A frame that cannot be restored: wrong dimensions, empty, all-NaN, bad dtype."""


class FrameDecodeError(FrameError):
    """A file or payload that is not a readable FITS image."""


class ParameterError(StreamerError):
    """A restoration parameter out of range (window size, iterations, tolerance)."""


class ChunkError(FrameDecodeError):
    """Chunks that do not make a frame: missing headers, gaps, duplicates, wrong sizes."""


class ChecksumError(FrameDecodeError):
    """A payload whose size or SHA-256 differs from its envelope's."""


class EnvelopeError(FrameDecodeError):
    """An envelope that is not valid JSON for its schema."""


class FrameTooLargeError(FrameError):
    """A frame above the configured limits (bytes, pixels, device or host memory)."""


class ClusterConnectionError(StreamerError):
    """The Kafka cluster cannot be reached from here (address, port, listener, TLS)."""


class ClusterAuthenticationError(ClusterConnectionError):
    """The Kafka cluster refused these credentials (SASL user, password or mechanism)."""


class NotInArchiveError(StreamerError):
    """A frame, night or file the archive does not hold, or a path that would leave it."""


class UploadError(StreamerError):
    """An uploaded file that cannot be published: too large, not a FITS image, no broker."""


class LocalKafkaError(StreamerError):
    """The local broker could not be fetched, started or stopped."""


class TooFewStarsError(PSFError):
    """A frame without enough isolated, unsaturated, high-S/N stars to measure its PSF."""


class NoSignalError(FrameError):
    """A frame with no signal to restore: constant (all zero, all saturated), or one pixel — a
    camera fault more often than a sky."""


class FrameDeadlineError(FrameError):
    """A frame that was still being restored when its processing deadline passed."""


class DeviceFaultError(DeviceError):
    """The device failed in a way that is not the frame's fault (a lost or reset GPU, a broken
    driver): the worker stops without consuming the frame."""
