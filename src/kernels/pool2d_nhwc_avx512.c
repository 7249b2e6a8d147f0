/* pool2d_nhwc_avx512.c: the channels-last pooling kernels built with the AVX-512 flags, for float32
 * and float64; the loops are in pool2d_nhwc_impl.h. */
#include "fc_isa_avx512.h"
#define FC_TEMPLATE "pool2d_nhwc_impl.h"
#include "fc_each_dtype.h"
