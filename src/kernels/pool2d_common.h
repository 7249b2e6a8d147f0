/* pool2d_common.h: what the NCHW and the channels-last pooling templates (pool2d_impl.h,
 * pool2d_nhwc_impl.h) share, for one dtype (included once per instantiation, so no include guard;
 * each template undefines the two macros at its end): PyTorch's update rule of max pooling, the
 * average-pool window extents, and the L^p pooling's output, scale and gradient factors. */
#include <math.h>

#include "fc_template.h"
#include "fc_tuning.h"

/* Window reads per thread before another thread pays for its start-up (fc_tuning.h). */
#define FC_POOL_MIN_WORK (fc_tuning_table[FC_ISA_ID][FC_DT_ID].pool_min_work)

#define FC_MAX_TAKES(v, m) ((v) > (m) || (v) != (v)) /* PyTorch's update rule */

/* PyTorch's average-pool divisor for output column/row o along one dimension: the window length
 * counted with padding (clipped to input + the end's padding) and without (clipped to the input;
 * 0 or less for a window wholly in the padding). */
static inline void FC_LOCAL(avg_extent)(fc_index o, fc_index s, fc_index pad_begin,
                                        fc_index pad_end, fc_index k, fc_index n, fc_index *padded,
                                        fc_index *inside) {
    const fc_index a = o * s - pad_begin;
    const fc_index b = FC_MIN(a + k, n + pad_end);
    *padded = b - a;
    *inside = FC_MIN(b, n) - FC_MAX(a, 0);
}

/* lp_pool2d (no dilation): out = (S * kH*kW / area)^(1/p), S = sum of x^p over the window clipped
 * to the input, area = the window clipped to the padded input, so a partial ceil_mode window is
 * scaled up as PyTorch does. Padding (zeros) is fastconv's extension; a window wholly in it sums
 * to 0 and gives 0. */
static inline T FC_LOCAL(lp_finish)(T sum, double norm, double scale) {
    const double v = (double)sum * scale;
    return (T)(norm == 2.0 ? sqrt(v) : norm == 1.0 ? v : pow(v, 1.0 / norm));
}

static inline double FC_LOCAL(lp_scale)(const fc_pool2d_params *p, fc_index oh, fc_index ow) {
    fc_index ah, aw, inside;
    FC_LOCAL(avg_extent)(oh, p->stride_h, p->pad_top, p->pad_bottom, p->kernel_h, p->in_h, &ah,
                         &inside);
    FC_LOCAL(avg_extent)(ow, p->stride_w, p->pad_left, p->pad_right, p->kernel_w, p->in_w, &aw,
                         &inside);
    return (double)(p->kernel_h * p->kernel_w) / (double)(ah * aw);
}

/* The L^p output's gradient over the window's sum s = sum of x^p, times the output's gradient g:
 * d out / d x = (this) * x^(p-1), with c = kH*kW / area (lp_scale). */
static inline double FC_LOCAL(lp_coef)(double s, double g, double c, double norm) {
    if (s == 0) return 0; /* PyTorch's relu: zero gradient */
    /* a NaN sum: PyTorch's chain multiplies by sign(NaN) = 0, which only the finite
     * t^(1/p - 1) of p = 1 survives as 0 */
    if (s != s && norm == 1.0) return 0;
    const double out = norm == 2.0 ? sqrt(s * c) : pow(s * c, 1.0 / norm);
    return g * c * (norm == 2.0 ? 1.0 / out : pow(out, 1.0 - norm));
}

/* Whether input row (or column) i lies in a window oh*s - pad .. oh*s - pad + k - 1, oh < out. */
static inline int FC_LOCAL(lp_covered)(fc_index i, fc_index s, fc_index k, fc_index pad,
                                       fc_index out) {
    const fc_index at = i + pad;                   /* in the padded input */
    const fc_index last = FC_MIN(at / s, out - 1); /* the last window starting at or before i */
    return last >= 0 && at < last * s + k;
}

/* The gradient of an element no window covers (cut off by the stride or the end of the image):
 * PyTorch's 0 * d(x^p)/dx, with x^(p-1) in T, as its autograd computes it: it overflows to Inf
 * (and the product to NaN) where T's range ends, and is NaN at an Inf or NaN input. */
static inline T FC_LOCAL(lp_uncovered)(T v, double norm) {
    const T d = norm == 2.0 ? v : norm == 1.0 ? (T)1 : (T)pow((double)v, norm - 1.0);
    return (T)0 * d;
}
