/* conv2d_bwd_weight.h: the convolution weight and bias gradients,
 * dW^T[R, K] += col(X)[R, P] * dY^T[P, K] per image and group, with col(X) read in place from
 * the zero-padded stride phases of each image (conv2d_phases.h) by the rows microkernel (whole
 * output rows as segments, skipping the phase grid's padding columns, where a row fits a pixel
 * chunk), and dY^T packed once per pixel chunk for every task that reads it; the plain loops
 * (conv2d_plain.h) where the phases do not fit or X holds Inf or NaN.
 *
 * Loop structure: the batch is split into chunks, and consecutive chunks into slabs whose packed
 * dY^T fits half of weight_grad_pack_bytes (all of it for one slab). Per slab, dY^T is packed in
 * tasks of (image, group, pixel chunk: one panel in L1), then the tasks are (batch chunk, group,
 * block of input channels, part of the NR-wide panels of K), with no barrier after them: a thread
 * out of tasks packs the next slab into the other buffer. Where one task reads each chunk's dY^T
 * (one block, one part of K), no slabs: the task packs each pixel chunk just before its calls.
 * A task sums its images in a private MR-aligned accumulator: per image, its channels are split
 * into phases (the next image's input asked for into L2 meanwhile), then over pixel chunks, over
 * its panels of K, over MR rows of taps (a last panel of at most NR/2 channels on the half-width
 * rows kernel); where an image's reduction takes at most half of KC, per group of images instead
 * (one microkernel call sums over the group's images). Each chunk's sum is transposed into its
 * own copy of dW, and the copies are added in a fixed order at the end, so results do not depend
 * on the thread count. */
#ifndef FC_CONV2D_BWD_WEIGHT_H
#define FC_CONV2D_BWD_WEIGHT_H

#include "conv2d_depthwise.h"
#include "conv2d_gemm_ukernel.h"
#include "conv2d_pack.h"
#include "conv2d_phases.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "fc_template.h"

/* db[k] = sum of dY[:, k]: double partial sums keep float32 results at float32 accuracy, and
 * eight independent chains keep the adds from waiting on each other. With y (the output of a
 * forward pass that fused ReLU), dY passes through ReLU's gradient first, as relu_bwd on the
 * pre-activation: gz = dY where y > 0 or y is NaN, else 0 (y = ReLU(z) is > 0 or NaN exactly
 * where z is), written to gz and summed. */
static void FC_LOCAL(bias_grad)(const fc_conv2d_params *p, const fc_tuning *tn, const T *gy,
                                const T *y, T *gz, T *gb, int nthreads) {
    const fc_index P = p->out_h * p->out_w, K = p->out_channels;
    const int nt = fc_threads_for(nthreads, (double)p->batch * K * P, tn->stream_min_work, K);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index k = 0; k < K; k++) {
        double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (fc_index n = 0; n < p->batch; n++) {
            const T *row = gy + (n * K + k) * P;
            if (y) { /* the mask, into gz: then sum gz */
                const T *yr = y + (n * K + k) * P;
                T *zr = gz + (n * K + k) * P;
                for (fc_index q = 0; q < P; q++) zr[q] = yr[q] > 0 || yr[q] != yr[q] ? row[q] : 0;
                row = zr;
            }
            fc_index q = 0;
            for (; q + 8 <= P; q += 8)
                for (int u = 0; u < 8; u++) part[u] += (double)row[q + u];
            for (; q < P; q++) part[q % 8] += (double)row[q];
        }
        gb[k] = (T)(((part[0] + part[1]) + (part[2] + part[3])) +
                    ((part[4] + part[5]) + (part[6] + part[7])));
    }
}

/* dst[k * ld + r] = acc[r * kg_pad + k] for r < rows, k < Kg, in 16 x 16 blocks that stay in
 * cache on both sides; whole blocks transposed in registers where the file has them (element by
 * element, every read is a strided one, which shows where a layer has few pixels per image to
 * amortise its copy-out over). */
