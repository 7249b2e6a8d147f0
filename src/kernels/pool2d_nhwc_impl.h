/* pool2d_nhwc_impl.h: max, average and L^p pooling on channels-last buffers, x (N, H, W, C) and
 * y (N, OH, OW, C), forward and backward, for one dtype. A kernel file (pool2d_nhwc_<isa>.c)
 * includes its fc_isa_<isa>.h and instantiates this template once per dtype (fc_each_dtype.h).
 *
 * A pixel's C channels are contiguous, so every window operation is element-wise on rows of C:
 * an output pixel folds its window's input rows in PyTorch's row-major scan order, one loop over
 * the channels per tap, which the compiler vectorises for the file's instruction set with no
 * border cases inside it (the window is clipped to the input once per pixel). Semantics are
 * pool2d_impl.h's, channel by channel: the first maximum, the last NaN, -inf and index -1 for a
 * window wholly in the padding, indices flat h * W + w within each (n, c) plane.
 *
 * Forward passes are parallel over output rows (image, oh): each output has one writer. Backward
 * passes add each output's gradient into its window, so they are parallel over (image, block of
 * channels): a task zeroes its part of the image's gradient and owns it, adding the outputs in
 * order, so no sum depends on the thread count (nor on the blocks, which only split channels).
 * The max-pool backward with disjoint windows gathers instead, each value written once, and
 * scatters only when an index lies outside its window (nhwc_max_gather). */
#include "pool2d_common.h"

/* The window of output (oh, ow): rows h0 + i * dH for i in [*i0, *i1), columns w0 + j * dW for j
 * in [*j0, *j1), clipped to the input (empty when the window lies wholly in the padding). */
static inline void FC_LOCAL(nhwc_window)(const fc_pool2d_params *p, fc_index oh, fc_index ow,
                                         fc_index *h0, fc_index *i0, fc_index *i1, fc_index *w0,
                                         fc_index *j0, fc_index *j1) {
    *h0 = oh * p->stride_h - p->pad_top;
    *w0 = ow * p->stride_w - p->pad_left;
    fc_inside_span(*h0, p->dilation_h, p->kernel_h, p->in_h, i0, i1);
    fc_inside_span(*w0, p->dilation_w, p->kernel_w, p->in_w, j0, j1);
}

/* Channel blocks per image for a backward pass: enough tasks for the threads when the batch is
 * small, each block at least a few vectors wide. Blocks only split channels, so results never
 * depend on them. */
static inline fc_index FC_LOCAL(nhwc_channel_blocks)(const fc_pool2d_params *p, int nthreads) {
    const fc_index C = p->channels, N = p->planes / C;
    return FC_MAX(1, FC_MIN(C / 64, FC_CEIL_DIV(2 * (fc_index)nthreads, N)));
}

/* Zero this task's channels [c0, c1) of an image's gradient (HW pixels of C). */
static inline void FC_LOCAL(nhwc_zero)(T *dst, fc_index HW, fc_index C, fc_index c0, fc_index c1) {
    if (c0 == 0 && c1 == C) {
        memset(dst, 0, sizeof(T) * (size_t)(HW * C));
        return;
    }
    for (fc_index q = 0; q < HW; q++) memset(dst + q * C + c0, 0, sizeof(T) * (size_t)(c1 - c0));
}

/* ---- max pooling ----------------------------------------------------------------------------- */

/* Channels a max-pool window is folded for at a time, without indices. */
#define FC_NHWC_MAX_BLOCK 64

/* out[c] for c < n = the maximum of channel c over the window's taps inside (rows h0 + i dH, i in
 * [i0, i1), columns w0 + j dW, j in [j0, j1); x: the image's first pixel plus the first channel),
 * folded in scan order from the first tap: with n a constant the running maxima stay in
 * registers over the taps, where a loop over every channel per tap stores and reloads them. */
