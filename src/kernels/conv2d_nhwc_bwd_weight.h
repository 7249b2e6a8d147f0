/* conv2d_nhwc_bwd_weight.h: the channels-last convolution weight and bias gradients from x
 * (N, H, W, C) and dY (N, OH, OW, K): per kernel row (or tap) a GEMM dW_seg^T[rows, K] +=
 * X_seg^T[rows, pixels] dY[pixels, K], summed over every pixel of the batch.
 *
 * A segment is a run of weights whose inputs are contiguous for every output pixel: with dilation
 * 1 along W and one group, a whole kernel row (its kW taps' C channels are kW * C consecutive
 * elements of one input row); otherwise a single tap's C/groups channels. For each pixel the
 * segment's run is found through one pointer: in place, at a row of zeros where the segment's
 * input row is padding, at a zero-padded copy of the run where it crosses the left or right
 * padding, so padding multiplies as in the definition, and the products are exactly the
 * reference's (no fallback for Inf or NaN). Per chunk of pixels dY is packed into NR-column
 * panels (conv2d_pack.h) and the runs into MR-row panels of X^T, each gathered once and read by
 * every K block (the GEMM microkernel, conv2d_gemm_ukernel.h); with one or two K blocks the runs
 * are read in place instead (gemm_cols, conv2d_nhwc_ukernel.h).
 *
 * Loop structure: tasks are (batch chunk, group, part of the segments' MR-row blocks). A task sums
 * its images in a private accumulator: over chunks of pixels that run on across its images (one
 * dY panel per K block in L1), it points each of its segments at the chunk's runs and packs its
 * MR-row blocks of them, then over K blocks and MR-row blocks runs the microkernel. Each batch
 * chunk's sums go to its own copy of dW as whole rows of K (HWIO order, whatever the weights'
 * layout: scattering them into OIHW one value at a time would miss the cache on every store), and
 * the copies are added in a fixed order at the end (whole rows of K at a time), transposed into
 * OIHW in 16 x 16 register blocks where the weights are OIHW, so results do not depend on the
 * thread count. With one batch chunk (batch 1) and OIHW weights there is nothing to add: each task
 * transposes its accumulator, still in cache, into dW; there, with at least four K blocks in all,
 * tasks are (group, K block) over every row instead, so that each writes whole rows of dW.
 *
 * Few taps (nhwc_bwd_weight_few_taps): the GEMM turned round, dW[K, R] += dY^T col(X), where a
 * first layer's K far from a multiple of NR and its kernel rows of a few values padded to MR
 * leave most of the segments' tiles empty. Tasks are (chunk of the batch's pixels, group). */
#ifndef FC_CONV2D_NHWC_BWD_WEIGHT_H
#define FC_CONV2D_NHWC_BWD_WEIGHT_H

#include "conv2d_gemm_ukernel.h"
#include "conv2d_nhwc_depthwise.h"
#include "conv2d_nhwc_fwd.h"
#include "conv2d_nhwc_segments.h"
#include "conv2d_nhwc_ukernel.h"
#include "conv2d_pack.h"
#include "conv2d_plan.h"
#include "fc_template.h"

/* db[k] = sum of dY[:, :, :, k]: double partial sums keep float32 results at float32 accuracy.
 * The pixels are cut into fixed chunks summed apart and then added in order, so the result does
 * not depend on the thread count. */
static int FC_LOCAL(nhwc_bias_grad)(const fc_conv2d_params *p, const fc_tuning *tn, const T *gy,
                                    T *gb, int nthreads) {
    const fc_index K = p->out_channels, rows = p->batch * p->out_h * p->out_w;
    const fc_index chunks = FC_MAX(1, FC_MIN(64, rows * K / (fc_index)tn->stream_min_work + 1));
    double *part = (double *)calloc((size_t)(chunks * K), sizeof(double));
    if (!part) return FC_ENOMEM;
    const int nt = fc_threads_for(nthreads, (double)rows * K, tn->stream_min_work, chunks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index c = 0; c < chunks; c++) {
        double *sum = part + c * K;
        for (fc_index r = c * rows / chunks; r < (c + 1) * rows / chunks; r++)
            for (fc_index k = 0; k < K; k++) sum[k] += (double)gy[r * K + k];
    }
    for (fc_index k = 0; k < K; k++) {
        double sum = 0;
        for (fc_index c = 0; c < chunks; c++) sum += part[c * K + k];
        gb[k] = (T)sum;
    }
    free(part);
    return FC_OK;
}