static void FC_LOCAL(transpose_out)(const T *acc, fc_index rows, fc_index Kg, fc_index kg_pad,
                                    T *dst, fc_index ld) {
    for (fc_index k0 = 0; k0 < Kg; k0 += 16)
        for (fc_index r0 = 0; r0 < rows; r0 += 16) {
            const fc_index k1 = FC_MIN(Kg, k0 + 16), r1 = FC_MIN(rows, r0 + 16);
#ifdef FC_HAVE_VEC16
            if (k1 - k0 == 16 && r1 - r0 == 16) {
                const T *src[16];
                for (int i = 0; i < 16; i++) src[i] = acc + (r0 + i) * kg_pad + k0;
                FC_LOCAL(transpose_block16)(src, dst + k0 * ld + r0, ld);
                continue;
            }
#endif
            for (fc_index k = k0; k < k1; k++)
                for (fc_index r = r0; r < r1; r++) dst[k * ld + r] = acc[r * kg_pad + k];
        }
}

/* dY^T of images [n0, n1) (every group, pixel chunks of qc grid pixels, L per image) as
 * [image][group][pixel chunk] at dst, chunks kg_pad * qc elements apart, shared among the team's
 * threads (an orphaned loop: every thread of the region calls it); with the barrier at its end. */
static void FC_LOCAL(pack_dyt_images)(const fc_conv2d_params *p, const T *gy, fc_index G,
                                      fc_index n0, fc_index n1, fc_index nq, fc_index qc,
                                      fc_index L, fc_index wph, T *dst) {
    const fc_index Kg = p->out_channels / G, P = p->out_h * p->out_w;
    const fc_index chunk = FC_CEIL_DIV(Kg, FC_NR) * FC_NR * qc;
    FC_PRAGMA(omp for schedule(dynamic, 1))
    for (fc_index t = 0; t < (n1 - n0) * G * nq; t++) {
        const fc_index qi = t % nq, g = (t / nq) % G, n = n0 + t / (nq * G);
        FC_NR_NAME(conv2d_pack_dyt)(gy + (n * p->out_channels + g * Kg) * P, Kg, P, p->out_w, wph,
                                    qi * qc, FC_MIN(qc, L - qi * qc), dst + t * chunk);
    }
}

/* dW on the stride phases; FC_NONFINITE when the phases hold an Inf or NaN, which the phase
 * grid's dropped columns would multiply by the zeros of dY there (0 * Inf = NaN where the exact
 * gradient never reads the element; the segments skip those columns, but the fallback is
 * settled for the algorithm, not the geometry). Each channel's phases are tested as they are
 * made, in cache (a test of X first read all of it once more: a twentieth of the pass on 32 x 32
 * images of 16 channels); a pointwise layer, read in place, is tested first. The first task to
 * find one stops the others, and the fallback rewrites dW. */
