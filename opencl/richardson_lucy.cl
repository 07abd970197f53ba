// Richardson-Lucy steps on the extended domain (frame + PSF radius on every side), so the
// estimate may hold flux that the PSF spreads across the frame edge: no wrap-around, no
// zero-padding, hence no ringing at the edges (Bertero & Boccacci 2005).
//
// The sky of the data is a known term of the model, M = h * u + b, as in STSDAS lucy's
// background, with b = stats[STAT_SKY] - pedestal: the estimate u holds the sources and a
// small pedestal of sky (so noise below the sky stays representable), stays >= 0, and so
// cannot dig dark moats deeper than the pedestal around bright stars; the output is u + b.
//
// Damping (White 1994, "Image restoration using the damped Richardson-Lucy method", as in
// STSDAS lucy): where the model already fits the data within the noise, the ratio is pulled
// towards 1, so noise is not fitted and no dark moats are dug around bright stars:
//   U = (D - M)^2 / (T^2 var),  f(U) = U^(N-1) (N - (N-1) U) for U < 1, else 1,
//   ratio = 1 + f(U) (D - M) / M,
// with var = sigma^2 + max(M - sky, 0) * inverse_gain (sky noise plus the sources' Poisson
// noise) and T the damping threshold in sigmas (T = 0: plain RL, ratio = D / M).
//
// Defines: TINY (the model value below which a pixel carries no information), NORM_FLOOR
// (the fraction of a margin pixel's light that must reach valid pixels for it to be
// estimated: below it the update would divide rounding noise by rounding noise), DAMPING_POWER
// (White's N), STAT_<NAME> (the slots of the statistics buffer
// that several steps read on the device: SKY, DATA_SUM, DATA_COUNT, CHI2, CHI2_COUNT, CHANGE,
// TOTAL, ESTIMATE_SUM).

// The reducing steps below spread their pixels over the work items with FOR_EACH_ELEMENT
// (common.cl: a grid stride on GPUs, contiguous runs on CPUs); each item writes one partial
// sum per quantity and reduce.cl folds them. No local memory and no barriers.

// u^(DAMPING_POWER - 1) by repeated squaring: the exponent is a constant, so this unrolls into
// a few multiplications (pown is a library call on some compilers, ten times slower).
inline float damping_power(const float u)
{
    float result = 1.0f, base = u;
    for (int e = DAMPING_POWER - 1; e > 0; e >>= 1) {
        if (e & 1) result *= base;
        base *= base;
    }
    return result;
}

// Per work item: the sum of the valid data and the number of valid pixels (for u0).
__kernel void rl_data_sums(__global const float * restrict data,
                           __global const float * restrict weight,
                           const int count,
                           __global float * restrict partial_sum,
                           __global float * restrict partial_count)
{
    const int g = get_global_id(0);
    float sum = 0.0f, counted = 0.0f;
    FOR_EACH_ELEMENT(i, count) {
        if (weight[i] > 0.0f) {
            sum += data[i];
            counted += 1.0f;
        }
    }
    partial_sum[g] = sum;
    partial_count[g] = counted;
}

// The model's value M = h * u + b and White's damped ratio at one pixel.
inline float damped_ratio(const float d, const float m, const float sky,
                          const float threshold_squared, const float variance,
                          const float inverse_gain)
{
    const float residual = d - m;
    float factor = 1.0f;
    if (threshold_squared > 0.0f) {
        const float pixel_variance = variance + fmax(m - sky, 0.0f) * inverse_gain;
        const float u = fmin(residual * residual / (threshold_squared * pixel_variance), 1.0f);
        factor = damping_power(u) * (DAMPING_POWER - (DAMPING_POWER - 1) * u);
    }
    return 1.0f + factor * residual / m;
}

