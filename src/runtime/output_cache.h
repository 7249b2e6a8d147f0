/* output_cache.h: a NumPy memory handler that keeps freed large output buffers for reuse.
 *
 * Why: a fresh multi-megabyte NumPy array is fresh mmap memory, and the first write to each page
 * faults and has the kernel zero it. For a bandwidth-bound op that costs about as much as the op
 * itself (docs/KERNELS.md has the figures). Training loops
 * allocate the same shapes every step, so fastconv allocates its outputs through this handler,
 * which keeps up to a byte limit of freed blocks (>= FC_CACHE_MIN_BYTES each) and hands them back
 * for a request of about the same size. Smaller arrays go straight to malloc, whose own free
 * lists already reuse them.
 *
 * Only arrays fastconv allocates use it (the functional layer switches NumPy's handler around
 * its np.empty calls); an array remembers its handler, so it returns here whoever frees it.
 * All entry points are thread-safe and need no GIL. */
#ifndef FASTCONV_OUTPUT_CACHE_H
#define FASTCONV_OUTPUT_CACHE_H

#include <Python.h>
#include <stddef.h>

#define FC_CACHE_MIN_BYTES ((size_t)1 << 20)

typedef struct {
    size_t limit;  /* most bytes kept in freed blocks */
    size_t held;   /* bytes kept now */
    size_t blocks; /* blocks kept now */
    size_t hits;   /* requests served from a kept block */
    size_t misses; /* cacheable requests that went to malloc */
} fc_cache_info;

/* Set up the lock and the limit; call once, with the GIL, before the handler is used. 0 on
 * success, -1 with a Python exception set. */
int fc_cache_init(size_t limit);
/* A new reference to the "mem_handler" capsule for PyDataMem_SetHandler. */
PyObject *fc_cache_handler(void);
/* Change the limit; blocks beyond it are released at once (limit 0 empties the cache). */
void fc_cache_set_limit(size_t limit);
fc_cache_info fc_cache_get_info(void);

#endif
