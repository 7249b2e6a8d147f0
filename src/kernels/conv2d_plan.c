/* conv2d_plan.c: the one place that decides how a convolution pass runs, for every instruction
 * set and dtype alike (the templates only carry the plan out). What an algorithm can run is
 * fixed by its geometry rules (fc_conv2d_cannot_run); which of those runs is a choice made from
 * the instruction set's row of the tuning table (fc_tuning.c); the non-finite fallbacks are part
 * of the plan (conv2d_plan.h). docs/KERNELS.md explains each rule. */
#include "conv2d_plan.h"

/* Stride phases cost sH*sW*hph*wph per channel; beyond a few times the channel's input and
 * output they are the wrong tool (and could overflow an index). */
static int phases_fit(const fc_conv2d_params *p, const fc_tuning *tn) {
    const double hph = (double)p->out_h + (double)(p->kernel_h - 1) * p->dilation_h / p->stride_h +
                       1;
    const double wph = (double)p->out_w + (double)(p->kernel_w - 1) * p->dilation_w / p->stride_w;
    const double phases = (double)p->stride_h * (double)p->stride_w * hph * wph;
    const double data = (double)p->in_h * p->in_w + (double)p->out_h * p->out_w;
    return phases <= tn->phases_ratio * data + tn->phases_slack;
}

/* The depthwise and grouped passes' dense grid (conv2d_depthwise.h): the padded channel of the
 * stride-1 convolution that holds every output, under the same bound. */
static int dense_fits(const fc_conv2d_params *p, const fc_tuning *tn) {
    const double rows = (double)p->stride_h * (p->out_h - 1) + 1 +
                        (double)(p->kernel_h - 1) * p->dilation_h + 1;
    const double cols = (double)p->stride_w * (p->out_w - 1) + 1 +
                        (double)(p->kernel_w - 1) * p->dilation_w;
    const double data = (double)p->in_h * p->in_w + (double)p->out_h * p->out_w;
    return rows * cols <= tn->phases_ratio * data + tn->phases_slack;
}

/* The channels-last passes: algorithms of their own (no stride phases; a depthwise pass of their
 * own, conv2d_nhwc_depthwise.h). */
static int is_nhwc(fc_conv_pass pass) { return pass >= FC_CONV_NHWC_FWD; }

static int is_3x3_stride1(const fc_conv2d_params *p) {
    return p->kernel_h == 3 && p->kernel_w == 3 && p->stride_h == 1 && p->stride_w == 1 &&
           p->dilation_h == 1 && p->dilation_w == 1;
}

static const char *cannot_run(fc_conv_pass pass, int algorithm, const fc_conv2d_params *p,
                              const fc_tuning *tn) {
    const char *no_phases = "its stride phases would dwarf the input and output (strides or "
                            "dilations this large need the plain loops)";
    const char *no_dense = "its padded channels would dwarf the input and output (strides or "
                           "dilations this large need the plain loops)";
    if (algorithm == FC_CONV_DEPTHWISE && !is_nhwc(pass)) { /* every NCHW pass */
        if (p->in_channels != p->groups) return "it needs one input channel per group";
        return dense_fits(p, tn) ? NULL : no_dense;
    }
    if (algorithm == FC_CONV_DEPTHWISE && is_nhwc(pass)) /* every channels-last pass */
        return p->in_channels == p->out_channels
                   ? NULL
                   : "it needs as many output as input channels per group";
    switch (pass) {
    case FC_CONV_FWD:
        if (algorithm == FC_CONV_PLAIN) return NULL;
        if (algorithm == FC_CONV_DIRECT || algorithm == FC_CONV_PIXELS)
            return phases_fit(p, tn) ? NULL : no_phases;
        if (algorithm == FC_CONV_WINOGRAD)
            return is_3x3_stride1(p) ? NULL : "it needs a 3x3 kernel, stride 1 and dilation 1";
        return "it is not a forward algorithm (direct, pixels, winograd, depthwise or plain)";
    case FC_CONV_BWD_INPUT:
        if (algorithm == FC_CONV_COL2IM) return NULL;
        if (algorithm == FC_CONV_TRANSPOSED)
            return p->stride_h == 1 && p->stride_w == 1 ? NULL : "it needs stride 1";
        return "it is not an input-gradient algorithm (transposed, depthwise or col2im)";
    case FC_CONV_BWD_WEIGHT:
        if (algorithm == FC_CONV_PLAIN) return NULL;
        if (algorithm == FC_CONV_DIRECT) return phases_fit(p, tn) ? NULL : no_phases;
        if (algorithm == FC_CONV_GROUPED) return dense_fits(p, tn) ? NULL : no_dense;
        return "it is not a weight-gradient algorithm (direct, depthwise, grouped or plain)";
    /* channels last: the indirect GEMMs read each tap's input row in place, so no geometry is
     * too large for them (they need no stride phases) */
    case FC_CONV_NHWC_FWD:
        if (algorithm == FC_CONV_DIRECT || algorithm == FC_CONV_IM2COL) return NULL;
        if (algorithm == FC_CONV_WINOGRAD)
            return is_3x3_stride1(p) ? NULL : "it needs a 3x3 kernel, stride 1 and dilation 1";
        return "it is not a channels-last forward algorithm (direct, im2col, winograd or "
               "depthwise)";
    case FC_CONV_NHWC_BWD_INPUT:
        if (algorithm == FC_CONV_COL2IM || algorithm == FC_CONV_PLAIN ||
            algorithm == FC_CONV_DIRECT || algorithm == FC_CONV_PIXELS)
            return NULL;
        if (algorithm == FC_CONV_TRANSPOSED)
            return p->stride_h == 1 && p->stride_w == 1 ? NULL : "it needs stride 1";
        return "it is not a channels-last input-gradient algorithm (transposed, depthwise, "
               "col2im, direct, pixels or plain)";
    case FC_CONV_NHWC_BWD_WEIGHT:
        if (algorithm == FC_CONV_DIRECT) return NULL;
        return "it is not a channels-last weight-gradient algorithm (direct or depthwise)";
    }
    return "unknown pass";
}

