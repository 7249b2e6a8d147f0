/* conv2d_nhwc_ukernel.h: the channels-last convolution passes' microkernels, on the register tile
 * and vector operations of the GEMM microkernels (conv2d_gemm_ukernel.h; docs/KERNELS.md states
 * each one's contract). Channels last, a pixel's channels are one contiguous row, so an operand
 * made of pixels is read in place through one pointer per pixel (XNNPACK's indirect GEMM) instead
 * of being packed:
 *
 *   fc_<dt>_igemm_ukernel_<MR>x<NR>__<isa>       C[mr x nr] (+)= sum over ks taps of A_s B_s, plus
 *                                                 a bias row; A_s's MR rows (pixels) read in place
 *                                                 through a pointer per row and tap
 *   fc_<dt>_igemm_ukernel_<MR>x<NR>__<isa>_half  the same on the B panel's first NR/2 columns
 *   fc_<dt>_igemm_ukernel_<MR>x<NR>__<isa>_wide  the same on a B panel's NR columns and the next
 *                                                 panel's first NR/2 (32 vector registers only)
 *   fc_<dt>_gemm_cols_ukernel_<MR>x<NR>__<isa>   C[MR x NR] += A B, A's kc columns (MR contiguous
 *                                                 values each) read in place through kc pointers
 *   fc_<dt>_gemm_cols_ukernel_<MR>x<NR>__<isa>_half  C[2 MR x NR/2] += the same on the B panel's
 *                                                 first NR/2 columns, 2 MR values per column
 *   fc_<dt>_dwconv_nhwc_ukernel_nr<NR>__<isa>     y[q] (+)= sum over ne terms of a_e[q] b_e[q]
 *                                                 (+ bias[q]), q < c: the depthwise passes'
 *                                                 channelwise products, both operands read in
 *                                                 place through a pointer per term
 *   fc_<dt>_dwconv_dot_nhwc_ukernel_nr<NR>__<isa> y[t c + q] += sum over a run of n pixels of
 *                                                 x[e xs + i rs + j ts + q] g[e c + q], t = i kw
 *                                                 + j: the depthwise weight gradient, up to
 *                                                 nine taps per dY read
 *   fc_<dt>_gconv4_nhwc_ukernel_nr<NR>__<isa>     the same for groups of four channels: each term
 *                                                 a row of a rotated within each group of four
 *                                                 lanes, against four weight rows
 *   fc_<dt>_gconv4_dot_nhwc_ukernel_nr<NR>__<isa> its weight gradient: four rows of sums of
 *                                                 a_e's rotations times b_e
 *
 * Loop structure: as the GEMM microkernels', the MR x NR accumulators held in registers for the
 * whole reduction (igemm: over taps, then over each tap's kc channels), one B panel row loaded per
 * reduction step and each of the MR A values broadcast against it; the tile is then added to (or
 * stored into) C once. The scalar path runs the same loops on plain arrays. */
#ifndef FC_CONV2D_NHWC_UKERNEL_H
#define FC_CONV2D_NHWC_UKERNEL_H

#include "conv2d_gemm_ukernel.h"
#include "fc_template.h"

#if FC_HAVE_VEC && FC_VREGS >= 32
/* The last n < VL lanes of the one-and-a-half-panel kernel's rows, loaded (the rest zero) and
 * stored under a mask from a register (32 vector registers: AVX-512 only, as that kernel). */
#define fc_nhwc_vloadz_f32(s, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), s)
#define fc_nhwc_vloadz_f64(s, n) _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1), s)
#define fc_nhwc_vstore_part_f32(d, v, n) _mm512_mask_storeu_ps(d, (__mmask16)((1u << (n)) - 1), v)
#define fc_nhwc_vstore_part_f64(d, v, n) _mm512_mask_storeu_pd(d, (__mmask8)((1u << (n)) - 1), v)
#define FC_NHWC_VLOADZ(s, n) FC_CAT2(fc_nhwc_vloadz_, FC_DT)(s, n)
#define FC_NHWC_VSTORE_PART(d, v, n) FC_CAT2(fc_nhwc_vstore_part_, FC_DT)(d, v, n)
#else /* never reached: nv2 is 0 without the wide kernel */
#define FC_NHWC_VLOADZ(s, n) FC_VZERO()
#define FC_NHWC_VSTORE_PART(d, v, n) ((void)(d), (void)(v), (void)(n))
#endif

