"""The worker's device stage and the encode stage after it.

The device stage restores decoded frames one at a time, in fetch order, on the device thread,
which does device work only. What happens to a frame whose restoration raised is decided by the
error's :class:`~streamer.errors.Fate`: the frame's own fault goes to dead letters at once;
anything else (an OpenCL error, a kernel that failed to build) probes the device — a healthy
device means the frame is tried again within ``retry_budget``, a failed one stops the worker
with :class:`~streamer.errors.DeviceFaultError` and the frame uncommitted.

The encode stage builds the restored FITS, its checksum, the output quality, the source
catalogue and the records of the frame's transaction on the host threads
(:mod:`streamer.worker.host_pool`) while the device restores the next frame: several frames
at once where there are cores for them, handed on in the order they came off the device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from streamer.errors import (
    DeviceFaultError, Fate, RetryBudgetError, StreamerError, UnexpectedFrameError, fate_of,
)
from streamer.metrics import StreamerMetrics
from streamer.restoration.restorer import Restoration, Restorer
from streamer.settings import StreamerSettings
from streamer.streaming.codec import FrameLimits
from streamer.streaming.framing import AssembledFrame
from streamer.worker.catalogue_processes import CatalogueProcesses
from streamer.worker.host_pool import HostPool
from streamer.worker.items import DecodedFrame, DeviceResult, FrameOutcome
from streamer.worker.partitions import Assignment
from streamer.worker.processing import finish_frame, restore_on_device
from streamer.worker.records import dead_letter_records, record_key, restored_records
from streamer.worker.stream_warm_up import warm_on_frame
from streamer.worker.warm_up import warm_up

log = logging.getLogger(__name__)
QUEUE_POLL_SECONDS = 0.5


class DevicePipeline:
    """Frames' decoding in (``decoded``), their outcomes out (``results``); both queues hold
    futures in frame order, done or not."""

    def __init__(self, restorer: Restorer, settings: StreamerSettings, metrics: StreamerMetrics,
                 worker_id: str, assignment: Assignment,
                 decoded: asyncio.Queue[asyncio.Future[DecodedFrame]],
                 results: asyncio.Queue[asyncio.Future[FrameOutcome]], host: HostPool,
                 catalogues: CatalogueProcesses | None = None) -> None:
        self.restorer = restorer
        self.settings = settings
        self.metrics = metrics
        self.worker_id = worker_id
        self.assignment = assignment
        self.decoded = decoded
        self.results = results
        # Frames off the device waiting to be encoded: one, so encoding overlaps the device.
        self.encoding: asyncio.Queue[DeviceResult] = asyncio.Queue(maxsize=1)
        self._device = ThreadPoolExecutor(1, thread_name_prefix="device")
        self.host = host
        self.catalogues = catalogues
        self.busy_seconds = 0.0
        self.running = False  # a frame is on the device now

    async def warm_up(self, specs: list[str]) -> float:
        """Restore one synthetic frame of each spec on the device thread
        (:mod:`streamer.worker.warm_up`); the seconds it took."""
        return await asyncio.get_running_loop().run_in_executor(
            self._device, warm_up, self.restorer, specs)

    async def warm_up_on(self, item: AssembledFrame, limits: FrameLimits) -> tuple[str, float]:
        """Restore a frame read off the stream once on the device thread
        (:mod:`streamer.worker.stream_warm_up`): what it was and the seconds it took."""
        started = time.perf_counter()
        what = await asyncio.get_running_loop().run_in_executor(
            self._device, warm_on_frame, self.restorer, item, limits)
        return what, time.perf_counter() - started

    # -- the device stage ---------------------------------------------------------------------
    async def restore_stage(self, stop: asyncio.Event) -> None:
        """Restore decoded frames, one at a time, in fetch order, until ``stop``."""
        while not stop.is_set():
            try:
                decoding = await asyncio.wait_for(self.decoded.get(), QUEUE_POLL_SECONDS)
            except asyncio.TimeoutError:
                # idle: time for a method measurement, given up for a stop or a frame
                await self._measure_pending(lambda: stop.is_set() or not self.decoded.empty())
                continue
            decoded = await decoding
            state = decoded.state
            if not state.owned:
                self.metrics.in_flight.dec()
                continue  # the partition was revoked after this frame was fetched
            self.assignment.taken(state)
            try:
                result = await self._on_device(decoded)
            except BaseException:
                self.assignment.finished(state)  # the worker is ending; nothing waits for it
                raise
            await self.encoding.put(result)
            await self._measure_pending(stop.is_set)  # one at most between frames

    async def _measure_pending(self, cancelled: Callable[[], bool]) -> None:
        """One queued method measurement on the device thread, if any
        (:meth:`~streamer.restoration.restorer.Restorer.measure_pending`); ``cancelled`` is
        asked between its steps (read from the device thread: a flag and a length)."""
        if self.restorer.measurements_pending:
            started = time.perf_counter()
            finished = await asyncio.get_running_loop().run_in_executor(
                self._device, self.restorer.measure_pending, cancelled)
            log.info("worker %s: a convolution method %s in %.2f s; %d to go", self.worker_id,
                     "measured" if finished else "measurement put back",
                     time.perf_counter() - started, self.restorer.measurements_pending)

    async def _on_device(self, decoded: DecodedFrame) -> DeviceResult:
        if decoded.error is not None:
            return DeviceResult(decoded, None, decoded.error)
        budget = self.settings.retry_budget
        last: StreamerError | None = None
        for attempt in range(1, budget + 1):
            try:
                restoration = await self._device_work(decoded)
            except Exception as failure:  # noqa: BLE001 - its fate decides, below
                fate = await self._fate(failure)
                if fate is Fate.DEAD_LETTER:
                    return DeviceResult(decoded, None, failure)
                if fate is Fate.STOP:
                    raise DeviceFaultError(
                        f"the OpenCL device failed ({type(failure).__name__}: {failure}) and no "
                        f"longer runs a probe kernel; stopping without consuming frame "
                        f"{decoded.raw.frame_id}") from failure
                last = RetryBudgetError(f"{type(failure).__name__} on the device (attempt "
                                        f"{attempt} of {budget}): {failure}")
                log.warning("worker %s: %s", self.worker_id, last)
                continue
            return DeviceResult(decoded, restoration, None)
        return DeviceResult(decoded, None, last)

    async def _fate(self, failure: Exception) -> Fate:
        """The error's own fate; RETRY (also for errors that state none) only while the device
        still runs the probe kernel, STOP once it does not."""
        fate = fate_of(failure) or Fate.RETRY
        if fate is Fate.RETRY:
            healthy = await asyncio.get_running_loop().run_in_executor(
                self._device, self.restorer.device_healthy)
            return Fate.RETRY if healthy else Fate.STOP
        return fate

    async def _device_work(self, decoded: DecodedFrame) -> Restoration:
        started = time.perf_counter()
        deadline = time.monotonic() + self.settings.frame_deadline_seconds
        self.running = True
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._device, restore_on_device, self.restorer, decoded.image,
                decoded.prepared, deadline)
        finally:
            self.running = False
            busy = time.perf_counter() - started
            self.busy_seconds += busy
            self.metrics.device_busy.inc(busy)

    # -- the encode stage ---------------------------------------------------------------------
    async def encode_stage(self, stop: asyncio.Event) -> None:
        """Encode, checksum and measure restored frames while the device works on the next
        one; dead-letter records for frames that failed. After ``stop``, frames still in
        flight are finished. Outcomes are queued in device order as they are started; the
        queue's size bounds how many frames are encoded at once."""
        while not (stop.is_set() and self.encoding.empty() and not self.assignment.busy):
            try:
                result = await asyncio.wait_for(self.encoding.get(), QUEUE_POLL_SECONDS)
            except asyncio.TimeoutError:
                continue
            await self.results.put(asyncio.ensure_future(self._outcome(result)))

    async def _outcome(self, result: DeviceResult) -> FrameOutcome:
        decoded = result.decoded
        key = record_key(decoded.raw)
        error = result.error
        if error is None:
            restorer = self.restorer
            try:
                processed = await self.host.submit(
                    finish_frame, restorer.settings, restorer.device_name,
                    self.worker_id, self.settings.chunk_bytes, decoded.raw, decoded.image,
                    decoded.prepared, result.restoration, decoded.decode_seconds,
                    self.catalogues)
            except Exception as failure:  # noqa: BLE001 - encoding a frame is still that frame
                error = UnexpectedFrameError(
                    f"{type(failure).__name__} while encoding: {failure}")
            else:
                return FrameOutcome(decoded, restored_records(self.settings, processed, key),
                                    None, processed.metrics)
        records = dead_letter_records(self.settings, decoded.item, decoded.raw, error,
                                      self.worker_id, key)
        return FrameOutcome(decoded, records, error, None)

    def close(self) -> None:
        """Stop the device thread (a kernel already running finishes alone) and drop the
        frames still queued (uncommitted: the partition's next owner restores them)."""
        self._device.shutdown(wait=False, cancel_futures=True)
        for queue in (self.decoded, self.results):
            while not queue.empty():
                queue.get_nowait().cancel()
