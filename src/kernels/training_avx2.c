/* training_avx2.c: cross-entropy, dropout and the optimiser updates built with the AVX2 flags,
 * for float32 and float64; the loops are in training.h. */
#include "fc_isa_avx2.h"
#define FC_TEMPLATE "training.h"
#include "fc_each_dtype.h"
