"""One call per operation, as in SciPy and scikit-image: numpy in, numpy out, on a device
chosen once and kept.

>>> import streamer
>>> background = streamer.median_filter(frame, 31)                    # doctest: +SKIP
>>> sharp = streamer.richardson_lucy(frame, psf, num_iter=30)         # doctest: +SKIP
>>> restored = streamer.restore(frame)                                # doctest: +SKIP

The first call on a device builds its kernels (seconds on a CPU, once); later calls reuse them
and the device buffers of recent shapes — all kept in the device's session
(:class:`~streamer.restoration.device.DeviceSession`), which ``Restorer`` and the worker share.
The device is ``$STREAMER_DEVICE`` or the automatic choice (first GPU, else a CPU) unless
:func:`use_device` or a call's ``device=`` names another. Calls from several threads are
serialised per device.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from streamer.imaging.psf import PSFSpec, parse_psf_spec, validate_psf
from streamer.imaging.validation import check_finite, checked_image, checked_mask
from streamer.restoration.device import DeviceSession, open_session
from streamer.restoration.median import INPUT_TYPES, MedianFilter, validate_window
from streamer.restoration.restorer import Restoration, Restorer
from streamer.restoration.richardson_lucy import RichardsonLucy, validate_iterations
from streamer.settings import RestorationSettings

KEPT_RESTORERS = 4  # settings remembered per device (their plans live in the device session)
_EXACT_FLOAT32 = 2**24  # integers up to this magnitude survive float32 unchanged
_lock = threading.Lock()
_default_spec: str | None = None
_restorers: OrderedDict[tuple[int, str], Restorer] = OrderedDict()


def use_device(spec: str | None) -> str:
    """Make ``spec`` (``auto``, ``gpu``, ``cpu``, an index, ``PLATFORM:DEVICE``; None: back to
    ``$STREAMER_DEVICE``/auto) the default device of later calls; returns the device's name.

    Raises
    ------
    DeviceError
        No device matches, or the one that does cannot build and run a kernel.
    """
    global _default_spec
    session = open_session(spec)
    _default_spec = spec
    return session.name


def current_device() -> str:
    """The name of the device calls without ``device=`` run on (chosen now if not yet)."""
    return _session(None).name


def _session(spec: str | None) -> DeviceSession:
    return open_session(spec if spec is not None else _default_spec)


def _restorer(session: DeviceSession, settings: RestorationSettings) -> Restorer:
    """A restorer for ``settings`` on ``session`` (kernels and plans are the session's, so a
    new one costs no compilation)."""
    key = (session.device.int_ptr, settings.model_dump_json())
    with _lock:
        restorer = _restorers.get(key)
        if restorer is None:
            restorer = _restorers[key] = Restorer(settings, session=session)
        _restorers.move_to_end(key)
        while len(_restorers) > KEPT_RESTORERS:
            _restorers.popitem(last=False)
        return restorer


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
    FrameShapeError, FrameDtypeError, NonFinitePixelError
        Not a non-empty 2-D array of real numbers, or NaN/infinite values
        (:mod:`streamer.imaging.validation`).
    ParameterError
        A window that is even or out of range.

    Examples
    --------
    >>> import numpy as np, streamer
    >>> image = np.random.default_rng(0).integers(0, 4000, (512, 512), dtype=np.uint16)
    >>> background = streamer.median_filter(image, 31)          # doctest: +SKIP
    >>> background.dtype, background.shape                      # doctest: +SKIP
    (dtype('uint16'), (512, 512))
    """
    array = checked_image(image, "image")
    validate_window(size)
    original = _native(array.dtype)
    array = array.astype(original, copy=False)
    if np.issubdtype(original, np.floating):
        array = array.astype(np.float32, copy=False)
        check_finite(array)
    elif original not in INPUT_TYPES:
        array = array.astype(np.float32)  # int64, int8...: filtered as float32
    array = np.ascontiguousarray(array)
    values = np.uint16 if array.dtype == np.uint16 else np.float32
    session = _session(device)
    with session.lock:
        plan = session.plans.get_or_make(
            "median", (array.shape, size, array.dtype.str),
            lambda: MedianFilter(session.queue, session.library, array.shape, size, values,
                                 input_dtype=array.dtype))
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
    FrameShapeError, FrameDtypeError, MaskError
        An image that is not a non-empty 2-D array of real numbers, or a weight map of
        another shape.
    ParameterError
        A bad iteration count or tolerance.

    Examples
    --------
    >>> import numpy as np, streamer
    >>> psf = np.outer(*2 * [np.exp(-0.5 * (np.arange(-7, 8) / 1.5) ** 2)])
    >>> sharp = streamer.richardson_lucy(blurred, psf, num_iter=30)   # doctest: +SKIP
    """
    array = checked_image(image, "image").astype(np.float32, copy=False)
    kernel = validate_psf(np.asarray(psf, dtype=np.float64))
    validate_iterations(num_iter, tolerance)
    weights = None
    if weight is not None:
        checked_mask(weight, array.shape, "weight")
        weights = np.asarray(weight, dtype=np.float32)
    session = _session(device)
    with session.lock:
        key = (array.shape, kernel.shape, method)
        plan = session.plans.get("one_call_rl", key)
        if not isinstance(plan, RichardsonLucy) or not plan.accepts(kernel):
            plan = session.plans.put("one_call_rl", key, RichardsonLucy(
                session.queue, session.library, array.shape, kernel, method))
        plan.set_psf(kernel)
        restored, _ = plan(np.ascontiguousarray(array), num_iter, weights, tolerance,
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
    array = checked_image(image, "image")
    spec: PSFSpec | None
    explicit_psf: np.ndarray | None = None
    if isinstance(psf, PSFSpec):
        spec = psf
    elif isinstance(psf, str):
        spec = parse_psf_spec(psf)
    else:
        spec, explicit_psf = None, validate_psf(np.asarray(psf, dtype=np.float64))
    values = {"window": window, "iterations": iterations, **settings}
    if spec is not None:
        values["psf"] = spec
    restorer = _restorer(_session(device), RestorationSettings(**values))
    result = restorer.restore(array, mask, header=header, psf=explicit_psf)
    return result if full_output else result.data


__all__ = ["current_device", "median_filter", "restore", "richardson_lucy", "use_device"]
