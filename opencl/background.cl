// Background equalisation (inverse median filtration), eq. 1 and 2 of the brief:
//   B = A - median_window(A);  C = B - min(B) over the valid (weight > 0) pixels.
//
// Defines: KEY_IS_FLOAT (1 when the median keys encode float32, 0 for uint16 values; see
// key_to_value in common.cl).

// B = A - median; per work item (FOR_EACH_ELEMENT, common.cl), the min of B over its valid
// pixels (reduce.cl folds the partials).
__kernel void subtract_median(__global const float * restrict image,
                              __global const uint * restrict median_keys,
                              __global const float * restrict weight,
                              __global float * restrict residual,
                              const int count,
                              __global float * restrict partial_min)
{
    const int g = get_global_id(0);
    float smallest = INFINITY;
    FOR_EACH_ELEMENT(i, count) {
        const float value = image[i] - key_to_value(median_keys[i]);
        residual[i] = value;
        if (weight[i] > 0.0f) smallest = fmin(smallest, value);
    }
    partial_min[g] = smallest;
}

// C = (B - min B) on valid pixels, 0 elsewhere (excluded from the likelihood anyway). min B
// comes from the device reduction; the sky level of C, -min B (B's sky is 0), is written to
// sky[sky_index] for Richardson-Lucy's noise model.
__kernel void shift_nonnegative(__global float * restrict residual,
                                __global const float * restrict weight,
                                __global const float * restrict minimum,
                                const int count,
                                __global float * restrict sky,
                                const int sky_index)
{
    const int i = get_global_id(0);
    const float shift = minimum[0];
    if (i == 0) sky[sky_index] = -shift;
    if (i >= count) return;
    residual[i] = weight[i] > 0.0f ? residual[i] - shift : 0.0f;
}
