/* conv2d_nhwc_f32_avx512.c: the float32 channels-last convolution kernels built with the AVX-512
 * flags (8 x 32 register tile, fc_isa_avx512.h); the loops are in the conv2d_nhwc_*.h templates. */
#include "fc_isa_avx512.h"
/* the shared templates (conv2d_pack.h, conv2d_plain.h) also hold the NCHW passes' routines */
#pragma GCC diagnostic ignored "-Wunused-function"
#define FC_DT f32
#include "conv2d_nhwc_fwd.h"
#include "conv2d_nhwc_bwd_input.h"
#include "conv2d_nhwc_bwd_weight.h"
#include "conv2d_nhwc_prepacked.h"
