/* fc_isa_scalar.h: the portable path, for kernel files built with the baseline flags: plain C
 * that the compiler may vectorise for the baseline instruction set, no intrinsics. The GEMM
 * microkernels' register tile is 4 x 8 for both dtypes. (Read by fc_template.h.) */
#ifndef FC_ISA_SCALAR_H
#define FC_ISA_SCALAR_H

#include "fastconv.h"

#define FC_ISA scalar
#define FC_ISA_ID FC_ISA_SCALAR
#define FC_HAVE_VEC 0

#define FC_MR_f32 4
#define FC_NR_f32 8
#define FC_MR_f64 4
#define FC_NR_f64 8

#endif /* FC_ISA_SCALAR_H */
