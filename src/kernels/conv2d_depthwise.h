/* conv2d_depthwise.h: the three convolution passes for one input channel per group (C/groups =
 * 1: depthwise layers and their channel multipliers), plane by plane, vectorised along a grid
 * of pixels. Each output is a sum over the kH kW taps alone, too short a reduction and too few
 * output channels per group for the GEMM passes' register tile, which would run almost empty.
 *
 *   fc_<dt>_dwconv_ukernel_<8 VL>__<isa>        out[q] = sum_t w[t] src[off[t] + q], q < n
 *   fc_<dt>_dwconv_dot_ukernel_8x<2 VL>__<isa>  acc[t] += sum_q g[q] src[off[t] + q], t < kk
 *
 * The grid is the stride-1 convolution's (dense_geometry): a zero-padded channel with wph
 * columns per row, where tap t of grid pixel q reads the channel at off_t + q, so every pass is
 * a few long contiguous streams:
 *   forward:          Y_grid = sum_t w_t Xpad[off_t + .], the outputs picked from it plus bias;
 *   input gradient:   its adjoint, dXpad[e] = sum over (j, t) of w_jt dY_j,grid[e - off_t] with
 *                     dY spread onto a zero-margined grid, dXpad's interior then dX;
 *   weight gradient:  dW_kt = sum over images and grid pixels of dY_k,grid[q] Xpad[off_t + q].
 *
 * Loop structure: forward, tasks are output planes (image, channel), an image's channels in
 * order so a channel multiplier pads each input plane once; input gradient, tasks are input
 * planes (image, group); weight gradient (also the grouped layers', any C/groups), tasks are
 * groups, each summing its images in order. Each output is summed by one task in one order, so
 * results do not depend on the thread count. The grid's pixels that are no output are computed and
 * dropped (forward) or meet zeros of dY (weight gradient): as on the direct path, the weight
 * gradient hands X holding Inf or NaN to the plain loops, and the input gradient, whose zeros of dY
 * meet every weight, hands W holding them to col2im. */
#ifndef FC_CONV2D_DEPTHWISE_H
#define FC_CONV2D_DEPTHWISE_H

#include "conv2d_pack.h"
#include "conv2d_phases.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "fc_template.h"

/* Pixels per block of the tap-sum microkernel (8 vector accumulators: enough independent
 * chains to cover the FMA latency), and lanes of the dot microkernel's two accumulators per tap
 * (fc_isa_<isa>.h). */
#define FC_DW_BLOCK FC_CAT2(FC_DW_BLOCK_, FC_DT)
#define FC_DW_LANES FC_CAT2(FC_DW_LANES_, FC_DT)
#define FC_DW_TAPS 8 /* taps per group of the dot microkernel */
#define FC_DW_UKERNEL FC_TILE_NAME(dwconv_ukernel, FC_DW_BLOCK)
#define FC_DW_DOT_UKERNEL FC_TILE_NAME(dwconv_dot_ukernel, FC_CAT3(FC_DW_TAPS, x, FC_DW_LANES))

/* out[q] = sum over t < kk, in t order, of w[t] * src[off[t] + q], for q < n (kk >= 1): reads
 * src[off[t] + q] for q < n only. Blocks of FC_DW_BLOCK pixels in registers, then single
 * vectors, then single elements. */
static void FC_DW_UKERNEL(fc_index n, int kk, const T *restrict w, const T *src,
                          const fc_index *restrict off, T *restrict out) {
    fc_index q = 0;
#if FC_HAVE_VEC
    for (; q + 8 * FC_VL <= n; q += 8 * FC_VL) {
        FC_VEC acc[8];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < 8; v++) acc[v] = FC_VZERO();
        for (int t = 0; t < kk; t++) {
            const FC_VEC wt = FC_VSET1(w[t]);
            const T *s = src + off[t] + q;
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < 8; v++) acc[v] = FC_VFMA(wt, FC_VLOADU(s + v * FC_VL), acc[v]);
        }
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < 8; v++) FC_VSTOREU(out + q + v * FC_VL, acc[v]);
    }
    for (; q + FC_VL <= n; q += FC_VL) {
        FC_VEC acc = FC_VZERO();
        for (int t = 0; t < kk; t++)
            acc = FC_VFMA(FC_VSET1(w[t]), FC_VLOADU(src + off[t] + q), acc);
        FC_VSTOREU(out + q, acc);
    }
#endif
    for (; q < n; q++) {
        T acc = 0;
        for (int t = 0; t < kk; t++) acc += w[t] * src[off[t] + q];
        out[q] = acc;
    }
}

