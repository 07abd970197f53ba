// The device probe: a one-line kernel a device must build and run before it is chosen, and
// again after an OpenCL error to tell a frame's fault from a failed device
// (streamer/restoration/device.py). Built on its own, without common.cl: it tests the
// device, not our kernels.

__kernel void probe(__global float *x) {
    x[get_global_id(0)] = 1.0f;
}
