"""``streamer bench --profile worker``: a worker's budget, stage by stage.

Not a test. For synthetic star fields of 1024², 2048² and 4096² pixels, uint16 and float32,
it runs the worker's own stage functions in order, without Kafka, and prints what each costs:

* **decode** — the envelope and FITS payload read and checked (the signal and capacity
  checks) and **prepare** — input quality, noise, saturation and the PSF measured on the host
  (:meth:`~streamer.imaging.preparation.FramePreparer.prepare`), the PSF's share apart: the
  worker's decode stage (:func:`~streamer.worker.decoding.decode_and_measure`);
* **device** — :func:`~streamer.worker.processing.restore_on_device` (upload, median, RL,
  download; on this machine's PoCL the "device" is the same two cores);
* **finish** — :func:`~streamer.worker.processing.finish_frame`: the restored FITS and its
  checksum (encode), the output quality, and the source catalogue apart.

The worker runs decode + prepare, the device and finish as stages, so with one host thread it
sustains ``1 / max(stage)`` frames per second; on a GPU, whose device stage takes tens of
milliseconds, the host stages alone bound it — the last column. The first frame of each shape
pays kernel builds and plans and is left out; each stage is the least of the next ``FRAMES``
frames' (a shared machine's other work only adds to a stage: one frame's figure varied by up
to 2× here).

The host stages of consecutive frames share ``host_threads`` threads
(:mod:`streamer.worker.host_pool`). **Host frames/s against threads**: for the largest uint16
frame, a few frames already restored go through both host stages (decode and measure with
their ordered turns, then finish) on a pool of 1, 2 and all cores' threads, and the frames
per second the host then sustains are printed beside the one-thread rate — then again with as
many processes measuring the catalogues (``catalogue_processes``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from streamer.imaging.fits_io import image_bytes
from streamer.imaging.preparation import FramePreparer
from streamer.imaging.psf import gaussian_psf
from streamer.imaging.synthetic import star_field
from streamer.restoration.restorer import Restorer
from streamer.settings import RestorationSettings
from streamer.streaming.codec import FrameLimits
from streamer.streaming.framing import AssembledFrame, payload_digest
from streamer.streaming.messages import RawFrame, utc_now
from streamer.worker.decoding import HostChecks, decode_and_measure, decode_frame
from streamer.worker.catalogue_processes import CatalogueProcesses
from streamer.worker.host_pool import available_cores
from streamer.worker.processing import finish_frame, restore_on_device

log = logging.getLogger(__name__)

SIZES = (1024, 2048, 4096)
DTYPES = ("uint16", "float32")
HOST_BUDGET = 0.5  # s per 4096² frame on one core without the catalogue (#17; the catalogue: #14)
FRAMES = 3  # frames measured per size and type, after the warm-up frame
THREADED_FRAMES = 4  # frames through the host pool per thread count, at least one per thread


def _payload(size: int, dtype: str, seed: int) -> tuple[bytes, RawFrame]:
    field = star_field((size, size), gaussian_psf(3.0), stars=max(200, size * size // 5000),
                       seed=seed).image
    data = (np.clip(np.round(field), 0, 65535).astype(np.uint16) if dtype == "uint16"
            else field.astype(np.float32))
    payload = image_bytes(data)
    raw = RawFrame(frame_id=f"budget-{size}-{dtype}-{seed}", camera_id="budget",
                   exposure_start=dt.datetime(2026, 11, 30, 3, tzinfo=dt.timezone.utc),
                   exposure_seconds=30.0, shape=(size, size), dtype=dtype, encoding="fits",
                   payload_bytes=len(payload), payload_digest=payload_digest(payload),
                   chunk_count=1, published_at=utc_now())
    return payload, raw


def _one_frame(restorer: Restorer, checks: HostChecks, size: int, dtype: str,
               seed: int) -> dict[str, float]:
    """Each stage's seconds for one frame, through the worker's own functions."""
    payload, raw = _payload(size, dtype, seed)
    item = AssembledFrame(0, [0], raw.model_dump_json().encode(), payload, {})
    started = time.perf_counter()
    _, image, prepared, error = decode_and_measure(item, checks)
    ready = time.perf_counter()
    if error is not None:
        raise error
    result = restore_on_device(restorer, image, prepared)
    restored = time.perf_counter()
    processed = finish_frame(restorer.settings, restorer.device_name, "budget", 1 << 20, raw,
                             image, prepared, result, ready - started)
    finished = time.perf_counter()
    stages = processed.metrics.stage_seconds
    return {"decode": ready - started - prepared.seconds, "prepare": prepared.seconds,
            "psf": prepared.psf.seconds, "device": restored - ready,
            "kernels": sum(result.device_seconds.values()),
            "finish": finished - restored, "encode": stages.get("encode", 0.0),
            "sources": stages.get("sources", 0.0)}


def collect(size: int = 0, device: str | None = None, frames: int = FRAMES) -> dict[str, Any]:
    """The budget at ``size`` (0: 1024², 2048² and 4096²) for uint16 and float32: per stage,
    the least over ``frames`` frames after one that warms the shape up (a shared machine's
    other work only ever adds to a stage's time; one frame's figure varied by up to 2× here)."""
    settings = RestorationSettings()
    restorer = Restorer(settings, device)
    rows = []
    for side in (SIZES if size == 0 else (size,)):
        for dtype in DTYPES:
            checks = HostChecks(FrameLimits(1 << 28, 1 << 31), restorer.capacity,
                                FramePreparer.from_settings(settings))
            _one_frame(restorer, checks, side, dtype, seed=0)  # kernels, plans, caches
            runs = [_one_frame(restorer, checks, side, dtype, seed=1 + i)
                    for i in range(frames)]
            row = {key: float(np.min([run[key] for run in runs])) for key in runs[0]}
            rows.append({"size": side, "dtype": dtype, **row})
            log.info("budget %d² %s: %s", side, dtype, row)  # a killed run keeps its rows
    largest = SIZES[-1] if size == 0 else size
    return {"device": restorer.device_name, "rows": rows, "frames": frames,
            "threads": host_rates(restorer, settings, largest)}


def _host_work(checks: HostChecks, restorer: Restorer, item: AssembledFrame, raw: RawFrame,
               result, ticket, catalogues: CatalogueProcesses | None) -> None:
    """Both host stages of one frame, as the worker's pool runs them."""
    decoded = decode_frame(item, None, checks, ticket)
    if decoded.error is not None:
        raise decoded.error
    finish_frame(restorer.settings, restorer.device_name, "budget", 1 << 20, raw,
                 decoded.image, decoded.prepared, result, decoded.decode_seconds, catalogues)


