/* batchnorm.h: batch normalisation over channel 1 of x (batch, channels, inner), for one dtype
 * (fc_each_dtype.h instantiates it per dtype in batchnorm_<isa>.c).
 *
 *   fc_<dt>_batchnorm_stats__<isa>  each channel's mean and biased variance over the batch and
 *                                   inner dims (and the running statistics' update)
 *   fc_<dt>_batchnorm_fwd__<isa>    y = (x - mean) / sqrt(var + eps) * weight + bias, plus
 *                                   `add` when given (a residual block's shortcut), then ReLU
 *                                   when p->relu (batch norm, add and ReLU in one pass)
 *   fc_<dt>_batchnorm_bwd__<isa>    gx, and the weight and bias gradients; given the fused
 *                                   forward's output y, through its ReLU first
 *   fc_<dt>_batchnorm_train_fwd__<isa>  stats, then fwd with those statistics, channel by channel
 *
 * Statistics and gradient sums are taken in double, whatever T, in an order fixed by the shape:
 * a channel's values are cut into pieces of at most FC_BN_PIECE elements, part of one (image,
 * channel) plane or several whole ones; each piece's mean and sum of squared deviations come from
 * two passes over it while it sits in L1, and the pieces are merged in order (Chan et al.'s
 * pairwise update). So the variance is as exact as a two-pass one and x is read from memory once.
 * The mean is the pieces' sums added up, so a NaN or an Inf makes the mean and variance what
 * PyTorch's two passes make them.
 *
 * Loop structure: reductions are parallel over channels (each channel summed by one thread);
 * the element-wise passes over (image, channel) planes. With inner = 1 (BatchNorm1d on (N, C))
 * a channel's values are a column: reductions then run over blocks of FC_BN_COLUMNS adjacent
 * channels, vectorised across them, row after row.
 *
 * train_fwd and bwd, given at least FC_BN_CHANNELS_PER_THREAD channels per thread, take one
 * channel at a time instead: its reduction, then its element-wise pass, which finds the
 * channel's planes still in L2 (a ResNet channel of 64 images of 32x32 is 256 KB), so x (and,
 * backward, gy and the mask) come from memory once rather than twice. Each channel's sums are
 * the same either way, so the results are bit for bit those of the two-phase order. */
#include "fc_template.h"
#include "fc_tuning.h"

#ifndef FC_BATCHNORM_SHARED
#define FC_BATCHNORM_SHARED
#include <math.h>

#define FC_BN_PIECE 4096
#define FC_BN_LANES 16
#define FC_BN_COLUMNS 64
/* fewer channels than this per thread: the two-phase order, whose element-wise pass splits
 * the (image, channel) planes evenly among the threads */
#define FC_BN_CHANNELS_PER_THREAD 4

/* Merge the count, mean and sum of squared deviations (n_b, mean_b, m2_b) of a piece into the
 * running ones. */
static inline void fc_bn_merge(double *n_a, double *mean_a, double *m2_a, double n_b, double mean_b,
                               double m2_b) {
    if (*n_a == 0) {
        *n_a = n_b, *mean_a = mean_b, *m2_a = m2_b;
        return;
    }
    const double n = *n_a + n_b, delta = mean_b - *mean_a;
    *mean_a += delta * (n_b / n);
    *m2_a += m2_b + delta * delta * (*n_a * (n_b / n));
    *n_a = n;
}

static inline double fc_bn_lanes_sum(double *acc) {
    for (int width = FC_BN_LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) acc[l] += acc[l + width];
    return acc[0];
}

static inline double fc_bn_invstd(double var, double eps) { return 1.0 / sqrt(var + eps); }
#endif

/* The gradient reaching the batch norm at element i. Behind the fused ReLU whose output is y,
 * relu_bwd's: 0 where y <= 0 (so a NaN passes), bit for bit what the two layers give; the
 * kernels then mask by (y, lim 0). Without it, (gy, lim NaN): no comparison with NaN holds, so
 * gy passes whole, and the loops stay branch-free, reading only valid memory. */
