/* conv2d_tuning.h: the convolution passes' block sizes and thresholds. */
#ifndef FC_CONV2D_TUNING_H
#define FC_CONV2D_TUNING_H

#include "fc_template.h"

/* Reduction depth per panel: one B panel (KC x NR) stays within ~24 KB of L1. */
#define FC_KC FC_MAX(64, 24576 / (FC_NR * (int)sizeof(T)))
/* Upper bound on the pixels in one forward / input-gradient tile. */
#define FC_NC_MAX 384
/* Rows of col(dX) (channels x kernel offsets) that one input-gradient task owns at most. */
#define FC_ROWS_MAX 288
/* Roughly 200k multiply-adds per thread before another thread pays for its start-up. */
#define FC_CONV_MIN_WORK 2.0e5

#endif /* FC_CONV2D_TUNING_H */
