"""Real 2-D FFT pairs on the host's cores, for the ``host_fft`` correlation.

With pyFFTW (the ``fft`` extra) the transforms are FFTW's, planned by measurement
(``FFTW_MEASURE``) on arrays allocated once; the transform size is chosen among a few lengths
at least as large as needed by timing them, and both the choice and FFTW's wisdom are kept on
disk (``$STREAMER_CACHE_DIR``), so a fresh process plans in milliseconds once this machine has
measured the case; the transforms run in place. Without pyFFTW, SciPy's pocketfft on all cores
at ``next_fast_len``.

On the 2-vCPU development machine a 2112² forward and backward pair takes 14.8 ms with
measured FFTW against 21.5 ms for pocketfft's best size (2160²) and 29.5 ms at 2100²: the
size matters as much as the library.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from streamer.restoration.deferred_measurements import Cancelled, DeferredMeasurements, check
from streamer.restoration.plan_cache import PlanCache, cache_directory

log = logging.getLogger(__name__)

CANDIDATES = 4            # lengths per axis tried (the smallest FFTW-friendly ones)
SLACK = 1.08              # ... within this factor of the length needed
_WISDOM_LOCK = threading.Lock()
_loaded_wisdom: set[str] = set()


def fftw_available() -> bool:
    """Whether pyFFTW is importable."""
    try:
        import pyfftw  # noqa: F401
    except ImportError:
        return False
    return True


def smooth_lengths(n: int, count: int = CANDIDATES, slack: float = SLACK) -> list[int]:
    """Up to ``count`` lengths from ``n`` to ``n * slack`` whose prime factors are 2, 3, 5
    and at most one 7 or 11 (FFTW's fast codelets), smallest first; at least one."""
    found: list[int] = []
    m = n
    while len(found) < count and (m <= n * slack or not found):
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest in (1, 7, 11):
            found.append(m)
        m += 1
    return found


def host_key(threads: int) -> str:
    """What FFTW's timings depend on: the processor, the library and the thread count."""
    import pyfftw

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} | pyfftw {pyfftw.__version__} | {threads} threads"


