/* fc_isa_avx512.h: the AVX-512 path, for kernel files built with -mavx512f -mavx512dq
 * -mavx512bw -mavx512vl -mavx2 -mfma: the GEMM microkernels' register tile (8 x 32 float32,
 * 8 x 16 float64: two zmm per row, 16 accumulators) and the vector operations they use, per
 * dtype. (Read by fc_template.h.) */
#ifndef FC_ISA_AVX512_H
#define FC_ISA_AVX512_H

#include <immintrin.h>

#include "fastconv.h"

#define FC_ISA avx512
#define FC_ISA_ID FC_ISA_AVX512
#define FC_HAVE_VEC 1
#define FC_VREGS 32 /* zmm registers: the channels-last depthwise dot products' taps per pass */

#define FC_MR_f32 8
#define FC_NR_f32 32
#define FC_VL_f32 16
#define FC_DW_BLOCK_f32 128 /* depthwise tap sums: 8 vectors of pixels */
#define FC_DW_LANES_f32 32  /* depthwise dot products: 2 vectors per tap */
typedef __m512 fc_vec_f32;
#define fc_vloadu_f32 _mm512_loadu_ps
#define fc_vstoreu_f32 _mm512_storeu_ps
#define fc_vset1_f32 _mm512_set1_ps
#define fc_vfma_f32 _mm512_fmadd_ps
#define fc_vadd_f32 _mm512_add_ps
#define fc_vzero_f32 _mm512_setzero_ps
/* Each group of four lanes (a 128-bit lane) permuted as imm says (fc_template.h: FC_VROT4). */
#define fc_vperm4_f32(v, imm) _mm512_permute_ps(v, imm)
/* Copy n < VL elements with masked moves (lanes below n enabled). */
#define fc_vcopy_partial_f32(d, s, n)                                                              \
    _mm512_mask_storeu_ps(d, (__mmask16)((1u << (n)) - 1),                                         \
                          _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), s))

#define FC_MR_f64 8
#define FC_NR_f64 16
#define FC_VL_f64 8
#define FC_DW_BLOCK_f64 64
#define FC_DW_LANES_f64 16
typedef __m512d fc_vec_f64;
#define fc_vloadu_f64 _mm512_loadu_pd
#define fc_vstoreu_f64 _mm512_storeu_pd
#define fc_vset1_f64 _mm512_set1_pd
#define fc_vfma_f64 _mm512_fmadd_pd
#define fc_vadd_f64 _mm512_add_pd
#define fc_vzero_f64 _mm512_setzero_pd
#define fc_vperm4_f64(v, imm) _mm512_permutex_pd(v, imm) /* within each 256-bit lane */
#define fc_vcopy_partial_f64(d, s, n)                                                              \
    _mm512_mask_storeu_pd(d, (__mmask8)((1u << (n)) - 1),                                          \
                          _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1), s))

#endif /* FC_ISA_AVX512_H */
