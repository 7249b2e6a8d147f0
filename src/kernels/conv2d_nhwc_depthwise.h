/* conv2d_nhwc_depthwise.h: the channels-last channelwise passes, for m = C/groups = K/groups
 * channels per group (m = 1: depthwise; small m: grouped layers such as ResNeXt's), vectorised
 * across all the channels, which channels last are contiguous (XNNPACK's dwconv is the model).
 * Each output row of C channels is a sum over the taps that reach it of products of two rows of C
 * channels, read in place; the dwconv_nhwc microkernel (conv2d_nhwc_ukernel.h) takes one pointer
 * per term and operand. Within a group every channel meets every other: lane j of a term reads the
 * other operand at j + shift, for the 2m - 1 shifts 0, +-1, ..., +-(m - 1), with the weights
 * packed per (tap, shift) as [kH * kW][2m - 1][C] and zero where j + shift leaves j's group
 * (m - 1 of every m lanes' reads are wasted on average: worth it while the GEMMs' tiles would be
 * emptier still). The first and the last pixel of an operand are read from zero-padded copies
 * when shifts reach past them. Groups of four (m = 4) instead read each row once and rotate it
 * within each group of four lanes in registers (the gconv4 microkernels, weights
 * [kH * kW][4][C]): no lane wasted, nothing read from another group.
 *
 *   forward          y[n, oh, ow] = bias + sum over taps inside x of x[n, ih, iw] w[tap]; tasks
 *                    are output rows (image, oh), in chunks taken as threads come free, each
 *                    asking for the next row's new input row as it goes (memory-bound: the
 *                    hardware prefetchers alone keep too few lines in flight). The taps in the
 *                    padding are left out, which the definition multiplies by zero, and shifted
 *                    (m > 1, not 4) zero weights meet other groups' inputs: FC_NONFINITE when w
 *                    (or, shifted, x) holds an Inf or a NaN (the plan's fallback is the direct
 *                    pass).
 *   input gradient   dX[n, ih, iw] = bias + sum over (tap, output pixel) with ih = oh sH - pad_top
 *                    + i dH (and the same along W) of dY[n, oh, ow] w[tap]: the transposed
 *                    convolution as a gather, any stride (the taps whose phase misses a pixel are
 *                    skipped); tasks are input rows. Only real output positions are multiplied,
 *                    as in the definition; shifted, FC_NONFINITE when dY holds an Inf or a NaN
 *                    (zero weights meet other groups' dY; the fallback is col2im).
 *   weight gradient  dW[tap] = sum over every output pixel whose tap lies inside x of x[n, ih, iw]
 *                    dY[n, oh, ow]; tasks are fixed chunks of the N * OH output rows, each summing
 *                    into a private [kH * kW][2m - 1][C], added in chunk order at the end
 *                    (bit-identical for any thread count; the lanes whose shift leaves the group
 *                    are dropped); depthwise, each dY pixel of a row is read once for all the
 *                    taps (the dwconv_dot_nhwc microkernel, up to nine per pass). Padding taps
 *                    are left out: FC_NONFINITE when a dY pixel with a tap in the padding holds
 *                    an Inf or a NaN, checked as the rows are summed (the fallback is the direct
 *                    pass); chunks go to threads as they come free. */
#ifndef FC_CONV2D_NHWC_DEPTHWISE_H
#define FC_CONV2D_NHWC_DEPTHWISE_H

#include "conv2d_nhwc_ukernel.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "conv2d_weights.h"
#include "fc_template.h"

/* Shift s of S = 2m - 1 (m = C/groups = K/groups): lane j meets the other operand's element j +
 * shift, 0, then 1, 1 - m, 2, 2 - m, ..., m - 1, -1: every pair of channels of one group once. */
static inline fc_index FC_LOCAL(nhwc_dw_shift)(fc_index s, fc_index m) {
    return s == 0 ? 0 : s % 2 ? (s + 1) / 2 : s / 2 - m;
}

/* Groups of four (m = 4) are read once per term and rotated within each group of four lanes in
 * registers (the gconv4 microkernels): four partners per lane, none wasted, nothing read outside
 * the group. */
