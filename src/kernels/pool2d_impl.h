/* pool2d_impl.h: max, average and L^p pooling, forward and backward, for one dtype. pool2d.c
 * defines T and FC_DT and includes it twice.
 *
 * Forward passes are parallel over (plane, output row): every output element is written by exactly
 * one task. Backward passes scatter into overlapping windows, so they are parallel over whole
 * planes: a task zeroes its plane's gradient and owns it.
 * Semantics follow PyTorch's CPU kernels (see shared semantics in fastconv/_validation.py):
 * max ties keep the first maximum in row-major window order, NaN wins (the last NaN seen),
 * a window wholly in the padding gives -inf with index -1. */
#include <math.h>

#include "fc_internal.h"

#define FC_FN(op) FC_CAT3(fc_, FC_DT, FC_CAT2(_, op))
/* Roughly 32k window reads per thread before another thread pays for its start-up. */
#define FC_POOL_MIN_WORK 3.2e4

/* Window rows [h0, h1) stepping by dilation, first in-bounds row, for max pooling. */
static inline void FC_CAT2(max_window_, FC_DT)(fc_index o, fc_index stride, fc_index pad,
                                                fc_index dil, fc_index k, fc_index in,
                                                fc_index *start, fc_index *end) {
    fc_index s = o * stride - pad;
    const fc_index e = FC_MIN(s + (k - 1) * dil + 1, in);
    while (s < 0) s += dil;
    *start = s;
    *end = e;
}

int FC_FN(maxpool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int64_t *indices,
                         int nthreads) {
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index ntasks = p->planes * OH;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index plane = t / OH, oh = t % OH;
        const T *src = x + plane * H * W;
        T *dst = y + plane * OH * OW + oh * OW;
        int64_t *idx = indices ? indices + plane * OH * OW + oh * OW : NULL;
        fc_index h0, h1;
        FC_CAT2(max_window_, FC_DT)(oh, p->stride_h, p->pad_h, p->dilation_h, p->kernel_h, H, &h0, &h1);
        for (fc_index ow = 0; ow < OW; ow++) {
            fc_index w0, w1;
            FC_CAT2(max_window_, FC_DT)(ow, p->stride_w, p->pad_w, p->dilation_w, p->kernel_w, W, &w0, &w1);
            T best = -(T)INFINITY;
            int64_t best_i = -1;
            if (h0 < h1 && w0 < w1) {
                best_i = h0 * W + w0;
                for (fc_index ih = h0; ih < h1; ih += p->dilation_h)
                    for (fc_index iw = w0; iw < w1; iw += p->dilation_w) {
                        const T v = src[ih * W + iw];
                        if (v > best || isnan(v)) {
                            best = v;
                            best_i = ih * W + iw;
                        }
                    }
            }
            dst[ow] = best;
            if (idx) idx[ow] = best_i;
        }
    }
    return FC_OK;
}

int FC_FN(maxpool2d_bwd)(const fc_pool2d_params *p, const T *gy, const int64_t *indices, T *gx,
                         int nthreads) {
    const fc_index HW = p->in_h * p->in_w, OHW = p->out_h * p->out_w;
    const int nt = fc_threads_for(nthreads, (double)p->planes * (HW + OHW), FC_POOL_MIN_WORK,
                                  p->planes);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index plane = 0; plane < p->planes; plane++) {
        T *dst = gx + plane * HW;
        const T *g = gy + plane * OHW;
        const int64_t *idx = indices + plane * OHW;
        memset(dst, 0, sizeof(T) * (size_t)HW);
        for (fc_index o = 0; o < OHW; o++)
            if (idx[o] >= 0) dst[idx[o]] += g[o];
    }
    return FC_OK;
}

/* PyTorch's average-pool window: the divisor counts the padded window unless told otherwise, and
 * the window is clipped to the input for the sum. */
typedef struct {
    fc_index h0, h1, w0, w1;
    T divisor; /* 0 for an empty window, whose output is 0 */
} FC_CAT2(avg_window_, FC_DT);

