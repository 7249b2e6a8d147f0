/* linear.h: fully connected layers, y = x W^T + b and its gradients, on the convolutions' GEMM
 * microkernels (conv2d_gemm_ukernel.h), in fastconv's own OpenMP threads, so a training step
 * never hands work to a second thread pool (a BLAS's) that would fight these for the cores.
 *
 *   fc_<dt>_linear_fwd__<isa>         y[M, N] = x[M, K] W[N, K]^T (+ b)
 *   fc_<dt>_linear_bwd_input__<isa>   gx[M, K] = gy[M, N] W[N, K]
 *   fc_<dt>_linear_bwd_weight__<isa>  gW[N, K] (+)= gy^T x, gb[N] (+)= sum over M of gy
 *
 * Each is one GEMM C[M x N] (+)= A[M x K] B[K x N] with A and B given by element strides.
 * Loop structure: every MR-row panel of A and NR-column panel of B is packed once (the panels are
 * shared: tasks read them all), then the tiles are dealt to threads in contiguous runs; a thread
 * walks its tiles column panel by column panel, and for each KC-deep slice of the reduction runs
 * every row panel of the run over the one B slice, which stays in L1. Each element of C is summed
 * by one tile in one order, so results do not depend on the thread count.
 *
 * A forward pass with fewer rows than MR (inference on one image) is a set of dot products
 * instead: packing W and multiplying mostly zero rows would cost more than reading W once. */
#ifndef FC_LINEAR_H
#define FC_LINEAR_H

/* conv2d_gemm_ukernel.h also holds the row-pointer microkernel, which these passes do not use */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "conv2d_gemm_ukernel.h"
#include "conv2d_pack.h" /* transpose_block16 */
#include "fc_template.h"
#include "fc_tuning.h"

/* dst[k * width + i] = src[i * si + k * sk] for i < n, k < kd, zero for n <= i < width: one
 * packed panel of `width` rows (A: MR, B: NR) from any strides. */
#define FC_PACK_STEP 16
static void FC_LOCAL(linear_pack_panel)(int width, fc_index n, fc_index kd, const T *src,
                                        fc_index si, fc_index sk, T *restrict dst) {
    if (si == 1) { /* the panel's rows are adjacent in memory: copy runs */
        for (fc_index k = 0; k < kd; k++) {
            T *d = dst + k * width;
            const T *s = src + k * sk;
            if (n == width) { /* the callers' width is MR or NR, a constant the compiler
                                 specialises on, so this copy becomes vector moves: a library
                                 call per run cost more than its copy */
                memcpy(d, s, sizeof(T) * (size_t)width);
                continue;
            }
            fc_index i = 0;
            for (; i < n; i++) d[i] = s[i];
            for (; i < width; i++) d[i] = (T)0;
        }
        return;
    }
    fc_index k0 = 0;
#ifdef FC_HAVE_VEC16
    /* float32 rows along k (x and W in the forward pass, dY in the input gradient): 16 rows by
     * 16 steps transposed in registers (rows past n read as zeros), straight into the panel or,
     * for the last rows of a panel narrower than 16, through a block in L1; element by element
     * every value was a load and a store of its own, at a stride, for no arithmetic */
    if (sizeof(T) == 4 && sk == 1) {
        static const T zeros[16];
        T block[16 * 16];
        for (; k0 + 16 <= kd; k0 += 16)
            for (int i0 = 0; i0 < width; i0 += 16) {
                const T *rows[16];
                for (int i = 0; i < 16; i++)
                    rows[i] = i0 + i < n ? src + (i0 + i) * si + k0 : zeros;
                T *d = dst + k0 * width + i0;
                if (i0 + 16 <= width) {
                    FC_LOCAL(transpose_block16)(rows, d, width);
                    continue;
                }
                FC_LOCAL(transpose_block16)(rows, block, 16);
                for (int k = 0; k < 16; k++)
                    for (int i = 0; i < width - i0; i++) d[k * width + i] = block[k * 16 + i];
            }
    }
#endif
    /* a transpose, FC_PACK_STEP reduction steps at a time: the source is read along its rows
     * a cache line at a time while the block of the panel being written stays in L1 */
    for (; k0 < kd; k0 += FC_PACK_STEP) {
        const fc_index steps = FC_MIN(FC_PACK_STEP, kd - k0);
        T *d = dst + k0 * width;
        for (fc_index i = 0; i < width; i++) {
            const T *s = src + i * si + k0 * sk;
            for (fc_index k = 0; k < steps; k++) d[k * width + i] = i < n ? s[k * sk] : (T)0;
        }
    }
}
#undef FC_PACK_STEP

