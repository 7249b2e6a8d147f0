/* pool2d_impl.h: max, average and L^p pooling, forward and backward, for one dtype. A kernel
 * file (pool2d_scalar.c, pool2d_avx2.c, pool2d_avx512.c) includes its fc_isa_<isa>.h and
 * instantiates this template once per dtype (fc_each_dtype.h); the code is plain C that the
 * compiler vectorises for the file's instruction set.
 *
 * Pooling is bandwidth-bound, so each output row is computed in two vectorisable passes over
 * whole rows instead of window by window: first along every input row of the window (a fold over
 * the kW taps, the tap loop outside and the output-column loop inside, so the compiler vectorises
 * over columns), then down the kH rows. Columns whose window is clipped by the border take a
 * separate scalar path, so the inner loops carry no bounds checks.
 *
 * Forward passes are parallel over (plane, output row): each output element has one writer.
 * Backward passes scatter into overlapping windows, so they are parallel over planes: a task
 * zeroes its plane's gradient (L1-sized for typical layers) and owns it.
 *
 * Semantics are PyTorch's CPU kernels': max pooling scans a window in row-major order keeping
 * the first maximum, and a NaN replaces anything (so the last NaN wins). Folding each row first
 * and then the row results with the same rule gives exactly that scan's answer. A window wholly
 * in the padding gives -inf with index -1 (PyTorch reads out of bounds there). */
#include "pool2d_common.h"

/* Output columns [lo, hi) whose whole window lies inside the row: no clipping there. */
static inline void FC_LOCAL(interior_columns)(const fc_pool2d_params *p, fc_index *lo,
                                              fc_index *hi) {
    const fc_index extent = (p->kernel_w - 1) * p->dilation_w; /* last tap's offset */
    fc_index a = FC_CEIL_DIV(p->pad_left, p->stride_w);
    fc_index b = p->in_w - 1 - extent + p->pad_left < 0
                     ? 0
                     : (p->in_w - 1 - extent + p->pad_left) / p->stride_w + 1;
    a = FC_MIN(a, p->out_w);
    b = FC_MIN(b, p->out_w);
    *lo = a;
    *hi = FC_MAX(a, b);
}

/* Prefetch (fc_prefetch_ahead) for output row oh of a plane: the stride_h input rows it moves
 * the window on by, ahead of the reads, stopping at the input's end. */
static inline void FC_LOCAL(prefetch_rows)(const fc_pool2d_params *p, const T *plane, fc_index oh,
                                           const T *end) {
    const fc_index step = p->stride_h * p->in_w;
    fc_prefetch_ahead(plane + oh * step, sizeof(T) * (size_t)step, end);
}

/* ---- max pooling ----------------------------------------------------------------------------- */

/* Per-thread rows run FC_POOL_LANES outputs past a multiple of FC_POOL_LANES beyond OW, so the
 * vector loops over a row's interior need no scalar remainder: at OW = 28 the remainder was 12 of
 * the 28 outputs. The extra lanes read on past the row's last window, into the next row, so
 * interior_count grants them only while those reads stay inside the input. */
#define FC_POOL_LANES 16
#define FC_POOL_ROW(ow) (FC_CEIL_DIV((ow), FC_POOL_LANES) * FC_POOL_LANES + FC_POOL_LANES)
/* How many interior outputs from column lo to compute for an input row with `avail` elements from
 * its start to the end of the input: hi - lo rounded up to whole lanes when the reads allow. */
static inline fc_index FC_LOCAL(interior_count)(const fc_pool2d_params *p, fc_index lo, fc_index hi,
                                                fc_index avail) {
    const fc_index n = hi - lo;
    if (n <= 0) return 0;
    const fc_index padded = FC_CEIL_DIV(n, FC_POOL_LANES) * FC_POOL_LANES;
    const fc_index last = lo * p->stride_w - p->pad_left + (padded - 1) * p->stride_w +
                          (p->kernel_w - 1) * p->dilation_w;
    return last < avail ? padded : n;
}

/* 3-wide, stride-2 windows (the ResNet stem pool) in blocks of FC_POOL_LANES outputs: the block's
 * 2*LANES+1 inputs split into evens e (taps 0), odds o (taps 1) and e shifted by one (taps 2) in
 * registers. Written in plain C, gcc builds the shifted evens element by element and the fold's
 * vector load then waits on those stores (a store-forwarding stall, on every block); GNU vector
 * extensions give the same code on every ISA of a file with whole-register shuffles.
 * `count` is a multiple of FC_POOL_LANES. */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FC_HAVE_SHUFFLEVECTOR 1
#if FC_POOL_LANES != 16
#error "the shuffle patterns below are written out for 16 lanes"
#endif
typedef T FC_LOCAL(vec) __attribute__((vector_size(FC_POOL_LANES * sizeof(T))));
typedef __typeof__((FC_LOCAL(vec)){0} > (FC_LOCAL(vec)){0}) FC_LOCAL(mask); /* -1 / 0 lanes */
typedef int32_t FC_LOCAL(tvec) __attribute__((vector_size(FC_POOL_LANES * sizeof(int32_t))));

/* v where take, else m (a macro: a function returning a 64-byte vector from the AVX2 and
 * scalar files draws gcc's ABI warning, though it would be inlined) */
#define FC_SELECT(take, v, m)                                                                      \
    ((FC_LOCAL(vec))(((take) & (FC_LOCAL(mask))(v)) | (~(take) & (FC_LOCAL(mask))(m))))

