/* batchnorm_scalar.c: the batch normalisation kernels built with the baseline flags, for float32
 * and float64; the loops are in batchnorm.h. */
#include "fc_isa_scalar.h"
#define FC_TEMPLATE "batchnorm.h"
#include "fc_each_dtype.h"
