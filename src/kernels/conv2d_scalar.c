/* conv2d_scalar.c: convolution forward/backward kernels, the portable reference C path: plain
 * loops, no intrinsics (any CPU, any compiler). The loops live in conv2d_gemm.h; this file only
 * fixes the dtype and tile shape. */
#define FC_ISA scalar

#define T float
#define FC_DT f32
#define FC_MR 4
#define FC_NR 8
#include "conv2d_gemm.h"
#undef T
#undef FC_DT
#undef FC_MR
#undef FC_NR

#define T double
#define FC_DT f64
#define FC_MR 4
#define FC_NR 8
#include "conv2d_gemm.h"
