/* conv2d_avx512.c: convolution forward/backward kernels, the AVX-512 path (built with -mavx512f ...): 8 x 32 f32 / 8 x 16 f64 register tiles, two zmm per row.
 * The loops live in conv2d_gemm.h; this file only fixes the dtype, tile shape and vector width. */
#define FC_ISA avx512
#define FC_VBYTES 64

#define T float
#define FC_DT f32
#define FC_MR 8
#define FC_NR 32
#include "conv2d_gemm.h"
#undef T
#undef FC_DT
#undef FC_MR
#undef FC_NR

#define T double
#define FC_DT f64
#define FC_MR 8
#define FC_NR 16
#include "conv2d_gemm.h"
