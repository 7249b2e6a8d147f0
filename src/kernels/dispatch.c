/* dispatch.c: runtime choice of the instruction set for the convolution, pooling and relu
 * kernels, and the thread helpers. The best ISA that is both compiled in and supported by this CPU is chosen at import;
 * FASTCONV_ISA=avx512|avx2|scalar asks for a specific one (falling back to the best supported one
 * below it), and fc_select_isa() switches in-process so the tests can run every path. */
#include <stdio.h>

#include "fc_internal.h"

/* Every kernel that has per-ISA variants, as X(name, return-less parameter list, argument names).
 * The table type, its per-ISA rows and the public forwarding functions are all generated from
 * this one list. */
#define FC_KERNELS(X)                                                                              \
    X(f32_conv2d_fwd, (const fc_conv2d_params *p, const float *x, const float *w,                 \
                       const float *b, float *y, int nt), (p, x, w, b, y, nt))                    \
    X(f64_conv2d_fwd, (const fc_conv2d_params *p, const double *x, const double *w,               \
                       const double *b, double *y, int nt), (p, x, w, b, y, nt))                  \
    X(f32_conv2d_bwd_input, (const fc_conv2d_params *p, const float *gy, const float *w,          \
                             float *gx, int nt), (p, gy, w, gx, nt))                              \
    X(f64_conv2d_bwd_input, (const fc_conv2d_params *p, const double *gy, const double *w,        \
                             double *gx, int nt), (p, gy, w, gx, nt))                             \
    X(f32_conv2d_bwd_weight, (const fc_conv2d_params *p, const float *gy, const float *x,         \
                              float *gw, float *gb, int nt), (p, gy, x, gw, gb, nt))              \
    X(f64_conv2d_bwd_weight, (const fc_conv2d_params *p, const double *gy, const double *x,       \
                              double *gw, double *gb, int nt), (p, gy, x, gw, gb, nt))            \
    X(f32_fma_peak, (fc_index iterations, int nt, double *flops), (iterations, nt, flops))         \
    X(f64_fma_peak, (fc_index iterations, int nt, double *flops), (iterations, nt, flops))         \
    FC_POOL_KERNELS(X, f32, float)                                                                 \
    FC_POOL_KERNELS(X, f64, double)

#define FC_POOL_KERNELS(X, dt, T)                                                                  \
    X(dt##_maxpool2d_fwd, (const fc_pool2d_params *p, const T *x, T *y, int64_t *idx, int nt),    \
      (p, x, y, idx, nt))                                                                          \
    X(dt##_maxpool2d_bwd, (const fc_pool2d_params *p, const T *gy, const int64_t *idx, T *gx,     \
                           int nt), (p, gy, idx, gx, nt))                                          \
    X(dt##_avgpool2d_fwd, (const fc_pool2d_params *p, const T *x, T *y, int nt), (p, x, y, nt))   \
    X(dt##_avgpool2d_bwd, (const fc_pool2d_params *p, const T *gy, T *gx, int nt),                \
      (p, gy, gx, nt))                                                                             \
    X(dt##_lppool2d_fwd, (const fc_pool2d_params *p, double norm, const T *x, T *y, int nt),      \
      (p, norm, x, y, nt))                                                                         \
    X(dt##_lppool2d_bwd, (const fc_pool2d_params *p, double norm, const T *gy, const T *x, T *gx, \
                          int nt), (p, norm, gy, x, gx, nt))                                       \
    X(dt##_relu_fwd, (fc_index n, const T *x, T *y, int nt), (n, x, y, nt))                       \
    X(dt##_relu_bwd, (fc_index n, const T *gy, const T *x, T *gx, int nt), (n, gy, x, gx, nt))

#define FC_FIELD(name, params, args) int(*name) params;
typedef struct {
    FC_KERNELS(FC_FIELD)
} fc_kernel_table;

#define FC_ENTRY_scalar(name, params, args) fc_##name##__scalar,
#define FC_ENTRY_avx2(name, params, args) fc_##name##__avx2,
#define FC_ENTRY_avx512(name, params, args) fc_##name##__avx512,

static const fc_kernel_table kernel_tables[FC_ISA_COUNT] = {
    {FC_KERNELS(FC_ENTRY_scalar)},
#ifdef FC_BUILD_AVX2
    {FC_KERNELS(FC_ENTRY_avx2)},
#else
    {0},
#endif
#ifdef FC_BUILD_AVX512
    {FC_KERNELS(FC_ENTRY_avx512)},
#else
    {0},
#endif
};

static const char *const isa_names[FC_ISA_COUNT] = {"scalar", "avx2", "avx512"};

/* The selected table. Read by every call; written only by fc_select_isa (import, tests). */
static const fc_kernel_table *active = &kernel_tables[FC_ISA_SCALAR];
static int active_isa = FC_ISA_SCALAR;

const char *fc_isa_name(int isa) {
    return (isa >= 0 && isa < FC_ISA_COUNT) ? isa_names[isa] : "unknown";
}

int fc_isa_compiled(int isa) {
    return isa >= 0 && isa < FC_ISA_COUNT && kernel_tables[isa].f32_conv2d_fwd != NULL;
}

static int cpu_has(int isa) {
    if (isa == FC_ISA_SCALAR) return 1;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (isa == FC_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == FC_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

int fc_isa_supported(int isa) { return fc_isa_compiled(isa) && cpu_has(isa); }

int fc_isa_selected(void) { return active_isa; }

int fc_select_isa(int isa) {
    if (!fc_isa_supported(isa)) return -1;
    active = &kernel_tables[isa];
    active_isa = isa;
    return 0;
}

int fc_select_isa_from_env(void) {
    int want = FC_ISA_COUNT - 1;
    const char *env = getenv("FASTCONV_ISA");
    if (env && *env) {
        for (int i = 0; i < FC_ISA_COUNT; i++)
            if (strcmp(env, isa_names[i]) == 0) want = i;
    }
    for (int isa = want; isa >= 0; isa--)
        if (fc_select_isa(isa) == 0) return isa;
    return fc_select_isa(FC_ISA_SCALAR);
}

int fc_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fc_default_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- the public entry points forward to the active table ------------------------------------ */

#define FC_FORWARD(name, params, args) \
    int fc_##name params { return active->name args; }
FC_KERNELS(FC_FORWARD)
