// Exact sliding-window median (rank filter at rank K/2 of a WINDOW x WINDOW window).
//
// Pixels arrive as order-preserving uint32 keys (prepare.cl), padded by WINDOW/2 with the
// reflect rule. Each work item walks one output column down a strip of rows, keeping the
// window in:
//   * a histogram over NBINS value bins (quantiles of the frame, quantiles.cl, so bins are
//     evenly filled), with a coarse level of NBINS >> COARSE_SHIFT counts so the median search
//     skips empty runs;
//   * one doubly linked list per bin of the window slots whose key falls in that bin.
// Sliding down one row removes WINDOW slots and inserts WINDOW slots (O(WINDOW) per pixel, not
// a sort of WINDOW^2 values); the median bin is found by walking from the previous one, and the
// exact key is selected among the few slots of that bin.
//
// The window state of item `item` among `items` lives in global memory, field by field; entry
// i of a field of n entries is at AT(i, n): item after item (INTERLEAVED 0, for CPUs: each
// item's state is contiguous, cache-friendly) or entry after entry (INTERLEAVED 1, for GPUs:
// neighbouring items touch neighbouring words, so their accesses to the same slot coalesce).
//
// Defines: WINDOW (odd), NBINS (power of two, <= 65536), COARSE_SHIFT, INVALID_KEY,
// INTERLEAVED.

#define KCOUNT (WINDOW * WINDOW)
#define TARGET (KCOUNT / 2)
#define NULL_SLOT 0xFFFFu
#define NCOARSE (NBINS >> COARSE_SHIFT)
#define COARSE_WIDTH (1 << COARSE_SHIFT)
#if INTERLEAVED
#define AT(i, n) ((size_t)(i) * items + item)
#else
#define AT(i, n) ((size_t)item * (n) + (i))
#endif
#define STATE hist, coarse, head, slot_key, slot_bin, slot_next, slot_prev, item, items
#define STATE_PARAMETERS __global ushort *hist, __global ushort *coarse, \
    __global ushort *head, __global uint *slot_key, __global ushort *slot_bin, \
    __global ushort *slot_next, __global ushort *slot_prev, const size_t item, \
    const size_t items

// bins[i] = the bin of keys[i]: the largest b with bin_low[b] <= key (bin_low[0] == 0).
// Excluded pixels (INVALID_KEY) take the frame's median key, fill[0], first.
__kernel void assign_bins(__global uint *keys,
                          __global const uint *bin_low,
                          __global const uint *fill,
                          __global ushort *bins,
                          const uint count)
{
    const size_t i = get_global_id(0);
    if (i >= count) return;
    uint key = keys[i];
    if (key == INVALID_KEY) {
        key = fill[0];
        keys[i] = key;
    }
    uint low = 0, high = NBINS;
    while (high - low > 1) {
        const uint middle = (low + high) >> 1;
        if (bin_low[middle] <= key) low = middle; else high = middle;
    }
    bins[i] = (ushort)low;
}

inline void window_insert(STATE_PARAMETERS, const uint slot, const uint key, const ushort bin)
{
    const ushort first = head[AT(bin, NBINS)];
    slot_key[AT(slot, KCOUNT)] = key;
    slot_bin[AT(slot, KCOUNT)] = bin;
    slot_next[AT(slot, KCOUNT)] = first;
    slot_prev[AT(slot, KCOUNT)] = NULL_SLOT;
    if (first != NULL_SLOT) slot_prev[AT(first, KCOUNT)] = (ushort)slot;
    head[AT(bin, NBINS)] = (ushort)slot;
    hist[AT(bin, NBINS)] += 1;
    coarse[AT(bin >> COARSE_SHIFT, NCOARSE)] += 1;
}

inline ushort window_remove(STATE_PARAMETERS, const uint slot)
{
    const ushort bin = slot_bin[AT(slot, KCOUNT)];
    const ushort prev = slot_prev[AT(slot, KCOUNT)];
    const ushort next = slot_next[AT(slot, KCOUNT)];
    if (prev != NULL_SLOT) slot_next[AT(prev, KCOUNT)] = next; else head[AT(bin, NBINS)] = next;
    if (next != NULL_SLOT) slot_prev[AT(next, KCOUNT)] = prev;
    hist[AT(bin, NBINS)] -= 1;
    coarse[AT(bin >> COARSE_SHIFT, NCOARSE)] -= 1;
    return bin;
}

