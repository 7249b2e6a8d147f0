/* conv2d_nhwc_segments.h: where the channels-last passes read each output pixel's inputs. A
 * segment is a run of the weights whose inputs are contiguous for every output pixel: with
 * dilation 1 along W and one group, a whole kernel row (its kW taps' C channels are kW * C
 * consecutive elements of one input row); otherwise a single tap's C/groups channels. The forward
 * pass and the weight gradient read each (pixel, segment) run in place through one pointer: so a
 * 5 x 5 kernel on one channel is 5 runs of 5 values per pixel, not 25 runs of 1.
 *
 * A run that crosses the left or right padding is read from a zero-padded copy (segment_copy), a
 * run wholly in the padding from a row of zeros, so padding multiplies as in the definition.
 *
 * Loop structure (segment_row_runs): per output row and segment, the inside runs' pointers as one
 * strided sequence (the columns whose runs lie inside the row are found once per call,
 * nhwc_segments), then the few border columns one by one. */
#ifndef FC_CONV2D_NHWC_SEGMENTS_H
#define FC_CONV2D_NHWC_SEGMENTS_H

#include "fc_template.h"

typedef struct {
    fc_index count;   /* segments: kH, or kH * kW */
    fc_index taps;    /* taps per segment: kW, or 1 */
    fc_index len;     /* values per run: taps * C/groups */
    fc_index len_pad; /* len rounded up to MR (the weight gradient's rows) */
    /* per segment: its first tap's input row and column offsets (i * dH, j * dW), and the output
     * columns [lo, hi) whose run lies inside the input row; 4 * count values (heap) */
    fc_index *at;
} fc_nhwc_segments;

/* The geometry's segments for an MR-row microkernel; 0, or FC_ENOMEM (free with
 * fc_nhwc_segments_free). */
static inline int fc_nhwc_segments_of(const fc_conv2d_params *p, int mr, fc_nhwc_segments *s) {
    const int rows = p->dilation_w == 1 && p->groups == 1;
    s->count = rows ? p->kernel_h : p->kernel_h * p->kernel_w;
    s->taps = rows ? p->kernel_w : 1;
    s->len = s->taps * (p->in_channels / p->groups);
    s->len_pad = FC_CEIL_DIV(s->len, mr) * mr;
    s->at = (fc_index *)malloc(sizeof(fc_index) * (size_t)(4 * s->count));
    if (!s->at) return FC_ENOMEM;
    const fc_index last = (s->taps - 1) * p->dilation_w; /* the run's last tap, from its first */
    for (fc_index g = 0; g < s->count; g++) {
        fc_index *a = s->at + 4 * g;
        a[0] = (rows ? g : g / p->kernel_w) * p->dilation_h;
        a[1] = (rows ? 0 : g % p->kernel_w) * p->dilation_w;
        fc_inside_span(a[1] - p->pad_left, p->stride_w, p->out_w, p->in_w - last, &a[2], &a[3]);
    }
    return FC_OK;
}

static inline void fc_nhwc_segments_free(fc_nhwc_segments *s) {
    free(s->at);
    s->at = NULL;
}

/* slot[e] for e < len_pad: the run of segment `seg` from input row ih, column iw (the input at
 * x + base + (ih * W + iw) * C, row ih inside), zero where a tap lies in the padding and past
 * len. */
static void FC_LOCAL(segment_copy)(const fc_conv2d_params *p, const fc_nhwc_segments *sg,
                                   const T *x, fc_index base, fc_index ih, fc_index iw, T *slot) {
    const fc_index C = p->in_channels, Cg = C / p->groups, W = p->in_w, dw = p->dilation_w;
    for (fc_index j = 0; j < sg->taps; j++) {
        const fc_index col = iw + j * dw;
        T *d = slot + j * Cg;
        if (col >= 0 && col < W)
            memcpy(d, x + base + (ih * W + col) * C, sizeof(T) * (size_t)Cg);
        else
            memset(d, 0, sizeof(T) * (size_t)Cg);
    }
    memset(slot + sg->len, 0, sizeof(T) * (size_t)(sg->len_pad - sg->len));
}

/* a[k * step] for k < n = where segment `seg` reads its run for output pixels (oh, ow0 + k) of
 * one image and group (base: x's offset of the image's first pixel plus the group's first
 * channel): in x where the run and the `read` values from its start (read >= len: the weight
 * gradient's MR-row over-read) lie inside the input row and the array of `total` elements; at
 * `zero` where the run lies wholly in the padding; else at a zero-padded copy in stage (len_pad
 * values a slot, segment_copy, from slot first_slot on). Returns the slots used; with a NULL,
 * only counts them (stage unused). */
static fc_index FC_LOCAL(segment_row_runs)(const fc_conv2d_params *p, const fc_nhwc_segments *sg,
                                           fc_index seg, const T *x, fc_index total, fc_index base,
                                           fc_index oh, fc_index ow0, fc_index n, fc_index read,
                                           const T *zero, T *stage, fc_index first_slot,
                                           const T **a, fc_index step) {
    const fc_index C = p->in_channels, W = p->in_w, sw = p->stride_w;
    const fc_index *at = sg->at + 4 * seg;
    const fc_index ih = oh * p->stride_h - p->pad_top + at[0];
    const fc_index iw0 = ow0 * sw - p->pad_left + at[1];
    if ((fc_uindex)ih >= (fc_uindex)p->in_h) { /* a padding row */
        if (a)
            for (fc_index k = 0; k < n; k++) a[k * step] = zero;
        return 0;
    }
    /* [lo, hi): the runs inside the row; near the array's end, only those whose reads end in it */
    fc_index lo = FC_MIN(FC_MAX(at[2] - ow0, 0), n), hi = FC_MAX(lo, FC_MIN(at[3] - ow0, n));
    const fc_index row = base + ih * W * C;
    if (row + W * C + read > total && lo < hi) {
        const fc_index avail = total - read - row; /* the last element a run may start at */
        const fc_index room = avail < 0 ? -1 : avail / C;
        hi = FC_MAX(lo, FC_MIN(hi, room < iw0 ? 0 : (room - iw0) / sw + 1));
    }
    if (a)
        for (fc_index k = lo; k < hi; k++) a[k * step] = x + row + (iw0 + k * sw) * C;
    fc_index used = 0;
    for (fc_index k = 0; k < n; k++) {
        if (k == lo && lo < hi) k = hi;
        if (k >= n) break;
        const fc_index iw = iw0 + k * sw;
        if (sg->taps == 1 && (fc_uindex)iw >= (fc_uindex)W) { /* a single tap in the padding */
            if (a) a[k * step] = zero;
            continue;
        }
        if (a) {
            T *slot = stage + (first_slot + used) * sg->len_pad;
            FC_LOCAL(segment_copy)(p, sg, x, base, ih, iw, slot);
            a[k * step] = slot;
        }
        used++;
    }
    return used;
}

/* Room for `need` staged runs of `len` values in *stage (a thread's, growing as needed); 0 when
 * the allocation failed. */
static int FC_LOCAL(nhwc_stage_reserve)(T **stage, fc_index *slots, fc_index need, fc_index len) {
    if (need <= *slots && *stage) return 1;
    fc_aligned_free(*stage);
    *slots = FC_MAX(FC_MAX(need, 2 * *slots), 1);
    *stage = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(*slots * len));
    if (!*stage) *slots = 0;
    return *stage != NULL;
}

#endif /* FC_CONV2D_NHWC_SEGMENTS_H */