// The weighted ratio of one pixel (model m already holds the background): 0 where the weight
// or the model is 0. Shared by rl_ratio and rl_ratio_rows.
inline float weighted_ratio(const float d, const float w, const float m, const float sky,
                            const float threshold_squared, const float variance,
                            const float inverse_gain)
{
    return (w > 0.0f && m > TINY)
        ? w * damped_ratio(d, m, sky, threshold_squared, variance, inverse_gain) : 0.0f;
}

// One pixel's chi^2 term, (D - M)^2 over its variance (sky noise plus the source's Poisson
// noise). Shared by rl_chi2 and rl_ratio_rows.
inline float chi2_term(const float d, const float m, const float sky, const float variance,
                       const float inverse_gain)
{
    const float residual = d - m;
    return residual * residual / (variance + (m - sky) * inverse_gain);
}

// u * (h' * ratio) / (h' * w) at one pixel; 0 where too little light reaches valid pixels.
inline float updated(const float u, const float correction, const float norm)
{
    return norm > NORM_FLOOR ? u * correction / norm : 0.0f;
}

// ratio_padded[y + 2*ry][x + 2*rx] = w * ratio (damped), 0 where the weight or model is 0.
__kernel void rl_ratio(__global const float * restrict data,
                       __global const float * restrict weight,
                       __global const float * restrict model,
                       __global float * restrict ratio_padded,
                       const int width,
                       const int height,
                       const int radius_y,
                       const int radius_x,
                       const float threshold_squared,
                       const float variance,
                       const float inverse_gain,
                       const float pedestal,
                       __global const float * restrict stats)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const size_t at = (size_t)y * width + x;
    const float sky = stats[STAT_SKY];
    const float m = model[at] + sky - pedestal;
    const float value = weighted_ratio(data[at], weight[at], m, sky, threshold_squared,
                                       variance, inverse_gain);
    ratio_padded[(size_t)(y + 2 * radius_y) * (width + 4 * radius_x) + x + 2 * radius_x] = value;
}

// Per work item: chi^2 and the count of the valid pixels whose model is above
// sky + signal_sigmas sigma (the pixels with signal, for the discrepancy stopping rule). Run
// only on the iterations that check it.
__kernel void rl_chi2(__global const float * restrict data,
                      __global const float * restrict weight,
                      __global const float * restrict model,
                      const int count,
                      const float variance,
                      const float inverse_gain,
                      const float signal_sigmas,
                      const float pedestal,
                      __global const float * restrict stats,
                      __global float * restrict partial_chi2,
                      __global float * restrict partial_count)
{
    const int g = get_global_id(0);
    const float sky = stats[STAT_SKY];
    const float signal_level = sky + signal_sigmas * sqrt(variance);
    float chi2 = 0.0f, counted = 0.0f;
    FOR_EACH_ELEMENT(i, count) {
        const float m = model[i] + sky - pedestal;
        if (weight[i] > 0.0f && m > signal_level) {
            chi2 += chi2_term(data[i], m, sky, variance, inverse_gain);
            counted += 1.0f;
        }
    }
    partial_chi2[g] = chi2;
    partial_count[g] = counted;
}

// u0 on the extended domain: the data less the sky, its edge rows/columns replicated
// outwards, excluded pixels (weight 0) replaced by the mean of the valid ones, and a positive
// floor (a multiplicative update never moves a pixel away from 0). The mean comes from the
// device statistics, not from the host.
__kernel void rl_initial_estimate(__global const float * restrict data,
                                  __global const float * restrict weight,
                                  __global float * restrict estimate,
                                  const int width,
                                  const int height,
                                  const int radius_y,
                                  const int radius_x,
                                  const float pedestal,
                                  __global const float * restrict stats)
{
    const int ex = get_global_id(0);
    const int ey = get_global_id(1);
    const int ext_width = width + 2 * radius_x;
    if (ex >= ext_width || ey >= height + 2 * radius_y) return;
    const int x = clamp(ex - radius_x, 0, width - 1);
    const int y = clamp(ey - radius_y, 0, height - 1);
    const size_t at = (size_t)y * width + x;
    const float mean = stats[STAT_DATA_SUM] / fmax(stats[STAT_DATA_COUNT], 1.0f);
    const float floor_value = fmax(mean * 1e-3f, TINY * 10.0f);
    const float value = (weight[at] > 0.0f ? data[at] : mean) - (stats[STAT_SKY] - pedestal);
    estimate[(size_t)ey * ext_width + ex] = fmax(value, floor_value);
}

