/* bench_fma_peak_scalar.c: the benchmark's multiply-add peak in the scalar microkernel's
 * registers, for float32 and float64; the loop is in bench_fma_peak.h. */
#include "fc_isa_scalar.h"
#define FC_TEMPLATE "bench_fma_peak.h"
#include "fc_each_dtype.h"
