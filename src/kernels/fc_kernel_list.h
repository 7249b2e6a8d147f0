/* fc_kernel_list.h: every kernel entry point, written once, as X(ctx, name, parameters,
 * arguments). fastconv.h expands it into the public prototypes, fc_internal.h into each
 * instruction set's (fc_<name>__<isa>), and dispatch.c into the kernel table, its per-ISA rows
 * and the public functions that forward to the selected row. `ctx` is passed through untouched,
 * so one X can paste the ISA into the names it makes.
 *
 * Every entry point returns FC_OK or an error code (fastconv.h) and takes `nthreads` last: an
 * upper bound, a kernel uses fewer threads when the problem is too small to gain. */
#ifndef FC_KERNEL_LIST_H
#define FC_KERNEL_LIST_H

/* The public C API (fastconv.h). */
#define FC_KERNEL_LIST(X, ctx)                                                                     \
    FC_CONV_KERNELS(X, ctx, f32, float)                                                            \
    FC_CONV_KERNELS(X, ctx, f64, double)                                                           \
    FC_CONV_NHWC_KERNELS(X, ctx, f32, float)                                                       \
    FC_CONV_NHWC_KERNELS(X, ctx, f64, double)                                                      \
    FC_POOL_KERNELS(X, ctx, f32, float)                                                            \
    FC_POOL_KERNELS(X, ctx, f64, double)                                                           \
    FC_POOL_NHWC_KERNELS(X, ctx, f32, float)                                                       \
    FC_POOL_NHWC_KERNELS(X, ctx, f64, double)                                                      \
    FC_ADAPTIVE_POOL_KERNELS(X, ctx, f32, float)                                                   \
    FC_ADAPTIVE_POOL_KERNELS(X, ctx, f64, double)                                                  \
    FC_ELTWISE_KERNELS(X, ctx, f32, float)                                                         \
    FC_ELTWISE_KERNELS(X, ctx, f64, double)                                                        \
    FC_LINEAR_KERNELS(X, ctx, f32, float)                                                          \
    FC_LINEAR_KERNELS(X, ctx, f64, double)                                                         \
    FC_BATCHNORM_KERNELS(X, ctx, f32, float)                                                       \
    FC_BATCHNORM_KERNELS(X, ctx, f64, double)                                                      \
    FC_TRAINING_KERNELS(X, ctx, f32, float)                                                        \
    FC_TRAINING_KERNELS(X, ctx, f64, double)                                                       \
    FC_CONV_NHWC_PREPACKED_KERNELS(X, ctx, f32, float)                                             \
    FC_CONV_NHWC_PREPACKED_KERNELS(X, ctx, f64, double)

/* Dispatched like the kernels but private to fastconv's benchmark (fc_private.h): the
 * multiply-add peak in the active instruction set's microkernel registers. */
#define FC_PRIVATE_LIST(X, ctx)                                                                    \
    X(ctx, f32_fma_peak, (fc_index iterations, int nthreads, double *flops),                       \
      (iterations, nthreads, flops))                                                               \
    X(ctx, f64_fma_peak, (fc_index iterations, int nthreads, double *flops),                       \
      (iterations, nthreads, flops))

/* Convolution. gb may be NULL (no bias gradient wanted), bias too (no bias). The input
 * gradient's bias, one per input channel, is added to gx: conv_transpose2d's bias, that pass
 * being its forward. conv2d_relu_bwd is the backward of a forward pass with p->relu set: gz = gy
 * where y > 0 or NaN, else 0, and gb its channel sums; the input and weight gradients then run
 * on gz. */
#define FC_CONV_KERNELS(X, ctx, dt, T)                                                             \
    X(ctx, dt##_conv2d_fwd,                                                                        \
      (const fc_conv2d_params *p, const T *x, const T *w, const T *bias, T *y, int nthreads),      \
      (p, x, w, bias, y, nthreads))                                                                \
    X(ctx, dt##_conv2d_bwd_input,                                                                  \
      (const fc_conv2d_params *p, const T *gy, const T *w, const T *bias, T *gx, int nthreads),    \
      (p, gy, w, bias, gx, nthreads))                                                              \
    X(ctx, dt##_conv2d_bwd_weight,                                                                 \
      (const fc_conv2d_params *p, const T *gy, const T *x, T *gw, T *gb, int nthreads),            \
      (p, gy, x, gw, gb, nthreads))                                                                \
    X(ctx, dt##_conv2d_relu_bwd,                                                                   \
      (const fc_conv2d_params *p, const T *gy, const T *y, T *gz, T *gb, int nthreads),            \
      (p, gy, y, gz, gb, nthreads))

