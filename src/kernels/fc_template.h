/* fc_template.h: what every kernel template (conv2d_*.h, pool2d_impl.h, eltwise_impl.h,
 * bench_fma_peak.h) builds its names and types from. A kernel file includes one fc_isa_<isa>.h,
 * defines FC_DT (f32 or f64) and includes a template; every macro below reads FC_DT and FC_ISA
 * where it is used, so a file may instantiate a template once per dtype (fc_each_dtype.h).
 *
 *   T                  the element type, float or double
 *   FC_FN(op)          an entry point:            fc_f32_conv2d_fwd__avx512
 *   FC_UKERNEL(op)     a register-tile kernel:    fc_f32_gemm_ukernel_8x32__avx512
 *   FC_MR_NAME(op)     a routine per MR rows:     fc_f32_gemm_pack_a_mr8__avx512
 *   FC_NR_NAME(op)     a routine per NR columns:  fc_f32_gemm_pack_b_nr32__avx512
 *   FC_LOCAL(name)     a file-local helper:       split_phases_f32
 *   FC_MR, FC_NR       the ISA's GEMM register tile for the dtype (fc_isa_<isa>.h)
 *   FC_VEC, FC_VL, FC_VLOADU, ...   its vector register type and operations, when FC_HAVE_VEC
 *                      (every vector a whole number of groups of four lanes: FC_VROT4) */
#ifndef FC_TEMPLATE_H
#define FC_TEMPLATE_H

#include "fc_internal.h"

typedef float fc_real_f32;
typedef double fc_real_f64;
#define T FC_CAT2(fc_real_, FC_DT)
#define FC_DT_ID FC_CAT2(FC_DTYPE_, FC_DT)

#define FC_FN(op) FC_CAT3(FC_CAT3(fc_, FC_DT, _), op, FC_CAT2(__, FC_ISA))
#define FC_LOCAL(name) FC_CAT3(name, _, FC_DT)
#define FC_TILE_NAME(op, tile) FC_FN(FC_CAT3(op, _, tile))
#define FC_UKERNEL(op) FC_TILE_NAME(op, FC_CAT3(FC_MR, x, FC_NR))
#define FC_MR_NAME(op) FC_TILE_NAME(op, FC_CAT2(mr, FC_MR))
#define FC_NR_NAME(op) FC_TILE_NAME(op, FC_CAT2(nr, FC_NR))

#define FC_MR FC_CAT2(FC_MR_, FC_DT)
#define FC_NR FC_CAT2(FC_NR_, FC_DT)
#if FC_HAVE_VEC
#define FC_VL FC_CAT2(FC_VL_, FC_DT)
#define FC_VEC FC_CAT2(fc_vec_, FC_DT)
#define FC_VLOADU(p) FC_CAT2(fc_vloadu_, FC_DT)(p)
#define FC_VSTOREU(p, v) FC_CAT2(fc_vstoreu_, FC_DT)(p, v)
#define FC_VSET1(x) FC_CAT2(fc_vset1_, FC_DT)(x)
#define FC_VFMA(a, b, c) FC_CAT2(fc_vfma_, FC_DT)(a, b, c) /* a * b + c */
#define FC_VADD(a, b) FC_CAT2(fc_vadd_, FC_DT)(a, b)
#define FC_VZERO() FC_CAT2(fc_vzero_, FC_DT)()
#define FC_VCOPY_PARTIAL(d, s, n) FC_CAT2(fc_vcopy_partial_, FC_DT)(d, s, n) /* n < VL */
/* Lane u of every group of four lanes takes the group's lane (u + r) % 4 (r a constant 1..3). */
#define FC_VROT4(v, r)                                                                             \
    FC_CAT2(fc_vperm4_, FC_DT)                                                                     \
    (v, ((r) & 3) | (((r) + 1) & 3) << 2 | (((r) + 2) & 3) << 4 | (((r) + 3) & 3) << 6)
#endif

#endif /* FC_TEMPLATE_H */
