/* conv2d_nhwc_depthwise.h: the channels-last depthwise passes (one input and one output channel
 * per group, so channel c of y, dX and dW reads channel c alone), vectorised across the channels,
 * which channels last are contiguous (XNNPACK's dwconv is the model). Each output row of C
 * channels is a sum over the taps that reach it of products of two rows of C channels, read in
 * place; the dwconv_nhwc microkernel (conv2d_nhwc_ukernel.h) takes one pointer per term and
 * operand. The weights are packed once as [kH * kW][C] (from OIHW or HWIO).
 *
 *   forward          y[n, oh, ow] = bias + sum over taps inside x of x[n, ih, iw] w[tap]; tasks
 *                    are output rows (image, oh). The taps in the padding are left out, which
 *                    the definition multiplies by zero: FC_NONFINITE when w holds an Inf or a NaN
 *                    (the plan's fallback is the direct pass, which multiplies them).
 *   input gradient   dX[n, ih, iw] = bias + sum over (tap, output pixel) with ih = oh sH - pad_top
 *                    + i dH (and the same along W) of dY[n, oh, ow] w[tap]: the transposed
 *                    convolution as a gather, any stride (the taps whose phase misses a pixel are
 *                    skipped); tasks are input rows. Only real output positions are multiplied,
 *                    as in the definition, so it takes any data.
 *   weight gradient  dW[tap] = sum over every output pixel whose tap lies inside x of x[n, ih, iw]
 *                    dY[n, oh, ow]; tasks are fixed chunks of the N * OH output rows, each summing
 *                    into a private [kH * kW][C], added in chunk order at the end (bit-identical
 *                    for any thread count). Padding taps are left out: FC_NONFINITE when dY holds
 *                    an Inf or a NaN (the fallback is the direct pass). */
#ifndef FC_CONV2D_NHWC_DEPTHWISE_H
#define FC_CONV2D_NHWC_DEPTHWISE_H

#include "conv2d_nhwc_ukernel.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "conv2d_weights.h"
#include "fc_template.h"

/* dst[t * C + c] = w(c, tap t), in either weight layout. */
static void FC_LOCAL(nhwc_dw_pack)(const fc_conv2d_params *p, const T *w, T *dst) {
    const fc_index C = p->in_channels, kk = p->kernel_h * p->kernel_w;
    const fc_weight_layout s = fc_weight_layout_of(p);
    for (fc_index t = 0; t < kk; t++)
        for (fc_index c = 0; c < C; c++) dst[t * C + c] = w[c * s.k_stride + t * s.tap_stride];
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

static int FC_LOCAL(conv2d_nhwc_fwd_depthwise)(const fc_conv2d_params *p, const fc_tuning *tn,
                                               const T *x, const T *w, const T *bias, T *y,
                                               int nthreads) {
    const fc_index C = p->in_channels, H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, kk = kh * kw, rows = p->batch * OH;
    if (!FC_LOCAL(all_finite)(tn, w, C * kk, nthreads)) return FC_NONFINITE;
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kk * C));
    if (!wp) return FC_ENOMEM;
    FC_LOCAL(nhwc_dw_pack)(p, w, wp);
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * kk, tn->conv_min_work, rows);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(2 * kk));
        const T **b = a ? a + kk : NULL;
        if (!a) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index r = 0; r < rows; r++) {
            if (!a) continue;
            const fc_index n = r / OH, oh = r % OH, ih0 = oh * p->stride_h - p->pad_top;
            fc_index i0, i1;
            FC_LOCAL(nhwc_dw_taps)(ih0, p->dilation_h, kh, H, &i0, &i1);
            for (fc_index ow = 0; ow < OW; ow++) {
                const fc_index iw0 = ow * p->stride_w - p->pad_left;
                fc_index j0, j1, ne = 0;
                FC_LOCAL(nhwc_dw_taps)(iw0, p->dilation_w, kw, W, &j0, &j1);
                for (fc_index i = i0; i < i1; i++)
                    for (fc_index j = j0; j < j1; j++, ne++) {
                        const fc_index ih = ih0 + i * p->dilation_h, iw = iw0 + j * p->dilation_w;
                        a[ne] = x + ((n * H + ih) * W + iw) * C;
                        b[ne] = wp + (i * kw + j) * C;
                    }
                FC_NR_NAME(dwconv_nhwc_ukernel)(C, ne, a, b, y + (r * OW + ow) * C, 0, bias);
            }
        }
        free(a);
    }
    fc_aligned_free(wp);
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