static inline int FC_LOCAL(nhwc_dw_rotates)(fc_index m) { return m == 4; }

/* The weight rows per tap: the rotations or the shifts. */
static inline fc_index FC_LOCAL(nhwc_dw_rows)(fc_index m) {
    return FC_LOCAL(nhwc_dw_rotates)(m) ? 4 : 2 * m - 1;
}

/* The channel of its group that lane u (of m) meets in row s of a tap's weights (outside [0, m):
 * none, a shifted read's lane that leaves the group). */
static inline fc_index FC_LOCAL(nhwc_dw_partner)(fc_index s, fc_index u, fc_index m) {
    return FC_LOCAL(nhwc_dw_rotates)(m) ? (u + s) % 4 : u + FC_LOCAL(nhwc_dw_shift)(s, m);
}

/* dst[(t * R + s) * C + j] = the weight lane j meets in row s of tap t (R rows: nhwc_dw_rows):
 * lane j is output channel j (forward, its partner the input channel nhwc_dw_partner gives) or
 * input channel j (`transposed`, the input gradient: its partner an output channel); zero where
 * the partner lies outside j's group. Either weight layout. */
static void FC_LOCAL(nhwc_dw_pack)(const fc_conv2d_params *p, const T *w, int transposed, T *dst) {
    const fc_index C = p->in_channels, m = C / p->groups, S = FC_LOCAL(nhwc_dw_rows)(m);
    const fc_index kk = p->kernel_h * p->kernel_w;
    const fc_weight_layout ws = fc_weight_layout_of(p);
    for (fc_index t = 0; t < kk; t++)
        for (fc_index s = 0; s < S; s++)
            for (fc_index j = 0; j < C; j++, dst++) {
                const fc_index u = j % m, q = FC_LOCAL(nhwc_dw_partner)(s, u, m);
                const fc_index k = transposed ? j - u + q : j, c = transposed ? u : q;
                *dst = q < 0 || q >= m ? (T)0
                                       : w[k * ws.k_stride + c * ws.c_stride + t * ws.tap_stride];
            }
}

/* Where the shifted terms read pixel `pix` of an operand of npix pixels of C channels: in place,
 * except the first and the last pixel when the shifts reach past them (m > 1), read in `edges`,
 * two rows of C + 2 (m - 1) holding a copy of each with m - 1 zeros either side (the lanes that
 * read there have zero weights or are dropped). */
static inline const T *FC_LOCAL(nhwc_dw_row)(const T *a, fc_index pix, fc_index npix, fc_index C,
                                             fc_index m, const T *edges) {
    if (m > 1 && pix == 0) return edges + (m - 1);
    if (m > 1 && pix == npix - 1) return edges + (C + 2 * (m - 1)) + (m - 1);
    return a + pix * C;
}

/* The two rows of nhwc_dw_row's edges for an operand of npix > 0 pixels (NULL on failure). */
static T *FC_LOCAL(nhwc_dw_edges)(const T *a, fc_index npix, fc_index C, fc_index m) {
    const fc_index len = C + 2 * (m - 1);
    T *edges = (T *)calloc((size_t)(2 * len), sizeof(T));
    if (!edges || npix == 0) return edges;
    memcpy(edges + (m - 1), a, sizeof(T) * (size_t)C);
    memcpy(edges + len + (m - 1), a + (npix - 1) * C, sizeof(T) * (size_t)C);
    return edges;
}

/* The first tap index i (of n, spaced d) whose position o + i d lies in [0, size), and one past
 * the last: the taps of one output position inside the input. */
static inline void FC_LOCAL(nhwc_dw_taps)(fc_index o, fc_index d, fc_index n, fc_index size,
                                          fc_index *lo, fc_index *hi) {
    fc_index i0 = o >= 0 ? 0 : FC_CEIL_DIV(-o, d);
    fc_index i1 = o >= size ? 0 : FC_MIN(n, (size - 1 - o) / d + 1);
    *lo = i0;
    *hi = FC_MAX(i0, i1);
}

/* The input row output row r reads last (its last kernel row inside the input), NULL when r is
 * past the end or reads no row: row r - 1 asks the caches for it as it goes, which keeps more
 * of its lines in flight than the hardware prefetchers do (fc_internal.h). */
