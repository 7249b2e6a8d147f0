/* ukernel_table.h: builds fc_<dt>_ukernel_table__<isa>, the tests' table of this file's GEMM
 * microkernels, Winograd transforms, packing routines, depthwise microkernels and plane
 * reductions (fc_ukernels.h). A file
 * ukernel_table_<dt>_<isa>.c includes its fc_isa_<isa>.h, defines FC_DT and includes this.
 *
 * Each entry is a thin wrapper that casts the void pointers of fc_ukernels.h back to T and calls
 * the routine whose name the entry carries; the routines are the templates' own, compiled here
 * with the same flags as in the passes' files. */
#ifndef FC_UKERNEL_TABLE_H
#define FC_UKERNEL_TABLE_H

/* The templates below also hold passes this file does not use. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "adaptive_pool2d_ukernel.h"
#include "conv2d_depthwise.h"
#include "conv2d_gemm_ukernel.h"
#include "conv2d_nhwc_ukernel.h"
#include "conv2d_pack.h"
#include "conv2d_winograd.h"
#include "fc_template.h"
#include "fc_ukernels.h"

#define FC_STR_(x) #x
#define FC_STR(x) FC_STR_(x)
#define FC_WRAP(name) FC_LOCAL(FC_CAT2(table_, name))

static void FC_WRAP(gemm)(fc_index kc, const void *a, const void *b, void *c, fc_index ldc, int mr,
                          int nr, int accumulate, const void *bias) {
    FC_UKERNEL(gemm_ukernel)(kc, a, b, c, ldc, mr, nr, accumulate, bias);
}

#if FC_HAVE_GEMM_HALF
static void FC_WRAP(gemm_half)(fc_index kc, const void *a, const void *b, void *c, fc_index ldc,
                               int mr, int nr, int accumulate, const void *bias) {
    FC_GEMM_UKERNEL_HALF(kc, a, b, c, ldc, mr, nr, accumulate, bias);
}
#define FC_GEMM_HALF_ENTRY FC_STR(FC_GEMM_UKERNEL_HALF), FC_WRAP(gemm_half)
#else
#define FC_GEMM_HALF_ENTRY NULL, NULL
#endif

static void FC_WRAP(gemm_rows)(fc_index segs, fc_index len, fc_index a_step, const void *const *a,
                               const void *b, void *c, fc_index ldc) {
    const T *rows[FC_MR];
    for (int i = 0; i < FC_MR; i++) rows[i] = a[i];
    FC_UKERNEL(gemm_rows_ukernel)(segs, len, a_step, rows, b, c, ldc);
}

#if FC_HAVE_GEMM_HALF
static void FC_WRAP(gemm_rows_half)(fc_index segs, fc_index len, fc_index a_step,
                                    const void *const *a, const void *b, void *c, fc_index ldc) {
    const T *rows[FC_MR];
    for (int i = 0; i < FC_MR; i++) rows[i] = a[i];
    FC_GEMM_ROWS_UKERNEL_HALF(segs, len, a_step, rows, b, c, ldc);
}
#define FC_GEMM_ROWS_HALF_ENTRY FC_STR(FC_GEMM_ROWS_UKERNEL_HALF), FC_WRAP(gemm_rows_half)
#else
#define FC_GEMM_ROWS_HALF_ENTRY NULL, NULL
#endif

static void FC_WRAP(gemm_rows_images)(fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
                                      fc_index len, fc_index a_step, const void *const *a,
                                      const void *b, void *c, fc_index ldc) {
    const T *rows[FC_MR];
    for (int i = 0; i < FC_MR; i++) rows[i] = a[i];
    FC_LOCAL(gemm_rows_images)(imgs, a_img, b_img, segs, len, a_step, rows, b, c, ldc);
}

#if FC_HAVE_GEMM_HALF
static void FC_WRAP(gemm_rows_images_half)(fc_index imgs, fc_index a_img, fc_index b_img,
                                           fc_index segs, fc_index len, fc_index a_step,
                                           const void *const *a, const void *b, void *c,
                                           fc_index ldc) {
    const T *rows[FC_MR];
    for (int i = 0; i < FC_MR; i++) rows[i] = a[i];
    FC_LOCAL(gemm_rows_images_half)(imgs, a_img, b_img, segs, len, a_step, rows, b, c, ldc);
}
#define FC_GEMM_ROWS_IMAGES_HALF_ENTRY                                                             \
    FC_STR(FC_LOCAL(gemm_rows_images_half)), FC_WRAP(gemm_rows_images_half)
#else
#define FC_GEMM_ROWS_IMAGES_HALF_ENTRY NULL, NULL
#endif

static void FC_WRAP(pack_a)(fc_index m, fc_index kd, const void *src, fc_index rs, fc_index cs,
                            void *dst) {
    FC_MR_NAME(gemm_pack_a)(m, kd, src, rs, cs, dst);
}

static void FC_WRAP(pack_b)(fc_index kd, fc_index nc, const void *src, fc_index ld, void *dst) {
    FC_NR_NAME(gemm_pack_b)(kd, nc, src, ld, dst);
}

static void FC_WRAP(pack_b_panel)(fc_index kc, const void *const *rows, fc_index q, void *dst) {
    const T *r[FC_MAX(kc, 1)];
    for (fc_index i = 0; i < kc; i++) r[i] = rows[i];
    FC_NR_NAME(gemm_pack_b_panel)(kc, r, q, dst);
}

static void FC_WRAP(pack_dyt)(const void *gy, fc_index kg, fc_index p, fc_index ow, fc_index wph,
                              fc_index q0, fc_index n, void *dst) {
    FC_NR_NAME(conv2d_pack_dyt)(gy, kg, p, ow, wph, q0, n, dst);
}

static void FC_WRAP(gather_run)(const void *row, fc_index iw0, fc_index s, fc_index w, fc_index len,
                                void *dst, fc_index ds) {
    FC_FN(gather_run)(row, iw0, s, w, len, dst, ds);
}

static void FC_WRAP(scatter_add_run)(void *row, fc_index iw0, fc_index s, fc_index w, fc_index len,
                                     const void *src) {
    FC_FN(scatter_add_run)(row, iw0, s, w, len, src);
}

static int FC_WRAP(winograd_kernel)(const void *w, fc_index k0, fc_index kg, fc_index cg,
                                    fc_index c, void *u) {
    return FC_MR_NAME(winograd_f2x2_3x3_kernel_transform)(
        (const T *)w + (k0 * cg + c) * 9, cg * 9, 9, 1, FC_MIN(FC_MR, kg - k0), 1, u, FC_MR);
}

static void FC_WRAP(winograd_input)(const void *plane, fc_index wp, fc_index th0, fc_index th1,
                                    fc_index m0, fc_index m1, void *lo, void *hi, void *const *v) {
    T *ve[16];
    for (int e = 0; e < 16; e++) ve[e] = v[e];
    FC_FN(winograd_f2x2_3x3_input_transform)(plane, wp, th0, th1, m0, m1, lo, hi, ve);
}

static void FC_WRAP(winograd_output)(const void *const *m, fc_index n, const void *bias, void *tmp,
                                     fc_index ts) {
    const T *me[16];
    for (int e = 0; e < 16; e++) me[e] = m[e];
    FC_FN(winograd_f2x2_3x3_output_transform)(me, n, *(const T *)bias, tmp, ts);
}

static void FC_WRAP(plane_sum)(fc_index n, const void *x, void *sum) {
    *(T *)sum = FC_FN(plane_sum_ukernel_16)(n, x);
}

static fc_index FC_WRAP(plane_argmax)(fc_index n, const void *x, void *value) {
    return FC_FN(plane_argmax_ukernel_16)(n, x, value);
}

static void FC_WRAP(dwconv)(fc_index n, int kk, const void *w, const void *src, const fc_index *off,
                            void *out) {
    FC_DW_UKERNEL(n, kk, w, src, off, out);
}

static void FC_WRAP(dwconv_dot)(fc_index n, int kk, const void *g, const void *src,
                                const fc_index *off, void *acc) {
    FC_DW_DOT_UKERNEL(n, kk, g, src, off, acc);
}

/* The indirect GEMM's A pointers (MR rows of ks segments, or kc columns) as T pointers. */
static void FC_WRAP(igemm)(fc_index ks, fc_index kc, const void *const *a, const void *b, void *c,
                           fc_index ldc, int mr, int nr, int accumulate, const void *bias) {
    const T *rows[FC_MR * FC_MAX(ks, 1)];
    for (fc_index i = 0; i < FC_MR * ks; i++) rows[i] = a[i];
    FC_UKERNEL(igemm_ukernel)(ks, kc, rows, b, c, ldc, mr, nr, accumulate, bias);
}