static int FC_LOCAL(conv2d_bwd_weight_direct)(const fc_conv2d_params *p, const fc_tuning *tn,
                                              const T *gy, const T *x, T *gw, int nthreads) {
    const int pointwise = FC_LOCAL(is_pointwise)(p); /* then the grid is X's own layout */
    if (pointwise &&
        !FC_LOCAL(all_finite)(tn, x, p->batch * p->in_channels * p->in_h * p->in_w, nthreads))
        return FC_NONFINITE;
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w, N = p->batch;
    const fc_index wsize = p->out_channels * R;
    const FC_LOCAL(phases_t) ph = FC_LOCAL(phase_geometry)(p);
    /* Whole output rows per pixel chunk, read as segments of OW pixels wph apart, where the grid
     * has padding columns and a row fits a chunk: the reduction then skips them (on 14 x 14
     * outputs with a 3x3 kernel, 2 of every 16 grid pixels) instead of multiplying zeros. */
    const int segmented = !pointwise && ph.wph > p->out_w && p->out_w <= tn->kc;
    const fc_index run = segmented ? p->out_w : 1; /* reduction steps per segment, at least */
    const fc_index L = p->out_h * (segmented ? p->out_w : ph.wph); /* reduction per image */
    const fc_index cb = FC_MAX(1, tn->task_rows / kk);             /* channels per task */
    const fc_index cblocks = FC_CEIL_DIV(Cg, cb);
    const fc_index rows_max = FC_CEIL_DIV(FC_MIN(cb, Cg) * kk, FC_MR) * FC_MR;
    const fc_index kg_pad = FC_CEIL_DIV(Kg, FC_NR) * FC_NR;
    /* reduction steps per packed dY^T chunk (one panel stays in L1), in equal chunks of whole
     * segments */
    const fc_index units = L / run, unit_chunk = FC_MAX(1, tn->kc / run);
    const fc_index qc = run * FC_CEIL_DIV(units, FC_CEIL_DIV(units, unit_chunk));
    const fc_index nq = FC_CEIL_DIV(L, qc), packed_chunk = kg_pad * qc;
    /* Batch chunks: enough for weight_grad_tasks tasks in all (a 16-core machine's worth), no
     * more, since each costs a private copy of dW to transpose and add; within
     * weight_grad_private_bytes of private sums. Fixed by the problem, not by the thread count,
     * so results do not depend on it. */
    fc_index chunks = FC_MIN(N, FC_MAX(2, FC_CEIL_DIV(tn->weight_grad_tasks, G * cblocks)));
    /* Then, on big layers, up to four times as many tasks, each still of task_macs products or
     * more: a thread that a busy machine holds back delays the others at the end of a slab by one
     * short task, not by a sixteenth of the pass (smaller layers' tasks are short already, and
     * splitting them further costs more than it saves). First more batch chunks, while each
     * still reduces over chunk_pixels pixels (its copy of dW to clear, transpose and add is then
     * small beside its products); then the panels of K split between tasks, which repeats only a
     * channel block's phases for each part. */
    const double task_macs = (double)(1 << 25), chunk_pixels = 2048;
    const fc_index task_goal = (fc_index)FC_MIN(4.0 * (double)tn->weight_grad_tasks,
                                                (double)N * p->out_channels * P * R / task_macs);
    chunks = FC_MAX(chunks, FC_MIN(FC_MIN(N, (fc_index)((double)(N * P) / chunk_pixels)),
                                   FC_CEIL_DIV(task_goal, G * cblocks)));
    while (chunks > 1 && (chunks - 1) * wsize * (fc_index)sizeof(T) > tn->weight_grad_private_bytes)
        chunks--;
    if (chunks < 1) chunks = 1;
    const fc_index panels = kg_pad / FC_NR;
    const fc_index part_panels = FC_CEIL_DIV(
        panels, FC_MAX(1, FC_MIN(panels, FC_CEIL_DIV(task_goal, chunks * G * cblocks))));
    const fc_index kparts = FC_CEIL_DIV(panels, part_panels);
    /* Slabs of whole batch chunks whose packed dY^T fits weight_grad_pack_bytes (at least one
     * chunk): every channel block's task reads the same packed dY^T, where packing it per task
     * repeated it once per block. Where the batch takes more than one slab, two buffers of half
     * that each: the next slab is packed into one while the last tasks of this one still read
     * the other (below). */
    const fc_index image_packed = G * nq * packed_chunk;
    /* Where one task reads each batch chunk's dY^T (one block of channels, one part of K:
     * ResNet-14's 16- and 32-channel stages), it packs each pixel chunk itself just before
     * reading it: a slab's dY^T, written out to L3 and read back once, was a fifth of those
     * passes. */
    const int own_pack = cblocks * kparts == 1;
    const fc_index dyt_wph = segmented ? p->out_w : ph.wph; /* the grid dY^T is packed on */
    const fc_index chunk_images = FC_CEIL_DIV(N, chunks);
    const fc_index chunk_bytes = (fc_index)sizeof(T) * chunk_images * image_packed;
    fc_index per_slab = FC_MAX(1, FC_MIN(chunks, tn->weight_grad_pack_bytes / chunk_bytes));
    if (per_slab < chunks) per_slab = FC_MAX(1, tn->weight_grad_pack_bytes / 2 / chunk_bytes);
    if (own_pack) per_slab = chunks;
    const fc_index slab_bufs = own_pack ? 0 : per_slab < chunks ? 2 : 1;
    /* Images per microkernel call: where an image's reduction takes at most half of KC (few
     * pixels, so two images or more fit in one call), each call reduces over the phases of up to
     * KC/L images, made together, its accumulators kept in registers across the images instead of
     * added to the task's sum after each image's few steps; the images' B panels together stay
     * within KC steps, in L1. The images per call follow from the problem, not the thread count. */
    const fc_index img_x = FC_MIN(cb, Cg) * ph.channel; /* one image's phases in a task */
    const fc_index ib = pointwise || nq > 1 ? 1 : FC_MAX(1, FC_MIN(chunk_images, tn->kc / L));
    int failed = 0, nonfinite = 0;

    T *partial = NULL;
    if (chunks > 1) {
        partial = (T *)fc_aligned_alloc(sizeof(T) * (size_t)((chunks - 1) * wsize));
        if (!partial) return FC_ENOMEM;
    }
    const fc_index slab_size = per_slab * chunk_images * image_packed; /* elements per buffer */
    T *packed = own_pack ? NULL
                         : (T *)fc_aligned_alloc(sizeof(T) * (size_t)(slab_bufs * slab_size));
    if (!packed && !own_pack) {
        fc_aligned_free(partial);
        return FC_ENOMEM;
    }
    const int nt = fc_threads_for(nthreads, (double)N * p->out_channels * P * R, tn->conv_min_work,
                                  FC_MIN(chunks, per_slab) * G * cblocks * kparts);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        /* A thread's phases, zeroed once: where they hold padding depends on the geometry
         * alone, so each channel is then split from inside the input only
         * (split_phases_inside), not with its padding rows and margins written again, which on
         * small images (16 x 16 phases of 14 x 14 channels) was most of the split's time. */
        T *xph = pointwise ? NULL : (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ib * img_x));
        if (xph) memset(xph, 0, sizeof(T) * (size_t)(ib * img_x));
        T *acc = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * kg_pad));
        fc_index *taps = (fc_index *)malloc(sizeof(fc_index) * (size_t)rows_max);
        /* own_pack: a pixel chunk of dY^T of a call's images */
        T *tpack = own_pack ? (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ib * packed_chunk)) : NULL;
        const int ok = (xph || pointwise) && acc && taps && (tpack || !own_pack);
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        if (!own_pack)
            FC_LOCAL(pack_dyt_images)(p, gy, G, 0, FC_MIN(chunks, per_slab) * N / chunks, nq, qc, L,
                                      dyt_wph, packed);
        for (fc_index s0 = 0; s0 < chunks; s0 += per_slab) {
            const fc_index s1 = FC_MIN(chunks, s0 + per_slab);
            const fc_index slab_n0 = s0 * N / chunks;
            const T *slab_packed = own_pack ? NULL : packed + (s0 / per_slab % 2) * slab_size;
            /* The slab's tasks, without a barrier after them: a thread out of tasks packs the
             * next slab into the other buffer while the others finish theirs (the pack's barrier
             * then also ends this slab's tasks, so the slab after next may reuse this buffer).
             * Packing is mostly waiting on memory, and each slab's last tasks left the thread
             * that finished first idle. */
            FC_PRAGMA(omp for schedule(dynamic, 1) nowait)
            for (fc_index t = 0; t < (s1 - s0) * G * cblocks * kparts; t++) {
                int stop;
                FC_PRAGMA(omp atomic read)
                stop = nonfinite;
                if (!ok || stop) continue;
                const fc_index kp = t % kparts, blk = (t / kparts) % cblocks;
                const fc_index g = (t / (kparts * cblocks)) % G;
                const fc_index chunk = s0 + t / (kparts * cblocks * G);
                const fc_index kp0 = kp * part_panels * FC_NR;
                const fc_index kp1 = FC_MIN(kg_pad, kp0 + part_panels * FC_NR);
                const fc_index c0 = blk * cb, c1 = FC_MIN(Cg, c0 + cb);
                const fc_index rows = (c1 - c0) * kk, n0 = chunk * N / chunks;
                const fc_index n1 = (chunk + 1) * N / chunks;
                /* where each of this task's rows (taps) starts in its phases (for a pointwise
                 * layer, in X itself: the grid is the image); padding rows read the last row.
                 * The first channel's taps, then each next channel's a channel of phases on, not
                 * tap_offset's divisions for every row, which cost on small images, where a
                 * task's rows see few pixels */
                for (fc_index t = 0; t < kk; t++)
                    taps[t] = pointwise
                                  ? 0
                                  : FC_LOCAL(tap_offset)(p, &ph, t / p->kernel_w, t % p->kernel_w);
                for (fc_index r = kk; r < rows; r++)
                    taps[r] = taps[r - kk] + (pointwise ? HW : ph.channel);
                for (fc_index r = rows; r < rows_max; r++) taps[r] = taps[rows - 1];
                for (fc_index r = 0; r < rows_max; r++) /* this part's columns */
                    memset(acc + r * kg_pad + kp0, 0, sizeof(T) * (size_t)(kp1 - kp0));
                int bad = 0;
                for (fc_index nb = n0; nb < n1; nb += ib) {
                    const fc_index imgs = FC_MIN(ib, n1 - nb);
                    const T *a_base = pointwise ? x + (nb * p->in_channels + g * Cg + c0) * HW
                                                : xph;
                    const T *bp = own_pack
                                      ? tpack
                                      : slab_packed + ((nb - slab_n0) * G + g) * nq * packed_chunk;
                    const fc_index b_img = own_pack ? packed_chunk : G * nq * packed_chunk;
                    for (fc_index n = nb; !pointwise && n < nb + imgs; n++) {
                        const T *xg = x + (n * p->in_channels + g * Cg) * HW;
                        for (fc_index c = c0; c < c1; c++) {
                            T *xpc = xph + (n - nb) * img_x + (c - c0) * ph.channel;
                            FC_LOCAL(split_phases_inside)(p, &ph, xg + c * HW, xpc);
                            for (fc_index e = 0; e < ph.channel; e++) /* Inf - Inf, NaN - NaN */
                                bad |= (xpc[e] - xpc[e]) != (xpc[e] - xpc[e]);
                        }
                    }
                    if (bad) {
                        FC_PRAGMA(omp atomic write)
                        nonfinite = 1;
                        break;
                    }
                    /* The input this thread splits next, asked for into L2 a slice per
                     * microkernel call: the next images of this task, else the first of the
                     * task it likely takes next (the threads take tasks in turn). split_phases
                     * otherwise waits on each line from memory (most of its time on 32 x 32
                     * images). More than an eighth of L2 (vgg-64's 32 channels of 56 x 56:
                     * 400 KB) over the last quarter of the calls only: asked for from the first,
                     * its lines were the oldest in L2 by the end and evicted before the split
                     * came to them, and they had evicted the phases and panels being read. A
                     * wrong guess costs a few idle reads. */
                    const char *ahead = NULL;
                    size_t ahead_left = 0, ahead_slice = 0, ahead_skip = 0;
                    if (!pointwise) {
                        fc_index an = nb + imgs, ag = g, ac0 = c0, ac1 = c1;
                        if (an >= n1) {
                            const fc_index tnext = t + nt,
                                           ach = s0 + tnext / (kparts * cblocks * G);
                            ag = (tnext / (kparts * cblocks)) % G;
                            ac0 = (tnext / kparts) % cblocks * cb, ac1 = FC_MIN(Cg, ac0 + cb);
                            an = ach < chunks ? ach * N / chunks : N;
                        }
                        if (an < N) {
                            ahead = (const char *)(x + (an * p->in_channels + ag * Cg + ac0) * HW);
                            ahead_left = sizeof(T) * (size_t)((ac1 - ac0) * HW);
                            size_t calls = (size_t)(nq * FC_CEIL_DIV(kp1 - kp0, FC_NR) *
                                                    FC_CEIL_DIV(rows, FC_MR));
                            if (ahead_left > (size_t)(128 << 10) && calls >= 4) {
                                ahead_skip = calls - calls / 4;
                                calls /= 4;
                            }
                            ahead_slice = FC_CEIL_DIV(FC_CEIL_DIV(ahead_left, calls), 64) * 64;
                        }
                    }
                    for (fc_index qi = 0; qi < nq; qi++, bp += own_pack ? 0 : packed_chunk) {
                        const fc_index q0 = qi * qc, kc = FC_MIN(qc, L - q0);
                        for (fc_index n = nb; own_pack && n < nb + imgs; n++)
                            FC_NR_NAME(conv2d_pack_dyt)(gy + (n * p->out_channels + g * Kg) * P, Kg,
                                                        P, p->out_w, dyt_wph, q0, kc,
                                                        tpack + (n - nb) * packed_chunk);
                        const fc_index segs = segmented ? kc / run : 1;
                        const fc_index a0 = segmented ? q0 / run * ph.wph : q0;
                        /* while the MR-row blocks pass over one NR panel (in L1), each asks
                         * for its share of the next: the panel's first pass would otherwise
                         * wait on its reads from L3 */
                        const size_t panel = sizeof(T) * (size_t)(kc * FC_NR);
                        const size_t slice = FC_CEIL_DIV(panel, (size_t)FC_CEIL_DIV(rows, FC_MR));
                        for (fc_index k0 = kp0; k0 < kp1; k0 += FC_NR) {
                            const char *next = (const char *)(bp + k0 * kc) + panel;
                            const int last = k0 + FC_NR >= kp1;
                            for (fc_index m0 = 0; m0 < rows; m0 += FC_MR) {
                                const T *a[FC_MR];
                                for (int i = 0; i < FC_MR; i++) a[i] = a_base + taps[m0 + i] + a0;
                                if (!last) fc_prefetch(next + (m0 / FC_MR) * slice, slice);
                                if (ahead_skip)
                                    ahead_skip--;
                                else if (ahead_left) {
                                    const size_t b = FC_MIN(ahead_slice, ahead_left);
                                    fc_prefetch_l2(ahead, b);
                                    ahead += b, ahead_left -= b;
                                }
                                FC_LOCAL(gemm_rows_tile)(Kg - k0, imgs, img_x, b_img, segs,
                                                         kc / segs, ph.wph, a, bp + k0 * kc,
                                                         acc + m0 * kg_pad + k0, kg_pad);
                            }
                        }
                    }
                }
                /* this chunk's sum, transposed into its copy of dW (chunk 0 writes dW itself) */
                T *dst = (chunk == 0 ? gw : partial + (chunk - 1) * wsize) + g * Kg * R + c0 * kk;
                FC_LOCAL(transpose_out)(acc + kp0, rows, FC_MIN(Kg, kp1) - kp0, kg_pad,
                                        dst + kp0 * R, R);
            }
            if (s1 < chunks)
                FC_LOCAL(pack_dyt_images)(p, gy, G, s1 * N / chunks,
                                          FC_MIN(chunks, s1 + per_slab) * N / chunks, nq, qc, L,
                                          dyt_wph, packed + (s1 / per_slab % 2) * slab_size);
        }
        fc_aligned_free(xph);
        fc_aligned_free(acc);
        fc_aligned_free(tpack);
        free(taps);
        FC_PRAGMA(omp barrier)
        if (!failed && partial) { /* gw + partial 1 + partial 2 + ..., in blocks of dW */
            FC_PRAGMA(omp for schedule(static))
            for (fc_index e0 = 0; e0 < wsize; e0 += 4096) {
                const fc_index e1 = FC_MIN(wsize, e0 + 4096);
                for (fc_index c = 1; c < chunks; c++) {
                    const T *part = partial + (c - 1) * wsize;
                    for (fc_index e = e0; e < e1; e++) gw[e] += part[e];
                }
            }
        }
    }
    fc_aligned_free(packed);
    fc_aligned_free(partial);
    return failed ? FC_ENOMEM : nonfinite ? FC_NONFINITE : FC_OK;
}

