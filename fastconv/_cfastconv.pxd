# The C declarations fastconv/_kernels.pyx uses, once: the kernels' API (src/kernels/fastconv.h,
# whose kernel prototypes come from src/kernels/fc_kernel_list.h), the benchmark's private entry
# points (fc_private.h), the tests' microkernel tables (fc_ukernels.h) and the output cache
# (src/runtime/output_cache.h). Below them, `real`,
# the fused type the wrappers are written over, and one dtype-generic name per kernel that
# resolves at compile time to its float32 or float64 symbol.

from libc.stdint cimport int64_t


cdef extern from "fastconv.h" nogil:
    ctypedef int64_t fc_index
    ctypedef struct fc_conv2d_params:
        fc_index batch, in_channels, in_h, in_w
        fc_index out_channels, groups
        fc_index kernel_h, kernel_w
        fc_index stride_h, stride_w
        fc_index pad_top, pad_left
        fc_index dilation_h, dilation_w
        fc_index out_h, out_w
        int algorithm
        int weight_format
        int relu
    ctypedef struct fc_pool2d_params:
        fc_index planes, in_h, in_w
        fc_index channels
        fc_index kernel_h, kernel_w
        fc_index stride_h, stride_w
        fc_index pad_top, pad_bottom, pad_left, pad_right
        fc_index dilation_h, dilation_w
        fc_index out_h, out_w
        int count_include_pad
        fc_index divisor_override
        double norm
    ctypedef struct fc_batchnorm_params:
        fc_index batch, channels, inner
        double eps, momentum
        int relu
    ctypedef struct fc_adam_params:
        double lr, beta1, beta2, eps, weight_decay
        fc_index step
    ctypedef struct fc_sgd_params:
        double lr, momentum, dampening, weight_decay
        int nesterov, first

    int FC_OK
    int FC_ENOMEM
    int FC_EINDEX
    int FC_EALGORITHM
    int FC_ISA_COUNT
    int FC_CONV_ALGORITHM_COUNT
    int FC_WEIGHT_OIHW
    int FC_WEIGHT_HWIO

    const char *fc_isa_name(int isa)
    int fc_isa_compiled(int isa)
    int fc_isa_supported(int isa)
    int fc_isa_selected()
    int fc_select_isa(int isa)
    int fc_select_isa_for_thread(int isa)
    int fc_select_isa_from_env()
    int fc_openmp_enabled()
    int fc_default_num_threads()

    int fc_f32_conv2d_fwd(const fc_conv2d_params *p, const float *x, const float *w,
                          const float *bias, float *y, int nthreads)
    int fc_f64_conv2d_fwd(const fc_conv2d_params *p, const double *x, const double *w,
                          const double *bias, double *y, int nthreads)
    int fc_f32_conv2d_bwd_input(const fc_conv2d_params *p, const float *gy, const float *w,
                                const float *bias, float *gx, int nthreads)
    int fc_f64_conv2d_bwd_input(const fc_conv2d_params *p, const double *gy, const double *w,
                                const double *bias, double *gx, int nthreads)
    int fc_f32_conv2d_bwd_weight(const fc_conv2d_params *p, const float *gy, const float *x,
                                 float *gw, float *gb, int nthreads)
    int fc_f64_conv2d_bwd_weight(const fc_conv2d_params *p, const double *gy, const double *x,
                                 double *gw, double *gb, int nthreads)
    int fc_f32_conv2d_relu_bwd(const fc_conv2d_params *p, const float *gy, const float *y,
                               float *gz, float *gb, int nthreads)
    int fc_f64_conv2d_relu_bwd(const fc_conv2d_params *p, const double *gy, const double *y,
                               double *gz, double *gb, int nthreads)

    int fc_f32_maxpool2d_fwd(const fc_pool2d_params *p, const float *x, float *y,
                             int64_t *indices, int nthreads)
    int fc_f64_maxpool2d_fwd(const fc_pool2d_params *p, const double *x, double *y,
                             int64_t *indices, int nthreads)
    int fc_f32_maxpool2d_bwd(const fc_pool2d_params *p, const float *gy, const int64_t *indices,
                             float *gx, int nthreads)
    int fc_f64_maxpool2d_bwd(const fc_pool2d_params *p, const double *gy,
                             const int64_t *indices, double *gx, int nthreads)
    int fc_f32_avgpool2d_fwd(const fc_pool2d_params *p, const float *x, float *y, int nthreads)
    int fc_f64_avgpool2d_fwd(const fc_pool2d_params *p, const double *x, double *y, int nthreads)
    int fc_f32_avgpool2d_bwd(const fc_pool2d_params *p, const float *gy, float *gx, int nthreads)
    int fc_f64_avgpool2d_bwd(const fc_pool2d_params *p, const double *gy, double *gx,
                             int nthreads)
    int fc_f32_lppool2d_fwd(const fc_pool2d_params *p, const float *x, float *y, int nthreads)
    int fc_f64_lppool2d_fwd(const fc_pool2d_params *p, const double *x, double *y, int nthreads)
    int fc_f32_lppool2d_bwd(const fc_pool2d_params *p, const float *gy, const float *x,
                            float *gx, int nthreads)
    int fc_f64_lppool2d_bwd(const fc_pool2d_params *p, const double *gy, const double *x,
                            double *gx, int nthreads)

    int fc_f32_conv2d_nhwc_fwd(const fc_conv2d_params *p, const float *x, const float *w,
                               const float *bias, float *y, int nthreads)
    int fc_f64_conv2d_nhwc_fwd(const fc_conv2d_params *p, const double *x, const double *w,
                               const double *bias, double *y, int nthreads)
    int fc_f32_conv2d_nhwc_bwd_input(const fc_conv2d_params *p, const float *gy, const float *w,
                                     const float *bias, float *gx, int nthreads)
    int fc_f64_conv2d_nhwc_bwd_input(const fc_conv2d_params *p, const double *gy, const double *w,
                                     const double *bias, double *gx, int nthreads)
    int fc_f32_conv2d_nhwc_bwd_weight(const fc_conv2d_params *p, const float *gy, const float *x,
                                      float *gw, float *gb, int nthreads)
    int fc_f64_conv2d_nhwc_bwd_weight(const fc_conv2d_params *p, const double *gy, const double *x,
                                      double *gw, double *gb, int nthreads)
    int fc_f32_conv2d_nhwc_prepack(const fc_conv2d_params *p, const float *w, const float *bias,
                                   float *packed, fc_index *size, int nthreads)
    int fc_f64_conv2d_nhwc_prepack(const fc_conv2d_params *p, const double *w,
                                   const double *bias, double *packed, fc_index *size,
                                   int nthreads)
    int fc_f32_conv2d_nhwc_fwd_prepacked(const fc_conv2d_params *p, const float *x,
                                         const float *w, const float *packed, const float *bias,
                                         const float *residual, float *y, int nthreads)
    int fc_f64_conv2d_nhwc_fwd_prepacked(const fc_conv2d_params *p, const double *x,
                                         const double *w, const double *packed,
                                         const double *bias, const double *residual, double *y,
                                         int nthreads)

    int fc_f32_maxpool2d_nhwc_fwd(const fc_pool2d_params *p, const float *x, float *y,
                                  int64_t *indices, int nthreads)
    int fc_f64_maxpool2d_nhwc_fwd(const fc_pool2d_params *p, const double *x, double *y,
                                  int64_t *indices, int nthreads)
    int fc_f32_maxpool2d_nhwc_bwd(const fc_pool2d_params *p, const float *gy,
                                  const int64_t *indices, float *gx, int nthreads)
    int fc_f64_maxpool2d_nhwc_bwd(const fc_pool2d_params *p, const double *gy,
                                  const int64_t *indices, double *gx, int nthreads)
    int fc_f32_avgpool2d_nhwc_fwd(const fc_pool2d_params *p, const float *x, float *y, int nthreads)
    int fc_f64_avgpool2d_nhwc_fwd(const fc_pool2d_params *p, const double *x, double *y,
                                  int nthreads)
    int fc_f32_avgpool2d_nhwc_bwd(const fc_pool2d_params *p, const float *gy, float *gx,
                                  int nthreads)
    int fc_f64_avgpool2d_nhwc_bwd(const fc_pool2d_params *p, const double *gy, double *gx,
                                  int nthreads)
    int fc_f32_lppool2d_nhwc_fwd(const fc_pool2d_params *p, const float *x, float *y, int nthreads)
    int fc_f64_lppool2d_nhwc_fwd(const fc_pool2d_params *p, const double *x, double *y,
                                 int nthreads)
    int fc_f32_lppool2d_nhwc_bwd(const fc_pool2d_params *p, const float *gy, const float *x,
                                 float *gx, int nthreads)
    int fc_f64_lppool2d_nhwc_bwd(const fc_pool2d_params *p, const double *gy, const double *x,
                                 double *gx, int nthreads)

    int fc_f32_adaptive_avgpool2d_fwd(const fc_pool2d_params *p, const float *x, float *y,
                                      int nthreads)
    int fc_f64_adaptive_avgpool2d_fwd(const fc_pool2d_params *p, const double *x, double *y,
                                      int nthreads)
    int fc_f32_adaptive_avgpool2d_bwd(const fc_pool2d_params *p, const float *gy, float *gx,
                                      int nthreads)
    int fc_f64_adaptive_avgpool2d_bwd(const fc_pool2d_params *p, const double *gy, double *gx,
                                      int nthreads)
    int fc_f32_adaptive_maxpool2d_fwd(const fc_pool2d_params *p, const float *x, float *y,
                                      int64_t *indices, int nthreads)
    int fc_f64_adaptive_maxpool2d_fwd(const fc_pool2d_params *p, const double *x, double *y,
                                      int64_t *indices, int nthreads)

    int fc_f32_relu_fwd(fc_index n, const float *x, float *y, int nthreads)
    int fc_f64_relu_fwd(fc_index n, const double *x, double *y, int nthreads)
    int fc_f32_relu_bwd(fc_index n, const float *gy, const float *x, float *gx, int nthreads)
    int fc_f64_relu_bwd(fc_index n, const double *gy, const double *x, double *gx, int nthreads)
    int fc_f32_add_relu_fwd(fc_index n, const float *a, const float *b, float *y, int nthreads)
    int fc_f64_add_relu_fwd(fc_index n, const double *a, const double *b, double *y,
                            int nthreads)
    int fc_f32_relu_bwd_add(fc_index n, const float *gy, const float *x, float *gx,
                            int nthreads)
    int fc_f64_relu_bwd_add(fc_index n, const double *gy, const double *x, double *gx,
                            int nthreads)

    int fc_f32_linear_fwd(fc_index m, fc_index k, fc_index n, const float *x, const float *w,
                          const float *bias, float *y, int nthreads)
    int fc_f64_linear_fwd(fc_index m, fc_index k, fc_index n, const double *x, const double *w,
                          const double *bias, double *y, int nthreads)
    int fc_f32_linear_bwd_input(fc_index m, fc_index k, fc_index n, const float *gy,
                                const float *w, float *gx, int nthreads)
    int fc_f64_linear_bwd_input(fc_index m, fc_index k, fc_index n, const double *gy,
                                const double *w, double *gx, int nthreads)
    int fc_f32_linear_bwd_weight(fc_index m, fc_index k, fc_index n, const float *gy,
                                 const float *x, float *gw, float *gb, int accumulate,
                                 int nthreads)
    int fc_f64_linear_bwd_weight(fc_index m, fc_index k, fc_index n, const double *gy,
                                 const double *x, double *gw, double *gb, int accumulate,
                                 int nthreads)

    int fc_f32_batchnorm_stats(const fc_batchnorm_params *p, const float *x, float *mean,
                               float *var, float *running_mean, float *running_var, int nthreads)
    int fc_f64_batchnorm_stats(const fc_batchnorm_params *p, const double *x, double *mean,
                               double *var, double *running_mean, double *running_var,
                               int nthreads)
    int fc_f32_batchnorm_fwd(const fc_batchnorm_params *p, const float *x, const float *mean,
                             const float *var, const float *weight, const float *bias,
                             const float *add, float *y, int nthreads)
    int fc_f64_batchnorm_fwd(const fc_batchnorm_params *p, const double *x, const double *mean,
                             const double *var, const double *weight, const double *bias,
                             const double *add, double *y, int nthreads)
    int fc_f32_batchnorm_bwd(const fc_batchnorm_params *p, const float *gy, const float *y,
                             const float *x, const float *mean, const float *var,
                             const float *weight, int training, float *gx, float *gw, float *gb,
                             int nthreads)
    int fc_f64_batchnorm_bwd(const fc_batchnorm_params *p, const double *gy, const double *y,
                             const double *x, const double *mean, const double *var,
                             const double *weight, int training, double *gx, double *gw,
                             double *gb, int nthreads)
    int fc_f32_batchnorm_train_fwd(const fc_batchnorm_params *p, const float *x, float *mean,
                                   float *var, float *running_mean, float *running_var,
                                   const float *weight, const float *bias, const float *add,
                                   float *y, int nthreads)
    int fc_f64_batchnorm_train_fwd(const fc_batchnorm_params *p, const double *x, double *mean,
                                   double *var, double *running_mean, double *running_var,
                                   const double *weight, const double *bias, const double *add,
                                   double *y, int nthreads)

    int fc_f32_cross_entropy(fc_index n, fc_index c, const float *logits, const int64_t *target,
                             double grad_scale, float *loss, float *grad, int nthreads)
    int fc_f64_cross_entropy(fc_index n, fc_index c, const double *logits,
                             const int64_t *target, double grad_scale, double *loss,
                             double *grad, int nthreads)
    int fc_f32_dropout(fc_index n, const float *x, double p, float *uniform_mask, float *y,
                       int nthreads)
    int fc_f64_dropout(fc_index n, const double *x, double p, double *uniform_mask, double *y,
                       int nthreads)
    int fc_f32_adam_update(fc_index n, float *param, const float *grad, float *exp_avg,
                           float *exp_avg_sq, const fc_adam_params *p, int nthreads)
    int fc_f64_adam_update(fc_index n, double *param, const double *grad, double *exp_avg,
                           double *exp_avg_sq, const fc_adam_params *p, int nthreads)
    int fc_f32_sgd_update(fc_index n, float *param, const float *grad, float *momentum_buffer,
                          const fc_sgd_params *p, int nthreads)
    int fc_f64_sgd_update(fc_index n, double *param, const double *grad,
                          double *momentum_buffer, const fc_sgd_params *p, int nthreads)


