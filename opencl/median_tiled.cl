// Exact sliding-window median for GPUs: one work-group per TILE_X x TILE_Y block of output
// pixels, its (TILE_X + WINDOW - 1) x (TILE_Y + WINDOW - 1) block of padded keys staged once
// in local memory, then each work item selects its window's median key there.
//
// The selection is a radix search over the key's bits, two bits per pass: the median is the
// largest key v with count(window keys < v) <= TARGET, and that count never decreases as v
// grows, so v can be built from the top bit down, each pass counting the window's keys below
// the three candidates that extend v by one more two-bit digit. A pass reads each window key
// once from local memory (neighbouring work items read neighbouring words: no bank
// conflicts), with no per-item state, so all work items of a warp run the same instructions.
// Cost: KEY_BITS / 2 passes of WINDOW^2 reads and three comparisons; uint16 frames have
// 16-bit keys and take half the passes of float32.
//
// Keys arrive as prepare.cl and assign_bins (median.cl) leave them: order-preserving, padded by
// WINDOW/2 with the reflect rule, excluded pixels already replaced by the frame's median key.
//
// Defines: WINDOW (odd), TILE_X, TILE_Y, KEY_BITS (even, <= 32).

#define KCOUNT (WINDOW * WINDOW)
#define TARGET (KCOUNT / 2)
#define TILE_WIDTH (TILE_X + WINDOW - 1)
#define TILE_HEIGHT (TILE_Y + WINDOW - 1)

__kernel __attribute__((reqd_work_group_size(TILE_X, TILE_Y, 1)))
void median_tiled(__global const uint *keys,
                  __global uint *out,
                  const int width,
                  const int height,
                  const int padded_width,
                  const int row_offset,
                  __local uint *tile)
{
    const int lx = (int)get_local_id(0);
    const int ly = (int)get_local_id(1);
    const int x0 = (int)get_group_id(0) * TILE_X;
    const int y0 = row_offset + (int)get_group_id(1) * TILE_Y;
    const int padded_height = height + WINDOW - 1;

    // Tile entries beyond the padded frame are set too (to 0): only work items outside the
    // frame would read them, and those return below, but nothing in local memory is left
    // undefined.
    // Row by row, each work-group row reading neighbouring words (coalesced).
    for (int ty = ly; ty < TILE_HEIGHT; ty += TILE_Y) {
        const int gy = y0 + ty;
        for (int tx = lx; tx < TILE_WIDTH; tx += TILE_X) {
            const int gx = x0 + tx;
            tile[ty * TILE_WIDTH + tx] = (gx < padded_width && gy < padded_height)
                                             ? keys[(size_t)gy * padded_width + gx] : 0u;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    const int x = x0 + lx;
    const int y = y0 + ly;
    if (x >= width || y >= height) return;

    __local const uint *window = tile + ly * TILE_WIDTH + lx;
    uint v = 0;
    for (int shift = KEY_BITS - 2; shift >= 0; shift -= 2) {
        const uint c1 = v | (1u << shift);
        const uint c2 = v | (2u << shift);
        const uint c3 = v | (3u << shift);
        uint n1 = 0, n2 = 0, n3 = 0;
        for (int r = 0; r < WINDOW; ++r) {
            __local const uint *row = window + r * TILE_WIDTH;
            for (int c = 0; c < WINDOW; ++c) {
                const uint key = row[c];
                n1 += (key < c1);
                n2 += (key < c2);
                n3 += (key < c3);
            }
        }
        v = (n3 <= TARGET) ? c3 : (n2 <= TARGET) ? c2 : (n1 <= TARGET) ? c1 : v;
    }
    out[(size_t)y * width + x] = v;
}