static inline FC_CAT2(avg_window_, FC_DT) FC_CAT2(avg_window_at_, FC_DT)(
    const fc_pool2d_params *p, fc_index oh, fc_index ow) {
    FC_CAT2(avg_window_, FC_DT) win;
    fc_index h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
    fc_index h1 = FC_MIN(h0 + p->kernel_h, p->in_h + p->pad_h);
    fc_index w1 = FC_MIN(w0 + p->kernel_w, p->in_w + p->pad_w);
    const fc_index pool_size = (h1 - h0) * (w1 - w0);
    h0 = FC_MAX(h0, 0);
    w0 = FC_MAX(w0, 0);
    h1 = FC_MIN(h1, p->in_h);
    w1 = FC_MIN(w1, p->in_w);
    fc_index divisor;
    if (p->divisor_override) divisor = p->divisor_override;
    else if (p->count_include_pad) divisor = pool_size;
    else divisor = (h1 - h0) * (w1 - w0);
    win.h0 = h0; win.h1 = h1; win.w0 = w0; win.w1 = w1;
    win.divisor = (h0 < h1 && w0 < w1) ? (T)divisor : (T)0;
    return win;
}

int FC_FN(avgpool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index ntasks = p->planes * OH;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index plane = t / OH, oh = t % OH;
        const T *src = x + plane * H * W;
        T *dst = y + plane * OH * OW + oh * OW;
        for (fc_index ow = 0; ow < OW; ow++) {
            const FC_CAT2(avg_window_, FC_DT) win = FC_CAT2(avg_window_at_, FC_DT)(p, oh, ow);
            T sum = 0;
            for (fc_index ih = win.h0; ih < win.h1; ih++)
                for (fc_index iw = win.w0; iw < win.w1; iw++) sum += src[ih * W + iw];
            dst[ow] = win.divisor != 0 ? sum / win.divisor : (T)0;
        }
    }
    return FC_OK;
}

int FC_FN(avgpool2d_bwd)(const fc_pool2d_params *p, const T *gy, T *gx, int nthreads) {
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const int nt = fc_threads_for(nthreads, (double)p->planes * OH * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, p->planes);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index plane = 0; plane < p->planes; plane++) {
        T *dst = gx + plane * H * W;
        const T *g = gy + plane * OH * OW;
        memset(dst, 0, sizeof(T) * (size_t)(H * W));
        for (fc_index oh = 0; oh < OH; oh++)
            for (fc_index ow = 0; ow < OW; ow++) {
                const FC_CAT2(avg_window_, FC_DT) win = FC_CAT2(avg_window_at_, FC_DT)(p, oh, ow);
                if (win.divisor == 0) continue;
                const T share = g[oh * OW + ow] / win.divisor;
                for (fc_index ih = win.h0; ih < win.h1; ih++)
                    for (fc_index iw = win.w0; iw < win.w1; iw++) dst[ih * W + iw] += share;
            }
    }
    return FC_OK;
}

/* x^p with exact fast paths for the common norms. */
static inline double FC_CAT2(lp_pow_, FC_DT)(double v, double norm) {
    if (norm == 2.0) return v * v;
    if (norm == 1.0) return v;
    return pow(v, norm);
}

/* lp_pool2d (no padding, no dilation): out = (S * kH*kW / area)^(1/p), S = sum of x^p over the
 * window clipped to the input, so a partial ceil_mode window is scaled up as PyTorch does. */
static inline double FC_CAT2(lp_window_sum_, FC_DT)(const fc_pool2d_params *p, const T *src,
                                                   double norm, fc_index oh, fc_index ow,
                                                   fc_index *h0, fc_index *h1, fc_index *w0,
                                                   fc_index *w1) {
    *h0 = oh * p->stride_h;
    *w0 = ow * p->stride_w;
    *h1 = FC_MIN(*h0 + p->kernel_h, p->in_h);
    *w1 = FC_MIN(*w0 + p->kernel_w, p->in_w);
    double s = 0;
    for (fc_index ih = *h0; ih < *h1; ih++)
        for (fc_index iw = *w0; iw < *w1; iw++)
            s += FC_CAT2(lp_pow_, FC_DT)((double)src[ih * p->in_w + iw], norm);
    return s;
}