#if FC_HAVE_VEC
/* a[i * ks + s]: row i of tap s (kc values); B: [ks][kc][NR], the tile's first nv vectors of
 * columns; B2: a second such panel whose first nv2 vectors are the columns past those (NULL and
 * nv2 = 0 for one panel); bias: NULL or the tile's nr column values. nv = NV or NV / 2 (the
 * half-width kernel). */
static inline __attribute__((always_inline)) void FC_LOCAL(igemm_ukernel_nv)(
    const int nv, const int nv2, fc_index ks, fc_index kc, const T *const *restrict a,
    const T *restrict B, const T *restrict B2, T *restrict C, fc_index ldc, int mr, int nr,
    int accumulate, const T *restrict bias) {
    enum { NW = FC_NV + FC_NV / 2 };
    const int nw = nv + nv2;
    FC_VEC acc[FC_MR][NW];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++) FC_PRAGMA(GCC unroll 12)
    for (int v = 0; v < nw; v++) acc[i][v] = FC_VZERO();
    for (fc_index s = 0; s < ks; s++) {
        const T *rows[FC_MR];
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) rows[i] = a[i * ks + s];
        for (fc_index r = 0; r < kc; r++, B += FC_NR) {
            FC_VEC b[NW];
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < nv; v++) b[v] = FC_VLOADU(B + v * FC_VL);
            if (nv2) {
                FC_PRAGMA(GCC unroll 4)
                for (int v = 0; v < nv2; v++) b[nv + v] = FC_VLOADU(B2 + v * FC_VL);
                B2 += FC_NR;
            }
            FC_PRAGMA(GCC unroll 16)
            for (int i = 0; i < FC_MR; i++) {
                const FC_VEC av = FC_VSET1(rows[i][r]);
                FC_PRAGMA(GCC unroll 12)
                for (int v = 0; v < nw; v++) acc[i][v] = FC_VFMA(av, b[v], acc[i][v]);
            }
        }
    }
    /* two panels, whole rows: the first nv vectors and the last one, whole or partial,
     * straight from the registers (acc's indices all constants, so it stays in registers: a
     * partial vector copied through the stack, a masked store read back whole, waited for each
     * store to retire, 14% of odd-3-37's kernel samples, and the accumulators were spilled) */
    if (nv2 == 1 && mr == FC_MR && nr > nv * FC_VL) {
        const int n = nr - nv * FC_VL; /* the last vector's lanes, 1 to VL */
        FC_VEC add[NW];
        FC_PRAGMA(GCC unroll 12)
        for (int v = 0; v < nw; v++)
            add[v] = !bias || accumulate    ? FC_VZERO()
                     : v < nv || n == FC_VL ? FC_VLOADU(bias + v * FC_VL)
                                            : FC_NHWC_VLOADZ(bias + v * FC_VL, n);
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            T *c = C + i * ldc;
            FC_PRAGMA(GCC unroll 12)
            for (int v = 0; v < nv; v++) {
                const FC_VEC base = accumulate ? FC_VLOADU(c + v * FC_VL) : add[v];
                FC_VSTOREU(c + v * FC_VL, FC_VADD(acc[i][v], base));
            }
            T *last = c + nv * FC_VL;
            if (n == FC_VL) {
                const FC_VEC base = accumulate ? FC_VLOADU(last) : add[nv];
                FC_VSTOREU(last, FC_VADD(acc[i][nv], base));
            } else {
                const FC_VEC base = accumulate ? FC_NHWC_VLOADZ(last, n) : add[nv];
                FC_NHWC_VSTORE_PART(last, FC_VADD(acc[i][nv], base), n);
            }
        }
        return;
    }
    /* whole vectors of whole tiles stored from the registers, the rest through a copy,
     * element by element */
    const int whole = mr == FC_MR && nr == nw * FC_VL ? nw : 0;
    if (whole) {
        FC_VEC add[NW];
        FC_PRAGMA(GCC unroll 12)
        for (int v = 0; v < nw; v++) add[v] = bias ? FC_VLOADU(bias + v * FC_VL) : FC_VZERO();
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            T *c = C + i * ldc;
            FC_PRAGMA(GCC unroll 12)
            for (int v = 0; v < nw; v++) {
                const FC_VEC base = accumulate ? FC_VLOADU(c + v * FC_VL) : add[v];
                FC_VSTOREU(c + v * FC_VL, FC_VADD(acc[i][v], base));
            }
        }
        return;
    }
    T tile[FC_MR][NW * FC_VL];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++) FC_PRAGMA(GCC unroll 12)
    for (int v = 0; v < nw; v++) FC_VSTOREU(&tile[i][v * FC_VL], acc[i][v]);
    for (int i = 0; i < mr; i++) {
        T *c = C + i * ldc;
        for (int j = 0; j < nr; j++)
            c[j] = accumulate ? c[j] + tile[i][j] : tile[i][j] + (bias ? bias[j] : (T)0);
    }
}

