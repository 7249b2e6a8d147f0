/* conv2d_nhwc_winograd.h: the channels-last forward pass by Winograd's F(2x2, 3x3) (3x3 kernels,
 * stride 1, dilation 1), conv2d_winograd.h's algorithm with the channels as the vector
 * dimension: each 2 x 2 block of outputs ("tile") is Y = A^T [ (G g G^T) .* (B^T d B) ] A from its
 * 4 x 4 input pixels d, the 16 element-wise products summed over input channels as 16 GEMMs
 * M_e[tiles, K] = V_e[tiles, C] U_e[C, K]. Channels last, the transforms of a tile work on whole
 * pixel rows (C or K contiguous values), so they vectorise across channels one tile at a time.
 *
 * Loop structure: U = G g G^T of every kernel is transformed once per call (conv2d_winograd.h's
 * formulas, one output channel per lane) into B panels U_e [group][e][K block][C][NR]. Tasks are
 * (group, block of TB tiles counted across the batch, part of the NR-wide K blocks: more than one
 * part only when the blocks are fewer than twice the threads). A task transforms each tile's 16
 * input pixels, read in place (a tile crossing the padding through a pointer per pixel, zeros
 * outside the image), into V [e][tile][C] (a GEMM's rows, consecutive); runs the 16 GEMMs on the
 * indirect GEMM microkernel (conv2d_nhwc_ukernel.h; the half-width one for K blocks of at most NR/2
 * channels), A's rows being the tiles' V_e rows, into M [e][tile][K]; and transforms each tile's M
 * into its 2 x 2 output pixels, written to Y's rows, plus bias. FC_NONFINITE when x or w holds an
 * Inf or NaN (Inf - Inf in the transforms would give NaN where the exact sum is +-Inf): the plan's
 * fallback, the direct pass, then redoes the call. */
#ifndef FC_CONV2D_NHWC_WINOGRAD_H
#define FC_CONV2D_NHWC_WINOGRAD_H

#include "conv2d_nhwc_ukernel.h"
#include "conv2d_weights.h"
#include "conv2d_winograd_kernel.h"
#include "fc_template.h"

/* v[e * ld + c] = (B^T d B)[e] for channels c < n of one tile, B^T = [1 0 -1 0; 0 1 1 0;
 * 0 -1 1 0; 0 1 0 -1]: the tile's pixel (r, q) at d + r * rs + q * ps in place in x (px NULL),
 * one base pointer and two strides, where a pointer per pixel left too few registers and
 * reloaded the pointers from the stack every step; or, for a tile that crosses the padding, at
 * px[r * 4 + q] (x's pixel, or a row of zeros outside the image), rather than staging a copy of
 * its pixels: GCC turns any copy loop into a memcpy call per pixel, which cost a tenth of a
 * 16-channel layer's time (a fifth of its tiles cross the padding at 32 x 32). Returns nonzero
 * when an input is Inf or NaN (the inputs' sum is then Inf or NaN; a finite sum past the dtype's
 * range also answers nonzero, which only sends the call to the exact fallback). */
static inline __attribute__((always_inline)) int FC_LOCAL(nhwc_winograd_input_body)(
    const T *restrict d, fc_index rs, fc_index ps, const T *const *px, fc_index n, T *restrict v,
    fc_index ld) {
    int bad = 0;
    FC_PRAGMA(GCC ivdep)
    for (fc_index c = 0; c < n; c++) {
        T x[16], t[16], sum = 0;
        for (int k = 0; k < 16; k++) {
            x[k] = px ? px[k][c] : d[(k / 4) * rs + (k % 4) * ps + c];
            sum += x[k];
        }
        for (int q = 0; q < 4; q++) { /* B^T d: the rows' combinations */
            t[q] = x[q] - x[8 + q];
            t[4 + q] = x[4 + q] + x[8 + q];
            t[8 + q] = x[8 + q] - x[4 + q];
            t[12 + q] = x[4 + q] - x[12 + q];
        }
        for (int i = 0; i < 4; i++) { /* (B^T d) B: each combination's columns */
            const T *r = t + 4 * i;
            v[(4 * i) * ld + c] = r[0] - r[2];
            v[(4 * i + 1) * ld + c] = r[1] + r[2];
            v[(4 * i + 2) * ld + c] = r[2] - r[1];
            v[(4 * i + 3) * ld + c] = r[1] - r[3];
        }
        bad |= (sum - sum) != (sum - sum);
    }
    return bad;
}