/* dst[k * ld + r] = src[r * K + k] for r < rows (at most 16), k < K: 16 x 16 blocks transposed in
 * registers where the file has them (conv2d_pack.h), the ragged ones value by value. */
static void FC_LOCAL(nhwc_transpose_rows)(const T *src, fc_index rows, fc_index K, T *dst,
                                          fc_index ld) {
    for (fc_index k0 = 0; k0 < K; k0 += 16) {
        const fc_index k1 = FC_MIN(K, k0 + 16);
#ifdef FC_HAVE_VEC16
        if (k1 - k0 == 16 && rows == 16) {
            const T *rp[16];
            for (int i = 0; i < 16; i++) rp[i] = src + i * K + k0;
            FC_LOCAL(transpose_block16)(rp, dst + k0 * ld, ld);
            continue;
        }
#endif
        for (fc_index k = k0; k < k1; k++)
            for (fc_index r = 0; r < rows; r++) dst[k * ld + r] = src[r * K + k];
    }
}

/* a[r] for pixels [f0, f0 + n) of the batch counted across images (pixel f is pixel f % P of image
 * f / P; goff: x's offset of the group's first channel) = where segment `seg` reads its run,
 * MR-row over-read included (conv2d_nhwc_segments.h); runs that need a zero-padded copy go to
 * stage, from slot first_slot on. Returns the slots used; with a NULL, only counts them. */
static fc_index FC_LOCAL(nhwc_segment_runs)(const fc_conv2d_params *p, const fc_nhwc_segments *sg,
                                            fc_index seg, const T *x, fc_index total, fc_index goff,
                                            fc_index f0, fc_index n, const T *zero, T *stage,
                                            fc_index first_slot, const T **a) {
    const fc_index OW = p->out_w, P = p->out_h * OW, HWC = p->in_h * p->in_w * p->in_channels;
    fc_index used = 0;
    for (fc_index r = 0; r < n;) { /* one output row's stretch at a time */
        const fc_index img = (f0 + r) / P, q = (f0 + r) % P;
        const fc_index oh = q / OW, ow0 = q % OW, len = FC_MIN(n - r, OW - ow0);
        used += FC_LOCAL(segment_row_runs)(p, sg, seg, x, total, img * HWC + goff, oh, ow0, len,
                                           sg->len_pad, zero, stage, first_slot + used,
                                           a ? a + r : NULL, 1);
        r += len;
    }
    return used;
}

/* Few taps (a first layer's kH kW C/groups values, at most two B panels wide): the GEMM turned
 * round, dW[K, R] += dY^T[K, pixels] col(X)[pixels, R], so that the output channels are the
 * tile's rows (padded to MR only) and the whole kernel its columns, where the segments' GEMM
 * pads each kernel row's few values to MR and K to NR. Per chunk of pixels, dY's channels are
 * copied MR at a time into A panels (a pixel's channels are contiguous) and col(X) is the forward
 * pass's im2col panel (nhwc_im2col_panel: zero where the definition reads padding, so the
 * products are exactly the reference's), cut into NR-wide B panels; the columns past R read
 * whatever follows a row and are never read out. Tasks are (chunk of the batch's pixels, group),
 * fixed by the problem; each sums into its own accumulator, and the chunks are added in order. */