/* w[0 .. 2 LANES) split into its evens and odds: taps 0 and 1 of LANES stride-2 windows */
static inline void FC_LOCAL(split_even_odd)(const T *w, FC_LOCAL(vec) *even, FC_LOCAL(vec) *odd) {
    FC_LOCAL(vec) lo, hi;
    memcpy(&lo, w, sizeof lo);
    memcpy(&hi, w + FC_POOL_LANES, sizeof hi);
    *even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                    30);
    *odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                   31);
}

/* One block: the maxima of the windows at w[2l], w[2l+1], w[2l+2], l < LANES, and the takes
 * of taps 1 and 2 (for the tap index). pad_first: w[0] lies in the left padding, and reads as
 * -inf, which gives the scan's own answer there (an input -inf beats nothing, and a -inf result
 * has one bit pattern). */
static inline void FC_LOCAL(max_block_k3s2)(const T *w, int pad_first, FC_LOCAL(vec) *max,
                                            FC_LOCAL(mask) *take1, FC_LOCAL(mask) *take2) {
    typedef FC_LOCAL(vec) vec;
    vec e, o;
    FC_LOCAL(split_even_odd)(w, &e, &o);
    if (pad_first) e[0] = -(T)INFINITY;
    vec next = {0}; /* lane 0: the last window's third tap (set, not added to 0: 0 + -0 = +0) */
    next[0] = w[2 * FC_POOL_LANES];
    const vec e1 = __builtin_shufflevector(e, next, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                           15, 16);
    *take1 = (o > e) | (o != o);
    const vec m = FC_SELECT(*take1, o, e);
    *take2 = (e1 > m) | (e1 != e1);
    *max = FC_SELECT(*take2, e1, m);
}

static void FC_LOCAL(max_fold_k3s2)(const T *restrict base, fc_index count, T *restrict val,
                                    int32_t *restrict tap) {
    for (fc_index cb = 0; cb < count; cb += FC_POOL_LANES) {
        FC_LOCAL(mask) take1, take2;
        FC_LOCAL(vec) m;
        FC_LOCAL(max_block_k3s2)(base + 2 * cb, 0, &m, &take1, &take2);
        memcpy(val + cb, &m, sizeof m);
        if (tap) {
            const FC_LOCAL(tvec) t1 = __builtin_convertvector(take1, FC_LOCAL(tvec));
            const FC_LOCAL(tvec) t2 = __builtin_convertvector(take2, FC_LOCAL(tvec));
            const FC_LOCAL(tvec) b = (t2 & 2) | (~t2 & (t1 & 1));
            memcpy(tap + cb, &b, sizeof b);
        }
    }
}

/* Values only, a whole window row at once: out[c] for c < count (a multiple of the lanes) is
 * the maximum over rows[0..nrows) (window bases, in row order) of each row's 3-wide stride-2
 * window maximum, combined in row order as max_fold_row and the caller's combination would:
 * the same answer, with no folded rows stored and reloaded in between. */
static void FC_LOCAL(max_rows_k3s2)(const T *const *rows, int nrows, fc_index count, int pad_first,
                                    T *restrict out) {
    for (fc_index cb = 0; cb < count; cb += FC_POOL_LANES) {
        FC_LOCAL(mask) t1, t2;
        const int pad = pad_first && cb == 0;
        FC_LOCAL(vec) m, v;
        FC_LOCAL(max_block_k3s2)(rows[0] + 2 * cb, pad, &m, &t1, &t2);
        for (int r = 1; r < nrows; r++) {
            FC_LOCAL(max_block_k3s2)(rows[r] + 2 * cb, pad, &v, &t1, &t2);
            m = FC_SELECT((v > m) | (v != v), v, m);
        }
        memcpy(out + cb, &m, sizeof m);
    }
}
/* 2x2 stride 2 windows (no padding) with their argmax, a whole window row at once: for c <
 * count (a multiple of the lanes), out[c] and index[c] (flat h * W + w in the plane) over
 * rows[0..nrows) (the window's input rows, first row h0), combined in row order with the same
 * takes as the row-by-row path, so the same element wins. */
static void FC_LOCAL(max_rows_k2s2_index)(const T *const *rows, int nrows, fc_index count,
                                          fc_index h0, fc_index W, fc_index c0, T *restrict out,
                                          int64_t *restrict index) {
    typedef FC_LOCAL(vec) vec;
    typedef FC_LOCAL(mask) mask;
    typedef FC_LOCAL(tvec) tvec;
    typedef int64_t ivec __attribute__((vector_size(FC_POOL_LANES * sizeof(int64_t))));
    const tvec lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (fc_index cb = 0; cb < count; cb += FC_POOL_LANES) {
        vec m = {0};
        tvec at = {0}; /* the winner's flat index in the plane */
        for (int r = 0; r < nrows; r++) {
            vec e, o;
            FC_LOCAL(split_even_odd)(rows[r] + 2 * cb, &e, &o);
            const mask take = (o > e) | (o != o);
            const vec v = FC_SELECT(take, o, e);
            const tvec t = __builtin_convertvector(take, tvec) & 1;
            const tvec here = (int32_t)((h0 + r) * W + 2 * (c0 + cb)) + 2 * lane + t;
            if (r == 0) {
                m = v;
                at = here;
                continue;
            }
            const mask row_take = (v > m) | (v != v);
            const tvec rt = __builtin_convertvector(row_take, tvec);
            m = FC_SELECT(row_take, v, m);
            at = (rt & here) | (~rt & at);
        }
        memcpy(out + cb, &m, sizeof m);
        const ivec wide = __builtin_convertvector(at, ivec);
        memcpy(index + cb, &wide, sizeof wide);
    }
}
#undef FC_SELECT
#endif

