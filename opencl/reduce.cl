// Second stage of the device reductions: one work group folds an array of per-group partial
// results (sums or minima) into one value, written to out[out_index]. With the first stage
// inside each kernel, a frame-wide reduction leaves the device as a single float.
//
// Defines: GROUP (work-group size).

__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1)))
void reduce_partials(__global const float * restrict partials,
                     const int count,
                     const int take_minimum,
                     __global float * restrict out,
                     const int out_index)
{
    __local float scratch[GROUP];
    const int lid = get_local_id(0);
    float value = take_minimum ? INFINITY : 0.0f;
    for (int i = lid; i < count; i += GROUP)
        value = take_minimum ? fmin(value, partials[i]) : value + partials[i];
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = GROUP / 2; stride > 0; stride >>= 1) {
        if (lid < stride)
            scratch[lid] = take_minimum ? fmin(scratch[lid], scratch[lid + stride])
                                        : scratch[lid] + scratch[lid + stride];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) out[out_index] = scratch[0];
}