static int FC_LOCAL(nhwc_bwd_weight_few_taps)(const fc_conv2d_params *p, const fc_tuning *tn,
                                              const T *gy, const T *x, T *gw, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index K = p->out_channels, kH = p->kernel_h, kk = kH * p->kernel_w;
    const fc_index P = p->out_h * p->out_w, NP = p->batch * P;
    const fc_index HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index R = kk * Cg, rpanels = FC_CEIL_DIV(R, FC_NR), rpad = rpanels * FC_NR;
    const fc_index kpanels = FC_CEIL_DIV(Kg, FC_MR), kpad = kpanels * FC_MR;
    const fc_index qc = FC_MIN(tn->kc, FC_MAX(NP, 1)), acc_size = kpad * rpad;
    const fc_index chunks = FC_MAX(1, FC_MIN(tn->weight_grad_tasks, FC_CEIL_DIV(NP, qc)));
    const fc_index ntasks = chunks * G;
    /* the im2col panel's zero-padded input rows (conv2d_nhwc_fwd.h) */
    const fc_index span = G == 1 && p->dilation_w == 1 ? FC_LOCAL(nhwc_im2col_span)(p) : 0;
    int failed = 0;

    T *sums = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ntasks * acc_size));
    T *zero = (T *)calloc((size_t)FC_MAX(span, 1), sizeof(T));
    if (!sums || !zero) {
        fc_aligned_free(sums);
        free(zero);
        return FC_ENOMEM;
    }
    const int nt = fc_threads_for(nthreads, (double)NP * K * Cg * kk, tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *ap = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kpad * qc));
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rpad * qc));
        /* col(X) rows of R values, a panel's width past the last readable */
        T *cols = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(qc * R + FC_NR + FC_IM2COL_SLACK));
        FC_LOCAL(im2col_rows_t) rows;
        int ok = FC_LOCAL(im2col_rows_init)(&rows, kH, span, zero) && ap && bp && cols;
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index g = t % G, chunk = t / G;
            const fc_index f1 = (chunk + 1) * NP / chunks;
            T *acc = sums + t * acc_size;
            memset(acc, 0, sizeof(T) * (size_t)acc_size);
            for (fc_index f0 = chunk * NP / chunks; f0 < f1; f0 += qc) {
                const fc_index kc = FC_MIN(qc, f1 - f0);
                /* col(X), one image's stretch at a time, then as NR-wide panels */
                for (fc_index r = 0; r < kc;) {
                    const fc_index img = (f0 + r) / P, q = (f0 + r) % P, n = FC_MIN(kc - r, P - q);
                    FC_LOCAL(nhwc_im2col_panel)(p, x, img * HWC + g * Cg, q, n, &rows,
                                                cols + r * R);
                    r += n;
                }
                /* the last row's panel reads up to rpad - R values past it: zeros, not whatever
                 * an earlier chunk or the allocation left there */
                memset(cols + kc * R, 0, sizeof(T) * FC_NR);
                for (fc_index r = 0; r < kc; r++)
                    for (fc_index q = 0; q < rpanels; q++)
                        memcpy(bp + (q * kc + r) * FC_NR, cols + r * R + q * FC_NR,
                               sizeof(T) * FC_NR);
                /* dY's channels of the group, MR at a time: A panels [kpanels][kc][MR] */
                const T *gyf = gy + f0 * K + g * Kg;
                for (fc_index kp = 0; kp < kpanels; kp++) {
                    const fc_index mr = FC_MIN(FC_MR, Kg - kp * FC_MR);
                    T *d = ap + kp * kc * FC_MR;
                    for (fc_index r = 0; r < kc; r++, d += FC_MR) {
                        const T *src_k = gyf + r * K + kp * FC_MR;
                        if (mr == FC_MR) {
                            memcpy(d, src_k, sizeof(T) * FC_MR);
                            continue;
                        }
                        for (fc_index i = 0; i < FC_MR; i++) d[i] = i < mr ? src_k[i] : (T)0;
                    }
                }
                for (fc_index kp = 0; kp < kpanels; kp++)
                    for (fc_index q = 0; q < rpanels; q++)
                        FC_GEMM(kc, ap + kp * kc * FC_MR, bp + q * kc * FC_NR,
                                acc + kp * FC_MR * rpad + q * FC_NR, rpad, FC_MR, FC_NR, 1, NULL);
            }
        }
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        fc_aligned_free(ap);
        fc_aligned_free(bp);
        fc_aligned_free(cols);
        FC_LOCAL(im2col_rows_free)(&rows);
    }
    /* dW from the chunks' sums added in chunk order: column r = tap * Cg + c of row k */
    if (!failed) {
        const int hwio = p->weight_format == FC_WEIGHT_HWIO;
        for (fc_index g = 0; g < G; g++)
            for (fc_index k = 0; k < Kg; k++)
                for (fc_index r = 0; r < R; r++) {
                    const T *src = sums + g * acc_size + k * rpad + r;
                    T sum = src[0];
                    for (fc_index ch = 1; ch < chunks; ch++) sum += src[ch * G * acc_size];
                    const fc_index tap = r / Cg, c = r % Cg;
                    gw[hwio ? (tap * Cg + c) * K + g * Kg + k
                            : ((g * Kg + k) * Cg + c) * kk + tap] = sum;
                }
    }
    fc_aligned_free(sums);
    free(zero);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The few-taps GEMM where its tile's share of useful products (R/rpad Kg/kpad) is more than twice
 * the segments' (len/len_pad Kg/kg_pad): small kernels of few channels, whose R fills most of its
 * columns, and K far from a multiple of NR. With one input channel, any larger share: the
 * segments' runs are then a kernel row's kW values each, and those crossing the padding are
 * copied per pixel, where the im2col panel copies each input row once (docs/KERNELS.md has the
 * figures). */
