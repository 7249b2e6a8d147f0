/* adaptive_pool2d_impl.h: adaptive average and max pooling (PyTorch's adaptive_avg_pool2d and
 * adaptive_max_pool2d), forward and the average's backward, for one dtype. A kernel file
 * (adaptive_pool2d_scalar.c, _avx2.c, _avx512.c) includes its fc_isa_<isa>.h and instantiates
 * this template once per dtype (fc_each_dtype.h). The max-pool backward is the scatter of
 * maxpool2d_bwd (pool2d_impl.h), which any indices serve.
 *
 * Output (oh, ow) pools the window rows [floor(oh H / OH), ceil((oh + 1) H / OH)) and columns
 * likewise: windows of varying size that may overlap, or repeat when the output is larger than
 * the input. Three cases:
 * - global (1 x 1 output, the ResNet / ONNX GlobalAveragePool case): a bandwidth-bound reduction
 *   of each plane (adaptive_pool2d_ukernel.h), parallel over planes;
 * - sizes that divide the input into windows up to FC_PLAIN_MAX_WIDTH wide: plain pooling with
 *   kernel = stride = size / output, so the pool2d kernels run it (same windows, same order);
 * - the rest, parallel over (plane, output row), vectorised along the input row: the average
 *   sums its window rows into one row and then each column window of it; the max folds the
 *   window rows into each column's maximum and its row with the scan's rule (a contiguous,
 *   vectorised pass), then picks in each column window the element the row-major scan ends on
 *   (window_pick: the ordering of rows, then columns, that the scan implies).
 * Every output has one writer and one order of operations, whatever the thread count. */
#include <math.h>

#include "fc_template.h"
#include "fc_tuning.h"

#include "adaptive_pool2d_ukernel.h"

#define FC_ADAPTIVE_MIN_WORK (fc_tuning_table[FC_ISA_ID][FC_DT_ID].pool_min_work)
/* Sizes that divide the input run as plain pooling up to windows this wide: the pool2d kernels
 * fold a window row tap by tap at the stride, in registers for widths 2 and 3; wider, the
 * adaptive path (one contiguous pass down the window rows, then each column window) does
 * better. */
#define FC_PLAIN_MAX_WIDTH 3

/* PyTorch's adaptive window of output o along a dimension of n inputs and `out` outputs. */
static inline fc_index FC_LOCAL(adaptive_start)(fc_index o, fc_index out, fc_index n) {
    return o * n / out;
}
static inline fc_index FC_LOCAL(adaptive_end)(fc_index o, fc_index out, fc_index n) {
    return ((o + 1) * n + out - 1) / out;
}

/* The plain pooling an adaptive one is when its output sizes divide the input's, else 0. */
static int FC_LOCAL(as_plain_pool)(const fc_pool2d_params *p, fc_pool2d_params *q) {
    if (p->in_h % p->out_h || p->in_w % p->out_w) return 0;
    *q = *p;
    q->kernel_h = q->stride_h = p->in_h / p->out_h;
    q->kernel_w = q->stride_w = p->in_w / p->out_w;
    q->pad_top = q->pad_bottom = q->pad_left = q->pad_right = 0;
    q->dilation_h = q->dilation_w = 1;
    q->count_include_pad = 1;
    q->divisor_override = 0;
    return 1;
}

/* For the general passes: each output column's window [cols[ow], cols[OW + ow]) (the caller
 * frees cols; NULL when out of memory) and *nt, the threads for `tasks` tasks. */
static fc_index *FC_LOCAL(general_columns)(const fc_pool2d_params *p, int nthreads, fc_index tasks,
                                           int *nt) {
    fc_index *cols = (fc_index *)malloc(sizeof(fc_index) * (size_t)(2 * p->out_w));
    if (!cols) return NULL;
    fc_index widest = 0;
    for (fc_index ow = 0; ow < p->out_w; ow++) {
        cols[ow] = FC_LOCAL(adaptive_start)(ow, p->out_w, p->in_w);
        cols[p->out_w + ow] = FC_LOCAL(adaptive_end)(ow, p->out_w, p->in_w);
        widest = FC_MAX(widest, cols[p->out_w + ow] - cols[ow]);
    }
    const fc_index tallest = FC_CEIL_DIV(p->in_h, p->out_h) + 1;
    *nt = fc_threads_for(nthreads, (double)p->planes * p->out_h * p->out_w * tallest * widest,
                         FC_ADAPTIVE_MIN_WORK, tasks);
    return cols;
}