/* acc[t] += sum over q < n of g[q] * src[off[t] + q], for the NT taps from t = 0: each tap's
 * products summed in FC_DW_LANES lanes (lane u taking q = u, u + FC_DW_LANES, ...), the lanes
 * as a tree, then the remaining q in order; reads src[off[t] + q] for q < n only. */
static inline
    __attribute__((always_inline)) void FC_LOCAL(dw_dot_group)(const int NT, fc_index n,
                                                               const T *restrict g, const T *src,
                                                               const fc_index *restrict off,
                                                               T *restrict acc) {
    fc_index q = 0;
#if FC_HAVE_VEC
    FC_VEC a[FC_DW_TAPS][2];
    FC_PRAGMA(GCC unroll 8)
    for (int t = 0; t < NT; t++) a[t][0] = a[t][1] = FC_VZERO();
    for (; q + 2 * FC_VL <= n; q += 2 * FC_VL) {
        const FC_VEC g0 = FC_VLOADU(g + q), g1 = FC_VLOADU(g + q + FC_VL);
        FC_PRAGMA(GCC unroll 8)
        for (int t = 0; t < NT; t++) {
            const T *s = src + off[t] + q;
            a[t][0] = FC_VFMA(g0, FC_VLOADU(s), a[t][0]);
            a[t][1] = FC_VFMA(g1, FC_VLOADU(s + FC_VL), a[t][1]);
        }
    }
    for (int t = 0; t < NT; t++) {
        T lanes[2 * FC_VL];
        FC_VSTOREU(lanes, a[t][0]);
        FC_VSTOREU(lanes + FC_VL, a[t][1]);
        for (int width = FC_VL; width >= 1; width /= 2) /* lanes u and u + width, a tree */
            for (int u = 0; u < width; u++) lanes[u] += lanes[u + width];
        T sum = lanes[0];
        for (fc_index r = q; r < n; r++) sum += g[r] * src[off[t] + r];
        acc[t] += sum;
    }
#else
    for (int t = 0; t < NT; t++) {
        T sum = 0;
        for (fc_index r = 0; r < n; r++) sum += g[r] * src[off[t] + r];
        acc[t] += sum;
    }
    (void)q;
#endif
}

/* acc[t] += sum over q < n of g[q] * src[off[t] + q] for t < kk, in groups of at most FC_DW_TAPS
 * taps of as even a size as possible (each group one pass over g with its taps' accumulators in
 * registers: 9 taps run as 5 + 4, not 8 + a lone chain). */
static void FC_DW_DOT_UKERNEL(fc_index n, int kk, const T *g, const T *src,
                              const fc_index *restrict off, T *restrict acc) {
    const int groups = (kk + FC_DW_TAPS - 1) / FC_DW_TAPS;
    for (int i = 0, t0 = 0; i < groups; i++) {
        const int nt = (kk - t0) / (groups - i); /* the rest split evenly */
        switch (nt) {
#define FC_DW_CASE(k)                                                                              \
    case k:                                                                                        \
        FC_LOCAL(dw_dot_group)(k, n, g, src, off + t0, acc + t0);                                  \
        break;
            FC_DW_CASE(1)
            FC_DW_CASE(2)
            FC_DW_CASE(3)
            FC_DW_CASE(4)
            FC_DW_CASE(5)
            FC_DW_CASE(6)
            FC_DW_CASE(7)
        default:
            FC_LOCAL(dw_dot_group)(FC_DW_TAPS, n, g, src, off + t0, acc + t0);
#undef FC_DW_CASE
        }
        t0 += nt;
    }
}

/* The passes' grid: the zero-padded channel they read (or write), the one phase of geometry d,
 * and the grid of L pixels, wph per row, on which tap t of pixel q reads the channel at
 * off_t + q; output (oh, ow) of the layer is grid pixel (sh oh) wph + sw ow. */
typedef struct {
    fc_conv2d_params d;    /* the stride-1 geometry whose phase the channel is */
    FC_LOCAL(phases_t) ph; /* its phase: hph x wph */
    fc_index L;            /* grid pixels: d.out_h rows of wph */
    fc_index sh, sw;       /* the layer's output (oh, ow) at grid row sh oh, column sw ow */
} FC_LOCAL(grid_t);

