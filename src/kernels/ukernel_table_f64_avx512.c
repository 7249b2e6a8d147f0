/* ukernel_table_f64_avx512.c: the tests' table of the f64 avx512 microkernels, transforms and
 * packing routines (fc_ukernels.h); built from ukernel_table.h. */
#include "fc_isa_avx512.h"
#define FC_DT f64
#include "ukernel_table.h"