#define FC_BN_GRAD(gy, mask, lim, i) ((mask)[i] <= (lim) ? (T)0 : (gy)[i])

/* acc[l] += x[i] (d = 0) or (x[i] - mu)^2 (d = 1) for the i of lane l, over x[0..n): the lanes
 * are copied in and out, so they stay in registers. */
static inline void FC_LOCAL(bn_run)(const T *restrict x, fc_index n, int d, double mu,
                                    double *restrict acc) {
    double a[FC_BN_LANES];
    memcpy(a, acc, sizeof(a));
    fc_index i = 0;
    for (; i + FC_BN_LANES <= n; i += FC_BN_LANES)
        for (int l = 0; l < FC_BN_LANES; l++) {
            const double v = (double)x[i + l] - mu;
            a[l] += d ? v * v : v;
        }
    for (int l = 0; i < n; i++, l++) {
        const double v = (double)x[i] - mu;
        a[l] += d ? v * v : v;
    }
    memcpy(acc, a, sizeof(a));
}

/* Sum, and sum of squared deviations from its mean, of `rows` runs of `len` values, run r at
 * x + r * stride (rows * len >= 1): two passes in lanes over a piece that stays in L1. */
static inline void FC_LOCAL(bn_piece)(const T *x, fc_index rows, fc_index len, fc_index stride,
                                      double *sum, double *m2) {
    double acc[FC_BN_LANES] = {0}, sq[FC_BN_LANES] = {0};
    for (fc_index r = 0; r < rows; r++) FC_LOCAL(bn_run)(x + r * stride, len, 0, 0.0, acc);
    *sum = fc_bn_lanes_sum(acc);
    const double mu = *sum / (double)(rows * len);
    for (fc_index r = 0; r < rows; r++) FC_LOCAL(bn_run)(x + r * stride, len, 1, mu, sq);
    *m2 = fc_bn_lanes_sum(sq);
}

/* sum of g and of g * (x - mean) over x[0..n), added in lanes to acc and dot; g is gy masked
 * by (mask, lim) (FC_BN_GRAD). */
static inline void FC_LOCAL(bn_grad_run)(const T *restrict gy, const T *mask, T lim,
                                         const T *restrict x, fc_index n, double mean,
                                         double *restrict acc, double *restrict dot) {
    double a[FC_BN_LANES], b[FC_BN_LANES];
    memcpy(a, acc, sizeof(a));
    memcpy(b, dot, sizeof(b));
    fc_index i = 0;
    for (; i + FC_BN_LANES <= n; i += FC_BN_LANES) FC_PRAGMA(omp simd)
    for (int l = 0; l < FC_BN_LANES; l++) {
        const double g = (double)FC_BN_GRAD(gy, mask, lim, i + l);
        a[l] += g;
        b[l] += g * ((double)x[i + l] - mean);
    }
    for (int l = 0; i < n; i++, l++) {
        const double g = (double)FC_BN_GRAD(gy, mask, lim, i);
        a[l] += g;
        b[l] += g * ((double)x[i] - mean);
    }
    memcpy(acc, a, sizeof(a));
    memcpy(dot, b, sizeof(b));
}

/* Channel c's mean and biased variance over its N planes of HW (HW > 1) into mean[c], var[c],
 * and the running statistics' update unless running_mean is NULL. */
