/* eltwise_avx512.c: the element-wise kernels (relu) built with the AVX-512 flags, for float32 and
 * float64; the loops are in eltwise_impl.h. */
#include "fc_isa_avx512.h"
#define FC_TEMPLATE "eltwise_impl.h"
#include "fc_each_dtype.h"
