/* conv2d_f64_avx512.c: the float64 convolution kernels built with the AVX-512 flags (8 x 16
 * GEMM register tile, fc_isa_avx512.h); the loops are in the conv2d_*.h templates. */
#include "fc_isa_avx512.h"
#define FC_DT f64
#include "conv2d_fwd.h"
#include "conv2d_bwd_input.h"
#include "conv2d_bwd_weight.h"
