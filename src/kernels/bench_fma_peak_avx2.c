/* bench_fma_peak_avx2.c: the benchmark's multiply-add peak in the avx2 microkernel's
 * registers, for float32 and float64; the loop is in bench_fma_peak.h. */
#include "fc_isa_avx2.h"
#define FC_TEMPLATE "bench_fma_peak.h"
#include "fc_each_dtype.h"