// The rank-th smallest key (0-based) among the window slots of one bin.
inline uint select_in_bin(STATE_PARAMETERS, const uint bin, uint rank,
                          __global const uint *bin_low, __global const uint *bin_high)
{
    const uint low = bin_low[bin];
    if (low == bin_high[bin]) return low;            // the bin holds a single value
    const ushort first = head[AT(bin, NBINS)];
    if (hist[AT(bin, NBINS)] == 1) return slot_key[AT(first, KCOUNT)];
    uint previous = 0;
    int have_previous = 0;
    for (;;) {
        uint smallest = 0xFFFFFFFFu;
        for (ushort s = first; s != NULL_SLOT; s = slot_next[AT(s, KCOUNT)]) {
            const uint key = slot_key[AT(s, KCOUNT)];
            if ((!have_previous || key > previous) && key < smallest) smallest = key;
        }
        uint equal = 0;
        for (ushort s = first; s != NULL_SLOT; s = slot_next[AT(s, KCOUNT)])
            equal += (slot_key[AT(s, KCOUNT)] == smallest);
        if (rank < equal) return smallest;
        rank -= equal;
        previous = smallest;
        have_previous = 1;
    }
}

__kernel void median_columns(__global const uint *keys,
                             __global const ushort *bins,
                             __global const uint *bin_low,
                             __global const uint *bin_high,
                             __global uint *out,
                             __global ushort *hist,
                             __global ushort *coarse,
                             __global ushort *head,
                             __global uint *slot_key,
                             __global ushort *slot_bin,
                             __global ushort *slot_next,
                             __global ushort *slot_prev,
                             const int width,
                             const int height,
                             const int padded_width,
                             const int column_offset,
                             const int strip_height)
{
    const size_t item = get_global_id(0) + get_global_id(1) * get_global_size(0);
    const size_t items = get_global_size(0) * get_global_size(1);
    const int x = column_offset + (int)get_global_id(0);
    const int y_start = (int)get_global_id(1) * strip_height;
    if (x >= width || y_start >= height) return;
    const int y_end = min(y_start + strip_height, height);

    for (int b = 0; b < NBINS; ++b) {
        hist[AT(b, NBINS)] = 0;
        head[AT(b, NBINS)] = NULL_SLOT;
    }
    for (int b = 0; b < NCOARSE; ++b) coarse[AT(b, NCOARSE)] = 0;

    // Padded row r holds window row (r % WINDOW) of every window that contains it.
    for (int r = y_start; r < y_start + WINDOW; ++r) {
        const size_t row = (size_t)r * padded_width + x;
        const uint ring = (uint)(r % WINDOW) * WINDOW;
        for (int i = 0; i < WINDOW; ++i)
            window_insert(STATE, ring + i, keys[row + i], bins[row + i]);
    }

    uint median_bin = 0;
    uint below = 0;   // window slots whose bin is < median_bin
    for (int y = y_start; y < y_end; ++y) {
        if (y > y_start) {
            const int r = y + WINDOW - 1;            // the row entering the window
            const size_t row = (size_t)r * padded_width + x;
            const uint ring = (uint)(r % WINDOW) * WINDOW;
            for (int i = 0; i < WINDOW; ++i) {
                const ushort old_bin = window_remove(STATE, ring + i);
                const ushort new_bin = bins[row + i];
                window_insert(STATE, ring + i, keys[row + i], new_bin);
                below += (new_bin < median_bin);
                below -= (old_bin < median_bin);
            }
        }
        while (below > TARGET) {
            if ((median_bin & (COARSE_WIDTH - 1)) == 0
                && below - coarse[AT((median_bin >> COARSE_SHIFT) - 1, NCOARSE)] > TARGET) {
                median_bin -= COARSE_WIDTH;
                below -= coarse[AT(median_bin >> COARSE_SHIFT, NCOARSE)];
                continue;
            }
            median_bin -= 1;
            below -= hist[AT(median_bin, NBINS)];
        }
        while (below + hist[AT(median_bin, NBINS)] <= TARGET) {
            below += hist[AT(median_bin, NBINS)];
            median_bin += 1;
            while ((median_bin & (COARSE_WIDTH - 1)) == 0
                   && below + coarse[AT(median_bin >> COARSE_SHIFT, NCOARSE)] <= TARGET) {
                below += coarse[AT(median_bin >> COARSE_SHIFT, NCOARSE)];
                median_bin += COARSE_WIDTH;
            }
        }
        out[(size_t)y * width + x] =
            select_in_bin(STATE, median_bin, TARGET - below, bin_low, bin_high);
    }
}
