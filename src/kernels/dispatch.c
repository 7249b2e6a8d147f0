/* dispatch.c: runtime choice of the instruction set for the convolution kernels, and the thread
 * helpers. The best ISA that is both compiled in and supported by this CPU is chosen at import;
 * FASTCONV_ISA=avx512|avx2|scalar asks for a specific one (falling back to the best supported one
 * below it), and fc_select_isa() switches in-process so the tests can run every path. */
#include <stdio.h>

#include "fc_internal.h"

typedef struct {
    int (*conv_fwd_f32)(const fc_conv2d_params *, const float *, const float *, const float *,
                        float *, int);
    int (*conv_fwd_f64)(const fc_conv2d_params *, const double *, const double *, const double *,
                        double *, int);
    int (*conv_bwd_input_f32)(const fc_conv2d_params *, const float *, const float *, float *, int);
    int (*conv_bwd_input_f64)(const fc_conv2d_params *, const double *, const double *, double *,
                              int);
    int (*conv_bwd_weight_f32)(const fc_conv2d_params *, const float *, const float *, float *,
                               float *, int);
    int (*conv_bwd_weight_f64)(const fc_conv2d_params *, const double *, const double *, double *,
                               double *, int);
} fc_conv_table;

#define FC_CONV_TABLE(isa)                                                                         \
    {fc_f32_conv2d_fwd__##isa,        fc_f64_conv2d_fwd__##isa,                                    \
     fc_f32_conv2d_bwd_input__##isa,  fc_f64_conv2d_bwd_input__##isa,                              \
     fc_f32_conv2d_bwd_weight__##isa, fc_f64_conv2d_bwd_weight__##isa}

static const fc_conv_table conv_tables[FC_ISA_COUNT] = {
    FC_CONV_TABLE(scalar),
#ifdef FC_BUILD_AVX2
    FC_CONV_TABLE(avx2),
#else
    {0},
#endif
#ifdef FC_BUILD_AVX512
    FC_CONV_TABLE(avx512),
#else
    {0},
#endif
};

static const char *const isa_names[FC_ISA_COUNT] = {"scalar", "avx2", "avx512"};

/* The selected table. Read by every call; written only by fc_select_isa (import, tests). */
static const fc_conv_table *active = &conv_tables[FC_ISA_SCALAR];
static int active_isa = FC_ISA_SCALAR;

const char *fc_isa_name(int isa) {
    return (isa >= 0 && isa < FC_ISA_COUNT) ? isa_names[isa] : "unknown";
}

int fc_isa_compiled(int isa) {
    return isa >= 0 && isa < FC_ISA_COUNT && conv_tables[isa].conv_fwd_f32 != NULL;
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
    active = &conv_tables[isa];
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

/* ---- the public convolution entry points forward to the active table ------------------------ */

int fc_f32_conv2d_fwd(const fc_conv2d_params *p, const float *x, const float *w, const float *b,
                      float *y, int nt) {
    return active->conv_fwd_f32(p, x, w, b, y, nt);
}
int fc_f64_conv2d_fwd(const fc_conv2d_params *p, const double *x, const double *w,
                      const double *b, double *y, int nt) {
    return active->conv_fwd_f64(p, x, w, b, y, nt);
}
int fc_f32_conv2d_bwd_input(const fc_conv2d_params *p, const float *gy, const float *w, float *gx,
                            int nt) {
    return active->conv_bwd_input_f32(p, gy, w, gx, nt);
}
int fc_f64_conv2d_bwd_input(const fc_conv2d_params *p, const double *gy, const double *w,
                            double *gx, int nt) {
    return active->conv_bwd_input_f64(p, gy, w, gx, nt);
}
int fc_f32_conv2d_bwd_weight(const fc_conv2d_params *p, const float *gy, const float *x,
                             float *gw, float *gb, int nt) {
    return active->conv_bwd_weight_f32(p, gy, x, gw, gb, nt);
}
int fc_f64_conv2d_bwd_weight(const fc_conv2d_params *p, const double *gy, const double *x,
                             double *gw, double *gb, int nt) {
    return active->conv_bwd_weight_f64(p, gy, x, gw, gb, nt);
}
