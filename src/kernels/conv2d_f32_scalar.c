/* conv2d_f32_scalar.c: the float32 convolution kernels built with the baseline flags (4 x 8
 * GEMM register tile, fc_isa_scalar.h); the loops are in the conv2d_*.h templates. */
#include "fc_isa_scalar.h"
#define FC_DT f32
#include "conv2d_fwd.h"
#include "conv2d_bwd_input.h"
#include "conv2d_bwd_weight.h"
