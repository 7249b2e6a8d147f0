/* fc_internal.h: what the kernel files share and Python never sees: the OpenMP shim that keeps a
 * serial build compiling, aligned workspace allocation, bounds of strided runs, software
 * prefetch, the split of tasks among threads and the thread-count heuristic, name pasting, the
 * dtype enum, and each instruction set's entry points (declared from fc_kernel_list.h) that
 * dispatch.c selects between. */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "fastconv.h"

#ifdef _OPENMP
#include <omp.h>
#define FC_THREAD_ID() omp_get_thread_num()
#define FC_NUM_THREADS_IN_TEAM() omp_get_num_threads()
#else
#define FC_THREAD_ID() 0
#define FC_NUM_THREADS_IN_TEAM() 1
#endif

#define FC_PRAGMA(x) _Pragma(#x)

/* Thread-local storage: C11's keyword, MSVC's spelling of it. */
#if defined(_MSC_VER) && !defined(__clang__)
#define FC_THREAD_LOCAL __declspec(thread)
#else
#define FC_THREAD_LOCAL _Thread_local
#endif

#define FC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FC_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

#define FC_CAT2_(a, b) a##b
#define FC_CAT2(a, b) FC_CAT2_(a, b)
#define FC_CAT3(a, b, c) FC_CAT2(FC_CAT2(a, b), c)

/* The element types, as the planner and the tuning table index them (f32 / f64 are pasted into
 * kernel names, fc_template.h). */
typedef enum { FC_DTYPE_f32 = 0, FC_DTYPE_f64 = 1, FC_DTYPE_COUNT = 2 } fc_dtype;

/* Workspaces are 64-byte aligned so packed panels can be read with aligned vector loads. */
static inline void *fc_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
#if defined(_WIN32)
    p = _aligned_malloc(bytes, 64);
#else
    if (posix_memalign(&p, 64, bytes) != 0) p = NULL;
#endif
    return p;
}