static inline const T *FC_LOCAL(nhwc_dw_next_row)(const fc_conv2d_params *p, const T *x,
                                                  fc_index r) {
    const fc_index OH = p->out_h;
    if (r >= p->batch * OH) return NULL;
    const fc_index ih0 = r % OH * p->stride_h - p->pad_top;
    fc_index i0, i1;
    FC_LOCAL(nhwc_dw_taps)(ih0, p->dilation_h, p->kernel_h, p->in_h, &i0, &i1);
    if (i1 <= i0) return NULL;
    return x + ((r / OH) * p->in_h + ih0 + (i1 - 1) * p->dilation_h) * p->in_w * p->in_channels;
}

static int FC_LOCAL(conv2d_nhwc_fwd_depthwise)(const fc_conv2d_params *p, const fc_tuning *tn,
                                               const T *x, const T *w, const T *bias, T *y,
                                               int nthreads) {
    const fc_index C = p->in_channels, H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, kk = kh * kw, rows = p->batch * OH;
    const fc_index m = C / p->groups, S = FC_LOCAL(nhwc_dw_rows)(m), npix = p->batch * H * W;
    const int rotates = FC_LOCAL(nhwc_dw_rotates)(m);
    if (!FC_LOCAL(all_finite)(tn, w, C * m * kk, nthreads) ||
        (m > 1 && !rotates && !FC_LOCAL(all_finite)(tn, x, npix * C, nthreads)))
        return FC_NONFINITE;
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kk * S * C));
    T *edges = FC_LOCAL(nhwc_dw_edges)(x, npix, C, m);
    if (!wp || !edges) {
        fc_aligned_free(wp);
        free(edges);
        return FC_ENOMEM;
    }
    FC_LOCAL(nhwc_dw_pack)(p, w, 0, wp);
    /* the next row's new input row asked for a slice per output pixel; rows in chunks of
     * about 1/32 of a thread's share, taken as threads come free */
    const fc_index slice = FC_CEIL_DIV(W * C, FC_MAX(OW, 1));
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * m * kk, tn->conv_min_work,
                                  rows);
    const fc_index grain = FC_MAX(1, rows / (32 * nt));
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(2 * kk * S));
        const T **b = a ? a + kk * S : NULL;
        if (!a) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, grain))
        for (fc_index r = 0; r < rows; r++) {
            if (!a) continue;
            const fc_index n = r / OH, oh = r % OH, ih0 = oh * p->stride_h - p->pad_top;
            fc_index i0, i1;
            FC_LOCAL(nhwc_dw_taps)(ih0, p->dilation_h, kh, H, &i0, &i1);
            const T *next = FC_LOCAL(nhwc_dw_next_row)(p, x, r + 1);
            for (fc_index ow = 0; ow < OW; ow++) {
                if (next && ow * slice < W * C)
                    fc_prefetch(next + ow * slice,
                                sizeof(T) * (size_t)FC_MIN(slice, W * C - ow * slice));
                const fc_index iw0 = ow * p->stride_w - p->pad_left;
                fc_index j0, j1, ne = 0;
                FC_LOCAL(nhwc_dw_taps)(iw0, p->dilation_w, kw, W, &j0, &j1);
                for (fc_index i = i0; i < i1; i++)
                    for (fc_index j = j0; j < j1; j++) {
                        const fc_index ih = ih0 + i * p->dilation_h, iw = iw0 + j * p->dilation_w;
                        const fc_index pix = (n * H + ih) * W + iw, t = i * kw + j;
                        if (rotates) {
                            a[ne] = x + pix * C;
                            b[ne++] = wp + t * S * C;
                            continue;
                        }
                        const T *row = FC_LOCAL(nhwc_dw_row)(x, pix, npix, C, m, edges);
                        for (fc_index sh = 0; sh < S; sh++, ne++) {
                            a[ne] = row + FC_LOCAL(nhwc_dw_shift)(sh, m);
                            b[ne] = wp + (t * S + sh) * C;
                        }
                    }
                T *out = y + (r * OW + ow) * C;
                if (rotates)
                    FC_NR_NAME(gconv4_nhwc_ukernel)(C, ne, a, b, out, 0, bias);
                else
                    FC_NR_NAME(dwconv_nhwc_ukernel)(C, ne, a, b, out, 0, bias);
            }
        }
        free(a);
    }
    fc_aligned_free(wp);
    free(edges);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The taps (of n, spaced d, stride s) that reach input position `at` (its index plus the leading
 * padding) from an output position o = (at - i d) / s in [0, size): a[count] = o, t[count] = i. */
