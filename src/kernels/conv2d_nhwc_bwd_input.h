/* conv2d_nhwc_bwd_input.h: the channels-last convolution input gradient dX (N, H, W, C) from dY
 * (N, OH, OW, K), plus a bias per input channel when given (as the NCHW pass, conv2d_bwd_input.h),
 * these ways:
 *
 *   transposed  stride 1: the channels-last forward pass (conv2d_nhwc_fwd.h) of dY with the
 *               flipped, transposed weights (conv2d_weights.h; one group: read in place through
 *               a view), planned in turn (Winograd too)
 *   col2im      any stride: for each output row and kernel row, a GEMM of that row of dY
 *               [OW, K] by the kernel row's weights [K, kW * C] gives every pixel's
 *               contribution to a run of kW * C elements of one input row (contiguous for
 *               dilation 1), which is added into that row
 *   direct      few input channels, any stride: per input row one GEMM, W^T of every kernel
 *               row that reaches it stacked in depth [kW * C, rows * K] by their dY rows
 *               [rows * K, OW], scattered once into that row; stride 1 and one group: a
 *               block of input rows at once, its tile rows in panels that run across rows
 *   pixels      few input channels: per dY row one indirect GEMM, dY's pixels read in place
 *               as the tile's rows by every tap's input channels [OW, Kg] x [Kg, kH kW C/groups],
 *               the tile transposed in L1 and its runs along the pixels added into the kH input
 *               rows' channel planes
 *   depthwise   one input and one output channel per group: a gather vectorised across the
 *               channels, any stride (conv2d_nhwc_depthwise.h)
 *   plain       few input channels, any stride: a gather vectorised along K, each input
 *               element the sum over the (tap, output pixel) pairs that reach it of a dot
 *               product of that pixel's dY channels with the tap's weights
 *
 * Loop structure (col2im): each kernel row's weights are packed once into B panels
 * [group][kernel row][column block][K][NR]. Tasks are input rows (image, ih): a task owns its row
 * of dX, so no two tasks write one element and each element sums its terms in one order whatever
 * the thread count. Within a task, in a zero-padded copy of the row: over the kernel rows i that
 * reach it from an output row oh, over groups, the dY row is packed into MR-row panels and the
 * microkernel fills a tile of [OW, kW * C/groups] contributions, which are added into the padded
 * row pixel by pixel; the row's inside is then copied out to dX, plus the bias. */
#ifndef FC_CONV2D_NHWC_BWD_INPUT_H
#define FC_CONV2D_NHWC_BWD_INPUT_H

#include "conv2d_gemm_ukernel.h"
#include "conv2d_nhwc_depthwise.h"
#include "conv2d_nhwc_fwd.h"
#include "conv2d_pack.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "conv2d_weights.h"
#include "fc_template.h"

/* Stride 1: the forward pass of dY with the flipped, transposed weights: for one group a view
 * of w read in place (transposed_view), else a copy. FC_NONFINITE when w holds an Inf or NaN: that
 * pass pads dY with zeros that would meet them, which the exact gradient (col2im multiplies only
 * real output positions) never multiplies. The bias is that forward pass's own. */
static int FC_LOCAL(conv2d_nhwc_bwd_input_transposed)(const fc_conv2d_params *p,
                                                      const fc_tuning *tn, const T *gy, const T *w,
                                                      const T *bias, T *gx, int nthreads) {
    const fc_index wsize = p->out_channels * (p->in_channels / p->groups) * p->kernel_h *
                           p->kernel_w;
    if (!FC_LOCAL(all_finite)(tn, w, wsize, nthreads)) return FC_NONFINITE;
    if (p->groups == 1) {
        const T *wv;
        const fc_conv2d_params q = FC_LOCAL(transposed_view)(p, w, &wv);
        return FC_FN(conv2d_nhwc_fwd)(&q, gy, wv, bias, gx, nthreads);
    }
    T *wt = (T *)fc_aligned_alloc(sizeof(T) * (size_t)wsize);
    if (!wt) return FC_ENOMEM;
    const fc_conv2d_params q = FC_LOCAL(transposed_problem)(p, w, wt);
    const int rc = FC_FN(conv2d_nhwc_fwd)(&q, gy, wt, bias, gx, nthreads);
    fc_aligned_free(wt);
    return rc;
}

/* Output channel k (of group g) of kernel row i at (j, c), e = j * Cg + c, the kernel row's
 * kW * C/groups values in the order of an input row's elements; zero past them. */
static inline T FC_LOCAL(nhwc_wrow)(const fc_conv2d_params *p, const T *w, fc_index g, fc_index i,
                                    fc_index k, fc_index e) {
    const fc_index Cg = p->in_channels / p->groups, Kg = p->out_channels / p->groups;
    const fc_weight_layout s = fc_weight_layout_of(p);
    if (e >= p->kernel_w * Cg) return (T)0;
    return w[(g * Kg + k) * s.k_stride + e % Cg * s.c_stride +
             (i * p->kernel_w + e / Cg) * s.tap_stride];
}

/* B panels of kernel row i of group g: column (j, c) of K x (kW * C/groups), e = j * Cg + c, as
 * [column block][Kg][NR], zero past the columns. */
