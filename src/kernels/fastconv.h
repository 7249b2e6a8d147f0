/* fastconv.h: the C kernels' public interface, as called from fastconv/_kernels.pyx.
 *
 * Contract: every pointer is a C-contiguous NCHW buffer of the stated size, every size is already
 * validated by fastconv/_validation.py (positive kernel/stride/dilation, output size >= 1, no 64-bit
 * overflow). The kernels trust their arguments and never allocate more than a bounded per-thread
 * workspace. Each function returns 0, or FC_ENOMEM if a workspace allocation failed (nothing is
 * written past the outputs in either case). The one exception to trust: max-pool backward checks
 * the indices as it scatters them (a separate pass would cost a third of its time) and returns
 * FC_EINDEX, having skipped them, if any lies outside [-1, plane size).
 *
 * Threads: `nthreads` is an upper bound; a kernel uses fewer when the problem is too small to gain.
 */
#ifndef FASTCONV_H
#define FASTCONV_H

#include <stdint.h>

#define FC_OK 0
#define FC_ENOMEM (-1)
#define FC_EINDEX (-2)

typedef int64_t fc_index;
typedef uint64_t fc_uindex; /* for one-compare bounds checks: (fc_uindex)i < (fc_uindex)n */

/* conv2d geometry. pad_top/pad_left shift the window; the bottom/right padding is implied by
 * out_h/out_w (so asymmetric 'same' padding needs no extra fields). */
typedef struct {
    fc_index batch, in_channels, in_h, in_w;
    fc_index out_channels, groups;
    fc_index kernel_h, kernel_w;
    fc_index stride_h, stride_w;
    fc_index pad_top, pad_left;
    fc_index dilation_h, dilation_w;
    fc_index out_h, out_w;
} fc_conv2d_params;

/* pool2d geometry over `planes` = N*C independent (in_h, in_w) planes. */
typedef struct {
    fc_index planes, in_h, in_w;
    fc_index kernel_h, kernel_w;
    fc_index stride_h, stride_w;
    fc_index pad_h, pad_w;
    fc_index dilation_h, dilation_w;
    fc_index out_h, out_w;
    int count_include_pad;     /* avg pool only */
    fc_index divisor_override; /* avg pool only; 0 = none */
} fc_pool2d_params;

/* ---- instruction-set selection ------------------------------------------------------------- */
typedef enum { FC_ISA_SCALAR = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2, FC_ISA_COUNT = 3 } fc_isa;

const char *fc_isa_name(int isa);
int fc_isa_compiled(int isa);  /* built into this binary */
int fc_isa_supported(int isa); /* compiled and this CPU can run it */
int fc_isa_selected(void);
int fc_select_isa(int isa);    /* returns 0, or -1 if the ISA is not supported here */
int fc_select_isa_from_env(void); /* FASTCONV_ISA=avx512|avx2|scalar, else the best supported */

/* ---- threads -------------------------------------------------------------------------------- */
int fc_openmp_enabled(void);
int fc_default_num_threads(void); /* omp_get_max_threads(), or 1 without OpenMP */

/* ---- convolution ---------------------------------------------------------------------------- */
int fc_f32_conv2d_fwd(const fc_conv2d_params *p, const float *x, const float *w, const float *bias,
                      float *y, int nthreads);
int fc_f64_conv2d_fwd(const fc_conv2d_params *p, const double *x, const double *w,
                      const double *bias, double *y, int nthreads);
int fc_f32_conv2d_bwd_input(const fc_conv2d_params *p, const float *gy, const float *w, float *gx,
                            int nthreads);
int fc_f64_conv2d_bwd_input(const fc_conv2d_params *p, const double *gy, const double *w,
                            double *gx, int nthreads);
/* gb may be NULL (no bias gradient wanted). */
int fc_f32_conv2d_bwd_weight(const fc_conv2d_params *p, const float *gy, const float *x, float *gw,
                             float *gb, int nthreads);
int fc_f64_conv2d_bwd_weight(const fc_conv2d_params *p, const double *gy, const double *x,
                             double *gw, double *gb, int nthreads);
/* The multiply-add peak in the microkernel's register type: `iterations` rounds of independent
 * FMA chains on up to nthreads threads; *flops gets the FLOPs done (time them to get FLOP/s). */
int fc_f32_fma_peak(fc_index iterations, int nthreads, double *flops);
int fc_f64_fma_peak(fc_index iterations, int nthreads, double *flops);

/* ---- pooling -------------------------------------------------------------------------------- */
/* indices may be NULL; a window wholly in the padding yields -inf and index -1. */
int fc_f32_maxpool2d_fwd(const fc_pool2d_params *p, const float *x, float *y, int64_t *indices,
                         int nthreads);
int fc_f64_maxpool2d_fwd(const fc_pool2d_params *p, const double *x, double *y, int64_t *indices,
                         int nthreads);
/* Backward kernels write every element of gx. Max-pool indices of -1 are skipped. */
int fc_f32_maxpool2d_bwd(const fc_pool2d_params *p, const float *gy, const int64_t *indices,
                         float *gx, int nthreads);
int fc_f64_maxpool2d_bwd(const fc_pool2d_params *p, const double *gy, const int64_t *indices,
                         double *gx, int nthreads);
int fc_f32_avgpool2d_fwd(const fc_pool2d_params *p, const float *x, float *y, int nthreads);
int fc_f64_avgpool2d_fwd(const fc_pool2d_params *p, const double *x, double *y, int nthreads);
int fc_f32_avgpool2d_bwd(const fc_pool2d_params *p, const float *gy, float *gx, int nthreads);
int fc_f64_avgpool2d_bwd(const fc_pool2d_params *p, const double *gy, double *gx, int nthreads);
/* L^p pooling, PyTorch's lp_pool2d (no padding; p > 0). */
int fc_f32_lppool2d_fwd(const fc_pool2d_params *p, double norm, const float *x, float *y,
                        int nthreads);
int fc_f64_lppool2d_fwd(const fc_pool2d_params *p, double norm, const double *x, double *y,
                        int nthreads);
int fc_f32_lppool2d_bwd(const fc_pool2d_params *p, double norm, const float *gy, const float *x,
                        float *gx, int nthreads);
int fc_f64_lppool2d_bwd(const fc_pool2d_params *p, double norm, const double *gy, const double *x,
                        double *gx, int nthreads);

/* ---- element-wise --------------------------------------------------------------------------- */
int fc_f32_relu_fwd(fc_index n, const float *x, float *y, int nthreads);
int fc_f64_relu_fwd(fc_index n, const double *x, double *y, int nthreads);
int fc_f32_relu_bwd(fc_index n, const float *gy, const float *x, float *gx, int nthreads);
int fc_f64_relu_bwd(fc_index n, const double *gy, const double *x, double *gx, int nthreads);

#endif /* FASTCONV_H */