static fc_index FC_LOCAL(nhwc_dw_sources)(fc_index at, fc_index d, fc_index s, fc_index n,
                                          fc_index size, fc_index *o, fc_index *t) {
    fc_index count = 0;
    for (fc_index i = 0; i < n; i++) {
        const fc_index from = at - i * d;
        if (from < 0) break;
        if (from % s || from / s >= size) continue;
        o[count] = from / s;
        t[count++] = i;
    }
    return count;
}

/* One input pixel (n, ih, iw) of a gather and its sources: the output rows oh[u] through tap row
 * ti[u], u < nh, and the output columns ow[v] through tap column tj[v], v < nw, that reach it;
 * a and b: the calling thread's room for the terms' two operand pointers. */
typedef struct {
    fc_index n, ih, iw, nh, nw;
    const fc_index *oh, *ti, *ow, *tj;
    const T **a, **b;
} FC_LOCAL(nhwc_sources);

typedef void (*FC_LOCAL(nhwc_gather_fn))(const void *ctx, const FC_LOCAL(nhwc_sources) *src);

/* The input-gradient gathers' walk: fn(ctx, sources) for every input pixel, on nt threads, each
 * with its own index scratch and room for `terms` pointers per operand. Tasks are input rows, in
 * chunks taken as threads come free (each pixel computed by one thread in one order, whatever
 * the thread count); FC_ENOMEM when a thread's scratch cannot be had. */
static int FC_LOCAL(nhwc_gather)(const fc_conv2d_params *p, int nt, fc_index terms,
                                 FC_LOCAL(nhwc_gather_fn) fn, const void *ctx) {
    const fc_index H = p->in_h, W = p->in_w, kh = p->kernel_h, kw = p->kernel_w;
    const fc_index rows = p->batch * H, grain = FC_MAX(1, rows / (32 * nt));
    int failed = 0;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(2 * terms));
        fc_index *at = (fc_index *)malloc(sizeof(*at) * (size_t)(2 * (kh + kw)));
        if (!a || !at) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, grain))
        for (fc_index r = 0; r < rows; r++) {
            if (!a || !at) continue;
            fc_index *oh = at, *ti = at + kh, *ow = at + 2 * kh, *tj = at + 2 * kh + kw;
            FC_LOCAL(nhwc_sources)
            src = {.n = r / H,
                   .ih = r % H,
                   .oh = oh,
                   .ti = ti,
                   .ow = ow,
                   .tj = tj,
                   .a = a,
                   .b = a + terms};
            src.nh = FC_LOCAL(nhwc_dw_sources)(src.ih + p->pad_top, p->dilation_h, p->stride_h, kh,
                                               p->out_h, oh, ti);
            for (fc_index iw = 0; iw < W; iw++) {
                src.iw = iw;
                src.nw = FC_LOCAL(nhwc_dw_sources)(iw + p->pad_left, p->dilation_w, p->stride_w, kw,
                                                   p->out_w, ow, tj);
                fn(ctx, &src);
            }
        }
        free(a);
        free(at);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

typedef struct {
    const fc_conv2d_params *p;
    const T *gy, *wp, *edges, *bias;
    T *gx;
} FC_LOCAL(nhwc_dw_gather_ctx);