static void FC_NR_NAME(conv2d_nhwc_pack_wrows)(const fc_conv2d_params *p, const T *w, T *dst) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index cblocks = FC_CEIL_DIV(p->kernel_w * Cg, FC_NR);
    for (fc_index g = 0; g < G; g++)
        for (fc_index i = 0; i < p->kernel_h; i++)
            for (fc_index cb = 0; cb < cblocks; cb++)
                for (fc_index k = 0; k < Kg; k++, dst += FC_NR)
                    for (fc_index u = 0; u < FC_NR; u++)
                        dst[u] = FC_LOCAL(nhwc_wrow)(p, w, g, i, k, cb * FC_NR + u);
}

/* One input row of dX from its zero-padded copy (column iw at iw + pad_left), plus the bias. */
static void FC_LOCAL(nhwc_row_out)(const fc_conv2d_params *p, const T *row, const T *bias, T *out) {
    const fc_index C = p->in_channels, W = p->in_w;
    memcpy(out, row + p->pad_left * C, sizeof(T) * (size_t)(W * C));
    if (bias)
        for (fc_index iw = 0; iw < W; iw++)
            for (fc_index c = 0; c < C; c++) out[iw * C + c] += bias[c];
}

static int FC_LOCAL(conv2d_nhwc_bwd_input_col2im)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                  const T *gy, const T *w, const T *bias, T *gx,
                                                  int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index C = p->in_channels, K = p->out_channels, H = p->in_h, W = p->in_w;
    const fc_index OH = p->out_h, OW = p->out_w, kh = p->kernel_h, kw = p->kernel_w;
    const fc_index sw = p->stride_w, dw = p->dilation_w;
    const fc_index ncols = kw * Cg, cblocks = FC_CEIL_DIV(ncols, FC_NR), ldt = cblocks * FC_NR;
    const fc_index ow_pad = FC_CEIL_DIV(OW, FC_MR) * FC_MR;
    /* the padded row: column iw of the input at iw + pad_left, wide enough for every tap */
    const fc_index Wb = FC_MAX(p->pad_left + W, (OW - 1) * sw + (kw - 1) * dw + 1);
    const fc_index panel = Kg * FC_NR, per_row = cblocks * panel; /* one kernel row's B */
    const fc_index nrows = p->batch * H;
    int failed = 0;

    T *wb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kh * per_row));
    if (!wb) return FC_ENOMEM;
    FC_NR_NAME(conv2d_nhwc_pack_wrows)(p, w, wb);

    const int nt = fc_threads_for(nthreads, (double)p->batch * OH * OW * K * kh * ncols,
                                  tn->conv_min_work, nrows);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *ap = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ow_pad * Kg)); /* one dY row */
        T *tile = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ow_pad * ldt));
        T *row = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(Wb * C));
        const int ok = ap && tile && row;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 4))
        for (fc_index t = 0; t < nrows; t++) {
            if (!ok) continue;
            const fc_index n = t / H, ih = t % H;
            memset(row, 0, sizeof(T) * (size_t)(Wb * C));
            for (fc_index i = 0; i < kh; i++) {
                const fc_index at = ih + p->pad_top - i * p->dilation_h; /* oh * stride_h */
                if (at < 0 || at % p->stride_h) continue;
                const fc_index oh = at / p->stride_h;
                if (oh >= OH) continue;
                for (fc_index g = 0; g < G; g++) {
                    FC_MR_NAME(gemm_pack_a)(OW, Kg, gy + (n * OH + oh) * OW * K + g * Kg, K, 1, ap);
                    const T *bw = wb + (g * kh + i) * per_row;
                    for (fc_index cb = 0; cb < cblocks; cb++)
                        for (fc_index q = 0; q < OW; q += FC_MR)
                            FC_GEMM(Kg, ap + q * Kg, bw + cb * panel, tile + q * ldt + cb * FC_NR,
                                    ldt, (int)FC_MIN(FC_MR, OW - q),
                                    (int)FC_MIN(FC_NR, ncols - cb * FC_NR), 0, NULL);
                    /* pixel ow's taps land at columns ow * sW + j * dW of the padded row */
                    for (fc_index ow = 0; ow < OW; ow++) {
                        const T *src = tile + ow * ldt;
                        T *dst = row + ow * sw * C + g * Cg;
                        if (dw == 1 && G == 1) { /* the taps' channels are one run */
                            for (fc_index e = 0; e < ncols; e++) dst[e] += src[e];
                            continue;
                        }
                        for (fc_index j = 0; j < kw; j++)
                            for (fc_index c = 0; c < Cg; c++)
                                dst[j * dw * C + c] += src[j * Cg + c];
                    }
                }
            }
            FC_LOCAL(nhwc_row_out)(p, row, bias, gx + (n * H + ih) * W * C);
        }
        fc_aligned_free(ap);
        fc_aligned_free(tile);
        fc_aligned_free(row);
    }
    fc_aligned_free(wb);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The kernel rows in the order the direct pass stacks them: by the residue (i dH) mod sH of the
 * input rows they reach, then from the last row down, so the rows reaching one input row are
 * consecutive and meet their dY rows in ascending order. pos[i] = kernel row i's place. */
static void FC_LOCAL(nhwc_stack_order)(const fc_conv2d_params *p, fc_index *pos) {
    const fc_index kh = p->kernel_h, s = p->stride_h, d = p->dilation_h;
    for (fc_index i = 0; i < kh; i++) {
        pos[i] = 0;
        for (fc_index u = 0; u < kh; u++) {
            const fc_index ru = u * d % s, ri = i * d % s;
            pos[i] += ru < ri || (ru == ri && u > i);
        }
    }
}

