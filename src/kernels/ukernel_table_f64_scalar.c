/* ukernel_table_f64_scalar.c: the tests' table of the f64 scalar microkernels, transforms and
 * packing routines (fc_ukernels.h); built from ukernel_table.h. */
#include "fc_isa_scalar.h"
#define FC_DT f64
#include "ukernel_table.h"