/* One input pixel of the channelwise input gradient: a term per (source, shift). */
static void FC_LOCAL(nhwc_dw_gather_pixel)(const void *ctx, const FC_LOCAL(nhwc_sources) *src) {
    const FC_LOCAL(nhwc_dw_gather_ctx) *c = (const FC_LOCAL(nhwc_dw_gather_ctx) *)ctx;
    const fc_conv2d_params *p = c->p;
    const fc_index C = p->in_channels, m = C / p->groups, S = FC_LOCAL(nhwc_dw_rows)(m);
    const fc_index OH = p->out_h, OW = p->out_w, npix = p->batch * OH * OW, kw = p->kernel_w;
    const int rotates = FC_LOCAL(nhwc_dw_rotates)(m);
    fc_index ne = 0;
    for (fc_index u = 0; u < src->nh; u++)
        for (fc_index v = 0; v < src->nw; v++) {
            const fc_index pix = (src->n * OH + src->oh[u]) * OW + src->ow[v];
            const fc_index t = src->ti[u] * kw + src->tj[v];
            if (rotates) {
                src->a[ne] = c->gy + pix * C;
                src->b[ne++] = c->wp + t * S * C;
                continue;
            }
            const T *row = FC_LOCAL(nhwc_dw_row)(c->gy, pix, npix, C, m, c->edges);
            for (fc_index sh = 0; sh < S; sh++, ne++) {
                src->a[ne] = row + FC_LOCAL(nhwc_dw_shift)(sh, m);
                src->b[ne] = c->wp + (t * S + sh) * C;
            }
        }
    T *out = c->gx + ((src->n * p->in_h + src->ih) * p->in_w + src->iw) * C;
    if (rotates)
        FC_NR_NAME(gconv4_nhwc_ukernel)(C, ne, src->a, src->b, out, 0, c->bias);
    else
        FC_NR_NAME(dwconv_nhwc_ukernel)(C, ne, src->a, src->b, out, 0, c->bias);
}

static int FC_LOCAL(conv2d_nhwc_bwd_input_depthwise)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                     const T *gy, const T *w, const T *bias, T *gx,
                                                     int nthreads) {
    const fc_index C = p->in_channels, kk = p->kernel_h * p->kernel_w;
    const fc_index m = C / p->groups, S = FC_LOCAL(nhwc_dw_rows)(m);
    const fc_index npix = p->batch * p->out_h * p->out_w;
    if (m > 1 && !FC_LOCAL(nhwc_dw_rotates)(m) && !FC_LOCAL(all_finite)(tn, gy, npix * C, nthreads))
        return FC_NONFINITE;
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kk * S * C));
    T *edges = FC_LOCAL(nhwc_dw_edges)(gy, npix, C, m);
    int rc = FC_ENOMEM;
    if (wp && edges) {
        FC_LOCAL(nhwc_dw_pack)(p, w, 1, wp);
        const FC_LOCAL(nhwc_dw_gather_ctx) ctx = {p, gy, wp, edges, bias, gx};
        const int nt = fc_threads_for(nthreads, (double)npix * C * m * kk, tn->conv_min_work,
                                      p->batch * p->in_h);
        rc = FC_LOCAL(nhwc_gather)(p, nt, kk * S, FC_LOCAL(nhwc_dw_gather_pixel), &ctx);
    }
    fc_aligned_free(wp);
    free(edges);
    return rc;
}

/* The output pixels [*lo, *hi) whose tap column j lies inside the input row. */
static inline void FC_LOCAL(nhwc_dw_tap_run)(const fc_conv2d_params *p, fc_index j, fc_index *lo,
                                             fc_index *hi) {
    const fc_index off = j * p->dilation_w - p->pad_left, W = p->in_w, sw = p->stride_w;
    *lo = off >= 0 ? 0 : FC_CEIL_DIV(-off, sw);
    *hi = FC_MAX(*lo, off >= W ? 0 : FC_MIN(p->out_w, (W - 1 - off) / sw + 1));
}

/* The output columns [*lo, *hi) whose every tap column lies inside the input row (empty when
 * no column's does). */
static inline void FC_LOCAL(nhwc_dw_inner_cols)(const fc_conv2d_params *p, fc_index *lo,
                                                fc_index *hi) {
    *lo = 0;
    *hi = p->out_w;
    for (fc_index j = 0; j < p->kernel_w; j++) {
        fc_index a, b;
        FC_LOCAL(nhwc_dw_tap_run)(p, j, &a, &b);
        *lo = FC_MAX(*lo, a);
        *hi = FC_MIN(*hi, b);
    }
    if (*lo >= *hi) *lo = *hi = 0;
}

