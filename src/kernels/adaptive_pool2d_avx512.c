/* adaptive_pool2d_avx512.c: the adaptive and global pooling kernels built with the AVX-512 flags,
 * for float32 and float64; the loops are in adaptive_pool2d_impl.h. */
#include "fc_isa_avx512.h"
#define FC_TEMPLATE "adaptive_pool2d_impl.h"
#include "fc_each_dtype.h"
