/* conv2d_nhwc_f32_scalar.c: the float32 channels-last convolution kernels built with the baseline
 * flags (4 x 8 register tile, fc_isa_scalar.h); the loops are in the conv2d_nhwc_*.h templates. */
#include "fc_isa_scalar.h"
/* the shared templates (conv2d_pack.h, conv2d_plain.h) also hold the NCHW passes' routines */
#pragma GCC diagnostic ignored "-Wunused-function"
#define FC_DT f32
#include "conv2d_nhwc_fwd.h"
#include "conv2d_nhwc_bwd_input.h"
#include "conv2d_nhwc_bwd_weight.h"
#include "conv2d_nhwc_prepacked.h"
