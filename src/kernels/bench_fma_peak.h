/* bench_fma_peak.h: fastconv bench's measure of the machine's multiply-add peak, in the register
 * type of the kernel file's GEMM microkernel (fc_isa_<isa>.h), for one dtype; private
 * (fc_private.h), dispatched to the selected instruction set like the kernels.
 *
 * Loop structure: on each of up to nthreads threads, `iterations` rounds of FC_PEAK_CHAINS
 * independent multiply-add chains held in registers. */
#include "fc_template.h"

/* What the microkernel could reach at best: `iterations` rounds of 12 independent multiply-add
 * chains (enough to cover the FMA units' latency, few enough to stay in AVX2's 16 registers) on
 * each of up to nthreads threads, in the microkernel's register type. `fastconv bench` times it
 * in the same run as the layers, since a shared machine's peak moves. *flops: the FLOPs done. */
#define FC_PEAK_CHAINS 12
static volatile double FC_LOCAL(peak_sink); /* the chains' sum: stored, so they cannot be dropped */
int FC_FN(fma_peak)(fc_index iterations, int nthreads, double *flops) {
    int team = 1;
    double sink = 0;
    if (iterations < 0) iterations = 0;
    if (nthreads < 1) nthreads = 1;
    FC_PRAGMA(omp parallel num_threads(nthreads) reduction(+ : sink))
    {
        FC_PRAGMA(omp single)
        team = FC_NUM_THREADS_IN_TEAM();
#if FC_HAVE_VEC
        FC_VEC acc[FC_PEAK_CHAINS];
        const FC_VEC half = FC_VSET1((T)0.5); /* a <- a/2 + 1/2 stays finite and normal */
        for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = FC_VSET1((T)i);
        for (fc_index it = 0; it < iterations; it++) {
            FC_PRAGMA(GCC unroll 16)
            for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = FC_VFMA(acc[i], half, half);
        }
        T lanes[FC_VL];
        for (int i = 1; i < FC_PEAK_CHAINS; i++) acc[0] = FC_VADD(acc[0], acc[i]);
        FC_VSTOREU(lanes, acc[0]);
        sink += (double)lanes[0];
#else
        T acc[FC_PEAK_CHAINS];
        for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = (T)i;
        for (fc_index it = 0; it < iterations; it++)
            for (int i = 0; i < FC_PEAK_CHAINS; i++) acc[i] = acc[i] * (T)0.5 + (T)0.5;
        for (int i = 0; i < FC_PEAK_CHAINS; i++) sink += (double)acc[i];
#endif
    }
#if FC_HAVE_VEC
    const double lanes_per_op = FC_VL;
#else
    const double lanes_per_op = 1;
#endif
    *flops = 2.0 * FC_PEAK_CHAINS * lanes_per_op * (double)iterations * team;
    FC_LOCAL(peak_sink) = sink;
    return FC_OK;
}
#undef FC_PEAK_CHAINS
