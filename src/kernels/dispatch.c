/* dispatch.c: runtime choice of the instruction set for the convolution, pooling and relu
 * kernels, and the thread helpers. The best ISA that is both compiled in and supported by this
 * CPU is chosen at import; FASTCONV_ISA=avx512|avx2|scalar asks for a specific one (falling back
 * to the best supported one below it), and fc_select_isa() switches in-process so the tests can
 * run every path. Each public entry point forwards to the selected ISA's row of the kernel
 * table; the table, its rows and the forwarding functions are generated from fc_kernel_list.h.
 * The tests' microkernel tables (fc_ukernels.h) are looked up here by ISA too. */
#include <stdio.h>

#include "fc_internal.h"
#include "fc_private.h"
#include "fc_ukernels.h"

/* The kernel table: one function pointer per entry of fc_kernel_list.h, one row per ISA. */
#define FC_ENTRIES(X, ctx) FC_KERNEL_LIST(X, ctx) FC_PRIVATE_LIST(X, ctx)

#define FC_FIELD(ctx, name, params, args) int(*name) params;
typedef struct {
    FC_ENTRIES(FC_FIELD, _)
} fc_kernel_table;

/* An ISA's row where this build has it, else an empty one. */
#ifdef FC_BUILD_AVX2
#define FC_IF_AVX2(...) __VA_ARGS__
#else
#define FC_IF_AVX2(...) {0}
#endif
#ifdef FC_BUILD_AVX512
#define FC_IF_AVX512(...) __VA_ARGS__
#else
#define FC_IF_AVX512(...) {0}
#endif

#define FC_ENTRY(isa, name, params, args) fc_##name##__##isa,
static const fc_kernel_table kernel_tables[FC_ISA_COUNT] = {
    {FC_ENTRIES(FC_ENTRY, scalar)},
    FC_IF_AVX2({FC_ENTRIES(FC_ENTRY, avx2)}),
    FC_IF_AVX512({FC_ENTRIES(FC_ENTRY, avx512)}),
};

/* The tests' microkernel tables (fc_ukernels.h), by ISA and dtype. */
static const fc_ukernel_table *const ukernel_tables[FC_ISA_COUNT][FC_DTYPE_COUNT] = {
    {&fc_f32_ukernel_table__scalar, &fc_f64_ukernel_table__scalar},
    FC_IF_AVX2({&fc_f32_ukernel_table__avx2, &fc_f64_ukernel_table__avx2}),
    FC_IF_AVX512({&fc_f32_ukernel_table__avx512, &fc_f64_ukernel_table__avx512}),
};

static const char *const isa_names[FC_ISA_COUNT] = {"scalar", "avx2", "avx512"};

/* The process's selected ISA (fc_select_isa: at import, from FASTCONV_ISA), and a calling
 * thread's own choice over it (fc_select_isa_for_thread: fastconv.use_isa), so that one thread
 * switching paths never changes another's. Only the calling thread dispatches: a kernel's OpenMP
 * workers never read these. */
static const fc_kernel_table *active = &kernel_tables[FC_ISA_SCALAR];
static int active_isa = FC_ISA_SCALAR;
static FC_THREAD_LOCAL int thread_isa = -1; /* -1: the process's */

static inline const fc_kernel_table *selected_table(void) {
    return thread_isa < 0 ? active : &kernel_tables[thread_isa];
}

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

int fc_isa_selected(void) { return thread_isa < 0 ? active_isa : thread_isa; }

int fc_select_isa(int isa) {
    if (!fc_isa_supported(isa)) return -1;
    active = &kernel_tables[isa];
    active_isa = isa;
    return 0;
}

int fc_select_isa_for_thread(int isa) {
    if (isa < 0) {
        thread_isa = -1;
        return 0;
    }
    if (!fc_isa_supported(isa)) return -1;
    thread_isa = isa;
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

const fc_ukernel_table *fc_ukernel_table_for(int isa, int dtype) {
    if (!fc_isa_supported(isa) || dtype < 0 || dtype >= FC_DTYPE_COUNT) return NULL;
    return ukernel_tables[isa][dtype];
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

/* ---- the public entry points forward to the calling thread's table --------------------------- */

#define FC_FORWARD(ctx, name, params, args)                                                        \
    int fc_##name params { return selected_table()->name args; }
FC_ENTRIES(FC_FORWARD, _)