/* A panels of the direct pass, W^T stacked by kernel row: row e = j * Cg + c (a tap's input
 * channel), depth (kernel row in stacking order, k), as [group][e / MR][stacked row][Kg][MR],
 * zero past the rows. */
static void FC_MR_NAME(conv2d_nhwc_pack_wstack)(const fc_conv2d_params *p, const fc_index *pos,
                                                const T *w, T *dst) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kh = p->kernel_h, mpanels = FC_CEIL_DIV(p->kernel_w * Cg, FC_MR);
    for (fc_index g = 0; g < G; g++)
        for (fc_index mp = 0; mp < mpanels; mp++)
            for (fc_index i = 0; i < kh; i++) {
                T *d = dst + ((g * mpanels + mp) * kh + pos[i]) * Kg * FC_MR;
                for (fc_index k = 0; k < Kg; k++, d += FC_MR)
                    for (fc_index u = 0; u < FC_MR; u++)
                        d[u] = FC_LOCAL(nhwc_wrow)(p, w, g, i, k, mp * FC_MR + u);
            }
}

/* B panels of the direct pass: dY^T of rows [oh0, oh1) of one image, depth (oh, k), column ow,
 * as [group][ow / NR][oh - oh0][Kg][NR], zero past the columns: consecutive dY rows are
 * consecutive depth. */
static void FC_NR_NAME(conv2d_nhwc_pack_dy_rows)(const fc_conv2d_params *p, const T *gyn,
                                                 fc_index oh0, fc_index oh1, T *dst) {
    const fc_index G = p->groups, K = p->out_channels, Kg = K / G, OW = p->out_w;
    const fc_index npanels = FC_CEIL_DIV(OW, FC_NR), nrows = oh1 - oh0;
    for (fc_index g = 0; g < G; g++)
        for (fc_index q = 0; q < npanels; q++)
            for (fc_index oh = oh0; oh < oh1; oh++) {
                T *d = dst + ((g * npanels + q) * nrows + oh - oh0) * Kg * FC_NR;
                const T *src = gyn + (oh * OW + q * FC_NR) * K + g * Kg;
                const fc_index nr = FC_MIN(FC_NR, OW - q * FC_NR);
                fc_index u0 = 0, z0 = nr; /* columns [u0, nr) copied, [z0, NR) zeroed below */
#ifdef FC_HAVE_VEC16
                /* float32: 16 x 16 blocks transposed in registers, where element by element
                 * the strided loads or stores were most of the pass's time. Every block is
                 * whole (where NR is a multiple of 16): columns past OW read a row of zeros, the
                 * panel's padding, and channels past a multiple of 16 (K = 37's last 5) go
                 * through blocks on the stack, so no element is left to the scalar loops. */
                if (sizeof(T) == 4 && FC_NR % 16 == 0) {
                    static const T zeros[16];
                    T in[16 * 16] = {0}, out[16 * 16];
                    for (; u0 < nr; u0 += 16)
                        for (fc_index k0 = 0; k0 < Kg; k0 += 16) {
                            const fc_index kn = FC_MIN(16, Kg - k0);
                            const T *rows[16];
                            for (fc_index i = 0; i < 16; i++) {
                                const T *r = src + (u0 + i) * K + k0;
                                if (u0 + i >= nr)
                                    rows[i] = zeros;
                                else if (kn == 16)
                                    rows[i] = r;
                                else
                                    rows[i] = memcpy(in + i * 16, r, sizeof(T) * (size_t)kn);
                            }
                            if (kn == 16) {
                                FC_LOCAL(transpose_block16)(rows, d + k0 * FC_NR + u0, FC_NR);
                                continue;
                            }
                            FC_LOCAL(transpose_block16)(rows, out, 16);
                            for (fc_index k = 0; k < kn; k++)
                                memcpy(d + (k0 + k) * FC_NR + u0, out + k * 16, sizeof(T) * 16);
                        }
                    z0 = u0;
                    u0 = nr;
                }
#endif
                for (fc_index u = u0; u < nr; u++)
                    for (fc_index k = 0; k < Kg; k++) d[k * FC_NR + u] = src[u * K + k];
                for (fc_index k = 0; k < Kg; k++)
                    for (fc_index u = z0; u < FC_NR; u++) d[k * FC_NR + u] = (T)0;
            }
}

/* A panels of the direct pass over a block of input rows (stride 1, dilation 1, one group): the
 * tile rows f = r m + e (input row r of the block, e as above, m = kW C) flattened, so that a
 * panel may start at any phase f % m and run into the next rows. Per phase [d][K][MR], depth d
 * the dY rows from the first the panel's first input row reaches; row u (input row r = (phase +
 * u) / m) meets kernel row i = r + kH - 1 - d, zero where that lies outside the kernel. */
static void FC_MR_NAME(conv2d_nhwc_pack_wphases)(const fc_conv2d_params *p, fc_index depth,
                                                 const T *w, T *dst) {
    const fc_index K = p->out_channels, C = p->in_channels, kh = p->kernel_h, m = p->kernel_w * C;
    const fc_weight_layout s = fc_weight_layout_of(p);
    /* a serial prologue of the pass: row u's input row and offset in w found once per phase,
     * not per element (nhwc_wrow's divisions); one group, as `flat` passes are, so C is the
     * group's channel count */
    fc_index r[FC_MR], off[FC_MR];
    for (fc_index phase = 0; phase < m; phase++) {
        for (fc_index u = 0; u < FC_MR; u++) {
            const fc_index e = (phase + u) % m;
            r[u] = (phase + u) / m;
            off[u] = e % C * s.c_stride + e / C * s.tap_stride;
        }
        for (fc_index d = 0; d < depth; d++)
            for (fc_index k = 0; k < K; k++, dst += FC_MR)
                for (fc_index u = 0; u < FC_MR; u++) {
                    const fc_index i = r[u] + kh - 1 - d;
                    dst[u] = i >= 0 && i < kh
                                 ? w[k * s.k_stride + i * p->kernel_w * s.tap_stride + off[u]]
                                 : (T)0;
                }
    }
}

