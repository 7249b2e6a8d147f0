/* conv2d_gemm.h: convolution forward and backward as packed GEMMs, one template for every dtype and
 * instruction set. A kernel file defines T, FC_DT (f32|f64), FC_ISA (scalar|avx2|avx512), FC_MR
 * and FC_NR, and for a SIMD path the vector type and intrinsics listed at the microkernel, then
 * includes this file.
 *
 * Every pass is C[M x N] (+)= A[M x Kd] * B[Kd x N] on one image and one group, BLIS-style: A and B
 * are packed into MR-row / NR-column panels and an MR x NR register microkernel does the FMAs. The
 * im2col matrix is never built whole: it is packed tile by tile into a bounded per-thread buffer.
 *   forward      Y[K, P]      = W[K, R] * col(X)[R, P]      tasks: (image, group, pixel tile,
 *                                                                  output-channel part)
 *   input grad   stride 1: a forward convolution of dY with the flipped, transposed weights;
 *                otherwise col(dX)[R,P] = W^T[R, K] * dY[K, P], tasks (image, group, channel
 *                block), then col2im scatter-adds each tile into dX (a task owns its channels)
 *   weight grad  dW^T[R, K] += col(X)[R, P] * dY^T[P, K] with col(X) read in place from
 *                zero-padded stride phases of each image (no im2col); tasks: (batch chunk,
 *                group, channel block); batch chunks sum privately, added in a fixed order
 * with R = C/groups * kH * kW and P = OH * OW. The split into tasks never depends on the thread
 * count, so results are bit-identical for any number of threads.
 */
#include "fc_internal.h"

#define FC_FN(op) FC_CAT3(FC_CAT3(fc_, FC_DT, _), op, FC_CAT2(__, FC_ISA))
#define FC_LOCAL(name) FC_CAT3(name, _, FC_DT)

/* Reduction depth per panel: one B panel (KC x NR) stays within ~24 KB of L1. */
#define FC_KC FC_MAX(64, 24576 / (FC_NR * (int)sizeof(T)))
/* Upper bound on the pixels in one forward / input-gradient tile. */
#define FC_NC_MAX 384
/* Rows of col(dX) (channels x kernel offsets) that one input-gradient task owns at most. */
#define FC_ROWS_MAX 288
/* Roughly 200k multiply-adds per thread before another thread pays for its start-up. */
#define FC_CONV_MIN_WORK 2.0e5

/* ---- the microkernel: C[mr x nr] (+)= A_panel * B_panel over kc --------------------------- */
/* A panel: kc groups of FC_MR values; B panel: kc groups of FC_NR values (zero padded).
 * accumulate: C += acc; else C = acc + bias[i] (bias may be NULL). */
#ifdef FC_VEC
/* Vector path: the kernel file defines FC_VEC (the register type), FC_VL (its lanes) and the
 * intrinsics FC_VLOADU, FC_VSTOREU, FC_VSET1, FC_VFMA (a*b+c), FC_VADD, FC_VZERO and
 * FC_VCOPY_PARTIAL(dst, src, n < VL) (a masked copy). The broadcast of
 * A folds into the FMA's memory operand; MR x NV accumulators stay in registers. NV is NR/VL for
 * full panels and half that for a narrow last panel, so P = 196 does not pay for 224 columns. */
#define FC_NV (FC_NR / FC_VL)

static inline __attribute__((always_inline)) void FC_LOCAL(ukernel_nv)(
    const int nv, fc_index kc, const T *restrict A, const T *restrict B, T *restrict C,
    fc_index ldc, int mr, int nr, int accumulate, const T *restrict bias) {
    FC_VEC acc[FC_MR][FC_NV];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++)
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < nv; v++) acc[i][v] = FC_VZERO();
    for (fc_index r = 0; r < kc; r++) {
        FC_VEC b[FC_NV];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < nv; v++) b[v] = FC_VLOADU(B + r * FC_NR + v * FC_VL);
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            const FC_VEC a = FC_VSET1(A[r * FC_MR + i]);
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < nv; v++) acc[i][v] = FC_VFMA(a, b[v], acc[i][v]);
        }
    }
    if (mr == FC_MR && nr == nv * FC_VL) {
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            T *c = C + i * ldc;
            const FC_VEC add = (!accumulate && bias) ? FC_VSET1(bias[i]) : FC_VZERO();
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < nv; v++) {
                const FC_VEC base = accumulate ? FC_VLOADU(c + v * FC_VL) : add;
                FC_VSTOREU(c + v * FC_VL, FC_VADD(acc[i][v], base));
            }
        }
        return;
    }
    T tile[FC_MR][FC_NR];
    for (int i = 0; i < FC_MR; i++)
        for (int v = 0; v < nv; v++) FC_VSTOREU(&tile[i][v * FC_VL], acc[i][v]);
    for (int i = 0; i < mr; i++) {
        T *c = C + i * ldc;
        const T add = (!accumulate && bias) ? bias[i] : (T)0;
        for (int j = 0; j < nr; j++) c[j] = accumulate ? c[j] + tile[i][j] : tile[i][j] + add;
    }
}

static void FC_LOCAL(ukernel_full)(fc_index kc, const T *restrict A, const T *restrict B,
                                   T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                   const T *restrict bias) {
    FC_LOCAL(ukernel_nv)(FC_NV, kc, A, B, C, ldc, mr, nr, accumulate, bias);
}

#if FC_NV % 2 == 0
static void FC_LOCAL(ukernel_half)(fc_index kc, const T *restrict A, const T *restrict B,
                                   T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                   const T *restrict bias) {
    FC_LOCAL(ukernel_nv)(FC_NV / 2, kc, A, B, C, ldc, mr, nr, accumulate, bias);
}
#endif

