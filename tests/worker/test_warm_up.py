"""A worker's warm-up: the frames named in ``warm_up`` restored once before it joins the group,
so kernel builds and plans never stall partitions it was just given."""

from __future__ import annotations


import numpy as np
import pytest

from streamer.errors import ParameterError
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings
from streamer.worker.warm_up import WARM_CAMERA, parse_warm_frame, warm_frame, warm_up


def test_warm_frames_are_read_from_their_specs():
    assert parse_warm_frame("2048x2048") == ((2048, 2048), np.dtype("uint16"))
    assert parse_warm_frame(" 96 x 128 : float32 ") == ((96, 128), np.dtype("float32"))
    for bad in ("2048", "8x8", "96x96:complex64", "96x96:nonsense"):
        with pytest.raises(ParameterError, match="warm-up frame"):
            parse_warm_frame(bad)
    frame = warm_frame((64, 80), np.dtype("uint16"))
    assert frame.shape == (64, 80) and frame.dtype == np.uint16 and frame.max() > frame.min()


def test_warming_up_makes_the_plans_and_touches_no_camera():
    restorer = Restorer(RestorationSettings())  # the device session, and its plans, are shared
    seconds = warm_up(restorer, ["96x96:uint16", "64x80:float32"])
    assert seconds > 0 and restorer.plan_count >= 2
    assert set(restorer.preparer.tracker.cameras()) <= {WARM_CAMERA}


@pytest.mark.kafka
def test_the_worker_is_ready_before_it_joins_the_group(kafka_bootstrap, caplog):
    from tests.kafka_support import one_frame_worker_log, unique_settings

    settings = unique_settings(kafka_bootstrap, partitions=1, warm_up=["96x96:uint16"])
    worker, messages = one_frame_worker_log(settings, "warm1", caplog)
    ready = next(i for i, m in enumerate(messages) if ": ready: kernels built" in m)
    assigned = next(i for i, m in enumerate(messages) if ": assigned partitions" in m)
    assert ready < assigned and "96x96:uint16" in messages[ready]
    assert worker.restorer.defers_measurements  # warm: no frame waits for a timing now
    assert worker.restored == 1