static void FC_UKERNEL(igemm_ukernel)(fc_index ks, fc_index kc, const T *const *restrict a,
                                      const T *restrict B, T *restrict C, fc_index ldc, int mr,
                                      int nr, int accumulate, const T *restrict bias) {
    FC_LOCAL(igemm_ukernel_nv)(FC_NV, 0, ks, kc, a, B, NULL, C, ldc, mr, nr, accumulate, bias);
}

#if FC_HAVE_GEMM_HALF
#define FC_IGEMM_UKERNEL_HALF FC_CAT2(FC_UKERNEL(igemm_ukernel), _half)
static void FC_IGEMM_UKERNEL_HALF(fc_index ks, fc_index kc, const T *const *restrict a,
                                  const T *restrict B, T *restrict C, fc_index ldc, int mr, int nr,
                                  int accumulate, const T *restrict bias) {
    FC_LOCAL(igemm_ukernel_nv)(FC_NV / 2, 0, ks, kc, a, B, NULL, C, ldc, mr, nr, accumulate, bias);
}
#endif

#if FC_HAVE_GEMM_HALF && FC_VREGS >= 32
/* One and a half panels: C[mr x nr] (+)= the same over B's NR columns and then the first NR/2 of
 * B2 (a second panel of the same depth), NR < nr <= NR + NR/2, each A value broadcast once for
 * both: a layer whose last K block is at most half a panel (K = 37: 32 + 5) would otherwise pass
 * over A twice, the second time for a few columns. MR (NV + NV/2) accumulators: on 32 registers
 * only. Each element's sum runs in the same order as on the one-panel kernels. */
#define FC_IGEMM_UKERNEL_WIDE FC_CAT2(FC_UKERNEL(igemm_ukernel), _wide)
static void FC_IGEMM_UKERNEL_WIDE(fc_index ks, fc_index kc, const T *const *restrict a,
                                  const T *restrict B, const T *restrict B2, T *restrict C,
                                  fc_index ldc, int mr, int nr, int accumulate,
                                  const T *restrict bias) {
    FC_LOCAL(igemm_ukernel_nv)(FC_NV, FC_NV / 2, ks, kc, a, B, B2, C, ldc, mr, nr, accumulate,
                               bias);
}
#endif

/* C[rows x nv VL] += sum_r a[r][off + i] * B[r * NR + j], rows <= 2 MR: MR on nv = NV vectors
 * (the full tile), 2 MR on NV / 2 (the half-width one: as many accumulators, so as many FMA
 * chains in flight, on a panel whose last NR/2 columns are zeros), or `pixels`' 14-row tile on
 * NV (FC_PIXELS_WIDE, conv2d_fwd.h). Each element's sum runs in the same
 * order either way. */
