"""Source catalogues measured in processes of their own.

The catalogue is most of a frame's host work (7 of 11 s at 4096² on the 2-vCPU machine), and
its sep calls and per-source Python hold the GIL, so host threads alone barely overlap it
(:mod:`streamer.worker.host_pool`: 1.13× with two threads). It needs no per-camera state — the
frame, its restoration and PSF in, the sources out — so it can run in another process: the
host thread that finishes the frame hands the arrays over and waits, without the GIL, while
other frames' host work goes on. Processes are started with ``spawn`` (never ``fork`` in a
process that holds an OpenCL context and threads) when the pool is made, and warmed with one
call so the first frame does not pay the imports.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from streamer.imaging.fits_io import FitsImage
from streamer.restoration.restorer import Restoration
from streamer.sources.catalog import FrameSources, measure_sources
from streamer.streaming.messages import RawFrame
from streamer.worker.catalogue import source_arguments


def _ready() -> bool:
    return True


class CatalogueProcesses:
    """``processes`` processes that measure catalogues (:func:`measure_sources`)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool = ProcessPoolExecutor(processes,
                                         mp_context=multiprocessing.get_context("spawn"))
        for warming in [self._pool.submit(_ready) for _ in range(processes)]:
            warming.result()

    def measure(self, image: FitsImage, result: Restoration, raw: RawFrame, threshold: float,
                max_sources: int | None = None) -> FrameSources:
        """What :func:`streamer.worker.catalogue.frame_sources` measures, in a process of the
        pool; blocks the calling thread (not the GIL) until it is done."""
        args, kwargs = source_arguments(image, result, raw, threshold, max_sources,
                                        in_process=False)
        return self._pool.submit(measure_sources, *args, **kwargs).result()

    def close(self) -> None:
        """Stop the processes (a catalogue being measured is abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
