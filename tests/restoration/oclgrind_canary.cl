// Copies a buffer that nothing ever wrote: under Oclgrind --uninitialized, a report in
// oclgrind_canary. tests/restoration/kernel_paths.py runs it first, in the first context it
// makes, so that the suite proves it sees every context's reports (Oclgrind's --log file is
// rewritten by each new context, which once hid all reports but the last context's).
__kernel void oclgrind_canary(__global const float *never_written, __global float *out)
{
    out[get_global_id(0)] = never_written[get_global_id(0)];
}
