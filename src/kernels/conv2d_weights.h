/* conv2d_weights.h: the weights as the convolution passes read them, whatever their layout:
 * where element (k, c, tap) lies in OIHW or HWIO (fc_weight_format), and the flipped, transposed
 * weights of the input gradient's forward pass at stride 1, which the NCHW and NHWC passes share:
 * copied (transposed_problem), or for one group read in place through a view's strides
 * (transposed_view: the channels-last passes, and the NCHW Winograd kernel transform).
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

/* A weight_format bit of the kernels' own (never a caller's): the weights are the flipped,
 * transposed view of a one-group problem's OIHW or HWIO weights (transposed_view), read in place
 * from their last tap. */
#define FC_WEIGHT_FLIPPED_T 2

static inline fc_weight_layout fc_weight_layout_of(const fc_conv2d_params *p) {
    const int flipped = (p->weight_format & FC_WEIGHT_FLIPPED_T) != 0;
    /* the channels of the weights as stored: a view's are the other way round */
    const fc_index K = flipped ? p->in_channels : p->out_channels;
    const fc_index Cg = (flipped ? p->out_channels : p->in_channels) / p->groups;
    const fc_index kk = p->kernel_h * p->kernel_w;
    fc_weight_layout s;
    if ((p->weight_format & ~FC_WEIGHT_FLIPPED_T) == FC_WEIGHT_HWIO) { /* (kH, kW, C/groups, K) */
        s.k_stride = 1;
        s.c_stride = K;
        s.tap_stride = Cg * K;
    } else { /* (K, C/groups, kH, kW) */
        s.k_stride = Cg * kk;
        s.c_stride = kk;
        s.tap_stride = 1;
    }
    if (flipped) { /* (k, c, t) of the view is (c, k, kk - 1 - t) of the weights */
        const fc_index k_stride = s.k_stride;
        s.k_stride = s.c_stride;
        s.c_stride = k_stride;
        s.tap_stride = -s.tap_stride;
    }
    return s;
}

/* The forward problem of the input gradient at stride 1 (see transposed_problem), its weights
 * left to the caller: q.weight_format OIHW. */
static inline fc_conv2d_params fc_transposed_geometry(const fc_conv2d_params *p) {
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
    return fc_transposed_geometry(p);
}

/* One group: that problem reading w in place, a view of the flipped, transposed weights (whose
 * strides cannot express several groups); *wv is where the view's element (0, 0, 0) lies, w's
 * last tap. No copy, and the same products as the copied weights give. */
static inline fc_conv2d_params FC_LOCAL(transposed_view)(const fc_conv2d_params *p, const T *w,
                                                         const T **wv) {
    fc_conv2d_params q = fc_transposed_geometry(p);
    q.weight_format = p->weight_format | FC_WEIGHT_FLIPPED_T;
    *wv = w - (p->kernel_h * p->kernel_w - 1) * fc_weight_layout_of(&q).tap_stride;
    return q;
}

/* The weights as [group][tap][Cg][Kg], for the channels-last `plain` input gradient (a gather,
 * conv2d_nhwc_bwd_input.h; forced only): a tap's weights for one input channel are contiguous along
 * K, as the dY channels they meet are. */
static inline void FC_LOCAL(conv2d_nhwc_pack_taps)(const fc_conv2d_params *p, const T *w, T *dst) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w;
    const fc_weight_layout s = fc_weight_layout_of(p);
    for (fc_index g = 0; g < G; g++)
        for (fc_index t = 0; t < kk; t++)
            for (fc_index c = 0; c < Cg; c++)
                for (fc_index k = 0; k < Kg; k++)
                    *dst++ = w[(g * Kg + k) * s.k_stride + c * s.c_stride + t * s.tap_stride];
}

#endif /* FC_CONV2D_WEIGHTS_H */
