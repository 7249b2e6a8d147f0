/* fc_private.h: what fastconv's own benchmark and tests reach beyond the C API (fastconv.h): the
 * convolution plan and the tuning table (conv2d_plan.h, fc_tuning.h), and the multiply-add peak,
 * declared from FC_PRIVATE_LIST in fc_kernel_list.h and dispatched like the kernels to the
 * selected instruction set. */
#ifndef FC_PRIVATE_H
#define FC_PRIVATE_H

#include "conv2d_plan.h"
#include "fastconv.h"

/* fc_f32_fma_peak / fc_f64_fma_peak(iterations, nthreads, &flops): `iterations` rounds of
 * independent multiply-add chains in the microkernel's register type on up to nthreads threads;
 * *flops gets the FLOPs done (the caller times the call to get FLOP/s). */
#define FC_PRIVATE_PROTOTYPE(ctx, name, params, args) int fc_##name params;
FC_PRIVATE_LIST(FC_PRIVATE_PROTOTYPE, _)
#undef FC_PRIVATE_PROTOTYPE

#endif /* FC_PRIVATE_H */
