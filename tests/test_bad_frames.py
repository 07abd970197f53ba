"""One exception per kind of bad frame, whichever way the frame comes in: the validation
module, the host preparation, a FITS file, the camera's Python call, the Restorer, the
one-call API and the worker's decode stage all raise the same type for the same frame — and
every type states the fate the worker gives it."""

from __future__ import annotations

import asyncio
import datetime as dt
import io

import numpy as np
import pytest
from astropy.io import fits

from streamer.errors import (
    DeviceError, DeviceFaultError, Fate, FrameDeadlineError, FrameDtypeError, FrameError,
    FrameShapeError, KernelBuildError, MaskError, NoSignalError, NonFinitePixelError,
    NoValidPixelError, ParameterError, PSFError, StreamerError, fate_of,
)
from streamer.imaging.fits_io import read_image_bytes
from streamer.imaging.preparation import FramePreparer
from streamer.imaging.psf import PSFSpec
from streamer.imaging.validation import check_finite, check_signal, validated_frame
from streamer.settings import StreamerSettings
from streamer.streaming.camera import CameraPublisher

CUBE = np.zeros((3, 16, 16), np.float32)
EMPTY = np.zeros((0, 16), np.float32)
COMPLEX = np.zeros((16, 16), np.complex64)
ALL_NAN = np.full((16, 16), np.nan, np.float32)
BAD = [(CUBE, FrameShapeError), (EMPTY, FrameShapeError), (COMPLEX, FrameDtypeError),
       (ALL_NAN, NoValidPixelError)]
PREPARER = FramePreparer(PSFSpec(kind="gaussian", fwhm=2.0), PSFSpec(kind="gaussian", fwhm=3.0))


def _write(hdu: fits.PrimaryHDU) -> bytes:
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("frame, error", BAD)
def test_validation_and_host_preparation_agree(frame, error):
    with pytest.raises(error):
        validated_frame(frame)
    with pytest.raises(error):
        PREPARER.prepare(frame)


@pytest.mark.parametrize("frame, error", [(CUBE, FrameShapeError), (ALL_NAN, NoValidPixelError)])
def test_a_fits_file_with_a_bad_image_raises_the_same(frame, error):
    with pytest.raises(error):
        read_image_bytes(_write(fits.PrimaryHDU(frame)))


@pytest.mark.parametrize("frame, error", [(CUBE, FrameShapeError), (EMPTY, FrameShapeError),
                                          (COMPLEX, FrameDtypeError)])
def test_the_camera_refuses_a_bad_frame_before_touching_kafka(frame, error):
    camera = CameraPublisher(StreamerSettings(), "cam")  # never started: no broker needed
    with pytest.raises(error):
        asyncio.run(camera.publish_image(frame))


@pytest.mark.parametrize("frame, error", BAD)
def test_the_restorer_and_the_one_call_api_raise_the_same(frame, error):
    import streamer
    from streamer.restoration.restorer import Restorer
    from streamer.settings import RestorationSettings

    restorer = Restorer(RestorationSettings(window=3, psf=PSFSpec(kind="gaussian", fwhm=2.0)))
    with pytest.raises(error):
        restorer.restore(frame)
    with pytest.raises(error):
        streamer.restore(frame, window=3, psf="gaussian:fwhm=2")
    if error is not NoValidPixelError:  # the plain median refuses NaN before counting them
        with pytest.raises(error):
            streamer.median_filter(frame, 3)


def test_the_worker_decode_stage_raises_the_same():
    from streamer.streaming.framing import AssembledFrame, payload_digest
    from streamer.streaming.messages import RawFrame
    from streamer.worker.decoding import HostChecks, decode_frame
    from streamer.restoration.capacity import DeviceMemory, FrameCapacity
    from streamer.streaming.codec import FrameLimits

    payload = _write(fits.PrimaryHDU(ALL_NAN))
    now = dt.datetime.now(dt.timezone.utc)
    envelope = RawFrame(frame_id="nan", camera_id="cam", exposure_start=now, exposure_seconds=1,
                        shape=(16, 16), dtype="float32", encoding="fits",
                        payload_bytes=len(payload), payload_digest=payload_digest(payload),
                        chunk_count=1, published_at=now)
    item = AssembledFrame(0, [0], envelope.model_dump_json().encode(), payload, {})
    checks = HostChecks(FrameLimits(10**8, 10**9), FrameCapacity(DeviceMemory(2**33, 2**31), 3),
                        PREPARER)
    decoded = decode_frame(item, None, checks)
    assert isinstance(decoded.error, NoValidPixelError)


