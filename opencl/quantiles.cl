// Quantile bin edges for the median, computed on the device: a strided sample of the frame's
// keys is sorted (bitonic sort, one launch per step) and every (valid / NBINS)-th key starts a
// bin, so each bin holds about as many pixels of any window as any other. The sample's median
// key stands in for excluded pixels.
//
// Defines: NBINS, INVALID_KEY.

// sample[s] = the key of pixel s * count / samples (INVALID_KEY for the padding up to a power
// of two), read from the padded keys.
__kernel void sample_keys(__global const uint * restrict keys,
                          const int width,
                          const int height,
                          const int radius,
                          const int samples,
                          const int sampled,
                          __global uint * restrict sample)
{
    const int s = get_global_id(0);
    if (s >= samples) return;
    if (s >= sampled) {
        sample[s] = INVALID_KEY;
        return;
    }
    const long count = (long)width * height;
    const long pixel = (long)s * count / sampled;
    const int y = (int)(pixel / width);
    const int x = (int)(pixel - (long)y * width);
    sample[s] = keys[(size_t)(y + radius) * (width + 2 * radius) + x + radius];
}

// One compare-exchange step (j, k) of a bitonic sort of `samples` (a power of two) keys.
__kernel void bitonic_step(__global uint * restrict data, const int j, const int k)
{
    const int i = get_global_id(0);
    const int partner = i ^ j;
    if (partner <= i) return;
    const uint a = data[i];
    const uint b = data[partner];
    const int ascending = (i & k) == 0;
    if ((a > b) == ascending) {
        data[i] = b;
        data[partner] = a;
    }
}

// bin_low[b] = the (b * valid / NBINS)-th sorted valid key (0 for b = 0), bin_high[b] the
// next bin's low - 1 (at least bin_low[b]: empty bins stay well formed); fill[0] = the median
// valid key, or 0 when the sample holds none.
__kernel void quantile_edges(__global const uint * restrict sorted,
                             const int samples,
                             __global uint * restrict bin_low,
                             __global uint * restrict bin_high,
                             __global uint * restrict fill)
{
    const int b = get_global_id(0);
    if (b >= NBINS) return;
    int low = 0, high = samples;   // the number of valid keys: first INVALID_KEY
    while (low < high) {
        const int middle = (low + high) / 2;
        if (sorted[middle] == INVALID_KEY) high = middle; else low = middle + 1;
    }
    const int valid = low;
    if (valid == 0) {
        bin_low[b] = b == 0 ? 0u : 0xFFFFFFFFu;
        bin_high[b] = 0xFFFFFFFFu;
        if (b == 0) fill[0] = 0u;
        return;
    }
    const uint start = b == 0 ? 0u : sorted[(long)b * valid / NBINS];
    const uint next = b + 1 < NBINS ? sorted[(long)(b + 1) * valid / NBINS] : 0u;
    bin_low[b] = start;
    bin_high[b] = b + 1 < NBINS ? max(next - 1u, start) : 0xFFFFFFFFu;
    if (b + 1 < NBINS && next == 0u) bin_high[b] = start;
    if (b == 0) fill[0] = sorted[valid / 2];
}
