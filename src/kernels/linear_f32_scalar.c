/* linear_f32_scalar.c: the float32 fully connected kernels built with the baseline flags; the
 * loops are in linear.h (one dtype per file, as the convolution templates it builds on). */
#include "fc_isa_scalar.h"
#define FC_DT f32
#include "linear.h"
