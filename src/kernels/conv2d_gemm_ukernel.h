/* conv2d_gemm_ukernel.h: the GEMM microkernels every convolution pass runs on, one template for
 * every dtype and instruction set (the register tile MR x NR and the vector operations come from
 * the kernel file's fc_isa_<isa>.h; docs/KERNELS.md states each one's contract).
 *
 *   fc_<dt>_gemm_ukernel_<MR>x<NR>__<isa>        C[mr x nr] (+)= A panel * B panel (+ bias)
 *   fc_<dt>_gemm_ukernel_<MR>x<NR>__<isa>_half   the same on the panel's first NR/2 columns
 *   fc_<dt>_gemm_rows_ukernel_<MR>x<NR>__<isa>   C[MR x NR] += A * B panel, A's MR rows read
 *                                                through row pointers (no packed A), in
 *                                                segments a fixed step apart
 *   fc_<dt>_gemm_rows_ukernel_<MR>x<NR>__<isa>_half  C[MR x NR/2] += the same on the panel's
 *                                                first NR/2 columns
 *
 * Loop structure: over the reduction index r < kc, one B panel row of NR values is loaded into
 * NR/VL registers and each of the MR A values is broadcast against it into MR x NR/VL
 * accumulators, which stay in registers for the whole reduction; the tile is then added to (or
 * stored into) C once. The scalar path runs the same loops on plain arrays. */
#ifndef FC_CONV2D_GEMM_UKERNEL_H
#define FC_CONV2D_GEMM_UKERNEL_H

#include "fc_template.h"

/* A panel: kc groups of FC_MR values; B panel: kc groups of FC_NR values (zero padded).
 * accumulate: C += acc; else C = acc + bias[i] (bias may be NULL). */
#if FC_HAVE_VEC
/* The broadcast of A folds into the FMA's memory operand; MR x NV accumulators stay in
 * registers. NV is NR/VL for full panels and half that for a narrow last panel, so P = 196 does
 * not pay for 224 columns. */
#define FC_NV (FC_NR / FC_VL)

static inline __attribute__((always_inline)) void FC_LOCAL(gemm_ukernel_nv)(
    const int nv, fc_index kc, const T *restrict A, const T *restrict B, T *restrict C,
    fc_index ldc, int mr, int nr, int accumulate, const T *restrict bias) {
    FC_VEC acc[FC_MR][FC_NV];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++) FC_PRAGMA(GCC unroll 8)
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

static void FC_UKERNEL(gemm_ukernel)(fc_index kc, const T *restrict A, const T *restrict B,
                                     T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                     const T *restrict bias) {
    FC_LOCAL(gemm_ukernel_nv)(FC_NV, kc, A, B, C, ldc, mr, nr, accumulate, bias);
}

#if FC_NV % 2 == 0
#define FC_HAVE_GEMM_HALF 1
#define FC_GEMM_UKERNEL_HALF FC_CAT2(FC_UKERNEL(gemm_ukernel), _half)
static void FC_GEMM_UKERNEL_HALF(fc_index kc, const T *restrict A, const T *restrict B,
                                 T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                 const T *restrict bias) {
    FC_LOCAL(gemm_ukernel_nv)(FC_NV / 2, kc, A, B, C, ldc, mr, nr, accumulate, bias);
}
#else
#define FC_HAVE_GEMM_HALF 0
#endif

/* The passes' one entry (FC_GEMM): the half-width microkernel where the tile's columns fit in
 * it. */
#define FC_GEMM FC_LOCAL(gemm_tile)
static inline void FC_LOCAL(gemm_tile)(fc_index kc, const T *restrict A, const T *restrict B,
                                       T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                       const T *restrict bias) {
#if FC_HAVE_GEMM_HALF
    if (nr <= FC_NR / 2) {
        FC_GEMM_UKERNEL_HALF(kc, A, B, C, ldc, mr, nr, accumulate, bias);
        return;
    }
#endif
    FC_UKERNEL(gemm_ukernel)(kc, A, B, C, ldc, mr, nr, accumulate, bias);
}

