/* batchnorm_avx512.c: the batch normalisation kernels built with the AVX-512 flags, for float32 and
 * float64; the loops are in batchnorm.h. */
#include "fc_isa_avx512.h"
#define FC_TEMPLATE "batchnorm.h"
#include "fc_each_dtype.h"