static inline void FC_LOCAL(nhwc_max_fold)(const fc_pool2d_params *p, const T *x, fc_index n,
                                           fc_index h0, fc_index i0, fc_index i1, fc_index w0,
                                           fc_index j0, fc_index j1, T *restrict out) {
    const fc_index C = p->channels, W = p->in_w;
    T m[FC_NHWC_MAX_BLOCK];
    const T *restrict v0 = x + ((h0 + i0 * p->dilation_h) * W + w0 + j0 * p->dilation_w) * C;
    for (fc_index c = 0; c < n; c++) m[c] = v0[c];
    for (fc_index i = i0; i < i1; i++)
        for (fc_index j = i == i0 ? j0 + 1 : j0; j < j1; j++) {
            const T *restrict v = x + ((h0 + i * p->dilation_h) * W + w0 + j * p->dilation_w) * C;
            for (fc_index c = 0; c < n; c++) m[c] = FC_MAX_TAKES(v[c], m[c]) ? v[c] : m[c];
        }
    for (fc_index c = 0; c < n; c++) out[c] = m[c];
}

int FC_FN(maxpool2d_nhwc_fwd)(const fc_pool2d_params *p, const T *x, T *y, int64_t *indices,
                              int nthreads) {
    const fc_index C = p->channels, H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index rows = p->planes / C * OH;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, rows);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index t = 0; t < rows; t++) {
        const T *img = x + (t / OH) * H * W * C;
        for (fc_index ow = 0; ow < OW; ow++) {
            T *restrict out = y + (t * OW + ow) * C;
            int64_t *restrict idx = indices ? indices + (t * OW + ow) * C : NULL;
            fc_index h0, i0, i1, w0, j0, j1;
            FC_LOCAL(nhwc_window)(p, t % OH, ow, &h0, &i0, &i1, &w0, &j0, &j1);
            if (i0 >= i1 || j0 >= j1) { /* wholly in the padding */
                for (fc_index c = 0; c < C; c++) out[c] = -(T)INFINITY;
                if (idx)
                    for (fc_index c = 0; c < C; c++) idx[c] = -1;
                continue;
            }
            if (!idx) {
                fc_index c0 = 0;
                for (; c0 + FC_NHWC_MAX_BLOCK <= C; c0 += FC_NHWC_MAX_BLOCK)
                    FC_LOCAL(nhwc_max_fold)(p, img + c0, FC_NHWC_MAX_BLOCK, h0, i0, i1, w0, j0, j1,
                                            out + c0);
                if (c0 < C)
                    FC_LOCAL(nhwc_max_fold)(p, img + c0, C - c0, h0, i0, i1, w0, j0, j1, out + c0);
                continue;
            }
            for (fc_index i = i0; i < i1; i++)
                for (fc_index j = j0; j < j1; j++) {
                    const fc_index at = (h0 + i * p->dilation_h) * W + w0 + j * p->dilation_w;
                    const T *restrict v = img + at * C;
                    if (i == i0 && j == j0) { /* the scan starts at the first element inside */
                        memcpy(out, v, sizeof(T) * (size_t)C);
                        for (fc_index c = 0; c < C; c++) idx[c] = at;
                        continue;
                    }
                    for (fc_index c = 0; c < C; c++) {
                        const int take = FC_MAX_TAKES(v[c], out[c]);
                        out[c] = take ? v[c] : out[c];
                        idx[c] = take ? at : idx[c];
                    }
                }
        }
    }
    return FC_OK;
}

/* Windows that do not overlap along an axis: a window's span (k - 1) d + 1 is at most the stride
 * s. Then at most one covers each input position. */
static inline int FC_LOCAL(nhwc_disjoint)(fc_index k, fc_index d, fc_index s) {
    return (k - 1) * d + 1 <= s;
}

/* With disjoint windows (nhwc_disjoint), the output along one axis (n of them) whose window covers
 * input position `at` (its index plus the leading padding), or -1 for none. */
static inline fc_index FC_LOCAL(nhwc_covering)(fc_index at, fc_index s, fc_index d, fc_index k,
                                               fc_index n) {
    const fc_index o = at / s, i = at % s;
    return at >= 0 && i % d == 0 && i / d < k && o < n ? o : -1;
}

