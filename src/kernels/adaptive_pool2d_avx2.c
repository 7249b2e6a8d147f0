/* adaptive_pool2d_avx2.c: the adaptive and global pooling kernels built with -mavx2 -mfma, for
 * float32 and float64; the loops are in adaptive_pool2d_impl.h. */
#include "fc_isa_avx2.h"
#define FC_TEMPLATE "adaptive_pool2d_impl.h"
#include "fc_each_dtype.h"