/* C[M x N] (+)= A B, A(i, k) = a[i * ai + k * ak], B(k, j) = b[k * bk + j * bj], row stride ldc;
 * accumulate: C += A B, else C = A B + bias[j] (bias may be NULL). M, N, K >= 1. */
static int FC_LOCAL(linear_gemm)(fc_index M, fc_index N, fc_index K, const T *a, fc_index ai,
                                 fc_index ak, const T *b, fc_index bk, fc_index bj, T *C,
                                 fc_index ldc, int accumulate, const T *bias, int nthreads) {
    const fc_tuning *tn = &fc_tuning_table[FC_ISA_ID][FC_DT_ID];
    const fc_index ipanels = FC_CEIL_DIV(M, FC_MR), jpanels = FC_CEIL_DIV(N, FC_NR);
    const fc_index tiles = ipanels * jpanels;
    T *ap = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ipanels * FC_MR * K));
    T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(jpanels * FC_NR * K));
    if (!ap || !bp) {
        fc_aligned_free(ap);
        fc_aligned_free(bp);
        return FC_ENOMEM;
    }
    const int nt = fc_threads_for(nthreads, (double)M * N * K, tn->conv_min_work, tiles);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        FC_PRAGMA(omp for schedule(static))
        for (fc_index p = 0; p < ipanels + jpanels; p++) {
            if (p < ipanels)
                FC_LOCAL(linear_pack_panel)(FC_MR, FC_MIN(FC_MR, M - p * FC_MR), K,
                                            a + p * FC_MR * ai, ai, ak, ap + p * FC_MR * K);
            else {
                const fc_index q = p - ipanels;
                FC_LOCAL(linear_pack_panel)(FC_NR, FC_MIN(FC_NR, N - q * FC_NR), K,
                                            b + q * FC_NR * bj, bj, bk, bp + q * FC_NR * K);
            }
        }
        /* this thread's tiles, column panel by column panel (the implicit barrier above has
         * every panel packed) */
        fc_index t0, t1;
        fc_static_share(tiles, &t0, &t1);
        while (t0 < t1) {
            const fc_index jp = t0 / ipanels, ip0 = t0 % ipanels;
            const fc_index ip1 = FC_MIN(ipanels, ip0 + (t1 - t0));
            const fc_index j0 = jp * FC_NR;
            const int nr = (int)FC_MIN(FC_NR, N - j0);
            if (bias) /* C starts as the bias (per column), then every slice adds to it */
                for (fc_index i = ip0 * FC_MR; i < FC_MIN(M, ip1 * FC_MR); i++)
                    for (int j = 0; j < nr; j++) C[i * ldc + j0 + j] = bias[j0 + j];
            for (fc_index r0 = 0; r0 < K; r0 += tn->kc) {
                const fc_index kc = FC_MIN(tn->kc, K - r0);
                const int add = accumulate || bias || r0 > 0;
                for (fc_index ip = ip0; ip < ip1; ip++)
                    FC_GEMM(kc, ap + ip * FC_MR * K + r0 * FC_MR, bp + jp * FC_NR * K + r0 * FC_NR,
                            C + ip * FC_MR * ldc + j0, ldc, (int)FC_MIN(FC_MR, M - ip * FC_MR), nr,
                            add, NULL);
            }
            t0 += ip1 - ip0;
        }
    }
    fc_aligned_free(ap);
    fc_aligned_free(bp);
    return FC_OK;
}