/* Depthwise (m = 1): one output row's terms of the kernel rows [0, nrows) that lie inside the
 * input, acc[(i kw + j) C + q] += sum over the output pixels ow whose tap column j lies inside
 * the input row xrow + i rs of xrow[i rs + (ow sW + j dW - pad_left) C + q] gyrow[ow][q]: the
 * columns [lo, hi) where every tap is inside in one run of the dot microkernel over all those
 * rows (each dY pixel read once for up to FC_DW_DOT_TAPS taps), each tap's remaining pixels
 * apart. */
static void FC_LOCAL(nhwc_dw_grad_row)(const fc_conv2d_params *p, const T *xrow, fc_index nrows,
                                       fc_index rs, fc_index lo, fc_index hi, const T *gyrow,
                                       T *acc) {
    const fc_index C = p->in_channels, kw = p->kernel_w, sw = p->stride_w, dw = p->dilation_w;
    if (hi > lo)
        FC_NR_NAME(dwconv_dot_nhwc_ukernel)(C, hi - lo, nrows, kw,
                                            xrow + (lo * sw - p->pad_left) * C, sw * C, rs, dw * C,
                                            gyrow + lo * C, acc);
    for (fc_index j = 0; j < kw; j++) {
        fc_index a, b;
        FC_LOCAL(nhwc_dw_tap_run)(p, j, &a, &b);
        const fc_index off = j * dw - p->pad_left;
        const fc_index runs[2][2] = {{a, FC_MIN(b, lo)}, {FC_MAX(a, hi), b}};
        for (fc_index i = 0; i < nrows; i++)
            for (int k = 0; k < 2; k++)
                if (runs[k][1] > runs[k][0])
                    FC_NR_NAME(dwconv_dot_nhwc_ukernel)(C, runs[k][1] - runs[k][0], 1, 1,
                                                        xrow + i * rs + (runs[k][0] * sw + off) * C,
                                                        sw * C, 0, 0, gyrow + runs[k][0] * C,
                                                        acc + (i * kw + j) * C);
    }
}

/* Whether output row gyrow's pixels with a tap in the padding hold only finite values: the
 * whole row when some kernel row lies outside the input (`rows_inside` false), else the columns
 * outside [lo, hi). The weight gradient leaves those taps out, where the definition multiplies
 * their zeros by dY; every other pixel's Inf or NaN reaches its sums as it should. */
static int FC_LOCAL(nhwc_dw_edges_finite)(const T *gyrow, fc_index OW, fc_index C, int rows_inside,
                                          fc_index lo, fc_index hi) {
    const fc_index runs[2][2] = {{0, rows_inside ? lo : OW}, {rows_inside ? hi : OW, OW}};
    int bad = 0;
    for (int k = 0; k < 2; k++)
        if (runs[k][1] > runs[k][0])
            bad |= FC_LOCAL(run_nonfinite)(gyrow + runs[k][0] * C, (runs[k][1] - runs[k][0]) * C);
    return !bad;
}