/* Convolution on channels-last buffers: x (N, H, W, C), y and gy (N, OH, OW, K), w and gw in
 * p->weight_format (OIHW or HWIO), otherwise as FC_CONV_KERNELS. */
#define FC_CONV_NHWC_KERNELS(X, ctx, dt, T)                                                        \
    X(ctx, dt##_conv2d_nhwc_fwd,                                                                   \
      (const fc_conv2d_params *p, const T *x, const T *w, const T *bias, T *y, int nthreads),      \
      (p, x, w, bias, y, nthreads))                                                                \
    X(ctx, dt##_conv2d_nhwc_bwd_input,                                                             \
      (const fc_conv2d_params *p, const T *gy, const T *w, const T *bias, T *gx, int nthreads),    \
      (p, gy, w, bias, gx, nthreads))                                                              \
    X(ctx, dt##_conv2d_nhwc_bwd_weight,                                                            \
      (const fc_conv2d_params *p, const T *gy, const T *x, T *gw, T *gb, int nthreads),            \
      (p, gy, x, gw, gb, nthreads))

/* The channels-last forward on weights packed once (conv2d_nhwc_prepacked.h; fastconv.infer).
 * conv2d_nhwc_prepack: p->algorithm winograd, direct or im2col (as the plan would choose or
 * force); *size = the values `packed` needs (then, unless packed is NULL, writes them: the
 * selected ISA's panels, valid only for it); FC_EALGORITHM for another algorithm, one the plan
 * cannot run, or Winograd kernels whose transform holds an Inf or NaN (pack for direct instead).
 * conv2d_nhwc_fwd_prepacked: y = conv(x, w) + bias (+ residual unless NULL), then ReLU if
 * p->relu, from those panels; w (the raw weights) is read only by the non-finite fallback. */
#define FC_CONV_NHWC_PREPACKED_KERNELS(X, ctx, dt, T)                                              \
    X(ctx, dt##_conv2d_nhwc_prepack,                                                               \
      (const fc_conv2d_params *p, const T *w, const T *bias, T *packed, fc_index *size,            \
       int nthreads),                                                                              \
      (p, w, bias, packed, size, nthreads))                                                        \
    X(ctx, dt##_conv2d_nhwc_fwd_prepacked,                                                         \
      (const fc_conv2d_params *p, const T *x, const T *w, const T *packed, const T *bias,          \
       const T *residual, T *y, int nthreads),                                                     \
      (p, x, w, packed, bias, residual, y, nthreads))

/* Pooling. Max pooling: indices may be NULL; a window wholly in the padding yields -inf and
 * index -1, and the backward pass skips indices of -1. Backward kernels write every element of
 * gx. L^p pooling is PyTorch's lp_pool2d (p = p->norm > 0), with zero padding. */
#define FC_POOL_KERNELS(X, ctx, dt, T)                                                             \
    X(ctx, dt##_maxpool2d_fwd,                                                                     \
      (const fc_pool2d_params *p, const T *x, T *y, int64_t *indices, int nthreads),               \
      (p, x, y, indices, nthreads))                                                                \
    X(ctx, dt##_maxpool2d_bwd,                                                                     \
      (const fc_pool2d_params *p, const T *gy, const int64_t *indices, T *gx, int nthreads),       \
      (p, gy, indices, gx, nthreads))                                                              \
    X(ctx, dt##_avgpool2d_fwd, (const fc_pool2d_params *p, const T *x, T *y, int nthreads),        \
      (p, x, y, nthreads))                                                                         \
    X(ctx, dt##_avgpool2d_bwd, (const fc_pool2d_params *p, const T *gy, T *gx, int nthreads),      \
      (p, gy, gx, nthreads))                                                                       \
    X(ctx, dt##_lppool2d_fwd, (const fc_pool2d_params *p, const T *x, T *y, int nthreads),         \
      (p, x, y, nthreads))                                                                         \
    X(ctx, dt##_lppool2d_bwd,                                                                      \
      (const fc_pool2d_params *p, const T *gy, const T *x, T *gx, int nthreads),                   \
      (p, gy, x, gx, nthreads))

