// Copy a rows x columns block between buffers of different layouts: src starting at
// src_offset with row pitch src_pitch, dst starting at dst_offset with row pitch dst_pitch.
// Padding a frame into a larger buffer and cropping it back out are both this.
__kernel void copy_block(__global const float * restrict src,
                         const int src_offset,
                         const int src_pitch,
                         __global float * restrict dst,
                         const int dst_offset,
                         const int dst_pitch,
                         const int columns,
                         const int rows)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= columns || y >= rows) return;
    dst[dst_offset + (size_t)y * dst_pitch + x] = src[src_offset + (size_t)y * src_pitch + x];
}

// dst[i] = value for i < count. (clEnqueueFillBuffer does the same, but simulators such as
// Oclgrind do not count it as initialising memory, so every later read would be reported.)
__kernel void fill_floats(__global float * restrict dst, const float value, const int count)
{
    const int i = get_global_id(0);
    if (i < count) dst[i] = value;
}