/* The tile of a block of input rows [ih0, ih1) at once (the flattened panels above), from the dY
 * rows [oh0, oh0 + nrows) packed in pk: a kernel row of few channels fills a fraction of MR,
 * where the block's rows packed end to end waste at most one panel. The depth a panel spans
 * past a row's own dY rows meets zero weights, each adding an exact zero to an FMA chain that
 * starts at +0 (so every sum is bit for bit the per-row one); dY must be finite there. */
static void FC_LOCAL(nhwc_direct_block_tile)(const fc_conv2d_params *p, const T *wf, fc_index depth,
                                             const T *pk, fc_index oh0, fc_index nrows,
                                             fc_index ih0, fc_index ih1, T *tile, fc_index ldt) {
    const fc_index K = p->out_channels, OW = p->out_w, kh = p->kernel_h;
    const fc_index m = p->kernel_w * p->in_channels, npanels = FC_CEIL_DIV(OW, FC_NR);
    for (fc_index f0 = 0; f0 < (ih1 - ih0) * m; f0 += FC_MR) {
        const fc_index phase = f0 % m, base = ih0 + f0 / m + p->pad_top - (kh - 1);
        const fc_index d0 = FC_MAX(0, oh0 - base);
        const fc_index d1 = FC_MIN((phase + FC_MR - 1) / m + kh, oh0 + nrows - base);
        T *tp = tile + f0 * ldt;
        if (d1 <= d0) {
            memset(tp, 0, sizeof(T) * (size_t)(FC_MR * ldt));
            continue;
        }
        for (fc_index q = 0; q < npanels; q++)
            FC_GEMM((d1 - d0) * K, wf + (phase * depth + d0) * K * FC_MR,
                    pk + (q * nrows + base + d0 - oh0) * K * FC_NR, tp + q * FC_NR, ldt, FC_MR,
                    (int)FC_MIN(FC_NR, OW - q * FC_NR), 0, NULL);
    }
}

/* Adds a tile's kW Cg x OW contributions of group g into the zero-padded row: tile row e = (j, c)
 * holds pixel ow's tap j at column ow sW + j dW. */
static void FC_LOCAL(nhwc_scatter_row)(const fc_conv2d_params *p, const T *tile, fc_index ldt,
                                       fc_index g, T *row) {
    const fc_index C = p->in_channels, Cg = C / p->groups, m = p->kernel_w * Cg;
    const fc_index sw = p->stride_w, dw = p->dilation_w, OW = p->out_w;
    for (fc_index e = 0; e < m; e++) {
        T *dst = row + (e / Cg) * dw * C + g * Cg + e % Cg;
        const T *te = tile + e * ldt;
        for (fc_index ow = 0; ow < OW; ow++) dst[ow * sw * C] += te[ow];
    }
}

/* The input rows a row-by-row direct task may take: as many as reach dY rows whose packed panels
 * (all groups and column panels of a row) fit direct_input_pack_bytes, at least a stride's worth.
 * Each packed dY row is read by every input row it reaches; a whole strided stem image's (3.7 MB
 * for 112 x 112 x 64 float32) would be read back from beyond L2. */
static fc_index FC_LOCAL(nhwc_direct_rows_fit)(const fc_conv2d_params *p, const fc_tuning *tn,
                                               fc_index npanels) {
    const fc_index row = npanels * p->out_channels * FC_NR * (fc_index)sizeof(T);
    const fc_index fit = FC_MAX(1, tn->direct_input_pack_bytes / row);
    /* rb input rows reach up to (rb - 1 + (kH - 1) dH) / sH + 1 dY rows */
    return FC_MAX(p->stride_h, (fit - 1) * p->stride_h - (p->kernel_h - 1) * p->dilation_h + 1);
}

/* Direct: per input row, W^T stacked over the kernel rows that reach it times their dY rows side
 * by side, [kW Cg, rows Kg] x [rows Kg, OW]: one GEMM (its depth every reaching kernel row) and
 * one scatter of its kW Cg x OW contributions into a zero-padded copy of the row. The few input
 * channels of a first layer make the tile's rows, where col2im's columns would pad kW C to NR.
 * Tasks are blocks of input rows of one image (whole images when the batch gives every thread
 * several): a task packs the dY rows its block reaches, once, and owns its rows of dX. Only real
 * output positions are multiplied, so any data runs exactly, and each element sums its terms in
 * one order whatever the blocks. */