static inline __attribute__((always_inline)) void FC_LOCAL(gemm_cols_nv)(
    const int rows, const int nv, fc_index kc, const T *const *restrict a, fc_index off,
    const T *restrict B, T *restrict C, fc_index ldc) {
    FC_VEC acc[2 * FC_MR][FC_NV];
    FC_PRAGMA(GCC unroll 32)
    for (int i = 0; i < rows; i++) FC_PRAGMA(GCC unroll 8)
    for (int v = 0; v < nv; v++) acc[i][v] = FC_VZERO();
    for (fc_index r = 0; r < kc; r++) {
        const T *col = a[r] + off;
        FC_VEC b[FC_NV];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < nv; v++) b[v] = FC_VLOADU(B + r * FC_NR + v * FC_VL);
        FC_PRAGMA(GCC unroll 32)
        for (int i = 0; i < rows; i++) {
            const FC_VEC av = FC_VSET1(col[i]);
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < nv; v++) acc[i][v] = FC_VFMA(av, b[v], acc[i][v]);
        }
    }
    FC_PRAGMA(GCC unroll 32)
    for (int i = 0; i < rows; i++) FC_PRAGMA(GCC unroll 8)
    for (int v = 0; v < nv; v++) {
        T *c = C + i * ldc + v * FC_VL;
        FC_VSTOREU(c, FC_VADD(acc[i][v], FC_VLOADU(c)));
    }
}

/* C[MR x NR] += sum_r a[r][off + i] * B[r * NR + j]. */
static void FC_UKERNEL(gemm_cols_ukernel)(fc_index kc, const T *const *restrict a, fc_index off,
                                          const T *restrict B, T *restrict C, fc_index ldc) {
    FC_LOCAL(gemm_cols_nv)(FC_MR, FC_NV, kc, a, off, B, C, ldc);
}

#if FC_HAVE_GEMM_HALF
/* C[2 MR x NR/2] += the same on the panel's first NR/2 columns, A's columns 2 MR values long: the
 * channels-last weight gradient of a layer with at most NR/2 output channels (res14-16's 16 on
 * AVX-512 float32), two MR-row blocks at a time. */
#define FC_GEMM_COLS_UKERNEL_HALF FC_CAT2(FC_UKERNEL(gemm_cols_ukernel), _half)
static void FC_GEMM_COLS_UKERNEL_HALF(fc_index kc, const T *const *restrict a, fc_index off,
                                      const T *restrict B, T *restrict C, fc_index ldc) {
    FC_LOCAL(gemm_cols_nv)(2 * FC_MR, FC_NV / 2, kc, a, off, B, C, ldc);
}
#endif

/* `pixels`' tall tile height (conv2d_fwd.h: pixels_rows), where the vector registers hold
 * 14 x NR sums beside a row of B and the broadcast (AVX-512: 28 accumulators of 32 registers);
 * defined here beside gemm_cols_nv so the tests' table can run that tile too. */
#if FC_VREGS >= 32 && FC_NV == 2
#define FC_PIXELS_WIDE 14
/* gemm_cols_nv's accumulators hold 2 MR rows */
_Static_assert(FC_PIXELS_WIDE <= 2 * FC_MR, "pixels' tile is taller than gemm_cols_nv holds");
#endif

#else /* the scalar path */

static void FC_UKERNEL(igemm_ukernel)(fc_index ks, fc_index kc, const T *const *restrict a,
                                      const T *restrict B, T *restrict C, fc_index ldc, int mr,
                                      int nr, int accumulate, const T *restrict bias) {
    T acc[FC_MR][FC_NR];
    memset(acc, 0, sizeof(acc));
    for (fc_index s = 0; s < ks; s++)
        for (fc_index r = 0; r < kc; r++, B += FC_NR)
            for (int i = 0; i < FC_MR; i++) {
                const T av = a[i * ks + s][r];
                for (int j = 0; j < FC_NR; j++) acc[i][j] += av * B[j];
            }
    for (int i = 0; i < mr; i++) {
        T *c = C + i * ldc;
        for (int j = 0; j < nr; j++)
            c[j] = accumulate ? c[j] + acc[i][j] : acc[i][j] + (bias ? bias[j] : (T)0);
    }
}