/* One image's max-pool gradient, channels [c0, c1), with disjoint windows, as a gather that
 * writes each value once (no zeroing pass, no read back), vectorised across the channels: input
 * pixel q gets 0 + dY of the window that covers it where that window's index is q, else 0.
 * Where every index lies in its own window this is the scatter's sum, and the count it returns,
 * of the (output, channel) pairs whose index it met, is all of them; an index outside its window
 * (any valid position may be given) or -1 is never met. */
static fc_index FC_LOCAL(nhwc_max_gather)(const fc_pool2d_params *p, const T *g, const int64_t *ix,
                                          T *dst, fc_index c0, fc_index c1) {
    const fc_index C = p->channels, H = p->in_h, W = p->in_w, OW = p->out_w;
    fc_index met = 0;
    for (fc_index ih = 0; ih < H; ih++) {
        const fc_index oh = FC_LOCAL(nhwc_covering)(ih + p->pad_top, p->stride_h, p->dilation_h,
                                                    p->kernel_h, p->out_h);
        for (fc_index iw = 0; iw < W; iw++) {
            const fc_index ow = FC_LOCAL(nhwc_covering)(iw + p->pad_left, p->stride_w,
                                                        p->dilation_w, p->kernel_w, OW);
            T *restrict d = dst + (ih * W + iw) * C;
            if (oh < 0 || ow < 0) {
                for (fc_index c = c0; c < c1; c++) d[c] = 0;
                continue;
            }
            const int64_t at = ih * W + iw;
            const T *restrict gv = g + (oh * OW + ow) * C;
            const int64_t *restrict iv = ix + (oh * OW + ow) * C;
            for (fc_index c = c0; c < c1; c++) {
                const int hit = iv[c] == at;
                d[c] = (T)0 + (hit ? gv[c] : (T)0);
                met += hit;
            }
        }
    }
    return met;
}

/* One image's max-pool gradient, channels [c0, c1), as pool2d_impl.h's scatter: dst = 0, then
 * dst[ix] += dY output by output. Returns nonzero when an index lies outside [-1, HW). */
static int FC_LOCAL(nhwc_max_scatter)(const fc_pool2d_params *p, const T *g, const int64_t *ix,
                                      T *dst, fc_index c0, fc_index c1) {
    const fc_index C = p->channels, HW = p->in_h * p->in_w, OHW = p->out_h * p->out_w;
    int bad = 0;
    FC_LOCAL(nhwc_zero)(dst, HW, C, c0, c1);
    for (fc_index o = 0; o < OHW; o++)
        for (fc_index c = c0; c < c1; c++) {
            /* one unsigned compare: -1 (no input) maps to 0, anything outside to > HW */
            const fc_uindex slot = (fc_uindex)ix[o * C + c] + 1;
            if (slot > (fc_uindex)HW) {
                bad = 1;
                continue;
            }
            if (slot) dst[(fc_index)(slot - 1) * C + c] += g[o * C + c];
        }
    return bad;
}

/* Tasks are (image, block of channels). With disjoint windows each gathers its part of dX
 * (nhwc_max_gather) and scatters instead, over what it wrote, only when some index of the task
 * lies outside its window (or is -1); overlapping windows scatter. */
