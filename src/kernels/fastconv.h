/* fastconv.h: the C kernels' public interface, as called from fastconv/_kernels.pyx.
 *
 * Contract: every pointer is a C-contiguous buffer of the stated size, NCHW for the plain entry
 * points and NHWC (channels last) for the *_nhwc_* ones, every size is already
 * validated by fastconv/_validation.py (positive kernel/stride/dilation, output size >= 1, no
 * 64-bit overflow). The kernels trust their arguments and never allocate more than a bounded
 * per-thread workspace. Each function returns 0, or FC_ENOMEM if a workspace allocation failed
 * (nothing is written past the outputs in either case). The one exception to trust: max-pool
 * backward checks the indices as it scatters them (a separate pass would read them all twice)
 * and returns FC_EINDEX, having skipped them, if any lies outside [-1, plane size). A call whose
 * fc_conv2d_params forces an algorithm that cannot run its geometry returns FC_EALGORITHM
 * having done nothing.
 *
 * Threads: `nthreads` is an upper bound; a kernel uses fewer when the problem is too small to gain.
 * The kernels' prototypes are generated from fc_kernel_list.h, where each is written once.
 */
#ifndef FASTCONV_H
#define FASTCONV_H

#include <stdint.h>

#define FC_OK 0
#define FC_ENOMEM (-1)
#define FC_EINDEX (-2)
#define FC_EALGORITHM (-3) /* the algorithm forced in fc_conv2d_params cannot run this pass */

typedef int64_t fc_index;
typedef uint64_t fc_uindex; /* for one-compare bounds checks: (fc_uindex)i < (fc_uindex)n */

/* The ways a convolution pass can run (NNPACK's nnp_convolution_algorithm is the model).
 * src/kernels/conv2d_plan.c chooses one per call; docs/KERNELS.md says when and why. */
typedef enum {
    FC_CONV_AUTO = 0,       /* let the plan choose */
    FC_CONV_DIRECT = 1,     /* forward, weight gradient: packed GEMM on the stride phases */
    FC_CONV_WINOGRAD = 2,   /* forward: Winograd F(2x2, 3x3); 3x3 kernels, stride 1, dilation 1 */
    FC_CONV_PLAIN = 3,      /* forward, weight gradient: plain loops from the definition */
    FC_CONV_TRANSPOSED = 4, /* input gradient: a forward convolution of dY; stride 1 */
    FC_CONV_COL2IM = 5,     /* input gradient: a GEMM into col(dX), scattered back */
    FC_CONV_DEPTHWISE = 6,  /* every pass, C/groups = 1: per plane, vectorised along the pixels */
    FC_CONV_GROUPED = 7,    /* weight gradient: per group, dots of dY's planes with X's phases */
    FC_CONV_PIXELS = 8,     /* forward: direct with pixels as the tile's rows, channels as lanes */
    FC_CONV_IM2COL = 9,     /* channels-last forward: a GEMM on per-tile im2col panels */
    FC_CONV_ALGORITHM_COUNT = 10
} fc_conv_algorithm;

/* The weight layouts the convolution kernels read and write: PyTorch's (K, C/groups, kH, kW), and
 * TensorFlow's (kH, kW, C/groups, K). The NCHW kernels take OIHW only. */
typedef enum { FC_WEIGHT_OIHW = 0, FC_WEIGHT_HWIO = 1 } fc_weight_format;

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
    /* FC_CONV_AUTO (0), or the fc_conv_algorithm this pass must run, for tests and benchmarks:
     * the call returns FC_EALGORITHM, having done nothing, if it cannot run this geometry */
    int algorithm;
    int weight_format; /* fc_weight_format of w and gw: FC_WEIGHT_OIHW unless an NHWC kernel */
    /* Forward pass: nonzero applies ReLU (x unless x < 0, as relu_fwd) to each output after
     * its bias, in the pass that writes it (conv2d_relu's fused epilogue). Other passes: 0. */
    int relu;
} fc_conv2d_params;

/* pool2d geometry over `planes` = N*C independent (in_h, in_w) planes (the NHWC kernels read
 * `channels`, C, to find them: a plane's elements lie C apart). Window starts use
 * pad_top/pad_left; pad_bottom/pad_right bound an average window counted with padding (and so
 * the divisor of count_include_pad and the L^p scale) and are implied in out_h/out_w. */
typedef struct {
    fc_index planes, in_h, in_w;
    fc_index channels; /* C of planes = N * C */
    fc_index kernel_h, kernel_w;
    fc_index stride_h, stride_w;
    fc_index pad_top, pad_bottom, pad_left, pad_right;
    fc_index dilation_h, dilation_w;
    fc_index out_h, out_w;
    int count_include_pad;     /* avg pool only */
    fc_index divisor_override; /* avg pool only; 0 = none */
    double norm;               /* lp pool only: the p of the L^p norm, > 0 */
} fc_pool2d_params;

/* batch normalisation over channel 1 of x viewed as (batch, channels, inner), inner being the
 * product of the dims after the channel (1 for an (N, C) input). */
typedef struct {
    fc_index batch, channels, inner;
    double eps;      /* added to the variance */
    double momentum; /* of the running statistics' update */
    int relu;        /* forward: nonzero applies ReLU to each output (batch_norm's relu) */
} fc_batchnorm_params;

/* One optimiser step's hyper-parameters (the update rules are torch.optim's, fc_kernel_list.h). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    fc_index step; /* 1 on the first update */
} fc_adam_params;

typedef struct {
    double lr, momentum, dampening, weight_decay;
    int nesterov;
    int first; /* the momentum buffer is set to the gradient, not updated */
} fc_sgd_params;

/* ---- instruction-set selection ------------------------------------------------------------- */
typedef enum { FC_ISA_SCALAR = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2, FC_ISA_COUNT = 3 } fc_isa;

const char *fc_isa_name(int isa);
int fc_isa_compiled(int isa);  /* built into this binary */
int fc_isa_supported(int isa); /* compiled and this CPU can run it */
int fc_isa_selected(void);
int fc_select_isa(int isa); /* returns 0, or -1 if the ISA is not supported here */
/* The calling thread's own ISA over the process's (-1: back to the process's); 0, or -1 if the
 * ISA is not supported here. fc_isa_selected() gives the calling thread's. */
int fc_select_isa_for_thread(int isa);
int fc_select_isa_from_env(void); /* FASTCONV_ISA=avx512|avx2|scalar, else the best supported */

/* ---- threads -------------------------------------------------------------------------------- */
int fc_openmp_enabled(void);
int fc_default_num_threads(void); /* omp_get_max_threads(), or 1 without OpenMP */

/* ---- kernels: fc_f32_conv2d_fwd, fc_f64_maxpool2d_bwd, ... (fc_kernel_list.h) ------------- */
#include "fc_kernel_list.h"

#define FC_PUBLIC_PROTOTYPE(ctx, name, params, args) int fc_##name params;
FC_KERNEL_LIST(FC_PUBLIC_PROTOTYPE, _)
#undef FC_PUBLIC_PROTOTYPE

#endif /* FASTCONV_H */