/* Fold one input row along the window: val[ow] = the row's maximum for output column ow, tap[ow]
 * its tap index j (-1 when no tap of that column lies inside the row); tap NULL: values only.
 * Interior columns first, `count` of them from lo (possibly past hi, see FC_POOL_LANES), then the
 * clipped border columns, which the interior's extra lanes may have overwritten. */
static void FC_LOCAL(max_fold_row)(const fc_pool2d_params *p, const T *restrict row, fc_index lo,
                                   fc_index hi, fc_index count, T *restrict val,
                                   int32_t *restrict tap) {
    const fc_index s = p->stride_w, d = p->dilation_w, pad = p->pad_left, k = p->kernel_w;
    const fc_index OW = p->out_w, W = p->in_w;
    const T *base = row + (lo * s - pad); /* the first interior column's window */
    T *v = val + lo;
    int32_t *tp = tap ? tap + lo : NULL;
    /* Common stride-2 windows with constant taps: one pass, loads de-interleaved in registers. */
#define FC_MAX_PASS(S, K)                                                                          \
    if (tp) {                                                                                      \
        for (fc_index c = 0; c < count; c++) {                                                     \
            const T *w = base + c * (S);                                                           \
            T m = w[0];                                                                            \
            int32_t b = 0;                                                                         \
            for (int j = 1; j < (K); j++) {                                                        \
                const int take = FC_MAX_TAKES(w[j], m);                                            \
                m = take ? w[j] : m;                                                               \
                b = take ? j : b;                                                                  \
            }                                                                                      \
            v[c] = m;                                                                              \
            tp[c] = b;                                                                             \
        }                                                                                          \
    } else {                                                                                       \
        for (fc_index c = 0; c < count; c++) {                                                     \
            const T *w = base + c * (S);                                                           \
            T m = w[0];                                                                            \
            for (int j = 1; j < (K); j++) m = FC_MAX_TAKES(w[j], m) ? w[j] : m;                    \
            v[c] = m;                                                                              \
        }                                                                                          \
    }
    if (count <= 0) {
    } else if (d == 1 && s == 2 && k == 2) {
        FC_MAX_PASS(2, 2)
#ifdef FC_HAVE_SHUFFLEVECTOR
    } else if (d == 1 && s == 2 && k == 3 && count % FC_POOL_LANES == 0) {
        FC_LOCAL(max_fold_k3s2)(base, count, v, tp);
#endif
    } else if (d == 1 && s == 2 && k == 3) {
        FC_MAX_PASS(2, 3)
    } else {
        for (fc_index c = 0; c < count; c++) v[c] = base[c * s];
        if (tp)
            for (fc_index c = 0; c < count; c++) tp[c] = 0;
        for (fc_index j = 1; j < k; j++) {
            const T *src = base + j * d;
            if (tp) {
                for (fc_index c = 0; c < count; c++) {
                    const int take = FC_MAX_TAKES(src[c * s], v[c]);
                    v[c] = take ? src[c * s] : v[c];
                    tp[c] = take ? (int32_t)j : tp[c];
                }
            } else {
                for (fc_index c = 0; c < count; c++)
                    v[c] = FC_MAX_TAKES(src[c * s], v[c]) ? src[c * s] : v[c];
            }
        }
    }
#undef FC_MAX_PASS
    for (fc_index ow = 0; ow < OW; ow++) {
        /* interior: done above */
        if (ow == lo && lo < hi) {
            ow = hi - 1;
            continue;
        }
        fc_index j0, j1;
        const fc_index w0 = ow * s - pad;
        fc_inside_span(w0, d, k, W, &j0, &j1);
        T m = -(T)INFINITY;
        int32_t best = -1;
        for (fc_index j = j0; j < j1; j++) {
            const T x = row[w0 + j * d];
            if (j == j0 || FC_MAX_TAKES(x, m)) {
                m = x;
                best = (int32_t)j;
            }
        }
        val[ow] = m;
        if (tap) tap[ow] = best;
    }
}

/* acc[ow] (and index[ow], flat h * W + w in the plane or -1 for no input, when index is not
 * NULL) for the clipped border columns (ow < lo or ow >= hi) of the window rows i0..i1 from
 * h0, scanned row by row in PyTorch's order. */
static void FC_LOCAL(max_border_columns)(const fc_pool2d_params *p, const T *plane, fc_index h0,
                                         fc_index i0, fc_index i1, fc_index lo, fc_index hi,
                                         T *restrict acc, int64_t *restrict index) {
    const fc_index s = p->stride_w, d = p->dilation_w, W = p->in_w;
    for (fc_index ow = 0; ow < p->out_w; ow++) {
        /* interior: not here */
        if (ow == lo && lo < hi) {
            ow = hi - 1;
            continue;
        }
        fc_index j0, j1;
        const fc_index w0 = ow * s - p->pad_left;
        fc_inside_span(w0, d, p->kernel_w, W, &j0, &j1);
        T m = -(T)INFINITY;
        int64_t at = -1;
        for (fc_index i = i0; i < i1; i++) {
            const fc_index ih = h0 + i * p->dilation_h;
            const T *row = plane + ih * W;
            for (fc_index j = j0; j < j1; j++) {
                const T v = row[w0 + j * d];
                if (at < 0 || FC_MAX_TAKES(v, m)) {
                    m = v;
                    at = ih * W + w0 + j * d;
                }
            }
        }
        acc[ow] = m;
        if (index) index[ow] = at;
    }
}

