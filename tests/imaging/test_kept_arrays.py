"""Kept frame-sized arrays (streamer.imaging.kept_arrays): handed out again only when nothing
refers to them, and the host stages that use them give the same frames as fresh arrays."""

from __future__ import annotations

import threading

import numpy as np

from streamer.imaging.fits_reader import direct_image
from streamer.imaging.fits_io import image_bytes
from streamer.imaging.kept_arrays import KeptArrays
from streamer.imaging.validation import validated_frame


def test_an_array_is_handed_out_again_only_when_nobody_holds_it():
    kept = KeptArrays(keep=2)
    first = kept.empty((4, 5), np.float32)
    address = first.__array_interface__["data"][0]
    view = first[1:3]
    del first
    second = kept.empty((4, 5), np.float32)  # the view holds the first
    assert second.__array_interface__["data"][0] != address and kept.held() == 2
    del view
    again = kept.empty((4, 5), np.float32)
    assert again.__array_interface__["data"][0] == address
    # Another shape or type: not that array; a third kept one only in place of a free one.
    other = kept.empty((4, 5), np.float64)
    assert other.dtype == np.float64 and kept.held() == 2  # kept: again and second, held
    del second
    third = kept.empty((3, 3), np.uint8)
    assert third.shape == (3, 3) and kept.held() == 2  # in the free second's place
    memory = memoryview(again)
    del again
    assert kept.empty((4, 5), np.float32).__array_interface__["data"][0] != address
    assert memory.obj is not None


def test_threads_never_share_an_array():
    kept = KeptArrays(keep=4)
    taken, lock = [], threading.Lock()

    def take():
        for _ in range(200):
            array = kept.empty((64,), np.int64)
            array[:] = threading.get_ident()
            with lock:
                taken.append(array)  # held: none of these may be handed out twice
            assert np.all(array == threading.get_ident())

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    addresses = {array.__array_interface__["data"][0] for array in taken}
    assert len(addresses) == len(taken) == 800


def test_converted_frames_are_the_same_in_kept_arrays():
    """An integer frame's float32 copy and a decoded FITS frame, made twice with the first
    result still held and then again with it dropped: the same values, and the held one
    untouched by the next frame."""
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 65535, (64, 80), dtype=np.uint16) for _ in range(3)]
    first, _ = validated_frame(frames[0])
    second, _ = validated_frame(frames[1])
    assert np.array_equal(first, frames[0].astype(np.float32))
    assert np.array_equal(second, frames[1].astype(np.float32))
    del first
    third, _ = validated_frame(frames[2])
    assert np.array_equal(third, frames[2].astype(np.float32))
    assert np.array_equal(second, frames[1].astype(np.float32))
    same = np.ones((8, 9), np.float32)
    assert validated_frame(same)[0] is same  # a float32 frame is read as it is
    for kept in (False, True):  # a worker's decode (kept) and anyone else's (a new array)
        decoded = [direct_image(image_bytes(frame), kept)[0] for frame in frames]
        for frame, image in zip(frames, decoded):
            assert image.dtype == np.uint16 and np.array_equal(image, frame)
