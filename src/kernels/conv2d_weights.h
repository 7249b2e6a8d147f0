/* conv2d_weights.h: the weights as the convolution passes read them, whatever their layout:
 * where element (k, c, tap) lies in OIHW or HWIO (fc_weight_format), and the flipped, transposed
 * weights of the input gradient's forward pass at stride 1, which the NCHW and NHWC passes share.
 *
 * Loop structure (transposed_problem): one pass over the weights in their own order, each element
 * written once to its flipped, transposed place. */
#ifndef FC_CONV2D_WEIGHTS_H
#define FC_CONV2D_WEIGHTS_H

#include "fc_template.h"

/* Element (k, c, t) of the weights, output channel k (counted across groups), input channel c of
 * its group and tap t = i * kW + j, lies at k * k_stride + c * c_stride + t * tap_stride. */
typedef struct {
    fc_index k_stride, c_stride, tap_stride;
} fc_weight_layout;

static inline fc_weight_layout fc_weight_layout_of(const fc_conv2d_params *p) {
    const fc_index Cg = p->in_channels / p->groups, kk = p->kernel_h * p->kernel_w;
    fc_weight_layout s;
    if (p->weight_format == FC_WEIGHT_HWIO) { /* (kH, kW, C/groups, K) */
        s.k_stride = 1;
        s.c_stride = p->out_channels;
        s.tap_stride = Cg * p->out_channels;
    } else { /* (K, C/groups, kH, kW) */
        s.k_stride = Cg * kk;
        s.c_stride = kk;
        s.tap_stride = 1;
    }
    return s;
}

/* At stride 1 the input gradient is itself a convolution, of dY with the weights transposed
 * (K <-> C within each group) and flipped (tap t -> kk - 1 - t), padded by d (k - 1) - pad:
 * negative for a padding past the kernel, where that pass starts inside dY. Writes those weights to
 * wt in OIHW (out_channels * C/groups * kH * kW elements) and returns that forward problem (any
 * algorithm, the plan's choice). */
static fc_conv2d_params FC_LOCAL(transposed_problem)(const fc_conv2d_params *p, const T *w, T *wt) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w;
    const fc_weight_layout s = fc_weight_layout_of(p);
    for (fc_index g = 0; g < G; g++)
        for (fc_index k = 0; k < Kg; k++)
            for (fc_index c = 0; c < Cg; c++)
                for (fc_index t = 0; t < kk; t++)
                    wt[((g * Cg + c) * Kg + k) * kk + (kk - 1 - t)] =
                        w[(g * Kg + k) * s.k_stride + c * s.c_stride + t * s.tap_stride];
    fc_conv2d_params q = *p;
    q.in_channels = p->out_channels;
    q.in_h = p->out_h;
    q.in_w = p->out_w;
    q.out_channels = p->in_channels;
    q.pad_top = p->dilation_h * (p->kernel_h - 1) - p->pad_top;
    q.pad_left = p->dilation_w * (p->kernel_w - 1) - p->pad_left;
    q.out_h = p->in_h;
    q.out_w = p->in_w;
    q.algorithm = FC_CONV_AUTO;
    q.weight_format = FC_WEIGHT_OIHW;
    q.relu = 0;
    return q;
}

#endif /* FC_CONV2D_WEIGHTS_H */