static int FC_LOCAL(conv2d_nhwc_bwd_input_direct)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                  const T *gy, const T *w, const T *bias, T *gx,
                                                  int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index C = p->in_channels, K = p->out_channels, H = p->in_h, W = p->in_w;
    const fc_index OH = p->out_h, OW = p->out_w, kh = p->kernel_h, kw = p->kernel_w;
    const fc_index sh = p->stride_h, dh = p->dilation_h, sw = p->stride_w, dw = p->dilation_w;
    const fc_index m = kw * Cg, mpanels = FC_CEIL_DIV(m, FC_MR), npanels = FC_CEIL_DIV(OW, FC_NR);
    const fc_index ldt = npanels * FC_NR;
    const fc_index Wb = FC_MAX(p->pad_left + W, (OW - 1) * sw + (kw - 1) * dw + 1);
    int failed = 0;

    const int nt = fc_threads_for(nthreads, (double)p->batch * OH * OW * K * kh * m,
                                  tn->conv_min_work, p->batch * H);
    /* stride 1, one group: a block's rows in flattened panels (nhwc_direct_block_tile) */
    const int flat = sh == 1 && dh == 1 && G == 1;
    /* about four tasks per thread, in whole images when the batch has them */
    const fc_index blocks = FC_CEIL_DIV(4 * (fc_index)nt, p->batch);
    fc_index rb = FC_CEIL_DIV(H, FC_MIN(blocks, H));
    if (!flat) rb = FC_MIN(rb, FC_LOCAL(nhwc_direct_rows_fit)(p, tn, npanels));
    const fc_index per_image = FC_CEIL_DIV(H, rb);
    /* the dY rows a block of rb input rows reaches, at most */
    const fc_index span = FC_MIN(OH, (rb - 1 + (kh - 1) * dh) / sh + 1);
    const fc_index depth = kh + (m + FC_MR - 2) / m; /* dY rows a flattened panel spans */
    const fc_index tile_rows = FC_MAX(mpanels, flat ? FC_CEIL_DIV(rb * m, FC_MR) : 0) * FC_MR;
    fc_index *pos = (fc_index *)malloc(sizeof(*pos) * (size_t)kh);
    T *wa = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * mpanels * kh * Kg * FC_MR));
    T *wf = flat ? (T *)fc_aligned_alloc(sizeof(T) * (size_t)(m * depth * Kg * FC_MR)) : NULL;
    if (!pos || !wa || (flat && !wf)) {
        free(pos);
        fc_aligned_free(wa);
        fc_aligned_free(wf);
        return FC_ENOMEM;
    }
    FC_LOCAL(nhwc_stack_order)(p, pos);
    FC_MR_NAME(conv2d_nhwc_pack_wstack)(p, pos, w, wa);
    if (flat) FC_MR_NAME(conv2d_nhwc_pack_wphases)(p, depth, w, wf);

    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *pk = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * npanels * span * Kg * FC_NR));
        T *tile = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(tile_rows * ldt));
        T *row = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(Wb * C));
        fc_index *src = (fc_index *)malloc(sizeof(*src) * (size_t)(2 * kh));
        const int ok = pk && tile && row && src;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < p->batch * per_image; t++) {
            if (!ok) continue;
            const fc_index n = t / per_image, ih0 = t % per_image * rb, ih1 = FC_MIN(H, ih0 + rb);
            const fc_index first = ih0 + p->pad_top - (kh - 1) * dh; /* oh0 * sH at least */
            const fc_index oh0 = first <= 0 ? 0 : FC_CEIL_DIV(first, sh);
            const fc_index oh1 = FC_MIN(OH, (ih1 - 1 + p->pad_top) / sh + 1);
            const fc_index nrows = FC_MAX(0, oh1 - oh0);
            FC_NR_NAME(conv2d_nhwc_pack_dy_rows)(p, gy + n * OH * OW * K, oh0, oh0 + nrows, pk);
            /* the flattened panels multiply dY by zero weights too: finite dY only */
            const int block = flat && nrows > 0 &&
                              FC_LOCAL(all_finite)(tn, pk, npanels * nrows * Kg * FC_NR, 1);
            if (block)
                FC_LOCAL(nhwc_direct_block_tile)(p, wf, depth, pk, oh0, nrows, ih0, ih1, tile, ldt);
            for (fc_index ih = ih0; ih < ih1; ih++) {
                fc_index *oh = src, *ti = src + kh;
                if (block) {
                    memset(row, 0, sizeof(T) * (size_t)(Wb * C));
                    FC_LOCAL(nhwc_scatter_row)(p, tile + (ih - ih0) * m * ldt, ldt, 0, row);
                    FC_LOCAL(nhwc_row_out)(p, row, bias, gx + (n * H + ih) * W * C);
                    continue;
                }
                /* the reaching kernel rows, ti ascending, their dY rows oh descending */
                const fc_index nh = FC_LOCAL(nhwc_dw_sources)(ih + p->pad_top, dh, sh, kh, OH, oh,
                                                              ti);
                memset(row, 0, sizeof(T) * (size_t)(Wb * C));
                for (fc_index g = 0; g < G && nh; g++) {
                    const T *bg = pk + g * npanels * nrows * Kg * FC_NR;
                    const T *ag = wa + g * mpanels * kh * Kg * FC_MR;
                    /* runs of reaching rows whose dY rows are consecutive (all of them unless
                     * the dilation is no divisor of the stride), from the lowest dY row */
                    for (fc_index u = nh; u > 0;) {
                        fc_index len = 1;
                        while (len < u && oh[u - 1 - len] == oh[u - len] + 1) len++;
                        const fc_index depth = len * Kg, at = pos[ti[u - 1]], o = oh[u - 1] - oh0;
                        const int accumulate = u < nh;
                        for (fc_index q = 0; q < npanels; q++)
                            for (fc_index mp = 0; mp < mpanels; mp++)
                                FC_GEMM(depth, ag + (mp * kh + at) * Kg * FC_MR,
                                        bg + (q * nrows + o) * Kg * FC_NR,
                                        tile + mp * FC_MR * ldt + q * FC_NR, ldt,
                                        (int)FC_MIN(FC_MR, m - mp * FC_MR),
                                        (int)FC_MIN(FC_NR, OW - q * FC_NR), accumulate, NULL);
                        u -= len;
                    }
                    FC_LOCAL(nhwc_scatter_row)(p, tile, ldt, g, row);
                }
                FC_LOCAL(nhwc_row_out)(p, row, bias, gx + (n * H + ih) * W * C);
            }
        }
        fc_aligned_free(pk);
        fc_aligned_free(tile);
        fc_aligned_free(row);
        free(src);
    }
    free(pos);
    fc_aligned_free(wa);
    fc_aligned_free(wf);
    return failed ? FC_ENOMEM : FC_OK;
}