#if FC_HAVE_GEMM_HALF
static void FC_WRAP(igemm_half)(fc_index ks, fc_index kc, const void *const *a, const void *b,
                                void *c, fc_index ldc, int mr, int nr, int accumulate,
                                const void *bias) {
    const T *rows[FC_MR * FC_MAX(ks, 1)];
    for (fc_index i = 0; i < FC_MR * ks; i++) rows[i] = a[i];
    FC_IGEMM_UKERNEL_HALF(ks, kc, rows, b, c, ldc, mr, nr, accumulate, bias);
}
#define FC_IGEMM_HALF_ENTRY FC_STR(FC_IGEMM_UKERNEL_HALF), FC_WRAP(igemm_half)
#else
#define FC_IGEMM_HALF_ENTRY NULL, NULL
#endif

static void FC_WRAP(gemm_cols)(fc_index kc, const void *const *a, fc_index off, const void *b,
                               void *c, fc_index ldc) {
    const T *cols[FC_MAX(kc, 1)];
    for (fc_index r = 0; r < kc; r++) cols[r] = a[r];
    FC_UKERNEL(gemm_cols_ukernel)(kc, cols, off, b, c, ldc);
}

#if FC_HAVE_GEMM_HALF
static void FC_WRAP(gemm_cols_half)(fc_index kc, const void *const *a, fc_index off, const void *b,
                                    void *c, fc_index ldc) {
    const T *cols[FC_MAX(kc, 1)];
    for (fc_index r = 0; r < kc; r++) cols[r] = a[r];
    FC_GEMM_COLS_UKERNEL_HALF(kc, cols, off, b, c, ldc);
}
#define FC_GEMM_COLS_HALF_ENTRY FC_STR(FC_GEMM_COLS_UKERNEL_HALF), FC_WRAP(gemm_cols_half)
#else
#define FC_GEMM_COLS_HALF_ENTRY NULL, NULL
#endif