static void FC_LOCAL(bn_channel_stats)(const fc_batchnorm_params *p, const T *x, fc_index c,
                                       T *mean, T *var, T *running_mean, T *running_var) {
    const fc_index N = p->batch, C = p->channels, HW = p->inner;
    const double count = (double)N * (double)HW, m = p->momentum;
    /* the mean is the plain sum's (an Inf in the channel makes it Inf, as in PyTorch,
     * where merged means would meet Inf - Inf); the merges give the deviations */
    double n_a = 0, mean_a = 0, m2_a = 0, total = 0;
    /* a piece: part of one plane, or as many whole planes (images) as fit */
    const fc_index images = FC_MAX(1, FC_BN_PIECE / HW);
    for (fc_index n = 0; n < N; n += images) {
        const fc_index rows = FC_MIN(images, N - n);
        const T *plane = x + (n * C + c) * HW;
        for (fc_index i = 0; i < HW; i += FC_BN_PIECE) {
            const fc_index len = FC_MIN(FC_BN_PIECE, HW - i);
            double sum_b, m2_b;
            FC_LOCAL(bn_piece)(plane + i, rows, len, C * HW, &sum_b, &m2_b);
            total += sum_b;
            const double n_b = (double)(rows * len);
            fc_bn_merge(&n_a, &mean_a, &m2_a, n_b, sum_b / n_b, m2_b);
        }
    }
    const double mu = total / count;
    mean[c] = (T)mu;
    var[c] = (T)(m2_a / count);
    if (running_mean) {
        running_mean[c] = (T)((1 - m) * running_mean[c] + m * mu);
        running_var[c] = (T)((1 - m) * running_var[c] + m * (m2_a / (count - 1)));
    }
}

/* The forward pass's per-channel factor: 1 / sqrt(var + eps) * weight, rounded to T. */
static inline T FC_LOCAL(bn_scale)(T var, double eps, const T *weight, fc_index c) {
    return (T)(fc_bn_invstd((double)var, eps) * (weight ? (double)weight[c] : 1.0));
}

/* One plane of the forward pass: yq = (xq - m) * s + b, plus aq when aq is not NULL (a residual
 * block's shortcut, added to the rounded normalised value as `bn + a` alone would), then ReLU
 * (as relu_fwd: v unless v < 0) when relu. yq may be aq (each element read, then written). */
static inline void FC_LOCAL(bn_fwd_plane)(const T *xq, const T *aq, T *yq, fc_index HW, T m, T s,
                                          T b, int relu) {
    if (aq && relu)
        for (fc_index i = 0; i < HW; i++) {
            const T v = (xq[i] - m) * s + b + aq[i];
            yq[i] = v < 0 ? (T)0 : v;
        }
    else if (aq)
        for (fc_index i = 0; i < HW; i++) yq[i] = (xq[i] - m) * s + b + aq[i];
    else if (relu)
        for (fc_index i = 0; i < HW; i++) {
            const T v = (xq[i] - m) * s + b;
            yq[i] = v < 0 ? (T)0 : v;
        }
    else
        for (fc_index i = 0; i < HW; i++) yq[i] = (xq[i] - m) * s + b;
}

int FC_FN(batchnorm_stats)(const fc_batchnorm_params *p, const T *x, T *mean, T *var,
                           T *running_mean, T *running_var, int nthreads) {
    const fc_index N = p->batch, C = p->channels, HW = p->inner;
    const double count = (double)N * (double)HW, m = p->momentum;
    const double min_work = fc_tuning_table[FC_ISA_ID][FC_DT_ID].eltwise_min_work;
    if (HW == 1) {
        const fc_index blocks = FC_CEIL_DIV(C, FC_BN_COLUMNS);
        const int nt = fc_threads_for(nthreads, count * C, min_work, blocks);
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index b = 0; b < blocks; b++) {
            const fc_index c0 = b * FC_BN_COLUMNS, w = FC_MIN(FC_BN_COLUMNS, C - c0);
            double sum[FC_BN_COLUMNS] = {0}, sq[FC_BN_COLUMNS] = {0};
            for (fc_index n = 0; n < N; n++)
                for (fc_index c = 0; c < w; c++) sum[c] += (double)x[n * C + c0 + c];
            for (fc_index c = 0; c < w; c++) sum[c] /= count;
            for (fc_index n = 0; n < N; n++)
                for (fc_index c = 0; c < w; c++) {
                    const double d = (double)x[n * C + c0 + c] - sum[c];
                    sq[c] += d * d;
                }
            for (fc_index c = 0; c < w; c++) {
                mean[c0 + c] = (T)sum[c];
                var[c0 + c] = (T)(sq[c] / count);
                if (running_mean) {
                    running_mean[c0 + c] = (T)((1 - m) * running_mean[c0 + c] + m * sum[c]);
                    running_var[c0 + c] = (T)((1 - m) * running_var[c0 + c] +
                                              m * (sq[c] / (count - 1)));
                }
            }
        }
        return FC_OK;
    }
    const int nt = fc_threads_for(nthreads, count * C, min_work, C);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index c = 0; c < C; c++)
        FC_LOCAL(bn_channel_stats)(p, x, c, mean, var, running_mean, running_var);
    return FC_OK;
}

