/* fc_tuning.h: the kernels' block sizes and thresholds, one row per instruction set and dtype
 * (fc_tuning.c holds the values; BLIS's bli_cntx_init_<config>.c is the model). The templates
 * read their row as fc_tuning_table[FC_ISA_ID][FC_DT_ID]; conv2d_plan.c chooses algorithms from
 * it. */
#ifndef FC_TUNING_H
#define FC_TUNING_H

#include "fc_internal.h"

typedef struct {
    /* The GEMM microkernels' register tile. The templates keep compile-time copies for their
     * registers (fc_isa_<isa>.h); tests/test_plan.py checks that the two agree. */
    int mr, nr;
    /* Reduction depth of a packed panel: one KC x NR B panel stays in L1 while every A panel
     * passes. */
    fc_index kc;
    /* Pixels in one forward or col2im tile, at most. */
    fc_index tile_pixels;
    /* Channels last: the (pixel, tap) pointers of one task's indirect GEMM, at most (the pixel
     * tile shrinks for kernels of many taps). */
    fc_index indirection_pointers;
    /* Rows of col(dX) or dW^T (channels x kernel taps) that one task owns, at most. */
    fc_index task_rows;
    /* Winograd: tiles per task block, and the channels per group, in and out, below which the
     * transforms cost more than the multiplies they save. */
    fc_index winograd_block;
    fc_index winograd_min_channels;
    /* Grouped layers' weight gradient: output channels per group up to which it runs as dots of
     * whole planes (the GEMM's columns, padded to NR, would run mostly empty). */
    fc_index grouped_max_channels;
    /* Channels last: input channels per group up to which the input gradient runs `direct`
     * (a kernel row's kW C/groups values as the GEMM tile's rows, one GEMM per input row) rather
     * than col2im, whose columns would pad those few values to NR. */
    fc_index direct_input_max_channels;
    /* Channels last: input channels per group up to which the forward pass runs `im2col` (each
     * pixel's kH kW C/groups inputs copied into one panel row, one reduction over them all)
     * rather than `direct`, whose reduction steps per run, kW C/groups or C/groups, are then too
     * few to pay for starting each run. */
    fc_index im2col_max_channels;
    /* Weight gradient: the tasks (batch chunks x groups x channel blocks) to aim for, the
     * bytes of private partial sums the batch chunks may take, and the bytes of dY^T packed at a
     * time (for whole batch chunks, at least one). */
    fc_index weight_grad_tasks;
    fc_index weight_grad_private_bytes;
    fc_index weight_grad_pack_bytes;
    /* The stride phases are used while they hold at most phases_ratio times a channel's input
     * and output elements, plus phases_slack; past that (strides or dilations of millions) the
     * plain loops run. */
    double phases_ratio, phases_slack;
    /* The direct forward pass reads copies by kernel column instead (conv2d_phases.h) when the
     * phases' grid would drop more than this share of its pixels, and the copies fit that same
     * bound. */
    double grid_max_waste;
    /* Work per thread before another thread pays for its start-up: multiply-adds (convolution),
     * elements streamed (finiteness checks, bias gradient), window reads (pooling), elements
     * (element-wise). */
    double conv_min_work, stream_min_work, pool_min_work, eltwise_min_work;
    /* Channels last, the direct input gradient row by row (strided, dilated or grouped): bytes
     * of packed dY rows one task reads (each is read again by every input row it reaches, so
     * from L2). */
    fc_index direct_input_pack_bytes;
} fc_tuning;

extern const fc_tuning fc_tuning_table[FC_ISA_COUNT][FC_DTYPE_COUNT];

#endif /* FC_TUNING_H */