static int FC_LOCAL(conv2d_nhwc_bwd_input_depthwise)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                     const T *gy, const T *w, const T *bias, T *gx,
                                                     int nthreads) {
    const fc_index C = p->in_channels, H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, kk = kh * kw, rows = p->batch * H;
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kk * C));
    if (!wp) return FC_ENOMEM;
    FC_LOCAL(nhwc_dw_pack)(p, w, wp);
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)p->batch * OH * OW * C * kk, tn->conv_min_work,
                                  rows);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(2 * kk));
        const T **b = a ? a + kk : NULL;
        fc_index *at = (fc_index *)malloc(sizeof(*at) * (size_t)(2 * (kh + kw)));
        if (!a || !at) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index r = 0; r < rows; r++) {
            if (!a || !at) continue;
            fc_index *oh = at, *ti = at + kh, *ow = at + 2 * kh, *tj = at + 2 * kh + kw;
            const fc_index n = r / H, ih = r % H;
            const fc_index nh = FC_LOCAL(nhwc_dw_sources)(ih + p->pad_top, p->dilation_h,
                                                          p->stride_h, kh, OH, oh, ti);
            for (fc_index iw = 0; iw < W; iw++) {
                const fc_index nw = FC_LOCAL(nhwc_dw_sources)(iw + p->pad_left, p->dilation_w,
                                                              p->stride_w, kw, OW, ow, tj);
                fc_index ne = 0;
                for (fc_index u = 0; u < nh; u++)
                    for (fc_index v = 0; v < nw; v++, ne++) {
                        a[ne] = gy + ((n * OH + oh[u]) * OW + ow[v]) * C;
                        b[ne] = wp + (ti[u] * kw + tj[v]) * C;
                    }
                FC_NR_NAME(dwconv_nhwc_ukernel)(C, ne, a, b, gx + (r * W + iw) * C, 0, bias);
            }
        }
        free(a);
        free(at);
    }
    fc_aligned_free(wp);
    return failed ? FC_ENOMEM : FC_OK;
}

static int FC_LOCAL(conv2d_nhwc_bwd_weight_depthwise)(const fc_conv2d_params *p,
                                                      const fc_tuning *tn, const T *gy, const T *x,
                                                      T *gw, int nthreads) {
    const fc_index C = p->in_channels, H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, kk = kh * kw, rows = p->batch * OH;
    const fc_index sw = p->stride_w, dw = p->dilation_w;
    if (!FC_LOCAL(all_finite)(tn, gy, rows * OW * C, nthreads)) return FC_NONFINITE;
    /* chunks of output rows fixed by the problem, not by the thread count */
    const fc_index chunks = FC_MAX(1, FC_MIN(rows, tn->weight_grad_tasks));
    T *sums = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(chunks * kk * C));
    if (!sums) return FC_ENOMEM;
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)rows * OW * C * kk, tn->conv_min_work, chunks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(2 * FC_MAX(OW, 1)));
        const T **b = a ? a + OW : NULL;
        if (!a) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index ch = 0; ch < chunks; ch++) {
            if (!a) continue;
            T *acc = sums + ch * kk * C;
            memset(acc, 0, sizeof(T) * (size_t)(kk * C));
            for (fc_index r = ch * rows / chunks; r < (ch + 1) * rows / chunks; r++) {
                const fc_index n = r / OH, oh = r % OH, ih0 = oh * p->stride_h - p->pad_top;
                fc_index i0, i1;
                FC_LOCAL(nhwc_dw_taps)(ih0, p->dilation_h, kh, H, &i0, &i1);
                for (fc_index i = i0; i < i1; i++)
                    for (fc_index j = 0; j < kw; j++) {
                        /* the output pixels whose tap (i, j) lies inside the row */
                        const fc_index off = j * dw - p->pad_left;
                        const fc_index ow0 = off >= 0 ? 0 : FC_CEIL_DIV(-off, sw);
                        const fc_index ow1 = off >= W ? 0 : FC_MIN(OW, (W - 1 - off) / sw + 1);
                        const T *xrow = x + (n * H + ih0 + i * p->dilation_h) * W * C;
                        fc_index ne = 0;
                        for (fc_index ow = ow0; ow < ow1; ow++, ne++) {
                            a[ne] = xrow + (ow * sw + off) * C;
                            b[ne] = gy + (r * OW + ow) * C;
                        }
                        FC_NR_NAME(dwconv_nhwc_ukernel)(C, ne, a, b, acc + (i * kw + j) * C, 1,
                                                        NULL);
                    }
            }
        }
        free(a);
    }
    if (!failed) {
        const fc_weight_layout s = fc_weight_layout_of(p);
        for (fc_index t = 0; t < kk; t++)
            for (fc_index c = 0; c < C; c++) {
                T sum = sums[t * C + c];
                for (fc_index ch = 1; ch < chunks; ch++) sum += sums[(ch * kk + t) * C + c];
                gw[c * s.k_stride + t * s.tap_stride] = sum;
            }
    }
    fc_aligned_free(sums);
    return failed ? FC_ENOMEM : FC_OK;
}

#endif /* FC_CONV2D_NHWC_DEPTHWISE_H */