int FC_FN(maxpool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int64_t *indices,
                         int nthreads) {
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index ntasks = p->planes * OH, total = p->planes * H * W, row_len = FC_POOL_ROW(OW);
    fc_index lo, hi;
    FC_LOCAL(interior_columns)(p, &lo, &hi);
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, ntasks);
    /* Whole window rows in registers: values only, 3-wide stride-2 windows of at most 3 rows
     * (max_rows_k3s2); with indices, 2x2 stride 2 without padding, whose flat plane indices fit
     * an int32 lane (max_rows_k2s2_index) */
    const int fused = indices ? p->kernel_w == 2 && p->stride_w == 2 && p->dilation_w == 1 &&
                                    p->pad_left == 0 && p->kernel_h <= 2 && p->dilation_h == 1 &&
                                    H * W < ((fc_index)1 << 31)
                              : p->kernel_w == 3 && p->stride_w == 2 && p->dilation_w == 1 &&
                                    p->kernel_h <= 3;
    (void)fused;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        /* per thread: the running best, one folded row and the window's last folded row, values
         * and taps, and the best's row. The last row is kept because the next output row's window
         * often starts on it (3x3 stride 2: rows 2oh-1..2oh+1, then 2oh+1..2oh+3), so a third of
         * the folds are skipped. */
        T *acc = (T *)calloc((size_t)row_len * 3, sizeof(T));
        int32_t *taps = (int32_t *)calloc((size_t)row_len * 4, sizeof(int32_t));
        int64_t *flat = (int64_t *)calloc((size_t)row_len, sizeof(int64_t)); /* fused indices */
        T *val = acc + row_len, *kept_val = acc + 2 * row_len;
        int32_t *best_tap = taps, *tap = taps + row_len, *best_row = taps + 2 * row_len;
        int32_t *kept_tap = taps + 3 * row_len;
        fc_index kept = -1; /* plane * H + input row of the kept fold, -1 for none */
        if (!acc || !taps || !flat) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        /* this thread's share of the (plane, output row) tasks, walked in order */
        fc_index t0, t1;
        fc_static_share(ntasks, &t0, &t1);
        fc_index plane = t0 / OH, oh = t0 % OH;
        for (fc_index t = t0; t < t1 && acc && taps && flat; t++, oh++) {
            if (oh == OH) {
                oh = 0;
                plane++;
            }
            const T *src = x + plane * H * W;
            T *out = y + plane * OH * OW + oh * OW;
            int64_t *idx = indices ? indices + plane * OH * OW + oh * OW : NULL;
            FC_LOCAL(prefetch_rows)(p, src, oh, x + total);
            fc_index i0, i1;
            const fc_index h0 = oh * p->stride_h - p->pad_top;
            fc_inside_span(h0, p->dilation_h, p->kernel_h, H, &i0, &i1);
            if (i0 >= i1) { /* the whole row of windows lies in the padding */
                for (fc_index ow = 0; ow < OW; ow++) out[ow] = -(T)INFINITY;
                if (idx)
                    for (fc_index ow = 0; ow < OW; ow++) idx[ow] = -1;
                continue;
            }
#ifdef FC_HAVE_SHUFFLEVECTOR
            if (fused) {
                /* Values only, padding 1: column 0 joins the interior, its padding tap read as
                 * -inf (from the element before the row, so not on the input's first row; and
                 * only when its last tap, column 1, exists). The rows' window bases; the last
                 * row has the least input after it, so its interior count is the one every row
                 * can run. */
                const int pad_first = !idx && lo == 1 && p->pad_left == 1 && W >= 2 &&
                                      plane * H + h0 + i0 > 0;
                const fc_index start = pad_first ? 0 : lo;
                const T *rows[3];
                int nrows = 0;
                fc_index count = 0;
                for (fc_index i = i0; i < i1; i++) {
                    const fc_index r = h0 + i * p->dilation_h;
                    rows[nrows++] = src + r * W + (start * p->stride_w - p->pad_left);
                    count = FC_LOCAL(interior_count)(p, start, hi, total - (plane * H * W + r * W));
                }
                if (count % FC_POOL_LANES == 0) {
                    if (idx)
                        FC_LOCAL(max_rows_k2s2_index)(rows, nrows, count, h0 + i0, W, start,
                                                      acc + start, flat + start);
                    else
                        FC_LOCAL(max_rows_k3s2)(rows, nrows, count, pad_first, acc + start);
                    FC_LOCAL(max_border_columns)(p, src, h0, i0, i1, start, hi, acc,
                                                 idx ? flat : NULL);
                    memcpy(out, acc, sizeof(T) * (size_t)OW);
                    if (idx) memcpy(idx, flat, sizeof(int64_t) * (size_t)OW);
                    continue;
                }
            }
#endif
            for (fc_index i = i0; i < i1; i++) {
                const fc_index r = h0 + i * p->dilation_h;
                const T *row = src + r * W;
                const fc_index count = FC_LOCAL(interior_count)(p, lo, hi,
                                                                total - (plane * H * W + r * W));
                T *fv = val;
                int32_t *ft = tap;
                if (plane * H + r == kept) {
                    fv = kept_val;
                    ft = kept_tap;
                } else if (i == i1 - 1) {
                    fv = kept_val;
                    ft = kept_tap;
                    FC_LOCAL(max_fold_row)(p, row, lo, hi, count, fv, idx ? ft : NULL);
                    kept = plane * H + r;
                } else if (i == i0) { /* straight into the running best */
                    fv = acc;
                    ft = best_tap;
                    FC_LOCAL(max_fold_row)(p, row, lo, hi, count, fv, idx ? ft : NULL);
                } else {
                    FC_LOCAL(max_fold_row)(p, row, lo, hi, count, fv, idx ? ft : NULL);
                }
                if (i == i0) {
                    if (fv != acc) memcpy(acc, fv, sizeof(T) * (size_t)row_len);
                    if (idx) {
                        if (ft != best_tap) memcpy(best_tap, ft, sizeof(int32_t) * (size_t)row_len);
                        for (fc_index ow = 0; ow < row_len; ow++) best_row[ow] = (int32_t)i;
                    }
                    continue;
                }
                if (!idx) {
                    for (fc_index ow = 0; ow < row_len; ow++)
                        acc[ow] = FC_MAX_TAKES(fv[ow], acc[ow]) ? fv[ow] : acc[ow];
                    continue;
                }
                for (fc_index ow = 0; ow < row_len; ow++) {
                    const int take = FC_MAX_TAKES(fv[ow], acc[ow]);
                    acc[ow] = take ? fv[ow] : acc[ow];
                    best_tap[ow] = take ? ft[ow] : best_tap[ow];
                    best_row[ow] = take ? (int32_t)i : best_row[ow];
                }
            }
            memcpy(out, acc, sizeof(T) * (size_t)OW);
            if (idx) {
                for (fc_index ow = 0; ow < OW; ow++) {
                    const fc_index ih = h0 + best_row[ow] * p->dilation_h;
                    const fc_index iw = ow * p->stride_w - p->pad_left +
                                        best_tap[ow] * p->dilation_w;
                    idx[ow] = best_tap[ow] < 0 ? -1 : ih * W + iw;
                }
            }
        }
        free(acc);
        free(taps);
        free(flat);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

