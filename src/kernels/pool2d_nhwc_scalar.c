/* pool2d_nhwc_scalar.c: the channels-last pooling kernels built with the baseline flags, for
 * float32 and float64; the loops are in pool2d_nhwc_impl.h. */
#include "fc_isa_scalar.h"
#define FC_TEMPLATE "pool2d_nhwc_impl.h"
#include "fc_each_dtype.h"
