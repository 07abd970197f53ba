// A frame, uploaded in its own type, made ready on the device: the median's order-preserving
// keys with the reflect padding already in place, and (for the restoration) the float image and
// the pixel weights. Nothing of this happens on the host.
//
// Keys: a float32 value's bits, the sign bit flipped for positives and every bit for negatives,
// compare as unsigned integers in the order of the values; a uint16 frame (KEY_IS_FLOAT 0) uses
// the value itself. Excluded pixels get INVALID_KEY (above every real key); the median later
// replaces it by the frame's median.
//
// Defines: INPUT_TYPE (the frame's OpenCL type: uchar, ushort, short, int, uint, float),
// KEY_IS_FLOAT, INVALID_KEY.

inline uint float_key(const float value)
{
    const uint bits = as_uint(value);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// SciPy's "reflect" (d c b a | a b c d | d c b a), repeated for windows larger than the frame.
inline int reflect(int i, const int n)
{
    const int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

// Over the padded domain (width + 2 radius) x (height + 2 radius). A pixel is excluded when it
// is NaN, or, with exclude_nonfinite, infinite or masked (mask != 0; mask may be unused when
// has_mask is 0). Pixels of the frame itself also get image (the value as float) and weight
// (1 kept, 0 excluded) when write_image is set.
__kernel void prepare_frame(__global const INPUT_TYPE * restrict raw,
                            __global const uchar * restrict mask,
                            const int has_mask,
                            const int exclude_nonfinite,
                            __global uint * restrict keys,
                            __global float * restrict image,
                            __global float * restrict weight,
                            const int write_image,
                            const int width,
                            const int height,
                            const int radius)
{
    const int px = get_global_id(0);
    const int py = get_global_id(1);
    const int padded_width = width + 2 * radius;
    if (px >= padded_width || py >= height + 2 * radius) return;
    const int x = reflect(px - radius, width);
    const int y = reflect(py - radius, height);
    const size_t at = (size_t)y * width + x;
    const float value = (float)raw[at];
    int excluded = isnan(value);
    if (exclude_nonfinite)
        excluded = excluded || isinf(value) || (has_mask && mask[at] != 0);
#if KEY_IS_FLOAT
    const uint key = float_key(value);
#else
    const uint key = (uint)raw[at];
#endif
    keys[(size_t)py * padded_width + px] = excluded ? INVALID_KEY : key;
    if (write_image && px == x + radius && py == y + radius) {
        image[at] = excluded ? 0.0f : value;
        weight[at] = excluded ? 0.0f : 1.0f;
    }
}
