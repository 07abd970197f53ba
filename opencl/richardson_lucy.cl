// Richardson-Lucy steps on the extended domain (frame + PSF radius on every side), so the
// estimate may hold flux that the PSF spreads across the frame edge: no wrap-around, no
// zero-padding, hence no ringing at the edges (Bertero & Boccacci 2005).
//
// Defines: TINY (the model value below which a pixel carries no information) and NORM_FLOOR
// (the fraction of a margin pixel's light that must reach valid pixels for it to be estimated:
// below it the update would divide rounding noise by rounding noise, notably after an FFT).

// ratio_padded[y + 2*ry][x + 2*rx] = w * C / (h * u), or 0 where the weight or model is 0.
__kernel void rl_ratio(__global const float * restrict data,
                       __global const float * restrict weight,
                       __global const float * restrict model,
                       __global float * restrict ratio_padded,
                       const int width,
                       const int height,
                       const int radius_y,
                       const int radius_x)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const size_t at = (size_t)y * width + x;
    const float m = model[at];
    const float w = weight[at];
    const float value = (w > 0.0f && m > TINY) ? w * data[at] / m : 0.0f;
    const int pitch = width + 4 * radius_x;
    ratio_padded[(size_t)(y + 2 * radius_y) * pitch + x + 2 * radius_x] = value;
}

// u0 on the extended domain: the data, its edge rows/columns replicated outwards, excluded
// pixels (weight 0) replaced by the mean of the valid ones, and a positive floor (a
// multiplicative update never moves a pixel away from 0).
__kernel void rl_initial_estimate(__global const float * restrict data,
                                  __global const float * restrict weight,
                                  __global float * restrict estimate,
                                  const int width,
                                  const int height,
                                  const int radius_y,
                                  const int radius_x,
                                  const float fill_value,
                                  const float floor_value)
{
    const int ex = get_global_id(0);
    const int ey = get_global_id(1);
    const int ext_width = width + 2 * radius_x;
    if (ex >= ext_width || ey >= height + 2 * radius_y) return;
    const int x = clamp(ex - radius_x, 0, width - 1);
    const int y = clamp(ey - radius_y, 0, height - 1);
    const size_t at = (size_t)y * width + x;
    const float value = weight[at] > 0.0f ? data[at] : fill_value;
    estimate[(size_t)ey * ext_width + ex] = fmax(value, floor_value);
}

// u <- u * (h' * ratio) / (h' * w). With change_sums != 0 each work group also writes the
// sums of |u_new - u_old| and of u_new (for the relative-change stopping rule).
#define GROUP 256
__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1)))
void rl_update(__global float * restrict estimate,
               __global const float * restrict correction,
               __global const float * restrict norm,
               const int count,
               const int change_sums,
               __global float * restrict partial_change,
               __global float * restrict partial_total)
{
    __local float local_change[GROUP];
    __local float local_total[GROUP];
    const int i = get_global_id(0);
    const int lid = get_local_id(0);
    float change = 0.0f, total = 0.0f;
    if (i < count) {
        const float n = norm[i];
        const float old_value = estimate[i];
        const float new_value = n > NORM_FLOOR ? old_value * correction[i] / n : 0.0f;
        estimate[i] = new_value;
        change = fabs(new_value - old_value);
        total = new_value;
    }
    if (!change_sums) return;   // uniform across the group, so no barrier is skipped by some
    local_change[lid] = change;
    local_total[lid] = total;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = GROUP / 2; stride > 0; stride >>= 1) {
        if (lid < stride) {
            local_change[lid] += local_change[lid + stride];
            local_total[lid] += local_total[lid + stride];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        partial_change[get_group_id(0)] = local_change[0];
        partial_total[get_group_id(0)] = local_total[0];
    }
}