static int FC_LOCAL(nhwc_winograd_input_tile)(const T *restrict d, fc_index rs, fc_index ps,
                                              fc_index n, T *restrict v, fc_index ld) {
    return FC_LOCAL(nhwc_winograd_input_body)(d, rs, ps, NULL, n, v, ld);
}

static int FC_LOCAL(nhwc_winograd_input_edge)(const T *const *px, fc_index n, T *restrict v,
                                              fc_index ld) {
    return FC_LOCAL(nhwc_winograd_input_body)(NULL, 0, 0, px, n, v, ld);
}

/* Ask for the n bytes that follow p + FC_PREFETCH_AHEAD, for writing, stopping at end: as
 * fc_prefetch_ahead (fc_internal.h) for reads. */
static inline void FC_LOCAL(nhwc_wino_prefetch_write)(const void *p, size_t n, const void *end) {
#if defined(__GNUC__) || defined(__clang__)
    const uintptr_t a = (uintptr_t)p + FC_PREFETCH_AHEAD, e = (uintptr_t)end;
    for (uintptr_t b = 0; b < n && a + b < e; b += 64)
        __builtin_prefetch((const void *)(a + b), 1, 3);
#else
    (void)p, (void)n, (void)end;
#endif
}

/* A tile's place, counted across the batch: image n, tile row th, tile column tw. Stepped from
 * tile to tile of a block rather than divided out of the tile's index, two divisions per tile
 * being as long as a 16-channel tile's transform. */
typedef struct {
    fc_index n, th, tw;
} FC_LOCAL(wino_tile_pos);

static inline FC_LOCAL(wino_tile_pos) FC_LOCAL(wino_tile_at)(fc_index t, fc_index TH, fc_index TW) {
    FC_LOCAL(wino_tile_pos) at = {t / (TH * TW), (t % (TH * TW)) / TW, t % TW};
    return at;
}

static inline void FC_LOCAL(wino_tile_next)(FC_LOCAL(wino_tile_pos) *at, fc_index TH, fc_index TW) {
    if (++at->tw == TW) {
        at->tw = 0;
        if (++at->th == TH) {
            at->th = 0;
            at->n++;
        }
    }
}

/* Y = A^T M A + bias, A^T = [1 1 1 0; 0 1 -1 -1], for channels k < n of one tile whose M_e row is
 * m + e * ld: output pixel (r, q) to y[r * 2 + q]. bias is never NULL (a call without one passes
 * zeros, which add +0 as before): `bias ? bias[k] : 0` inside the loop became a masked load of
 * bias that, with bias NULL, had every masked-off lane at a faulting address: by the figures a
 * microcode assist per vector on Zen 5 (half the time of the input gradient, which has no bias,
 * at 16 channels). */
static void FC_LOCAL(nhwc_winograd_output_tile)(const T *restrict m, fc_index ld, fc_index n,
                                                const T *restrict bias, T *const *y) {
    T *restrict y00 = y[0], *restrict y01 = y[1], *restrict y10 = y[2], *restrict y11 = y[3];
    FC_PRAGMA(GCC ivdep)
    for (fc_index k = 0; k < n; k++) {
        T s[4], d[4];
        for (int j = 0; j < 4; j++) { /* A^T M: the rows' sums */
            s[j] = m[j * ld + k] + (m[(4 + j) * ld + k] + m[(8 + j) * ld + k]);
            d[j] = m[(4 + j) * ld + k] - (m[(8 + j) * ld + k] + m[(12 + j) * ld + k]);
        }
        const T b = bias[k];
        y00[k] = s[0] + (s[1] + s[2]) + b;
        y01[k] = s[1] - (s[2] + s[3]) + b;
        y10[k] = d[0] + (d[1] + d[2]) + b;
        y11[k] = d[1] - (d[2] + d[3]) + b;
    }
}