/* Pooling on channels-last buffers: x and gx (N, H, W, C), y, gy and indices (N, OH, OW, C),
 * N * C = p->planes, C = p->channels; indices are flat h * W + w within each (n, c) plane, as in
 * NCHW, so the same numbers name the same element. Otherwise as FC_POOL_KERNELS. */
#define FC_POOL_NHWC_KERNELS(X, ctx, dt, T)                                                        \
    X(ctx, dt##_maxpool2d_nhwc_fwd,                                                                \
      (const fc_pool2d_params *p, const T *x, T *y, int64_t *indices, int nthreads),               \
      (p, x, y, indices, nthreads))                                                                \
    X(ctx, dt##_maxpool2d_nhwc_bwd,                                                                \
      (const fc_pool2d_params *p, const T *gy, const int64_t *indices, T *gx, int nthreads),       \
      (p, gy, indices, gx, nthreads))                                                              \
    X(ctx, dt##_avgpool2d_nhwc_fwd, (const fc_pool2d_params *p, const T *x, T *y, int nthreads),   \
      (p, x, y, nthreads))                                                                         \
    X(ctx, dt##_avgpool2d_nhwc_bwd, (const fc_pool2d_params *p, const T *gy, T *gx, int nthreads), \
      (p, gy, gx, nthreads))                                                                       \
    X(ctx, dt##_lppool2d_nhwc_fwd, (const fc_pool2d_params *p, const T *x, T *y, int nthreads),    \
      (p, x, y, nthreads))                                                                         \
    X(ctx, dt##_lppool2d_nhwc_bwd,                                                                 \
      (const fc_pool2d_params *p, const T *gy, const T *x, T *gx, int nthreads),                   \
      (p, gy, x, gx, nthreads))

/* Adaptive pooling (PyTorch's adaptive_avg_pool2d / adaptive_max_pool2d): only planes, in_h,
 * in_w, out_h and out_w of the params are read. The max-pool backward is maxpool2d_bwd. */
#define FC_ADAPTIVE_POOL_KERNELS(X, ctx, dt, T)                                                    \
    X(ctx, dt##_adaptive_avgpool2d_fwd,                                                            \
      (const fc_pool2d_params *p, const T *x, T *y, int nthreads), (p, x, y, nthreads))            \
    X(ctx, dt##_adaptive_avgpool2d_bwd,                                                            \
      (const fc_pool2d_params *p, const T *gy, T *gx, int nthreads), (p, gy, gx, nthreads))        \
    X(ctx, dt##_adaptive_maxpool2d_fwd,                                                            \
      (const fc_pool2d_params *p, const T *x, T *y, int64_t *indices, int nthreads),               \
      (p, x, y, indices, nthreads))