int FC_FN(maxpool2d_bwd)(const fc_pool2d_params *p, const T *gy, const int64_t *indices, T *gx,
                         int nthreads) {
    const fc_index HW = p->in_h * p->in_w, OHW = p->out_h * p->out_w;
    const int nt = fc_threads_for(nthreads, (double)p->planes * (HW + OHW), FC_POOL_MIN_WORK,
                                  p->planes);
    int bad = 0;
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt) reduction(|:bad))
    for (fc_index plane = 0; plane < p->planes; plane++) {
        T *dst = gx + plane * HW;
        const T *g = gy + plane * OHW;
        const int64_t *idx = indices + plane * OHW;
        memset(dst, 0, sizeof(T) * (size_t)HW);
        for (fc_index o = 0; o < OHW; o++) {
            /* one unsigned compare: -1 (no input) maps to 0, anything outside to > HW */
            const fc_uindex slot = (fc_uindex)idx[o] + 1;
            if (slot > (fc_uindex)HW) {
                bad = 1;
                continue;
            }
            if (slot) dst[slot - 1] += g[o];
        }
    }
    return bad ? FC_EINDEX : FC_OK;
}

/* ---- average and L^p pooling ----------------------------------------------------------------- */

/* Sum one input row along the window, of f(x) where f is x (norm 0: average pooling), x*x
 * (norm 2) or x^norm: sum[ow] over the taps inside the row. As max_fold_row: `count` interior
 * columns from lo (whole lanes where the reads allow), then the clipped borders. */
static void FC_LOCAL(sum_fold_row)(const fc_pool2d_params *p, const T *restrict row, fc_index lo,
                                   fc_index hi, fc_index count, double norm, T *restrict sum) {
    const fc_index s = p->stride_w, pad = p->pad_left, k = p->kernel_w;
    const fc_index OW = p->out_w, W = p->in_w;
#define FC_F(v) (norm == 0.0 ? (v) : norm == 2.0 ? (v) * (v) : (T)pow((double)(v), norm))
    const T *base = row + (lo * s - pad); /* the first interior column's window */
    T *out = sum + lo;
#define FC_SUM_PASS(S, K, F)                                                                       \
    for (fc_index c = 0; c < count; c++) {                                                         \
        const T *w = base + c * (S);                                                               \
        T acc = F(w[0]);                                                                           \
        for (int j = 1; j < (K); j++) acc += F(w[j]);                                              \
        out[c] = acc;                                                                              \
    }
#define FC_ID(v) (v)
#define FC_SQ(v) ((v) * (v))
    if (count <= 0) {
    } else if (s == 2 && k == 2 && norm == 0.0) {
        FC_SUM_PASS(2, 2, FC_ID)
    } else if (s == 2 && k == 3 && norm == 0.0) {
        FC_SUM_PASS(2, 3, FC_ID)
    } else if (s == 2 && k == 2 && norm == 2.0) {
        FC_SUM_PASS(2, 2, FC_SQ)
    } else if (s == 2 && k == 3 && norm == 2.0) {
        FC_SUM_PASS(2, 3, FC_SQ)
    } else if (norm == 0.0) {
        for (fc_index c = 0; c < count; c++) out[c] = base[c * s];
        for (fc_index j = 1; j < k; j++)
            for (fc_index c = 0; c < count; c++) out[c] += base[c * s + j];
    } else if (norm == 2.0) {
        for (fc_index c = 0; c < count; c++) out[c] = base[c * s] * base[c * s];
        for (fc_index j = 1; j < k; j++)
            for (fc_index c = 0; c < count; c++) out[c] += base[c * s + j] * base[c * s + j];
    } else {
        for (fc_index c = 0; c < count; c++) {
            T acc = 0;
            for (fc_index j = 0; j < k; j++) acc += FC_F(base[c * s + j]);
            out[c] = acc;
        }
    }
#undef FC_SUM_PASS
#undef FC_ID
#undef FC_SQ
    for (fc_index ow = 0; ow < OW; ow++) {
        /* interior: done above */
        if (ow == lo && lo < hi) {
            ow = hi - 1;
            continue;
        }
        fc_index j0, j1;
        const fc_index w0 = ow * s - pad;
        fc_inside_span(w0, 1, k, W, &j0, &j1);
        T acc = 0;
        for (fc_index j = j0; j < j1; j++) acc += FC_F(row[w0 + j]);
        sum[ow] = acc;
    }
#undef FC_F
}