int FC_FN(maxpool2d_nhwc_bwd)(const fc_pool2d_params *p, const T *gy, const int64_t *indices, T *gx,
                              int nthreads) {
    const fc_index C = p->channels, HW = p->in_h * p->in_w, OHW = p->out_h * p->out_w;
    const fc_index cblocks = FC_LOCAL(nhwc_channel_blocks)(p, nthreads);
    const fc_index ntasks = p->planes / C * cblocks;
    const int gather = FC_LOCAL(nhwc_disjoint)(p->kernel_h, p->dilation_h, p->stride_h) &&
                       FC_LOCAL(nhwc_disjoint)(p->kernel_w, p->dilation_w, p->stride_w);
    const int nt = fc_threads_for(nthreads, (double)p->planes * (HW + OHW), FC_POOL_MIN_WORK,
                                  ntasks);
    int bad = 0;
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt) reduction(| : bad))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index n = t / cblocks, cb = t % cblocks;
        const fc_index c0 = cb * C / cblocks, c1 = (cb + 1) * C / cblocks;
        const T *g = gy + n * OHW * C;
        const int64_t *ix = indices + n * OHW * C;
        T *dst = gx + n * HW * C;
        if (!gather || FC_LOCAL(nhwc_max_gather)(p, g, ix, dst, c0, c1) != OHW * (c1 - c0))
            bad |= FC_LOCAL(nhwc_max_scatter)(p, g, ix, dst, c0, c1);
    }
    return bad ? FC_EINDEX : FC_OK;
}

/* ---- average and L^p pooling ----------------------------------------------------------------- */

/* sum[c] for c in [c0, c1) = sum of f(x) over the window of output (oh, ow) of image img, f(x) =
 * x (norm 0: average pooling), x * x (norm 2) or x^norm; 0 for a window wholly in the padding. */
static void FC_LOCAL(nhwc_window_sum)(const fc_pool2d_params *p, const T *img, fc_index oh,
                                      fc_index ow, double norm, fc_index c0, fc_index c1,
                                      T *restrict sum) {
    const fc_index C = p->channels, W = p->in_w;
    fc_index h0, i0, i1, w0, j0, j1;
    FC_LOCAL(nhwc_window)(p, oh, ow, &h0, &i0, &i1, &w0, &j0, &j1);
    for (fc_index c = c0; c < c1; c++) sum[c] = 0;
    for (fc_index i = i0; i < i1; i++)
        for (fc_index j = j0; j < j1; j++) {
            const T *restrict v = img + ((h0 + i) * W + w0 + j) * C;
            if (norm == 0.0)
                for (fc_index c = c0; c < c1; c++) sum[c] += v[c];
            else if (norm == 2.0)
                for (fc_index c = c0; c < c1; c++) sum[c] += v[c] * v[c];
            else
                for (fc_index c = c0; c < c1; c++) sum[c] += (T)pow((double)v[c], norm);
        }
}

/* The average pool's divisor for output (oh, ow), 0 for a window wholly in the padding. */
static inline T FC_LOCAL(nhwc_avg_divisor)(const fc_pool2d_params *p, fc_index oh, fc_index ow) {
    fc_index ph, ih, pw, iw;
    FC_LOCAL(avg_extent)(oh, p->stride_h, p->pad_top, p->pad_bottom, p->kernel_h, p->in_h, &ph,
                         &ih);
    FC_LOCAL(avg_extent)(ow, p->stride_w, p->pad_left, p->pad_right, p->kernel_w, p->in_w, &pw,
                         &iw);
    if (ih <= 0 || iw <= 0) return 0;
    return (T)(p->divisor_override    ? p->divisor_override
               : p->count_include_pad ? ph * pw
                                      : ih * iw);
}

int FC_FN(avgpool2d_nhwc_fwd)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    const fc_index C = p->channels, HWC = p->in_h * p->in_w * C, OH = p->out_h, OW = p->out_w;
    const fc_index rows = p->planes / C * OH;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, rows);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index t = 0; t < rows; t++)
        for (fc_index ow = 0; ow < OW; ow++) {
            T *restrict out = y + (t * OW + ow) * C;
            FC_LOCAL(nhwc_window_sum)(p, x + (t / OH) * HWC, t % OH, ow, 0.0, 0, C, out);
            const T d = FC_LOCAL(nhwc_avg_divisor)(p, t % OH, ow);
            for (fc_index c = 0; c < C; c++) out[c] = d != 0 ? out[c] / d : (T)0;
        }
    return FC_OK;
}

