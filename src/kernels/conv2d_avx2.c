/* conv2d_avx2.c: convolution forward/backward kernels, the AVX2+FMA path (built with -mavx2 -mfma): 6 x 16 f32 / 6 x 8 f64 register tiles of ymm FMAs.
 * The loops live in conv2d_gemm.h; this file only fixes the dtype, tile shape and vector width. */
#define FC_ISA avx2
#define FC_VBYTES 32

#define T float
#define FC_DT f32
#define FC_MR 6
#define FC_NR 16
#include "conv2d_gemm.h"
#undef T
#undef FC_DT
#undef FC_MR
#undef FC_NR

#define T double
#define FC_DT f64
#define FC_MR 6
#define FC_NR 8
#include "conv2d_gemm.h"
