// Exact sliding-window median (rank filter at rank K/2 of a WINDOW x WINDOW window).
//
// Pixels arrive as order-preserving uint32 keys (float32 bit-flipped, or the uint16 value),
// already padded on the host by WINDOW/2 with the reflect rule. Each work item walks one
// output column down a strip of rows, keeping the window in:
//   * a histogram over NBINS value bins (quantiles of the frame, so bins are evenly filled),
//     with a coarse level of NBINS >> COARSE_SHIFT counts so the median search skips empty runs;
//   * one doubly linked list per bin of the window slots whose key falls in that bin.
// Sliding down one row removes WINDOW slots and inserts WINDOW slots (O(WINDOW) per pixel, not
// a sort of WINDOW^2 values); the median bin is found by walking from the previous one, and the
// exact key is selected among the few slots of that bin.
//
// Defines: WINDOW (odd), NBINS (power of two, <= 65536).

#define KCOUNT (WINDOW * WINDOW)
#define TARGET (KCOUNT / 2)
#define NULL_SLOT 0xFFFFu
#define COARSE_SHIFT 7
#define NCOARSE (NBINS >> COARSE_SHIFT)
#define COARSE_WIDTH (1 << COARSE_SHIFT)

__kernel void assign_bins(__global const uint *keys,
                          __global const uint *bin_low,
                          __global ushort *bins,
                          const uint count)
{
    const size_t i = get_global_id(0);
    if (i >= count) return;
    const uint key = keys[i];
    // Largest b with bin_low[b] <= key; bin_low[0] == 0 so the answer exists.
    uint low = 0, high = NBINS;
    while (high - low > 1) {
        const uint middle = (low + high) >> 1;
        if (bin_low[middle] <= key) low = middle; else high = middle;
    }
    bins[i] = (ushort)low;
}

typedef struct {
    __global ushort *hist;
    __global ushort *coarse;
    __global ushort *head;
    __global uint *slot_key;
    __global ushort *slot_bin;
    __global ushort *slot_next;
    __global ushort *slot_prev;
} Window;

inline void window_insert(Window w, const uint slot, const uint key, const ushort bin)
{
    const ushort first = w.head[bin];
    w.slot_key[slot] = key;
    w.slot_bin[slot] = bin;
    w.slot_next[slot] = first;
    w.slot_prev[slot] = NULL_SLOT;
    if (first != NULL_SLOT) w.slot_prev[first] = (ushort)slot;
    w.head[bin] = (ushort)slot;
    w.hist[bin] += 1;
    w.coarse[bin >> COARSE_SHIFT] += 1;
}

inline ushort window_remove(Window w, const uint slot)
{
    const ushort bin = w.slot_bin[slot];
    const ushort prev = w.slot_prev[slot];
    const ushort next = w.slot_next[slot];
    if (prev != NULL_SLOT) w.slot_next[prev] = next; else w.head[bin] = next;
    if (next != NULL_SLOT) w.slot_prev[next] = prev;
    w.hist[bin] -= 1;
    w.coarse[bin >> COARSE_SHIFT] -= 1;
    return bin;
}

// The rank-th smallest key (0-based) among the window slots of one bin.
inline uint select_in_bin(Window w, const uint bin, uint rank,
                          __global const uint *bin_low, __global const uint *bin_high)
{
    const uint low = bin_low[bin];
    if (low == bin_high[bin]) return low;            // the bin holds a single value
    const ushort first = w.head[bin];
    if (w.hist[bin] == 1) return w.slot_key[first];
    uint previous = 0;
    int have_previous = 0;
    for (;;) {
        uint smallest = 0xFFFFFFFFu;
        for (ushort s = first; s != NULL_SLOT; s = w.slot_next[s]) {
            const uint key = w.slot_key[s];
            if ((!have_previous || key > previous) && key < smallest) smallest = key;
        }
        uint equal = 0;
        for (ushort s = first; s != NULL_SLOT; s = w.slot_next[s])
            equal += (w.slot_key[s] == smallest);
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
                             __global ushort *hist_all,
                             __global ushort *coarse_all,
                             __global ushort *head_all,
                             __global uint *slot_key_all,
                             __global ushort *slot_bin_all,
                             __global ushort *slot_next_all,
                             __global ushort *slot_prev_all,
                             const int width,
                             const int height,
                             const int padded_width,
                             const int column_offset,
                             const int strip_height)
{
    const size_t item = get_global_id(0) + get_global_id(1) * get_global_size(0);
    const int x = column_offset + (int)get_global_id(0);
    const int y_start = (int)get_global_id(1) * strip_height;
    if (x >= width || y_start >= height) return;
    const int y_end = min(y_start + strip_height, height);

    Window w;
    w.hist = hist_all + item * NBINS;
    w.coarse = coarse_all + item * NCOARSE;
    w.head = head_all + item * NBINS;
    w.slot_key = slot_key_all + item * KCOUNT;
    w.slot_bin = slot_bin_all + item * KCOUNT;
    w.slot_next = slot_next_all + item * KCOUNT;
    w.slot_prev = slot_prev_all + item * KCOUNT;

    for (int b = 0; b < NBINS; ++b) { w.hist[b] = 0; w.head[b] = NULL_SLOT; }
    for (int b = 0; b < NCOARSE; ++b) w.coarse[b] = 0;

    // Padded row r holds window row (r % WINDOW) of every window that contains it.
    for (int r = y_start; r < y_start + WINDOW; ++r) {
        const size_t row = (size_t)r * padded_width + x;
        const uint ring = (uint)(r % WINDOW) * WINDOW;
        for (int i = 0; i < WINDOW; ++i)
            window_insert(w, ring + i, keys[row + i], bins[row + i]);
    }

    uint median_bin = 0;
    uint below = 0;   // window slots whose bin is < median_bin
    for (int y = y_start; y < y_end; ++y) {
        if (y > y_start) {
            const int r = y + WINDOW - 1;            // the row entering the window
            const size_t row = (size_t)r * padded_width + x;
            const uint ring = (uint)(r % WINDOW) * WINDOW;
            for (int i = 0; i < WINDOW; ++i) {
                const ushort old_bin = window_remove(w, ring + i);
                const ushort new_bin = bins[row + i];
                window_insert(w, ring + i, keys[row + i], new_bin);
                below += (new_bin < median_bin);
                below -= (old_bin < median_bin);
            }
        }
        while (below > TARGET) {
            if ((median_bin & (COARSE_WIDTH - 1)) == 0
                && below - w.coarse[(median_bin >> COARSE_SHIFT) - 1] > TARGET) {
                median_bin -= COARSE_WIDTH;
                below -= w.coarse[median_bin >> COARSE_SHIFT];
                continue;
            }
            median_bin -= 1;
            below -= w.hist[median_bin];
        }
        while (below + w.hist[median_bin] <= TARGET) {
            below += w.hist[median_bin];
            median_bin += 1;
            while ((median_bin & (COARSE_WIDTH - 1)) == 0
                   && below + w.coarse[median_bin >> COARSE_SHIFT] <= TARGET) {
                below += w.coarse[median_bin >> COARSE_SHIFT];
                median_bin += COARSE_WIDTH;
            }
        }
        out[(size_t)y * width + x] =
            select_in_bin(w, median_bin, TARGET - below, bin_low, bin_high);
    }
}