static inline void fc_aligned_free(void *p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* Of the positions start + t * step, t in [0, count), those inside [0, n) form one run
 * [*lo, *hi): the kernels settle bounds once per run of columns or taps, not per element. */
static inline void fc_inside_span(fc_index start, fc_index step, fc_index count, fc_index n,
                                  fc_index *lo, fc_index *hi) {
    if (start >= 0 && start + (count - 1) * step < n) { /* all inside: the common case */
        *lo = 0;
        *hi = count;
        return;
    }
    fc_index a = start < 0 ? (-start + step - 1) / step : 0;
    fc_index b = start > n - 1 ? 0 : (n - 1 - start) / step + 1;
    a = FC_MIN(a, count);
    b = FC_MIN(b, count);
    *lo = a;
    *hi = FC_MAX(a, b);
}

/* Software prefetch for streaming kernels: hardware prefetchers (a virtual machine's in
 * particular) may keep too few lines in flight for one thread reading in order to reach the
 * memory's bandwidth, which leaves pooling bound by read latency; touching the lines
 * FC_PREFETCH_AHEAD bytes ahead of the reads keeps more in flight (docs/KERNELS.md has the
 * figures). fc_prefetch_ahead(p, n, end) asks for the n bytes that follow p + FC_PREFETCH_AHEAD,
 * stopping at end (prefetching never faults, but an address past the array need not be valid). */
#define FC_PREFETCH_AHEAD 4096
static inline void fc_prefetch_ahead(const void *p, size_t n, const void *end) {
#if defined(__GNUC__) || defined(__clang__)
    /* addresses as integers: a pointer past the array's end would be undefined behaviour */
    const uintptr_t a = (uintptr_t)p + FC_PREFETCH_AHEAD, e = (uintptr_t)end;
    for (uintptr_t b = 0; b < n && a + b < e; b += 64)
        __builtin_prefetch((const void *)(a + b), 0, 3);
#else
    (void)p, (void)n, (void)end;
#endif
}

/* Ask the caches for the n bytes from p, all inside one array: for reads in a pattern the
 * hardware prefetchers do not follow. */
static inline void fc_prefetch(const void *p, size_t n) {
#if defined(__GNUC__) || defined(__clang__)
    for (size_t b = 0; b < n; b += 64) __builtin_prefetch((const char *)p + b, 0, 3);
#else
    (void)p, (void)n;
#endif
}

/* Ask L2, not L1, for the n bytes from p: data for a later step, which in L1 would evict the
 * microkernel's operands before that step reads it. */
static inline void fc_prefetch_l2(const void *p, size_t n) {
#if defined(__GNUC__) || defined(__clang__)
    for (size_t b = 0; b < n; b += 64) __builtin_prefetch((const char *)p + b, 0, 1);
#else
    (void)p, (void)n;
#endif
}

/* This thread's share [*t0, *t1) of `n` tasks, contiguous and balanced as schedule(static)
 * deals them, for loops that walk their tasks incrementally instead of dividing each index. */
static inline void fc_static_share(fc_index n, fc_index *t0, fc_index *t1) {
    const fc_index team = FC_NUM_THREADS_IN_TEAM(), id = FC_THREAD_ID();
    const fc_index q = n / team, r = n % team;
    *t0 = id * q + FC_MIN(id, r);
    *t1 = *t0 + q + (id < r);
}

/* How many threads a job of `work` units (roughly: multiply-adds or bytes touched) split into
 * `tasks` independent pieces should use: never more than the tasks, and one thread per
 * `min_work_per_thread` units, so small problems stay on one thread instead of paying the
 * fork/join cost. */
static inline int fc_threads_for(int nthreads, double work, double min_work_per_thread,
                                 fc_index tasks) {
    double by_work = work / min_work_per_thread;
    int n = nthreads < 1 ? 1 : nthreads;
    if (by_work < n) n = by_work < 1.0 ? 1 : (int)by_work;
    if (tasks < n) n = tasks < 1 ? 1 : (int)tasks;
    return n;
}

/* A loop over `n` independent tasks, `for (fc_index i = 0; i < n; i++) body`, on `nt` threads
 * (nt from fc_threads_for, the one place that decides how many): an OpenMP parallel for,
 * schedule(static) plus `clauses` (a reduction, say), when nt > 1; a plain loop on the calling
 * thread when nt == 1, with no parallel region at all. With GNU OpenMP a region of one thread,
 * num_threads(1) or a false `if` clause alike, still allocates, starts and frees a team: about
 * as long as a tiny kernel's whole work (docs/KERNELS.md). The body is compiled twice. */
#define FC_PARALLEL_FOR(nt, clauses, i, n, ...)                                                    \
    do {                                                                                           \
        if ((nt) > 1) {                                                                            \
            FC_PRAGMA(omp parallel for schedule(static) num_threads(nt) clauses)                   \
            for (fc_index i = 0; i < (n); i++) __VA_ARGS__                                         \
        } else {                                                                                   \
            for (fc_index i = 0; i < (n); i++) __VA_ARGS__                                         \
        }                                                                                          \
    } while (0)

/* Each instruction set's entry points, fc_<name>__<isa>, from the one list in fc_kernel_list.h;
 * dispatch.c picks one set at import. */
#define FC_ISA_PROTOTYPE(isa, name, params, args) int fc_##name##__##isa params;
#define FC_DECLARE_ISA(isa)                                                                        \
    FC_KERNEL_LIST(FC_ISA_PROTOTYPE, isa)                                                          \
    FC_PRIVATE_LIST(FC_ISA_PROTOTYPE, isa)
FC_DECLARE_ISA(scalar)
FC_DECLARE_ISA(avx2)
FC_DECLARE_ISA(avx512)
#undef FC_DECLARE_ISA
#undef FC_ISA_PROTOTYPE

#endif /* FC_INTERNAL_H */