cdef extern from "fc_private.h" nogil:
    ctypedef enum fc_dtype:
        FC_DTYPE_f32
        FC_DTYPE_f64
    ctypedef enum fc_conv_pass:
        FC_CONV_FWD
        FC_CONV_BWD_INPUT
        FC_CONV_BWD_WEIGHT
        FC_CONV_NHWC_FWD
        FC_CONV_NHWC_BWD_INPUT
        FC_CONV_NHWC_BWD_WEIGHT
    ctypedef struct fc_tuning:
        int mr, nr
        fc_index kc, tile_pixels, indirection_pointers, task_rows, winograd_block
        fc_index winograd_min_channels
        fc_index grouped_max_channels
        fc_index direct_input_max_channels
        fc_index im2col_max_channels
        fc_index weight_grad_tasks, weight_grad_private_bytes, weight_grad_pack_bytes
        double phases_ratio, phases_slack
        double conv_min_work, stream_min_work, pool_min_work, eltwise_min_work
        fc_index direct_input_pack_bytes
    ctypedef struct fc_conv_plan:
        int algorithm
        int nonfinite
        const fc_tuning *tuning
    const fc_tuning fc_tuning_table[][2]  # [isa][dtype]
    int fc_conv2d_plan(fc_conv_pass which, fc_dtype dtype, int isa, const fc_conv2d_params *p,
                       fc_conv_plan *plan)
    const char *fc_conv2d_cannot_run(fc_conv_pass which, int algorithm, fc_dtype dtype, int isa,
                                     const fc_conv2d_params *p)

    int fc_f32_fma_peak(fc_index iterations, int nthreads, double *flops)
    int fc_f64_fma_peak(fc_index iterations, int nthreads, double *flops)


