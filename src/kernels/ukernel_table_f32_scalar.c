/* ukernel_table_f32_scalar.c: the tests' table of the f32 scalar microkernels, transforms and
 * packing routines (fc_ukernels.h); built from ukernel_table.h. */
#include "fc_isa_scalar.h"
#define FC_DT f32
#include "ukernel_table.h"