static inline void FC_LOCAL(ukernel)(fc_index kc, const T *restrict A, const T *restrict B,
                                     T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                     const T *restrict bias) {
#if FC_NV % 2 == 0
    if (nr <= FC_NR / 2) {
        FC_LOCAL(ukernel_half)(kc, A, B, C, ldc, mr, nr, accumulate, bias);
        return;
    }
#endif
    FC_LOCAL(ukernel_full)(kc, A, B, C, ldc, mr, nr, accumulate, bias);
}
#else
static inline void FC_LOCAL(ukernel)(fc_index kc, const T *restrict A, const T *restrict B,
                                     T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                     const T *restrict bias) {
    T acc[FC_MR][FC_NR];
    memset(acc, 0, sizeof(acc));
    for (fc_index r = 0; r < kc; r++)
        for (int i = 0; i < FC_MR; i++) {
            const T a = A[r * FC_MR + i];
            for (int j = 0; j < FC_NR; j++) acc[i][j] += a * B[r * FC_NR + j];
        }
    for (int i = 0; i < mr; i++) {
        T *c = C + i * ldc;
        const T add = (!accumulate && bias) ? bias[i] : (T)0;
        for (int j = 0; j < nr; j++) c[j] = accumulate ? c[j] + acc[i][j] : acc[i][j] + add;
    }
}
#endif

/* ---- packing -------------------------------------------------------------------------------- */

/* A(i, k) = src[i * rs + k * cs] for i < m, k < kd, into panels [m / MR][kd][MR] (rows past m are
 * zero). Used for W (forward), W^T (input gradient) and dY (weight gradient). */
static void FC_LOCAL(pack_a)(fc_index m, fc_index kd, const T *src, fc_index rs, fc_index cs,
                             T *dst) {
    for (fc_index i0 = 0; i0 < m; i0 += FC_MR) {
        const int mr = (int)FC_MIN(FC_MR, m - i0);
        for (fc_index k = 0; k < kd; k++, dst += FC_MR) {
            int i = 0;
            for (; i < mr; i++) dst[i] = src[(i0 + i) * rs + k * cs];
            for (; i < FC_MR; i++) dst[i] = (T)0;
        }
    }
}

/* ---- im2col by row runs ------------------------------------------------------------------------
 * The pixels of a tile are cut into runs that lie in one output row (and one NR panel). For a
 * kernel tap (c, i, j) a run reads one input row at a fixed column step, so packing and col2im
 * work on contiguous stretches with the bounds settled once per run, not once per element. */
typedef struct {
    fc_index q;   /* first pixel of the run, relative to the tile */
    fc_index len; /* pixels in the run */
    fc_index ih0; /* input row of tap (0, 0): oh * stride_h - pad_top */
    fc_index iw0; /* input column of tap (0, 0) for the run's first pixel */
} FC_LOCAL(run_t);

/* True when col(X) row r is simply channel r of X (1x1, stride 1, no padding): runs may then
 * cross output rows. */
static inline int FC_LOCAL(is_pointwise)(const fc_conv2d_params *p) {
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_left == 0 && p->out_w == p->in_w && p->out_h == p->in_h;
}

/* Runs of tile pixels [p0, p0 + n), also cut every `split` pixels; returns how many. */
static fc_index FC_LOCAL(tile_runs)(const fc_conv2d_params *p, fc_index p0, fc_index n,
                                    fc_index split, FC_LOCAL(run_t) *runs) {
    const int pointwise = FC_LOCAL(is_pointwise)(p);
    fc_index count = 0, q = 0;
    while (q < n) {
        const fc_index oh = (p0 + q) / p->out_w, ow = (p0 + q) % p->out_w;
        fc_index len = FC_MIN(n - q, split - q % split);
        if (!pointwise) len = FC_MIN(len, p->out_w - ow);
        runs[count].q = q;
        runs[count].len = len;
        runs[count].ih0 = oh * p->stride_h - p->pad_top;
        runs[count].iw0 = ow * p->stride_w - p->pad_left;
        count++;
        q += len;
    }
    return count;
}

/* dst[t * ds] = row[iw0 + t * s] for t < len, 0 where the column falls outside the row (or the
 * whole run when row is NULL: an input row in the padding). */
static inline void FC_LOCAL(gather_run)(const T *row, fc_index iw0, fc_index s, fc_index W,
                                        fc_index len, T *dst, fc_index ds) {
    fc_index lo = len, hi = len, t = 0;
    if (row) fc_inside_span(iw0, s, len, W, &lo, &hi);
    for (; t < lo; t++) dst[t * ds] = (T)0;
    if (row && s == 1 && ds == 1) {
        const T *src = row + (iw0 + lo); /* the first column inside the row */
        T *d = dst + lo;
        const fc_index n = hi - lo;
        fc_index u = 0;
#ifdef FC_VEC
        /* short runs: vector copies and one masked tail beat a memcpy call */
        for (; u + FC_VL <= n; u += FC_VL) FC_VSTOREU(d + u, FC_VLOADU(src + u));
        if (u < n) FC_VCOPY_PARTIAL(d + u, src + u, (int)(n - u));
#else
        for (; u < n; u++) d[u] = src[u];
#endif
        t = hi;
    } else if (row && ds == 1 && s >= 2 && s <= 4) {
        /* the stride phases of strided layers: a constant stride lets the compiler load whole
         * registers and permute them (down-s2 spent a sixth of its time here, element by
         * element) */
        const T *src = row + (iw0 + lo * s);
        T *d = dst + lo;
        const fc_index n = hi - lo;
        if (s == 2)
            for (fc_index u = 0; u < n; u++) d[u] = src[2 * u];
        else if (s == 3)
            for (fc_index u = 0; u < n; u++) d[u] = src[3 * u];
        else
            for (fc_index u = 0; u < n; u++) d[u] = src[4 * u];
        t = hi;
    } else {
        for (; t < hi; t++) dst[t * ds] = row[iw0 + t * s];
    }
    for (; t < len; t++) dst[t * ds] = (T)0;
}

/* row[iw0 + t * s] += src[t] for the columns inside the row. */
static inline void FC_LOCAL(scatter_add_run)(T *row, fc_index iw0, fc_index s, fc_index W,
                                             fc_index len, const T *src) {
    fc_index lo, hi;
    fc_inside_span(iw0, s, len, W, &lo, &hi);
    if (s == 1) {
        T *d = row + (iw0 + lo);
        for (fc_index t = lo; t < hi; t++) d[t - lo] += src[t];
    } else {
        for (fc_index t = lo; t < hi; t++) row[iw0 + t * s] += src[t];
    }
}

