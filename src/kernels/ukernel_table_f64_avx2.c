/* ukernel_table_f64_avx2.c: the tests' table of the f64 avx2 microkernels, transforms and
 * packing routines (fc_ukernels.h); built from ukernel_table.h. */
#include "fc_isa_avx2.h"
#define FC_DT f64
#include "ukernel_table.h"