/* C[MR x nv VL] += sum_r a[i][r] * B[r][j] over `segs` segments of `len` reduction steps: A's
 * row i is MR input rows read in place, segment s at a[i] + s * a_step (the weight gradient's
 * output rows within the phase grid, whose padding columns between them are then skipped), B
 * the first nv vectors of each NR-wide row of the panel, its segments one after another. The
 * accumulators stay in registers across the segments. With `sets` = 2 the even and odd steps
 * of a segment go to two sets of accumulators, added at the end: a half-width tile keeps as
 * many independent sums in flight as the full one, where twice its rows would need more row
 * pointers than there are general registers. */
static inline __attribute__((always_inline)) void FC_LOCAL(gemm_rows_nv)(
    const int nv, const int sets, fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
    fc_index len, fc_index a_step, const T *const *a, const T *restrict B, T *restrict C,
    fc_index ldc) {
    const T *rows[FC_MR];
    FC_VEC acc[2][FC_MR][FC_NV];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++) FC_PRAGMA(GCC unroll 2)
    for (int s = 0; s < sets; s++) FC_PRAGMA(GCC unroll 8)
    for (int v = 0; v < nv; v++) acc[s][i][v] = FC_VZERO();
    for (fc_index img = 0; img < imgs; img++) {
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) rows[i] = a[i] + img * a_img;
        const T *restrict Bi = B + img * b_img;
        for (fc_index seg = 0; seg < segs; seg++, Bi += len * FC_NR) {
            fc_index r = 0;
            for (; r + sets <= len; r += sets) FC_PRAGMA(GCC unroll 2)
            for (int s = 0; s < sets; s++) {
                FC_VEC b[FC_NV];
                FC_PRAGMA(GCC unroll 8)
                for (int v = 0; v < nv; v++) b[v] = FC_VLOADU(Bi + (r + s) * FC_NR + v * FC_VL);
                FC_PRAGMA(GCC unroll 16)
                for (int i = 0; i < FC_MR; i++) {
                    const FC_VEC av = FC_VSET1(rows[i][r + s]);
                    FC_PRAGMA(GCC unroll 8)
                    for (int v = 0; v < nv; v++) acc[s][i][v] = FC_VFMA(av, b[v], acc[s][i][v]);
                }
            }
            if (r < len) { /* sets = 2 and len odd: the last step into the first set */
                FC_VEC b[FC_NV];
                FC_PRAGMA(GCC unroll 8)
                for (int v = 0; v < nv; v++) b[v] = FC_VLOADU(Bi + r * FC_NR + v * FC_VL);
                FC_PRAGMA(GCC unroll 16)
                for (int i = 0; i < FC_MR; i++) {
                    const FC_VEC av = FC_VSET1(rows[i][r]);
                    FC_PRAGMA(GCC unroll 8)
                    for (int v = 0; v < nv; v++) acc[0][i][v] = FC_VFMA(av, b[v], acc[0][i][v]);
                }
            }
            FC_PRAGMA(GCC unroll 16)
            for (int i = 0; i < FC_MR; i++) rows[i] += a_step;
        }
    }
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++) FC_PRAGMA(GCC unroll 8)
    for (int v = 0; v < nv; v++) {
        T *c = C + i * ldc + v * FC_VL;
        const FC_VEC sum = sets == 2 ? FC_VADD(acc[0][i][v], acc[1][i][v]) : acc[0][i][v];
        FC_VSTOREU(c, FC_VADD(sum, FC_VLOADU(c)));
    }
}

/* The rows microkernel over `imgs` images whose rows lie a_img apart in A and whose panels lie
 * b_img apart in B, summed in registers: the weight gradient of an image of few pixels reduces
 * over several images per call, not over one image's few steps. */
static void FC_LOCAL(gemm_rows_images)(fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
                                       fc_index len, fc_index a_step, const T *const *a,
                                       const T *restrict B, T *restrict C, fc_index ldc) {
    FC_LOCAL(gemm_rows_nv)(FC_NV, 1, imgs, a_img, b_img, segs, len, a_step, a, B, C, ldc);
}

/* C[MR x NR] += sum_r a[i][r] * B[r][j] over `segs` segments of `len` steps, A's MR rows read
 * in place (segment s at a[i] + s * a_step). */
static void FC_UKERNEL(gemm_rows_ukernel)(fc_index segs, fc_index len, fc_index a_step,
                                          const T *const *a, const T *restrict B, T *restrict C,
                                          fc_index ldc) {
    FC_LOCAL(gemm_rows_images)(1, 0, 0, segs, len, a_step, a, B, C, ldc);
}

