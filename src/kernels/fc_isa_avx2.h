/* fc_isa_avx2.h: the AVX2 + FMA path, for kernel files built with -mavx2 -mfma: the GEMM
 * microkernels' register tile (6 x 16 float32, 6 x 8 float64: two ymm per row, 12 accumulators)
 * and the vector operations they use, per dtype. (Read by fc_template.h.) */
#ifndef FC_ISA_AVX2_H
#define FC_ISA_AVX2_H

#include <immintrin.h>

#include "fastconv.h"

#define FC_ISA avx2
#define FC_ISA_ID FC_ISA_AVX2
#define FC_HAVE_VEC 1
#define FC_VREGS 16 /* ymm registers: the channels-last depthwise dot products' taps per pass */

#define FC_MR_f32 6
#define FC_NR_f32 16
#define FC_VL_f32 8
#define FC_DW_BLOCK_f32 64 /* depthwise tap sums: 8 vectors of pixels */
#define FC_DW_LANES_f32 16 /* depthwise dot products: 2 vectors per tap */
typedef __m256 fc_vec_f32;
#define fc_vloadu_f32 _mm256_loadu_ps
#define fc_vstoreu_f32 _mm256_storeu_ps
#define fc_vset1_f32 _mm256_set1_ps
#define fc_vfma_f32 _mm256_fmadd_ps
#define fc_vadd_f32 _mm256_add_ps
#define fc_vzero_f32 _mm256_setzero_ps
/* Each group of four lanes (a 128-bit lane) permuted as imm says (fc_template.h: FC_VROT4). */
#define fc_vperm4_f32(v, imm) _mm256_permute_ps(v, imm)
/* Copy n < VL elements with AVX2 masked moves (lanes below n enabled). */
static inline void fc_vcopy_partial_f32(float *d, const float *s, int n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(d, m, _mm256_maskload_ps(s, m));
}

#define FC_MR_f64 6
#define FC_NR_f64 8
#define FC_VL_f64 4
#define FC_DW_BLOCK_f64 32
#define FC_DW_LANES_f64 8
typedef __m256d fc_vec_f64;
#define fc_vloadu_f64 _mm256_loadu_pd
#define fc_vstoreu_f64 _mm256_storeu_pd
#define fc_vset1_f64 _mm256_set1_pd
#define fc_vfma_f64 _mm256_fmadd_pd
#define fc_vadd_f64 _mm256_add_pd
#define fc_vzero_f64 _mm256_setzero_pd
#define fc_vperm4_f64(v, imm) _mm256_permute4x64_pd(v, imm) /* the whole register */
static inline void fc_vcopy_partial_f64(double *d, const double *s, int n) {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    _mm256_maskstore_pd(d, m, _mm256_maskload_pd(s, m));
}

#endif /* FC_ISA_AVX2_H */