static void FC_UKERNEL(gemm_cols_ukernel)(fc_index kc, const T *const *restrict a, fc_index off,
                                          const T *restrict B, T *restrict C, fc_index ldc) {
    T acc[FC_MR][FC_NR];
    memset(acc, 0, sizeof(acc));
    for (fc_index r = 0; r < kc; r++)
        for (int i = 0; i < FC_MR; i++) {
            const T av = a[r][off + i];
            for (int j = 0; j < FC_NR; j++) acc[i][j] += av * B[r * FC_NR + j];
        }
    for (int i = 0; i < FC_MR; i++)
        for (int j = 0; j < FC_NR; j++) C[i * ldc + j] += acc[i][j];
}
#endif

/* y[q] = (accumulate ? y[q] : bias ? bias[q] : 0) + sum over e < ne of a[e][q] * b[e][q], for
 * q < c. NR channels at a time (NV vectors), then one vector, then one channel; the even and the
 * odd terms go to two sets of accumulators, added at the end, so twice as many FMA chains run at
 * once. The order is fixed by (c, ne) alone. */
static void FC_NR_NAME(dwconv_nhwc_ukernel)(fc_index c, fc_index ne, const T *const *restrict a,
                                            const T *const *restrict b, T *restrict y,
                                            int accumulate, const T *restrict bias) {
    fc_index q = 0;
#if FC_HAVE_VEC
    for (; q + FC_NR <= c; q += FC_NR) {
        FC_VEC even[FC_NV], odd[FC_NV];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) even[v] = odd[v] = FC_VZERO();
        fc_index e = 0;
        for (; e + 2 <= ne; e += 2) {
            const T *a0 = a[e] + q, *b0 = b[e] + q, *a1 = a[e + 1] + q, *b1 = b[e + 1] + q;
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) {
                even[v] = FC_VFMA(FC_VLOADU(a0 + v * FC_VL), FC_VLOADU(b0 + v * FC_VL), even[v]);
                odd[v] = FC_VFMA(FC_VLOADU(a1 + v * FC_VL), FC_VLOADU(b1 + v * FC_VL), odd[v]);
            }
        }
        if (e < ne) {
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++)
                even[v] = FC_VFMA(FC_VLOADU(a[e] + q + v * FC_VL), FC_VLOADU(b[e] + q + v * FC_VL),
                                  even[v]);
        }
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) {
            T *out = y + q + v * FC_VL;
            const FC_VEC base = accumulate ? FC_VLOADU(out)
                                : bias     ? FC_VLOADU(bias + q + v * FC_VL)
                                           : FC_VZERO();
            FC_VSTOREU(out, FC_VADD(base, FC_VADD(even[v], odd[v])));
        }
    }
    for (; q + FC_VL <= c; q += FC_VL) {
        FC_VEC even = FC_VZERO(), odd = FC_VZERO();
        fc_index e = 0;
        for (; e + 2 <= ne; e += 2) {
            even = FC_VFMA(FC_VLOADU(a[e] + q), FC_VLOADU(b[e] + q), even);
            odd = FC_VFMA(FC_VLOADU(a[e + 1] + q), FC_VLOADU(b[e + 1] + q), odd);
        }
        if (e < ne) even = FC_VFMA(FC_VLOADU(a[e] + q), FC_VLOADU(b[e] + q), even);
        const FC_VEC base = accumulate ? FC_VLOADU(y + q) : bias ? FC_VLOADU(bias + q) : FC_VZERO();
        FC_VSTOREU(y + q, FC_VADD(base, FC_VADD(even, odd)));
    }
#endif
    for (; q < c; q++) {
        T even = 0, odd = 0;
        fc_index e = 0;
        for (; e + 2 <= ne; e += 2) {
            even += a[e][q] * b[e][q];
            odd += a[e + 1][q] * b[e + 1][q];
        }
        if (e < ne) even += a[e][q] * b[e][q];
        const T base = accumulate ? y[q] : bias ? bias[q] : (T)0;
        y[q] = base + (even + odd);
    }
}