static int FC_LOCAL(nhwc_few_taps_pays)(const fc_conv2d_params *p, const fc_nhwc_segments *sg,
                                        fc_index Kg) {
    const double R = (double)(sg->count * sg->len), k = (double)Kg;
    const double turned = R / (double)(FC_CEIL_DIV(sg->count * sg->len, FC_NR) * FC_NR) * k /
                          (double)(FC_CEIL_DIV(Kg, FC_MR) * FC_MR);
    const double segments = (double)sg->len / (double)sg->len_pad * k /
                            (double)(FC_CEIL_DIV(Kg, FC_NR) * FC_NR);
    const int one_channel = p->in_channels == p->groups;
    return R <= 2 * FC_NR && (turned > 2 * segments || (one_channel && turned > segments));
}

static int FC_LOCAL(conv2d_nhwc_bwd_weight_direct)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                   const T *gy, const T *x, T *gw, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index K = p->out_channels, kk = p->kernel_h * p->kernel_w, N = p->batch;
    const fc_index P = p->out_h * p->out_w, HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index total = N * HWC, wsize = K * Cg * kk;
    fc_nhwc_segments sg;
    if (fc_nhwc_segments_of(p, FC_MR, &sg) != FC_OK) return FC_ENOMEM;
    if (FC_LOCAL(nhwc_few_taps_pays)(p, &sg, Kg)) {
        fc_nhwc_segments_free(&sg);
        return FC_LOCAL(nhwc_bwd_weight_few_taps)(p, tn, gy, x, gw, nthreads);
    }
    const fc_index mblocks = sg.len_pad / FC_MR, blocks = sg.count * mblocks;
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_NR), kg_pad = kblocks * FC_NR;
    /* The tasks' sums are whole rows of K, (tap, channel) rows in order: HWIO, written row by
     * row. HWIO weights take chunk 0's sums in place; OIHW ones get every chunk's from copies,
     * transposed once at the end. */
    const int in_place = p->weight_format == FC_WEIGHT_HWIO;
    const fc_index row_parts = FC_MIN(blocks, FC_CEIL_DIV(sg.count * sg.len_pad, tn->task_rows));
    /* Batch chunks: enough for weight_grad_tasks tasks in all, within weight_grad_private_bytes of
     * private sums; fixed by the problem, not by the thread count (as the NCHW pass). */
    fc_index chunks = FC_MIN(N, FC_MAX(2, FC_CEIL_DIV(tn->weight_grad_tasks, G * row_parts)));
    while (chunks > 1 &&
           (chunks - in_place) * wsize * (fc_index)sizeof(T) > tn->weight_grad_private_bytes)
        chunks--;
    if (chunks < 1) chunks = 1;
    /* One batch chunk of OIHW weights (batch 1): each task writes its sums straight into dW from
     * its accumulator, still in cache, instead of through a copy read back at the end. Tasks of a
     * part of the rows would each write a sliver (a tap or two) of every cache line of dW's rows;
     * with four K blocks or more (a count fixed by the problem, not the threads, so the sums do
     * not depend on them), a task owns one K block's output channels instead, all rows: whole
     * rows of dW, K blocks apart (each element's sum is the same GEMM's). */
    const int transpose_own = !in_place && chunks == 1;
    const int by_k = transpose_own && G * kblocks >= 4;
    const fc_index kparts = by_k ? kblocks : 1, task_kblocks = by_k ? 1 : kblocks;
    const fc_index parts = by_k ? 1 : row_parts;
    const fc_index part_blocks = FC_CEIL_DIV(blocks, parts);
    const fc_index segs_max = FC_MIN(sg.count, FC_CEIL_DIV(part_blocks, mblocks) + 1);
    /* the accumulator's rows a cache line longer than its K blocks where the transposes below
     * read it down its columns, which at a power-of-two stride (K = 256 float32: 1 KB) fall in a
     * few cache sets and evict each other; a K block's rows are read whole */
    const fc_index ld = task_kblocks * FC_NR + (by_k ? 0 : 64 / (fc_index)sizeof(T));
    /* pixels per packed dY chunk (one panel per K block stays in L1): chunks run on across the
     * images of a batch chunk (dY's pixels are consecutive rows), so images with few pixels still
     * give the microkernel a long reduction per accumulator tile */
    const fc_index qc = FC_MIN(tn->kc, N * P);
    /* With one or two K blocks per task the microkernel reads the runs in place (gemm_cols), K
     * block after K block, instead of a copy of X^T into MR-row panels: with one, each block is
     * read once either way and the copy stores for nothing; with two (64 output channels on
     * AVX-512 float32: vgg-64, res14-64), reading the runs twice from L1/L2 cost less than the
     * copy, which wrote the chunk's panels to L2 (a quarter of vgg-64's samples outside the
     * microkernel) and read them back twice (docs/KERNELS.md). At most NR/2 output channels
     * (res14-16's 16 on AVX-512 float32) run two blocks of a segment at a time on the
     * half-width tile instead of a full one half on zero columns. Every element's sum is the
     * packed path's, bit for bit. */
    const int x_in_place = task_kblocks <= 2;
    const fc_index ntasks = chunks * G * parts * kparts,
                   copies = transpose_own ? 0 : chunks - in_place;
    int failed = 0;

    T *partial = copies ? (T *)fc_aligned_alloc(sizeof(T) * (size_t)(copies * wsize)) : NULL;
    T *zero = (T *)calloc((size_t)sg.len_pad, sizeof(T));
    if ((copies && !partial) || !zero) {
        fc_aligned_free(partial);
        free(zero);
        fc_nhwc_segments_free(&sg);
        return FC_ENOMEM;
    }
    const int nt = fc_threads_for(nthreads, (double)N * K * P * Cg * kk, tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kg_pad * qc));
        T *acc = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(part_blocks * FC_MR * ld));
        T *ap = x_in_place ? NULL
                           : (T *)fc_aligned_alloc(sizeof(T) * (size_t)(part_blocks * FC_MR * qc));
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(segs_max * qc));
        T *stage = NULL;
        fc_index stage_slots = 0;
        int ok = bp && acc && (ap || x_in_place) && a;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index kpart = t % kparts, part = t / kparts % parts;
            const fc_index g = t / (kparts * parts) % G, chunk = t / (kparts * parts * G);
            const fc_index k0 = kpart * task_kblocks * FC_NR;
            const fc_index kw = FC_MIN(task_kblocks * FC_NR, Kg - k0);
            const fc_index b0 = part * blocks / parts, b1 = (part + 1) * blocks / parts;
            const fc_index s0 = b0 / mblocks, s1 = (b1 - 1) / mblocks + 1; /* segments touched */
            const fc_index n0 = chunk * N / chunks, n1 = (chunk + 1) * N / chunks;
            memset(acc, 0, sizeof(T) * (size_t)((b1 - b0) * FC_MR * ld));
            /* pixel f of the batch chunk is pixel f % P of image f / P */
            /* the chunks as even as chunks of at most qc pixels go: one 14 x 14 image runs two
             * of 98 pixels, not 192 and 4 (a short reduction per accumulator tile) */
            const fc_index pix = (n1 - n0) * P, step = FC_CEIL_DIV(pix, FC_CEIL_DIV(pix, qc));
            for (fc_index f0 = n0 * P; f0 < n1 * P && ok; f0 += step) {
                const fc_index kc = FC_MIN(step, n1 * P - f0);
                /* the runs needing a padded copy, then room for them */
                fc_index need = 0;
                for (fc_index s = s0; s < s1; s++)
                    need += FC_LOCAL(nhwc_segment_runs)(p, &sg, s, x, total, g * Cg, f0, kc, zero,
                                                        NULL, 0, NULL);
                ok = FC_LOCAL(nhwc_stage_reserve)(&stage, &stage_slots, need, sg.len_pad);
                if (!ok) break;
                fc_index used = 0;
                for (fc_index s = s0; s < s1; s++)
                    used += FC_LOCAL(nhwc_segment_runs)(p, &sg, s, x, total, g * Cg, f0, kc, zero,
                                                        stage, used, a + (s - s0) * kc);
                FC_NR_NAME(gemm_pack_b)(kc, kw, gy + f0 * K + g * Kg + k0, K, bp);
                if (x_in_place) {
                    for (fc_index kb = 0; kb < task_kblocks; kb++)
                        for (fc_index b = b0; b < b1;) {
                            const fc_index s = b / mblocks, m0 = (b % mblocks) * FC_MR;
                            const T *const *col = a + (s - s0) * kc;
                            const T *bk = bp + kb * kc * FC_NR;
                            T *c = acc + (b - b0) * FC_MR * ld + kb * FC_NR;
#if FC_HAVE_GEMM_HALF
                            if (kw <= FC_NR / 2 && b + 1 < b1 && m0 + FC_MR < sg.len_pad) {
                                FC_GEMM_COLS_UKERNEL_HALF(kc, col, m0, bk, c, ld);
                                b += 2;
                                continue;
                            }
#endif
                            FC_UKERNEL(gemm_cols_ukernel)(kc, col, m0, bk, c, ld);
                            b++;
                        }
                    continue;
                }
                /* X^T packed once per chunk as [block][pixel][MR] panels, read by every K
                 * block: each MR-row block's kc values from kc cache lines of x (and stage)
                 * gathered once, not once per K block */
                for (fc_index b = b0; b < b1; b++) {
                    const fc_index s = b / mblocks, m0 = (b % mblocks) * FC_MR;
                    const T *const *col = a + (s - s0) * kc;
                    T *panel = ap + (b - b0) * kc * FC_MR;
                    for (fc_index r = 0; r < kc; r++)
                        memcpy(panel + r * FC_MR, col[r] + m0, sizeof(T) * FC_MR);
                }
                for (fc_index kb = 0; kb < task_kblocks; kb++)
                    for (fc_index b = b0; b < b1; b++)
                        FC_UKERNEL(gemm_ukernel)(
                            kc, ap + (b - b0) * kc * FC_MR, bp + kb * kc * FC_NR,
                            acc + ((b - b0) * FC_MR) * ld + kb * FC_NR, ld, FC_MR, FC_NR, 1, NULL);
            }
            if (!ok) {
                FC_PRAGMA(omp atomic write)
                failed = 1;
                continue;
            }
            /* row m of segment s is row s * len + m = tap * Cg + c: channel m % Cg of tap s (a
             * single tap's segment) or s * kW + m / Cg (a kernel row's) */
            if (by_k) {
                /* per (input channel, tap): its row of acc, the task's output channels, into
                 * dW[k][c][tap] for each of them: the task's rows of dW are written in order,
                 * kk values at a time. A segment's length is a multiple of Cg: tap by tap,
                 * channel c's row steps on by Cg within a segment, then to the next segment's. */
                T *dk = gw + (g * Kg + k0) * Cg * kk;
                for (fc_index c = 0; c < Cg; c++)
                    for (fc_index tap = 0, s = 0, m = c; tap < kk; tap++) {
                        const T *src = acc + (s * sg.len_pad + m) * ld;
                        for (fc_index k = 0; k < kw; k++) dk[(k * Cg + c) * kk + tap] = src[k];
                        if ((m += Cg) >= sg.len) {
                            m -= sg.len;
                            s++;
                        }
                    }
                continue;
            }
            if (transpose_own) {
                /* per output channel, down the task's rows: one column of acc (its lines reused
                 * by the next output channels) into dW[k][c][tap]. The task's rows, a block's
                 * padding rows past len aside, are consecutive: (c, tap) is counted on from the
                 * first one, not divided out for every value. */
                const fc_index first = b0 / mblocks * sg.len + b0 % mblocks * FC_MR;
                for (fc_index k = 0; k < Kg; k++) {
                    T *dk = gw + (g * Kg + k) * Cg * kk;
                    fc_index c = first % Cg, tap = first / Cg;
                    for (fc_index b = b0; b < b1; b++) {
                        const fc_index m0 = (b % mblocks) * FC_MR;
                        const T *src = acc + (b - b0) * FC_MR * ld + k;
                        for (fc_index m = m0; m < FC_MIN(m0 + FC_MR, sg.len); m++) {
                            dk[c * kk + tap] = src[(m - m0) * ld];
                            if (++c == Cg) {
                                c = 0;
                                tap++;
                            }
                        }
                    }
                }
                continue;
            }
            /* this chunk's sums into its HWIO copy of dW (chunk 0's into dW itself when that is
             * HWIO) */
            T *dst = (in_place && chunk == 0 ? gw : partial + (chunk - in_place) * wsize) + g * Kg;
            for (fc_index b = b0; b < b1; b++) {
                const fc_index s = b / mblocks, m0 = (b % mblocks) * FC_MR;
                for (fc_index m = m0; m < FC_MIN(m0 + FC_MR, sg.len); m++)
                    memcpy(dst + (s * sg.len + m) * K, acc + ((b - b0) * FC_MR + m - m0) * ld,
                           sizeof(T) * (size_t)Kg);
            }
        }
        fc_aligned_free(bp);
        fc_aligned_free(acc);
        fc_aligned_free(ap);
        fc_aligned_free(stage);
        free(a);
        FC_PRAGMA(omp barrier)
        if (!failed && in_place && chunks > 1) {
            /* gw + partial 1 + partial 2 + ..., in blocks of dW (whole vectors of adds) */
            FC_PRAGMA(omp for schedule(static))
            for (fc_index e0 = 0; e0 < wsize; e0 += 4096) {
                const fc_index e1 = FC_MIN(wsize, e0 + 4096);
                for (fc_index c = 1; c < chunks; c++) {
                    const T *part = partial + (c - 1) * wsize;
                    for (fc_index e = e0; e < e1; e++) gw[e] += part[e];
                }
            }
        } else if (!failed && copies) {
            /* dW[k][c][tap] = the chunks' sums of row tap * Cg + c, column k, in chunk order: per
             * block of 16 of dW's (c, tap) columns, the 16 rows' sums over the chunks as whole
             * rows of K (vector adds, in chunk order), then 16 x 16 blocks of them transposed
             * in registers into dW (one value at a time, the chunks' reads were strided by a
             * copy's size, a multiple of 4 KB on 64-channel layers that lands in one cache set) */
            const fc_index R = Cg * kk;
            T *rows16 = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * K));
            if (!rows16) {
                FC_PRAGMA(omp atomic write)
                failed = 1;
            }
            FC_PRAGMA(omp for schedule(static))
            for (fc_index r0 = 0; r0 < R; r0 += 16) {
                if (!rows16) continue;
                const fc_index r1 = FC_MIN(R, r0 + 16);
                for (fc_index r = r0; r < r1; r++) {
                    const fc_index c = r / kk, tap = r % kk;
                    const T *src = partial + (tap * Cg + c) * K;
                    T *sum = rows16 + (r - r0) * K;
                    memcpy(sum, src, sizeof(T) * (size_t)K);
                    for (fc_index ch = 1; ch < chunks; ch++)
                        for (fc_index k = 0; k < K; k++) sum[k] += src[ch * wsize + k];
                }
                FC_LOCAL(nhwc_transpose_rows)(rows16, r1 - r0, K, gw + r0, R);
            }
            fc_aligned_free(rows16);
        }
    }
    fc_aligned_free(partial);
    free(zero);
    fc_nhwc_segments_free(&sg);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The plan (conv2d_plan.c), its fallback (direct) if that met Inf or NaN, then the bias
 * gradient. */
int FC_FN(conv2d_nhwc_bwd_weight)(const fc_conv2d_params *p, const T *gy, const T *x, T *gw, T *gb,
                                  int nthreads) {
    fc_conv_plan plan;
    if (fc_conv2d_plan(FC_CONV_NHWC_BWD_WEIGHT, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    int rc = plan.algorithm == FC_CONV_DEPTHWISE
                 ? FC_LOCAL(conv2d_nhwc_bwd_weight_depthwise)(p, plan.tuning, gy, x, gw, nthreads)
                 : FC_NONFINITE;
    if (rc == FC_NONFINITE)
        rc = FC_LOCAL(conv2d_nhwc_bwd_weight_direct)(p, plan.tuning, gy, x, gw, nthreads);
    if (rc == FC_OK && gb) rc = FC_LOCAL(nhwc_bias_grad)(p, plan.tuning, gy, gb, nthreads);
    return rc;
}

#endif /* FC_CONV2D_NHWC_BWD_WEIGHT_H */