/* B panels of the pixels pass: column e = (i kW + j) Cg + c, every tap's input channel, of
 * Kg x (kH kW Cg), as [group][e / NR][Kg][NR], zero past the columns. */
static void FC_NR_NAME(conv2d_nhwc_pack_wtaps)(const fc_conv2d_params *p, const T *w, T *dst) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index m = p->kernel_w * Cg, ncols = p->kernel_h * m;
    const fc_index cblocks = FC_CEIL_DIV(ncols, FC_NR);
    for (fc_index g = 0; g < G; g++)
        for (fc_index cb = 0; cb < cblocks; cb++)
            for (fc_index k = 0; k < Kg; k++, dst += FC_NR)
                for (fc_index u = 0; u < FC_NR; u++) {
                    const fc_index e = cb * FC_NR + u;
                    dst[u] = e < ncols ? FC_LOCAL(nhwc_wrow)(p, w, g, e / m, k, e % m) : (T)0;
                }
}

/* Pixels: dY's pixels as the tile's rows, read in place (the indirect GEMM, one pointer per
 * pixel), every tap's input channels as its columns: per dY row one GEMM [OW, Kg] x [Kg, kH kW
 * Cg] gives each pixel's contributions to the kH input rows it reaches. Where direct transposes
 * every dY row into packed panels (its stalls on the dY loads were a quarter of lenet1's pass),
 * this reads dY once, in order, as the GEMM's broadcasts, and transposes the tile instead, in L1
 * (16 x 16 blocks in registers): its row (i, j, c) is then a run along the pixels, added into
 * row i's channel-c plane of the block at column ow sW + j dW, whole vectors for stride 1. kH kW
 * Cg columns (25 for a 5x5 kernel on one channel, 27 for 3x3 on three) fill most of an NR-column
 * panel. Tasks are blocks of input rows of one image (as direct's): a task computes the tiles of
 * every dY row that reaches its block (the rows at a block's edge in both blocks), adds only into
 * its own rows, by dY row (an element takes one term per dY row), and interleaves its planes into
 * dX: each element sums its terms in one order whatever the blocks. Only real output positions
 * are multiplied, so any data runs exactly. */
