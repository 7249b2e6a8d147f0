/* fc_tuning.c: the values of fc_tuning.h's table, one row per instruction set and dtype. Only
 * the register tile and the sizes that follow from it differ between rows; docs/KERNELS.md
 * ("Measurements behind the design") records what the values were chosen on. */
#include "fc_tuning.h"

/* What every row shares. */
#define FC_SHARED                                                                                  \
    .tile_pixels = 384, .indirection_pointers = 16384, .task_rows = 288,                           \
    .winograd_min_channels = 16, .grouped_max_channels = 8, .direct_input_max_channels = 4,        \
    .weight_grad_tasks = 16, .weight_grad_private_bytes = (fc_index)32 << 20,                      \
    .weight_grad_pack_bytes = (fc_index)16 << 20, .phases_ratio = 4.0, .phases_slack = 65536.0,    \
    .conv_min_work = 2.0e5, .stream_min_work = 1.0e6, .pool_min_work = 3.2e4,                      \
    .eltwise_min_work = 1.0e5, .im2col_max_channels = 2,                                           \
    .direct_input_pack_bytes = (fc_index)512 << 10

/* KC: one KC x NR B panel within 24 KB of L1 (and at least 64 deep). Winograd blocks: 4 NR
 * tiles. The grid may drop an eighth of its pixels. */
#define FC_ROW(MR, NR, KC)                                                                         \
    {.mr = MR, .nr = NR, .kc = KC, .winograd_block = 4 * (NR), .grid_max_waste = 0.125, FC_SHARED}

const fc_tuning fc_tuning_table[FC_ISA_COUNT][FC_DTYPE_COUNT] = {
    [FC_ISA_SCALAR] = {[FC_DTYPE_f32] = FC_ROW(4, 8, 768), [FC_DTYPE_f64] = FC_ROW(4, 8, 384)},
    [FC_ISA_AVX2] = {[FC_DTYPE_f32] = FC_ROW(6, 16, 384), [FC_DTYPE_f64] = FC_ROW(6, 8, 384)},
    [FC_ISA_AVX512] = {[FC_DTYPE_f32] = FC_ROW(8, 32, 192), [FC_DTYPE_f64] = FC_ROW(8, 16, 192)},
};
