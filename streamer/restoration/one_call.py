"""One call per operation, as in SciPy and scikit-image: numpy in, numpy out, on a device
chosen once and kept.

>>> import streamer
>>> background = streamer.median_filter(frame, 31)                    # doctest: +SKIP
>>> sharp = streamer.richardson_lucy(frame, psf, num_iter=30)         # doctest: +SKIP
>>> restored = streamer.restore(frame)                                # doctest: +SKIP

The first call on a device builds its context and kernels (seconds on a CPU, once); later
calls reuse them and the device buffers of recent shapes (:data:`KEPT_PLANS` per operation).
The device is ``$STREAMER_DEVICE`` or the automatic choice (first GPU, else a CPU) unless
:func:`use_device` or a call's ``device=`` names another. Calls from several threads are
serialised per device.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import pyopencl as cl

from streamer.errors import ParameterError
from streamer.imaging.psf import PSFSpec, validate_psf
from streamer.restoration.device import DEVICE_ENV_VAR, describe_device, select_device
from streamer.restoration.kernels import KernelLibrary
from streamer.restoration.median import INPUT_TYPES, MedianFilter, validate_window
from streamer.restoration.restorer import Restoration, Restorer
from streamer.restoration.richardson_lucy import RichardsonLucy, validate_iterations
from streamer.settings import RestorationSettings

KEPT_PLANS = 4
_EXACT_FLOAT32 = 2**24  # integers up to this magnitude survive float32 unchanged
_lock = threading.Lock()
_default_spec: str | None = None
_sessions: dict[str, _Session] = {}


class _Session:
    """One device's context, queue, kernel library and recent plans."""

    def __init__(self, spec: str | None) -> None:
        import os

        self.device = select_device(spec if spec is not None else os.environ.get(DEVICE_ENV_VAR))
        self.name = describe_device(self.device)
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        self.library = KernelLibrary(self.context)
        self.lock = threading.Lock()
        self._plans: OrderedDict[tuple, Any] = OrderedDict()
        self._restorers: OrderedDict[str, Restorer] = OrderedDict()

    def plan(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The plan under ``key``, made on first use; the least recently used are dropped."""
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = make()
        self._plans.move_to_end(key)
        while len(self._plans) > 2 * KEPT_PLANS:
            self._plans.popitem(last=False)
        return plan

    def restorer(self, settings: RestorationSettings, spec: str | None) -> Restorer:
        key = settings.model_dump_json()
        restorer = self._restorers.get(key)
        if restorer is None:
            restorer = self._restorers[key] = Restorer(settings, spec)
        self._restorers.move_to_end(key)
        while len(self._restorers) > KEPT_PLANS:
            self._restorers.popitem(last=False)
        return restorer


def use_device(spec: str | None) -> str:
    """Make ``spec`` (``auto``, ``gpu``, ``cpu``, an index, ``PLATFORM:DEVICE``; None: back to
    ``$STREAMER_DEVICE``/auto) the default device of later calls; returns the device's name.

    Raises
    ------
    DeviceError
        No device matches, or the one that does cannot build and run a kernel.
    """
    global _default_spec
    session = _session(spec)
    _default_spec = spec
    return session.name


def current_device() -> str:
    """The name of the device calls without ``device=`` run on (chosen now if not yet)."""
    return _session(None).name


def _session(spec: str | None) -> _Session:
    chosen = spec if spec is not None else _default_spec
    key = chosen if chosen is not None else ""
    with _lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = _Session(chosen)
        return session


def _image(image: Any, name: str = "image") -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2 or array.size == 0:
        raise ParameterError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ParameterError(f"{name} must hold real numbers, not {array.dtype}")
    return array


def median_filter(image: Any, size: int, *, device: str | None = None) -> np.ndarray:
    """Exact 2-D median filter with a square window, mirrored at the edges.

    The result equals ``scipy.ndimage.median_filter(image, size, mode="reflect")`` pixel for
    pixel (for float64 input, that of the image rounded to float32).

    Parameters
    ----------
    image : array_like, 2-D
        Integers (uint8, int16, uint16, int32, uint32) or floats. NaN is not allowed.
    size : int
        Odd window side, 3 to 255.
    device : str, optional
        Device spec for this call (default: :func:`use_device`, ``$STREAMER_DEVICE``, auto).

    Returns
    -------
    ndarray
        Same shape; the input's dtype for uint8, int16, uint16, float32, and int32/uint32 whose
        values lie within ±2**24; float32 otherwise (float64 input).

    Raises
    ------
    ParameterError
        Not a 2-D real array, NaN or infinite values, or a window that is even or out of range.

    Examples
    --------
    >>> import numpy as np, streamer
    >>> image = np.random.default_rng(0).integers(0, 4000, (512, 512), dtype=np.uint16)
    >>> background = streamer.median_filter(image, 31)          # doctest: +SKIP
    >>> background.dtype, background.shape                      # doctest: +SKIP
    (dtype('uint16'), (512, 512))
    """
    array = _image(image)
    validate_window(size)
    original = _native(array.dtype)
    array = array.astype(original, copy=False)
    if np.issubdtype(original, np.floating):
        array = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise ParameterError("image has NaN or infinite values; the median of a window "
                                 "holding them is undefined (replace or mask them first)")
    elif original not in INPUT_TYPES:
        array = array.astype(np.float32)  # int64, int8...: filtered as float32
    array = np.ascontiguousarray(array)
    values = np.uint16 if array.dtype == np.uint16 else np.float32
    session = _session(device)
    with session.lock:
        plan = session.plan(("median", array.shape, size, array.dtype.str),
                            lambda: MedianFilter(session.queue, session.library, array.shape,
                                                 size, values, input_dtype=array.dtype))
        result = plan(array)
    return _as_input_type(result, original)


def _native(dtype: np.dtype) -> np.dtype:
    """``dtype`` in this machine's byte order (FITS data arrive big-endian)."""
    return np.dtype(f"{dtype.kind}{dtype.itemsize}")


def _as_input_type(result: np.ndarray, original: np.dtype) -> np.ndarray:
    """The median's result in the input's type where that is exact (a median of integers is
    one of them; float32 holds integers up to 2**24 exactly)."""
    if np.issubdtype(original, np.integer) and np.dtype(original).itemsize <= 4:
        if np.dtype(original).itemsize <= 2 or np.all(np.abs(result) <= _EXACT_FLOAT32):
            return result.astype(original)
    return result


def richardson_lucy(image: Any, psf: Any, num_iter: int = 30, *,
                    weight: Any | None = None, tolerance: float | None = None,
                    method: str = "auto", device: str | None = None) -> np.ndarray:
    """Richardson–Lucy deconvolution, flux-conserving at the frame's edges.

    The estimate lives on the frame extended by the PSF's radius, so light from stars just
    outside the frame is not forced into its border pixels (no edge ringing); pixels with
    ``weight`` 0 (bad pixels) are left out of the likelihood.

    Parameters
    ----------
    image : array_like, 2-D
        Non-negative data (counts); negative values are treated as 0 in the ratio.
    psf : array_like, 2-D
        Point spread function, odd sides, centred; normalised here to sum 1.
    num_iter : int
        Iterations (at most, with ``tolerance``).
    weight : array_like, optional
        1 where a pixel is valid, 0 where it is excluded (default: all valid).
    tolerance : float, optional
        Stop early once the estimate's relative change falls below it.
    method : str
        Convolution: ``auto`` (fastest measured on this device), ``dense``, ``sparse``,
        ``separable``, ``fft`` or ``host_fft``.
    device : str, optional
        Device spec for this call.

    Returns
    -------
    ndarray of float32
        The deconvolved image, same shape.

    Raises
    ------
    PSFError
        A PSF that is not 2-D, has an even side, negative or non-finite values, or is not
        centred.
    ParameterError
        A bad image, weight shape, or iteration count.

    Examples
    --------
    >>> import numpy as np, streamer
    >>> psf = np.outer(*2 * [np.exp(-0.5 * (np.arange(-7, 8) / 1.5) ** 2)])
    >>> sharp = streamer.richardson_lucy(blurred, psf, num_iter=30)   # doctest: +SKIP
    """
    array = _image(image).astype(np.float32, copy=False)
    kernel = validate_psf(np.asarray(psf, dtype=np.float64))
    validate_iterations(num_iter, tolerance)
    mask = None
    if weight is not None:
        mask = np.asarray(weight, dtype=np.float32)
        if mask.shape != array.shape:
            raise ParameterError(f"weight has shape {mask.shape}, the image {array.shape}")
    session = _session(device)
    with session.lock:
        plan = session.plan(("rl", array.shape, kernel.shape, method),
                            lambda: RichardsonLucy(session.queue, session.library, array.shape,
                                                   kernel, method))
        if not plan.accepts(kernel):
            plan = RichardsonLucy(session.queue, session.library, array.shape, kernel, method)
            session._plans[("rl", array.shape, kernel.shape, method)] = plan
        plan.set_psf(kernel)
        restored, _ = plan(np.ascontiguousarray(array), num_iter, mask, tolerance,
                           stop_at_noise=False)
    return restored


def restore(image: Any, *, window: int = 31, psf: Any = "auto", iterations: int = 30,
            mask: Any | None = None, header: Any | None = None, device: str | None = None,
            full_output: bool = False, **settings: Any) -> np.ndarray | Restoration:
    """The whole restoration of one frame: background equalisation with a median of
    ``window``, then damped Richardson–Lucy with the frame's PSF and noise.

    Parameters
    ----------
    image : array_like, 2-D
        The raw frame (any real dtype); NaN/inf pixels are excluded.
    window : int
        Median window side (odd, 3 to 255).
    psf : ``"auto"``, str, PSFSpec or array_like
        ``"auto"`` measures it from the frame's stars; a model such as ``"moffat:fwhm=3,beta=3"``;
        or an array.
    iterations : int
        Richardson–Lucy iterations at most (the discrepancy rule may stop earlier).
    mask : array_like of bool, optional
        True where a pixel is bad (saturated, hot, cosmic ray).
    header : astropy.io.fits.Header, optional
        For the gain and the saturation level.
    device : str, optional
        Device spec for this call.
    full_output : bool
        Return the :class:`~streamer.restoration.restorer.Restoration` (PSF, noise, stopping
        rule, timings, fluxes) instead of the array.
    **settings
        Any other field of :class:`~streamer.settings.RestorationSettings` (``damping``,
        ``pedestal``, ``stop_at_noise``, ``method``...).

    Returns
    -------
    ndarray of float32, or Restoration
        The restored frame; excluded pixels are NaN.

    Examples
    --------
    >>> import streamer
    >>> restored = streamer.restore(frame)                               # doctest: +SKIP
    >>> result = streamer.restore(frame, psf="moffat:fwhm=3,beta=3", full_output=True)  # doctest: +SKIP
    >>> result.psf.fwhm, result.deconvolution.stopped_by                 # doctest: +SKIP
    """
    array = _image(image)
    spec: PSFSpec | None
    explicit_psf: np.ndarray | None = None
    if isinstance(psf, PSFSpec):
        spec = psf
    elif isinstance(psf, str):
        from streamer.imaging.psf import parse_psf_spec

        spec = parse_psf_spec(psf)
    else:
        spec, explicit_psf = None, validate_psf(np.asarray(psf, dtype=np.float64))
    values = {"window": window, "iterations": iterations, **settings}
    if spec is not None:
        values["psf"] = spec
    configured = RestorationSettings(**values)
    session = _session(device)
    with session.lock:
        restorer = session.restorer(configured, device if device is not None else _default_spec)
        result = restorer.restore(array, None if mask is None else np.asarray(mask, bool),
                                  header=header, psf=explicit_psf)
    return result if full_output else result.data


__all__ = ["current_device", "median_filter", "restore", "richardson_lucy", "use_device"]