static int FC_LOCAL(conv2d_nhwc_bwd_input_pixels)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                  const T *gy, const T *w, const T *bias, T *gx,
                                                  int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index C = p->in_channels, K = p->out_channels, H = p->in_h, W = p->in_w;
    const fc_index OH = p->out_h, OW = p->out_w, kh = p->kernel_h, kw = p->kernel_w;
    const fc_index sh = p->stride_h, dh = p->dilation_h, sw = p->stride_w, dw = p->dilation_w;
    const fc_index m = kw * Cg, ncols = kh * m, cblocks = FC_CEIL_DIV(ncols, FC_NR);
    /* the tile [pixel][column] in whole 16 x 16 blocks and whole MR-row GEMM tiles; tt, the
     * transposed tile [column][pixel], tld pixels a row */
    const fc_index ldt = FC_CEIL_DIV(cblocks * FC_NR, 16) * 16, tld = FC_CEIL_DIV(OW, 16) * 16;
    const fc_index tile_rows = FC_MAX(tld, FC_CEIL_DIV(OW, FC_MR) * FC_MR);
    const fc_index Wb = FC_MAX(p->pad_left + W, (OW - 1) * sw + (kw - 1) * dw + 1);
    int failed = 0;

    const int nt = fc_threads_for(nthreads, (double)p->batch * OH * OW * K * kh * m,
                                  tn->conv_min_work, p->batch * H);
    /* about four tasks per thread, in whole images when the batch has them */
    const fc_index blocks = FC_CEIL_DIV(4 * (fc_index)nt, p->batch);
    const fc_index rb = FC_CEIL_DIV(H, FC_MIN(blocks, H)), per_image = FC_CEIL_DIV(H, rb);
    T *wb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * cblocks * Kg * FC_NR));
    if (!wb) return FC_ENOMEM;
    FC_NR_NAME(conv2d_nhwc_pack_wtaps)(p, w, wb);

    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *tile = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(tile_rows * ldt));
        T *tt = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(ldt * tld));
        T *planes = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(C * rb * Wb)); /* [c][row][col] */
        const int ok = tile && tt && planes;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else { /* the rows and columns past the GEMM's are transposed too, never added */
            memset(tile, 0, sizeof(T) * (size_t)(tile_rows * ldt));
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < p->batch * per_image; t++) {
            if (!ok) continue;
            const fc_index n = t / per_image, ih0 = t % per_image * rb, ih1 = FC_MIN(H, ih0 + rb);
            const fc_index nb = ih1 - ih0;
            /* padded rows [r0, r1) are the block's; dY row oh, kernel row i reach oh sH + i dH */
            const fc_index r0 = ih0 + p->pad_top, r1 = ih1 + p->pad_top;
            const fc_index first = r0 - (kh - 1) * dh;
            const fc_index oh0 = first <= 0 ? 0 : FC_CEIL_DIV(first, sh);
            const fc_index oh1 = FC_MIN(OH, (r1 - 1) / sh + 1);
            memset(planes, 0, sizeof(T) * (size_t)(C * nb * Wb));
            for (fc_index oh = oh0; oh < oh1; oh++) {
                const T *gyr = gy + (n * OH + oh) * OW * K;
                for (fc_index g = 0; g < G; g++) {
                    for (fc_index q = 0; q < OW; q += FC_MR) {
                        const T *a[FC_MR]; /* rows past OW repeat the last pixel, never added */
                        for (fc_index u = 0; u < FC_MR; u++)
                            a[u] = gyr + FC_MIN(q + u, OW - 1) * K + g * Kg;
                        /* whole tiles, stored from the registers: the B panels are zeros past
                         * the columns */
                        for (fc_index cb = 0; cb < cblocks; cb++)
                            FC_IGEMM(1, Kg, a, wb + (g * cblocks + cb) * Kg * FC_NR,
                                     tile + q * ldt + cb * FC_NR, ldt, FC_MR,
                                     ncols - cb * FC_NR <= FC_NR / 2 ? FC_NR / 2 : FC_NR, 0, NULL);
                    }
                    for (fc_index u0 = 0; u0 < OW; u0 += 16)
                        for (fc_index e0 = 0; e0 < ncols; e0 += 16) {
#ifdef FC_HAVE_VEC16
                            const T *rows[16];
                            for (fc_index u = 0; u < 16; u++) rows[u] = tile + (u0 + u) * ldt + e0;
                            FC_LOCAL(transpose_block16)(rows, tt + e0 * tld + u0, tld);
#else
                            for (fc_index e = e0; e < e0 + 16; e++)
                                for (fc_index u = u0; u < u0 + 16; u++)
                                    tt[e * tld + u] = tile[u * ldt + e];
#endif
                        }
                    /* pixel ow's tap (i, j) lands on padded row oh sH + i dH, column ow sW + j dW
                     */
                    for (fc_index i = 0; i < kh; i++) {
                        const fc_index r = oh * sh + i * dh;
                        if (r < r0 || r >= r1) continue;
                        for (fc_index c = 0; c < Cg; c++) {
                            T *pl = planes + ((g * Cg + c) * nb + r - r0) * Wb;
                            for (fc_index j = 0; j < kw; j++) {
                                T *restrict d = pl + j * dw;
                                const T *restrict s = tt + (i * m + j * Cg + c) * tld;
                                if (sw == 1)
                                    for (fc_index ow = 0; ow < OW; ow++) d[ow] += s[ow];
                                else
                                    for (fc_index ow = 0; ow < OW; ow++) d[ow * sw] += s[ow];
                            }
                        }
                    }
                }
            }
            /* the planes' inside interleaved into dX, plus the bias */
            for (fc_index r = 0; r < nb; r++) {
                T *out = gx + (n * H + ih0 + r) * W * C;
                for (fc_index c = 0; c < C; c++) {
                    const T *pl = planes + (c * nb + r) * Wb + p->pad_left;
                    for (fc_index iw = 0; iw < W; iw++)
                        out[iw * C + c] = bias ? pl[iw] + bias[c] : pl[iw];
                }
            }
        }
        fc_aligned_free(tile);
        fc_aligned_free(tt);
        fc_aligned_free(planes);
    }
    fc_aligned_free(wb);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The gather's channel block: one accumulator per channel, each dY load shared by them all. */
#define FC_GATHER_CHANNELS 4

/* out[c] = sum over e < ne of the dot products of a[e][0, n) and b[e] + c * n [0, n), for c < nc
 * (at most FC_GATHER_CHANNELS), in one fixed order: lane-wise over whole vectors, the lanes added
 * in order, then the remaining columns */
static void FC_LOCAL(nhwc_gather_dots)(fc_index n, fc_index nc, fc_index ne, const T *const *a,
                                       const T *const *b, T *out) {
    fc_index k0 = 0;
    for (fc_index c = 0; c < nc; c++) out[c] = 0;
#if FC_HAVE_VEC
    k0 = n / FC_VL * FC_VL;
    if (k0) {
        FC_VEC acc[FC_GATHER_CHANNELS];
        for (fc_index c = 0; c < FC_GATHER_CHANNELS; c++) acc[c] = FC_VZERO();
        for (fc_index e = 0; e < ne; e++)
            for (fc_index k = 0; k < k0; k += FC_VL) {
                const FC_VEC d = FC_VLOADU(a[e] + k);
                for (fc_index c = 0; c < nc; c++)
                    acc[c] = FC_VFMA(d, FC_VLOADU(b[e] + c * n + k), acc[c]);
            }
        T lanes[FC_VL];
        for (fc_index c = 0; c < nc; c++) {
            FC_VSTOREU(lanes, acc[c]);
            for (int l = 0; l < FC_VL; l++) out[c] += lanes[l];
        }
    }
#endif
    for (fc_index c = 0; c < nc; c++)
        for (fc_index e = 0; e < ne; e++)
            for (fc_index k = k0; k < n; k++) out[c] += a[e][k] * b[e][c * n + k];
}