class _Wisdom:
    """FFTW's wisdom for this host, in one file of the cache directory."""

    def __init__(self, directory: Path, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path = directory / f"fftw-wisdom-{digest}.json"
        self.key = key

    def load(self) -> None:
        import pyfftw

        with _WISDOM_LOCK:
            if str(self.path) in _loaded_wisdom:
                return
            _loaded_wisdom.add(str(self.path))
            try:
                stored = json.loads(self.path.read_text())
                pyfftw.import_wisdom(tuple(base64.b64decode(part) for part in stored["wisdom"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # none yet, or unreadable: FFTW measures again

    def save(self) -> None:
        import pyfftw

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            parts = [base64.b64encode(part).decode() for part in pyfftw.export_wisdom()]
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"host": self.key, "wisdom": parts}))
            os.replace(temporary, self.path)
        except OSError as error:  # a read-only cache only costs a re-measurement
            log.warning("cannot write FFTW wisdom %s: %s", self.path, error)


class TransformPair:
    """A forward (real → half spectrum) and backward transform of one shape, on arrays
    allocated once: :meth:`load` the input block, call :meth:`forward`, work on
    :attr:`spectrum`, call :meth:`backward`, read :attr:`output`. The backward transform is
    not normalised (fold ``1 / size`` into what multiplies the spectrum)."""

    library: str
    real: np.ndarray
    spectrum: np.ndarray
    output: np.ndarray
    # (plan-cache key, "RxC") when this size was taken for now and its measurement put off
    measurement: tuple[str, str] | None = None

    def __init__(self, shape: tuple[int, int], threads: int) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.size = self.shape[0] * self.shape[1]
        self.threads = threads
        self._cleared: tuple[int, int] | None = None  # the block outside which real is zero

    def load(self, block: np.ndarray) -> None:
        """The transform's input: ``block`` at the origin, zero everywhere else."""
        rows, columns = block.shape
        self.real[:rows, :columns] = block
        self._clear_outside(rows, columns)

    def multiply(self, factor: np.ndarray) -> None:
        """:attr:`spectrum` *= ``factor`` (same shape). One thread: handing halves to a
        second one cost more than it saved on two cores."""
        np.multiply(self.spectrum, factor, out=self.spectrum)

    def unload(self, out: np.ndarray) -> None:
        """``out`` = the top-left ``out.shape`` block of :attr:`output`."""
        out[...] = self.output[:out.shape[0], :out.shape[1]]

    def _clear_outside(self, rows: int, columns: int) -> None:
        """Zero the input outside the block (once: nothing else writes there)."""
        if self._cleared != (rows, columns):
            self.real[rows:, :] = 0
            self.real[:rows, columns:] = 0
            self._cleared = (rows, columns)

    def forward(self) -> None:
        """:attr:`spectrum` = rfft2(:attr:`real`)."""
        raise NotImplementedError

    def backward(self) -> None:
        """:attr:`output` = size × irfft2(:attr:`spectrum`) (the spectrum is destroyed)."""
        raise NotImplementedError


class FFTWPair(TransformPair):
    """FFTW's plans through pyFFTW (``FFTW_MEASURE``, wisdom reused), in place: the real
    rows are padded to hold the half spectrum, which saves a pass over memory each way
    (a 2160² pair: 10.7 ms against 12 out of place)."""

    library = "fftw"

    def __init__(self, shape: tuple[int, int], threads: int) -> None:
        import pyfftw

        super().__init__(shape, threads)
        half = self.shape[1] // 2 + 1
        # Page-aligned, so an OpenCL buffer can use this memory as its own (in-place RL).
        self.buffer = pyfftw.zeros_aligned((self.shape[0], 2 * half), dtype=np.float32,
                                           n=4096)
        self.real = self.buffer[:, :self.shape[1]]
        self.spectrum = self.buffer.view(np.complex64)
        self.output = self.real
        self._forward = pyfftw.FFTW(self.real, self.spectrum, axes=(0, 1),
                                    direction="FFTW_FORWARD", flags=("FFTW_MEASURE",),
                                    threads=threads)
        self._backward = pyfftw.FFTW(self.spectrum, self.real, axes=(0, 1),
                                     direction="FFTW_BACKWARD", flags=("FFTW_MEASURE",),
                                     threads=threads)
        self.buffer.fill(0)  # measuring wrote into it

    def _clear_outside(self, rows: int, columns: int) -> None:
        # In place, the backward transform leaves its output everywhere: clear every time.
        self.real[rows:, :] = 0
        self.real[:rows, columns:] = 0

    def forward(self) -> None:
        self._forward.execute()

    def backward(self) -> None:
        self._backward.execute()


class PocketFFTPair(TransformPair):
    """SciPy's pocketfft on all cores (new arrays per call: SciPy has no ``out``)."""

    library = "pocketfft"

    def __init__(self, shape: tuple[int, int], threads: int) -> None:
        import scipy.fft

        super().__init__(shape, threads)
        self._fft = scipy.fft
        self.real = np.zeros(self.shape, dtype=np.float32)
        # SciPy returns new arrays: these are bound by forward() and backward().
        self.spectrum = np.empty((0, 0), dtype=np.complex64)
        self.output = np.empty((0, 0), dtype=np.float32)

    def forward(self) -> None:
        self.spectrum = self._fft.rfft2(self.real, workers=self.threads)

    def backward(self) -> None:
        self.output = self._fft.irfft2(self.spectrum, s=self.shape, workers=self.threads,
                                       overwrite_x=True, norm="forward")


def _time_pair(pair: TransformPair, repeats: int = 5) -> float:
    pair.forward()
    pair.backward()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        pair.forward()
        pair.backward()
        best = min(best, time.perf_counter() - started)
    return best


def plan_pair(minimum: tuple[int, int], threads: int | None = None,
              cache: PlanCache | None = None, use_fftw: bool | None = None,
              deferred: DeferredMeasurements | None = None) -> TransformPair:
    """The fastest transform pair at least ``minimum`` in each axis: FFTW's when pyFFTW is
    there (sizes timed, the choice kept in ``cache``, a :class:`PlanCache`), else
    pocketfft's at ``next_fast_len``. With ``deferred``, a size not measured yet is the
    smallest smooth one for now and its timing is queued there (the pair's
    :attr:`~TransformPair.measurement` names it)."""
    threads = threads or os.cpu_count() or 1
    if not (fftw_available() if use_fftw is None else use_fftw):
        import scipy.fft

        return PocketFFTPair((scipy.fft.next_fast_len(minimum[0], real=True),
                              scipy.fft.next_fast_len(minimum[1], real=True)), threads)
    key = host_key(threads)
    wisdom = _Wisdom(cache_directory(), key)
    wisdom.load()
    cache_key = json.dumps(["fftw-size", 1, key, list(minimum)])
    known = cache.get(cache_key) if cache is not None else None
    if known is not None:
        size = known["shape"]
        return FFTWPair((int(size[0]), int(size[1])), threads)
    if deferred is not None:
        pair = FFTWPair((smooth_lengths(minimum[0])[0], smooth_lengths(minimum[1])[0]), threads)
        pair.measurement = (cache_key, f"{pair.shape[0]}x{pair.shape[1]}")
        deferred.add(cache_key, functools.partial(_measured_size, minimum, threads, cache,
                                                  cache_key))
        return pair
    return _measured_pair(minimum, threads, cache, wisdom, cache_key)


def _measured_size(minimum: tuple[int, int], threads: int, cache: PlanCache | None,
                   cache_key: str, cancelled: Cancelled | None = None) -> str:
    """A deferred size measurement: the size chosen, ``"RxC"`` (or another process's)."""
    known = cache.get(cache_key) if cache is not None else None
    if known is None:
        wisdom = _Wisdom(cache_directory(), host_key(threads))
        wisdom.load()
        shape = _measured_pair(minimum, threads, cache, wisdom, cache_key, cancelled).shape
    else:
        shape = known["shape"]
    return f"{int(shape[0])}x{int(shape[1])}"


def _measured_pair(minimum: tuple[int, int], threads: int, cache: PlanCache | None,
                   wisdom: _Wisdom, cache_key: str, cancelled: Cancelled | None = None
                   ) -> FFTWPair:
    """Smooth sizes timed, the fastest kept in ``cache`` (and FFTW's wisdom saved);
    ``cancelled`` is asked before each size."""
    rows, columns = smooth_lengths(minimum[0]), smooth_lengths(minimum[1])
    timings: dict[str, float] = {}
    best: FFTWPair | None = None
    for index in range(max(len(rows), len(columns))):
        check(cancelled)
        shape = (rows[min(index, len(rows) - 1)], columns[min(index, len(columns) - 1)])
        pair = FFTWPair(shape, threads)
        timings[f"{shape[0]}x{shape[1]}"] = seconds = _time_pair(pair)
        # A larger size must win clearly: timings on a busy host wander by a few per cent.
        if best is None or seconds < 0.95 * timings[f"{best.shape[0]}x{best.shape[1]}"]:
            best = pair
    assert best is not None
    log.info("FFT size for %dx%d: %dx%d (measured %s)", *minimum, *best.shape,
             ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in timings.items()))
    wisdom.save()
    if cache is not None:
        cache.put(cache_key, {"shape": list(best.shape), "timings": timings,
                              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    best.real.fill(0)
    return best
