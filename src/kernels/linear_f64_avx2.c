/* linear_f64_avx2.c: the float64 fully connected kernels built with the AVX2 flags; the
 * loops are in linear.h (one dtype per file, as the convolution templates it builds on). */
#include "fc_isa_avx2.h"
#define FC_DT f64
#include "linear.h"