/* Input row of tap (c, i) for a run, or NULL when it lies in the padding. For pointwise runs the
 * "row" is the channel itself starting at the run's first pixel. */
static inline const T *FC_LOCAL(tap_row)(const fc_conv2d_params *p, const T *xc,
                                         const FC_LOCAL(run_t) *run, fc_index di, int pointwise) {
    if (pointwise) return xc + run->ih0 * p->in_w;
    const fc_index ih = run->ih0 + di;
    return (fc_uindex)ih < (fc_uindex)p->in_h ? xc + ih * p->in_w : NULL;
}

/* B(k, q) = src[k * ld + q] for k < kd, q < nc, into panels [nc / NR][kd][NR]. */
static void FC_LOCAL(pack_b_rows)(fc_index kd, fc_index nc, const T *src, fc_index ld, T *dst) {
    for (fc_index q0 = 0; q0 < nc; q0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, nc - q0);
        for (fc_index k = 0; k < kd; k++, dst += FC_NR) {
            int q = 0;
            for (; q < nr; q++) dst[q] = src[k * ld + q0 + q];
            for (; q < FC_NR; q++) dst[q] = (T)0;
        }
    }
}

/* B(r, u) = rows[r][q + u] for r < kc, u < NR: one KC x NR panel of col(X) (or of a Winograd
 * V_e) whose rows lie apart in memory. Reading them in place cost more than this copy: rows at
 * a power-of-two stride fall into a few L1 sets and evict each other, and unaligned rows split
 * every load over two cache lines. The panel is reused by every A panel that passes. */
static inline void FC_LOCAL(pack_b_panel)(fc_index kc, const T *const *rows, fc_index q,
                                          T *restrict dst) {
    for (fc_index r = 0; r < kc; r++) memcpy(dst + r * FC_NR, rows[r] + q, sizeof(T) * FC_NR);
}

/* Split P pixels into equal tiles of at most `max_tile`, rounded up to NR. */
static fc_index FC_LOCAL(tile_size)(fc_index P, fc_index max_tile) {
    const fc_index ntiles = FC_CEIL_DIV(P, max_tile);
    const fc_index t = FC_CEIL_DIV(P, ntiles);
    return FC_CEIL_DIV(t, FC_NR) * FC_NR;
}

/* ---- stride phases ---------------------------------------------------------------------------
 * Each image's channels are copied once, zero padded, into stride x stride phases: phase (a, b)
 * holds padded rows a, a+sH, ... and columns b, b+sW, .... In its phase a kernel tap (i, j) reads
 * a plain contiguous row for consecutive output pixels, on a grid of `wph` >= OW columns per output
 * row, so col(X) never needs to be built: a KC x NR panel of it is a copy of NR-wide rows
 * (forward) or is read in place (weight gradient). The grid's extra columns are computed and
 * dropped (forward) or meet zeros in dY (weight gradient). */
typedef struct {
    fc_index hph, wph; /* rows and columns of one phase */
    fc_index phase;    /* elements in one phase */
    fc_index channel;  /* elements of one channel's sH * sW phases */
} FC_LOCAL(phases_t);

static FC_LOCAL(phases_t) FC_LOCAL(phase_geometry)(const fc_conv2d_params *p) {
    FC_LOCAL(phases_t) ph;
    /* the last tap of the last output row and column, plus one spare row: the grid's padding
     * columns of the last row run on into it */
    ph.hph = p->out_h + ((p->kernel_h - 1) * p->dilation_h) / p->stride_h + 1;
    ph.wph = p->out_w + ((p->kernel_w - 1) * p->dilation_w) / p->stride_w;
    ph.phase = ph.hph * ph.wph;
    ph.channel = p->stride_h * p->stride_w * ph.phase;
    return ph;
}

/* Where tap (i, j) of a channel starts in its phases. */
static inline fc_index FC_LOCAL(tap_offset)(const fc_conv2d_params *p,
                                            const FC_LOCAL(phases_t) *ph, fc_index i,
                                            fc_index j) {
    const fc_index di = i * p->dilation_h, dj = j * p->dilation_w;
    const fc_index a = di % p->stride_h, b = dj % p->stride_w;
    return (a * p->stride_w + b) * ph->phase + (di / p->stride_h) * ph->wph + dj / p->stride_w;
}

/* Split channel xc (in_h x in_w) into its zero-padded phases at dst. */
static void FC_LOCAL(split_phases)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                   const T *xc, T *dst) {
    for (fc_index a = 0; a < p->stride_h; a++)
        for (fc_index b = 0; b < p->stride_w; b++) {
            T *out = dst + (a * p->stride_w + b) * ph->phase;
            for (fc_index r = 0; r < ph->hph; r++) {
                const fc_index ih = r * p->stride_h + a - p->pad_top;
                const T *row = (fc_uindex)ih < (fc_uindex)p->in_h ? xc + ih * p->in_w : NULL;
                FC_LOCAL(gather_run)(row, b - p->pad_left, p->stride_w, p->in_w, ph->wph,
                                     out + r * ph->wph, 1);
            }
        }
}

/* ---- forward -------------------------------------------------------------------------------- */

/* ---- the exact fallbacks ---------------------------------------------------------------------
 * Plain loops straight from the definition, parallel over outputs. They serve the cases the fast
 * paths must not take: geometries whose stride phases would dwarf the data (strides or
 * dilations of millions), and, for the weight gradient, inputs holding Inf or NaN, which the
 * phase grid's dropped columns would otherwise turn into NaN through 0 * Inf. */

/* True when every element is finite (exponent bits not all set), as an integer OR-reduction. */
static int FC_LOCAL(all_finite)(const T *a, fc_index n, int nthreads) {
    int bad = 0;
    const int nt = fc_threads_for(nthreads, (double)n, 1.0e6, n);
    FC_PRAGMA(omp parallel for reduction(| : bad) schedule(static) num_threads(nt))
    for (fc_index i = 0; i < n; i++) {
        const T v = a[i];
        bad |= (v - v) != (v - v); /* inf - inf and NaN - NaN are NaN */
    }
    return !bad;
}

