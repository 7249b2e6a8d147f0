# cython: language_level=3
"""Cython glue between fastconv.functional and the C kernels in src/kernels.

Private. Every array arrives validated by fastconv._validation: C-contiguous, float32 or float64
(int64 indices), the shapes the geometry tuple describes, outputs freshly allocated. This layer
only unpacks the geometry, picks the dtype's kernel and releases the GIL around the call.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t

import numpy as np

cnp.import_array()

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
    ctypedef struct fc_pool2d_params:
        fc_index planes, in_h, in_w
        fc_index kernel_h, kernel_w
        fc_index stride_h, stride_w
        fc_index pad_h, pad_w
        fc_index dilation_h, dilation_w
        fc_index out_h, out_w
        int count_include_pad
        fc_index divisor_override

    int FC_ENOMEM
    int FC_EINDEX
    int FC_ISA_COUNT

    const char *fc_isa_name(int isa)
    int fc_isa_compiled(int isa)
    int fc_isa_supported(int isa)
    int fc_isa_selected()
    int fc_select_isa(int isa)
    int fc_select_isa_from_env()
    int fc_openmp_enabled()
    int fc_default_num_threads()

    int fc_f32_conv2d_fwd(const fc_conv2d_params *, const float *, const float *, const float *,
                          float *, int)
    int fc_f64_conv2d_fwd(const fc_conv2d_params *, const double *, const double *,
                          const double *, double *, int)
    int fc_f32_conv2d_bwd_input(const fc_conv2d_params *, const float *, const float *, float *, int)
    int fc_f64_conv2d_bwd_input(const fc_conv2d_params *, const double *, const double *, double *,
                                int)
    int fc_f32_conv2d_bwd_weight(const fc_conv2d_params *, const float *, const float *, float *,
                                 float *, int)
    int fc_f64_conv2d_bwd_weight(const fc_conv2d_params *, const double *, const double *,
                                 double *, double *, int)

    int fc_f32_maxpool2d_fwd(const fc_pool2d_params *, const float *, float *, int64_t *, int)
    int fc_f64_maxpool2d_fwd(const fc_pool2d_params *, const double *, double *, int64_t *, int)
    int fc_f32_maxpool2d_bwd(const fc_pool2d_params *, const float *, const int64_t *, float *, int)
    int fc_f64_maxpool2d_bwd(const fc_pool2d_params *, const double *, const int64_t *, double *,
                             int)
    int fc_f32_avgpool2d_fwd(const fc_pool2d_params *, const float *, float *, int)
    int fc_f64_avgpool2d_fwd(const fc_pool2d_params *, const double *, double *, int)
    int fc_f32_avgpool2d_bwd(const fc_pool2d_params *, const float *, float *, int)
    int fc_f64_avgpool2d_bwd(const fc_pool2d_params *, const double *, double *, int)
    int fc_f32_lppool2d_fwd(const fc_pool2d_params *, double, const float *, float *, int)
    int fc_f64_lppool2d_fwd(const fc_pool2d_params *, double, const double *, double *, int)
    int fc_f32_lppool2d_bwd(const fc_pool2d_params *, double, const float *, const float *,
                            float *, int)
    int fc_f64_lppool2d_bwd(const fc_pool2d_params *, double, const double *, const double *,
                            double *, int)

    int fc_f32_fma_peak(fc_index, int, double *)
    int fc_f64_fma_peak(fc_index, int, double *)
    int fc_f32_relu_fwd(fc_index, const float *, float *, int)
    int fc_f64_relu_fwd(fc_index, const double *, double *, int)
    int fc_f32_relu_bwd(fc_index, const float *, const float *, float *, int)
    int fc_f64_relu_bwd(fc_index, const double *, const double *, double *, int)

cdef extern from "output_cache.h":
    ctypedef struct fc_cache_info:
        size_t limit, held, blocks, hits, misses
    size_t FC_CACHE_MIN_BYTES
    int fc_cache_init(size_t limit) except -1
    object fc_cache_handler()
    void fc_cache_set_limit(size_t limit) nogil
    fc_cache_info fc_cache_get_info() nogil

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)


fc_select_isa_from_env()
fc_cache_init(0)  # off until fastconv._config sets the limit
cdef object _cache_handler = fc_cache_handler()


# ---- configuration -------------------------------------------------------------------------

def isa_names():
    """Names of the instruction-set paths, in dispatch order (scalar first)."""
    return [fc_isa_name(i).decode() for i in range(FC_ISA_COUNT)]


def isa_compiled(str name):
    return bool(fc_isa_compiled(isa_names().index(name)))


def isa_supported(str name):
    return bool(fc_isa_supported(isa_names().index(name)))


def selected_isa():
    return fc_isa_name(fc_isa_selected()).decode()


def select_isa(str name):
    """Switch the convolution kernels to `name`; False if it is not supported here."""
    return fc_select_isa(isa_names().index(name)) == 0


def openmp_enabled():
    return bool(fc_openmp_enabled())


def default_num_threads():
    return fc_default_num_threads()


# ---- output buffers ------------------------------------------------------------------------

def set_cache_limit(size_t limit):
    fc_cache_set_limit(limit)


def cache_info():
    cdef fc_cache_info i = fc_cache_get_info()
    return {"limit": i.limit, "held": i.held, "blocks": i.blocks, "hits": i.hits,
            "misses": i.misses}


def empty(shape, dtype):
    """np.empty(shape, dtype), its buffer from the output cache when the cache is on and the
    array is big enough to be kept (see src/runtime/output_cache.h)."""
    if fc_cache_get_info().limit == 0:
        return np.empty(shape, dtype)
    old = PyDataMem_SetHandler(_cache_handler)
    try:
        return np.empty(shape, dtype)
    finally:
        PyDataMem_SetHandler(old)


# ---- helpers ---------------------------------------------------------------------------------

cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


cdef inline bint _is_f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void _check(int rc) except *:
    if rc == FC_ENOMEM:
        raise MemoryError("fastconv: could not allocate a kernel workspace")


cdef fc_conv2d_params _conv_params(tuple g):
    cdef fc_conv2d_params p
    (p.batch, p.in_channels, p.in_h, p.in_w, p.out_channels, p.groups, p.kernel_h, p.kernel_w,
     p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.dilation_h, p.dilation_w,
     p.out_h, p.out_w) = g
    return p


cdef fc_pool2d_params _pool_params(tuple g, bint count_include_pad=True,
                                   fc_index divisor_override=0):
    cdef fc_pool2d_params p
    (p.planes, p.in_h, p.in_w, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w,
     p.dilation_h, p.dilation_w, p.out_h, p.out_w) = g
    p.count_include_pad = count_include_pad
    p.divisor_override = divisor_override
    return p


# ---- convolution -------------------------------------------------------------------------------

def conv2d_forward(tuple geometry, cnp.ndarray x, cnp.ndarray w, object bias, cnp.ndarray y,
                   int nthreads):
    cdef fc_conv2d_params p = _conv_params(geometry)
    cdef void *b = NULL if bias is None else _ptr(bias)
    cdef void *px = _ptr(x)
    cdef void *pw = _ptr(w)
    cdef void *py = _ptr(y)
    cdef int rc
    if _is_f32(x):
        with nogil:
            rc = fc_f32_conv2d_fwd(&p, <float *>px, <float *>pw, <float *>b, <float *>py, nthreads)
    else:
        with nogil:
            rc = fc_f64_conv2d_fwd(&p, <double *>px, <double *>pw, <double *>b, <double *>py,
                                   nthreads)
    _check(rc)


def conv2d_backward_input(tuple geometry, cnp.ndarray gy, cnp.ndarray w, cnp.ndarray gx,
                          int nthreads):
    cdef fc_conv2d_params p = _conv_params(geometry)
    cdef void *pgy = _ptr(gy)
    cdef void *pw = _ptr(w)
    cdef void *pgx = _ptr(gx)
    cdef int rc
    if _is_f32(gy):
        with nogil:
            rc = fc_f32_conv2d_bwd_input(&p, <float *>pgy, <float *>pw, <float *>pgx, nthreads)
    else:
        with nogil:
            rc = fc_f64_conv2d_bwd_input(&p, <double *>pgy, <double *>pw, <double *>pgx, nthreads)
    _check(rc)


def conv2d_backward_weight(tuple geometry, cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gw,
                           object gb, int nthreads):
    cdef fc_conv2d_params p = _conv_params(geometry)
    cdef void *pgb = NULL if gb is None else _ptr(gb)
    cdef void *pgy = _ptr(gy)
    cdef void *px = _ptr(x)
    cdef void *pgw = _ptr(gw)
    cdef int rc
    if _is_f32(gy):
        with nogil:
            rc = fc_f32_conv2d_bwd_weight(&p, <float *>pgy, <float *>px, <float *>pgw,
                                          <float *>pgb, nthreads)
    else:
        with nogil:
            rc = fc_f64_conv2d_bwd_weight(&p, <double *>pgy, <double *>px, <double *>pgw,
                                          <double *>pgb, nthreads)
    _check(rc)


# ---- pooling -----------------------------------------------------------------------------------

def maxpool2d_forward(tuple geometry, cnp.ndarray x, cnp.ndarray y, object indices, int nthreads):
    cdef fc_pool2d_params p = _pool_params(geometry)
    cdef int64_t *pi = NULL if indices is None else <int64_t *>_ptr(indices)
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef int rc
    if _is_f32(x):
        with nogil:
            rc = fc_f32_maxpool2d_fwd(&p, <float *>px, <float *>py, pi, nthreads)
    else:
        with nogil:
            rc = fc_f64_maxpool2d_fwd(&p, <double *>px, <double *>py, pi, nthreads)
    _check(rc)


def maxpool2d_backward(tuple geometry, cnp.ndarray gy, cnp.ndarray indices, cnp.ndarray gx,
                       int nthreads):
    """Scatter gy to gx at the int64 indices; True if every index was in [-1, H*W)."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    cdef int64_t *pi = <int64_t *>_ptr(indices)
    cdef void *pgy = _ptr(gy)
    cdef void *pgx = _ptr(gx)
    cdef int rc
    if _is_f32(gy):
        with nogil:
            rc = fc_f32_maxpool2d_bwd(&p, <float *>pgy, pi, <float *>pgx, nthreads)
    else:
        with nogil:
            rc = fc_f64_maxpool2d_bwd(&p, <double *>pgy, pi, <double *>pgx, nthreads)
    _check(rc)
    return rc != FC_EINDEX  # False: some index lay outside [-1, H*W); those were skipped


