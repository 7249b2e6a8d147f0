/* eltwise_avx2.c: the element-wise kernels (relu) built with -mavx2 -mfma, for float32 and
 * float64; the loops are in eltwise_impl.h. */
#include "fc_isa_avx2.h"
#define FC_TEMPLATE "eltwise_impl.h"
#include "fc_each_dtype.h"
