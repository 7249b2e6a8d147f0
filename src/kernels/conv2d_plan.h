/* conv2d_plan.h: which algorithm runs a convolution pass (conv2d_plan.c), for the passes'
 * templates and, through fc_private.h, for the tests. */
#ifndef FC_CONV2D_PLAN_H
#define FC_CONV2D_PLAN_H

#include "fc_tuning.h"

/* The passes, NCHW then channels-last (NHWC): a pass's layout is part of what it is, since each
 * layout has algorithms of its own. */
typedef enum {
    FC_CONV_FWD = 0,
    FC_CONV_BWD_INPUT = 1,
    FC_CONV_BWD_WEIGHT = 2,
    FC_CONV_NHWC_FWD = 3,
    FC_CONV_NHWC_BWD_INPUT = 4,
    FC_CONV_NHWC_BWD_WEIGHT = 5
} fc_conv_pass;

typedef struct {
    fc_conv_algorithm algorithm; /* what runs */
    /* What runs instead when `algorithm` meets data it cannot take exactly: Winograd, Inf or
     * NaN in x or w (its transforms would cancel Inf - Inf into NaN); the transposed and the
     * depthwise input gradients, in w (their zero padding of dY would multiply them); the
     * direct and the depthwise weight gradients, in x (the phase grid's dropped columns would
     * multiply them by zero); the channels-last depthwise forward and weight gradient, in w and in
     * dY (they leave out the padding taps the definition multiplies by them). The algorithm itself
     * when it takes any data. */
    fc_conv_algorithm nonfinite;
    const fc_tuning *tuning; /* the instruction set's and dtype's row */
} fc_conv_plan;

/* An algorithm's answer, to its pass, that it met such data: the pass then runs plan.nonfinite,
 * which rewrites every output. Never returned to a caller of the public API. */
#define FC_NONFINITE 1

/* The plan for `pass` on geometry p in instruction set `isa` and dtype `dtype`: FC_OK, or
 * FC_EALGORITHM when p->algorithm forces one that cannot run this pass on this geometry. */
int fc_conv2d_plan(fc_conv_pass pass, fc_dtype dtype, int isa, const fc_conv2d_params *p,
                   fc_conv_plan *plan);

/* Why `algorithm` cannot run `pass` on geometry p in that instruction set and dtype, or NULL
 * when it can. */
const char *fc_conv2d_cannot_run(fc_conv_pass pass, int algorithm, fc_dtype dtype, int isa,
                                 const fc_conv2d_params *p);

#endif /* FC_CONV2D_PLAN_H */
