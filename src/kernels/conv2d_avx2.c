/* conv2d_avx2.c: convolution forward/backward kernels, the AVX2+FMA path (built with -mavx2 -mfma): 6 x 16 f32 / 6 x 8 f64 register tiles,
 * two ymm per row, 12 accumulators.
 * The loops live in conv2d_gemm.h; this file only fixes the dtype, tile shape and intrinsics. */
#include <immintrin.h>

#define FC_ISA avx2

/* Copy n < VL elements with AVX2 masked moves (lanes below n enabled). */
static inline void fc_copy_partial_f32(float *d, const float *s, int n) {
    const __m256i m =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(d, m, _mm256_maskload_ps(s, m));
}
static inline void fc_copy_partial_f64(double *d, const double *s, int n) {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    _mm256_maskstore_pd(d, m, _mm256_maskload_pd(s, m));
}

#define T float
#define FC_DT f32
#define FC_MR 6
#define FC_NR 16
#define FC_VEC __m256
#define FC_VL 8
#define FC_VLOADU(p) _mm256_loadu_ps(p)
#define FC_VSTOREU(p, v) _mm256_storeu_ps(p, v)
#define FC_VSET1(x) _mm256_set1_ps(x)
#define FC_VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FC_VADD(a, b) _mm256_add_ps(a, b)
#define FC_VZERO() _mm256_setzero_ps()
#define FC_VCOPY_PARTIAL(d, s, n) fc_copy_partial_f32(d, s, n)
#include "conv2d_gemm.h"
#undef T
#undef FC_DT
#undef FC_MR
#undef FC_NR
#undef FC_VEC
#undef FC_VL
#undef FC_VLOADU
#undef FC_VSTOREU
#undef FC_VSET1
#undef FC_VFMA
#undef FC_VADD
#undef FC_VZERO
#undef FC_VCOPY_PARTIAL

#define T double
#define FC_DT f64
#define FC_MR 6
#define FC_NR 8
#define FC_VEC __m256d
#define FC_VL 4
#define FC_VLOADU(p) _mm256_loadu_pd(p)
#define FC_VSTOREU(p, v) _mm256_storeu_pd(p, v)
#define FC_VSET1(x) _mm256_set1_pd(x)
#define FC_VFMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define FC_VADD(a, b) _mm256_add_pd(a, b)
#define FC_VZERO() _mm256_setzero_pd()
#define FC_VCOPY_PARTIAL(d, s, n) fc_copy_partial_f64(d, s, n)
#include "conv2d_gemm.h"
