/* eltwise_impl.h: element-wise kernels (relu forward and backward, the residual add + relu and
 * its gradient added to the shortcut's) for
 * one dtype. A kernel file
 * (eltwise_scalar.c, eltwise_avx2.c, eltwise_avx512.c) includes its fc_isa_<isa>.h and
 * instantiates this template once per dtype (fc_each_dtype.h); the loops are plain C that the
 * compiler vectorises for the file's instruction set.
 *
 * Loop structure: parallel over blocks of FC_ELTWISE_BLOCK elements (static schedule, so each
 * thread streams one contiguous stretch); each block first prefetches its inputs' lines
 * FC_PREFETCH_AHEAD bytes on, then runs one vectorisable loop. */
#include "fc_template.h"
#include "fc_tuning.h"

/* As PyTorch: relu keeps x unless x < 0, so NaN stays NaN and -0.0 stays -0.0 (its clamp_min);
 * the gradient is 0 where x <= 0 and passes through a NaN input (its threshold_backward). */
#define FC_ELTWISE_MIN_WORK (fc_tuning_table[FC_ISA_ID][FC_DT_ID].eltwise_min_work)

/* Blocks of FC_ELTWISE_BLOCK elements, each prefetching its inputs' next lines first. */
#define FC_ELTWISE_BLOCK 1024

int FC_FN(relu_fwd)(fc_index n, const T *x, T *y, int nthreads) {
    const int nt = fc_threads_for(nthreads, (double)n, FC_ELTWISE_MIN_WORK, n);
    const fc_index nblocks = FC_CEIL_DIV(n, FC_ELTWISE_BLOCK);
    FC_PARALLEL_FOR(nt, , b, nblocks, {
        const fc_index i0 = b * FC_ELTWISE_BLOCK, i1 = FC_MIN(n, i0 + FC_ELTWISE_BLOCK);
        fc_prefetch_ahead(x + i0, sizeof(T) * FC_ELTWISE_BLOCK, x + n);
        for (fc_index i = i0; i < i1; i++) y[i] = x[i] < 0 ? (T)0 : x[i];
    });
    return FC_OK;
}

/* gx = relu_bwd(gy, x), or with `add` gx += it, rounded as `gx + relu_bwd(gy, x)` (relu_bwd_add:
 * a residual block's shortcut gradient added to its main path's in the pass that takes it
 * through the block's last ReLU). */
static int FC_LOCAL(relu_bwd_pass)(fc_index n, const T *gy, const T *x, T *gx, int add,
                                   int nthreads) {
    const int nt = fc_threads_for(nthreads, (double)n, FC_ELTWISE_MIN_WORK, n);
    const fc_index nblocks = FC_CEIL_DIV(n, FC_ELTWISE_BLOCK);
    FC_PARALLEL_FOR(nt, , b, nblocks, {
        const fc_index i0 = b * FC_ELTWISE_BLOCK, i1 = FC_MIN(n, i0 + FC_ELTWISE_BLOCK);
        fc_prefetch_ahead(x + i0, sizeof(T) * FC_ELTWISE_BLOCK, x + n);
        fc_prefetch_ahead(gy + i0, sizeof(T) * FC_ELTWISE_BLOCK, gy + n);
        if (add)
            for (fc_index i = i0; i < i1; i++) gx[i] = gx[i] + (x[i] <= 0 ? (T)0 : gy[i]);
        else
            for (fc_index i = i0; i < i1; i++) gx[i] = x[i] <= 0 ? (T)0 : gy[i];
    });
    return FC_OK;
}

int FC_FN(relu_bwd)(fc_index n, const T *gy, const T *x, T *gx, int nthreads) {
    return FC_LOCAL(relu_bwd_pass)(n, gy, x, gx, 0, nthreads);
}

int FC_FN(relu_bwd_add)(fc_index n, const T *gy, const T *x, T *gx, int nthreads) {
    return FC_LOCAL(relu_bwd_pass)(n, gy, x, gx, 1, nthreads);
}

/* y = relu(a + b): a residual block's shortcut add and the ReLU after it in one pass. The sum
 * is rounded once, as `a + b` alone, then relu_fwd's rule applies, so the result is bit for bit
 * the two ops'. y may be a (the block's own array, overwritten in place). */
int FC_FN(add_relu_fwd)(fc_index n, const T *a, const T *b, T *y, int nthreads) {
    const int nt = fc_threads_for(nthreads, (double)n, FC_ELTWISE_MIN_WORK, n);
    const fc_index nblocks = FC_CEIL_DIV(n, FC_ELTWISE_BLOCK);
    FC_PARALLEL_FOR(nt, , blk, nblocks, {
        const fc_index i0 = blk * FC_ELTWISE_BLOCK, i1 = FC_MIN(n, i0 + FC_ELTWISE_BLOCK);
        fc_prefetch_ahead(a + i0, sizeof(T) * FC_ELTWISE_BLOCK, a + n);
        fc_prefetch_ahead(b + i0, sizeof(T) * FC_ELTWISE_BLOCK, b + n);
        for (fc_index i = i0; i < i1; i++) {
            const T s = a[i] + b[i];
            y[i] = s < 0 ? (T)0 : s;
        }
    });
    return FC_OK;
}

#undef FC_ELTWISE_MIN_WORK
#undef FC_ELTWISE_BLOCK
