/* pool2d_nhwc_impl.h: max, average and L^p pooling on channels-last buffers, x (N, H, W, C) and
 * y (N, OH, OW, C), forward and backward, for one dtype. A kernel file (pool2d_nhwc_<isa>.c)
 * includes its fc_isa_<isa>.h and instantiates this template once per dtype (fc_each_dtype.h).
 *
 * A pixel's C channels are contiguous, so every window operation is element-wise on rows of C:
 * an output pixel folds its window's input rows in PyTorch's row-major scan order, one loop over
 * the channels per tap, which the compiler vectorises for the file's instruction set with no
 * border cases inside it (the window is clipped to the input once per pixel); the forward folds
 * keep a window's running maxima or sums in registers where they can (nhwc_max_window,
 * nhwc_window_sum), and the forward passes prefetch one output row ahead (nhwc_prefetch), which
 * their reads need on Zen 5. Semantics are pool2d_impl.h's, channel by channel: the first
 * maximum, the last NaN, -inf and index -1 for a window wholly in the padding, indices flat
 * h * W + w within each (n, c) plane.
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

/* Software prefetch for the forward passes: output row t (over the batch: image t / OH, row
 * t % OH) asks, at output column ow, for what output row t + 1 will read there: each of its
 * window's rows (inside the image and not read by row t's window) from that window's column w0,
 * the stride_w pixels by which its window moves on per output. That is one output row ahead
 * (kH rows of W C elements, 28 KB at the ResNet stem pool's 56 x 56 x 64 float32): output by
 * output, a window reads kH rows a few hundred bytes at a time, and the hardware prefetchers kept
 * too few lines in flight for those streams on Zen 5, where NHWC max pooling read memory at half
 * the NCHW speed without it (docs/KERNELS.md has the figures). Prefetching never faults; the
 * addresses stay integers (a pointer past the array would be undefined behaviour). */
#define FC_NHWC_PF_ROWS 8 /* rows asked for at most (the first ones of a taller window) */
typedef struct {
    uintptr_t row[FC_NHWC_PF_ROWS]; /* the rows' first pixels */
    int n;
} FC_LOCAL(nhwc_pf);

/* Once per output row t: the rows to ask for (none for the last row). */
static inline void FC_LOCAL(nhwc_prefetch_rows)(const fc_pool2d_params *p, const T *x, fc_index t,
                                                fc_index rows, FC_LOCAL(nhwc_pf) *pf) {
    pf->n = 0;
    if (t + 1 >= rows) return;
    const fc_index C = p->channels, H = p->in_h, W = p->in_w, OH = p->out_h;
    const fc_index oh = t % OH, next = (t + 1) % OH;
    fc_index h0, i0, i1, w0, j0, j1;
    FC_LOCAL(nhwc_window)(p, next, 0, &h0, &i0, &i1, &w0, &j0, &j1);
    /* rows up to `seen` were read by row t's window (none when t + 1 starts an image) */
    const fc_index seen = next == 0 ? -1
                                    : FC_MIN(oh * p->stride_h - p->pad_top +
                                                 (p->kernel_h - 1) * p->dilation_h,
                                             H - 1);
    const uintptr_t img = (uintptr_t)(x + (t + 1) / OH * H * W * C);
    for (fc_index i = i0; i < i1 && pf->n < FC_NHWC_PF_ROWS; i++) {
        const fc_index h = h0 + i * p->dilation_h;
        if (h > seen) pf->row[pf->n++] = img + sizeof(T) * (size_t)(h * W * C);
    }
}

/* At output column ow: the stride_w pixels from the window's first column (clipped to the
 * image's left edge; past the right edge the addresses run on into the next row, or past the
 * array, which a prefetch may). */
