"""The device thread measures put-off convolution methods when no frame is waiting, and
nothing when none is pending (a stand-in restorer: this is the stage's scheduling alone)."""

from __future__ import annotations

import asyncio

from streamer.worker.device_pipeline import QUEUE_POLL_SECONDS, DevicePipeline


class _Restorer:
    """Counts the measurements the stage asks for; ``pending`` of them queued."""

    def __init__(self, pending: int) -> None:
        self.measurements_pending = pending
        self.measured = self.given_up = 0

    def measure_pending(self, cancelled) -> bool:
        if cancelled():  # the stage's own question: a frame waiting, or the stop
            self.given_up += 1
            return False
        self.measured += 1
        self.measurements_pending -= 1
        return True


def _run_idle(restorer: _Restorer, seconds: float) -> None:
    async def idle() -> None:
        decoded: asyncio.Queue = asyncio.Queue()
        pipeline = DevicePipeline(restorer, None, None, "w", None, decoded, asyncio.Queue(),
                                  None)
        stop = asyncio.Event()
        stage = asyncio.create_task(pipeline.restore_stage(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(stage, 5)

    asyncio.run(idle())


def test_an_idle_device_measures_one_pending_method_per_poll() -> None:
    restorer = _Restorer(pending=2)
    _run_idle(restorer, 3 * QUEUE_POLL_SECONDS + 0.3)
    assert restorer.measured == 2 and restorer.measurements_pending == 0


def test_nothing_pending_nothing_measured() -> None:
    restorer = _Restorer(pending=0)
    _run_idle(restorer, QUEUE_POLL_SECONDS + 0.3)
    assert restorer.measured == 0


def test_a_measurement_asks_whether_a_frame_or_the_stop_is_waiting() -> None:
    restorer = _Restorer(pending=1)

    async def scenario() -> None:
        decoded: asyncio.Queue = asyncio.Queue()
        pipeline = DevicePipeline(restorer, None, None, "w", None, decoded, asyncio.Queue(),
                                  None)
        stop = asyncio.Event()
        stop.set()  # a stopping worker: the measurement gives up at its first step
        await pipeline._measure_pending(stop.is_set)

    asyncio.run(scenario())
    assert restorer.given_up == 1 and restorer.measured == 0
    assert restorer.measurements_pending == 1