/* One (group, e)'s B panels, Kg / NR of them, plus 3 cache lines: the 16 U_e written together
 * would otherwise lie a power of two apart, in the same L1 sets. */
static fc_index FC_LOCAL(nhwc_winograd_u_stride)(const fc_conv2d_params *p) {
    const fc_index Cg = p->in_channels / p->groups, Kg = p->out_channels / p->groups;
    return FC_CEIL_DIV(Kg, FC_NR) * Cg * FC_NR + 48;
}

/* Values per tap in one stage of the kernel transform: FC_NHWC_WINO_STAGE / NR input channels'
 * taps, NR lanes each, stay in L1 (the stage is 9 of these). */
#define FC_NHWC_WINO_STAGE 256

/* U_e = G g G^T of output channels [kb NR, kb NR + NR) of group g, into their B panels:
 * up[(g * 16 + e) * u_stride + (kb * Cg + c) * NR + lane], zero past Kg. As the NCHW one
 * (conv2d_winograd.h, for the same reason): the taps of a chunk of input channels are copied
 * kernel by kernel from OIHW or HWIO (through the layout's strides) into a stage in the panels'
 * order (channel, lane), then winograd_kernel_from_stage writes each U_e's panel rows of the
 * chunk in order. Returns nonzero if a result is Inf or NaN. */
static int FC_LOCAL(nhwc_winograd_kernel_panel)(const fc_conv2d_params *p, const T *w, fc_index g,
                                                fc_index kb, T *up) {
    const fc_index Cg = p->in_channels / p->groups, Kg = p->out_channels / p->groups;
    const fc_index es = FC_LOCAL(nhwc_winograd_u_stride)(p); /* U_e to U_e+1 */
    const fc_index nk = FC_MIN(FC_NR, Kg - kb * FC_NR), chunk = FC_NHWC_WINO_STAGE / FC_NR;
    const fc_weight_layout ws = fc_weight_layout_of(p);
    const T *src = w + (g * Kg + kb * FC_NR) * ws.k_stride;
    T *restrict dst = up + g * 16 * es + kb * Cg * FC_NR;
    T stage[9][FC_NHWC_WINO_STAGE];
    int bad = 0;
    for (fc_index c0 = 0; c0 < Cg; c0 += chunk) {
        const fc_index cn = FC_MIN(chunk, Cg - c0), n = cn * FC_NR;
        for (fc_index i = 0; i < FC_NR; i++)
            for (fc_index c = 0; c < cn; c++)
                for (int tap = 0; tap < 9; tap++) /* the lanes past Kg are zeros */
                    stage[tap][c * FC_NR + i] =
                        i < nk ? src[i * ws.k_stride + (c0 + c) * ws.c_stride + tap * ws.tap_stride]
                               : (T)0;
        bad |= FC_LOCAL(winograd_kernel_from_stage)(stage[0], FC_NHWC_WINO_STAGE, n,
                                                    dst + c0 * FC_NR, es);
    }
    return bad;
}

