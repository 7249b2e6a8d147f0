/* adaptive_pool2d_scalar.c: the adaptive and global pooling kernels built with the baseline flags,
 * for float32 and float64; the loops are in adaptive_pool2d_impl.h. */
#include "fc_isa_scalar.h"
#define FC_TEMPLATE "adaptive_pool2d_impl.h"
#include "fc_each_dtype.h"
