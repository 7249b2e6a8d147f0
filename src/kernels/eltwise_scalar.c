/* eltwise_scalar.c: the element-wise kernels (relu) built with the baseline flags, for float32 and
 * float64; the loops are in eltwise_impl.h. */
#include "fc_isa_scalar.h"
#define FC_TEMPLATE "eltwise_impl.h"
#include "fc_each_dtype.h"
