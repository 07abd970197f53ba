// The sources of the catalogue's matched filters (streamer/restoration/detection_maps.py):
// a frame less its background on a zero border of pad_y rows and pad_x columns, in the
// layout of a valid correlation's source (convolution.cl); and the restored frame's map read
// where the catalogue needs it: its local peaks and a sample for its sky level
// (streamer/restoration/restored_peaks.py).
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

// Whether a pixel of the frame as uploaded is excluded (NaN or infinite: the catalogue's mask).
inline int excluded(__global const INPUT_TYPE * restrict raw, const size_t at)
{
    return !isfinite((float)raw[at]);
}

// The candidates for the restored map's local peaks (streamer/sources/detection.py,
// local_peaks): pixels above `floor` that no unexcluded pixel of their 3x3 neighbourhood
// exceeds (the edges repeated), excluded pixels neither peaking nor hiding a neighbour's peak.
// Each is appended at a slot of its own (`count`, atomic; the order is the device's) as its
// pixel index and its 3x3 neighbourhood, row by row, -INFINITY where a neighbour is excluded
// or past the edge; the host takes the map's sky off these, and keeps the peaks that stand
// above the threshold on it. Past `capacity` a candidate is only counted: the host sees
// count > capacity and runs again with room for all.
__kernel void peak_candidates(__global const float * restrict map,
                              __global const INPUT_TYPE * restrict raw,
                              const float floor_value,
                              const int width,
                              const int height,
                              volatile __global uint * restrict count,
                              __global int * restrict positions,
                              __global float * restrict neighbourhoods,
                              const uint capacity)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const size_t at = (size_t)y * width + x;
    const float centre = map[at];
    if (!(centre > floor_value) || excluded(raw, at)) return;
    for (int dy = -1; dy <= 1; ++dy) {
        const int ny = clamp(y + dy, 0, height - 1);
        for (int dx = -1; dx <= 1; ++dx) {
            const size_t near = (size_t)ny * width + clamp(x + dx, 0, width - 1);
            if (map[near] > centre && !excluded(raw, near)) return;
        }
    }
    const uint slot = atomic_inc(count);
    if (slot >= capacity) return;
    positions[slot] = (int)at;
    __global float * restrict out = neighbourhoods + (size_t)slot * 9;
    for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
            const int ny = y + dy;
            const int nx = x + dx;
            float value = -INFINITY;
            if (ny >= 0 && ny < height && nx >= 0 && nx < width) {
                const size_t near = (size_t)ny * width + nx;
                if (!excluded(raw, near)) value = map[near];
            }
            out[(dy + 1) * 3 + dx + 1] = value;
        }
    }
}

// Every stride-th pixel of each axis of a map (the sample its sky level is measured on).
__kernel void strided_sample(__global const float * restrict map,
                             const int width,
                             const int stride,
                             __global float * restrict sample,
                             const int sample_width,
                             const int sample_height)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= sample_width || y >= sample_height) return;
    sample[(size_t)y * sample_width + x] = map[(size_t)y * stride * width + (size_t)x * stride];
}

// The candidates for the frame's S/N map pixels above the detection threshold
// (streamer/sources/detection.py, candidate_snr): pixels where the map less `offset` (the
// frame's mesh background through the filter, a natural bicubic spline evaluated as
// streamer/imaging/mesh_background.py's levelled does: each row the cubic of its segment's
// four rows `segment_rows`, weighted by the row's `row_weights`) exceeds `floor_value`,
// excluded pixels left out. Each is appended at a slot of its own (`count`, atomic; the
// order is the device's) as its pixel index and the map's value; the host levels them by
// the map's own background, measured on its sample, and applies the threshold. Past
// `capacity` a candidate is only counted: the host runs again with room for all.
__kernel void map_candidates(__global const float * restrict map,
                             __global const INPUT_TYPE * restrict raw,
                             __global const float * restrict segment_rows,
                             __global const float4 * restrict row_weights,
                             __global const int * restrict row_segment,
                             const float floor_value,
                             const int width,
                             const int height,
                             volatile __global uint * restrict count,
                             __global int * restrict positions,
                             __global float * restrict values,
                             const uint capacity)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const size_t at = (size_t)y * width + x;
    const float value = map[at];
    const float4 weights = row_weights[y];
    __global const float * restrict rows = segment_rows + (size_t)row_segment[y] * 4 * width + x;
    const float offset = weights.x * rows[0] + weights.y * rows[width]
                         + weights.z * rows[2 * width] + weights.w * rows[3 * width];
    if (!(value - offset > floor_value) || excluded(raw, at)) return;
    const uint slot = atomic_inc(count);
    if (slot >= capacity) return;
    positions[slot] = (int)at;
    values[slot] = value;
}
