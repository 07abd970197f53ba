// The sources of the catalogue's matched filters (streamer/restoration/detection_maps.py):
// a frame less its background on a zero border of pad_y rows and pad_x columns, in the
// layout of a valid correlation's source (convolution.cl).
//
// Defines: INPUT_TYPE (the frame as uploaded), KEY_IS_FLOAT (its median's keys).

// Mirrored indices (numpy's "symmetric"), as the median reads past the frame's edges.
inline int mirrored(int i, const int n)
{
    const int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

// The frame as uploaded less the sky level `sky`, every finite pixel — masked ones too (a
// saturated core, which the likelihood leaves out, is still where a star is). Excluded pixels
// and the border past the frame's edges take the local median background instead (eq. 1's,
// mirrored at the edges), so that a sky gradient leaves no step there for the filter to
// see; what remains of the sky the detection levels on the map (streamer/sources/detection.py).
__kernel void sky_levelled_padded(__global const INPUT_TYPE * restrict raw,
                                  __global const uint * restrict median_keys,
                                  const float sky,
                                  __global float * restrict padded,
                                  const int width,
                                  const int height,
                                  const int pad_y,
                                  const int pad_x)
{
    const int px = get_global_id(0);
    const int py = get_global_id(1);
    const int padded_width = width + 2 * pad_x;
    if (px >= padded_width || py >= height + 2 * pad_y) return;
    const int x = mirrored(px - pad_x, width);
    const int y = mirrored(py - pad_y, height);
    const size_t at = (size_t)y * width + x;
    const float pixel = (float)raw[at];
    const int inside = x == px - pad_x && y == py - pad_y;
    padded[(size_t)py * padded_width + px] =
        (inside && isfinite(pixel) ? pixel : key_to_value(median_keys[at])) - sky;
}

// A frame less the sky level stats[sky_index] where weight > 0 (the restored frame: its sky is
// C's, -min B), 0 elsewhere (its excluded pixels are NaN).
__kernel void levelled_padded(__global const float * restrict image,
                              __global const float * restrict weight,
                              __global const float * restrict stats,
                              const int sky_index,
                              __global float * restrict padded,
                              const int width,
                              const int height,
                              const int pad_y,
                              const int pad_x)
{
    const int px = get_global_id(0);
    const int py = get_global_id(1);
    const int padded_width = width + 2 * pad_x;
    if (px >= padded_width || py >= height + 2 * pad_y) return;
    const int x = px - pad_x;
    const int y = py - pad_y;
    float value = 0.0f;
    if (x >= 0 && x < width && y >= 0 && y < height) {
        const size_t at = (size_t)y * width + x;
        if (weight[at] > 0.0f) value = image[at] - stats[sky_index];
    }
    padded[(size_t)py * padded_width + px] = value;
}