int FC_FN(batchnorm_fwd)(const fc_batchnorm_params *p, const T *x, const T *mean, const T *var,
                         const T *weight, const T *bias, const T *add, T *y, int nthreads) {
    const fc_index N = p->batch, C = p->channels, HW = p->inner;
    T *coef = (T *)malloc(sizeof(T) * (size_t)(3 * C + 1));
    if (!coef) return FC_ENOMEM;
    T *mu = coef, *scale = coef + C, *shift = coef + 2 * C;
    for (fc_index c = 0; c < C; c++) { /* y = (x - mean) * scale + shift */
        mu[c] = mean[c];
        scale[c] = FC_LOCAL(bn_scale)(var[c], p->eps, weight, c);
        shift[c] = bias ? bias[c] : (T)0;
    }
    const int nt = fc_threads_for(nthreads, (double)N * C * HW,
                                  fc_tuning_table[FC_ISA_ID][FC_DT_ID].eltwise_min_work,
                                  HW == 1 ? N : N * C);
    /* ReLU as relu_fwd: v unless v < 0 */
    const int relu = p->relu;
    if (HW == 1) {
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index n = 0; n < N; n++)
            for (fc_index c = 0; c < C; c++) {
                const fc_index e = n * C + c;
                T v = (x[e] - mu[c]) * scale[c] + shift[c];
                if (add) v = v + add[e];
                y[e] = relu && v < 0 ? (T)0 : v;
            }
    } else {
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index q = 0; q < N * C; q++) {
            const fc_index c = q % C;
            FC_LOCAL(bn_fwd_plane)(x + q * HW, add ? add + q * HW : NULL, y + q * HW, HW, mu[c],
                                   scale[c], shift[c], relu);
        }
    }
    free(coef);
    return FC_OK;
}

/* Whether train_fwd and bwd take one channel at a time (the loop structure above). */
static inline int FC_LOCAL(bn_by_channel)(const fc_batchnorm_params *p, int nt) {
    return p->inner > 1 && p->channels >= (fc_index)nt * FC_BN_CHANNELS_PER_THREAD;
}

int FC_FN(batchnorm_train_fwd)(const fc_batchnorm_params *p, const T *x, T *mean, T *var,
                               T *running_mean, T *running_var, const T *weight, const T *bias,
                               const T *add, T *y, int nthreads) {
    const fc_index N = p->batch, C = p->channels, HW = p->inner;
    const double count = (double)N * (double)HW;
    const int nt = fc_threads_for(nthreads, 2 * count * C,
                                  fc_tuning_table[FC_ISA_ID][FC_DT_ID].eltwise_min_work, C);
    if (!FC_LOCAL(bn_by_channel)(p, nt)) {
        const int rc = FC_FN(batchnorm_stats)(p, x, mean, var, running_mean, running_var, nthreads);
        return rc != FC_OK ? rc
                           : FC_FN(batchnorm_fwd)(p, x, mean, var, weight, bias, add, y, nthreads);
    }
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index c = 0; c < C; c++) {
        FC_LOCAL(bn_channel_stats)(p, x, c, mean, var, running_mean, running_var);
        const T s = FC_LOCAL(bn_scale)(var[c], p->eps, weight, c), b = bias ? bias[c] : (T)0;
        for (fc_index n = 0; n < N; n++) {
            const fc_index q = n * C + c;
            FC_LOCAL(bn_fwd_plane)(x + q * HW, add ? add + q * HW : NULL, y + q * HW, HW, mean[c],
                                   s, b, p->relu);
        }
    }
    return FC_OK;
}