def host_rates(restorer: Restorer, settings: RestorationSettings, size: int,
               frames: int = THREADED_FRAMES) -> list[dict[str, float]]:
    """Host frames/s with 1, 2 and all cores' threads, without and with as many catalogue
    processes (:mod:`streamer.worker.catalogue_processes`): uint16 frames of ``size``
    restored first, then their decode-and-measure and finish stages timed, ``frames`` or one
    per thread where there are more threads (else a many-core machine's threads would idle)."""
    counts = sorted({1, 2, available_cores()})
    checks = HostChecks(FrameLimits(1 << 28, 1 << 31), restorer.capacity,
                        FramePreparer.from_settings(settings))
    work = []
    for seed in range(max(frames, *counts)):
        payload, raw = _payload(size, "uint16", 100 + seed)
        item = AssembledFrame(0, [0], raw.model_dump_json().encode(), payload, {})
        _, image, prepared, error = decode_and_measure(item, checks)
        if error is not None:
            raise error
        work.append((item, raw, restore_on_device(restorer, image, prepared)))
    rates = []
    for threads, processes in [(t, 0) for t in counts] + [(t, t) for t in counts]:
        catalogues = CatalogueProcesses(processes) if processes else None
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            # Tickets in submission order, as the worker's fetch stage takes them.
            batch = work[:max(frames, threads)]
            futures = [pool.submit(_host_work, checks, restorer, item, raw, result,
                                   checks.turns.ticket(), catalogues)
                       for item, raw, result in batch]
            for future in futures:
                future.result()
            seconds = time.perf_counter() - started
        if catalogues is not None:
            catalogues.close()
        rates.append({"threads": threads, "catalogue_processes": processes,
                      "frames": len(batch), "frames_per_second": len(batch) / seconds})
        log.info("host rate %s", rates[-1])
    return rates


def sustained(row: dict[str, float]) -> tuple[float, float]:
    """Frames/s the worker's three stages sustain with this device stage, and with the host
    stages alone (a device that takes no time)."""
    host_in, host_out = row["decode"] + row["prepare"], row["finish"]
    return 1.0 / max(host_in, row["device"], host_out), 1.0 / max(host_in, host_out)


def print_profile(result: dict[str, Any]) -> None:
    """The budget as a table, seconds per frame."""
    print(f"worker budget on {result['device']} (seconds per frame, each stage the least of "
          f"{result.get('frames', FRAMES)} frames; finish = encode + output quality + sources)")
    header = (f"{'frame':>14s}{'decode':>8s}{'prepare':>9s}{'(psf)':>7s}{'device':>8s}"
              f"{'(kernels)':>10s}"
              f"{'finish':>8s}{'(encode)':>9s}{'(sources)':>10s}{'host*':>7s}"
              f"{'frames/s':>10s}{'host-bound':>11s}")
    print(header)
    for row in result["rows"]:
        here, bound = sustained(row)
        host = row["decode"] + row["prepare"] + row["finish"] - row["sources"]
        print(f"{str(row['size']) + '² ' + row['dtype']:>14s}{row['decode']:8.2f}"
              f"{row['prepare']:9.2f}{row['psf']:7.2f}{row['device']:8.2f}"
              f"{row.get('kernels', 0.0):10.3f}{row['finish']:8.2f}"
              f"{row['encode']:9.2f}{row['sources']:10.2f}{host:7.2f}{here:10.2f}{bound:11.2f}")
    print(f"host* = the host's work without the catalogue, one core; #17's budget: "
          f"{HOST_BUDGET:g} s at 4096² (the catalogue's own, #14: 0.5 s)")
    rates = result.get("threads", [])
    if rates:
        one = rates[0]["frames_per_second"]
        print(f"host stages on the worker's pool (largest uint16 frame; {available_cores()} "
              f"cores here):")
        for rate in rates:
            print(f"  {rate['threads']:2d} thread(s), {rate['catalogue_processes']} catalogue "
                  f"process(es), {rate.get('frames', THREADED_FRAMES)} frames: "
                  f"{rate['frames_per_second']:.3f} host frames/s "
                  f"({rate['frames_per_second'] / one:.2f}x one thread)")