// u <- u * (h' * ratio) / (h' * w).
__kernel void rl_update(__global float * restrict estimate,
                        __global const float * restrict correction,
                        __global const float * restrict norm,
                        const int count)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    estimate[i] = updated(estimate[i], correction[i], norm[i]);
}

// The same update, and per work item the sums of |u_new - u_old| and of u_new (for the
// relative-change stopping rule and the report), on the iterations that measure them.
__kernel void rl_update_measured(__global float * restrict estimate,
                                 __global const float * restrict correction,
                                 __global const float * restrict norm,
                                 const int count,
                                 __global float * restrict partial_change,
                                 __global float * restrict partial_total)
{
    const int g = get_global_id(0);
    float change = 0.0f, total = 0.0f;
    FOR_EACH_ELEMENT(i, count) {
        const float old_value = estimate[i];
        const float new_value = updated(old_value, correction[i], norm[i]);
        estimate[i] = new_value;
        change += fabs(new_value - old_value);
        total += new_value;
    }
    partial_change[g] = change;
    partial_total[g] = total;
}

// Per work item: the sum of the estimate over the valid frame pixels (for the output level).
__kernel void rl_estimate_sums(__global const float * restrict estimate,
                               __global const float * restrict weight,
                               const int width,
                               const int height,
                               const int radius_y,
                               const int radius_x,
                               __global float * restrict partial_sum)
{
    const int g = get_global_id(0);
    const int ext_width = width + 2 * radius_x;
    float sum = 0.0f;
    FOR_EACH_ELEMENT(i, width * height) {
        const int y = i / width;
        const int x = i - y * width;
        if (weight[i] > 0.0f) sum += estimate[(size_t)(y + radius_y) * ext_width + x + radius_x];
    }
    partial_sum[g] = sum;
}

// ---- Acceleration (Biggs & Andrews 1997, Appl. Opt. 36, 1766) ------------------------------
// RL converges slowly where the data hold the most information (a bright star's core): after
// 30 plain iterations its model is still wider than the data. Vector extrapolation predicts
// where the iterations are heading: with x the RL iterates and y the points they were taken
// from, g_k = x_{k+1} - y_k, alpha = <g_k, g_{k-1}> / <g_{k-1}, g_{k-1}> in [0, MAX_ALPHA],
// and the next step starts from y_{k+1} = max(x_{k+1} + alpha (x_{k+1} - x_k), 0).

// Pass 1 over the extended domain: g = x - y into `current_step` (which held y), and per work item
// the sums <g, g_prev> and <g_prev, g_prev>.
__kernel void rl_accel_step(__global const float * restrict estimate,
                            __global float * restrict current_step,
                            __global const float * restrict previous_step,
                            const int count,
                            __global float * restrict partial_num,
                            __global float * restrict partial_den)
{
    float num = 0.0f, den = 0.0f;
    FOR_EACH_ELEMENT(i, count) {
        const float g = estimate[i] - current_step[i];
        const float p = previous_step[i];
        current_step[i] = g;
        num += g * p;
        den += p * p;
    }
    partial_num[get_global_id(0)] = num;
    partial_den[get_global_id(0)] = den;
}

// Pass 2: the extrapolated estimate; `previous` keeps this iterate for the next step.
__kernel void rl_accel_extrapolate(__global float * restrict estimate,
                                   __global float * restrict previous,
                                   const int count,
                                   const float max_alpha,
                                   __global const float * restrict stats)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const float den = stats[STAT_ACCEL_DEN];
    const float alpha = den > 0.0f ? clamp(stats[STAT_ACCEL_NUM] / den, 0.0f, max_alpha) : 0.0f;
    const float x = estimate[i];
    const float x_previous = previous[i];
    previous[i] = x;
    estimate[i] = fmax(x + alpha * (x - x_previous), 0.0f);
}