typedef struct {
    const fc_conv2d_params *p;
    const T *gy, *wp, *bias;
    T *gx;
} FC_LOCAL(nhwc_plain_gather_ctx);

/* One input pixel of the plain gather: per group and block of input channels, a term per
 * source. */
static void FC_LOCAL(nhwc_plain_gather_pixel)(const void *ctx, const FC_LOCAL(nhwc_sources) *src) {
    const FC_LOCAL(nhwc_plain_gather_ctx) *cx = (const FC_LOCAL(nhwc_plain_gather_ctx) *)ctx;
    const fc_conv2d_params *p = cx->p;
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index K = p->out_channels, OH = p->out_h, OW = p->out_w, kw = p->kernel_w;
    const fc_index kk = p->kernel_h * kw;
    T *out = cx->gx + ((src->n * p->in_h + src->ih) * p->in_w + src->iw) * p->in_channels;
    for (fc_index g = 0; g < G; g++)
        for (fc_index c = 0; c < Cg; c += FC_GATHER_CHANNELS) {
            fc_index ne = 0;
            for (fc_index u = 0; u < src->nh; u++)
                for (fc_index v = 0; v < src->nw; v++, ne++) {
                    src->a[ne] = cx->gy + ((src->n * OH + src->oh[u]) * OW + src->ow[v]) * K +
                                 g * Kg;
                    src->b[ne] = cx->wp + ((g * kk + src->ti[u] * kw + src->tj[v]) * Cg + c) * Kg;
                }
            T *o = out + g * Cg + c;
            const fc_index nc = FC_MIN(FC_GATHER_CHANNELS, Cg - c);
            FC_LOCAL(nhwc_gather_dots)(Kg, nc, ne, src->a, src->b, o);
            if (cx->bias)
                for (fc_index e = 0; e < nc; e++) o[e] += cx->bias[g * Cg + c + e];
        }
}

/* Few input channels: for each input pixel, the (tap, output pixel) pairs whose stride phase
 * reaches it (conv2d_nhwc_depthwise.h's gather walk), and per input channel the sum of their dots
 * along K. Only real output positions are multiplied, as the definition does, so any data runs
 * exactly. Tasks are input rows, each element summed in one order whatever the thread count. */
static int FC_LOCAL(conv2d_nhwc_bwd_input_plain)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                 const T *gy, const T *w, const T *bias, T *gx,
                                                 int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w;
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kk * Cg * Kg));
    if (!wp) return FC_ENOMEM;
    FC_LOCAL(conv2d_nhwc_pack_taps)(p, w, wp);
    const int nt = fc_threads_for(
        nthreads, (double)p->batch * p->out_h * p->out_w * p->out_channels * kk * Cg,
        tn->conv_min_work, p->batch * p->in_h);
    const FC_LOCAL(nhwc_plain_gather_ctx) ctx = {p, gy, wp, bias, gx};
    const int rc = FC_LOCAL(nhwc_gather)(p, nt, kk, FC_LOCAL(nhwc_plain_gather_pixel), &ctx);
    fc_aligned_free(wp);
    return rc;
}

static int FC_LOCAL(conv2d_nhwc_bwd_input_run)(fc_conv_algorithm algorithm,
                                               const fc_conv2d_params *p, const fc_tuning *tn,
                                               const T *gy, const T *w, const T *bias, T *gx,
                                               int nthreads) {
    if (algorithm == FC_CONV_TRANSPOSED)
        return FC_LOCAL(conv2d_nhwc_bwd_input_transposed)(p, tn, gy, w, bias, gx, nthreads);
    if (algorithm == FC_CONV_DEPTHWISE)
        return FC_LOCAL(conv2d_nhwc_bwd_input_depthwise)(p, tn, gy, w, bias, gx, nthreads);
    if (algorithm == FC_CONV_PLAIN)
        return FC_LOCAL(conv2d_nhwc_bwd_input_plain)(p, tn, gy, w, bias, gx, nthreads);
    if (algorithm == FC_CONV_DIRECT)
        return FC_LOCAL(conv2d_nhwc_bwd_input_direct)(p, tn, gy, w, bias, gx, nthreads);
    if (algorithm == FC_CONV_PIXELS)
        return FC_LOCAL(conv2d_nhwc_bwd_input_pixels)(p, tn, gy, w, bias, gx, nthreads);
    return FC_LOCAL(conv2d_nhwc_bwd_input_col2im)(p, tn, gy, w, bias, gx, nthreads);
}

/* The algorithm the plan (conv2d_plan.c) gives, then its fallback if that met Inf or NaN. */
int FC_FN(conv2d_nhwc_bwd_input)(const fc_conv2d_params *p, const T *gy, const T *w, const T *bias,
                                 T *gx, int nthreads) {
    fc_conv_plan plan;
    if (fc_conv2d_plan(FC_CONV_NHWC_BWD_INPUT, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    const int rc = FC_LOCAL(conv2d_nhwc_bwd_input_run)(plan.algorithm, p, plan.tuning, gy, w, bias,
                                                       gx, nthreads);
    if (rc != FC_NONFINITE) return rc;
    return FC_LOCAL(conv2d_nhwc_bwd_input_run)(plan.nonfinite, p, plan.tuning, gy, w, bias, gx,
                                               nthreads);
}

#endif /* FC_CONV2D_NHWC_BWD_INPUT_H */