static int FC_LOCAL(conv2d_nhwc_bwd_weight_depthwise)(const fc_conv2d_params *p,
                                                      const fc_tuning *tn, const T *gy, const T *x,
                                                      T *gw, int nthreads) {
    const fc_index C = p->in_channels, H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, kk = kh * kw, rows = p->batch * OH;
    const fc_index sw = p->stride_w, dw = p->dilation_w;
    const fc_index m = C / p->groups, S = FC_LOCAL(nhwc_dw_rows)(m), npix = p->batch * H * W;
    const fc_index per = kk * S * C;
    const int rotates = FC_LOCAL(nhwc_dw_rotates)(m);
    fc_index lo, hi;
    FC_LOCAL(nhwc_dw_inner_cols)(p, &lo, &hi);
    /* chunks of output rows fixed by the problem, not by the thread count; taken as threads
     * come free, since a thread held up elsewhere would otherwise hold up the pass */
    const fc_index chunks = FC_MAX(1, FC_MIN(rows, tn->weight_grad_tasks));
    T *sums = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(chunks * per));
    T *edges = FC_LOCAL(nhwc_dw_edges)(x, npix, C, m);
    if (!sums || !edges) {
        fc_aligned_free(sums);
        free(edges);
        return FC_ENOMEM;
    }
    int failed = 0, nonfinite = 0;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * m * kk, tn->conv_min_work,
                                  chunks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(2 * FC_MAX(OW, 1)));
        const T **b = a ? a + OW : NULL;
        if (!a) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index ch = 0; ch < chunks; ch++) {
            if (!a) continue;
            T *acc = sums + ch * per;
            memset(acc, 0, sizeof(T) * (size_t)per);
            for (fc_index r = ch * rows / chunks; r < (ch + 1) * rows / chunks; r++) {
                const fc_index n = r / OH, oh = r % OH, ih0 = oh * p->stride_h - p->pad_top;
                fc_index i0, i1;
                FC_LOCAL(nhwc_dw_taps)(ih0, p->dilation_h, kh, H, &i0, &i1);
                if (!FC_LOCAL(nhwc_dw_edges_finite)(gy + r * OW * C, OW, C, i1 - i0 == kh, lo,
                                                    hi)) {
                    FC_PRAGMA(omp atomic write)
                    nonfinite = 1;
                }
                if (m == 1) {
                    if (i1 > i0)
                        FC_LOCAL(nhwc_dw_grad_row)(
                            p, x + (n * H + ih0 + i0 * p->dilation_h) * W * C, i1 - i0,
                            p->dilation_h * W * C, lo, hi, gy + r * OW * C, acc + i0 * kw * C);
                    continue;
                }
                for (fc_index i = i0; i < i1; i++) {
                    for (fc_index j = 0; j < kw; j++) {
                        /* the output pixels whose tap (i, j) lies inside the row */
                        const fc_index off = j * dw - p->pad_left;
                        fc_index ow0, ow1;
                        FC_LOCAL(nhwc_dw_tap_run)(p, j, &ow0, &ow1);
                        const fc_index pix0 = (n * H + ih0 + i * p->dilation_h) * W;
                        T *sum = acc + (i * kw + j) * S * C;
                        if (rotates) {
                            fc_index ne = 0;
                            for (fc_index ow = ow0; ow < ow1; ow++, ne++) {
                                a[ne] = x + (pix0 + ow * sw + off) * C;
                                b[ne] = gy + (r * OW + ow) * C;
                            }
                            FC_NR_NAME(gconv4_dot_nhwc_ukernel)(C, ne, a, b, sum);
                            continue;
                        }
                        for (fc_index sh = 0; sh < S; sh++) {
                            const fc_index shift = FC_LOCAL(nhwc_dw_shift)(sh, m);
                            fc_index ne = 0;
                            for (fc_index ow = ow0; ow < ow1; ow++, ne++) {
                                a[ne] = FC_LOCAL(nhwc_dw_row)(x, pix0 + ow * sw + off, npix, C, m,
                                                              edges) +
                                        shift;
                                b[ne] = gy + (r * OW + ow) * C;
                            }
                            FC_NR_NAME(dwconv_nhwc_ukernel)(C, ne, a, b, sum + sh * C, 1, NULL);
                        }
                    }
                }
            }
        }
        free(a);
    }
    if (!failed && !nonfinite) { /* lane j of row s: output channel j's term with its partner */
        const fc_weight_layout ws = fc_weight_layout_of(p);
        for (fc_index t = 0; t < kk; t++)
            for (fc_index sh = 0; sh < S; sh++)
                for (fc_index j = 0; j < C; j++) {
                    const fc_index q = FC_LOCAL(nhwc_dw_partner)(sh, j % m, m);
                    if (q < 0 || q >= m) continue;
                    const fc_index e = (t * S + sh) * C + j;
                    T sum = sums[e];
                    for (fc_index ch = 1; ch < chunks; ch++) sum += sums[ch * per + e];
                    gw[j * ws.k_stride + q * ws.c_stride + t * ws.tap_stride] = sum;
                }
    }
    fc_aligned_free(sums);
    free(edges);
    return failed ? FC_ENOMEM : nonfinite ? FC_NONFINITE : FC_OK;
}

#endif /* FC_CONV2D_NHWC_DEPTHWISE_H */