/* Stride phases cost sH*sW*hph*wph per channel; beyond a few times the channel's input and
 * output they are the wrong tool (and could overflow an index), so the plain loops run. */
static int FC_LOCAL(phases_fit)(const fc_conv2d_params *p) {
    const double hph = (double)p->out_h + (double)(p->kernel_h - 1) * p->dilation_h / p->stride_h + 1;
    const double wph = (double)p->out_w + (double)(p->kernel_w - 1) * p->dilation_w / p->stride_w;
    const double phases = (double)p->stride_h * (double)p->stride_w * hph * wph;
    const double data = (double)p->in_h * p->in_w + (double)p->out_h * p->out_w;
    return phases <= 4.0 * data + 65536.0;
}

static int FC_LOCAL(conv2d_fwd_plain)(const fc_conv2d_params *p, const T *x, const T *w,
                                      const T *bias, T *y, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, ntasks = p->batch * p->out_channels;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OH * OW * Cg * kh * kw,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index n = t / p->out_channels, k = t % p->out_channels, g = k / Kg;
        const T *xg = x + (n * p->in_channels + g * Cg) * H * W;
        T *out = y + t * OH * OW;
        for (fc_index oh = 0; oh < OH; oh++)
            for (fc_index ow = 0; ow < OW; ow++) {
                T acc = bias ? bias[k] : (T)0;
                for (fc_index c = 0; c < Cg; c++)
                    for (fc_index i = 0; i < kh; i++) {
                        const fc_index ih = oh * p->stride_h - p->pad_top + i * p->dilation_h;
                        const int row_in = (fc_uindex)ih < (fc_uindex)H;
                        for (fc_index j = 0; j < kw; j++) {
                            const fc_index iw = ow * p->stride_w - p->pad_left + j * p->dilation_w;
                            /* padding is a zero that still multiplies (0 * NaN weight = NaN),
                             * as in PyTorch's im2col convolution and the reference */
                            const T v = row_in && (fc_uindex)iw < (fc_uindex)W
                                            ? xg[(c * H + ih) * W + iw] : (T)0;
                            acc += w[((k * Cg + c) * kh + i) * kw + j] * v;
                        }
                    }
                out[oh * OW + ow] = acc;
            }
    }
    return FC_OK;
}

static int FC_LOCAL(conv2d_bwd_weight_plain)(const fc_conv2d_params *p, const T *gy, const T *x,
                                             T *gw, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, ntasks = p->out_channels * Cg;
    const int nt = fc_threads_for(nthreads, (double)p->batch * ntasks * OH * OW * kh * kw,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index k = t / Cg, c = t % Cg, g = k / Kg;
        for (fc_index i = 0; i < kh; i++)
            for (fc_index j = 0; j < kw; j++) {
                T acc = 0;
                for (fc_index n = 0; n < p->batch; n++) {
                    const T *xc = x + (n * p->in_channels + g * Cg + c) * H * W;
                    const T *g_out = gy + (n * p->out_channels + k) * OH * OW;
                    for (fc_index oh = 0; oh < OH; oh++) {
                        const fc_index ih = oh * p->stride_h - p->pad_top + i * p->dilation_h;
                        const int row_in = (fc_uindex)ih < (fc_uindex)H;
                        for (fc_index ow = 0; ow < OW; ow++) {
                            const fc_index iw = ow * p->stride_w - p->pad_left + j * p->dilation_w;
                            const T v = row_in && (fc_uindex)iw < (fc_uindex)W
                                            ? xc[ih * W + iw] : (T)0; /* padding multiplies too */
                            acc += g_out[oh * OW + ow] * v;
                        }
                    }
                }
                gw[(t * kh + i) * kw + j] = acc;
            }
    }
    return FC_OK;
}

/* db[k] = sum of dY[:, k]: double partial sums keep float32 results at float32 accuracy, and
 * eight independent chains keep the adds from waiting on each other. */
static void FC_LOCAL(bias_grad)(const fc_conv2d_params *p, const T *gy, T *gb, int nthreads) {
    const fc_index P = p->out_h * p->out_w, K = p->out_channels;
    const int nt = fc_threads_for(nthreads, (double)p->batch * K * P, 1.0e6, K);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index k = 0; k < K; k++) {
        double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (fc_index n = 0; n < p->batch; n++) {
            const T *row = gy + (n * K + k) * P;
            fc_index q = 0;
            for (; q + 8 <= P; q += 8)
                for (int u = 0; u < 8; u++) part[u] += (double)row[q + u];
            for (; q < P; q++) part[q % 8] += (double)row[q];
        }
        gb[k] = (T)(((part[0] + part[1]) + (part[2] + part[3])) +
                    ((part[4] + part[5]) + (part[6] + part[7])));
    }
}

#include "conv2d_winograd.h"

