/* conv2d_phases.h: the stride phases the forward and weight-gradient passes read col(X) from,
 * without building it: their geometry, where each kernel tap starts in them, and the split of a
 * channel into them.
 *
 * Loop structure (split_phases): over the sH x sW phases, over each phase's rows, one strided
 * gather of an input row (zeros for the padding) per phase row, its columns' span inside the
 * row settled once per phase. */
#ifndef FC_CONV2D_PHASES_H
#define FC_CONV2D_PHASES_H

#include "conv2d_pack.h"
#include "fc_template.h"

/* Each image's channels are copied once, zero padded, into stride x stride phases: phase (a, b)
 * holds padded rows a, a+sH, ... and columns b, b+sW, .... In its phase a kernel tap (i, j) reads
 * a plain contiguous row for consecutive output pixels, on a grid of `wph` >= OW columns per output
 * row, so col(X) never needs to be built: a KC x NR panel of it is a copy of NR-wide rows
 * (forward) or is read in place (weight gradient). The grid's extra columns are computed and
 * dropped (forward) or meet zeros in dY (weight gradient). */
typedef struct {
    fc_index hph, wph; /* rows and columns of one phase */
    fc_index phase;    /* elements in one phase */
    fc_index channel;  /* elements of one channel's phases */
    fc_index cols;     /* phases per row phase: sW, or kW for copies by kernel column */
    int by_tap;        /* one phase per kernel column (below) */
} FC_LOCAL(phases_t);

static FC_LOCAL(phases_t) FC_LOCAL(phase_geometry)(const fc_conv2d_params *p) {
    FC_LOCAL(phases_t) ph;
    /* the last tap of the last output row and column, plus one spare row: the grid's padding
     * columns of the last row run on into it */
    ph.hph = p->out_h + ((p->kernel_h - 1) * p->dilation_h) / p->stride_h + 1;
    ph.wph = p->out_w + ((p->kernel_w - 1) * p->dilation_w) / p->stride_w;
    ph.phase = ph.hph * ph.wph;
    ph.cols = p->stride_w;
    ph.channel = p->stride_h * ph.cols * ph.phase;
    ph.by_tap = 0;
    return ph;
}

/* Copies by kernel column: phase (a, j) holds padded rows a, a+sH, ... and, for each output
 * column ow, input column ow sW + j dW, so a tap reads its rows on a grid of exactly OW columns
 * and no grid pixel is dropped. That costs kW copies of the input per row phase instead of sW,
 * which pays on small outputs, where the stride phases' wph - OW extra columns are a large share
 * of the grid (a 5 x 5 kernel on 14 x 14 outputs: 4 of 18). The sums are the same, term by
 * term. */
static FC_LOCAL(phases_t) FC_LOCAL(tap_column_geometry)(const fc_conv2d_params *p) {
    FC_LOCAL(phases_t) ph = FC_LOCAL(phase_geometry)(p);
    ph.wph = p->out_w;
    ph.phase = ph.hph * ph.wph;
    ph.cols = p->kernel_w;
    ph.channel = p->stride_h * ph.cols * ph.phase;
    ph.by_tap = 1;
    return ph;
}

/* Where tap (i, j) of a channel starts in its phases. */
static inline fc_index FC_LOCAL(tap_offset)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                            fc_index i, fc_index j) {
    const fc_index di = i * p->dilation_h, dj = j * p->dilation_w;
    const fc_index a = di % p->stride_h, row = (di / p->stride_h) * ph->wph;
    if (ph->by_tap) return (a * ph->cols + j) * ph->phase + row;
    return (a * ph->cols + dj % p->stride_w) * ph->phase + row + dj / p->stride_w;
}

/* Split channel xc (in_h x in_w) into its zero-padded phases (or copies by kernel column) at
 * dst. */
static void FC_LOCAL(split_phases)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                   const T *xc, T *dst) {
    for (fc_index a = 0; a < p->stride_h; a++)
        for (fc_index b = 0; b < ph->cols; b++) {
            T *out = dst + (a * ph->cols + b) * ph->phase;
            const fc_index iw0 = (ph->by_tap ? b * p->dilation_w : b) - p->pad_left;
            fc_index lo, hi; /* the phase's columns inside a row, the same for every row */
            fc_inside_span(iw0, p->stride_w, ph->wph, p->in_w, &lo, &hi);
            for (fc_index r = 0; r < ph->hph; r++) {
                const fc_index ih = r * p->stride_h + a - p->pad_top;
                T *d = out + r * ph->wph;
                if ((fc_uindex)ih < (fc_uindex)p->in_h)
                    FC_LOCAL(gather_span)(xc + ih * p->in_w, iw0, p->stride_w, ph->wph, lo, hi, d,
                                          1);
                else /* a padding row */
                    FC_LOCAL(gather_span)(NULL, iw0, p->stride_w, ph->wph, ph->wph, ph->wph, d, 1);
            }
        }
}