const char *fc_conv2d_cannot_run(fc_conv_pass pass, int algorithm, fc_dtype dtype, int isa,
                                 const fc_conv2d_params *p) {
    return cannot_run(pass, algorithm, p, &fc_tuning_table[isa][dtype]);
}

/* The choice among the algorithms that can run. */
/* Winograd pays when the GEMMs dominate its transforms: enough channels on both sides, and at
 * least one whole 2 x 2 output tile. */
static int winograd_pays(const fc_conv2d_params *p, const fc_tuning *tn) {
    const fc_index Cg = p->in_channels / p->groups, Kg = p->out_channels / p->groups;
    return is_3x3_stride1(p) && Cg >= tn->winograd_min_channels &&
           Kg >= tn->winograd_min_channels && p->out_h >= 2 && p->out_w >= 2;
}

/* Pixels as the tile's rows pay where the output channels fill whole NR-lane panels, an image's
 * grid is one forward tile (its [pixel][channel] sums then stay in cache) and the reduction fills
 * a packed panel (KC): direct then copies a KC x NR panel of col(X) per NR pixels for only K/MR
 * microkernel calls, and pads the grid to NR pixels; with fewer terms the copy is cheap and the
 * transposed copy-out costs more than it saves. A 1x1 layer with stride 1 and no padding, which
 * direct reads in place, stays there. */
static int pixels_pay(const fc_conv2d_params *p, const fc_tuning *tn) {
    const fc_index Kg = p->out_channels / p->groups;
    const int pointwise = p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 &&
                          p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0 &&
                          p->out_h == p->in_h && p->out_w == p->in_w;
    const double grid = (double)p->out_h * ((double)p->out_w + (double)(p->kernel_w - 1) *
                                                                   p->dilation_w / p->stride_w);
    return Kg % tn->nr == 0 && !pointwise && grid <= (double)tn->tile_pixels &&
           (p->in_channels / p->groups) * p->kernel_h * p->kernel_w >= tn->kc;
}

/* The channels-last input gradient with few input channels: pixels (dY read in place as the
 * tile's rows) or direct (dY rows packed, transposed, as the tile's columns). Pixels' additions
 * run whole vectors along the pixels at stride 1 only; direct pays where a dY row's pixels fill
 * whole NR-column panels, which its tiles then waste nothing of (Zen 5, float32, 1 thread:
 * 32 x 32 cifar-3x3 1.47 ms direct against 1.84 pixels; 28 x 28 lenet1 1.66 against 1.04,
 * odd-3-37 0.78 against 0.58). */
static int pixels_input_pays(const fc_conv2d_params *p, const fc_tuning *tn) {
    return p->stride_w == 1 && p->out_w % tn->nr != 0;
}