/* The taps the depthwise weight gradient carries through one pass over the pixels: an
 * accumulator per (tap, vector) beside dY's vectors and one input vector, in the ISA's vector
 * registers (fc_isa_<isa>.h: FC_VREGS), so a 3x3 kernel's nine fit in one pass on avx512. */
#define FC_DW_DOT_TAPS (FC_VREGS >= 32 ? 9 : 6)

/* The depthwise weight gradient along a run of n output pixels: y[(i kw + j) c + q] += sum over
 * e < n of x[e xs + i rs + j ts + q] g[e c + q], for i < kh, j < kw and q < c (x: the input at
 * the run's first pixel and tap, xs between pixels, rs between kernel rows, ts between taps of a
 * row; g: n contiguous dY pixels). Each dY vector is read once for up to FC_DW_DOT_TAPS taps;
 * one accumulator per (tap, vector), the terms in order. */
static void FC_NR_NAME(dwconv_dot_nhwc_ukernel)(fc_index c, fc_index n, fc_index kh, fc_index kw,
                                                const T *restrict x, fc_index xs, fc_index rs,
                                                fc_index ts, const T *restrict g, T *restrict y) {
    const fc_index kt = kh * kw;
    for (fc_index t0 = 0; t0 < kt; t0 += FC_DW_DOT_TAPS) {
        const fc_index nt = FC_MIN(FC_DW_DOT_TAPS, kt - t0);
        fc_index off[FC_DW_DOT_TAPS];
        for (fc_index t = 0; t < FC_DW_DOT_TAPS; t++)
            off[t] = t < nt ? (t0 + t) / kw * rs + (t0 + t) % kw * ts : 0;
        T *yt = y + t0 * c;
        fc_index q = 0;
#if FC_HAVE_VEC
        for (; q + FC_NR <= c; q += FC_NR) {
            FC_VEC acc[FC_DW_DOT_TAPS][FC_NV];
            FC_PRAGMA(GCC unroll 9)
            for (int t = 0; t < FC_DW_DOT_TAPS; t++) FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) acc[t][v] = FC_VZERO();
            for (fc_index e = 0; e < n; e++) {
                const T *xe = x + e * xs + q, *ge = g + e * c + q;
                FC_PRAGMA(GCC unroll 8)
                for (int v = 0; v < FC_NV; v++) {
                    const FC_VEC gv = FC_VLOADU(ge + v * FC_VL);
                    FC_PRAGMA(GCC unroll 9)
                    for (int t = 0; t < FC_DW_DOT_TAPS; t++)
                        if (t < nt)
                            acc[t][v] = FC_VFMA(FC_VLOADU(xe + off[t] + v * FC_VL), gv, acc[t][v]);
                }
            }
            for (int t = 0; t < nt; t++) FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) {
                T *out = yt + t * c + q + v * FC_VL;
                FC_VSTOREU(out, FC_VADD(FC_VLOADU(out), acc[t][v]));
            }
        }
        for (; q + FC_VL <= c; q += FC_VL) {
            FC_VEC acc[FC_DW_DOT_TAPS];
            FC_PRAGMA(GCC unroll 9)
            for (int t = 0; t < FC_DW_DOT_TAPS; t++) acc[t] = FC_VZERO();
            for (fc_index e = 0; e < n; e++) {
                const FC_VEC gv = FC_VLOADU(g + e * c + q);
                FC_PRAGMA(GCC unroll 9)
                for (int t = 0; t < FC_DW_DOT_TAPS; t++)
                    if (t < nt) acc[t] = FC_VFMA(FC_VLOADU(x + e * xs + off[t] + q), gv, acc[t]);
            }
            for (int t = 0; t < nt; t++)
                FC_VSTOREU(yt + t * c + q, FC_VADD(FC_VLOADU(yt + t * c + q), acc[t]));
        }
#endif
        for (; q < c; q++)
            for (fc_index t = 0; t < nt; t++) {
                T acc = 0;
                for (fc_index e = 0; e < n; e++) acc += x[e * xs + off[t] + q] * g[e * c + q];
                yt[t * c + q] += acc;
            }
    }
}