/* Global average: y[plane] = (the plane's sum / H) / W, as PyTorch divides. */
static void FC_LOCAL(global_avg)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    const fc_index HW = p->in_h * p->in_w;
    const int nt = fc_threads_for(nthreads, (double)p->planes * HW, FC_ADAPTIVE_MIN_WORK,
                                  p->planes);
    FC_PARALLEL_FOR(nt, , plane, p->planes, {
        y[plane] = FC_FN(plane_sum_ukernel_16)(HW, x + plane * HW) / (T)p->in_h / (T)p->in_w;
    });
}

static void FC_LOCAL(global_max)(const fc_pool2d_params *p, const T *x, T *y, int64_t *indices,
                                 int nthreads) {
    const fc_index HW = p->in_h * p->in_w;
    const int nt = fc_threads_for(nthreads, (double)p->planes * HW, FC_ADAPTIVE_MIN_WORK,
                                  p->planes);
    FC_PARALLEL_FOR(nt, , plane, p->planes, {
        const fc_index at = FC_FN(plane_argmax_ukernel_16)(HW, x + plane * HW, y + plane);
        if (indices) indices[plane] = at;
    });
}

int FC_FN(adaptive_avgpool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    fc_pool2d_params q;
    if (p->out_h == 1 && p->out_w == 1) {
        FC_LOCAL(global_avg)(p, x, y, nthreads);
        return FC_OK;
    }
    if (FC_LOCAL(as_plain_pool)(p, &q) && q.kernel_w <= FC_PLAIN_MAX_WIDTH)
        return FC_FN(avgpool2d_fwd)(&q, x, y, nthreads);
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w, HW = H * W;
    const fc_index ntasks = p->planes * OH;
    int nt, failed = 0;
    fc_index *cols = FC_LOCAL(general_columns)(p, nthreads, ntasks, &nt);
    if (!cols) return FC_ENOMEM;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *rows = (T *)malloc(sizeof(T) * (size_t)W); /* the window rows' column sums */
        if (!rows) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!rows) continue;
            const fc_index plane = t / OH, oh = t % OH;
            const fc_index h0 = FC_LOCAL(adaptive_start)(oh, OH, H);
            const fc_index h1 = FC_LOCAL(adaptive_end)(oh, OH, H);
            const T *src = x + plane * HW + h0 * W;
            memcpy(rows, src, sizeof(T) * (size_t)W);
            for (fc_index ih = 1; ih < h1 - h0; ih++)
                for (fc_index iw = 0; iw < W; iw++) rows[iw] += src[ih * W + iw];
            T *out = y + plane * OH * OW + oh * OW;
            for (fc_index ow = 0; ow < OW; ow++) {
                T sum = 0;
                for (fc_index iw = cols[ow]; iw < cols[OW + ow]; iw++) sum += rows[iw];
                out[ow] = sum / (T)(h1 - h0) / (T)(cols[OW + ow] - cols[ow]);
            }
        }
        free(rows);
    }
    free(cols);
    return failed ? FC_ENOMEM : FC_OK;
}

int FC_FN(adaptive_avgpool2d_bwd)(const fc_pool2d_params *p, const T *gy, T *gx, int nthreads) {
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w, HW = H * W;
    fc_pool2d_params q;
    if (p->out_h == 1 && p->out_w == 1) { /* every element gets (gy / H) / W */
        const int nt = fc_threads_for(nthreads, (double)p->planes * HW, FC_ADAPTIVE_MIN_WORK,
                                      p->planes);
        FC_PARALLEL_FOR(nt, , plane, p->planes, {
            const T share = gy[plane] / (T)H / (T)W;
            T *dst = gx + plane * HW;
            for (fc_index i = 0; i < HW; i++) dst[i] = share;
        });
        return FC_OK;
    }
    if (FC_LOCAL(as_plain_pool)(p, &q) && q.kernel_w <= FC_PLAIN_MAX_WIDTH)
        return FC_FN(avgpool2d_bwd)(&q, gy, gx, nthreads);
    int nt, failed = 0;
    fc_index *cols = FC_LOCAL(general_columns)(p, nthreads, p->planes, &nt);
    if (!cols) return FC_ENOMEM;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *row = (T *)malloc(sizeof(T) * (size_t)W); /* one output row's share of an input row */
        if (!row) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index plane = 0; plane < p->planes; plane++) {
            if (!row) continue;
            T *dst = gx + plane * HW;
            memset(dst, 0, sizeof(T) * (size_t)HW);
            for (fc_index oh = 0; oh < OH; oh++) {
                const fc_index h0 = FC_LOCAL(adaptive_start)(oh, OH, H);
                const fc_index h1 = FC_LOCAL(adaptive_end)(oh, OH, H);
                const T *g = gy + plane * OH * OW + oh * OW;
                memset(row, 0, sizeof(T) * (size_t)W);
                for (fc_index ow = 0; ow < OW; ow++) {
                    const T share = g[ow] / (T)(h1 - h0) / (T)(cols[OW + ow] - cols[ow]);
                    for (fc_index iw = cols[ow]; iw < cols[OW + ow]; iw++) row[iw] += share;
                }
                for (fc_index ih = h0; ih < h1; ih++)
                    for (fc_index iw = 0; iw < W; iw++) dst[ih * W + iw] += row[iw];
            }
        }
        free(row);
    }
    free(cols);
    return failed ? FC_ENOMEM : FC_OK;
}

