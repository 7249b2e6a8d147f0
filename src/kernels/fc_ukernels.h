/* fc_ukernels.h: the GEMM microkernels, Winograd transforms, packing routines, depthwise
 * microkernels and global pooling's plane reductions of one instruction set and dtype, by pointer,
 * for the tests only (fastconv._kernels.UkernelTable, tests/test_ukernels.py). docs/KERNELS.md
 * states each one's contract.
 *
 * The passes call these routines directly and inlined; the tables are built in files of their
 * own (ukernel_table_<dt>_<isa>.c, from ukernel_table.h) from the same templates with the same
 * flags, so taking their addresses changes nothing in the passes' compiled code. Each entry
 * names the routine it runs (e.g. "fc_f32_gemm_ukernel_8x32__avx512") and points to a thin
 * wrapper with the dtype erased to void pointers, so one table type serves both dtypes; a
 * routine a build lacks (the half-width GEMMs on the scalar path) has a NULL pointer. */
#ifndef FC_UKERNELS_H
#define FC_UKERNELS_H

#include "fastconv.h"

typedef struct {
    int dtype;  /* FC_DTYPE_f32 or FC_DTYPE_f64 (fc_internal.h) */
    int mr, nr; /* the GEMM register tile */
    /* C[mr x nr] (+)= A * B (+ bias): fc_<dt>_gemm_ukernel_<MR>x<NR>__<isa> */
    const char *gemm_name;
    void (*gemm)(fc_index kc, const void *a, const void *b, void *c, fc_index ldc, int mr, int nr,
                 int accumulate, const void *bias);
    /* the same on the first NR/2 columns of the B panel (nr <= NR/2): ..._half */
    const char *gemm_half_name;
    void (*gemm_half)(fc_index kc, const void *a, const void *b, void *c, fc_index ldc, int mr,
                      int nr, int accumulate, const void *bias);
    /* C[MR x NR] += A * B, A's rows through MR pointers, in segs segments of len steps
     * a_step apart: fc_<dt>_gemm_rows_ukernel_... */
    const char *gemm_rows_name;
    void (*gemm_rows)(fc_index segs, fc_index len, fc_index a_step, const void *const *a,
                      const void *b, void *c, fc_index ldc);
    /* C[MR x NR/2] += A * B's first NR/2 columns, A's rows through MR pointers: ..._half */
    const char *gemm_rows_half_name;
    void (*gemm_rows_half)(fc_index segs, fc_index len, fc_index a_step, const void *const *a,
                           const void *b, void *c, fc_index ldc);
    /* A(i, k) = src[i * rs + k * cs] into [m/MR][kd][MR]: fc_<dt>_gemm_pack_a_mr<MR>__<isa> */
    const char *pack_a_name;
    void (*pack_a)(fc_index m, fc_index kd, const void *src, fc_index rs, fc_index cs, void *dst);
    /* B(k, q) = src[k * ld + q] into [nc/NR][kd][NR]: fc_<dt>_gemm_pack_b_nr<NR>__<isa> */
    const char *pack_b_name;
    void (*pack_b)(fc_index kd, fc_index nc, const void *src, fc_index ld, void *dst);
    /* B(r, u) = rows[r][q + u] into one [kc][NR] panel: fc_<dt>_gemm_pack_b_panel_nr<NR>__ */
    const char *pack_b_panel_name;
    void (*pack_b_panel)(fc_index kc, const void *const *rows, fc_index q, void *dst);
    /* dY^T of grid pixels [q0, q0 + n) into [Kg/NR][n][NR]: fc_<dt>_conv2d_pack_dyt_nr<NR>__ */
    const char *pack_dyt_name;
    void (*pack_dyt)(const void *gy, fc_index kg, fc_index p, fc_index ow, fc_index wph,
                     fc_index q0, fc_index n, void *dst);
    /* dst[t * ds] = row[iw0 + t * s], 0 outside [0, w) or for a NULL row: fc_<dt>_gather_run__ */
    const char *gather_run_name;
    void (*gather_run)(const void *row, fc_index iw0, fc_index s, fc_index w, fc_index len,
                       void *dst, fc_index ds);
    /* row[iw0 + t * s] += src[t] inside [0, w): fc_<dt>_scatter_add_run__<isa> */
    const char *scatter_add_run_name;
    void (*scatter_add_run)(void *row, fc_index iw0, fc_index s, fc_index w, fc_index len,
                            const void *src);
    /* U = G g G^T of kernels k0 .. k0 + MR - 1, channel c, into u[16][MR]; nonzero on Inf/NaN */
    const char *winograd_kernel_name;
    int (*winograd_kernel)(const void *w, fc_index k0, fc_index kg, fc_index cg, fc_index c,
                           void *u);
    /* V = B^T d B of the tiles [m0, m1) of tile rows [th0, th1) of a padded plane, into v[16] */
    const char *winograd_input_name;
    void (*winograd_input)(const void *plane, fc_index wp, fc_index th0, fc_index th1, fc_index m0,
                           fc_index m1, void *lo, void *hi, void *const *v);
    /* Y = A^T M A + *bias of n tiles from m[16], into rows 8..11 of tmp (row stride ts) */
    const char *winograd_output_name;
    void (*winograd_output)(const void *const *m, fc_index n, const void *bias, void *tmp,
                            fc_index ts);
    /* *sum = x[0] + ... + x[n - 1] in 16 lanes: fc_<dt>_plane_sum_ukernel_16__<isa> */
    const char *plane_sum_name;
    void (*plane_sum)(fc_index n, const void *x, void *sum);
    /* the first maximum of x[0 .. n) (the last NaN if any) into *value, returning its index:
     * fc_<dt>_plane_argmax_ukernel_16__<isa> */
    const char *plane_argmax_name;
    fc_index (*plane_argmax)(fc_index n, const void *x, void *value);
    /* out[q] = sum over t < kk of w[t] src[off[t] + q], q < n: fc_<dt>_dwconv_ukernel_<B>__ */
    const char *dwconv_name;
    void (*dwconv)(fc_index n, int kk, const void *w, const void *src, const fc_index *off,
                   void *out);
    /* acc[t] += sum over q < n of g[q] src[off[t] + q], t < kk: fc_<dt>_dwconv_dot_ukernel_... */
    const char *dwconv_dot_name;
    void (*dwconv_dot)(fc_index n, int kk, const void *g, const void *src, const fc_index *off,
                       void *acc);
    /* channels last: C[mr x nr] (+)= sum over ks segments of A_s * B_s (+ bias[:nr]), row i of
     * A_s read at a[i * ks + s]: fc_<dt>_igemm_ukernel_<MR>x<NR>__<isa> */
    const char *igemm_name;
    void (*igemm)(fc_index ks, fc_index kc, const void *const *a, const void *b, void *c,
                  fc_index ldc, int mr, int nr, int accumulate, const void *bias);
    /* the same on the first NR/2 columns of the B panels (nr <= NR/2): ..._half */
    const char *igemm_half_name;
    void (*igemm_half)(fc_index ks, fc_index kc, const void *const *a, const void *b, void *c,
                       fc_index ldc, int mr, int nr, int accumulate, const void *bias);
    /* C[MR x NR] += A * B, A's column r (MR values) at a[r] + off:
     * fc_<dt>_gemm_cols_ukernel_<MR>x<NR>__<isa> */
    const char *gemm_cols_name;
    void (*gemm_cols)(fc_index kc, const void *const *a, fc_index off, const void *b, void *c,
                      fc_index ldc);
    /* channels last, depthwise: y[q] = (accumulate ? y[q] : bias ? bias[q] : 0) + sum over
     * e < ne of a[e][q] b[e][q], q < c: fc_<dt>_dwconv_nhwc_ukernel_nr<NR>__<isa> */
    const char *dwconv_nhwc_name;
    void (*dwconv_nhwc)(fc_index c, fc_index ne, const void *const *a, const void *const *b,
                        void *y, int accumulate, const void *bias);
    /* y[(i kw + j) c + q] += sum over e < n of x[e xs + i rs + j ts + q] g[e c + q], i < kh,
     * j < kw, q < c: fc_<dt>_dwconv_dot_nhwc_ukernel_nr<NR>__<isa> */
    const char *dwconv_dot_nhwc_name;
    void (*dwconv_dot_nhwc)(fc_index c, fc_index n, fc_index kh, fc_index kw, const void *x,
                            fc_index xs, fc_index rs, fc_index ts, const void *g, void *y);
    /* groups of four channels: as dwconv_nhwc with four weight rows per term, lane q meeting
     * a[e][q - u + (u + r) % 4] (u = q % 4) with b[e][r c + q], r < 4:
     * fc_<dt>_gconv4_nhwc_ukernel_nr<NR>__<isa> */
    const char *gconv4_nhwc_name;
    void (*gconv4_nhwc)(fc_index c, fc_index ne, const void *const *a, const void *const *b,
                        void *y, int accumulate, const void *bias);
    /* y[r c + q] += sum over e < ne of a[e][q - u + (u + r) % 4] b[e][q], r < 4, q < c:
     * fc_<dt>_gconv4_dot_nhwc_ukernel_nr<NR>__<isa> */
    const char *gconv4_dot_nhwc_name;
    void (*gconv4_dot_nhwc)(fc_index c, fc_index ne, const void *const *a, const void *const *b,
                            void *y);
    /* C[2 MR x NR/2] += A * B on the first NR/2 columns of the B panel, A's column r (2 MR
     * values) at a[r] + off: fc_<dt>_gemm_cols_ukernel_<MR>x<NR>__<isa>_half */
    const char *gemm_cols_half_name;
    void (*gemm_cols_half)(fc_index kc, const void *const *a, fc_index off, const void *b, void *c,
                           fc_index ldc);
    /* the indirect GEMM over a B panel's NR columns and then the first NR/2 of a second panel
     * b2 of the same depth, NR < nr <= NR + NR/2 (32 vector registers only, else NULL):
     * fc_<dt>_igemm_ukernel_<MR>x<NR>__<isa>_wide */
    const char *igemm_wide_name;
    void (*igemm_wide)(fc_index ks, fc_index kc, const void *const *a, const void *b,
                       const void *b2, void *c, fc_index ldc, int mr, int nr, int accumulate,
                       const void *bias);
    /* gemm_rows over imgs images summed in registers, image g's A rows at a[i] + g * a_img and
     * its B panel at b + g * b_img (the weight gradient's images per call; internal, named
     * gemm_rows_images_<dt> in conv2d_gemm_ukernel.h) */
    const char *gemm_rows_images_name;
    void (*gemm_rows_images)(fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
                             fc_index len, fc_index a_step, const void *const *a, const void *b,
                             void *c, fc_index ldc);
    /* the same on the first NR/2 columns of the B panels: gemm_rows_images_half_<dt> */
    const char *gemm_rows_images_half_name;
    void (*gemm_rows_images_half)(fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
                                  fc_index len, fc_index a_step, const void *const *a,
                                  const void *b, void *c, fc_index ldc);
    /* C[gemm_cols_wide_rows x NR] += A * B, A's column r at a[r] + off: `pixels`' tall tile,
     * gemm_cols_nv_<dt> on FC_PIXELS_WIDE rows (32 vector registers and NV = 2 only, else NULL
     * and 0 rows) */
    const char *gemm_cols_wide_name;
    void (*gemm_cols_wide)(fc_index kc, const void *const *a, fc_index off, const void *b, void *c,
                           fc_index ldc);
    int gemm_cols_wide_rows;
} fc_ukernel_table;

/* Each ISA's tables, fc_<dt>_ukernel_table__<isa> (ukernel_table.h), */
#define FC_DECLARE_UKERNEL_TABLES(isa)                                                             \
    extern const fc_ukernel_table fc_f32_ukernel_table__##isa, fc_f64_ukernel_table__##isa;
FC_DECLARE_UKERNEL_TABLES(scalar)
FC_DECLARE_UKERNEL_TABLES(avx2)
FC_DECLARE_UKERNEL_TABLES(avx512)
#undef FC_DECLARE_UKERNEL_TABLES

/* and the one of `isa` for `dtype`, or NULL where this build or CPU lacks the ISA. */
const fc_ukernel_table *fc_ukernel_table_for(int isa, int dtype);

#endif /* FC_UKERNELS_H */