int FC_FN(conv2d_fwd)(const fc_conv2d_params *p, const T *x, const T *w, const T *bias, T *y,
                      int nthreads) {
    if (!FC_LOCAL(phases_fit)(p)) return FC_LOCAL(conv2d_fwd_plain)(p, x, w, bias, y, nthreads);
    if (FC_LOCAL(winograd_applies)(p)) {
        /* on Inf/NaN data Winograd reports it and the direct path below redoes the call */
        const int rc = FC_LOCAL(conv2d_fwd_winograd)(p, x, w, bias, y, nthreads);
        if (rc != FC_WINO_NONFINITE) return rc;
    }
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w, OW = p->out_w;
    const FC_LOCAL(phases_t) ph = FC_LOCAL(phase_geometry)(p);
    const fc_index L = p->out_h * ph.wph; /* grid pixels per image */
    const fc_index nc_max = FC_LOCAL(tile_size)(L, FC_NC_MAX);
    const fc_index ntiles = FC_CEIL_DIV(L, nc_max);
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_MR);
    /* Output channels split too when images and tiles alone leave threads idle (batch 1). Every
     * output is still summed by one task in one order, so results do not depend on the split. */
    const fc_index kparts = FC_MAX(1, FC_MIN(kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads,
                                                                   p->batch * G * ntiles)));
    const fc_index ntasks = p->batch * G * ntiles * kparts;
    const int per_image = (int)FC_MIN(ntiles * kparts, 1 << 20); /* tasks of one image */
    /* phases of one image's group, plus slack for the last tile's padding pixels */
    const fc_index xph_size = Cg * ph.channel + ph.phase + nc_max;
    const int pointwise = FC_LOCAL(is_pointwise)(p);
    int failed = 0;

    /* Weights packed once for all tasks: [group][k block][R][MR]. */
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kblocks * FC_MR * R));
    if (!wp) return FC_ENOMEM;
    for (fc_index g = 0; g < G; g++)
        FC_LOCAL(pack_a)(Kg, R, w + g * Kg * R, R, 1, wp + g * kblocks * FC_MR * R);

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *xph = pointwise ? NULL : (T *)fc_aligned_alloc(sizeof(T) * (size_t)xph_size);
        T *cbuf = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kblocks * FC_MR * nc_max));
        T *stage = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(FC_KC * FC_NR));
        const T **brow = (const T **)malloc(sizeof(*brow) * (size_t)R);
        const int ok = (xph || pointwise) && cbuf && stage && brow;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else if (!pointwise) {
            memset(xph + Cg * ph.channel, 0, sizeof(T) * (size_t)(xph_size - Cg * ph.channel));
            for (fc_index r = 0; r < R; r++) /* where tap r starts, in this thread's phases */
                brow[r] = xph + (r / kk) * ph.channel +
                          FC_LOCAL(tap_offset)(p, &ph, (r % kk) / p->kernel_w, r % p->kernel_w);
        }
        fc_index built = -1; /* which (image, group) xph or brow holds */
        /* an image's tasks at a time: a thread builds each image's phases once, and threads
         * slowed by other work still hand over whole images to faster ones */
        FC_PRAGMA(omp for schedule(dynamic, per_image))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, tile = (t / kparts) % ntiles;
            const fc_index ng = t / (kparts * ntiles), g = ng % G, n = ng / G;
            const fc_index q0 = tile * nc_max, nc = FC_MIN(nc_max, L - q0);
            const fc_index kb0 = part * kblocks / kparts, kb1 = (part + 1) * kblocks / kparts;
            if (built != ng) {
                const T *xg = x + (n * p->in_channels + g * Cg) * HW;
                if (pointwise) /* 1x1, stride 1, no padding: the channels are the phases */
                    for (fc_index c = 0; c < Cg; c++) brow[c] = xg + c * HW;
                else
                    for (fc_index c = 0; c < Cg; c++)
                        FC_LOCAL(split_phases)(p, &ph, xg + c * HW, xph + c * ph.channel);
                built = ng;
            }
            for (fc_index r0 = 0; r0 < R; r0 += FC_KC) {
                const fc_index kc = FC_MIN(FC_KC, R - r0);
                /* the kc x NR block of col(X) stays in L1 while every A panel passes */
                for (fc_index j = 0; j < nc; j += FC_NR) {
                    const T *const *rows = brow + r0;
                    const fc_index q = q0 + j;
                    if (pointwise && q + FC_NR > L) { /* would read past the input */
                        for (fc_index r = 0; r < kc; r++) {
                            T *d = stage + r * FC_NR;
                            fc_index u = 0;
                            for (; u < L - q; u++) d[u] = rows[r][q + u];
                            for (; u < FC_NR; u++) d[u] = (T)0;
                        }
                    } else {
                        FC_LOCAL(pack_b_panel)(kc, rows, q, stage);
                    }
                    for (fc_index kb = kb0; kb < kb1; kb++)
                        FC_LOCAL(ukernel)(kc, wp + (g * kblocks + kb) * FC_MR * R + r0 * FC_MR,
                                          stage, cbuf + kb * FC_MR * nc_max + j, nc_max, FC_MR,
                                          FC_NR, r0 > 0, NULL);
                }
            }
            /* the grid's real columns (ow < OW), plus bias, into Y, one channel at a time: the
             * tile's rows of a channel are consecutive in Y, so each channel is one stream the
             * prefetcher follows (row by row across all channels, the write misses of ~100
             * streams waited one by one: alex's copy ran at 6 GB/s) */
            T *yg = y + (n * p->out_channels + g * Kg) * P;
            for (fc_index k = kb0 * FC_MR; k < FC_MIN(Kg, kb1 * FC_MR); k++) {
                const T b = bias ? bias[g * Kg + k] : (T)0;
                for (fc_index j = 0; j < nc;) {
                    const fc_index q = q0 + j, oh = q / ph.wph, ow = q % ph.wph;
                    const fc_index len = FC_MIN(nc - j, ph.wph - ow);
                    const fc_index valid = FC_MAX(0, FC_MIN(len, OW - ow));
                    const T *src = cbuf + k * nc_max + j;
                    T *dst = yg + k * P + oh * OW + ow;
                    for (fc_index u = 0; u < valid; u++) dst[u] = src[u] + b;
                    j += len;
                }
            }
        }
        fc_aligned_free(xph);
        fc_aligned_free(cbuf);
        fc_aligned_free(stage);
        free(brow);
    }
    fc_aligned_free(wp);
    return failed ? FC_ENOMEM : FC_OK;
}

/* ---- input gradient ------------------------------------------------------------------------- */

/* Stride 1: the input gradient is itself a convolution, of dY with the weights transposed
 * (K <-> C per group) and flipped, padded by d*(k-1) - pad, so it runs on the forward kernels
 * with no col2im scatter and the forward's parallelism over pixel tiles. */