def test_signal_and_finiteness_checks():
    with pytest.raises(NoSignalError):
        check_signal(np.zeros((8, 8), np.uint16))
    with pytest.raises(NoSignalError):
        check_signal(np.ones((1, 1), np.float32))
    with pytest.raises(NoValidPixelError):
        check_signal(ALL_NAN)
    with pytest.raises(NoValidPixelError):
        check_signal(np.array([[np.inf, -np.inf], [np.nan, np.inf]], np.float32))
    # The finite pixels' extremes decide, whatever NaN and infinities lie beside them.
    for flat in ([np.nan, 3.0, np.inf, 3.0], [-np.inf, 3.0, 3.0, 3.0], [3.0, 3.0, np.nan, 3.0]):
        with pytest.raises(NoSignalError):
            check_signal(np.array(flat, np.float32).reshape(2, 2))
    check_signal(np.array([[np.nan, 1.0], [2.0, -np.inf]], np.float32))
    # Signal only past the first rows read, or only there: found either way.
    late = np.zeros((300, 200), np.uint16)
    late[-1, -1] = 1
    check_signal(late)
    check_signal(late[::-1, 1::2])  # a view, not contiguous
    late[-1, -1] = 0
    with pytest.raises(NoSignalError):
        check_signal(late)
    from streamer.imaging.validation import has_finite

    nothing = np.full((300, 200), np.nan, np.float32)
    assert not has_finite(nothing)
    nothing[-1, -1] = 7.0  # past the first rows read
    assert has_finite(nothing) and has_finite(nothing[1::2, 1::2])
    assert not has_finite(nothing[::2, ::2]) and has_finite(np.zeros(3, np.uint16))
    early = np.full((300, 200), np.nan, np.float32)
    early[0, :2] = (1.0, 2.0)
    check_signal(early)
    check_signal(np.array([[0.0, 1.0], [2.0, 3.0]], np.float32))
    with pytest.raises(NonFinitePixelError):
        check_finite(np.array([[1.0, np.inf]]))
    with pytest.raises(MaskError):
        validated_frame(np.ones((4, 4)), np.zeros((3, 3), bool))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_the_valid_pixels_are_the_finite_unmasked_ones(dtype):
    # Integer frames skip the finiteness pass: the same map as the float path's.
    frame = np.arange(20, dtype=dtype).reshape(4, 5)
    mask = np.zeros(frame.shape, bool)
    mask[1, 2] = True
    image, valid = validated_frame(frame, mask)
    assert image.dtype == np.float32 and np.array_equal(image, frame.astype(np.float32))
    assert np.array_equal(valid, ~mask) and validated_frame(frame)[1].all()
    with pytest.raises(NoValidPixelError, match="no valid pixel"):
        validated_frame(frame, np.ones(frame.shape, bool))


@pytest.mark.parametrize("error, fate", [
    (FrameShapeError("x"), Fate.DEAD_LETTER), (NoSignalError("x"), Fate.DEAD_LETTER),
    (FrameDeadlineError("x"), Fate.DEAD_LETTER), (PSFError("x"), Fate.DEAD_LETTER),
    (ParameterError("x"), Fate.DEAD_LETTER), (KernelBuildError("x"), Fate.RETRY),
    (DeviceError("x"), Fate.STOP), (DeviceFaultError("x"), Fate.STOP),
    (RuntimeError("a driver's surprise"), None),
])
def test_every_error_states_its_fate(error, fate):
    assert fate_of(error) is fate


def test_every_frame_error_is_a_dead_letter():
    import streamer.errors as errors

    kinds = [value for value in vars(errors).values()
             if isinstance(value, type) and issubclass(value, FrameError)]
    assert len(kinds) >= 12
    assert all(kind.fate is Fate.DEAD_LETTER and issubclass(kind, StreamerError) for kind in kinds)


def test_an_integer_frames_valid_and_excluded_maps_are_made_once_a_shape():
    from streamer.imaging.validation import excluded

    frame = np.arange(64, dtype=np.uint16).reshape(8, 8)
    _, valid = validated_frame(frame)
    _, again = validated_frame(frame + 1)
    assert valid is again and valid.all() and not valid.flags.writeable
    none = excluded(valid)
    assert not none.any() and not none.flags.writeable and excluded(again) is none
    masked = np.zeros((8, 8), bool)
    masked[2, 3] = True
    _, partly = validated_frame(frame, masked)
    assert np.array_equal(excluded(partly), masked) and excluded(partly) is not none
