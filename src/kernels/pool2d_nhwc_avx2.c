/* pool2d_nhwc_avx2.c: the channels-last pooling kernels built with -mavx2 -mfma, for float32 and
 * float64; the loops are in pool2d_nhwc_impl.h. */
#include "fc_isa_avx2.h"
#define FC_TEMPLATE "pool2d_nhwc_impl.h"
#include "fc_each_dtype.h"