/* The grid of the stride-1 convolution with the same kernel, dilation and padding, whose one
 * phase is the zero-padded channel (out_h = sH (OH - 1) + 1, ...). A strided layer's outputs
 * are every sH-th row and sW-th column of it: the pixels in between are computed and dropped
 * (forward) or meet zeros of dY (backward), sH sW times the multiply-adds, which costs less
 * than splitting small planes into stride phases row by row. */
static FC_LOCAL(grid_t) FC_LOCAL(dense_geometry)(const fc_conv2d_params *p) {
    FC_LOCAL(grid_t) g;
    g.d = *p;
    g.d.stride_h = g.d.stride_w = 1;
    g.d.out_h = p->stride_h * (p->out_h - 1) + 1;
    g.d.out_w = p->stride_w * (p->out_w - 1) + 1;
    g.ph = FC_LOCAL(phase_geometry)(&g.d);
    g.L = g.d.out_h * g.ph.wph;
    g.sh = p->stride_h;
    g.sw = p->stride_w;
    return g;
}

/* Where each tap (i, j) starts in the padded channel. */
static void FC_LOCAL(dw_tap_offsets)(const FC_LOCAL(grid_t) *g, fc_index *off) {
    for (fc_index t = 0; t < g->d.kernel_h * g->d.kernel_w; t++)
        off[t] = FC_LOCAL(tap_offset)(&g->d, &g->ph, t / g->d.kernel_w, t % g->d.kernel_w);
}

/* n padded channels, one after another, then FC_DW_BLOCK zeros: the passes run their
 * microkernels over whole blocks and vectors, past the grid's end. */
static T *FC_LOCAL(dw_channels_alloc)(const FC_LOCAL(grid_t) *g, fc_index n) {
    T *xph = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(n * g->ph.channel + FC_DW_BLOCK));
    if (xph) memset(xph + n * g->ph.channel, 0, sizeof(T) * FC_DW_BLOCK);
    return xph;
}

/* Channel xc zero padded at dst, having asked the caches for the channel `next` the thread
 * reads after it (NULL for none): its misses then overlap the work on this one, where the
 * prefetchers would start on it only once its first rows were waited for. */
static void FC_LOCAL(dw_split)(const FC_LOCAL(grid_t) *g, const T *xc, const T *next, T *dst) {
    if (next) fc_prefetch(next, sizeof(T) * (size_t)(g->d.in_h * g->d.in_w));
    FC_LOCAL(split_phases)(&g->d, &g->ph, xc, dst);
}

/* dY plane (OH x OW) onto the grid at dst: output (oh, ow) at (sH oh) wph + sW ow. Only
 * those elements are written; the grid's others stay as they were (zeros, set once). */
static void FC_LOCAL(dw_spread)(const fc_conv2d_params *p, const FC_LOCAL(grid_t) *g,
                                const T *restrict gy, T *restrict dst) {
    for (fc_index oh = 0; oh < p->out_h; oh++) {
        const T *restrict src = gy + oh * p->out_w;
        T *restrict row = dst + g->sh * oh * g->ph.wph;
        if (g->sw == 1)
            memcpy(row, src, sizeof(T) * (size_t)p->out_w);
        else
            for (fc_index ow = 0; ow < p->out_w; ow++) row[g->sw * ow] = src[ow];
    }
}

/* Grid pixel (sH oh, sW ow) plus b into output (oh, ow) of the plane y, then ReLU if the
 * forward pass fuses it. */
static void FC_LOCAL(dw_gather_out)(const fc_conv2d_params *p, const FC_LOCAL(grid_t) *g,
                                    const T *restrict grid, T b, T *restrict y) {
    for (fc_index oh = 0; oh < p->out_h; oh++) {
        const T *restrict src = grid + g->sh * oh * g->ph.wph;
        T *restrict dst = y + oh * p->out_w;
        if (g->sw == 1)
            for (fc_index ow = 0; ow < p->out_w; ow++) dst[ow] = src[ow] + b;
        else
            for (fc_index ow = 0; ow < p->out_w; ow++) dst[ow] = src[g->sw * ow] + b;
        if (p->relu) FC_LOCAL(relu_run)(dst, p->out_w);
    }
}