/* sum over k < K of x[k] w[k], in FC_DOT_LANES interleaved partial sums added in a fixed order
 * (a single running sum would leave the multiply-adds waiting on each other). */
#define FC_DOT_LANES 32
static inline T FC_LOCAL(linear_dot)(fc_index K, const T *restrict x, const T *restrict w) {
    T acc[FC_DOT_LANES] = {0};
    fc_index k = 0;
    for (; k + FC_DOT_LANES <= K; k += FC_DOT_LANES)
        for (int l = 0; l < FC_DOT_LANES; l++) acc[l] += x[k + l] * w[k + l];
    for (int l = 0; k < K; k++, l++) acc[l] += x[k] * w[k];
    for (int width = FC_DOT_LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) acc[l] += acc[l + width];
    return acc[0];
}

int FC_FN(linear_fwd)(fc_index M, fc_index K, fc_index N, const T *x, const T *w, const T *bias,
                      T *y, int nthreads) {
    if (M == 0 || N == 0) return FC_OK;
    if (K == 0) { /* no inputs: the bias alone */
        for (fc_index i = 0; i < M; i++)
            for (fc_index j = 0; j < N; j++) y[i * N + j] = bias ? bias[j] : (T)0;
        return FC_OK;
    }
    if (M < FC_MR) {
        const fc_tuning *tn = &fc_tuning_table[FC_ISA_ID][FC_DT_ID];
        const int nt = fc_threads_for(nthreads, (double)M * N * K, tn->conv_min_work, N);
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index j = 0; j < N; j++)
            for (fc_index i = 0; i < M; i++)
                y[i * N + j] = FC_LOCAL(linear_dot)(K, x + i * K, w + j * K) + (bias ? bias[j] : 0);
        return FC_OK;
    }
    return FC_LOCAL(linear_gemm)(M, N, K, x, K, 1, w, 1, K, y, N, 0, bias, nthreads);
}

int FC_FN(linear_bwd_input)(fc_index M, fc_index K, fc_index N, const T *gy, const T *w, T *gx,
                            int nthreads) {
    if (M == 0 || K == 0) return FC_OK;
    if (N == 0) { /* no outputs: nothing flows back */
        memset(gx, 0, sizeof(T) * (size_t)(M * K));
        return FC_OK;
    }
    return FC_LOCAL(linear_gemm)(M, K, N, gy, N, 1, w, K, 1, gx, K, 0, NULL, nthreads);
}

int FC_FN(linear_bwd_weight)(fc_index M, fc_index K, fc_index N, const T *gy, const T *x, T *gw,
                             T *gb, int accumulate, int nthreads) {
    if (gb) { /* column sums of gy, each in double and in row order */
        const fc_tuning *tn = &fc_tuning_table[FC_ISA_ID][FC_DT_ID];
        const fc_index blocks = FC_CEIL_DIV(N, 64);
        const int nt = fc_threads_for(nthreads, (double)M * N, tn->stream_min_work, blocks);
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index blk = 0; blk < blocks; blk++) {
            const fc_index j0 = blk * 64, n = FC_MIN(64, N - j0);
            double sum[64] = {0};
            for (fc_index i = 0; i < M; i++)
                for (fc_index j = 0; j < n; j++) sum[j] += gy[i * N + j0 + j];
            for (fc_index j = 0; j < n; j++)
                gb[j0 + j] = (T)(accumulate ? gb[j0 + j] + sum[j] : sum[j]);
        }
    }
    if (N == 0 || K == 0) return FC_OK;
    if (M == 0) {
        if (!accumulate) memset(gw, 0, sizeof(T) * (size_t)(N * K));
        return FC_OK;
    }
    return FC_LOCAL(linear_gemm)(N, K, M, gy, 1, N, x, K, 1, gw, K, accumulate, NULL, nthreads);
}

#undef FC_DOT_LANES

#endif /* FC_LINEAR_H */