static int FC_LOCAL(conv2d_nhwc_fwd_winograd)(const fc_conv2d_params *p, const fc_tuning *tn,
                                              const T *x, const T *w, const T *bias, T *y,
                                              int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index C = p->in_channels, K = p->out_channels, H = p->in_h, W = p->in_w;
    const fc_index OH = p->out_h, OW = p->out_w;
    const fc_index TH = FC_CEIL_DIV(OH, 2), TW = FC_CEIL_DIV(OW, 2), TI = TH * TW;
    const fc_index total = p->batch * TI; /* tiles, counted across the batch */
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_NR);
    /* M's rows: the K blocks' NR columns, or NR/2 when the one K block runs on the half-width
     * tile (the columns it writes): M then takes half the cache it did, its rows no longer
     * half empty */
    const int half = FC_HAVE_GEMM_HALF && Kg <= FC_NR / 2;
    const fc_index kg_pad = half ? FC_NR / 2 : kblocks * FC_NR;
    const fc_index TB = FC_CEIL_DIV(FC_MIN(tn->winograd_block, total), FC_MR) * FC_MR;
    const fc_index nblocks = FC_CEIL_DIV(total, TB);
    /* output channels split too when tile blocks alone leave threads idle (batch 1, few pixels):
     * each part transforms its block's inputs again (a small cost beside its GEMMs), and every
     * output is still summed by one task in one order, so results do not depend on the split */
    const fc_index kparts = FC_MAX(
        1, FC_MIN(kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads, G * nblocks)));
    const fc_index ntasks = G * nblocks * kparts;
    const fc_index panel = Cg * FC_NR, u_stride = FC_LOCAL(nhwc_winograd_u_stride)(p);
    /* V [e][tile][C] and M [e][tile][K]: the 16 transforms are written together, so their
     * strides are skewed off powers of two by 3 cache lines (as conv2d_winograd.h's) */
    const fc_index v_stride = TB * Cg + 48, m_stride = TB * kg_pad + 48;
    int failed = 0, nonfinite = 0;
    const T *xend = x + p->batch * H * W * C, *yend = y + p->batch * OH * OW * K;

    T *up = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * 16 * u_stride));
    /* the padding pixels' row, and the bias of a call without one */
    T *zero = (T *)calloc((size_t)FC_MAX(Cg, Kg), sizeof(T));
    if (!up || !zero) {
        fc_aligned_free(up);
        free(zero);
        return FC_ENOMEM;
    }

    const int nt = fc_threads_for(nthreads, (double)p->batch * K * OH * OW * Cg * 9,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        /* U_e = G g G^T into the NR-wide B panels, one (group, K block) at a time */
        FC_PRAGMA(omp for schedule(static))
        for (fc_index gk = 0; gk < G * kblocks; gk++) {
            if (FC_LOCAL(nhwc_winograd_kernel_panel)(p, w, gk / kblocks, gk % kblocks, up)) {
                FC_PRAGMA(omp atomic write)
                nonfinite = 1;
            }
        }
        T *vb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * v_stride));
        T *mb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * m_stride));
        T *junk = (T *)fc_aligned_alloc(sizeof(T) * (size_t)Kg); /* outputs past the image */
        const int ok = vb && mb && junk;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            int skip;
            FC_PRAGMA(omp atomic read)
            skip = nonfinite; /* the call is redone anyway */
            if (!ok || skip) continue;
            const fc_index part = t % kparts, blk = (t / kparts) % nblocks;
            const fc_index g = t / (kparts * nblocks), t0 = blk * TB, nb = FC_MIN(TB, total - t0);
            const fc_index kb0 = part * kblocks / kparts, kb1 = (part + 1) * kblocks / kparts;
            const fc_index k0 = kb0 * FC_NR, nk = FC_MIN(kb1 * FC_NR, Kg) - k0;
            int bad = 0;
            FC_LOCAL(wino_tile_pos) at = FC_LOCAL(wino_tile_at)(t0, TH, TW);
            for (fc_index u = 0; u < nb; u++, FC_LOCAL(wino_tile_next)(&at, TH, TW)) {
                const fc_index ih0 = 2 * at.th - p->pad_top, iw0 = 2 * at.tw - p->pad_left;
                if (ih0 >= 0 && iw0 >= 0 && ih0 + 4 <= H && iw0 + 4 <= W) {
                    const T *d = x + ((at.n * H + ih0) * W + iw0) * C + g * Cg;
                    /* the two pixels of the tile's last two rows that the next tile reads
                     * first, FC_PREFETCH_AHEAD bytes on (two rows on at ResNet-14's sizes):
                     * left to the hardware prefetchers, the transforms waited on x and Y */
                    fc_prefetch_ahead(d + 2 * W * C + 2 * C, sizeof(T) * (size_t)(2 * Cg), xend);
                    fc_prefetch_ahead(d + 3 * W * C + 2 * C, sizeof(T) * (size_t)(2 * Cg), xend);
                    bad |= FC_LOCAL(nhwc_winograd_input_tile)(d, W * C, C, Cg, vb + u * Cg,
                                                              v_stride);
                } else { /* a tile crossing the padding: zeros outside the image */
                    const T *px[16];
                    for (int r = 0; r < 4; r++)
                        for (int q = 0; q < 4; q++) {
                            const fc_index ih = ih0 + r, iw = iw0 + q;
                            px[r * 4 + q] = (fc_uindex)ih < (fc_uindex)H &&
                                                    (fc_uindex)iw < (fc_uindex)W
                                                ? x + ((at.n * H + ih) * W + iw) * C + g * Cg
                                                : zero;
                        }
                    bad |= FC_LOCAL(nhwc_winograd_input_edge)(px, Cg, vb + u * Cg, v_stride);
                }
            }
            if (bad) {
                FC_PRAGMA(omp atomic write)
                nonfinite = 1;
                continue;
            }
            /* the 16 GEMMs: M_e[tile][k] = sum_c V_e[tile][c] U_e[c][k]; the rows past nb in the
             * last MR block are computed and dropped. A K block of at most NR/2 channels (every
             * block of a 16-channel layer) runs on the half-width tile instead of multiplying
             * the panel's zero half; its M columns past nr are left unwritten, and the output
             * transform reads only the block's first nk */
            for (int e = 0; e < 16; e++)
                for (fc_index kb = kb0; kb < kb1; kb++) {
                    const T *ue = up + (g * 16 + e) * u_stride + kb * panel;
                    const int nr = FC_HAVE_GEMM_HALF && Kg - kb * FC_NR <= FC_NR / 2 ? FC_NR / 2
                                                                                     : FC_NR;
                    for (fc_index q = 0; q < nb; q += FC_MR) {
                        const T *a[FC_MR];
                        for (int i = 0; i < FC_MR; i++) a[i] = vb + e * v_stride + (q + i) * Cg;
                        FC_IGEMM(1, Cg, a, ue, mb + e * m_stride + q * kg_pad + kb * FC_NR, kg_pad,
                                 FC_MR, nr, 0, NULL);
                    }
                }
            at = FC_LOCAL(wino_tile_at)(t0, TH, TW);
            for (fc_index u = 0; u < nb; u++, FC_LOCAL(wino_tile_next)(&at, TH, TW)) {
                const fc_index oh0 = 2 * at.th, ow0 = 2 * at.tw;
                T *out[4];
                for (int r = 0; r < 2; r++)
                    for (int q = 0; q < 2; q++)
                        out[r * 2 + q] = oh0 + r < OH && ow0 + q < OW
                                             ? y + ((at.n * OH + oh0 + r) * OW + ow0 + q) * K +
                                                   g * Kg + k0
                                             : junk;
                for (int i = 0; i < 4; i++) /* the output pixels FC_PREFETCH_AHEAD bytes on */
                    if (out[i] != junk)
                        FC_LOCAL(nhwc_wino_prefetch_write)(out[i], sizeof(T) * (size_t)nk, yend);
                FC_LOCAL(nhwc_winograd_output_tile)(mb + u * kg_pad + k0, m_stride, nk,
                                                    bias ? bias + g * Kg + k0 : zero, out);
            }
        }
        fc_aligned_free(vb);
        fc_aligned_free(mb);
        fc_aligned_free(junk);
    }
    fc_aligned_free(up);
    free(zero);
    return failed ? FC_ENOMEM : nonfinite ? FC_NONFINITE : FC_OK;
}

#endif /* FC_CONV2D_NHWC_WINOGRAD_H */
