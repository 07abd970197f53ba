"""Device selection passes over devices that cannot build a kernel."""

from __future__ import annotations

import pytest

from streamer.errors import DeviceError
from streamer.restoration import device as device_module
from streamer.restoration.device import _all_devices, describe_device, device_problem, select_device


def test_the_chosen_device_runs_the_probe_kernel():
    chosen = select_device()
    assert device_problem(chosen) is None


def test_auto_skips_a_device_that_cannot_build(monkeypatch):
    devices = _all_devices()
    if len(devices) < 2:
        pytest.skip("needs two OpenCL devices to show one being skipped")
    working = select_device()
    # Unit test of the selection rule: pretend the working device fails its probe.
    monkeypatch.setitem(device_module._probed, working.int_ptr, "error: unknown target CPU")
    others = [d for d in devices if d.int_ptr != working.int_ptr and device_problem(d) is None]
    if others:
        assert select_device().int_ptr == others[0].int_ptr
    else:
        with pytest.raises(DeviceError, match="no usable OpenCL device"):
            select_device()


def test_naming_a_broken_device_says_why(monkeypatch):
    chosen = select_device()
    monkeypatch.setitem(device_module._probed, chosen.int_ptr, "error: unknown target CPU")
    index = next(i for i, d in enumerate(_all_devices()) if d.int_ptr == chosen.int_ptr)
    with pytest.raises(DeviceError, match="cannot build a kernel: error: unknown target CPU") as info:
        select_device(str(index))
    assert describe_device(chosen) in str(info.value)
