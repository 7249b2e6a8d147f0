/* training.h: the rest of a training step, for one dtype (fc_each_dtype.h instantiates it per
 * dtype in training_<isa>.c): each op one pass over its arrays where NumPy makes several.
 *
 *   fc_<dt>_cross_entropy__<isa>  mean softmax cross-entropy of logit rows against labels, and
 *                                 its gradient, from one read of the logits
 *   fc_<dt>_dropout__<isa>        the inverted-dropout mask from uniform draws, and x * mask
 *   fc_<dt>_adam_update__<isa>    one Adam step of a parameter
 *   fc_<dt>_sgd_update__<isa>     one SGD step of a parameter
 *
 * Arithmetic is in T, in the order of the NumPy reference (fastconv.reference), the
 * hyper-parameters rounded to T as NumPy rounds a Python float meeting a T array, so the
 * updates follow PyTorch's single-tensor optimisers. The loss is summed in double.
 *
 * Loop structure: cross-entropy is parallel over rows (each row's loss kept, then added in row
 * order); the others over blocks of FC_TRAINING_BLOCK elements. */
#include "fc_template.h"
#include "fc_tuning.h"

#ifndef FC_TRAINING_SHARED
#define FC_TRAINING_SHARED
#include <math.h>

#define FC_TRAINING_BLOCK 4096
#endif

#define FC_TRAINING_MIN_WORK (fc_tuning_table[FC_ISA_ID][FC_DT_ID].eltwise_min_work)

/* exp, log and sqrt in T (expf, logf, sqrtf for float) */
static inline T FC_LOCAL(training_exp)(T v) { return sizeof(T) == 4 ? expf((float)v) : exp(v); }
static inline T FC_LOCAL(training_log)(T v) { return sizeof(T) == 4 ? logf((float)v) : log(v); }
static inline T FC_LOCAL(training_sqrt)(T v) { return sizeof(T) == 4 ? sqrtf((float)v) : sqrt(v); }

int FC_FN(cross_entropy)(fc_index n, fc_index c, const T *logits, const int64_t *target,
                         double grad_scale, T *loss, T *grad, int nthreads) {
    /* per row: m = max (NaN if any is NaN), lse = log(sum exp(x - m)), loss = lse - (x_t - m);
     * grad = (exp(x - m) / sum - [j == t]) * grad_scale */
    double *rows = (double *)malloc(sizeof(double) * (size_t)(n + 1));
    if (!rows) return FC_ENOMEM;
    const int nt = fc_threads_for(nthreads, 4.0 * (double)n * c, FC_TRAINING_MIN_WORK, n);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index i = 0; i < n; i++) {
        const T *x = logits + i * c;
        T m = x[0];
        for (fc_index j = 1; j < c; j++) m = (x[j] > m || x[j] != x[j]) ? x[j] : m;
        T sum = 0;
        for (fc_index j = 0; j < c; j++) sum += FC_LOCAL(training_exp)(x[j] - m);
        const fc_index t = target[i];
        rows[i] = (double)(FC_LOCAL(training_log)(sum) - (x[t] - m));
        if (grad) {
            T *g = grad + i * c;
            const T scale = (T)grad_scale;
            for (fc_index j = 0; j < c; j++)
                g[j] = (FC_LOCAL(training_exp)(x[j] - m) / sum - (j == t ? (T)1 : (T)0)) * scale;
        }
    }
    double total = 0;
    for (fc_index i = 0; i < n; i++) total += rows[i];
    *loss = (T)(total / (double)n);
    free(rows);
    return FC_OK;
}

int FC_FN(dropout)(fc_index n, const T *x, double p, T *uniform_mask, T *y, int nthreads) {
    /* an element is kept where its draw is below 1 - p (as a T); mask = 1 / (1 - p) there */
    const T keep_below = (T)(1 - p), scale = p < 1 ? (T)(1 / (1 - p)) : (T)0;
    const fc_index blocks = FC_CEIL_DIV(n, FC_TRAINING_BLOCK);
    const int nt = fc_threads_for(nthreads, (double)n, FC_TRAINING_MIN_WORK, blocks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index b = 0; b < blocks; b++)
        for (fc_index i = b * FC_TRAINING_BLOCK; i < FC_MIN(n, (b + 1) * FC_TRAINING_BLOCK); i++) {
            const T mask = uniform_mask[i] < keep_below ? scale : (T)0;
            uniform_mask[i] = mask;
            y[i] = x[i] * mask;
        }
    return FC_OK;
}

int FC_FN(adam_update)(fc_index n, T *param, const T *grad, T *exp_avg, T *exp_avg_sq,
                       const fc_adam_params *p, int nthreads) {
    const double t = (double)p->step;
    const T one_minus_beta1 = (T)(1 - p->beta1), beta2 = (T)p->beta2;
    const T one_minus_beta2 = (T)(1 - p->beta2), weight_decay = (T)p->weight_decay;
    const T step_size = (T)(-(p->lr / (1 - pow(p->beta1, t))));
    const T bias_correction2_sqrt = (T)sqrt(1 - pow(p->beta2, t)), eps = (T)p->eps;
    const int decay = p->weight_decay != 0;
    const fc_index blocks = FC_CEIL_DIV(n, FC_TRAINING_BLOCK);
    const int nt = fc_threads_for(nthreads, 4.0 * (double)n, FC_TRAINING_MIN_WORK, blocks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index b = 0; b < blocks; b++)
        for (fc_index i = b * FC_TRAINING_BLOCK; i < FC_MIN(n, (b + 1) * FC_TRAINING_BLOCK); i++) {
            const T g = decay ? grad[i] + weight_decay * param[i] : grad[i];
            const T m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i]);
            const T s = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g;
            const T denom = FC_LOCAL(training_sqrt)(s) / bias_correction2_sqrt + eps;
            exp_avg[i] = m;
            exp_avg_sq[i] = s;
            param[i] += step_size * m / denom;
        }
    return FC_OK;
}

int FC_FN(sgd_update)(fc_index n, T *param, const T *grad, T *momentum_buffer,
                      const fc_sgd_params *p, int nthreads) {
    const T lr = (T)p->lr, momentum = (T)p->momentum, weight_decay = (T)p->weight_decay;
    const T damp = (T)(1 - p->dampening);
    const int decay = p->weight_decay != 0, first = p->first, nesterov = p->nesterov;
    const fc_index blocks = FC_CEIL_DIV(n, FC_TRAINING_BLOCK);
    const int nt = fc_threads_for(nthreads, 2.0 * (double)n, FC_TRAINING_MIN_WORK, blocks);
    FC_PRAGMA(omp parallel for schedule(static) num_threads(nt))
    for (fc_index b = 0; b < blocks; b++)
        for (fc_index i = b * FC_TRAINING_BLOCK; i < FC_MIN(n, (b + 1) * FC_TRAINING_BLOCK); i++) {
            T g = decay ? grad[i] + weight_decay * param[i] : grad[i];
            if (momentum_buffer) { /* the first step's buffer is the gradient itself */
                const T buf = first ? g : momentum_buffer[i] * momentum + damp * g;
                momentum_buffer[i] = buf;
                g = nesterov ? g + momentum * buf : buf;
            }
            param[i] -= lr * g;
        }
    return FC_OK;
}

#undef FC_TRAINING_MIN_WORK