static int FC_LOCAL(bwd_input_as_forward)(const fc_conv2d_params *p, const T *gy, const T *w,
                                          T *gx, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, kk = kh * kw;
    T *wt = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(p->out_channels * Cg * kk));
    if (!wt) return FC_ENOMEM;
    for (fc_index g = 0; g < G; g++)
        for (fc_index k = 0; k < Kg; k++)
            for (fc_index c = 0; c < Cg; c++)
                for (fc_index t = 0; t < kk; t++) /* t -> kk-1-t flips both axes */
                    wt[((g * Cg + c) * Kg + k) * kk + (kk - 1 - t)] =
                        w[((g * Kg + k) * Cg + c) * kk + t];
    fc_conv2d_params q = *p;
    q.in_channels = p->out_channels;
    q.in_h = p->out_h;
    q.in_w = p->out_w;
    q.out_channels = p->in_channels;
    q.pad_top = p->dilation_h * (kh - 1) - p->pad_top;
    q.pad_left = p->dilation_w * (kw - 1) - p->pad_left;
    q.out_h = p->in_h;
    q.out_w = p->in_w;
    const int rc = FC_FN(conv2d_fwd)(&q, gy, wt, NULL, gx, nthreads);
    fc_aligned_free(wt);
    return rc;
}

int FC_FN(conv2d_bwd_input)(const fc_conv2d_params *p, const T *gy, const T *w, T *gx,
                            int nthreads) {
    /* as a forward pass the input channels become output channels: worth it once they fill the
     * microkernel's rows (not for C = 1 inputs or depthwise layers) */
    if (p->stride_h == 1 && p->stride_w == 1 && p->in_channels / p->groups >= FC_MR &&
        /* the forward pass pads dY with zeros that would meet Inf/NaN weights, which the exact
         * gradient (col2im keeps only real output positions) never multiplies */
        FC_LOCAL(all_finite)(w, p->out_channels * (p->in_channels / p->groups) * p->kernel_h *
                                    p->kernel_w, nthreads))
        return FC_LOCAL(bwd_input_as_forward)(p, gy, w, gx, nthreads);
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index H = p->in_h, W = p->in_w, HW = H * W;
    const fc_index cb = FC_MAX(1, FC_ROWS_MAX / kk); /* channels per task */
    const fc_index cblocks = FC_CEIL_DIV(Cg, cb);
    const fc_index rows_max = FC_CEIL_DIV(FC_MIN(cb, Cg) * kk, FC_MR) * FC_MR;
    const fc_index nc_max = FC_LOCAL(tile_size)(P, FC_NC_MAX);
    const fc_index ntasks = p->batch * G * cblocks;
    const fc_index kc_max = FC_MIN(Kg, FC_KC);
    int failed = 0;

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kc_max * nc_max));
        T *col = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * nc_max));
        T *wtp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * Kg));
        FC_LOCAL(run_t) *runs = (FC_LOCAL(run_t) *)malloc(sizeof(*runs) * (size_t)nc_max);
        const int ok = bp && col && wtp && runs;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index blk = t % cblocks, g = (t / cblocks) % G, n = t / (cblocks * G);
            const fc_index c0 = blk * cb, c1 = FC_MIN(Cg, c0 + cb);
            const fc_index row0 = c0 * kk, rows = (c1 - c0) * kk;
            T *gxg = gx + (n * p->in_channels + g * Cg) * HW;
            const T *gyg = gy + (n * p->out_channels + g * Kg) * P;
            memset(gxg + c0 * HW, 0, sizeof(T) * (size_t)((c1 - c0) * HW));
            /* This task's rows of W^T, packed as [row block][Kg][MR]. */
            FC_LOCAL(pack_a)(rows, Kg, w + g * Kg * R + row0, 1, R, wtp);
            for (fc_index p0 = 0; p0 < P; p0 += nc_max) {
                const fc_index nc = FC_MIN(nc_max, P - p0);
                const fc_index ldc = FC_CEIL_DIV(nc, FC_NR) * FC_NR;
                for (fc_index k0 = 0; k0 < Kg; k0 += FC_KC) {
                    const fc_index kc = FC_MIN(FC_KC, Kg - k0);
                    FC_LOCAL(pack_b_rows)(kc, nc, gyg + k0 * P + p0, P, bp);
                    for (fc_index m0 = 0; m0 < rows; m0 += FC_MR) {
                        const T *ap = wtp + (m0 * Kg + k0 * FC_MR);
                        for (fc_index q0 = 0; q0 < nc; q0 += FC_NR)
                            FC_LOCAL(ukernel)(kc, ap, bp + q0 * kc, col + m0 * ldc + q0, ldc,
                                              FC_MR, FC_NR, k0 > 0, NULL);
                    }
                }
                /* col2im: scatter-add the tile's rows into this task's channels. */
                const fc_index nruns = FC_LOCAL(tile_runs)(p, p0, nc, nc, runs);
                const int pointwise = FC_LOCAL(is_pointwise)(p);
                for (fc_index r = 0; r < rows; r++) {
                    const fc_index rr = row0 + r;
                    T *dst = gxg + (rr / kk) * HW;
                    const fc_index di = ((rr % kk) / p->kernel_w) * p->dilation_h;
                    const fc_index dj = (rr % p->kernel_w) * p->dilation_w;
                    for (fc_index u = 0; u < nruns; u++) {
                        const FC_LOCAL(run_t) *run = &runs[u];
                        T *row = (T *)FC_LOCAL(tap_row)(p, dst, run, di, pointwise);
                        if (row)
                            FC_LOCAL(scatter_add_run)(row, run->iw0 + dj,
                                                      pointwise ? 1 : p->stride_w,
                                                      pointwise ? HW : W, run->len,
                                                      col + r * ldc + run->q);
                    }
                }
            }
        }
        fc_aligned_free(bp);
        fc_aligned_free(col);
        fc_aligned_free(wtp);
        free(runs);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

/* ---- weight and bias gradients --------------------------------------------------------------
 * dW^T[R, K] = col(X)[R, P] * dY^T[P, K]: the microkernel's broadcast operand is read in place
 * from the stride phases, dY^T is packed per chunk of grid pixels. */
/* dY^T for grid pixels [q0, q0 + n) of one image: panels [Kg / NR][n][NR], zero for the grid's
 * padding columns and for channels past Kg. Reads dY along its rows (one output row run at a
 * time) and scatters into the L1-sized panel, rather than gathering NR rows per pixel. */
