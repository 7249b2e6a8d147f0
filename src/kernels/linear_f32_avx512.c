/* linear_f32_avx512.c: the float32 fully connected kernels built with the AVX-512 flags; the
 * loops are in linear.h (one dtype per file, as the convolution templates it builds on). */
#include "fc_isa_avx512.h"
#define FC_DT f32
#include "linear.h"