/* split_phases_inside for stride 1 where a phase row is as long as an input row (wph = in_w:
 * 'same' padding on copies by kernel column, or none on the phases): a phase's inside rows are
 * then the input's rows shifted by iw0 columns, one run of memory, copied as one; the columns
 * that run brought from the next input row (past hi) and the previous one (before lo) are
 * zeroed again, one short run per row boundary. Row by row, every row of a small image was a
 * masked copy of its own, and those were a share of convnet-5x5's passes. The same values land
 * in the same places. */
static void FC_LOCAL(split_rows_flat)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                      const T *xc, T *dst) {
    const fc_index W = p->in_w;
    fc_index r0, r1; /* the rows inside the input */
    fc_inside_span(-p->pad_top, 1, ph->hph, p->in_h, &r0, &r1);
    if (r0 >= r1) return;
    const T *src = xc + (r0 - p->pad_top) * W; /* input row r0 - pad_top */
    for (fc_index b = 0; b < ph->cols; b++) {
        T *out = dst + b * ph->phase + r0 * W;
        const fc_index iw0 = (ph->by_tap ? b * p->dilation_w : b) - p->pad_left;
        fc_index lo, hi; /* the columns inside a row */
        fc_inside_span(iw0, 1, W, W, &lo, &hi);
        if (lo >= hi) continue; /* all padding, as the first split left it */
        /* out[t] = src[t + iw0] from row r0's column lo to row r1 - 1's column hi */
        FC_LOCAL(gather_inside)(src, iw0, 1, lo, (r1 - r0 - 1) * W + hi, out);
        for (fc_index r = 0; r + 1 < r1 - r0; r++)
            FC_LOCAL(zero_run)(out + r * W + hi, W - hi + lo);
    }
}

/* split_phases' writes from inside the input alone: where the phases hold padding (rows and
 * columns outside the input) depends on the geometry only, so a buffer zeroed once keeps those
 * zeros for every channel and image split into it. On small images of wide kernels (a 5 x 5
 * kernel's copies by kernel column on 14 x 14) the padding is a large share of the copies, which
 * setting it again for every row would pay each time. */
static void FC_LOCAL(split_phases_inside)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                          const T *xc, T *dst) {
    if (p->stride_h == 1 && p->stride_w == 1 && ph->wph == p->in_w) {
        FC_LOCAL(split_rows_flat)(p, ph, xc, dst);
        return;
    }
    for (fc_index a = 0; a < p->stride_h; a++) {
        fc_index r0, r1; /* the phase's rows inside the input */
        fc_inside_span(a - p->pad_top, p->stride_h, ph->hph, p->in_h, &r0, &r1);
        for (fc_index b = 0; b < ph->cols; b++) {
            T *out = dst + (a * ph->cols + b) * ph->phase;
            const fc_index iw0 = (ph->by_tap ? b * p->dilation_w : b) - p->pad_left;
            fc_index lo, hi; /* the phase's columns inside a row */
            fc_inside_span(iw0, p->stride_w, ph->wph, p->in_w, &lo, &hi);
            for (fc_index r = r0; r < r1; r++)
                FC_LOCAL(gather_inside)(xc + (r * p->stride_h + a - p->pad_top) * p->in_w, iw0,
                                        p->stride_w, lo, hi, out + r * ph->wph);
        }
    }
}

/* Where each of the R = Cg kH kW rows of col(X) starts in a thread's phases at xph: tap t of
 * channel c at rows[c kk + t], a channel's phases after the one before. The taps' offsets are
 * computed once, not with four divisions per row: at batch 1 that was a share of the pass. */
static void FC_LOCAL(tap_rows)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph, fc_index Cg,
                               const T *xph, const T **rows) {
    const fc_index kk = p->kernel_h * p->kernel_w;
    for (fc_index t = 0; t < kk; t++)
        rows[t] = xph + FC_LOCAL(tap_offset)(p, ph, t / p->kernel_w, t % p->kernel_w);
    for (fc_index r = kk; r < Cg * kk; r++) rows[r] = rows[r - kk] + ph->channel;
}

/* Cg channels of an image (HW elements apart) into a thread's phases at dst: the first image in
 * full (split_phases writes every element, padding included), each later one from inside the
 * input alone (split_phases_inside), the padding being where the first left it. So only the
 * buffer's slack past the phases needs zeroing, not the whole buffer: a thread's one image at
 * batch 1 is written once, not zeroed and then written. */
static void FC_LOCAL(split_image)(const fc_conv2d_params *p, const FC_LOCAL(phases_t) *ph,
                                  const T *xg, fc_index Cg, int first, T *dst) {
    const fc_index HW = p->in_h * p->in_w;
    for (fc_index c = 0; c < Cg; c++)
        if (first)
            FC_LOCAL(split_phases)(p, ph, xg + c * HW, dst + c * ph->channel);
        else
            FC_LOCAL(split_phases_inside)(p, ph, xg + c * HW, dst + c * ph->channel);
}

#endif /* FC_CONV2D_PHASES_H */
