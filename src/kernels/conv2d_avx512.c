/* conv2d_avx512.c: convolution forward/backward kernels, the AVX-512 path (built with -mavx512f ...): 8 x 32 f32 / 8 x 16 f64 register tiles,
 * two zmm per row, 16 accumulators.
 * The loops live in conv2d_gemm.h; this file only fixes the dtype, tile shape and intrinsics. */
#include <immintrin.h>

#define FC_ISA avx512

#define T float
#define FC_DT f32
#define FC_MR 8
#define FC_NR 32
#define FC_VEC __m512
#define FC_VL 16
#define FC_VLOADU(p) _mm512_loadu_ps(p)
#define FC_VSTOREU(p, v) _mm512_storeu_ps(p, v)
#define FC_VSET1(x) _mm512_set1_ps(x)
#define FC_VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FC_VADD(a, b) _mm512_add_ps(a, b)
#define FC_VZERO() _mm512_setzero_ps()
#define FC_VCOPY_PARTIAL(d, s, n) \
    _mm512_mask_storeu_ps(d, (__mmask16)((1u << (n)) - 1),                                   \
                          _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), s))
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
#define FC_MR 8
#define FC_NR 16
#define FC_VEC __m512d
#define FC_VL 8
#define FC_VLOADU(p) _mm512_loadu_pd(p)
#define FC_VSTOREU(p, v) _mm512_storeu_pd(p, v)
#define FC_VSET1(x) _mm512_set1_pd(x)
#define FC_VFMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define FC_VADD(a, b) _mm512_add_pd(a, b)
#define FC_VZERO() _mm512_setzero_pd()
#define FC_VCOPY_PARTIAL(d, s, n) \
    _mm512_mask_storeu_pd(d, (__mmask8)((1u << (n)) - 1),                                    \
                          _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1), s))
#include "conv2d_gemm.h"
