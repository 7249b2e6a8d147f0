/* linear_f32_avx2.c: the float32 fully connected kernels built with the AVX2 flags; the
 * loops are in linear.h (one dtype per file, as the convolution templates it builds on). */
#include "fc_isa_avx2.h"
#define FC_DT f32
#include "linear.h"