#if FC_HAVE_GEMM_HALF
/* C[MR x NR/2] += the same on the first NR/2 columns of the B panel, for a last panel of at
 * most NR/2 columns (the weight gradient of a layer with 16 output channels), which the full
 * tile would run half on zero columns. */
#define FC_GEMM_ROWS_UKERNEL_HALF FC_CAT2(FC_UKERNEL(gemm_rows_ukernel), _half)
static void FC_LOCAL(gemm_rows_images_half)(fc_index imgs, fc_index a_img, fc_index b_img,
                                            fc_index segs, fc_index len, fc_index a_step,
                                            const T *const *a, const T *restrict B, T *restrict C,
                                            fc_index ldc) {
    FC_LOCAL(gemm_rows_nv)(FC_NV / 2, 2, imgs, a_img, b_img, segs, len, a_step, a, B, C, ldc);
}
static void FC_GEMM_ROWS_UKERNEL_HALF(fc_index segs, fc_index len, fc_index a_step,
                                      const T *const *a, const T *restrict B, T *restrict C,
                                      fc_index ldc) {
    FC_LOCAL(gemm_rows_images_half)(1, 0, 0, segs, len, a_step, a, B, C, ldc);
}
#endif

#else /* the scalar path */
#define FC_HAVE_GEMM_HALF 0

static inline void FC_UKERNEL(gemm_ukernel)(fc_index kc, const T *restrict A, const T *restrict B,
                                            T *restrict C, fc_index ldc, int mr, int nr,
                                            int accumulate, const T *restrict bias) {
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

/* The passes' one entry: the microkernel itself. */
#define FC_GEMM FC_UKERNEL(gemm_ukernel)

static void FC_LOCAL(gemm_rows_images)(fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
                                       fc_index len, fc_index a_step, const T *const *a,
                                       const T *restrict B, T *restrict C, fc_index ldc) {
    T acc[FC_MR][FC_NR];
    memset(acc, 0, sizeof(acc));
    for (fc_index img = 0; img < imgs; img++) {
        const T *Bs = B + img * b_img;
        for (fc_index seg = 0; seg < segs; seg++, Bs += len * FC_NR)
            for (fc_index r = 0; r < len; r++)
                for (int i = 0; i < FC_MR; i++) {
                    const T av = a[i][img * a_img + seg * a_step + r];
                    for (int j = 0; j < FC_NR; j++) acc[i][j] += av * Bs[r * FC_NR + j];
                }
    }
    for (int i = 0; i < FC_MR; i++)
        for (int j = 0; j < FC_NR; j++) C[i * ldc + j] += acc[i][j];
}

static void FC_UKERNEL(gemm_rows_ukernel)(fc_index segs, fc_index len, fc_index a_step,
                                          const T *const *a, const T *restrict B, T *restrict C,
                                          fc_index ldc) {
    FC_LOCAL(gemm_rows_images)(1, 0, 0, segs, len, a_step, a, B, C, ldc);
}
#endif

/* The weight gradient's entry to the rows microkernels, over `imgs` images (gemm_rows_images):
 * the half-width one where the tile's `cols` <= NR columns fit in it. */
static inline void FC_LOCAL(gemm_rows_tile)(fc_index cols, fc_index imgs, fc_index a_img,
                                            fc_index b_img, fc_index segs, fc_index len,
                                            fc_index a_step, const T *const *a, const T *restrict B,
                                            T *restrict C, fc_index ldc) {
#if FC_HAVE_GEMM_HALF
    if (cols <= FC_NR / 2) {
        if (imgs == 1)
            FC_GEMM_ROWS_UKERNEL_HALF(segs, len, a_step, a, B, C, ldc);
        else
            FC_LOCAL(gemm_rows_images_half)(imgs, a_img, b_img, segs, len, a_step, a, B, C, ldc);
        return;
    }
#endif
    (void)cols;
    if (imgs == 1)
        FC_UKERNEL(gemm_rows_ukernel)(segs, len, a_step, a, B, C, ldc);
    else
        FC_LOCAL(gemm_rows_images)(imgs, a_img, b_img, segs, len, a_step, a, B, C, ldc);
}

#endif /* FC_CONV2D_GEMM_UKERNEL_H */