/* Per output column: the window length counted with padding and inside the input, computed once
 * per call so the per-output division needs no branches. */
static void FC_LOCAL(avg_columns)(const fc_pool2d_params *p, fc_index *padded, fc_index *inside) {
    for (fc_index ow = 0; ow < p->out_w; ow++)
        FC_LOCAL(avg_extent)(ow, p->stride_w, p->pad_left, p->pad_right, p->kernel_w, p->in_w,
                             &padded[ow], &inside[ow]);
}

/* divisor[ow] for output row oh, 0 for an empty window (output 0, no gradient). Rows share
 * their divisors unless clipped differently, so `last` (the row extents divisor was made for;
 * start with {-1, -1}) skips the work for a row like the one before. */
static void FC_LOCAL(avg_divisors)(const fc_pool2d_params *p, fc_index oh,
                                   const fc_index *restrict col_padded,
                                   const fc_index *restrict col_inside, fc_index last[2],
                                   T *restrict divisor) {
    const fc_index OW = p->out_w, override = p->divisor_override;
    const int include = p->count_include_pad;
    fc_index row_padded, row_inside;
    FC_LOCAL(avg_extent)(oh, p->stride_h, p->pad_top, p->pad_bottom, p->kernel_h, p->in_h,
                         &row_padded, &row_inside);
    if (row_padded == last[0] && row_inside == last[1]) return;
    last[0] = row_padded;
    last[1] = row_inside;
    for (fc_index ow = 0; ow < OW; ow++) {
        const fc_index d = override  ? override
                           : include ? row_padded * col_padded[ow]
                                     : row_inside * col_inside[ow];
        divisor[ow] = (row_inside > 0 && col_inside[ow] > 0) ? (T)d : (T)0;
    }
}

/* Sum of f(x) over each window of output row oh into acc, FC_POOL_ROW(OW) long (lanes past OW
 * hold junk); row_sum is scratch of that length. `avail`: elements from the plane's start to the
 * end of the input. */
static void FC_LOCAL(window_sums)(const fc_pool2d_params *p, const T *plane, fc_index oh,
                                  fc_index lo, fc_index hi, double norm, fc_index avail,
                                  T *restrict row_sum, T *restrict acc) {
    const fc_index W = p->in_w, row_len = FC_POOL_ROW(p->out_w);
    fc_index i0, i1;
    const fc_index h0 = oh * p->stride_h - p->pad_top;
    fc_inside_span(h0, 1, p->kernel_h, p->in_h, &i0, &i1);
    for (fc_index i = i0; i < i1; i++) {
        const fc_index r = h0 + i;
        const fc_index count = FC_LOCAL(interior_count)(p, lo, hi, avail - r * W);
        FC_LOCAL(sum_fold_row)(p, plane + r * W, lo, hi, count, norm, i == i0 ? acc : row_sum);
        if (i > i0)
            for (fc_index ow = 0; ow < row_len; ow++) acc[ow] += row_sum[ow];
    }
    if (i0 >= i1)
        for (fc_index ow = 0; ow < row_len; ow++) acc[ow] = 0;
}

