// Background equalisation (inverse median filtration), eq. 1 and 2 of the brief:
//   B = A - median_window(A);  C = B - min(B) over the valid (weight > 0) pixels.
//
// Defines: KEY_IS_FLOAT (1 when the median keys encode float32, 0 for uint16 values).

inline float key_to_value(const uint key)
{
#if KEY_IS_FLOAT
    const uint bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    return as_float(bits);
#else
    return (float)key;
#endif
}

#define GROUP 256
// B = A - median, and per work group the min of B over valid pixels and the count of them.
__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1)))
void subtract_median(__global const float * restrict image,
                     __global const uint * restrict median_keys,
                     __global const float * restrict weight,
                     __global float * restrict residual,
                     const int count,
                     __global float * restrict partial_min)
{
    __local float local_min[GROUP];
    const int i = get_global_id(0);
    const int lid = get_local_id(0);
    float smallest = INFINITY;
    if (i < count) {
        const float value = image[i] - key_to_value(median_keys[i]);
        residual[i] = value;
        if (weight[i] > 0.0f) smallest = value;
    }
    local_min[lid] = smallest;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = GROUP / 2; stride > 0; stride >>= 1) {
        if (lid < stride) local_min[lid] = fmin(local_min[lid], local_min[lid + stride]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) partial_min[get_group_id(0)] = local_min[0];
}

// C = (B - min B) on valid pixels, 0 elsewhere (excluded from the likelihood anyway).
__kernel void shift_nonnegative(__global float * restrict residual,
                                __global const float * restrict weight,
                                const float minimum,
                                const int count)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    residual[i] = weight[i] > 0.0f ? residual[i] - minimum : 0.0f;
}
