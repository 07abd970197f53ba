"""The OpenCL device: choosing one, and the session every user of it shares.

A device is chosen by a *device spec*, from the ``--device`` flag or the ``STREAMER_DEVICE``
environment variable:

* empty / ``auto``: the first usable GPU of any platform, else the first usable CPU device,
  else anything;
* ``gpu`` / ``cpu`` / ``accelerator``: the first usable device of that type;
* an integer ``N``: the N-th device of :func:`list_devices` (the order ``streamer devices``
  prints);
* ``PLATFORM:DEVICE``: case-insensitive substrings of the platform and device names
  (``nvidia:h100``, ``portable:``); a bare word without a colon matches either name.

"Usable" means the device compiles and runs a one-line kernel. Machines can list a device
whose compiler cannot target the host (a pip-installed PoCL whose LLVM predates the CPU, for
example, fails with "unknown target CPU 'generic'"); automatic selection passes over such a
device with a warning instead of failing on the first frame.

A :class:`DeviceSession` is one device's context, profiling queue, kernel library (every program
built once), bounded store of plans and lock. It is made once per device and process — by the
probe that proves the device usable — and shared by every :class:`~streamer.restoration.
restorer.Restorer`, the one-call API and the worker, so nothing compiles a kernel twice and no
other code creates an OpenCL context.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import pyopencl as cl

from streamer.errors import DeviceError, FrameDeadlineError
from streamer.restoration.capacity import DeviceMemory
from streamer.restoration.deferred_measurements import DeferredMeasurements
from streamer.restoration.kernels import KernelLibrary, read_kernel_source
from streamer.restoration.plan_store import PlanStore

log = logging.getLogger(__name__)

DEVICE_ENV_VAR = "STREAMER_DEVICE"
MAX_PLANS = 4   # plans kept per kind (frame shapes, PSF sizes): device memory stays bounded
# Per device (its int_ptr): the session, or why the device cannot run a kernel.
_probed: dict[int, DeviceSession | str] = {}
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class DeviceInfo:
    """What a user needs to recognise a device in a list."""

    index: int
    platform: str
    name: str
    kind: str
    compute_units: int
    global_memory_bytes: int

    def describe(self) -> str:
        """One line: index, type, platform, name, compute units and memory."""
        gib = self.global_memory_bytes / 2**30
        return (
            f"[{self.index}] {self.kind:<11} {self.platform} / {self.name} "
            f"({self.compute_units} compute units, {gib:.1f} GiB)"
        )


def _device_kind(device: cl.Device) -> str:
    if device.type & cl.device_type.GPU:
        return "gpu"
    if device.type & cl.device_type.CPU:
        return "cpu"
    if device.type & cl.device_type.ACCELERATOR:
        return "accelerator"
    return "other"


def _all_devices() -> list[cl.Device]:
    try:
        platforms = cl.get_platforms()
    except cl.Error as error:  # pyopencl raises when the ICD loader finds no platform at all
        raise DeviceError(
            "no OpenCL platform found: install a driver (for a CPU: "
            "`pip install 'pyopencl[pocl]'` or Debian's pocl-opencl-icd; for a GPU the "
            f"vendor's OpenCL ICD). Details: {error}"
        ) from error
    devices: list[cl.Device] = []
    for platform in platforms:
        try:
            devices.extend(platform.get_devices())
        except cl.Error:
            # A platform whose driver has no device here (an ICD for absent hardware).
            continue
    if not devices:
        raise DeviceError(
            "OpenCL platforms were found but none has a device: "
            + ", ".join(p.name for p in platforms)
        )
    return devices


def list_devices() -> list[DeviceInfo]:
    """Describe every OpenCL device on this machine, in selection-index order."""
    return [
        DeviceInfo(
            index=i,
            platform=d.platform.name.strip(),
            name=d.name.strip(),
            kind=_device_kind(d),
            compute_units=d.max_compute_units,
            global_memory_bytes=d.global_mem_size,
        )
        for i, d in enumerate(_all_devices())
    ]


def _matches(device: cl.Device, spec: str) -> bool:
    platform_name = device.platform.name.lower()
    device_name = device.name.lower()
    if ":" in spec:
        platform_part, device_part = (part.strip() for part in spec.split(":", 1))
        return platform_part in platform_name and device_part in device_name
    return spec in platform_name or spec in device_name


def probe_problem(context: cl.Context, queue: cl.CommandQueue) -> str | None:
    """Why the device of ``context`` cannot build and run the probe kernel (``opencl/probe.cl``),
    or None when it can. Built afresh each time: after an OpenCL error it tests the compiler
    and the device, not a cached program."""
    try:
        program = cl.Program(context, read_kernel_source("probe")).build()
        buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4 * 4)
        program.probe(queue, (4,), None, buffer)
        out = np.empty(4, dtype=np.float32)
        cl.enqueue_copy(queue, out, buffer)
    except (cl.Error, cl.RuntimeError) as error:
        return " ".join(str(error).split())[:300]
    return None if np.all(out == 1) else f"probe kernel computed {out}"


class DeviceSession:
    """One OpenCL device's context, queue, kernels, plans and lock, shared in a process.

    Get one with :func:`open_session` (or :func:`session_for`); do not make a second for the
    same device. Hold :attr:`lock` around device work: plans and the queue are shared.

    Attributes
    ----------
    device, name, context, queue (profiling), library (:class:`KernelLibrary`), plans
    (:class:`PlanStore`, ``MAX_PLANS`` per kind), measurements (:class:`~streamer.restoration.
    deferred_measurements.DeferredMeasurements`, the method timings put off), lock
    (re-entrant), memory (:class:`~streamer.restoration.capacity.DeviceMemory`).
    """

    def __init__(self, device: cl.Device) -> None:
        self.device = device
        self.name = describe_device(device)
        self.context = cl.Context([device])
        self.queue = cl.CommandQueue(
            self.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self.library = KernelLibrary(self.context)
        self.plans = PlanStore(MAX_PLANS)
        self.measurements = DeferredMeasurements()
        self.lock = threading.RLock()
        self.memory = DeviceMemory(device.global_mem_size, device.max_mem_alloc_size)

    def problem(self) -> str | None:
        """Why this device no longer builds and runs a kernel, or None (see
        :func:`probe_problem`)."""
        with self.lock:
            return probe_problem(self.context, self.queue)

    def healthy(self) -> bool:
        """Whether the device still builds and runs a kernel (after an OpenCL error: a frame's
        fault, or the device's?)."""
        try:
            return self.problem() is None
        except Exception:  # noqa: BLE001 - any failure at all means the device is unusable
            return False

    @property
    def kernel_build_seconds(self) -> float:
        """Total OpenCL compile time of this session."""
        return self.library.build_seconds


def _probed_session(device: cl.Device) -> DeviceSession | str:
    """The device's session, made and probed on first use, or why it cannot run a kernel."""
    key = device.int_ptr
    with _registry_lock:
        if key not in _probed:
            try:
                session = DeviceSession(device)
            except (cl.Error, cl.RuntimeError) as error:
                _probed[key] = " ".join(str(error).split())[:300]
            else:
                problem = session.problem()
                _probed[key] = session if problem is None else problem
        return _probed[key]


def device_problem(device: cl.Device) -> str | None:
    """Why ``device`` cannot run our kernels (its build or run error), or None when it can.
    Probed once per device and process."""
    found = _probed_session(device)
    return found if isinstance(found, str) else None


def _first_usable(devices: list[cl.Device]) -> cl.Device | None:
    for device in devices:
        problem = device_problem(device)
        if problem is None:
            return device
        log.warning("skipping OpenCL device %s: it cannot build a kernel (%s)",
                    describe_device(device), problem)
    return None


def open_session(spec: str | None = None) -> DeviceSession:
    """The session of the device named by ``spec`` (see the module docstring; None:
    ``$STREAMER_DEVICE``, else auto), made on first use and shared afterwards.

    Raises
    ------
    DeviceError
        When there is no OpenCL platform, or no device matches; the message lists the devices
        that do exist. Or when the device named cannot build and run a kernel: it says why.
    """
    if spec is None:
        spec = os.environ.get(DEVICE_ENV_VAR)
    chosen = _matching_device(spec)
    found = _probed_session(chosen)
    if isinstance(found, str):
        raise DeviceError(
            f"OpenCL device {describe_device(chosen)} cannot build a kernel: {found}. "
            "Choose another with --device (see `streamer devices`) or install a driver that "
            "supports this processor (Debian's pocl-opencl-icd for a CPU)")
    log.info("OpenCL device: %s (%s)", found.name, _device_kind(chosen))
    return found


def select_device(spec: str | None = None) -> cl.Device:
    """The OpenCL device named by ``spec`` (the device of :func:`open_session`)."""
    return open_session(spec).device


def _matching_device(spec: str | None) -> cl.Device:
    """The device ``spec`` names (for ``auto`` and a type: the first usable one)."""
    devices = _all_devices()
    wanted = (spec or "").strip().lower()
    chosen: cl.Device | None = None
    if wanted in ("", "auto"):
        for kind in ("gpu", "cpu", "accelerator", "other"):
            chosen = _first_usable([d for d in devices if _device_kind(d) == kind])
            if chosen is not None:
                break
    elif wanted in ("gpu", "cpu", "accelerator"):
        chosen = _first_usable([d for d in devices if _device_kind(d) == wanted])
    elif wanted.isdigit():
        index = int(wanted)
        chosen = devices[index] if index < len(devices) else None
    else:
        chosen = next((d for d in devices if _matches(d, wanted)), None)
    if chosen is None:
        listing = "\n  ".join(info.describe() for info in list_devices())
        raise DeviceError(
            f"no usable OpenCL device matches {spec!r} (from --device or ${DEVICE_ENV_VAR}); "
            f"the devices on this machine are:\n  {listing}"
        )
    return chosen


def describe_device(device: cl.Device) -> str:
    """``platform / device`` — the text recorded in FITS provenance and metrics."""
    return f"{device.platform.name.strip()} / {device.name.strip()}"


def check_deadline(queue: cl.CommandQueue, deadline: float | None, unfinished: str) -> None:
    """With a ``deadline`` (``time.monotonic()``): wait for the queue, then raise
    FrameDeadlineError("<unfinished> not done by its deadline") once it has passed."""
    if deadline is None:
        return
    queue.finish()
    if time.monotonic() > deadline:
        raise FrameDeadlineError(f"{unfinished} not done by its deadline")