cdef extern from "fc_ukernels.h" nogil:
    ctypedef struct fc_ukernel_table:
        int dtype, mr, nr
        const char *gemm_name
        void (*gemm)(fc_index kc, const void *a, const void *b, void *c, fc_index ldc, int mr,
                     int nr, int accumulate, const void *bias)
        const char *gemm_half_name
        void (*gemm_half)(fc_index kc, const void *a, const void *b, void *c, fc_index ldc,
                          int mr, int nr, int accumulate, const void *bias)
        const char *gemm_rows_name
        void (*gemm_rows)(fc_index segs, fc_index len, fc_index a_step, const void *const *a,
                          const void *b, void *c, fc_index ldc)
        const char *gemm_rows_half_name
        void (*gemm_rows_half)(fc_index segs, fc_index len, fc_index a_step,
                               const void *const *a, const void *b, void *c, fc_index ldc)
        const char *pack_a_name
        void (*pack_a)(fc_index m, fc_index kd, const void *src, fc_index rs, fc_index cs,
                       void *dst)
        const char *pack_b_name
        void (*pack_b)(fc_index kd, fc_index nc, const void *src, fc_index ld, void *dst)
        const char *pack_b_panel_name
        void (*pack_b_panel)(fc_index kc, const void *const *rows, fc_index q, void *dst)
        const char *pack_dyt_name
        void (*pack_dyt)(const void *gy, fc_index kg, fc_index p, fc_index ow, fc_index wph,
                         fc_index q0, fc_index n, void *dst)
        const char *gather_run_name
        void (*gather_run)(const void *row, fc_index iw0, fc_index s, fc_index w, fc_index len,
                           void *dst, fc_index ds)
        const char *scatter_add_run_name
        void (*scatter_add_run)(void *row, fc_index iw0, fc_index s, fc_index w, fc_index len,
                                const void *src)
        const char *winograd_kernel_name
        int (*winograd_kernel)(const void *w, fc_index k0, fc_index kg, fc_index cg,
                               fc_index c, void *u)
        const char *winograd_input_name
        void (*winograd_input)(const void *plane, fc_index wp, fc_index th0, fc_index th1,
                               fc_index m0, fc_index m1, void *lo, void *hi, void *const *v)
        const char *winograd_output_name
        void (*winograd_output)(const void *const *m, fc_index n, const void *bias, void *tmp,
                                fc_index ts)
        const char *plane_sum_name
        void (*plane_sum)(fc_index n, const void *x, void *sum)
        const char *plane_argmax_name
        fc_index (*plane_argmax)(fc_index n, const void *x, void *value)
        const char *dwconv_name
        void (*dwconv)(fc_index n, int kk, const void *w, const void *src, const fc_index *off,
                       void *out)
        const char *dwconv_dot_name
        void (*dwconv_dot)(fc_index n, int kk, const void *g, const void *src,
                           const fc_index *off, void *acc)
        const char *igemm_name
        void (*igemm)(fc_index ks, fc_index kc, const void *const *a, const void *b, void *c,
                      fc_index ldc, int mr, int nr, int accumulate, const void *bias)
        const char *igemm_half_name
        void (*igemm_half)(fc_index ks, fc_index kc, const void *const *a, const void *b,
                           void *c, fc_index ldc, int mr, int nr, int accumulate,
                           const void *bias)
        const char *gemm_cols_name
        void (*gemm_cols)(fc_index kc, const void *const *a, fc_index off, const void *b,
                          void *c, fc_index ldc)
        const char *gemm_cols_half_name
        void (*gemm_cols_half)(fc_index kc, const void *const *a, fc_index off, const void *b,
                               void *c, fc_index ldc)
        const char *dwconv_nhwc_name
        void (*dwconv_nhwc)(fc_index c, fc_index ne, const void *const *a,
                            const void *const *b, void *y, int accumulate, const void *bias)
        const char *dwconv_dot_nhwc_name
        void (*dwconv_dot_nhwc)(fc_index c, fc_index n, fc_index kh, fc_index kw,
                                const void *x, fc_index xs, fc_index rs, fc_index ts,
                                const void *g, void *y)
        const char *gconv4_nhwc_name
        void (*gconv4_nhwc)(fc_index c, fc_index ne, const void *const *a,
                            const void *const *b, void *y, int accumulate, const void *bias)
        const char *gconv4_dot_nhwc_name
        void (*gconv4_dot_nhwc)(fc_index c, fc_index ne, const void *const *a,
                                const void *const *b, void *y)
        const char *igemm_wide_name
        void (*igemm_wide)(fc_index ks, fc_index kc, const void *const *a, const void *b,
                           const void *b2, void *c, fc_index ldc, int mr, int nr,
                           int accumulate, const void *bias)
        const char *gemm_rows_images_name
        void (*gemm_rows_images)(fc_index imgs, fc_index a_img, fc_index b_img, fc_index segs,
                                 fc_index len, fc_index a_step, const void *const *a,
                                 const void *b, void *c, fc_index ldc)
        const char *gemm_rows_images_half_name
        void (*gemm_rows_images_half)(fc_index imgs, fc_index a_img, fc_index b_img,
                                      fc_index segs, fc_index len, fc_index a_step,
                                      const void *const *a, const void *b, void *c,
                                      fc_index ldc)
        const char *gemm_cols_wide_name
        void (*gemm_cols_wide)(fc_index kc, const void *const *a, fc_index off, const void *b,
                               void *c, fc_index ldc)
        int gemm_cols_wide_rows

    const fc_ukernel_table *fc_ukernel_table_for(int isa, int dtype)