static void FC_LOCAL(pack_dy_t)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                const T *gyg, fc_index Kg, fc_index q0, fc_index n, T *dst) {
    const fc_index P = p->out_h * p->out_w, OW = p->out_w, wph = ph->wph;
    for (fc_index k0 = 0; k0 < Kg; k0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, Kg - k0);
        T *panel = dst + (k0 / FC_NR) * n * FC_NR;
        memset(panel, 0, sizeof(T) * (size_t)(n * FC_NR));
        for (int t = 0; t < nr; t++) {
            const T *src = gyg + (k0 + t) * P;
            for (fc_index q = q0; q < q0 + n;) {
                const fc_index oh = q / wph, ow = q % wph;
                const fc_index len = FC_MIN(q0 + n - q, wph - ow);
                const fc_index valid = FC_MAX(0, FC_MIN(len, OW - ow));
                T *d = panel + (q - q0) * FC_NR + t;
                const T *s = src + oh * OW + ow;
                for (fc_index u = 0; u < valid; u++) d[u * FC_NR] = s[u];
                q += len;
            }
        }
    }
}

/* dst[k * ld + r] = acc[r * kg_pad + k] for r < rows, k < Kg, in 16 x 16 blocks that stay in
 * cache on both sides. */
static void FC_LOCAL(transpose_out)(const T *acc, fc_index rows, fc_index Kg, fc_index kg_pad,
                                    T *dst, fc_index ld) {
    for (fc_index k0 = 0; k0 < Kg; k0 += 16)
        for (fc_index r0 = 0; r0 < rows; r0 += 16) {
            const fc_index k1 = FC_MIN(Kg, k0 + 16), r1 = FC_MIN(rows, r0 + 16);
            for (fc_index k = k0; k < k1; k++)
                for (fc_index r = r0; r < r1; r++) dst[k * ld + r] = acc[r * kg_pad + k];
        }
}

#ifdef FC_VEC
/* C[MR x NR] += sum_r a[i][r] * B[r][j]: the A operand is MR input rows read in place. */
static void FC_LOCAL(ukernel_rows)(fc_index kc, const T *const *a, const T *restrict B,
                                   T *restrict C, fc_index ldc) {
    const T *rows[FC_MR];
    FC_VEC acc[FC_MR][FC_NV];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++) {
        rows[i] = a[i];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) acc[i][v] = FC_VZERO();
    }
    for (fc_index r = 0; r < kc; r++) {
        FC_VEC b[FC_NV];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) b[v] = FC_VLOADU(B + r * FC_NR + v * FC_VL);
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            const FC_VEC av = FC_VSET1(rows[i][r]);
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) acc[i][v] = FC_VFMA(av, b[v], acc[i][v]);
        }
    }
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++)
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) {
            T *c = C + i * ldc + v * FC_VL;
            FC_VSTOREU(c, FC_VADD(acc[i][v], FC_VLOADU(c)));
        }
}
#else
static void FC_LOCAL(ukernel_rows)(fc_index kc, const T *const *a, const T *restrict B,
                                   T *restrict C, fc_index ldc) {
    T acc[FC_MR][FC_NR];
    memset(acc, 0, sizeof(acc));
    for (fc_index r = 0; r < kc; r++)
        for (int i = 0; i < FC_MR; i++) {
            const T av = a[i][r];
            for (int j = 0; j < FC_NR; j++) acc[i][j] += av * B[r * FC_NR + j];
        }
    for (int i = 0; i < FC_MR; i++)
        for (int j = 0; j < FC_NR; j++) C[i * ldc + j] += acc[i][j];
}
#endif