/* Groups of four channels (ResNeXt's): y[q] (+)= sum over e < ne and r < 4 of
 * a_e[q - u + (u + r) % 4] b_e[r c + q], u = q % 4, for q < c (a multiple of 4), plus bias[q]:
 * lane q meets each channel of its group once, by rotating a row of a, read once, within each
 * group of four lanes in registers (a vector holds whole groups). The four rotations' products
 * go to four sets of accumulators, added in one order fixed by (c, ne). */
static void FC_NR_NAME(gconv4_nhwc_ukernel)(fc_index c, fc_index ne, const T *const *restrict a,
                                            const T *const *restrict b, T *restrict y,
                                            int accumulate, const T *restrict bias) {
    fc_index q = 0;
#if FC_HAVE_VEC
    for (; q + FC_NR <= c; q += FC_NR) {
        FC_VEC acc[4][FC_NV];
        FC_PRAGMA(GCC unroll 4)
        for (int r = 0; r < 4; r++) FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) acc[r][v] = FC_VZERO();
        for (fc_index e = 0; e < ne; e++) {
            const T *ae = a[e] + q, *be = b[e] + q;
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) {
                const FC_VEC x = FC_VLOADU(ae + v * FC_VL);
                const T *w = be + v * FC_VL;
                acc[0][v] = FC_VFMA(x, FC_VLOADU(w), acc[0][v]);
                acc[1][v] = FC_VFMA(FC_VROT4(x, 1), FC_VLOADU(w + c), acc[1][v]);
                acc[2][v] = FC_VFMA(FC_VROT4(x, 2), FC_VLOADU(w + 2 * c), acc[2][v]);
                acc[3][v] = FC_VFMA(FC_VROT4(x, 3), FC_VLOADU(w + 3 * c), acc[3][v]);
            }
        }
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) {
            T *out = y + q + v * FC_VL;
            const FC_VEC base = accumulate ? FC_VLOADU(out)
                                : bias     ? FC_VLOADU(bias + q + v * FC_VL)
                                           : FC_VZERO();
            const FC_VEC sum = FC_VADD(FC_VADD(acc[0][v], acc[1][v]),
                                       FC_VADD(acc[2][v], acc[3][v]));
            FC_VSTOREU(out, FC_VADD(base, sum));
        }
    }
    for (; q + FC_VL <= c; q += FC_VL) {
        FC_VEC acc0 = FC_VZERO(), acc1 = FC_VZERO(), acc2 = FC_VZERO(), acc3 = FC_VZERO();
        for (fc_index e = 0; e < ne; e++) {
            const FC_VEC x = FC_VLOADU(a[e] + q);
            const T *w = b[e] + q;
            acc0 = FC_VFMA(x, FC_VLOADU(w), acc0);
            acc1 = FC_VFMA(FC_VROT4(x, 1), FC_VLOADU(w + c), acc1);
            acc2 = FC_VFMA(FC_VROT4(x, 2), FC_VLOADU(w + 2 * c), acc2);
            acc3 = FC_VFMA(FC_VROT4(x, 3), FC_VLOADU(w + 3 * c), acc3);
        }
        const FC_VEC base = accumulate ? FC_VLOADU(y + q) : bias ? FC_VLOADU(bias + q) : FC_VZERO();
        FC_VSTOREU(y + q, FC_VADD(base, FC_VADD(FC_VADD(acc0, acc1), FC_VADD(acc2, acc3))));
    }
#endif
    for (; q < c; q++) {
        const fc_index g = q - q % 4, u = q % 4;
        T acc[4] = {0, 0, 0, 0};
        for (fc_index e = 0; e < ne; e++)
            for (fc_index r = 0; r < 4; r++) acc[r] += a[e][g + (u + r) % 4] * b[e][r * c + q];
        const T base = accumulate ? y[q] : bias ? bias[q] : (T)0;
        y[q] = base + ((acc[0] + acc[1]) + (acc[2] + acc[3]));
    }
}