cdef extern from "output_cache.h":
    ctypedef struct fc_cache_info:
        size_t limit, held, blocks, hits, misses
    size_t FC_CACHE_MIN_BYTES
    int fc_cache_init(size_t limit) except -1
    object fc_cache_handler()
    void fc_cache_set_limit(size_t limit) nogil
    fc_cache_info fc_cache_get_info() nogil


ctypedef fused real:
    float
    double


# ---- each kernel under one name for both dtypes (and, for convolution and pooling, layouts:
# nhwc picks the channels-last kernel) ------------------------------------------------------------

cdef inline int conv2d_fwd(const fc_conv2d_params *p, bint nhwc, const real *x, const real *w,
                           const real *bias, real *y, int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_conv2d_nhwc_fwd(p, x, w, bias, y, nthreads)
        return fc_f32_conv2d_fwd(p, x, w, bias, y, nthreads)
    else:
        if nhwc:
            return fc_f64_conv2d_nhwc_fwd(p, x, w, bias, y, nthreads)
        return fc_f64_conv2d_fwd(p, x, w, bias, y, nthreads)


cdef inline int conv2d_bwd_input(const fc_conv2d_params *p, bint nhwc, const real *gy,
                                 const real *w, const real *bias, real *gx,
                                 int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_conv2d_nhwc_bwd_input(p, gy, w, bias, gx, nthreads)
        return fc_f32_conv2d_bwd_input(p, gy, w, bias, gx, nthreads)
    else:
        if nhwc:
            return fc_f64_conv2d_nhwc_bwd_input(p, gy, w, bias, gx, nthreads)
        return fc_f64_conv2d_bwd_input(p, gy, w, bias, gx, nthreads)


cdef inline int conv2d_bwd_weight(const fc_conv2d_params *p, bint nhwc, const real *gy,
                                  const real *x, real *gw, real *gb, int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_conv2d_nhwc_bwd_weight(p, gy, x, gw, gb, nthreads)
        return fc_f32_conv2d_bwd_weight(p, gy, x, gw, gb, nthreads)
    else:
        if nhwc:
            return fc_f64_conv2d_nhwc_bwd_weight(p, gy, x, gw, gb, nthreads)
        return fc_f64_conv2d_bwd_weight(p, gy, x, gw, gb, nthreads)


cdef inline int conv2d_relu_bwd(const fc_conv2d_params *p, const real *gy, const real *y,
                                real *gz, real *gb, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_conv2d_relu_bwd(p, gy, y, gz, gb, nthreads)
    else:
        return fc_f64_conv2d_relu_bwd(p, gy, y, gz, gb, nthreads)


cdef inline int maxpool2d_fwd(const fc_pool2d_params *p, bint nhwc, const real *x, real *y,
                              int64_t *indices, int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_maxpool2d_nhwc_fwd(p, x, y, indices, nthreads)
        return fc_f32_maxpool2d_fwd(p, x, y, indices, nthreads)
    else:
        if nhwc:
            return fc_f64_maxpool2d_nhwc_fwd(p, x, y, indices, nthreads)
        return fc_f64_maxpool2d_fwd(p, x, y, indices, nthreads)


cdef inline int maxpool2d_bwd(const fc_pool2d_params *p, bint nhwc, const real *gy,
                              const int64_t *indices, real *gx, int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_maxpool2d_nhwc_bwd(p, gy, indices, gx, nthreads)
        return fc_f32_maxpool2d_bwd(p, gy, indices, gx, nthreads)
    else:
        if nhwc:
            return fc_f64_maxpool2d_nhwc_bwd(p, gy, indices, gx, nthreads)
        return fc_f64_maxpool2d_bwd(p, gy, indices, gx, nthreads)


cdef inline int avgpool2d_fwd(const fc_pool2d_params *p, bint nhwc, const real *x, real *y,
                              int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_avgpool2d_nhwc_fwd(p, x, y, nthreads)
        return fc_f32_avgpool2d_fwd(p, x, y, nthreads)
    else:
        if nhwc:
            return fc_f64_avgpool2d_nhwc_fwd(p, x, y, nthreads)
        return fc_f64_avgpool2d_fwd(p, x, y, nthreads)


cdef inline int avgpool2d_bwd(const fc_pool2d_params *p, bint nhwc, const real *gy, real *gx,
                              int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_avgpool2d_nhwc_bwd(p, gy, gx, nthreads)
        return fc_f32_avgpool2d_bwd(p, gy, gx, nthreads)
    else:
        if nhwc:
            return fc_f64_avgpool2d_nhwc_bwd(p, gy, gx, nthreads)
        return fc_f64_avgpool2d_bwd(p, gy, gx, nthreads)


cdef inline int lppool2d_fwd(const fc_pool2d_params *p, bint nhwc, const real *x, real *y,
                             int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_lppool2d_nhwc_fwd(p, x, y, nthreads)
        return fc_f32_lppool2d_fwd(p, x, y, nthreads)
    else:
        if nhwc:
            return fc_f64_lppool2d_nhwc_fwd(p, x, y, nthreads)
        return fc_f64_lppool2d_fwd(p, x, y, nthreads)


cdef inline int lppool2d_bwd(const fc_pool2d_params *p, bint nhwc, const real *gy, const real *x,
                             real *gx, int nthreads) noexcept nogil:
    if real is float:
        if nhwc:
            return fc_f32_lppool2d_nhwc_bwd(p, gy, x, gx, nthreads)
        return fc_f32_lppool2d_bwd(p, gy, x, gx, nthreads)
    else:
        if nhwc:
            return fc_f64_lppool2d_nhwc_bwd(p, gy, x, gx, nthreads)
        return fc_f64_lppool2d_bwd(p, gy, x, gx, nthreads)


cdef inline int adaptive_avgpool2d_fwd(const fc_pool2d_params *p, const real *x, real *y,
                                       int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_adaptive_avgpool2d_fwd(p, x, y, nthreads)
    else:
        return fc_f64_adaptive_avgpool2d_fwd(p, x, y, nthreads)


cdef inline int adaptive_avgpool2d_bwd(const fc_pool2d_params *p, const real *gy, real *gx,
                                       int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_adaptive_avgpool2d_bwd(p, gy, gx, nthreads)
    else:
        return fc_f64_adaptive_avgpool2d_bwd(p, gy, gx, nthreads)


cdef inline int adaptive_maxpool2d_fwd(const fc_pool2d_params *p, const real *x, real *y,
                                       int64_t *indices, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_adaptive_maxpool2d_fwd(p, x, y, indices, nthreads)
    else:
        return fc_f64_adaptive_maxpool2d_fwd(p, x, y, indices, nthreads)


cdef inline int relu_fwd(fc_index n, const real *x, real *y, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_relu_fwd(n, x, y, nthreads)
    else:
        return fc_f64_relu_fwd(n, x, y, nthreads)


cdef inline int relu_bwd(fc_index n, const real *gy, const real *x, real *gx,
                         int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_relu_bwd(n, gy, x, gx, nthreads)
    else:
        return fc_f64_relu_bwd(n, gy, x, gx, nthreads)


cdef inline int relu_bwd_add(fc_index n, const real *gy, const real *x, real *gx,
                             int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_relu_bwd_add(n, gy, x, gx, nthreads)
    else:
        return fc_f64_relu_bwd_add(n, gy, x, gx, nthreads)


cdef inline int add_relu_fwd(fc_index n, const real *a, const real *b, real *y,
                             int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_add_relu_fwd(n, a, b, y, nthreads)
    else:
        return fc_f64_add_relu_fwd(n, a, b, y, nthreads)



cdef inline int linear_fwd(fc_index m, fc_index k, fc_index n, const real *x, const real *w,
                           const real *bias, real *y, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_linear_fwd(m, k, n, x, w, bias, y, nthreads)
    else:
        return fc_f64_linear_fwd(m, k, n, x, w, bias, y, nthreads)


cdef inline int linear_bwd_input(fc_index m, fc_index k, fc_index n, const real *gy,
                                 const real *w, real *gx, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_linear_bwd_input(m, k, n, gy, w, gx, nthreads)
    else:
        return fc_f64_linear_bwd_input(m, k, n, gy, w, gx, nthreads)


cdef inline int linear_bwd_weight(fc_index m, fc_index k, fc_index n, const real *gy,
                                  const real *x, real *gw, real *gb, int accumulate,
                                  int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_linear_bwd_weight(m, k, n, gy, x, gw, gb, accumulate, nthreads)
    else:
        return fc_f64_linear_bwd_weight(m, k, n, gy, x, gw, gb, accumulate, nthreads)


cdef inline int batchnorm_stats(const fc_batchnorm_params *p, const real *x, real *mean,
                                real *var, real *running_mean, real *running_var,
                                int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_batchnorm_stats(p, x, mean, var, running_mean, running_var, nthreads)
    else:
        return fc_f64_batchnorm_stats(p, x, mean, var, running_mean, running_var, nthreads)


cdef inline int batchnorm_fwd(const fc_batchnorm_params *p, const real *x, const real *mean,
                              const real *var, const real *weight, const real *bias,
                              const real *add, real *y, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_batchnorm_fwd(p, x, mean, var, weight, bias, add, y, nthreads)
    else:
        return fc_f64_batchnorm_fwd(p, x, mean, var, weight, bias, add, y, nthreads)


cdef inline int batchnorm_bwd(const fc_batchnorm_params *p, const real *gy, const real *y,
                              const real *x, const real *mean, const real *var,
                              const real *weight, int training, real *gx, real *gw, real *gb,
                              int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_batchnorm_bwd(p, gy, y, x, mean, var, weight, training, gx, gw, gb,
                                    nthreads)
    else:
        return fc_f64_batchnorm_bwd(p, gy, y, x, mean, var, weight, training, gx, gw, gb,
                                    nthreads)


cdef inline int batchnorm_train_fwd(const fc_batchnorm_params *p, const real *x, real *mean,
                                    real *var, real *running_mean, real *running_var,
                                    const real *weight, const real *bias, const real *add,
                                    real *y, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_batchnorm_train_fwd(p, x, mean, var, running_mean, running_var, weight,
                                          bias, add, y, nthreads)
    else:
        return fc_f64_batchnorm_train_fwd(p, x, mean, var, running_mean, running_var, weight,
                                          bias, add, y, nthreads)


cdef inline int cross_entropy(fc_index n, fc_index c, const real *logits, const int64_t *target,
                              double grad_scale, real *loss, real *grad,
                              int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_cross_entropy(n, c, logits, target, grad_scale, loss, grad, nthreads)
    else:
        return fc_f64_cross_entropy(n, c, logits, target, grad_scale, loss, grad, nthreads)


cdef inline int dropout(fc_index n, const real *x, double p, real *uniform_mask, real *y,
                        int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_dropout(n, x, p, uniform_mask, y, nthreads)
    else:
        return fc_f64_dropout(n, x, p, uniform_mask, y, nthreads)


cdef inline int adam_update(fc_index n, real *param, const real *grad, real *exp_avg,
                            real *exp_avg_sq, const fc_adam_params *p,
                            int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_adam_update(n, param, grad, exp_avg, exp_avg_sq, p, nthreads)
    else:
        return fc_f64_adam_update(n, param, grad, exp_avg, exp_avg_sq, p, nthreads)


cdef inline int sgd_update(fc_index n, real *param, const real *grad, real *momentum_buffer,
                           const fc_sgd_params *p, int nthreads) noexcept nogil:
    if real is float:
        return fc_f32_sgd_update(n, param, grad, momentum_buffer, p, nthreads)
    else:
        return fc_f64_sgd_update(n, param, grad, momentum_buffer, p, nthreads)
