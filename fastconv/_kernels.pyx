# cython: language_level=3
"""Cython glue between fastconv.functional and the C kernels in src/kernels.

Private. Every array arrives validated by fastconv._validation: C-contiguous, float32 or float64
(int64 indices), the shapes the geometry describes, outputs freshly allocated. This layer fills
the C geometry struct from the validated ConvGeometry / PoolGeometry by name, picks the dtype's
kernel and releases the GIL around the call. Each wrapper is written once, over the fused type
`real` (the C declarations and the dtype-generic kernel names are in _cfastconv.pxd); its public
function only chooses float or double from the output array's dtype.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t

from fastconv._cfastconv cimport *

import numpy as np

cnp.import_array()

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

cdef inline void *_ptr(object a):
    """The data of an ndarray, NULL for None (an optional argument)."""
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint _is_f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline int _check(int rc) except -1:
    if rc == FC_ENOMEM:
        raise MemoryError("fastconv: could not allocate a kernel workspace")
    return 0


cdef fc_conv2d_params _conv_params(g) except *:
    """The C geometry of a validated fastconv._validation.ConvGeometry."""
    cdef fc_conv2d_params p
    p.batch = g.batch
    p.in_channels = g.in_channels
    p.in_h = g.in_h
    p.in_w = g.in_w
    p.out_channels = g.out_channels
    p.groups = g.groups
    p.kernel_h, p.kernel_w = g.kernel
    p.stride_h, p.stride_w = g.stride
    p.pad_top = g.padding[0]  # (top, bottom, left, right); bottom and right follow from the
    p.pad_left = g.padding[2]  # output size
    p.dilation_h, p.dilation_w = g.dilation
    p.out_h = g.out_h
    p.out_w = g.out_w
    return p


cdef fc_pool2d_params _pool_params(g) except *:
    """The C geometry of a validated fastconv._validation.PoolGeometry; the options of the
    pooling kinds that take them are set by their wrappers."""
    cdef fc_pool2d_params p
    p.planes = g.batch * g.channels
    p.in_h = g.in_h
    p.in_w = g.in_w
    p.kernel_h, p.kernel_w = g.kernel
    p.stride_h, p.stride_w = g.stride
    p.pad_h, p.pad_w = g.padding
    p.dilation_h, p.dilation_w = g.dilation
    p.out_h = g.out_h
    p.out_w = g.out_w
    p.count_include_pad = True
    p.divisor_override = 0
    p.norm = 0
    return p


# ---- convolution -------------------------------------------------------------------------------

cdef int _conv2d_forward(real *y, const fc_conv2d_params *p, x, w, bias,
                         int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef const real *pw = <real *>_ptr(w)
    cdef const real *pb = <real *>_ptr(bias)
    cdef int rc
    with nogil:
        rc = conv2d_fwd(p, px, pw, pb, y, nthreads)
    return _check(rc)


def conv2d_forward(geometry, cnp.ndarray x, cnp.ndarray w, object bias, cnp.ndarray y,
                   int nthreads):
    """y = conv2d(x, w, bias) (bias may be None) for the ConvGeometry `geometry`."""
    cdef fc_conv2d_params p = _conv_params(geometry)
    if _is_f32(y):
        _conv2d_forward(<float *>_ptr(y), &p, x, w, bias, nthreads)
    else:
        _conv2d_forward(<double *>_ptr(y), &p, x, w, bias, nthreads)


cdef int _conv2d_backward_input(real *gx, const fc_conv2d_params *p, gy, w,
                                int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *pw = <real *>_ptr(w)
    cdef int rc
    with nogil:
        rc = conv2d_bwd_input(p, pgy, pw, gx, nthreads)
    return _check(rc)


def conv2d_backward_input(geometry, cnp.ndarray gy, cnp.ndarray w, cnp.ndarray gx,
                          int nthreads):
    """gx = the gradient of conv2d with respect to its input, given gy."""
    cdef fc_conv2d_params p = _conv_params(geometry)
    if _is_f32(gx):
        _conv2d_backward_input(<float *>_ptr(gx), &p, gy, w, nthreads)
    else:
        _conv2d_backward_input(<double *>_ptr(gx), &p, gy, w, nthreads)


cdef int _conv2d_backward_weight(real *gw, const fc_conv2d_params *p, gy, x, gb,
                                 int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef real *pgb = <real *>_ptr(gb)
    cdef int rc
    with nogil:
        rc = conv2d_bwd_weight(p, pgy, px, gw, pgb, nthreads)
    return _check(rc)


def conv2d_backward_weight(geometry, cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gw, object gb,
                           int nthreads):
    """gw (and gb unless it is None) = the gradients of conv2d's weight and bias, given gy."""
    cdef fc_conv2d_params p = _conv_params(geometry)
    if _is_f32(gw):
        _conv2d_backward_weight(<float *>_ptr(gw), &p, gy, x, gb, nthreads)
    else:
        _conv2d_backward_weight(<double *>_ptr(gw), &p, gy, x, gb, nthreads)


# ---- pooling -----------------------------------------------------------------------------------