static int FC_LOCAL(conv2d_fwd_depthwise)(const fc_conv2d_params *p, const fc_tuning *tn,
                                          const T *x, const T *w, const T *bias, T *y,
                                          int nthreads) {
    const fc_index K = p->out_channels, Kg = K / p->groups, kk = p->kernel_h * p->kernel_w;
    const fc_index HW = p->in_h * p->in_w, P = p->out_h * p->out_w, ntasks = p->batch * K;
    const FC_LOCAL(grid_t) g = FC_LOCAL(dense_geometry)(p);
    /* whole blocks of the microkernel: the pixels past the grid read the channel's zeroed
     * slack and are dropped */
    const fc_index L = FC_CEIL_DIV(g.L, FC_DW_BLOCK) * FC_DW_BLOCK;
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)ntasks * P * kk, tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *xph = FC_LOCAL(dw_channels_alloc)(&g, 1);
        T *grid = (T *)fc_aligned_alloc(sizeof(T) * (size_t)L);
        fc_index *off = (fc_index *)malloc(sizeof(fc_index) * (size_t)kk);
        const int ok = xph && grid && off;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else {
            FC_LOCAL(dw_tap_offsets)(&g, off);
        }
        fc_index built = -1; /* the input plane xph holds */
        FC_PRAGMA(omp for schedule(dynamic, 16))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index n = t / K, k = t % K, plane = n * p->groups + k / Kg;
            if (built != plane) {
                const int last = plane + 1 == p->batch * p->groups;
                FC_LOCAL(dw_split)(&g, x + plane * HW, last ? NULL : x + (plane + 1) * HW, xph);
                built = plane;
            }
            FC_DW_UKERNEL(L, (int)kk, w + k * kk, xph, off, grid);
            FC_LOCAL(dw_gather_out)(p, &g, grid, bias ? bias[k] : (T)0, y + t * P);
        }
        fc_aligned_free(xph);
        fc_aligned_free(grid);
        free(off);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

/* The adjoint of the forward pass: the padded channel's gradient at e is the sum over the
 * group's output channels j and taps t of w_jt dY_j,grid[e - off_t], read from each dY grid
 * after a margin of zeros as long as the farthest tap's offset, then its interior is dX, added
 * to the bias per input channel when there is one.
 * FC_NONFINITE when w holds an Inf or NaN: the grids' zeros meet every weight, where the exact
 * gradient multiplies a weight by real outputs only. */
static int FC_LOCAL(conv2d_bwd_input_depthwise)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                const T *gy, const T *w, const T *bias, T *gx,
                                                int nthreads) {
    const fc_index G = p->groups, Kg = p->out_channels / G, kk = p->kernel_h * p->kernel_w;
    const fc_index H = p->in_h, W = p->in_w, HW = H * W, P = p->out_h * p->out_w;
    if (!FC_LOCAL(all_finite)(tn, w, p->out_channels * kk, nthreads)) return FC_NONFINITE;
    const FC_LOCAL(grid_t) g = FC_LOCAL(dense_geometry)(p);
    const fc_index wph = g.ph.wph;
    const fc_index margin = (p->kernel_h - 1) * p->dilation_h * wph +
                            (p->kernel_w - 1) * p->dilation_w;
    const fc_index gsize = margin +
                           g.ph.phase; /* a grid, its margin and zeros to a whole channel */
    /* whole blocks of the microkernel: past the channel it reads the next grid or the slack
     * after the last, and those pixels are dropped */
    const fc_index nout = FC_CEIL_DIV(g.ph.phase, FC_DW_BLOCK) * FC_DW_BLOCK;
    const fc_index ntasks = p->batch * G;
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * kk,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *grids = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(Kg * gsize + FC_DW_BLOCK));
        T *out = (T *)fc_aligned_alloc(sizeof(T) * (size_t)nout);
        T *wl = (T *)malloc(sizeof(T) * (size_t)(Kg * kk));
        fc_index *off = (fc_index *)malloc(sizeof(fc_index) * (size_t)(Kg * kk));
        const int ok = grids && out && wl && off;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else {
            memset(grids, 0, sizeof(T) * (size_t)(Kg * gsize + FC_DW_BLOCK));
            FC_LOCAL(dw_tap_offsets)(&g, off);
            for (fc_index j = Kg * kk - 1; j >= 0; j--) /* (channel j / kk, tap j % kk) */
                off[j] = (j / kk) * gsize + margin - off[j % kk];
        }
        FC_PRAGMA(omp for schedule(dynamic, 4))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index n = t / G, grp = t % G;
            for (fc_index j = 0; j < Kg; j++)
                FC_LOCAL(dw_spread)(p, &g, gy + (n * p->out_channels + grp * Kg + j) * P,
                                    grids + j * gsize + margin);
            for (fc_index j = 0; j < Kg * kk; j++) wl[j] = w[grp * Kg * kk + j];
            FC_DW_UKERNEL(nout, (int)(Kg * kk), wl, grids, off, out);
            /* each channel starts at its bias (conv_transpose2d's), col2im's order; elements no
             * tap reads keep it */
            T *gxc = gx + t * HW;
            const T b = bias ? bias[grp] : (T)0;
            for (fc_index e = 0; e < HW; e++) gxc[e] = b;
            for (fc_index r = 0; r < g.ph.hph; r++) {
                const fc_index ih = r - p->pad_top;
                if ((fc_uindex)ih < (fc_uindex)H)
                    FC_FN(scatter_add_run)(gxc + ih * W, -p->pad_left, 1, W, wph, out + r * wph);
            }
        }
        fc_aligned_free(grids);
        fc_aligned_free(out);
        free(wl);
        free(off);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

