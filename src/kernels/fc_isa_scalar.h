/* fc_isa_scalar.h: the portable path, for kernel files built with the baseline flags: plain C
 * that the compiler may vectorise for the baseline instruction set, no intrinsics. The GEMM
 * microkernels' register tile is 4 x 8 for both dtypes. (Read by fc_template.h.) */
#ifndef FC_ISA_SCALAR_H
#define FC_ISA_SCALAR_H

#include "fastconv.h"

#define FC_ISA scalar
#define FC_ISA_ID FC_ISA_SCALAR
#define FC_HAVE_VEC 0
#define FC_VREGS 16 /* the channels-last depthwise dot products' taps per pass */

#define FC_MR_f32 4
#define FC_NR_f32 8
#define FC_MR_f64 4
#define FC_NR_f64 8
/* depthwise: pixels of the tap sums and lanes of the dot products, one at a time */
#define FC_DW_BLOCK_f32 1
#define FC_DW_LANES_f32 1
#define FC_DW_BLOCK_f64 1
#define FC_DW_LANES_f64 1

#endif /* FC_ISA_SCALAR_H */