/* Element-wise, over n elements of any shape. */
#define FC_ELTWISE_KERNELS(X, ctx, dt, T)                                                          \
    X(ctx, dt##_relu_fwd, (fc_index n, const T *x, T *y, int nthreads), (n, x, y, nthreads))       \
    X(ctx, dt##_relu_bwd, (fc_index n, const T *gy, const T *x, T *gx, int nthreads),              \
      (n, gy, x, gx, nthreads))                                                                    \
    X(ctx, dt##_add_relu_fwd, (fc_index n, const T *a, const T *b, T *y, int nthreads),            \
      (n, a, b, y, nthreads))                                                                      \
    X(ctx, dt##_relu_bwd_add, (fc_index n, const T *gy, const T *x, T *gx, int nthreads),          \
      (n, gy, x, gx, nthreads))

/* Fully connected layers: x (m, k), W (n, k), y and gy (m, n), all row-major. bias and gb may
 * be NULL; with `accumulate` nonzero, gw and gb are added to instead of overwritten. */
#define FC_LINEAR_KERNELS(X, ctx, dt, T)                                                           \
    X(ctx, dt##_linear_fwd,                                                                        \
      (fc_index m, fc_index k, fc_index n, const T *x, const T *w, const T *bias, T *y,            \
       int nthreads),                                                                              \
      (m, k, n, x, w, bias, y, nthreads))                                                          \
    X(ctx, dt##_linear_bwd_input,                                                                  \
      (fc_index m, fc_index k, fc_index n, const T *gy, const T *w, T *gx, int nthreads),          \
      (m, k, n, gy, w, gx, nthreads))                                                              \
    X(ctx, dt##_linear_bwd_weight,                                                                 \
      (fc_index m, fc_index k, fc_index n, const T *gy, const T *x, T *gw, T *gb, int accumulate,  \
       int nthreads),                                                                              \
      (m, k, n, gy, x, gw, gb, accumulate, nthreads))

/* Batch normalisation (fc_batchnorm_params): mean and var are per channel, the batch's biased
 * variance or the running one. stats writes the batch's and, unless running_mean is NULL,
 * updates the running statistics with p->momentum (running_var with the unbiased variance).
 * weight and bias may be NULL (1 and 0); fwd adds `add` (x's shape, or NULL) to the normalised
 * output before the ReLU; training selects the gradient through the batch statistics.
 * train_fwd is stats (into mean and var) then fwd with them, in one kernel. */
#define FC_BATCHNORM_KERNELS(X, ctx, dt, T)                                                        \
    X(ctx, dt##_batchnorm_stats,                                                                   \
      (const fc_batchnorm_params *p, const T *x, T *mean, T *var, T *running_mean, T *running_var, \
       int nthreads),                                                                              \
      (p, x, mean, var, running_mean, running_var, nthreads))                                      \
    X(ctx, dt##_batchnorm_fwd,                                                                     \
      (const fc_batchnorm_params *p, const T *x, const T *mean, const T *var, const T *weight,     \
       const T *bias, const T *add, T *y, int nthreads),                                           \
      (p, x, mean, var, weight, bias, add, y, nthreads))                                           \
    X(ctx, dt##_batchnorm_bwd,                                                                     \
      (const fc_batchnorm_params *p, const T *gy, const T *y, const T *x, const T *mean,           \
       const T *var, const T *weight, int training, T *gx, T *gw, T *gb, int nthreads),            \
      (p, gy, y, x, mean, var, weight, training, gx, gw, gb, nthreads))                            \
    X(ctx, dt##_batchnorm_train_fwd,                                                               \
      (const fc_batchnorm_params *p, const T *x, T *mean, T *var, T *running_mean, T *running_var, \
       const T *weight, const T *bias, const T *add, T *y, int nthreads),                          \
      (p, x, mean, var, running_mean, running_var, weight, bias, add, y, nthreads))

/* The rest of a training step. cross_entropy: logits (n, c), n, c >= 1, int64 labels in
 * [0, c), the mean loss into *loss and, unless grad is NULL, (softmax - one_hot) * grad_scale.
 * dropout: uniform_mask holds draws in [0, 1) and is overwritten with the mask; y = x * mask.
 * adam_update, sgd_update: one in-place step of a parameter of n elements (momentum_buffer NULL
 * without momentum). */
#define FC_TRAINING_KERNELS(X, ctx, dt, T)                                                         \
    X(ctx, dt##_cross_entropy,                                                                     \
      (fc_index n, fc_index c, const T *logits, const int64_t *target, double grad_scale, T *loss, \
       T *grad, int nthreads),                                                                     \
      (n, c, logits, target, grad_scale, loss, grad, nthreads))                                    \
    X(ctx, dt##_dropout, (fc_index n, const T *x, double p, T *uniform_mask, T *y, int nthreads),  \
      (n, x, p, uniform_mask, y, nthreads))                                                        \
    X(ctx, dt##_adam_update,                                                                       \
      (fc_index n, T * param, const T *grad, T *exp_avg, T *exp_avg_sq, const fc_adam_params *p,   \
       int nthreads),                                                                              \
      (n, param, grad, exp_avg, exp_avg_sq, p, nthreads))                                          \
    X(ctx, dt##_sgd_update,                                                                        \
      (fc_index n, T * param, const T *grad, T *momentum_buffer, const fc_sgd_params *p,           \
       int nthreads),                                                                              \
      (n, param, grad, momentum_buffer, p, nthreads))

#endif /* FC_KERNEL_LIST_H */
