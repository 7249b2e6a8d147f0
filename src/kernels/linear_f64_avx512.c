/* linear_f64_avx512.c: the float64 fully connected kernels built with the AVX-512 flags; the
 * loops are in linear.h (one dtype per file, as the convolution templates it builds on). */
#include "fc_isa_avx512.h"
#define FC_DT f64
#include "linear.h"