// The restored frame: the estimate's frame part plus the model's background, levelled so its
// sum over the valid pixels equals the data's; NaN where the input was excluded. RL's positivity leaves the sky a little high
// where the noise dips below it (more so with a pedestal); a constant removes that without
// touching the sources (their photometry is measured against the local sky) and keeps the
// flux exactly. With a zero background (plain RL) the level is already the data's.
__kernel void rl_output(__global const float * restrict estimate,
                        __global const float * restrict weight,
                        __global float * restrict restored,
                        const int width,
                        const int height,
                        const int radius_y,
                        const int radius_x,
                        const float pedestal,
                        __global const float * restrict stats)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const int ext_width = width + 2 * radius_x;
    const float background = stats[STAT_SKY] - pedestal;
    const float count = fmax(stats[STAT_DATA_COUNT], 1.0f);
    const float excess = (stats[STAT_ESTIMATE_SUM] + count * background - stats[STAT_DATA_SUM])
                         / count;
    const size_t at = (size_t)y * width + x;
    restored[at] = weight[at] > 0.0f
        ? estimate[(size_t)(y + radius_y) * ext_width + x + radius_x] + background - excess : NAN;
}

// The restored frame at the kernel's resolution: the data plus what the estimate holds beyond
// its own blur by the kernel, R = C + gate (u - k * u) (CLEAN's "components convolved with the
// beam, plus the residuals"; Hogbom 1974). u is the sky at the target resolution (RL
// deconvolved the narrower kernel k, with h = k * g), k * u its model of the data, so inside
// the gate R = u + (C - model): flux stays where the data put it, and RL's pedestal cancels.
// The residual output R = C + s - k * s, where s is the estimate's sources: u less its sky (the
// pedestal) where the gate is open, 0 elsewhere (rl_sources). s - k * s sums to zero around
// each source whatever the gate, so every star keeps the flux the data gave it; where no
// source is near, R is the data to the bit and keeps the data's noise. The gate only says
// where the estimate is a source: RL's positivity makes its estimate of pure noise a floor with
// speckles, whose skewed values would bias every median or mode a photometry code takes of
// the sky (Starck & Murtagh's multiresolution support restricts deconvolution to significant
// structure likewise). `model` is k * s. NaN where the input was excluded.
__kernel void rl_restored(__global const float * restrict data,
                          __global const float * restrict weight,
                          __global const float * restrict sources,
                          __global const float * restrict model,
                          __global float * restrict restored,
                          const int width,
                          const int height,
                          const int radius_y,
                          const int radius_x)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const int ext_width = width + 2 * radius_x;
    const size_t at = (size_t)y * width + x;
    const float detail = sources[(size_t)(y + radius_y) * ext_width + x + radius_x] - model[at];
    restored[at] = weight[at] > 0.0f ? data[at] + detail : NAN;
}

// The noise map: each pixel's standard deviation from the noise model of the data C (eq. 2),
// sqrt(sigma^2 + max(C - sky, 0) / gain); NaN where the input was excluded. The residual
// output keeps the data's noise, so its sky divided by this is unit normal.
__kernel void rl_noise_map(__global const float * restrict data,
                           __global const float * restrict weight,
                           __global const float * restrict stats,
                           __global float * restrict error,
                           const int count,
                           const float variance,
                           const float inverse_gain)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const float signal = fmax(data[i] - stats[STAT_SKY], 0.0f);
    error[i] = weight[i] > 0.0f ? sqrt(variance + signal * inverse_gain) : NAN;
}