/* Of columns c0 < c1 of a window (their maxima down the window rows and those maxima's rows),
 * the one PyTorch's row-major scan ends on: with a NaN, the last NaN in row-major order (the
 * greatest row, then column); else the first maximum (the greatest value at the least row,
 * then column). Returns the column; *row is its row. */
static inline fc_index FC_LOCAL(window_pick)(const T *colv, const fc_index *colr, fc_index c0,
                                             fc_index c1, fc_index *row) {
    fc_index bc = c0;
    for (fc_index c = c0 + 1; c < c1; c++) {
        const T v = colv[c], best = colv[bc];
        const int take = best != best ? v != v && colr[c] >= colr[bc]
                                      : v != v || v > best || (v == best && colr[c] < colr[bc]);
        bc = take ? c : bc;
    }
    *row = colr[bc];
    return bc;
}

int FC_FN(adaptive_maxpool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int64_t *indices,
                                  int nthreads) {
    fc_pool2d_params q;
    if (p->out_h == 1 && p->out_w == 1) {
        FC_LOCAL(global_max)(p, x, y, indices, nthreads);
        return FC_OK;
    }
    if (FC_LOCAL(as_plain_pool)(p, &q) && q.kernel_w <= FC_PLAIN_MAX_WIDTH)
        return FC_FN(maxpool2d_fwd)(&q, x, y, indices, nthreads);
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w, HW = H * W;
    const fc_index ntasks = p->planes * OH;
    int nt, failed = 0;
    fc_index *cols = FC_LOCAL(general_columns)(p, nthreads, ntasks, &nt);
    if (!cols) return FC_ENOMEM;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        /* per thread: each input column's maximum down the window rows and its row, as the
         * scan finds it (the last NaN, else the first maximum) */
        T *colv = (T *)malloc(sizeof(T) * (size_t)W);
        fc_index *colr = (fc_index *)malloc(sizeof(fc_index) * (size_t)W);
        if (!colv || !colr) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!colv || !colr) continue;
            const fc_index plane = t / OH, oh = t % OH;
            const fc_index h0 = FC_LOCAL(adaptive_start)(oh, OH, H);
            const fc_index h1 = FC_LOCAL(adaptive_end)(oh, OH, H);
            const T *src = x + plane * HW;
            /* the first row, as the scan from -inf at it would leave each column */
            memcpy(colv, src + h0 * W, sizeof(T) * (size_t)W);
            for (fc_index iw = 0; iw < W; iw++) colr[iw] = h0;
            for (fc_index ih = h0 + 1; ih < h1; ih++) {
                const T *row = src + ih * W;
                for (fc_index iw = 0; iw < W; iw++) {
                    const int take = row[iw] > colv[iw] || row[iw] != row[iw];
                    colv[iw] = take ? row[iw] : colv[iw];
                    colr[iw] = take ? ih : colr[iw];
                }
            }
            T *out = y + plane * OH * OW + oh * OW;
            int64_t *idx = indices ? indices + plane * OH * OW + oh * OW : NULL;
            for (fc_index ow = 0; ow < OW; ow++) {
                fc_index ih;
                const fc_index iw = FC_LOCAL(window_pick)(colv, colr, cols[ow], cols[OW + ow], &ih);
                out[ow] = colv[iw];
                if (idx) idx[ow] = ih * W + iw;
            }
        }
        free(colv);
        free(colr);
    }
    free(cols);
    return failed ? FC_ENOMEM : FC_OK;
}

#undef FC_ADAPTIVE_MIN_WORK
#undef FC_PLAIN_MAX_WIDTH