/* dW_kct = the sum over images and grid pixels q of dY_k,grid[q] Xpad_c[off_t + q]: for each
 * output channel k and input channel c of a group, a dot of dY_k's grid with padded channel c
 * at each tap's offset. Any number of channels per group (the depthwise weight gradient, and
 * the grouped one): the direct pass's GEMM takes a group's output channels as its columns,
 * padded to NR, and would run almost empty on a few. Tasks are groups, each summing its images
 * in order into its own rows of dW. FC_NONFINITE when x holds an Inf or NaN: the grid's pixels
 * that are no output are zeros of dY that would multiply them. Each padded channel is tested as
 * it is made, in cache (a separate test would read all of X once more); the first task to find
 * one stops the others, and the fallback rewrites dW. */
static int FC_LOCAL(conv2d_bwd_weight_grouped)(const fc_conv2d_params *p, const fc_tuning *tn,
                                               const T *gy, const T *x, T *gw, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, HW = p->in_h * p->in_w, P = p->out_h * p->out_w;
    const FC_LOCAL(grid_t) g = FC_LOCAL(dense_geometry)(p);
    /* whole vectors of the dot microkernel: the grids' zeros past their end meet the next
     * padded channel's finite values or the slack of zeros after the last */
    const fc_index L = FC_CEIL_DIV(g.L, FC_DW_LANES) * FC_DW_LANES;
    int failed = 0, nonfinite = 0;
    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * Cg * kk,
                                  tn->conv_min_work, G);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *xph = FC_LOCAL(dw_channels_alloc)(&g, Cg);
        T *grids = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(Kg * L));
        fc_index *off = (fc_index *)malloc(sizeof(fc_index) * (size_t)kk);
        const int ok = xph && grids && off;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else {
            FC_LOCAL(dw_tap_offsets)(&g, off);
            memset(grids, 0, sizeof(T) * (size_t)(Kg * L));
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index grp = 0; grp < G; grp++) {
            int stop;
            FC_PRAGMA(omp atomic read)
            stop = nonfinite;
            if (!ok || stop) continue;
            T *acc = gw + grp * Kg * Cg * kk; /* (k, c, tap) of the group's Kg x Cg x kk */
            for (fc_index e = 0; e < Kg * Cg * kk; e++) acc[e] = (T)0;
            for (fc_index n = 0; n < p->batch; n++) {
                int bad = 0;
                for (fc_index c = 0; c < Cg; c++) {
                    const T *xc = x + (n * p->in_channels + grp * Cg + c) * HW;
                    const T *next = n + 1 < p->batch ? xc + p->in_channels * HW : NULL;
                    T *xpc = xph + c * g.ph.channel;
                    FC_LOCAL(dw_split)(&g, xc, next, xpc);
                    for (fc_index e = 0; e < g.ph.channel; e++) /* Inf - Inf, NaN - NaN: NaN */
                        bad |= (xpc[e] - xpc[e]) != (xpc[e] - xpc[e]);
                }
                if (bad) {
                    FC_PRAGMA(omp atomic write)
                    nonfinite = 1;
                    break;
                }
                for (fc_index k = 0; k < Kg; k++)
                    FC_LOCAL(dw_spread)(p, &g, gy + (n * p->out_channels + grp * Kg + k) * P,
                                        grids + k * L);
                for (fc_index k = 0; k < Kg; k++)
                    for (fc_index c = 0; c < Cg; c++)
                        FC_DW_DOT_UKERNEL(L, (int)kk, grids + k * L, xph + c * g.ph.channel, off,
                                          acc + (k * Cg + c) * kk);
            }
        }
        fc_aligned_free(xph);
        fc_aligned_free(grids);
        free(off);
    }
    return failed ? FC_ENOMEM : nonfinite ? FC_NONFINITE : FC_OK;
}

#endif /* FC_CONV2D_DEPTHWISE_H */