// The estimate's sources on the extended domain: u - pedestal where the gate (frame-sized) is
// open, the margin taking the gate of its nearest frame pixel; 0 elsewhere.
__kernel void rl_sources(__global const float * restrict estimate,
                         __global const uchar * restrict gate,
                         __global float * restrict sources,
                         const int width,
                         const int height,
                         const int radius_y,
                         const int radius_x,
                         const float pedestal)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    const int ext_width = width + 2 * radius_x;
    if (x >= ext_width || y >= height + 2 * radius_y) return;
    const int fx = clamp(x - radius_x, 0, width - 1);
    const int fy = clamp(y - radius_y, 0, height - 1);
    const size_t at = (size_t)y * ext_width + x;
    sources[at] = gate[(size_t)fy * width + fx] ? estimate[at] - pedestal : 0.0f;
}

// The gate's seeds: pixels whose model, averaged over their 3x3 neighbourhood (edges
// replicated), stands `threshold` noise sigmas above the estimate's sky (`pedestal`); every
// pixel when sigma is 0 (no noise model: plain use). The average is a small matched filter:
// with a narrow kernel the model follows the data's noise, and single-pixel peaks 2 sigma up
// (2 % of the sky) would open the gate to RL's sharpened noise; a star's core spans the box.
__kernel void rl_gate_seed(__global const float * restrict model,
                           __global uchar * restrict seed,
                           const int width,
                           const int height,
                           const float pedestal,
                           const float sigma,
                           const float threshold)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    float sum = 0.0f;
    for (int dy = -1; dy <= 1; ++dy) {
        const int row = clamp(y + dy, 0, height - 1);
        for (int dx = -1; dx <= 1; ++dx) {
            sum += model[(size_t)row * width + clamp(x + dx, 0, width - 1)];
        }
    }
    const bool significant = sum / 9.0f - pedestal > threshold * sigma;
    seed[(size_t)y * width + x] = (sigma <= 0.0f || significant) ? 1 : 0;
}

// One pass of a square dilation by `reach` pixels: along rows (step 1) or columns (step =
// width). Two passes grow the seeds into the gate.
__kernel void rl_gate_grow(__global const uchar * restrict source,
                           __global uchar * restrict grown,
                           const int width,
                           const int height,
                           const int reach,
                           const int along_rows)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= width || y >= height) return;
    const int position = along_rows ? x : y;
    const int length = along_rows ? width : height;
    const int step = along_rows ? 1 : width;
    const size_t at = (size_t)y * width + x;
    const int low = max(position - reach, 0) - position;
    const int high = min(position + reach, length - 1) - position;
    uchar any = 0;
    for (int d = low; d <= high && !any; ++d) any = source[(long)at + (long)d * step];
    grown[at] = any;
}

// ---- Host-FFT iterations on the transforms' own buffers (CPU devices only) ------------------
// With the host_fft correlation the two correlations run in place on FFTW's buffers, which the
// kernels below read and write directly (the buffers are mapped, not copied). Each work item
// takes one row of a transform: on a CPU that is one contiguous run, and the row's partial sums
// of the measured iterations need no second pass. Rows are `pitch` floats apart; only the first
// `columns` of a row are the transform's input (the rest holds the in-place half spectrum).

