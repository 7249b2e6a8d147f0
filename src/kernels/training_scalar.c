/* training_scalar.c: cross-entropy, dropout and the optimiser updates built with the baseline
 * flags, for float32 and float64; the loops are in training.h. */
#include "fc_isa_scalar.h"
#define FC_TEMPLATE "training.h"
#include "fc_each_dtype.h"
