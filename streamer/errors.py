"""The exceptions streamer raises.

One small hierarchy, so callers (the CLI, the workers' dead-letter path) choose what to do by
exception type, never by matching message strings. Every message says what was wrong and what
to do about it.

Each kind of bad frame has one exception, whichever entry point it comes through (the worker,
``streamer restore``, the one-call API, the camera): a frame that is not 2-D is a
:class:`FrameShapeError` everywhere. And each error states its :class:`Fate` — what a worker
does with the frame that raised it — so that decision is read from the error's category, not
from which function raised it.
"""

from __future__ import annotations

import enum


class Fate(enum.Enum):
    """What a restoration worker does with a frame whose processing raised an error."""

    DEAD_LETTER = "dead-letter"
    """The frame's own fault: no retry can cure it; it goes to dead letters at once."""
    RETRY = "retry"
    """Possibly transient, possibly the device's: the device is probed; when it still runs a
    kernel the frame is tried again within the retry budget (then dead-lettered), when it does
    not the worker stops."""
    STOP = "stop"
    """Not the frame's fault (a failed device, an unreachable cluster): the worker stops and
    leaves the frame uncommitted for the next owner."""


class StreamerError(Exception):
    """Base class of every error streamer raises on purpose."""

    fate: Fate = Fate.DEAD_LETTER

    def __init__(self, message: str, *, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id

    def __str__(self) -> str:
        text = super().__str__()
        return f"frame {self.frame_id}: {text}" if self.frame_id else text


class DeviceError(StreamerError):
    """No usable OpenCL platform or device, or a device that does not match the request."""

    fate = Fate.STOP


class KernelBuildError(StreamerError):
    """An OpenCL program failed to compile on the chosen device."""

    fate = Fate.RETRY  # a size one frame needs, or a driver gone bad: the probe tells


class PSFError(StreamerError):
    """A point spread function that is not finite, not normalisable, even-sized or off-centre."""


class FrameError(StreamerError):
    """A frame that cannot be restored: wrong dimensions, empty, all-NaN, bad dtype."""


class FrameShapeError(FrameError):
    """A frame that is not a non-empty 2-D image (a cube, a vector, zero pixels)."""


class FrameDtypeError(FrameError):
    """A frame whose pixels are not real numbers (complex, strings, objects, dates)."""


class NoValidPixelError(FrameError):
    """A frame with no pixel to use: every one NaN, infinite or masked."""


class NonFinitePixelError(FrameError):
    """NaN or infinite pixels given to an operation that needs every pixel finite (the plain
    median filter: the median of a window holding NaN is undefined)."""


class MaskError(FrameError):
    """A bad-pixel mask or weight map whose shape differs from its frame's."""


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

    fate = Fate.STOP


class ClusterAuthenticationError(ClusterConnectionError):
    """The Kafka cluster refused these credentials (SASL user, password or mechanism)."""


class MissingTopicError(ClusterConnectionError):
    """A topic this process reads or writes does not exist on the cluster (and the cluster
    does not create topics by itself)."""


class PublishAbandonedError(StreamerError):
    """A frame the camera gave up publishing because it was told to stop (SIGTERM) while the
    broker did not answer: it was not committed, and stays pending for the next start."""

    fate = Fate.STOP


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


class RetryBudgetError(FrameError):
    """A frame whose attempts are spent: it stopped a worker (crashed, killed, a failed device)
    or met an OpenCL error on a healthy device, ``retry_budget`` times."""


class UnexpectedFrameError(FrameError):
    """An exception nobody foresaw, raised by a library while decoding, measuring or encoding
    this frame: still the frame's fault (the message keeps the original type and text)."""


class DeviceFaultError(DeviceError):
    """The device failed in a way that is not the frame's fault (a lost or reset GPU, a broken
    driver): the worker stops without consuming the frame."""


class WarmUpCrashedError(StreamerError):
    """The last warm-up on the stream's newest frame never finished (the process died on it):
    that frame is not warmed on again; the worker joins without it."""


def fate_of(error: BaseException) -> Fate | None:
    """The fate an error states, or None for an exception streamer did not raise on purpose
    (a driver's ``cl.Error``, a library's surprise), which a worker treats as RETRY."""
    return error.fate if isinstance(error, StreamerError) else None