int FC_FN(avgpool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    const fc_index HW = p->in_h * p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index ntasks = p->planes * OH, total = p->planes * HW, row_len = FC_POOL_ROW(OW);
    fc_index lo, hi;
    FC_LOCAL(interior_columns)(p, &lo, &hi);
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        /* per thread: the window sums, one row's sums and the divisors (0 past OW) */
        T *acc = (T *)calloc((size_t)row_len * 3, sizeof(T));
        fc_index *cols = (fc_index *)malloc(sizeof(fc_index) * (size_t)OW * 2);
        T *row_sum = acc + row_len, *divisor = acc + 2 * row_len;
        if (!acc || !cols) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else {
            FC_LOCAL(avg_columns)(p, cols, cols + OW);
        }
        fc_index t0, t1, last_row[2] = {-1, -1};
        fc_static_share(ntasks, &t0, &t1);
        fc_index plane = t0 / OH, oh = t0 % OH;
        for (fc_index t = t0; t < t1 && acc && cols; t++, oh++) {
            if (oh == OH) {
                oh = 0;
                plane++;
            }
            FC_LOCAL(prefetch_rows)(p, x + plane * HW, oh, x + total);
            FC_LOCAL(window_sums)(p, x + plane * HW, oh, lo, hi, 0.0, total - plane * HW, row_sum,
                                  acc);
            FC_LOCAL(avg_divisors)(p, oh, cols, cols + OW, last_row, divisor);
            for (fc_index ow = 0; ow < row_len; ow++)
                acc[ow] = divisor[ow] != 0 ? acc[ow] / divisor[ow] : (T)0;
            memcpy(y + plane * OH * OW + oh * OW, acc, sizeof(T) * (size_t)OW);
        }
        free(acc);
        free(cols);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

/* The backward of a sum fold: grow[w] += share[ow] * f'(x[w]) for every tap w of column ow inside
 * the row, where f'(x) = 1 (norm 0: average pooling; norm 1), x (norm 2) or
 * x^(norm-1). */
static void FC_LOCAL(spread_row)(const fc_pool2d_params *p, T *restrict grow,
                                 const T *restrict xrow, fc_index lo, fc_index hi, double norm,
                                 const T *restrict share) {
    const fc_index s = p->stride_w, pad = p->pad_left, k = p->kernel_w;
    const fc_index OW = p->out_w, W = p->in_w;
#define FC_D(v) (norm == 2.0 ? (v) : (T)pow((double)(v), norm - 1.0))
    const int plain = norm == 0.0 || norm == 1.0;
    for (fc_index ow = 0; ow < OW; ow++) {
        if (ow == lo && lo < hi) {
            ow = hi - 1;
            continue;
        }
        fc_index j0, j1;
        const fc_index w0 = ow * s - pad;
        fc_inside_span(w0, 1, k, W, &j0, &j1);
        for (fc_index j = j0; j < j1; j++)
            grow[w0 + j] += plain ? share[ow] : share[ow] * FC_D(xrow[w0 + j]);
    }
    if (lo >= hi) return;
    T *gbase = grow + (lo * s - pad); /* the first interior column's window */
    const T *xbase = xrow ? xrow + (lo * s - pad) : NULL;
    if (s == 2 && k == 2 && plain) {
        for (fc_index ow = lo; ow < hi; ow++) {
            gbase[2 * (ow - lo)] += share[ow];
            gbase[2 * (ow - lo) + 1] += share[ow];
        }
    } else if (s == 2 && k == 2 && norm == 2.0) {
        for (fc_index ow = lo; ow < hi; ow++) {
            gbase[2 * (ow - lo)] += share[ow] * xbase[2 * (ow - lo)];
            gbase[2 * (ow - lo) + 1] += share[ow] * xbase[2 * (ow - lo) + 1];
        }
    } else {
        for (fc_index j = 0; j < k; j++)
            for (fc_index ow = lo; ow < hi; ow++) {
                const fc_index w = (ow - lo) * s + j;
                gbase[w] += plain ? share[ow] : share[ow] * FC_D(xbase[w]);
            }
    }
#undef FC_D
}

int FC_FN(avgpool2d_bwd)(const fc_pool2d_params *p, const T *gy, T *gx, int nthreads) {
    const fc_index H = p->in_h, W = p->in_w, OH = p->out_h, OW = p->out_w;
    fc_index lo, hi;
    FC_LOCAL(interior_columns)(p, &lo, &hi);
    const int nt = fc_threads_for(nthreads, (double)p->planes * OH * OW * p->kernel_h * p->kernel_w,
                                  FC_POOL_MIN_WORK, p->planes);
    int failed = 0;
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *divisor = (T *)malloc(sizeof(T) * (size_t)OW * 2),
          *share = divisor ? divisor + OW : NULL;
        fc_index last_row[2] = {-1, -1};
        fc_index *cols = (fc_index *)malloc(sizeof(fc_index) * (size_t)OW * 2);
        if (!divisor || !cols) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else {
            FC_LOCAL(avg_columns)(p, cols, cols + OW);
        }
    FC_PRAGMA(omp for schedule(static))
    for (fc_index plane = 0; plane < p->planes; plane++) {
        if (!divisor || !cols) continue;
        T *dst = gx + plane * H * W;
        const T *g = gy + plane * OH * OW;
        memset(dst, 0, sizeof(T) * (size_t)(H * W));
        for (fc_index oh = 0; oh < OH; oh++) {
            fc_index i0, i1;
            const fc_index h0 = oh * p->stride_h - p->pad_top;
            fc_inside_span(h0, 1, p->kernel_h, H, &i0, &i1);
            FC_LOCAL(avg_divisors)(p, oh, cols, cols + OW, last_row, divisor);
            for (fc_index ow = 0; ow < OW; ow++) /* divisor 0: an empty window, no gradient */
                share[ow] = divisor[ow] != 0 ? g[oh * OW + ow] / divisor[ow] : (T)0;
            for (fc_index i = i0; i < i1; i++)
                FC_LOCAL(spread_row)(p, dst + (h0 + i) * W, NULL, lo, hi, 0.0, share);
        }
    }
    free(divisor);
    free(cols);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

/* Whether every window of output row oh lies inside the padded input (the last column's window
 * ends in it, so all do): lp_scale is 1 along the whole row. */
static inline int FC_LOCAL(lp_row_whole)(const fc_pool2d_params *p, fc_index oh) {
    return oh * p->stride_h - p->pad_top + p->kernel_h <= p->in_h + p->pad_bottom &&
           (p->out_w - 1) * p->stride_w - p->pad_left + p->kernel_w <= p->in_w + p->pad_right;
}

int FC_FN(lppool2d_fwd)(const fc_pool2d_params *p, const T *x, T *y, int nthreads) {
    const double norm = p->norm;
    const fc_index HW = p->in_h * p->in_w, OH = p->out_h, OW = p->out_w;
    const fc_index ntasks = p->planes * OH, total = p->planes * HW, row_len = FC_POOL_ROW(OW);
    fc_index lo, hi;
    FC_LOCAL(interior_columns)(p, &lo, &hi);
    int failed = 0;
    const int nt = fc_threads_for(nthreads, (double)ntasks * OW * p->kernel_h * p->kernel_w * 4,
                                  FC_POOL_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *acc = (T *)calloc((size_t)row_len * 2, sizeof(T));
        T *row_sum = acc + row_len;
        if (!acc) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        fc_index t0, t1;
        fc_static_share(ntasks, &t0, &t1);
        fc_index plane = t0 / OH, oh = t0 % OH;
        for (fc_index t = t0; t < t1 && acc; t++, oh++) {
            if (oh == OH) {
                oh = 0;
                plane++;
            }
            T *out = y + plane * OH * OW + oh * OW;
            FC_LOCAL(prefetch_rows)(p, x + plane * HW, oh, x + total);
            FC_LOCAL(window_sums)(p, x + plane * HW, oh, lo, hi, norm, total - plane * HW, row_sum,
                                  acc);
            if (norm == 2.0 && FC_LOCAL(lp_row_whole)(p, oh)) { /* scale 1: vectorised */
                /* the dtype's own square root: rounding sqrt's double result to float is
                 * exact (double carries over 2*24+2 bits), so sqrtf gives the same answer */
                if (sizeof(T) == sizeof(float))
                    for (fc_index ow = 0; ow < row_len; ow++) acc[ow] = (T)sqrtf((float)acc[ow]);
                else
                    for (fc_index ow = 0; ow < row_len; ow++) acc[ow] = (T)sqrt((double)acc[ow]);
                memcpy(out, acc, sizeof(T) * (size_t)OW);
                continue;
            }
            for (fc_index ow = 0; ow < OW; ow++)
                out[ow] = FC_LOCAL(lp_finish)(acc[ow], norm, FC_LOCAL(lp_scale)(p, oh, ow));
        }
        free(acc);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

int FC_FN(lppool2d_bwd)(const fc_pool2d_params *p, const T *gy, const T *x, T *gx, int nthreads) {
    const double norm = p->norm;
    const fc_index H = p->in_h, W = p->in_w, HW = H * W, OH = p->out_h, OW = p->out_w;
    const fc_index total = p->planes * HW, row_len = FC_POOL_ROW(OW);
    fc_index lo, hi;
    FC_LOCAL(interior_columns)(p, &lo, &hi);
    int failed = 0;
    const int nt = fc_threads_for(nthreads,
                                  (double)p->planes * OH * OW * p->kernel_h * p->kernel_w * 8,
                                  FC_POOL_MIN_WORK, p->planes);
    /* Elements no window covers (cut off by the stride or the end of the image) still get
     * PyTorch's 0 * d(x^p)/dx, which is NaN at an Inf or NaN input. */
    int all_covered = 1;
    for (fc_index ih = 0; ih < H; ih++)
        all_covered &= FC_LOCAL(lp_covered)(ih, p->stride_h, p->kernel_h, p->pad_top, OH);
    for (fc_index iw = 0; iw < W; iw++)
        all_covered &= FC_LOCAL(lp_covered)(iw, p->stride_w, p->kernel_w, p->pad_left, OW);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *row_sum = (T *)calloc((size_t)row_len * 2, sizeof(T));
        if (!row_sum) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(static))
        for (fc_index plane = 0; plane < p->planes; plane++) {
            if (!row_sum) continue;
            const T *src = x + plane * HW;
            T *dst = gx + plane * HW;
            T *coef = row_sum + row_len;
            memset(dst, 0, sizeof(T) * (size_t)HW);
            if (!all_covered)
                for (fc_index ih = 0; ih < H; ih++)
                    for (fc_index iw = 0; iw < W; iw++)
                        if (!FC_LOCAL(lp_covered)(ih, p->stride_h, p->kernel_h, p->pad_top, OH) ||
                            !FC_LOCAL(lp_covered)(iw, p->stride_w, p->kernel_w, p->pad_left, OW)) {
                            dst[ih * W + iw] = FC_LOCAL(lp_uncovered)(src[ih * W + iw], norm);
                        }
            for (fc_index oh = 0; oh < OH; oh++) {
                FC_LOCAL(prefetch_rows)(p, src, oh, x + total);
                /* coef = gy * c * out^(1-p) with c = kH*kW/area: d out/d x = coef * x^(p-1) */
                FC_LOCAL(window_sums)(p, src, oh, lo, hi, norm, total - plane * HW, row_sum, coef);
                const T *g_row = gy + plane * OH * OW + oh * OW;
                /* the window's rows inside the input */
                const fc_index h0 = FC_MAX(oh * p->stride_h - p->pad_top, 0);
                const fc_index h1 = FC_MIN(oh * p->stride_h - p->pad_top + p->kernel_h, H);
                if (norm == 2.0 && FC_LOCAL(lp_row_whole)(p, oh)) {
                    /* every window whole (c = 1): the expression below with c folded in, in
                     * one loop the compiler vectorises, instead of a square root and a division
                     * in double per output, one at a time */
                    if (sizeof(T) == sizeof(float)) {
                        /* float32 in float: g / sqrt(s) with two correctly rounded steps, within
                         * an ulp of the double expression, at half its vector cost (twice the
                         * lanes per square root and division) */
                        for (fc_index ow = 0; ow < OW; ow++) {
                            const float s = (float)coef[ow], v = (float)g_row[ow] / sqrtf(s);
                            coef[ow] = s == 0 ? (T)0 : (T)v;
                        }
                    } else {
                        for (fc_index ow = 0; ow < OW; ow++) {
                            const double s = (double)coef[ow], g = (double)g_row[ow];
                            const double v = g * 1.0 * (1.0 / sqrt(s * 1.0));
                            coef[ow] = s == 0 ? (T)0 : (T)v;
                        }
                    }
                    for (fc_index ih = h0; ih < h1; ih++)
                        FC_LOCAL(spread_row)(p, dst + ih * W, src + ih * W, lo, hi, norm, coef);
                    continue;
                }
                for (fc_index ow = 0; ow < OW; ow++)
                    coef[ow] = FC_LOCAL(lp_coef)((double)coef[ow], (double)g_row[ow],
                                                 FC_LOCAL(lp_scale)(p, oh, ow), norm);
                for (fc_index ih = h0; ih < h1; ih++)
                    FC_LOCAL(spread_row)(p, dst + ih * W, src + ih * W, lo, hi, norm, coef);
            }
        }
        free(row_sum);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

#undef FC_MAX_TAKES
#undef FC_POOL_MIN_WORK