def avgpool2d_forward(tuple geometry, bint count_include_pad, fc_index divisor_override,
                      cnp.ndarray x, cnp.ndarray y, int nthreads):
    cdef fc_pool2d_params p = _pool_params(geometry, count_include_pad, divisor_override)
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef int rc
    if _is_f32(x):
        with nogil:
            rc = fc_f32_avgpool2d_fwd(&p, <float *>px, <float *>py, nthreads)
    else:
        with nogil:
            rc = fc_f64_avgpool2d_fwd(&p, <double *>px, <double *>py, nthreads)
    _check(rc)


def avgpool2d_backward(tuple geometry, bint count_include_pad, fc_index divisor_override,
                       cnp.ndarray gy, cnp.ndarray gx, int nthreads):
    cdef fc_pool2d_params p = _pool_params(geometry, count_include_pad, divisor_override)
    cdef void *pgy = _ptr(gy)
    cdef void *pgx = _ptr(gx)
    cdef int rc
    if _is_f32(gy):
        with nogil:
            rc = fc_f32_avgpool2d_bwd(&p, <float *>pgy, <float *>pgx, nthreads)
    else:
        with nogil:
            rc = fc_f64_avgpool2d_bwd(&p, <double *>pgy, <double *>pgx, nthreads)
    _check(rc)


