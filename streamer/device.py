"""OpenCL device selection.

A device is chosen by a *device spec*, from the ``--device`` flag or the ``STREAMER_DEVICE``
environment variable:

* empty / ``auto``: the first GPU of any platform, else the first CPU device, else anything;
* ``gpu`` / ``cpu`` / ``accelerator``: the first device of that type;
* an integer ``N``: the N-th device of :func:`list_devices` (the order ``streamer devices``
  prints);
* ``PLATFORM:DEVICE``: case-insensitive substrings of the platform and device names
  (``nvidia:h100``, ``portable:``); a bare word without a colon matches either name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyopencl as cl

from streamer.errors import DeviceError

log = logging.getLogger(__name__)

DEVICE_ENV_VAR = "STREAMER_DEVICE"


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


def select_device(spec: str | None = None) -> cl.Device:
    """Return the OpenCL device named by ``spec`` (see the module docstring).

    Raises
    ------
    DeviceError
        When there is no OpenCL platform, or no device matches; the message lists the devices
        that do exist.
    """
    devices = _all_devices()
    wanted = (spec or "").strip().lower()
    chosen: cl.Device | None = None
    if wanted in ("", "auto"):
        for kind in ("gpu", "cpu"):
            chosen = next((d for d in devices if _device_kind(d) == kind), None)
            if chosen is not None:
                break
        chosen = chosen or devices[0]
    elif wanted in ("gpu", "cpu", "accelerator"):
        chosen = next((d for d in devices if _device_kind(d) == wanted), None)
    elif wanted.isdigit():
        index = int(wanted)
        chosen = devices[index] if index < len(devices) else None
    else:
        chosen = next((d for d in devices if _matches(d, wanted)), None)
    if chosen is None:
        listing = "\n  ".join(info.describe() for info in list_devices())
        raise DeviceError(
            f"no OpenCL device matches {spec!r} (from --device or ${DEVICE_ENV_VAR}); "
            f"the devices on this machine are:\n  {listing}"
        )
    log.info(
        "OpenCL device: %s / %s (%s)",
        chosen.platform.name.strip(),
        chosen.name.strip(),
        _device_kind(chosen),
    )
    return chosen


def describe_device(device: cl.Device) -> str:
    """``platform / device`` — the text recorded in FITS provenance and metrics."""
    return f"{device.platform.name.strip()} / {device.name.strip()}"