static int FC_LOCAL(conv2d_bwd_weight_run)(fc_conv_algorithm algorithm, const fc_conv2d_params *p,
                                           const fc_tuning *tn, const T *gy, const T *x, T *gw,
                                           int nthreads) {
    if (algorithm == FC_CONV_PLAIN)
        return FC_LOCAL(conv2d_bwd_weight_plain)(p, tn, gy, x, gw, nthreads);
    if (algorithm == FC_CONV_DEPTHWISE || algorithm == FC_CONV_GROUPED) /* C/groups = 1, any */
        return FC_LOCAL(conv2d_bwd_weight_grouped)(p, tn, gy, x, gw, nthreads);
    return FC_LOCAL(conv2d_bwd_weight_direct)(p, tn, gy, x, gw, nthreads);
}

/* The algorithm the plan (conv2d_plan.c) gives, then its fallback if that met Inf or NaN; then
 * the bias gradient. */
int FC_FN(conv2d_bwd_weight)(const fc_conv2d_params *p, const T *gy, const T *x, T *gw, T *gb,
                             int nthreads) {
    fc_conv_plan plan;
    if (fc_conv2d_plan(FC_CONV_BWD_WEIGHT, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    int rc = FC_LOCAL(conv2d_bwd_weight_run)(plan.algorithm, p, plan.tuning, gy, x, gw, nthreads);
    if (rc == FC_NONFINITE)
        rc = FC_LOCAL(conv2d_bwd_weight_run)(plan.nonfinite, p, plan.tuning, gy, x, gw, nthreads);
    if (rc == FC_OK && gb) FC_LOCAL(bias_grad)(p, plan.tuning, gy, NULL, NULL, gb, nthreads);
    return rc;
}

/* The backward pass of the fused ReLU (conv2d_relu): gz = dY through ReLU's gradient at the
 * forward output y, and the bias gradient summed from gz in the same pass; the input and weight
 * gradients then run on gz. */
int FC_FN(conv2d_relu_bwd)(const fc_conv2d_params *p, const T *gy, const T *y, T *gz, T *gb,
                           int nthreads) {
    FC_LOCAL(bias_grad)(p, &fc_tuning_table[FC_ISA_ID][FC_DT_ID], gy, y, gz, gb, nthreads);
    return FC_OK;
}

#endif /* FC_CONV2D_BWD_WEIGHT_H */