/* Channel c's sums over its N planes of HW (HW > 1): of the gradient g (gy masked by (mask,
 * lim)) into *sum_gy, of g (x - mean[c]) into *sum_dot, each in lanes added in a fixed order. */
static void FC_LOCAL(bn_channel_grad_sums)(const fc_batchnorm_params *p, const T *gy, const T *mask,
                                           T lim, const T *x, const T *mean, fc_index c,
                                           double *sum_gy, double *sum_dot) {
    const fc_index N = p->batch, C = p->channels, HW = p->inner;
    double acc[FC_BN_LANES] = {0}, dot[FC_BN_LANES] = {0};
    const double mu = (double)mean[c];
    for (fc_index n = 0; n < N; n++)
        FC_LOCAL(bn_grad_run)(gy + (n * C + c) * HW, mask + (n * C + c) * HW, lim,
                              x + (n * C + c) * HW, HW, mu, acc, dot);
    *sum_gy = fc_bn_lanes_sum(acc);
    *sum_dot = fc_bn_lanes_sum(dot);
}

/* The backward pass's per-channel factors from the sums: gx = (g - mean_gy - (x - mu) k) * scale
 * in training, where the batch statistics depend on x; g * scale in evaluation (not a function
 * of x, even an infinite one). Writes gw[c] and gb[c]. */
typedef struct {
    T mu, scale, mean_gy, k;
} FC_LOCAL(bn_bwd_coef);

static inline FC_LOCAL(bn_bwd_coef)
    FC_LOCAL(bn_bwd_channel)(const fc_batchnorm_params *p, const T *mean, const T *var,
                             const T *weight, fc_index c, double sum_gy, double sum_dot, T *gw,
                             T *gb) {
    const double count = (double)p->batch * (double)p->inner;
    const double invstd = fc_bn_invstd((double)var[c], p->eps);
    FC_LOCAL(bn_bwd_coef) f;
    f.mu = mean[c];
    f.scale = (T)(invstd * (weight ? (double)weight[c] : 1.0));
    f.mean_gy = (T)(sum_gy / count);
    f.k = (T)(sum_dot / count * invstd * invstd);
    gw[c] = (T)(sum_dot * invstd);
    gb[c] = (T)sum_gy;
    return f;
}

/* One plane of gx from its gy, mask and x (FC_BN_GRAD) with its channel's factors f. */
static inline void FC_LOCAL(bn_bwd_plane)(const T *gq, const T *mq, T lim, const T *xq, T *dq,
                                          fc_index HW, FC_LOCAL(bn_bwd_coef) f, int training) {
    if (training)
        for (fc_index i = 0; i < HW; i++)
            dq[i] = (FC_BN_GRAD(gq, mq, lim, i) - f.mean_gy - (xq[i] - f.mu) * f.k) * f.scale;
    else
        for (fc_index i = 0; i < HW; i++) dq[i] = FC_BN_GRAD(gq, mq, lim, i) * f.scale;
}