def lppool2d_forward(tuple geometry, double norm_type, cnp.ndarray x, cnp.ndarray y,
                     int nthreads):
    cdef fc_pool2d_params p = _pool_params(geometry)
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef int rc
    if _is_f32(x):
        with nogil:
            rc = fc_f32_lppool2d_fwd(&p, norm_type, <float *>px, <float *>py, nthreads)
    else:
        with nogil:
            rc = fc_f64_lppool2d_fwd(&p, norm_type, <double *>px, <double *>py, nthreads)
    _check(rc)


def lppool2d_backward(tuple geometry, double norm_type, cnp.ndarray gy, cnp.ndarray x,
                      cnp.ndarray gx, int nthreads):
    cdef fc_pool2d_params p = _pool_params(geometry)
    cdef void *pgy = _ptr(gy)
    cdef void *px = _ptr(x)
    cdef void *pgx = _ptr(gx)
    cdef int rc
    if _is_f32(x):
        with nogil:
            rc = fc_f32_lppool2d_bwd(&p, norm_type, <float *>pgy, <float *>px, <float *>pgx,
                                     nthreads)
    else:
        with nogil:
            rc = fc_f64_lppool2d_bwd(&p, norm_type, <double *>pgy, <double *>px, <double *>pgx,
                                     nthreads)
    _check(rc)


# ---- the machine -------------------------------------------------------------------------------

def fma_peak(fc_index iterations, int nthreads, bint f32=True):
    """Run `iterations` rounds of independent multiply-add chains in the active ISA's register
    type on up to `nthreads` threads (float32 or float64 lanes); returns the FLOPs done, for the
    caller to divide by the time it took (fastconv.bench.fma_peak)."""
    cdef double flops = 0
    with nogil:
        if f32:
            fc_f32_fma_peak(iterations, nthreads, &flops)
        else:
            fc_f64_fma_peak(iterations, nthreads, &flops)
    return flops


# ---- element-wise ------------------------------------------------------------------------------

def relu_forward(cnp.ndarray x, cnp.ndarray y, int nthreads):
    cdef fc_index n = cnp.PyArray_SIZE(x)
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    if _is_f32(x):
        with nogil:
            fc_f32_relu_fwd(n, <float *>px, <float *>py, nthreads)
    else:
        with nogil:
            fc_f64_relu_fwd(n, <double *>px, <double *>py, nthreads)


def relu_backward(cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gx, int nthreads):
    cdef fc_index n = cnp.PyArray_SIZE(x)
    cdef void *pgy = _ptr(gy)
    cdef void *px = _ptr(x)
    cdef void *pgx = _ptr(gx)
    if _is_f32(x):
        with nogil:
            fc_f32_relu_bwd(n, <float *>pgy, <float *>px, <float *>pgx, nthreads)
    else:
        with nogil:
            fc_f64_relu_bwd(n, <double *>pgy, <double *>px, <double *>pgx, nthreads)