cdef int _maxpool2d_forward(real *y, const fc_pool2d_params *p, x, indices,
                            int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int64_t *pi = <int64_t *>_ptr(indices)
    cdef int rc
    with nogil:
        rc = maxpool2d_fwd(p, px, y, pi, nthreads)
    return _check(rc)


def maxpool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, object indices, int nthreads):
    """y (and the int64 indices unless they are None) = max_pool2d(x)."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    if _is_f32(y):
        _maxpool2d_forward(<float *>_ptr(y), &p, x, indices, nthreads)
    else:
        _maxpool2d_forward(<double *>_ptr(y), &p, x, indices, nthreads)


cdef int _maxpool2d_backward(real *gx, const fc_pool2d_params *p, gy, indices,
                             int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const int64_t *pi = <int64_t *>_ptr(indices)
    cdef int rc
    with nogil:
        rc = maxpool2d_bwd(p, pgy, pi, gx, nthreads)
    _check(rc)
    return rc != FC_EINDEX


def maxpool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray indices, cnp.ndarray gx,
                       int nthreads):
    """Scatter gy to gx at the int64 indices; True if every index was in [-1, H*W) (False: some
    lay outside, and were skipped)."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    if _is_f32(gx):
        return bool(_maxpool2d_backward(<float *>_ptr(gx), &p, gy, indices, nthreads))
    return bool(_maxpool2d_backward(<double *>_ptr(gx), &p, gy, indices, nthreads))


cdef int _avgpool2d_forward(real *y, const fc_pool2d_params *p, x, int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = avgpool2d_fwd(p, px, y, nthreads)
    return _check(rc)


def avgpool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, int nthreads, *,
                      bint count_include_pad, fc_index divisor_override):
    """y = avg_pool2d(x); divisor_override 0 means none."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.count_include_pad = count_include_pad
    p.divisor_override = divisor_override
    if _is_f32(y):
        _avgpool2d_forward(<float *>_ptr(y), &p, x, nthreads)
    else:
        _avgpool2d_forward(<double *>_ptr(y), &p, x, nthreads)


cdef int _avgpool2d_backward(real *gx, const fc_pool2d_params *p, gy, int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef int rc
    with nogil:
        rc = avgpool2d_bwd(p, pgy, gx, nthreads)
    return _check(rc)


def avgpool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray gx, int nthreads, *,
                       bint count_include_pad, fc_index divisor_override):
    """gx = the gradient of avg_pool2d, given gy."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.count_include_pad = count_include_pad
    p.divisor_override = divisor_override
    if _is_f32(gx):
        _avgpool2d_backward(<float *>_ptr(gx), &p, gy, nthreads)
    else:
        _avgpool2d_backward(<double *>_ptr(gx), &p, gy, nthreads)


cdef int _lppool2d_forward(real *y, const fc_pool2d_params *p, x, int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = lppool2d_fwd(p, px, y, nthreads)
    return _check(rc)


def lppool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, int nthreads, *, double norm):
    """y = lp_pool2d(x, norm)."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.norm = norm
    if _is_f32(y):
        _lppool2d_forward(<float *>_ptr(y), &p, x, nthreads)
    else:
        _lppool2d_forward(<double *>_ptr(y), &p, x, nthreads)


cdef int _lppool2d_backward(real *gx, const fc_pool2d_params *p, gy, x, int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = lppool2d_bwd(p, pgy, px, gx, nthreads)
    return _check(rc)


def lppool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gx, int nthreads, *,
                      double norm):
    """gx = the gradient of lp_pool2d(x, norm), given gy."""
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.norm = norm
    if _is_f32(gx):
        _lppool2d_backward(<float *>_ptr(gx), &p, gy, x, nthreads)
    else:
        _lppool2d_backward(<double *>_ptr(gx), &p, gy, x, nthreads)


# ---- element-wise ------------------------------------------------------------------------------

cdef int _relu_forward(real *y, x, int nthreads) except -1:
    cdef fc_index n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = relu_fwd(n, px, y, nthreads)
    return _check(rc)


def relu_forward(cnp.ndarray x, cnp.ndarray y, int nthreads):
    """y = relu(x), any shape."""
    if _is_f32(y):
        _relu_forward(<float *>_ptr(y), x, nthreads)
    else:
        _relu_forward(<double *>_ptr(y), x, nthreads)


cdef int _relu_backward(real *gx, gy, x, int nthreads) except -1:
    cdef fc_index n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = relu_bwd(n, pgy, px, gx, nthreads)
    return _check(rc)


def relu_backward(cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gx, int nthreads):
    """gx = the gradient of relu at x, given gy."""
    if _is_f32(gx):
        _relu_backward(<float *>_ptr(gx), gy, x, nthreads)
    else:
        _relu_backward(<double *>_ptr(gx), gy, x, nthreads)


# ---- the machine -------------------------------------------------------------------------------

def fma_peak(fc_index iterations, int nthreads, bint f32=True):
    """Run `iterations` rounds of independent multiply-add chains in the active ISA's register
    type on up to `nthreads` threads (float32 or float64 lanes); returns the FLOPs done, for the
    caller to divide by the time it took (fastconv.bench.fma_peak). Private to the benchmark."""
    cdef double flops = 0
    with nogil:
        if f32:
            fc_f32_fma_peak(iterations, nthreads, &flops)
        else:
            fc_f64_fma_peak(iterations, nthreads, &flops)
    return flops