int FC_FN(batchnorm_bwd)(const fc_batchnorm_params *p, const T *gy, const T *y, const T *x,
                         const T *mean, const T *var, const T *weight, int training, T *gx, T *gw,
                         T *gb, int nthreads) {
    const fc_index N = p->batch, C = p->channels, HW = p->inner;
    const double count = (double)N * (double)HW;
    const double min_work = fc_tuning_table[FC_ISA_ID][FC_DT_ID].eltwise_min_work;
    const T *mask = y ? y : gy;
    const T lim = y ? (T)0 : (T)NAN;
    const int nt_sums = fc_threads_for(nthreads, 2 * count * C, min_work,
                                       HW == 1 ? FC_CEIL_DIV(C, FC_BN_COLUMNS) : C);
    if (FC_LOCAL(bn_by_channel)(p, nt_sums)) {
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt_sums))
        for (fc_index c = 0; c < C; c++) {
            double sum_gy, sum_dot;
            FC_LOCAL(bn_channel_grad_sums)(p, gy, mask, lim, x, mean, c, &sum_gy, &sum_dot);
            const FC_LOCAL(bn_bwd_coef) f = FC_LOCAL(bn_bwd_channel)(p, mean, var, weight, c,
                                                                     sum_gy, sum_dot, gw, gb);
            for (fc_index n = 0; n < N; n++) {
                const fc_index q = n * C + c;
                FC_LOCAL(bn_bwd_plane)(gy + q * HW, mask + q * HW, lim, x + q * HW, gx + q * HW, HW,
                                       f, training);
            }
        }
        return FC_OK;
    }
    /* per channel: sum of gy (-> gb) and of gy (x - mean) (-> gw), in double */
    double *sums = (double *)malloc(sizeof(double) * (size_t)(2 * C + 1));
    FC_LOCAL(bn_bwd_coef) *coef = (FC_LOCAL(bn_bwd_coef) *)malloc(sizeof(FC_LOCAL(bn_bwd_coef)) *
                                                                  (size_t)(C + 1));
    if (!sums || !coef) {
        free(sums);
        free(coef);
        return FC_ENOMEM;
    }
    double *sum_gy = sums, *sum_dot = sums + C;
    if (HW == 1) {
        const fc_index blocks = FC_CEIL_DIV(C, FC_BN_COLUMNS);
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt_sums))
        for (fc_index b = 0; b < blocks; b++) {
            const fc_index c0 = b * FC_BN_COLUMNS, w = FC_MIN(FC_BN_COLUMNS, C - c0);
            double acc[FC_BN_COLUMNS] = {0}, dot[FC_BN_COLUMNS] = {0}, mu[FC_BN_COLUMNS];
            for (fc_index c = 0; c < w; c++) mu[c] = (double)mean[c0 + c];
            for (fc_index n = 0; n < N; n++)
                for (fc_index c = 0; c < w; c++) {
                    const double g = (double)FC_BN_GRAD(gy, mask, lim, n * C + c0 + c);
                    acc[c] += g;
                    dot[c] += g * ((double)x[n * C + c0 + c] - mu[c]);
                }
            for (fc_index c = 0; c < w; c++) sum_gy[c0 + c] = acc[c], sum_dot[c0 + c] = dot[c];
        }
    } else {
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt_sums))
        for (fc_index c = 0; c < C; c++)
            FC_LOCAL(bn_channel_grad_sums)(p, gy, mask, lim, x, mean, c, &sum_gy[c], &sum_dot[c]);
    }
    for (fc_index c = 0; c < C; c++)
        coef[c] = FC_LOCAL(bn_bwd_channel)(p, mean, var, weight, c, sum_gy[c], sum_dot[c], gw, gb);
    const int nt = fc_threads_for(nthreads, count * C, min_work, HW == 1 ? N : N * C);
    if (HW == 1) {
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index n = 0; n < N; n++)
            for (fc_index c = 0; c < C; c++) {
                const fc_index e = n * C + c;
                const T g = FC_BN_GRAD(gy, mask, lim, e);
                const FC_LOCAL(bn_bwd_coef) f = coef[c];
                gx[e] = training ? (g - f.mean_gy - (x[e] - f.mu) * f.k) * f.scale : g * f.scale;
            }
    } else {
        FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
        for (fc_index q = 0; q < N * C; q++)
            FC_LOCAL(bn_bwd_plane)(gy + q * HW, mask + q * HW, lim, x + q * HW, gx + q * HW, HW,
                                   coef[q % C], training);
    }
    free(sums);
    free(coef);
    return FC_OK;
}

#undef FC_BN_GRAD