/* Its weight gradient: y[r c + q] += sum over e < ne of a_e[q - u + (u + r) % 4] b_e[q], for r < 4
 * and q < c (a multiple of 4), u = q % 4: each pair of rows read once, a's rotated in registers.
 * One accumulator per (r, vector), the terms added in order. */
static void FC_NR_NAME(gconv4_dot_nhwc_ukernel)(fc_index c, fc_index ne, const T *const *restrict a,
                                                const T *const *restrict b, T *restrict y) {
    fc_index q = 0;
#if FC_HAVE_VEC
    for (; q + FC_NR <= c; q += FC_NR) {
        FC_VEC acc[4][FC_NV];
        FC_PRAGMA(GCC unroll 4)
        for (int r = 0; r < 4; r++) FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) acc[r][v] = FC_VZERO();
        for (fc_index e = 0; e < ne; e++) {
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) {
                const FC_VEC x = FC_VLOADU(a[e] + q + v * FC_VL);
                const FC_VEC g = FC_VLOADU(b[e] + q + v * FC_VL);
                acc[0][v] = FC_VFMA(x, g, acc[0][v]);
                acc[1][v] = FC_VFMA(FC_VROT4(x, 1), g, acc[1][v]);
                acc[2][v] = FC_VFMA(FC_VROT4(x, 2), g, acc[2][v]);
                acc[3][v] = FC_VFMA(FC_VROT4(x, 3), g, acc[3][v]);
            }
        }
        FC_PRAGMA(GCC unroll 4)
        for (int r = 0; r < 4; r++) FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) {
            T *out = y + r * c + q + v * FC_VL;
            FC_VSTOREU(out, FC_VADD(FC_VLOADU(out), acc[r][v]));
        }
    }
    for (; q + FC_VL <= c; q += FC_VL) {
        FC_VEC acc0 = FC_VZERO(), acc1 = FC_VZERO(), acc2 = FC_VZERO(), acc3 = FC_VZERO();
        for (fc_index e = 0; e < ne; e++) {
            const FC_VEC x = FC_VLOADU(a[e] + q), g = FC_VLOADU(b[e] + q);
            acc0 = FC_VFMA(x, g, acc0);
            acc1 = FC_VFMA(FC_VROT4(x, 1), g, acc1);
            acc2 = FC_VFMA(FC_VROT4(x, 2), g, acc2);
            acc3 = FC_VFMA(FC_VROT4(x, 3), g, acc3);
        }
        FC_VSTOREU(y + q, FC_VADD(FC_VLOADU(y + q), acc0));
        FC_VSTOREU(y + c + q, FC_VADD(FC_VLOADU(y + c + q), acc1));
        FC_VSTOREU(y + 2 * c + q, FC_VADD(FC_VLOADU(y + 2 * c + q), acc2));
        FC_VSTOREU(y + 3 * c + q, FC_VADD(FC_VLOADU(y + 3 * c + q), acc3));
    }
#endif
    for (; q < c; q++) {
        const fc_index g = q - q % 4, u = q % 4;
        for (fc_index r = 0; r < 4; r++) {
            T acc = 0;
            for (fc_index e = 0; e < ne; e++) acc += a[e][g + (u + r) % 4] * b[e][q];
            y[r * c + q] += acc;
        }
    }
}

/* The passes' one entry to the indirect GEMM: the half-width microkernel where the tile's columns
 * fit in it. */
static inline void FC_LOCAL(igemm_tile)(fc_index ks, fc_index kc, const T *const *a,
                                        const T *restrict B, T *restrict C, fc_index ldc, int mr,
                                        int nr, int accumulate, const T *restrict bias) {
#if FC_HAVE_GEMM_HALF
    if (nr <= FC_NR / 2) {
        FC_IGEMM_UKERNEL_HALF(ks, kc, a, B, C, ldc, mr, nr, accumulate, bias);
        return;
    }
#endif
    FC_UKERNEL(igemm_ukernel)(ks, kc, a, B, C, ldc, mr, nr, accumulate, bias);
}
#define FC_IGEMM FC_LOCAL(igemm_tile)

#endif /* FC_CONV2D_NHWC_UKERNEL_H */