/* dst (an image's gradient, channels [c0, c1)) += share * f'(x) over the window of output
 * (oh, ow), f'(x) = 1 (norm 0 or 1), x (norm 2) or x^(norm - 1). */
static void FC_LOCAL(nhwc_spread)(const fc_pool2d_params *p, T *dst, const T *img, fc_index oh,
                                  fc_index ow, double norm, const T *restrict share, fc_index c0,
                                  fc_index c1) {
    const fc_index C = p->channels, W = p->in_w;
    fc_index h0, i0, i1, w0, j0, j1;
    FC_LOCAL(nhwc_window)(p, oh, ow, &h0, &i0, &i1, &w0, &j0, &j1);
    for (fc_index i = i0; i < i1; i++)
        for (fc_index j = j0; j < j1; j++) {
            const fc_index at = ((h0 + i) * W + w0 + j) * C;
            T *restrict d = dst + at;
            const T *restrict v = img ? img + at : NULL;
            if (norm == 0.0 || norm == 1.0)
                for (fc_index c = c0; c < c1; c++) d[c] += share[c];
            else if (norm == 2.0)
                for (fc_index c = c0; c < c1; c++) d[c] += share[c] * v[c];
            else
                for (fc_index c = c0; c < c1; c++)
                    d[c] += share[c] * (T)pow((double)v[c], norm - 1.0);
        }
}

int FC_FN(avgpool2d_nhwc_bwd)(const fc_pool2d_params *p, const T *gy, T *gx, int nthreads) {
    const fc_index C = p->channels, HW = p->in_h * p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index cblocks = FC_LOCAL(nhwc_channel_blocks)(p, nthreads);
    const fc_index ntasks = p->planes / C * cblocks;
    const int nt = fc_threads_for(nthreads, (double)p->planes * OH * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, ntasks);
    int failed = 0;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *share = (T *)malloc(sizeof(T) * (size_t)C);
        if (!share) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!share) continue;
            const fc_index n = t / cblocks, cb = t % cblocks;
            const fc_index c0 = cb * C / cblocks, c1 = (cb + 1) * C / cblocks;
            T *dst = gx + n * HW * C;
            FC_LOCAL(nhwc_zero)(dst, HW, C, c0, c1);
            for (fc_index oh = 0; oh < OH; oh++)
                for (fc_index ow = 0; ow < OW; ow++) {
                    const T *g = gy + ((n * OH + oh) * OW + ow) * C;
                    const T d = FC_LOCAL(nhwc_avg_divisor)(p, oh, ow);
                    if (d == 0) continue; /* an empty window: no gradient */
                    for (fc_index c = c0; c < c1; c++) share[c] = g[c] / d;
                    FC_LOCAL(nhwc_spread)(p, dst, NULL, oh, ow, 0.0, share, c0, c1);
                }
        }
        free(share);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

int FC_FN(lppool2d_nhwc_fwd)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    const double norm = p->norm;
    const fc_index C = p->channels, HWC = p->in_h * p->in_w * C, OH = p->out_h, OW = p->out_w;
    const fc_index rows = p->planes / C * OH;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * p->kernel_h * p->kernel_w * 4,
                                  FC_POOL_MIN_WORK, rows);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index t = 0; t < rows; t++)
        for (fc_index ow = 0; ow < OW; ow++) {
            T *restrict out = y + (t * OW + ow) * C;
            FC_LOCAL(nhwc_window_sum)(p, x + (t / OH) * HWC, t % OH, ow, norm, 0, C, out);
            const double scale = FC_LOCAL(lp_scale)(p, t % OH, ow);
            if (norm == 2.0 && scale == 1.0) {
                /* the dtype's own square root: rounding sqrt's double result to float is exact
                 * (double carries over 2*24+2 bits), so sqrtf gives the same answer */
                if (sizeof(T) == sizeof(float))
                    for (fc_index c = 0; c < C; c++) out[c] = (T)sqrtf((float)out[c]);
                else
                    for (fc_index c = 0; c < C; c++) out[c] = (T)sqrt((double)out[c]);
                continue;
            }
            for (fc_index c = 0; c < C; c++) out[c] = FC_LOCAL(lp_finish)(out[c], norm, scale);
        }
    return FC_OK;
}