static inline void FC_LOCAL(nhwc_prefetch)(const fc_pool2d_params *p, const FC_LOCAL(nhwc_pf) *pf,
                                           fc_index ow) {
    const fc_index C = p->channels;
    const size_t n = sizeof(T) * (size_t)(p->stride_w * C);
    const size_t at = sizeof(T) * (size_t)(FC_MAX(ow * p->stride_w - p->pad_left, 0) * C);
    for (int r = 0; r < pf->n; r++) {
        const uintptr_t a = pf->row[r] + at;
#if defined(__GNUC__) || defined(__clang__)
        for (size_t b = 0; b < n; b += 64) __builtin_prefetch((const void *)(a + b), 0, 3);
#else
        (void)a, (void)n;
#endif
    }
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

/* Channels a max-pool window is folded for at a time, without indices, where the vector folds
 * below are not built (and for C below one vector). */
#define FC_NHWC_MAX_BLOCK 64

/* out[c] for c < n = the maximum of channel c over the window's taps inside (rows h0 + i dH, i in
 * [i0, i1), columns w0 + j dW, j in [j0, j1); x: the image's first pixel plus the first channel),
 * folded in scan order from the first tap. */
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

/* The window folds keep their running maxima (sums) in registers, FC_NHWC_NV vectors of
 * FC_NHWC_VL channels over the whole window, and store them once. Written as plain loops over an
 * array of C, gcc kept that array on the stack and stored and reloaded it at every tap (a
 * store-forwarding chain through memory per tap and vector): NHWC max pooling ran at half the
 * NCHW speed on Zen 5. GNU vector extensions give every ISA of a file the same code (two ymm per
 * vector on AVX2). A row of C that is not a whole number of vectors ends with one vector placed
 * to end at channel C, overlapping the one before it (the same values written twice) rather than
 * a masked or scalar tail; C below one vector takes the plain loops. */
#if defined(__GNUC__) || defined(__clang__)
#define FC_NHWC_VEC 1
#define FC_NHWC_VL ((fc_index)(64 / sizeof(T))) /* channels per vector: 64 bytes */
#define FC_NHWC_MAX_TAPS 64 /* windows of more taps inside take the plain loops */
typedef T FC_LOCAL(nvec) __attribute__((vector_size(64)));
typedef __typeof__((FC_LOCAL(nvec)){0} > (FC_LOCAL(nvec)){0}) FC_LOCAL(nmask);

/* The pointers to a window's taps inside, in scan order (at most kH * kW of them). */
static inline int FC_LOCAL(nhwc_taps)(const fc_pool2d_params *p, const T *img, fc_index h0,
                                      fc_index i0, fc_index i1, fc_index w0, fc_index j0,
                                      fc_index j1, const T **taps, int64_t *at) {
    const fc_index C = p->channels, W = p->in_w;
    int n = 0;
    for (fc_index i = i0; i < i1; i++)
        for (fc_index j = j0; j < j1; j++) {
            const fc_index q = (h0 + i * p->dilation_h) * W + w0 + j * p->dilation_w;
            if (at) at[n] = q;
            taps[n++] = img + q * C;
        }
    return n;
}

/* m = v where v takes (PyTorch's rule, FC_MAX_TAKES: v > m or v is NaN), else m; x: the tap's
 * channels. A macro: a function passing 64-byte vectors draws gcc's ABI warning in the AVX2 and
 * scalar files. */
#define FC_NHWC_MAX_STEP(m, x)                                                                     \
    do {                                                                                           \
        FC_LOCAL(nvec) v_;                                                                         \
        memcpy(&v_, (x), sizeof v_);                                                               \
        const FC_LOCAL(nmask) take_ = (v_ > (m)) | (v_ != v_);                                     \
        (m) = (FC_LOCAL(nvec))((take_ & (FC_LOCAL(nmask))v_) | (~take_ & (FC_LOCAL(nmask))(m)));   \
    } while (0)

/* out[c0 + c], c < 4 VL = the maximum over the ntaps taps (channel offset c0) in scan order. */
static inline void FC_LOCAL(nhwc_max_vec4)(const T *const *taps, int ntaps, fc_index c0,
                                           T *restrict out) {
    FC_LOCAL(nvec) m0, m1, m2, m3;
    const T *x = taps[0] + c0;
    memcpy(&m0, x, sizeof m0);
    memcpy(&m1, x + FC_NHWC_VL, sizeof m1);
    memcpy(&m2, x + 2 * FC_NHWC_VL, sizeof m2);
    memcpy(&m3, x + 3 * FC_NHWC_VL, sizeof m3);
    for (int t = 1; t < ntaps; t++) {
        x = taps[t] + c0;
        FC_NHWC_MAX_STEP(m0, x);
        FC_NHWC_MAX_STEP(m1, x + FC_NHWC_VL);
        FC_NHWC_MAX_STEP(m2, x + 2 * FC_NHWC_VL);
        FC_NHWC_MAX_STEP(m3, x + 3 * FC_NHWC_VL);
    }
    memcpy(out + c0, &m0, sizeof m0);
    memcpy(out + c0 + FC_NHWC_VL, &m1, sizeof m1);
    memcpy(out + c0 + 2 * FC_NHWC_VL, &m2, sizeof m2);
    memcpy(out + c0 + 3 * FC_NHWC_VL, &m3, sizeof m3);
}

/* The same for one vector, out[c0 + c], c < VL. */
static inline void FC_LOCAL(nhwc_max_vec1)(const T *const *taps, int ntaps, fc_index c0,
                                           T *restrict out) {
    FC_LOCAL(nvec) m0;
    memcpy(&m0, taps[0] + c0, sizeof m0);
    for (int t = 1; t < ntaps; t++) FC_NHWC_MAX_STEP(m0, taps[t] + c0);
    memcpy(out + c0, &m0, sizeof m0);
}
#undef FC_NHWC_MAX_STEP

/* With indices: out[c0 + c], c < VL, as nhwc_max_vec1, and idx[c0 + c] = the flat position
 * (at[t]) of the tap taken last, the first tap's to begin with (int64 lanes, VL of them). */
typedef int64_t FC_LOCAL(ivec) __attribute__((vector_size(64 / sizeof(T) * sizeof(int64_t))));
static inline void FC_LOCAL(nhwc_max_index_vec1)(const T *const *taps, const int64_t *at, int ntaps,
                                                 fc_index c0, T *restrict out,
                                                 int64_t *restrict idx) {
    FC_LOCAL(nvec) m0;
    memcpy(&m0, taps[0] + c0, sizeof m0);
    FC_LOCAL(ivec) k0 = (FC_LOCAL(ivec)){0} + at[0];
    for (int t = 1; t < ntaps; t++) {
        FC_LOCAL(nvec) v;
        memcpy(&v, taps[t] + c0, sizeof v);
        const FC_LOCAL(nmask) take = (v > m0) | (v != v);
        m0 = (FC_LOCAL(nvec))((take & (FC_LOCAL(nmask))v) | (~take & (FC_LOCAL(nmask))m0));
        const FC_LOCAL(ivec) tk = __builtin_convertvector(take, FC_LOCAL(ivec));
        k0 = (tk & ((FC_LOCAL(ivec)){0} + at[t])) | (~tk & k0);
    }
    memcpy(out + c0, &m0, sizeof m0);
    memcpy(idx + c0, &k0, sizeof k0);
}

/* sum[c0 + c], c < 4 VL = 0 + f(x) over the taps in scan order, f(x) = x, or x * x with sq. */
#define FC_NHWC_SUM_STEP(s, x, sq)                                                                 \
    do {                                                                                           \
        FC_LOCAL(nvec) v_;                                                                         \
        memcpy(&v_, (x), sizeof v_);                                                               \
        (s) += (sq) ? v_ * v_ : v_;                                                                \
    } while (0)
static inline void FC_LOCAL(nhwc_sum_vec4)(const T *const *taps, int ntaps, fc_index c0, int sq,
                                           T *restrict sum) {
    FC_LOCAL(nvec) s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int t = 0; t < ntaps; t++) {
        const T *x = taps[t] + c0;
        FC_NHWC_SUM_STEP(s0, x, sq);
        FC_NHWC_SUM_STEP(s1, x + FC_NHWC_VL, sq);
        FC_NHWC_SUM_STEP(s2, x + 2 * FC_NHWC_VL, sq);
        FC_NHWC_SUM_STEP(s3, x + 3 * FC_NHWC_VL, sq);
    }
    memcpy(sum + c0, &s0, sizeof s0);
    memcpy(sum + c0 + FC_NHWC_VL, &s1, sizeof s1);
    memcpy(sum + c0 + 2 * FC_NHWC_VL, &s2, sizeof s2);
    memcpy(sum + c0 + 3 * FC_NHWC_VL, &s3, sizeof s3);
}