int FC_FN(conv2d_bwd_weight)(const fc_conv2d_params *p, const T *gy, const T *x, T *gw, T *gb,
                             int nthreads) {
    if (!FC_LOCAL(phases_fit)(p) ||
        !FC_LOCAL(all_finite)(x, p->batch * p->in_channels * p->in_h * p->in_w, nthreads)) {
        const int rc = FC_LOCAL(conv2d_bwd_weight_plain)(p, gy, x, gw, nthreads);
        if (gb) FC_LOCAL(bias_grad)(p, gy, gb, nthreads);
        return rc;
    }
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w, N = p->batch;
    const fc_index wsize = p->out_channels * R;
    const FC_LOCAL(phases_t) ph = FC_LOCAL(phase_geometry)(p);
    const fc_index L = p->out_h * ph.wph; /* grid pixels per image */
    const int pointwise = FC_LOCAL(is_pointwise)(p); /* then the grid is X's own layout */
    const fc_index cb = FC_MAX(1, FC_ROWS_MAX / kk); /* channels per task */
    const fc_index cblocks = FC_CEIL_DIV(Cg, cb);
    const fc_index rows_max = FC_CEIL_DIV(FC_MIN(cb, Cg) * kk, FC_MR) * FC_MR;
    const fc_index kg_pad = FC_CEIL_DIV(Kg, FC_NR) * FC_NR;
    /* grid pixels per packed dY^T chunk (one panel stays in L1), in equal chunks */
    const fc_index qc = FC_CEIL_DIV(L, FC_CEIL_DIV(L, FC_KC));
    /* Batch chunks: enough for 16 tasks in all (a 16-core machine's worth), no more, since each
     * costs a private copy of dW to transpose and add; within ~32 MB of private sums. Fixed by
     * the problem, not by the thread count, so results do not depend on it. */
    fc_index chunks = FC_MIN(N, FC_MAX(2, FC_CEIL_DIV(16, G * cblocks)));
    while (chunks > 1 && (chunks - 1) * wsize * (fc_index)sizeof(T) > ((fc_index)32 << 20)) chunks--;
    if (chunks < 1) chunks = 1;
    const fc_index ntasks = chunks * G * cblocks;
    int failed = 0;

    T *partial = NULL;
    if (chunks > 1) {
        partial = (T *)fc_aligned_alloc(sizeof(T) * (size_t)((chunks - 1) * wsize));
        if (!partial) return FC_ENOMEM;
    }
    const int nt = fc_threads_for(nthreads, (double)N * p->out_channels * P * R,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *xph = pointwise ? NULL
                           : (T *)fc_aligned_alloc(sizeof(T) * (size_t)(FC_MIN(cb, Cg) * ph.channel));
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kg_pad * qc));
        T *acc = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * kg_pad));
        fc_index *taps = (fc_index *)malloc(sizeof(fc_index) * (size_t)rows_max);
        const int ok = (xph || pointwise) && bp && acc && taps;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index blk = t % cblocks, g = (t / cblocks) % G, chunk = t / (cblocks * G);
            const fc_index c0 = blk * cb, c1 = FC_MIN(Cg, c0 + cb);
            const fc_index rows = (c1 - c0) * kk, n0 = chunk * N / chunks;
            const fc_index n1 = (chunk + 1) * N / chunks;
            /* where each of this task's rows (taps) starts in its phases (for a pointwise
             * layer, in X itself: the grid is the image); padding rows read row 0 */
            for (fc_index r = 0; r < rows_max; r++) {
                const fc_index rr = FC_MIN(r, rows - 1);
                taps[r] = pointwise ? rr * HW
                                    : (rr / kk) * ph.channel +
                                          FC_LOCAL(tap_offset)(p, &ph, (rr % kk) / p->kernel_w,
                                                               rr % p->kernel_w);
            }
            memset(acc, 0, sizeof(T) * (size_t)(rows_max * kg_pad));
            for (fc_index n = n0; n < n1; n++) {
                const T *xg = x + (n * p->in_channels + g * Cg) * HW;
                const T *gyg = gy + (n * p->out_channels + g * Kg) * P;
                const T *a_base = pointwise ? xg + c0 * HW : xph;
                if (!pointwise)
                    for (fc_index c = c0; c < c1; c++)
                        FC_LOCAL(split_phases)(p, &ph, xg + c * HW, xph + (c - c0) * ph.channel);
                for (fc_index q0 = 0; q0 < L; q0 += qc) {
                    const fc_index kc = FC_MIN(qc, L - q0);
                    FC_LOCAL(pack_dy_t)(p, &ph, gyg, Kg, q0, kc, bp);
                    for (fc_index k0 = 0; k0 < kg_pad; k0 += FC_NR)
                        for (fc_index m0 = 0; m0 < rows; m0 += FC_MR) {
                            const T *a[FC_MR];
                            for (int i = 0; i < FC_MR; i++) a[i] = a_base + taps[m0 + i] + q0;
                            FC_LOCAL(ukernel_rows)(kc, a, bp + k0 * kc, acc + m0 * kg_pad + k0,
                                                   kg_pad);
                        }
                }
            }
            /* this chunk's sum, transposed into its copy of dW (chunk 0 writes dW itself) */
            T *dst = (chunk == 0 ? gw : partial + (chunk - 1) * wsize) + g * Kg * R + c0 * kk;
            FC_LOCAL(transpose_out)(acc, rows, Kg, kg_pad, dst, R);
        }
        fc_aligned_free(xph);
        fc_aligned_free(bp);
        fc_aligned_free(acc);
        free(taps);
        FC_PRAGMA(omp barrier)
        if (!failed && partial) {
            FC_PRAGMA(omp for schedule(static))
            for (fc_index e = 0; e < wsize; e++) {
                T sum = gw[e];
                for (fc_index c = 1; c < chunks; c++) sum += partial[(c - 1) * wsize + e];
                gw[e] = sum;
            }
        }
    }
    fc_aligned_free(partial);
    if (gb && !failed) FC_LOCAL(bias_grad)(p, gy, gb, nthreads);
    return failed ? FC_ENOMEM : FC_OK;
}

/* ---- the machine's multiply-add peak ---------------------------------------------------------
 * What the microkernel could reach at best: `iterations` rounds of 12 independent multiply-add
 * chains (enough to cover the FMA units' latency, few enough to stay in AVX2's 16 registers) on
 * each of up to nthreads threads, in the microkernel's register type. `fastconv bench` times it
 * in the same run as the layers, since a shared machine's peak moves. *flops: the FLOPs done. */
#define FC_PEAK_CHAINS 12
static volatile double FC_LOCAL(peak_sink); /* the chains' sum: stored, so they cannot be dropped */
int FC_FN(fma_peak)(fc_index iterations, int nthreads, double *flops) {
    int team = 1;
    double sink = 0;
    if (iterations < 0) iterations = 0;
    if (nthreads < 1) nthreads = 1;
    FC_PRAGMA(omp parallel num_threads(nthreads) reduction(+ : sink))
    {
        FC_PRAGMA(omp single)
        team = FC_NUM_THREADS_IN_TEAM();
#ifdef FC_VEC
        FC_VEC acc[FC_PEAK_CHAINS];
        const FC_VEC half = FC_VSET1((T)0.5); /* a <- a/2 + 1/2 stays finite and normal */
        for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = FC_VSET1((T)i);
        for (fc_index it = 0; it < iterations; it++) {
            FC_PRAGMA(GCC unroll 16)
            for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = FC_VFMA(acc[i], half, half);
        }
        T lanes[FC_VL];
        for (int i = 1; i < FC_PEAK_CHAINS; i++) acc[0] = FC_VADD(acc[0], acc[i]);
        FC_VSTOREU(lanes, acc[0]);
        sink += (double)lanes[0];
#else
        T acc[FC_PEAK_CHAINS];
        for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = (T)i;
        for (fc_index it = 0; it < iterations; it++)
            for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = acc[i] * (T)0.5 + (T)0.5;
        for (int i = 0; i < FC_PEAK_CHAINS; i++) sink += (double)acc[i];
#endif
    }
#ifdef FC_VEC
    const double lanes_per_op = FC_VL;
#else
    const double lanes_per_op = 1;
#endif
    *flops = 2.0 * FC_PEAK_CHAINS * lanes_per_op * (double)iterations * team;
    FC_LOCAL(peak_sink) = sink;
    return FC_OK;
}
#undef FC_PEAK_CHAINS

#undef FC_FN
#undef FC_LOCAL
#undef FC_WINO_NONFINITE
#undef FC_KC
#undef FC_NC_MAX
#undef FC_ROWS_MAX
#undef FC_CONV_MIN_WORK
#undef FC_NV