// The ratio into the backward transform's input: row `row` holds the ratio of frame row
// row - 2*ry at columns 2*rx ..., zero elsewhere (the margins, and every row outside the frame);
// the model is read from the forward transform's output (frame rows at its origin). On the
// measured iterations, also the chi^2 partial sums of rl_chi2, per row.
__kernel void rl_ratio_rows(__global const float * restrict data,
                            __global const float * restrict weight,
                            __global const float * restrict model,
                            const int model_pitch,
                            __global float * restrict ratio_out,
                            const int out_pitch,
                            const int out_rows,
                            const int out_columns,
                            const int width,
                            const int height,
                            const int radius_y,
                            const int radius_x,
                            const float threshold_squared,
                            const float variance,
                            const float inverse_gain,
                            const float pedestal,
                            const float signal_sigmas,
                            const int measure,
                            __global const float * restrict stats,
                            __global float * restrict partial_chi2,
                            __global float * restrict partial_count)
{
    const int row = get_global_id(0);
    if (row >= out_rows) return;
    __global float * restrict out = ratio_out + (size_t)row * out_pitch;
    const int y = row - 2 * radius_y;
    float chi2 = 0.0f, counted = 0.0f;
    if (y < 0 || y >= height) {
        for (int x = 0; x < out_columns; ++x) out[x] = 0.0f;
    } else {
        const float sky = stats[STAT_SKY];
        const float signal_level = sky + signal_sigmas * sqrt(variance);
        const int left = 2 * radius_x;
        __global const float * restrict d = data + (size_t)y * width;
        __global const float * restrict w = weight + (size_t)y * width;
        __global const float * restrict mo = model + (size_t)y * model_pitch;
        for (int x = 0; x < left; ++x) out[x] = 0.0f;
        for (int x = 0; x < width; ++x) {
            const float m = mo[x] + sky - pedestal;
            out[left + x] = weighted_ratio(d[x], w[x], m, sky, threshold_squared, variance,
                                           inverse_gain);
            if (measure && w[x] > 0.0f && m > signal_level) {
                chi2 += chi2_term(d[x], m, sky, variance, inverse_gain);
                counted += 1.0f;
            }
        }
        for (int x = left + width; x < out_columns; ++x) out[x] = 0.0f;
    }
    if (measure) {
        partial_chi2[row] = chi2;
        partial_count[row] = counted;
    }
}

// u <- u * (h' * ratio) / (h' * w) with the correction read from the backward transform's
// output (extended rows at its origin), the new estimate also written into the forward
// transform's input (zero outside the extended domain). On the measured iterations, also the
// sums of |u_new - u_old| and of u_new, per row.
__kernel void rl_update_rows(__global float * restrict estimate,
                             __global const float * restrict correction,
                             const int correction_pitch,
                             __global const float * restrict norm,
                             __global float * restrict estimate_out,
                             const int out_pitch,
                             const int out_rows,
                             const int out_columns,
                             const int ext_width,
                             const int ext_height,
                             const int measure,
                             __global float * restrict partial_change,
                             __global float * restrict partial_total)
{
    const int row = get_global_id(0);
    if (row >= out_rows) return;
    __global float * restrict out = estimate_out + (size_t)row * out_pitch;
    float change = 0.0f, total = 0.0f;
    if (row >= ext_height) {
        for (int x = 0; x < out_columns; ++x) out[x] = 0.0f;
    } else {
        __global float * restrict u = estimate + (size_t)row * ext_width;
        __global const float * restrict c = correction + (size_t)row * correction_pitch;
        __global const float * restrict n = norm + (size_t)row * ext_width;
        for (int x = 0; x < ext_width; ++x) {
            const float old_value = u[x];
            const float new_value = updated(old_value, c[x], n[x]);
            u[x] = new_value;
            out[x] = new_value;
            change += fabs(new_value - old_value);
            total += new_value;
        }
        for (int x = ext_width; x < out_columns; ++x) out[x] = 0.0f;
    }
    if (measure) {
        partial_change[row] = change;
        partial_total[row] = total;
    }
}

// The estimate into the forward transform's input, zero outside the extended domain (before
// the first iteration).
__kernel void rl_stage_rows(__global const float * restrict estimate,
                            __global float * restrict estimate_out,
                            const int out_pitch,
                            const int out_rows,
                            const int out_columns,
                            const int ext_width,
                            const int ext_height)
{
    const int row = get_global_id(0);
    if (row >= out_rows) return;
    __global float * restrict out = estimate_out + (size_t)row * out_pitch;
    const int copied = row < ext_height ? ext_width : 0;
    for (int x = 0; x < copied; ++x) out[x] = estimate[(size_t)row * ext_width + x];
    for (int x = copied; x < out_columns; ++x) out[x] = 0.0f;
}