#ifdef FC_PIXELS_WIDE
static void FC_WRAP(gemm_cols_wide)(fc_index kc, const void *const *a, fc_index off, const void *b,
                                    void *c, fc_index ldc) {
    const T *cols[FC_MAX(kc, 1)];
    for (fc_index r = 0; r < kc; r++) cols[r] = a[r];
    FC_LOCAL(gemm_cols_nv)(FC_PIXELS_WIDE, FC_NV, kc, cols, off, b, c, ldc);
}
#define FC_GEMM_COLS_WIDE_ENTRY                                                                    \
    FC_STR(FC_LOCAL(gemm_cols_nv)), FC_WRAP(gemm_cols_wide), FC_PIXELS_WIDE
#else
#define FC_GEMM_COLS_WIDE_ENTRY NULL, NULL, 0
#endif

#ifdef FC_IGEMM_UKERNEL_WIDE
static void FC_WRAP(igemm_wide)(fc_index ks, fc_index kc, const void *const *a, const void *b,
                                const void *b2, void *c, fc_index ldc, int mr, int nr,
                                int accumulate, const void *bias) {
    const T *rows[FC_MR * FC_MAX(ks, 1)];
    for (fc_index i = 0; i < FC_MR * ks; i++) rows[i] = a[i];
    FC_IGEMM_UKERNEL_WIDE(ks, kc, rows, b, b2, c, ldc, mr, nr, accumulate, bias);
}
#define FC_IGEMM_WIDE_ENTRY FC_STR(FC_IGEMM_UKERNEL_WIDE), FC_WRAP(igemm_wide)
#else
#define FC_IGEMM_WIDE_ENTRY NULL, NULL
#endif

static void FC_WRAP(dwconv_nhwc)(fc_index c, fc_index ne, const void *const *a,
                                 const void *const *b, void *y, int accumulate, const void *bias) {
    const T *ae[FC_MAX(ne, 1)], *be[FC_MAX(ne, 1)];
    for (fc_index e = 0; e < ne; e++) {
        ae[e] = a[e];
        be[e] = b[e];
    }
    FC_NR_NAME(dwconv_nhwc_ukernel)(c, ne, ae, be, y, accumulate, bias);
}

static void FC_WRAP(dwconv_dot_nhwc)(fc_index c, fc_index n, fc_index kh, fc_index kw,
                                     const void *x, fc_index xs, fc_index rs, fc_index ts,
                                     const void *g, void *y) {
    FC_NR_NAME(dwconv_dot_nhwc_ukernel)(c, n, kh, kw, x, xs, rs, ts, g, y);
}