int FC_FN(lppool2d_fwd)(const fc_pool2d_params *p, double norm, const T *x, T *y, int nthreads) {
    const fc_index OH = p->out_h, OW = p->out_w, HW = p->in_h * p->in_w;
    const double kk = (double)(p->kernel_h * p->kernel_w);
    const fc_index ntasks = p->planes * OH;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OW * kk * 4, FC_POOL_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index plane = t / OH, oh = t % OH;
        const T *src = x + plane * HW;
        T *dst = y + plane * OH * OW + oh * OW;
        for (fc_index ow = 0; ow < OW; ow++) {
            fc_index h0, h1, w0, w1;
            const double s = FC_CAT2(lp_window_sum_, FC_DT)(p, src, norm, oh, ow, &h0, &h1, &w0, &w1);
            const double scaled = s * kk / (double)((h1 - h0) * (w1 - w0));
            dst[ow] = (T)(norm == 2.0 ? sqrt(scaled) : pow(scaled, 1.0 / norm));
        }
    }
    return FC_OK;
}

int FC_FN(lppool2d_bwd)(const fc_pool2d_params *p, double norm, const T *gy, const T *x, T *gx,
                        int nthreads) {
    const fc_index OH = p->out_h, OW = p->out_w, W = p->in_w, HW = p->in_h * p->in_w;
    const double kk = (double)(p->kernel_h * p->kernel_w);
    const int nt = fc_threads_for(nthreads, (double)p->planes * OH * OW * kk * 8,
                                  FC_POOL_MIN_WORK, p->planes);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index plane = 0; plane < p->planes; plane++) {
        const T *src = x + plane * HW;
        T *dst = gx + plane * HW;
        memset(dst, 0, sizeof(T) * (size_t)HW);
        for (fc_index oh = 0; oh < OH; oh++)
            for (fc_index ow = 0; ow < OW; ow++) {
                fc_index h0, h1, w0, w1;
                const double s = FC_CAT2(lp_window_sum_, FC_DT)(p, src, norm, oh, ow, &h0, &h1, &w0, &w1);
                if (s == 0) continue; /* PyTorch's relu in the formula gives a zero gradient */
                const double c = kk / (double)((h1 - h0) * (w1 - w0));
                const double out = norm == 2.0 ? sqrt(s * c) : pow(s * c, 1.0 / norm);
                /* d out / d x = c * x^(p-1) * out^(1-p) */
                const double coef = (double)gy[plane * OH * OW + oh * OW + ow] * c *
                                    (norm == 2.0 ? 1.0 / out : pow(out, 1.0 - norm));
                for (fc_index ih = h0; ih < h1; ih++)
                    for (fc_index iw = w0; iw < w1; iw++) {
                        const double v = (double)src[ih * W + iw];
                        const double dv = norm == 2.0 ? v : norm == 1.0 ? 1.0 : pow(v, norm - 1.0);
                        dst[ih * W + iw] += (T)(coef * dv);
                    }
            }
    }
    return FC_OK;
}

/* ---- relu ----------------------------------------------------------------------------------- */
/* relu(NaN) = NaN, and the gradient passes through a NaN input, as in PyTorch (whose backward
 * tests `x <= 0`). */
#define FC_ELTWISE_MIN_WORK 1.0e5

int FC_FN(relu_fwd)(fc_index n, const T *x, T *y, int nthreads) {
    const int nt = fc_threads_for(nthreads, (double)n, FC_ELTWISE_MIN_WORK, n);
    FC_PRAGMA(omp parallel for simd schedule(static) num_threads(nt))
    for (fc_index i = 0; i < n; i++) y[i] = x[i] <= 0 ? (T)0 : x[i];
    return FC_OK;
}

int FC_FN(relu_bwd)(fc_index n, const T *gy, const T *x, T *gx, int nthreads) {
    const int nt = fc_threads_for(nthreads, (double)n, FC_ELTWISE_MIN_WORK, n);
    FC_PRAGMA(omp parallel for simd schedule(static) num_threads(nt))
    for (fc_index i = 0; i < n; i++) gx[i] = x[i] <= 0 ? (T)0 : gy[i];
    return FC_OK;
}

#undef FC_FN
#undef FC_POOL_MIN_WORK
#undef FC_ELTWISE_MIN_WORK
