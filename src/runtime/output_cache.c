/* output_cache.c: see output_cache.h.
 *
 * Every block this handler returns sits FC_HEADER bytes after a malloc'd base whose header records
 * the block's capacity, so a block's true size never depends on the size NumPy passes to free.
 * Freed blocks of at least FC_CACHE_MIN_BYTES wait in a small table, newest last; a request takes
 * the smallest kept block that holds it with at most a quarter to spare, and the oldest blocks
 * are released when the table or the byte limit is full. */
#include "output_cache.h"

#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/ndarraytypes.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define FC_HEADER 64 /* keeps the data 64-byte aligned whenever malloc's base is */
#define FC_MAGIC 0x66636f7574636163ULL
#define FC_SLOTS 32

typedef struct {
    uint64_t magic;
    size_t capacity; /* usable bytes after the header */
} fc_block_header;

typedef struct {
    char *data;
    size_t capacity;
} fc_slot;

static PyThread_type_lock fc_lock;
static fc_slot fc_slots[FC_SLOTS]; /* [0, fc_nslots), oldest first */
static int fc_nslots;
static fc_cache_info fc_info;

static fc_block_header *fc_header_of(void *data) {
    return (fc_block_header *)((char *)data - FC_HEADER);
}

static void fc_release(char *data) { free(data - FC_HEADER); }

/* A fresh block: malloc'd, with transparent huge pages asked for where the block spans several
 * (fewer page faults and TLB misses on the big arrays, as NumPy's own allocator does). */
static char *fc_fresh(size_t capacity, int zeroed) {
    if (capacity > SIZE_MAX - FC_HEADER) return NULL;
    char *base = zeroed ? (char *)calloc(1, capacity + FC_HEADER)
                        : (char *)malloc(capacity + FC_HEADER);
    if (!base) return NULL;
    ((fc_block_header *)base)->magic = FC_MAGIC;
    ((fc_block_header *)base)->capacity = capacity;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (capacity >= ((size_t)4 << 20)) {
        const uintptr_t page = 4096, start = ((uintptr_t)base + page - 1) & ~(page - 1);
        const uintptr_t end = ((uintptr_t)base + FC_HEADER + capacity) & ~(page - 1);
        if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE); /* a hint only */
    }
#endif
    return base + FC_HEADER;
}

/* Take slot i out of the table and return its block. Caller holds the lock. */
static char *fc_remove_slot(int i) {
    char *data = fc_slots[i].data;
    fc_info.held -= fc_slots[i].capacity;
    fc_info.blocks--;
    memmove(&fc_slots[i], &fc_slots[i + 1], sizeof(fc_slot) * (size_t)(fc_nslots - i - 1));
    fc_nslots--;
    return data;
}

/* Take a kept block for `size` bytes, or NULL. Caller holds the lock. */
static char *fc_take(size_t size) {
    int best = -1;
    for (int i = 0; i < fc_nslots; i++) {
        const size_t cap = fc_slots[i].capacity;
        if (cap >= size && cap - size <= size / 4 && (best < 0 || cap < fc_slots[best].capacity))
            best = i;
    }
    return best < 0 ? NULL : fc_remove_slot(best);
}

static void *fc_alloc(size_t size, int zeroed) {
    if (size >= FC_CACHE_MIN_BYTES) {
        PyThread_acquire_lock(fc_lock, WAIT_LOCK);
        char *data = fc_take(size);
        if (data)
            fc_info.hits++;
        else
            fc_info.misses++;
        PyThread_release_lock(fc_lock);
        if (data) {
            if (zeroed) memset(data, 0, size);
            return data;
        }
    }
    return fc_fresh(size, zeroed);
}

static void *fc_malloc(void *ctx, size_t size) {
    (void)ctx;
    return fc_alloc(size, 0);
}

static void *fc_calloc(void *ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    return fc_alloc(nelem * elsize, 1);
}

static void fc_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    (void)size; /* the header knows the block's real capacity */
    if (!ptr) return;
    const size_t cap = fc_header_of(ptr)->capacity;
    if (cap >= FC_CACHE_MIN_BYTES) {
        PyThread_acquire_lock(fc_lock, WAIT_LOCK);
        if (cap <= fc_info.limit) {
            while (fc_nslots > 0 && (fc_nslots == FC_SLOTS || fc_info.held + cap > fc_info.limit))
                fc_release(fc_remove_slot(0));
            fc_slots[fc_nslots].data = (char *)ptr;
            fc_slots[fc_nslots].capacity = cap;
            fc_nslots++;
            fc_info.held += cap;
            fc_info.blocks++;
            ptr = NULL;
        }
        PyThread_release_lock(fc_lock);
    }
    if (ptr) fc_release((char *)ptr);
}

static void *fc_realloc(void *ctx, void *ptr, size_t new_size) {
    if (!ptr) return fc_malloc(ctx, new_size);
    const size_t cap = fc_header_of(ptr)->capacity;
    if (new_size <= cap && new_size >= cap / 2) return ptr; /* shrinking a little: keep it */
    void *fresh = fc_malloc(ctx, new_size);
    if (!fresh) return NULL; /* realloc's contract: the old block stays valid */
    memcpy(fresh, ptr, new_size < cap ? new_size : cap);
    fc_free(ctx, ptr, cap);
    return fresh;
}

static PyDataMem_Handler fc_handler = {
    "fastconv_output_cache",
    1,
    {NULL, fc_malloc, fc_calloc, fc_realloc, fc_free},
};

int fc_cache_init(size_t limit) {
    if (!fc_lock) {
        fc_lock = PyThread_allocate_lock();
        if (!fc_lock) {
            PyErr_NoMemory();
            return -1;
        }
    }
    fc_cache_set_limit(limit);
    return 0;
}

PyObject *fc_cache_handler(void) { return PyCapsule_New(&fc_handler, "mem_handler", NULL); }

void fc_cache_set_limit(size_t limit) {
    PyThread_acquire_lock(fc_lock, WAIT_LOCK);
    fc_info.limit = limit;
    while (fc_nslots > 0 && fc_info.held > limit) fc_release(fc_remove_slot(0));
    PyThread_release_lock(fc_lock);
}

fc_cache_info fc_cache_get_info(void) {
    PyThread_acquire_lock(fc_lock, WAIT_LOCK);
    const fc_cache_info info = fc_info;
    PyThread_release_lock(fc_lock);
    return info;
}