static void FC_WRAP(gconv4_nhwc)(fc_index c, fc_index ne, const void *const *a,
                                 const void *const *b, void *y, int accumulate, const void *bias) {
    const T *ae[FC_MAX(ne, 1)], *be[FC_MAX(ne, 1)];
    for (fc_index e = 0; e < ne; e++) {
        ae[e] = a[e];
        be[e] = b[e];
    }
    FC_NR_NAME(gconv4_nhwc_ukernel)(c, ne, ae, be, y, accumulate, bias);
}

static void FC_WRAP(gconv4_dot_nhwc)(fc_index c, fc_index ne, const void *const *a,
                                     const void *const *b, void *y) {
    const T *ae[FC_MAX(ne, 1)], *be[FC_MAX(ne, 1)];
    for (fc_index e = 0; e < ne; e++) {
        ae[e] = a[e];
        be[e] = b[e];
    }
    FC_NR_NAME(gconv4_dot_nhwc_ukernel)(c, ne, ae, be, y);
}

const fc_ukernel_table FC_FN(ukernel_table) = {
    FC_DT_ID,
    FC_MR,
    FC_NR,
    FC_STR(FC_UKERNEL(gemm_ukernel)),
    FC_WRAP(gemm),
    FC_GEMM_HALF_ENTRY,
    FC_STR(FC_UKERNEL(gemm_rows_ukernel)),
    FC_WRAP(gemm_rows),
    FC_GEMM_ROWS_HALF_ENTRY,
    FC_STR(FC_MR_NAME(gemm_pack_a)),
    FC_WRAP(pack_a),
    FC_STR(FC_NR_NAME(gemm_pack_b)),
    FC_WRAP(pack_b),
    FC_STR(FC_NR_NAME(gemm_pack_b_panel)),
    FC_WRAP(pack_b_panel),
    FC_STR(FC_NR_NAME(conv2d_pack_dyt)),
    FC_WRAP(pack_dyt),
    FC_STR(FC_FN(gather_run)),
    FC_WRAP(gather_run),
    FC_STR(FC_FN(scatter_add_run)),
    FC_WRAP(scatter_add_run),
    FC_STR(FC_MR_NAME(winograd_f2x2_3x3_kernel_transform)),
    FC_WRAP(winograd_kernel),
    FC_STR(FC_FN(winograd_f2x2_3x3_input_transform)),
    FC_WRAP(winograd_input),
    FC_STR(FC_FN(winograd_f2x2_3x3_output_transform)),
    FC_WRAP(winograd_output),
    FC_STR(FC_FN(plane_sum_ukernel_16)),
    FC_WRAP(plane_sum),
    FC_STR(FC_FN(plane_argmax_ukernel_16)),
    FC_WRAP(plane_argmax),
    FC_STR(FC_DW_UKERNEL),
    FC_WRAP(dwconv),
    FC_STR(FC_DW_DOT_UKERNEL),
    FC_WRAP(dwconv_dot),
    FC_STR(FC_UKERNEL(igemm_ukernel)),
    FC_WRAP(igemm),
    FC_IGEMM_HALF_ENTRY,
    FC_STR(FC_UKERNEL(gemm_cols_ukernel)),
    FC_WRAP(gemm_cols),
    FC_STR(FC_NR_NAME(dwconv_nhwc_ukernel)),
    FC_WRAP(dwconv_nhwc),
    FC_STR(FC_NR_NAME(dwconv_dot_nhwc_ukernel)),
    FC_WRAP(dwconv_dot_nhwc),
    FC_STR(FC_NR_NAME(gconv4_nhwc_ukernel)),
    FC_WRAP(gconv4_nhwc),
    FC_STR(FC_NR_NAME(gconv4_dot_nhwc_ukernel)),
    FC_WRAP(gconv4_dot_nhwc),
    FC_GEMM_COLS_HALF_ENTRY,
    FC_IGEMM_WIDE_ENTRY,
    FC_STR(FC_LOCAL(gemm_rows_images)),
    FC_WRAP(gemm_rows_images),
    FC_GEMM_ROWS_IMAGES_HALF_ENTRY,
    FC_GEMM_COLS_WIDE_ENTRY,
};

#endif /* FC_UKERNEL_TABLE_H */