static fc_conv_algorithm choose(fc_conv_pass pass, const fc_conv2d_params *p, const fc_tuning *tn) {
    const fc_index Cg = p->in_channels / p->groups, Kg = p->out_channels / p->groups;
    /* NCHW, one input channel per group and too few output channels to fill the GEMM tile's
     * rows: a reduction over the taps alone, per plane */
    if (!is_nhwc(pass) && Cg == 1 && Kg < tn->mr && dense_fits(p, tn)) return FC_CONV_DEPTHWISE;
    /* channels last, as many channels in as out per group and groups too small for the GEMMs
     * (at most a quarter of the tile's columns): the channelwise passes */
    if (is_nhwc(pass) && Cg == Kg && (Kg == 1 || (p->groups > 1 && 4 * Kg <= tn->nr)))
        return FC_CONV_DEPTHWISE;
    switch (pass) {
    case FC_CONV_FWD:
        if (!phases_fit(p, tn)) return FC_CONV_PLAIN;
        if (winograd_pays(p, tn)) return FC_CONV_WINOGRAD;
        return pixels_pay(p, tn) ? FC_CONV_PIXELS : FC_CONV_DIRECT;
    case FC_CONV_BWD_INPUT:
        /* as a forward pass the input channels become output channels: worth it once they
         * fill the microkernel's rows (not for C = 1 inputs or depthwise layers) */
        return p->stride_h == 1 && p->stride_w == 1 && Cg >= tn->mr ? FC_CONV_TRANSPOSED
                                                                    : FC_CONV_COL2IM;
    case FC_CONV_BWD_WEIGHT:
        /* a group's output channels are the GEMM's columns, padded to NR: with few, dots of
         * whole planes waste nothing */
        if (p->groups > 1 && Kg <= tn->grouped_max_channels && dense_fits(p, tn))
            return FC_CONV_GROUPED;
        return phases_fit(p, tn) ? FC_CONV_DIRECT : FC_CONV_PLAIN;
    case FC_CONV_NHWC_FWD:
        /* direct's runs are a kernel row's kW C/groups values, or one tap's C/groups: with few
         * channels each is a few multiply-adds per pointer and start, where im2col's one panel
         * row per pixel runs the whole reduction at once */
        if (Cg <= tn->im2col_max_channels) return FC_CONV_IM2COL;
        return winograd_pays(p, tn) ? FC_CONV_WINOGRAD : FC_CONV_DIRECT;
    case FC_CONV_NHWC_BWD_INPUT:
        /* as a forward pass the input channels are the GEMM's columns, a vector's worth per
         * half-width tile: fewer (C = 1 or 3 inputs, depthwise layers) waste most of each tile,
         * as col2im's columns do, a kernel row's kW C/groups padded to NR. With few, direct
         * makes them the tile's rows (padded to MR only) and runs one GEMM per input row, any
         * stride, where col2im runs one per (input row, kernel row) */
        if (Cg <= tn->direct_input_max_channels)
            return pixels_input_pays(p, tn) ? FC_CONV_PIXELS : FC_CONV_DIRECT;
        return p->stride_h == 1 && p->stride_w == 1 && 2 * Cg >= tn->nr ? FC_CONV_TRANSPOSED
                                                                        : FC_CONV_COL2IM;
    case FC_CONV_NHWC_BWD_WEIGHT:
        return FC_CONV_DIRECT;
    }
    return FC_CONV_PLAIN;
}

int fc_conv2d_plan(fc_conv_pass pass, fc_dtype dtype, int isa, const fc_conv2d_params *p,
                   fc_conv_plan *plan) {
    const fc_tuning *tn = &fc_tuning_table[isa][dtype];
    plan->tuning = tn;
    if (p->algorithm == FC_CONV_AUTO) {
        plan->algorithm = choose(pass, p, tn);
    } else {
        if (p->algorithm < 0 || p->algorithm >= FC_CONV_ALGORITHM_COUNT ||
            cannot_run(pass, p->algorithm, p, tn))
            return FC_EALGORITHM;
        plan->algorithm = (fc_conv_algorithm)p->algorithm;
    }
    switch (plan->algorithm) {
    case FC_CONV_WINOGRAD: /* direct can run every geometry Winograd can */
        plan->nonfinite = FC_CONV_DIRECT;
        break;
    case FC_CONV_TRANSPOSED:
        plan->nonfinite = FC_CONV_COL2IM;
        break;
    case FC_CONV_DEPTHWISE: /* the input and weight gradients as the GEMM passes'; channels
                             * last, the forward and the weight gradient as the direct passes' */
        plan->nonfinite = pass == FC_CONV_BWD_INPUT         ? FC_CONV_COL2IM
                          : pass == FC_CONV_BWD_WEIGHT      ? FC_CONV_PLAIN
                          : pass == FC_CONV_NHWC_BWD_INPUT  ? FC_CONV_COL2IM
                          : pass == FC_CONV_NHWC_FWD        ? FC_CONV_DIRECT
                          : pass == FC_CONV_NHWC_BWD_WEIGHT ? FC_CONV_DIRECT
                                                            : FC_CONV_DEPTHWISE;
        break;
    case FC_CONV_DIRECT: /* the NHWC weight gradient multiplies what the definition does */
        plan->nonfinite = pass == FC_CONV_BWD_WEIGHT ? FC_CONV_PLAIN : FC_CONV_DIRECT;
        break;
    case FC_CONV_GROUPED: /* as the direct weight gradient */
        plan->nonfinite = FC_CONV_PLAIN;
        break;
    default:
        plan->nonfinite = plan->algorithm;
    }
    return FC_OK;
}
