/* conv2d_f64_avx2.c: the float64 convolution kernels built with -mavx2 -mfma (6 x 8
 * GEMM register tile, fc_isa_avx2.h); the loops are in the conv2d_*.h templates. */
#include "fc_isa_avx2.h"
#define FC_DT f64
#include "conv2d_fwd.h"
#include "conv2d_bwd_input.h"
#include "conv2d_bwd_weight.h"
