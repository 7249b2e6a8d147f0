/* conv2d_plain.h: the exact plain-loop convolutions, straight from the definition, and the
 * finiteness test that sends work to them. They serve the cases the fast paths must not take:
 * geometries whose stride phases would dwarf the data (strides or dilations of millions), and,
 * for the weight gradient, inputs holding Inf or NaN, which the phase grid's dropped columns
 * would otherwise turn into NaN through 0 * Inf.
 *
 * Loop structure: forward, parallel over (image, output channel) planes, each output a sum over
 * (c, i, j) in that order; weight gradient, parallel over (k, c) pairs, each weight a sum over
 * (image, output row, output column). Padding is a zero that still multiplies. */
#ifndef FC_CONV2D_PLAIN_H
#define FC_CONV2D_PLAIN_H

#include "conv2d_pack.h"
#include "conv2d_plan.h"
#include "fc_template.h"

/* True when every element is finite (exponent bits not all set), as an integer OR-reduction. On
 * one thread no parallel region at all: the channels-last direct input gradient checks each
 * task's packed dY from inside its own region, where a nested region of one thread still took
 * futex calls on every task. */
static int FC_LOCAL(all_finite)(const fc_tuning *tn, const T *a, fc_index n, int nthreads) {
    int bad = 0;
    const int nt = fc_threads_for(nthreads, (double)n, tn->stream_min_work, n);
    FC_PARALLEL_FOR(nt, reduction(| : bad), i, n, {
        const T v = a[i];
        bad |= (v - v) != (v - v); /* inf - inf and NaN - NaN are NaN */
    });
    return !bad;
}

static int FC_LOCAL(conv2d_fwd_plain)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                      const T *w, const T *bias, T *y, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, ntasks = p->batch * p->out_channels;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OH * OW * Cg * kh * kw,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index n = t / p->out_channels, k = t % p->out_channels, g = k / Kg;
        const T *xg = x + (n * p->in_channels + g * Cg) * H * W;
        T *out = y + t * OH * OW;
        for (fc_index oh = 0; oh < OH; oh++)
            for (fc_index ow = 0; ow < OW; ow++) {
                T acc = bias ? bias[k] : (T)0;
                for (fc_index c = 0; c < Cg; c++)
                    for (fc_index i = 0; i < kh; i++) {
                        const fc_index ih = oh * p->stride_h - p->pad_top + i * p->dilation_h;
                        const int row_in = (fc_uindex)ih < (fc_uindex)H;
                        for (fc_index j = 0; j < kw; j++) {
                            const fc_index iw = ow * p->stride_w - p->pad_left + j * p->dilation_w;
                            /* padding is a zero that still multiplies (0 * NaN weight = NaN),
                             * as in PyTorch's im2col convolution and the reference */
                            const T v = row_in && (fc_uindex)iw < (fc_uindex)W
                                            ? xg[(c * H + ih) * W + iw]
                                            : (T)0;
                            acc += w[((k * Cg + c) * kh + i) * kw + j] * v;
                        }
                    }
                out[oh * OW + ow] = acc;
            }
        if (p->relu) FC_LOCAL(relu_run)(out, OH * OW); /* the fused epilogue */
    }
    return FC_OK;
}

static int FC_LOCAL(conv2d_bwd_weight_plain)(const fc_conv2d_params *p, const fc_tuning *tn,
                                             const T *gy, const T *x, T *gw, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index kh = p->kernel_h, kw = p->kernel_w, ntasks = p->out_channels * Cg;
    const int nt = fc_threads_for(nthreads, (double)p->batch * ntasks * OH * OW * kh * kw,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nt))
    for (fc_index t = 0; t < ntasks; t++) {
        const fc_index k = t / Cg, c = t % Cg, g = k / Kg;
        for (fc_index i = 0; i < kh; i++)
            for (fc_index j = 0; j < kw; j++) {
                T acc = 0;
                for (fc_index n = 0; n < p->batch; n++) {
                    const T *xc = x + (n * p->in_channels + g * Cg + c) * H * W;
                    const T *g_out = gy + (n * p->out_channels + k) * OH * OW;
                    for (fc_index oh = 0; oh < OH; oh++) {
                        const fc_index ih = oh * p->stride_h - p->pad_top + i * p->dilation_h;
                        const int row_in = (fc_uindex)ih < (fc_uindex)H;
                        for (fc_index ow = 0; ow < OW; ow++) {
                            const fc_index iw = ow * p->stride_w - p->pad_left + j * p->dilation_w;
                            const T v = row_in && (fc_uindex)iw < (fc_uindex)W
                                            ? xc[ih * W + iw]
                                            : (T)0; /* padding multiplies too */
                            acc += g_out[oh * OW + ow] * v;
                        }
                    }
                }
                gw[(t * kh + i) * kw + j] = acc;
            }
    }
    return FC_OK;
}

#endif /* FC_CONV2D_PLAIN_H */