int FC_FN(lppool2d_nhwc_bwd)(const fc_pool2d_params *p, const T *gy, const T *x, T *gx,
                             int nthreads) {
    const double norm = p->norm;
    const fc_index C = p->channels, H = p->in_h, W = p->in_w, HW = H * W;
    const fc_index OH = p->out_h, OW = p->out_w;
    const fc_index cblocks = FC_LOCAL(nhwc_channel_blocks)(p, nthreads);
    const fc_index ntasks = p->planes / C * cblocks;
    const int nt = fc_threads_for(nthreads,
                                  (double)p->planes * OH * OW * p->kernel_h * p->kernel_w * 8,
                                  FC_POOL_MIN_WORK, ntasks);
    int all_covered = 1;
    for (fc_index ih = 0; ih < H; ih++)
        all_covered &= FC_LOCAL(lp_covered)(ih, p->stride_h, p->kernel_h, p->pad_top, OH);
    for (fc_index iw = 0; iw < W; iw++)
        all_covered &= FC_LOCAL(lp_covered)(iw, p->stride_w, p->kernel_w, p->pad_left, OW);
    int failed = 0;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *coef = (T *)malloc(sizeof(T) * (size_t)C);
        if (!coef) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!coef) continue;
            const fc_index n = t / cblocks, cb = t % cblocks;
            const fc_index c0 = cb * C / cblocks, c1 = (cb + 1) * C / cblocks;
            const T *img = x + n * HW * C;
            T *dst = gx + n * HW * C;
            FC_LOCAL(nhwc_zero)(dst, HW, C, c0, c1);
            if (!all_covered)
                for (fc_index ih = 0; ih < H; ih++)
                    for (fc_index iw = 0; iw < W; iw++)
                        if (!FC_LOCAL(lp_covered)(ih, p->stride_h, p->kernel_h, p->pad_top, OH) ||
                            !FC_LOCAL(lp_covered)(iw, p->stride_w, p->kernel_w, p->pad_left, OW))
                            for (fc_index c = c0; c < c1; c++)
                                dst[(ih * W + iw) * C + c] = FC_LOCAL(lp_uncovered)(
                                    img[(ih * W + iw) * C + c], norm);
            for (fc_index oh = 0; oh < OH; oh++)
                for (fc_index ow = 0; ow < OW; ow++) {
                    const T *g = gy + ((n * OH + oh) * OW + ow) * C;
                    /* coef = gy * c * out^(1-p) from the window's sum */
                    FC_LOCAL(nhwc_window_sum)(p, img, oh, ow, norm, c0, c1, coef);
                    const double scale = FC_LOCAL(lp_scale)(p, oh, ow);
                    if (norm == 2.0 && scale == 1.0) {
                        /* a whole window: g / sqrt(s), vectorised (pool2d_impl.h's rounding) */
                        if (sizeof(T) == sizeof(float)) {
                            for (fc_index c = c0; c < c1; c++) {
                                const float s = (float)coef[c], v = (float)g[c] / sqrtf(s);
                                coef[c] = s == 0 ? (T)0 : (T)v;
                            }
                        } else {
                            for (fc_index c = c0; c < c1; c++) {
                                const double s = (double)coef[c], v = (double)g[c] / sqrt(s);
                                coef[c] = s == 0 ? (T)0 : (T)v;
                            }
                        }
                    } else {
                        for (fc_index c = c0; c < c1; c++)
                            coef[c] = (T)FC_LOCAL(lp_coef)((double)coef[c], (double)g[c], scale,
                                                           norm);
                    }
                    FC_LOCAL(nhwc_spread)(p, dst, img, oh, ow, norm, coef, c0, c1);
                }
        }
        free(coef);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

#undef FC_MAX_TAKES
#undef FC_POOL_MIN_WORK
