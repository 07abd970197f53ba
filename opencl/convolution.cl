// "Valid" correlations: dst[y][x] = sum_{i,j} w[i][j] * src[y + i][x + j], where src is
// (height + KH - 1) x (width + KW - 1) and needs no boundary test. Richardson-Lucy calls them
// with the PSF flipped (convolution) or as is (correlation), on buffers it has padded itself.
//
// Each work item computes a block of 8 columns x BLOCK_ROWS rows: 8-wide vectors, and one
// independent accumulator per row so the FMA latency chain does not serialise the loop (on
// CPUs this is what makes the difference; on GPUs the block raises arithmetic intensity).
// Source buffers carry slack after their last row (convolution.source_buffer): blocks at the right
// and bottom edges read past the valid area (those lanes are computed and not stored).
//
// Defines: KH, KW (kernel rows and columns).

#define BLOCK_ROWS 4

// Unaligned 8-float loads. PoCL's vload8 is several times slower than a plain vector load
// through a 4-byte-aligned vector type, which clang compilers accept; others use vload8.
// Plain `acc += w * v` (contracted by -cl-mad-enable) for the same reason: fma() on vectors
// becomes a library call there.
#if defined(__clang__)
typedef float float8_unaligned __attribute__((ext_vector_type(8), aligned(4)));
#define LOAD8(pointer) (*(__global const float8_unaligned *)(pointer))
#else
#define LOAD8(pointer) vload8(0, (pointer))
#endif

inline void store_block(__global float *dst, const int width, const int height,
                        const int x, const int y, const float8 a0, const float8 a1,
                        const float8 a2, const float8 a3, const int accumulate)
{
    const float8 rows[BLOCK_ROWS] = {a0, a1, a2, a3};
    for (int r = 0; r < BLOCK_ROWS && y + r < height; ++r) {
        __global float *out = dst + (size_t)(y + r) * width + x;
        float8 value = rows[r];
        if (x + 8 <= width) {
            if (accumulate) value += LOAD8(out);
            vstore8(value, 0, out);
        } else {
            const float lanes[8] = {value.s0, value.s1, value.s2, value.s3,
                                    value.s4, value.s5, value.s6, value.s7};
            for (int k = 0; x + k < width; ++k) out[k] = accumulate ? out[k] + lanes[k] : lanes[k];
        }
    }
}

__kernel void correlate_dense(__global const float * restrict src,
                              __global const float * restrict weights,
                              __global float * restrict dst,
                              const int width,
                              const int height)
{
    const int x = get_global_id(0) * 8;
    const int y = get_global_id(1) * BLOCK_ROWS;
    if (x >= width || y >= height) return;
    const int pitch = width + KW - 1;
    float8 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    for (int i = 0; i < KH; ++i) {
        __global const float *row = src + (size_t)(y + i) * pitch + x;
        __global const float *w = weights + i * KW;
        for (int j = 0; j < KW; ++j) {
            const float8 weight = (float8)(w[j]);
            a0 += weight * LOAD8(row + j);
            a1 += weight * LOAD8(row + pitch + j);
            a2 += weight * LOAD8(row + 2 * pitch + j);
            a3 += weight * LOAD8(row + 3 * pitch + j);
        }
    }
    store_block(dst, width, height, x, y, a0, a1, a2, a3, 0);
}

// A list of taps: offsets into src (row pitch `pitch`) with their weights. This is the
// sparse method (the non-zero taps of a PSF) and both passes of a separable term (a row of
// KW taps, then a column of KH taps with offsets i * pitch), which adds into dst when
// `accumulate` is set.
__kernel void correlate_taps(__global const float * restrict src,
                             const int pitch,
                             __global const int * restrict offsets,
                             __global const float * restrict weights,
                             const int taps,
                             __global float * restrict dst,
                             const int width,
                             const int height,
                             const int accumulate)
{
    const int x = get_global_id(0) * 8;
    const int y = get_global_id(1) * BLOCK_ROWS;
    if (x >= width || y >= height) return;
    __global const float *origin = src + (size_t)y * pitch + x;
    float8 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    for (int t = 0; t < taps; ++t) {
        const float8 weight = (float8)(weights[t]);
        __global const float *at = origin + offsets[t];
        a0 += weight * LOAD8(at);
        a1 += weight * LOAD8(at + pitch);
        a2 += weight * LOAD8(at + 2 * pitch);
        a3 += weight * LOAD8(at + 3 * pitch);
    }
    store_block(dst, width, height, x, y, a0, a1, a2, a3, accumulate);
}

// FFT path: multiply a spectrum by the conjugate of the kernel's.
__kernel void multiply_conjugate(__global float2 * restrict spectrum,
                                 __global const float2 * restrict kernel_spectrum,
                                 const int count)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const float2 a = spectrum[i];
    const float2 b = kernel_spectrum[i];
    spectrum[i] = (float2)(a.x * b.x + a.y * b.y, a.y * b.x - a.x * b.y);
}