static inline void FC_LOCAL(nhwc_sum_vec1)(const T *const *taps, int ntaps, fc_index c0, int sq,
                                           T *restrict sum) {
    FC_LOCAL(nvec) s0 = {0};
    for (int t = 0; t < ntaps; t++) FC_NHWC_SUM_STEP(s0, taps[t] + c0, sq);
    memcpy(sum + c0, &s0, sizeof s0);
}
#undef FC_NHWC_SUM_STEP
#endif

/* The window's maximum over channels [0, C) into out (the window has a tap inside). */
static inline void FC_LOCAL(nhwc_max_window)(const fc_pool2d_params *p, const T *img, fc_index h0,
                                             fc_index i0, fc_index i1, fc_index w0, fc_index j0,
                                             fc_index j1, T *restrict out) {
    const fc_index C = p->channels;
#ifdef FC_NHWC_VEC
    if (C >= FC_NHWC_VL && (i1 - i0) * (j1 - j0) <= FC_NHWC_MAX_TAPS) {
        const T *taps[FC_NHWC_MAX_TAPS];
        const int n = FC_LOCAL(nhwc_taps)(p, img, h0, i0, i1, w0, j0, j1, taps, NULL);
        fc_index c0 = 0;
        for (; c0 + 4 * FC_NHWC_VL <= C; c0 += 4 * FC_NHWC_VL)
            FC_LOCAL(nhwc_max_vec4)(taps, n, c0, out);
        for (; c0 + FC_NHWC_VL <= C; c0 += FC_NHWC_VL) FC_LOCAL(nhwc_max_vec1)(taps, n, c0, out);
        if (c0 < C) FC_LOCAL(nhwc_max_vec1)(taps, n, C - FC_NHWC_VL, out);
        return;
    }
#endif
    fc_index c0 = 0;
    for (; c0 + FC_NHWC_MAX_BLOCK <= C; c0 += FC_NHWC_MAX_BLOCK)
        FC_LOCAL(nhwc_max_fold)(p, img + c0, FC_NHWC_MAX_BLOCK, h0, i0, i1, w0, j0, j1, out + c0);
    if (c0 < C) FC_LOCAL(nhwc_max_fold)(p, img + c0, C - c0, h0, i0, i1, w0, j0, j1, out + c0);
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
        FC_LOCAL(nhwc_pf) pf;
        FC_LOCAL(nhwc_prefetch_rows)(p, x, t, rows, &pf);
        for (fc_index ow = 0; ow < OW; ow++) {
            T *restrict out = y + (t * OW + ow) * C;
            int64_t *restrict idx = indices ? indices + (t * OW + ow) * C : NULL;
            fc_index h0, i0, i1, w0, j0, j1;
            FC_LOCAL(nhwc_window)(p, t % OH, ow, &h0, &i0, &i1, &w0, &j0, &j1);
            FC_LOCAL(nhwc_prefetch)(p, &pf, ow);
            if (i0 >= i1 || j0 >= j1) { /* wholly in the padding */
                for (fc_index c = 0; c < C; c++) out[c] = -(T)INFINITY;
                if (idx)
                    for (fc_index c = 0; c < C; c++) idx[c] = -1;
                continue;
            }
            if (!idx) {
                FC_LOCAL(nhwc_max_window)(p, img, h0, i0, i1, w0, j0, j1, out);
                continue;
            }
#ifdef FC_NHWC_VEC
            if (C >= FC_NHWC_VL && (i1 - i0) * (j1 - j0) <= FC_NHWC_MAX_TAPS) {
                const T *taps[FC_NHWC_MAX_TAPS];
                int64_t at[FC_NHWC_MAX_TAPS];
                const int n = FC_LOCAL(nhwc_taps)(p, img, h0, i0, i1, w0, j0, j1, taps, at);
                fc_index c0 = 0;
                for (; c0 + FC_NHWC_VL <= C; c0 += FC_NHWC_VL)
                    FC_LOCAL(nhwc_max_index_vec1)(taps, at, n, c0, out, idx);
                if (c0 < C) FC_LOCAL(nhwc_max_index_vec1)(taps, at, n, C - FC_NHWC_VL, out, idx);
                continue;
            }
#endif
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
    const fc_index C = p->channels, H = p->in_h, W = p->in_w, OW = p->out_w, OHW = p->out_h * OW;
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
            /* software prefetch of dY and the indices, as nhwc_max_scatter's */
            fc_prefetch_ahead(gv + c0, sizeof(T) * (size_t)(c1 - c0), g + OHW * C);
            fc_prefetch_ahead(iv + c0, sizeof(int64_t) * (size_t)(c1 - c0), ix + OHW * C);
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
    for (fc_index o = 0; o < OHW; o++) {
        /* software prefetch (fc_prefetch_ahead) of dY and the indices, 4 KB ahead of the reads:
         * without it the hardware prefetchers of Zen 5 left the 3x3s2p1 backward at 0.93x the
         * NCHW speed at 1 thread, 1.26-1.36x with it */
        fc_prefetch_ahead(g + o * C + c0, sizeof(T) * (size_t)(c1 - c0), g + OHW * C);
        fc_prefetch_ahead(ix + o * C + c0, sizeof(int64_t) * (size_t)(c1 - c0), ix + OHW * C);
        for (fc_index c = c0; c < c1; c++) {
            /* one unsigned compare: -1 (no input) maps to 0, anything outside to > HW */
            const fc_uindex slot = (fc_uindex)ix[o * C + c] + 1;
            if (slot > (fc_uindex)HW) {
                bad = 1;
                continue;
            }
            if (slot) dst[(fc_index)(slot - 1) * C + c] += g[o * C + c];
        }
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
#ifdef FC_NHWC_VEC
    if ((norm == 0.0 || norm == 2.0) && c1 - c0 >= FC_NHWC_VL &&
        FC_MAX(i1 - i0, 0) * FC_MAX(j1 - j0, 0) <= FC_NHWC_MAX_TAPS) {
        const T *taps[FC_NHWC_MAX_TAPS];
        const int n = i0 < i1 && j0 < j1
                          ? FC_LOCAL(nhwc_taps)(p, img, h0, i0, i1, w0, j0, j1, taps, NULL)
                          : 0;
        const int sq = norm == 2.0;
        fc_index c = c0;
        for (; c + 4 * FC_NHWC_VL <= c1; c += 4 * FC_NHWC_VL)
            FC_LOCAL(nhwc_sum_vec4)(taps, n, c, sq, sum);
        for (; c + FC_NHWC_VL <= c1; c += FC_NHWC_VL) FC_LOCAL(nhwc_sum_vec1)(taps, n, c, sq, sum);
        if (c < c1) FC_LOCAL(nhwc_sum_vec1)(taps, n, c1 - FC_NHWC_VL, sq, sum);
        return;
    }
#endif
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
    for (fc_index t = 0; t < rows; t++) {
        FC_LOCAL(nhwc_pf) pf;
        FC_LOCAL(nhwc_prefetch_rows)(p, x, t, rows, &pf);
        for (fc_index ow = 0; ow < OW; ow++) {
            T *restrict out = y + (t * OW + ow) * C;
            FC_LOCAL(nhwc_prefetch)(p, &pf, ow);
            FC_LOCAL(nhwc_window_sum)(p, x + (t / OH) * HWC, t % OH, ow, 0.0, 0, C, out);
            const T d = FC_LOCAL(nhwc_avg_divisor)(p, t % OH, ow);
            for (fc_index c = 0; c < C; c++) out[c] = d != 0 ? out[c] / d : (T)0;
        }
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
    for (fc_index t = 0; t < rows; t++) {
        FC_LOCAL(nhwc_pf) pf;
        FC_LOCAL(nhwc_prefetch_rows)(p, x, t, rows, &pf);
        for (fc_index ow = 0; ow < OW; ow++) {
            T *restrict out = y + (t * OW + ow) * C;
            FC_LOCAL(nhwc_prefetch)(p, &pf, ow);
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
