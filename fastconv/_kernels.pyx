# cython: language_level=3
"""Cython glue between fastconv.functional and the C kernels in src/kernels.

Private. Every array arrives validated by fastconv._validation: C-contiguous, float32 or float64
(int64 indices), the shapes the geometry describes, outputs freshly allocated. This layer fills
the C geometry struct from the validated ConvGeometry / PoolGeometry by name, picks the dtype's
kernel (and the layout's: the geometry's data_format, NCHW or channels-last NHWC) and releases
the GIL around the call. Each wrapper is written once, over the fused type
`real` (the C declarations and the dtype-generic kernel names are in _cfastconv.pxd); its public
function only chooses float or double from the output array's dtype.
"""

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int64_t

from fastconv._cfastconv cimport *

import os

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
    """Switch the process's kernels to `name`; False if it is not supported here."""
    return fc_select_isa(isa_names().index(name)) == 0


def select_isa_for_thread(name):
    """Run the calling thread's kernels on `name` (None: the process's choice again); False if
    it is not supported here. Other threads are not affected."""
    return fc_select_isa_for_thread(-1 if name is None else isa_names().index(name)) == 0


def openmp_enabled():
    return bool(fc_openmp_enabled())


def default_num_threads():
    return fc_default_num_threads()


# ---- output buffers ------------------------------------------------------------------------

def set_cache_limit(size_t limit):
    global _cache_limit
    fc_cache_set_limit(limit)
    _cache_limit = limit


def cache_info():
    cdef fc_cache_info i = fc_cache_get_info()
    return {"limit": i.limit, "held": i.held, "blocks": i.blocks, "hits": i.hits,
            "misses": i.misses}


def empty(shape, dtype):
    """np.empty(shape, dtype), its buffer from the output cache when the cache is on and the
    array is big enough to be kept (see src/runtime/output_cache.h)."""
    if _cache_limit == 0:
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


cdef inline bint _nhwc(g):
    """Whether a validated geometry's arrays are channels last."""
    return g.data_format == "NHWC"


cdef fc_conv_pass _conv_pass(g, int kind):
    """The C pass of kind `kind` (0 forward, 1 input gradient, 2 weight gradient) in the
    geometry's layout."""
    return <fc_conv_pass>(kind + FC_CONV_NHWC_FWD if _nhwc(g) else kind)


cdef fc_conv2d_params _conv_params(g, int kind) except *:
    """The C geometry of a validated fastconv._validation.ConvGeometry, for pass kind `kind`:
    with the algorithm force_conv_algorithms set for that kind, else 0 (the plan chooses)."""
    cdef fc_conv2d_params p
    p.algorithm = _forced[kind]
    p.weight_format = FC_WEIGHT_HWIO if g.weight_format == "HWIO" else FC_WEIGHT_OIHW
    p.relu = 0
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
    p.channels = g.channels
    p.in_h = g.in_h
    p.in_w = g.in_w
    p.kernel_h, p.kernel_w = g.kernel
    p.stride_h, p.stride_w = g.stride
    p.pad_top, p.pad_bottom, p.pad_left, p.pad_right = g.padding
    p.dilation_h, p.dilation_w = g.dilation
    p.out_h = g.out_h
    p.out_w = g.out_w
    p.count_include_pad = True
    p.divisor_override = 0
    p.norm = 0
    return p


# ---- fork --------------------------------------------------------------------------------------
# GNU OpenMP's thread team does not survive fork(): in the child, the team of the thread that
# forked still lists its workers, which do not exist there, and its next parallel region waits
# for them forever. A thread started in the child gets a team of its own (as PyTorch leaks its
# corrupt pool and makes a new one). So in a forked child, a multi-threaded kernel call made by
# the thread that forked, when kernels had run in parallel before the fork, runs on a worker
# thread of the child's; single-threaded calls (no team needed) and other threads call directly.

cdef bint _parallel_ran = False  # a kernel has been called with nthreads > 1 in this process
cdef bint _stale = False  # this is a forked child whose forking thread's OpenMP team is stale
cdef unsigned long _stale_ident = 0  # that thread
cdef bint _forking_ran = False  # set before a fork, read in the child
cdef unsigned long _forking_ident = 0
_fresh_thread = None  # the child's worker, made on first use


cdef inline bint _must_hop(int nthreads):
    global _parallel_ran
    if nthreads > 1:
        _parallel_ran = True
        return _stale and PyThread_get_thread_ident() == _stale_ident
    return False


def _on_fresh_thread(function, *args, **kwargs):
    """Run a kernel call on the forked child's worker thread and return what it returns."""
    global _fresh_thread
    if _fresh_thread is None:
        from concurrent.futures import ThreadPoolExecutor
        _fresh_thread = ThreadPoolExecutor(1, thread_name_prefix="fastconv-after-fork")
    return _fresh_thread.submit(function, *args, **kwargs).result()


def _before_fork():
    global _forking_ran, _forking_ident
    _forking_ran = (_parallel_ran or _stale) and fc_openmp_enabled()
    _forking_ident = PyThread_get_thread_ident()


def _after_fork_in_child():
    global _stale, _stale_ident, _fresh_thread, _parallel_ran
    # the parent's worker thread is not in the child; a stale thread stays stale in a grandchild
    _fresh_thread = None
    if _forking_ran:
        _stale, _stale_ident = True, _forking_ident
    _parallel_ran = False


def after_fork_state():
    """(stale, this thread is the stale one) in this process, for the tests."""
    return bool(_stale), bool(_stale and PyThread_get_thread_ident() == _stale_ident)


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


# ---- convolution -------------------------------------------------------------------------------

# fc_conv_algorithm's values (fastconv.h) by name, and the passes'
CONV_ALGORITHMS = ("auto", "direct", "winograd", "plain", "transposed", "col2im",
                   "depthwise", "grouped", "pixels", "im2col")
CONV_PASSES = ("forward", "input", "weight")
assert len(CONV_ALGORITHMS) == FC_CONV_ALGORITHM_COUNT
cdef int _forced[3]  # per pass: the algorithm force_conv_algorithms set, 0 = auto
_forced[:] = [0, 0, 0]


cdef int _check_conv(int rc, fc_conv_pass which, const fc_conv2d_params *p,
                     fc_dtype dtype) except -1:
    if rc == FC_EALGORITHM:
        reason = fc_conv2d_cannot_run(which, p.algorithm, dtype, fc_isa_selected(), p)
        raise ValueError(f"conv2d ({CONV_PASSES[<int>which % 3]} pass): the forced algorithm "
                         f"{CONV_ALGORITHMS[p.algorithm]!r} cannot run this geometry: "
                         f"{reason.decode()}")
    return _check(rc)


class force_conv_algorithms:
    """Run the convolution passes with the named algorithms inside a ``with`` block, for tests
    and benchmarks (private; process-wide, not per thread).

    ``forward``: 'direct', 'winograd', 'depthwise', 'pixels' or 'plain' (the last two NCHW only),
    or 'im2col' (channels last only);
    ``input`` (the input gradient): 'transposed', 'depthwise', 'col2im', 'direct', 'pixels' or
    'plain' (the last three channels last only);
    ``weight`` (the weight gradient): 'direct',
    'depthwise', 'grouped' or 'plain' ('depthwise' needs one input channel per group); None or
    'auto' leaves a pass to the plan (src/kernels/conv2d_plan.c). A forced algorithm that cannot
    run a call's geometry makes the call raise ValueError; a non-finite fallback still runs
    where the data needs one (docs/KERNELS.md).
    """

    def __init__(self, forward=None, input=None, weight=None):
        self.wanted = [CONV_ALGORITHMS.index(a or "auto") for a in (forward, input, weight)]

    def __enter__(self):
        self.saved = [_forced[i] for i in range(3)]
        for i in range(3):
            _forced[i] = self.wanted[i]
        return self

    def __exit__(self, *exc):
        for i in range(3):
            _forced[i] = self.saved[i]


def conv_plan(geometry, str which, dtype):
    """(algorithm, non-finite fallback) names of the plan the selected ISA makes for pass
    `which` ('forward', 'input' or 'weight') of the ConvGeometry in float32 or float64, with
    any algorithm force_conv_algorithms set; ValueError if that cannot run it."""
    cdef int index = CONV_PASSES.index(which)
    cdef fc_conv_pass pass_ = _conv_pass(geometry, index)
    cdef fc_conv2d_params p = _conv_params(geometry, index)
    cdef fc_dtype dt = FC_DTYPE_f64 if np.dtype(dtype) == np.float64 else FC_DTYPE_f32
    cdef fc_conv_plan plan
    _check_conv(fc_conv2d_plan(pass_, dt, fc_isa_selected(), &p, &plan), pass_, &p, dt)
    return CONV_ALGORITHMS[plan.algorithm], CONV_ALGORITHMS[plan.nonfinite]


def tuning(str isa, dtype):
    """The tuning table's row (src/kernels/fc_tuning.c) for `isa` and float32 or float64."""
    cdef fc_tuning t = fc_tuning_table[isa_names().index(isa)][
        1 if np.dtype(dtype) == np.float64 else 0]
    return t


cdef int _conv2d_forward(real *y, const fc_conv2d_params *p, bint nhwc, x, w, bias,
                         int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef const real *pw = <real *>_ptr(w)
    cdef const real *pb = <real *>_ptr(bias)
    cdef int rc
    with nogil:
        rc = conv2d_fwd(p, nhwc, px, pw, pb, y, nthreads)
    return _check_conv(rc, FC_CONV_NHWC_FWD if nhwc else FC_CONV_FWD, p,
                       FC_DTYPE_f32 if real is float else FC_DTYPE_f64)


def conv2d_forward(geometry, cnp.ndarray x, cnp.ndarray w, object bias, cnp.ndarray y,
                   int nthreads, bint relu=False):
    """y = conv2d(x, w, bias) (bias may be None) for the ConvGeometry `geometry`; relu: then
    ReLU, in the pass that writes y."""
    if _must_hop(nthreads):
        return _on_fresh_thread(conv2d_forward, geometry, x, w, bias, y, nthreads, relu)
    cdef fc_conv2d_params p = _conv_params(geometry, 0)
    p.relu = relu
    if _is_f32(y):
        _conv2d_forward(<float *>_ptr(y), &p, _nhwc(geometry), x, w, bias, nthreads)
    else:
        _conv2d_forward(<double *>_ptr(y), &p, _nhwc(geometry), x, w, bias, nthreads)


# the algorithms whose weights conv2d_nhwc_prepack packs (conv2d_nhwc_prepacked.h)
PREPACKED_ALGORITHMS = ("winograd", "direct", "im2col")


cdef class PrepackedConv:
    """A channels-last convolution forward with its weights packed once (fastconv.infer's
    plans; src/kernels/conv2d_nhwc_prepacked.h) and its arrays bound: ``run(nthreads)`` writes
    y = conv2d(x, w) + bias (+ residual unless None), then ReLU if `relu`, equal bit for bit to
    conv2d_forward followed by add_relu_forward or relu_forward. The algorithm is the plan's
    (with any force_conv_algorithms); Winograd kernels whose transform is not finite are packed
    for direct, its fallback. The panels are the ISA's selected when it is made: run raises
    RuntimeError under another. ValueError when the plan's algorithm packs nothing (depthwise:
    run conv2d_forward) or the geometry is not channels last. y must not overlap the inputs."""
    cdef fc_conv2d_params p
    cdef readonly str algorithm
    cdef readonly int isa
    cdef readonly object packed
    cdef object x, w, bias, residual, y
    cdef bint f32

    def __init__(self, geometry, cnp.ndarray x, cnp.ndarray w, object bias, object residual,
                 cnp.ndarray y, bint relu=False):
        if not _nhwc(geometry):
            raise ValueError("PrepackedConv: the geometry must be channels last")
        self.p = _conv_params(geometry, 0)
        self.p.relu = relu
        self.f32 = _is_f32(y)
        self.isa = fc_isa_selected()
        cdef fc_dtype dt = FC_DTYPE_f32 if self.f32 else FC_DTYPE_f64
        cdef fc_conv_plan plan
        _check_conv(fc_conv2d_plan(FC_CONV_NHWC_FWD, dt, self.isa, &self.p, &plan),
                    FC_CONV_NHWC_FWD, &self.p, dt)
        if CONV_ALGORITHMS[plan.algorithm] not in PREPACKED_ALGORITHMS:
            raise ValueError(f"PrepackedConv: the plan's algorithm "
                             f"{CONV_ALGORITHMS[plan.algorithm]!r} packs no weights")
        self.p.algorithm = plan.algorithm
        if self._pack(w, bias) == FC_EALGORITHM:  # Winograd kernels not finite
            self.p.algorithm = plan.nonfinite
            _check_conv(self._pack(w, bias), FC_CONV_NHWC_FWD, &self.p, dt)
        self.algorithm = CONV_ALGORITHMS[self.p.algorithm]
        self.x, self.w, self.bias, self.residual, self.y = x, w, bias, residual, y

    cdef int _pack(self, cnp.ndarray w, object bias) except -2:
        cdef fc_index size = 0
        cdef int rc
        if self.f32:
            rc = fc_f32_conv2d_nhwc_prepack(&self.p, <float *>_ptr(w), <float *>_ptr(bias),
                                            NULL, &size, 1)
        else:
            rc = fc_f64_conv2d_nhwc_prepack(&self.p, <double *>_ptr(w), <double *>_ptr(bias),
                                            NULL, &size, 1)
        if rc != FC_OK:
            return rc
        self.packed = np.empty(size, np.float32 if self.f32 else np.float64)
        if self.f32:
            return fc_f32_conv2d_nhwc_prepack(&self.p, <float *>_ptr(w), <float *>_ptr(bias),
                                              <float *>_ptr(self.packed), &size, 1)
        return fc_f64_conv2d_nhwc_prepack(&self.p, <double *>_ptr(w), <double *>_ptr(bias),
                                          <double *>_ptr(self.packed), &size, 1)

    def run(self, int nthreads):
        if _must_hop(nthreads):
            return _on_fresh_thread(self.run, nthreads)
        if fc_isa_selected() != self.isa:
            raise RuntimeError(f"PrepackedConv: packed for {fc_isa_name(self.isa).decode()}, "
                               f"called under {fc_isa_name(fc_isa_selected()).decode()}")
        cdef void *x = _ptr(self.x)
        cdef void *w = _ptr(self.w)
        cdef void *packed = _ptr(self.packed)
        cdef void *bias = _ptr(self.bias)
        cdef void *residual = _ptr(self.residual)
        cdef void *y = _ptr(self.y)
        cdef int rc
        with nogil:
            if self.f32:
                rc = fc_f32_conv2d_nhwc_fwd_prepacked(&self.p, <float *>x, <float *>w,
                                                      <float *>packed, <float *>bias,
                                                      <float *>residual, <float *>y, nthreads)
            else:
                rc = fc_f64_conv2d_nhwc_fwd_prepacked(&self.p, <double *>x, <double *>w,
                                                      <double *>packed, <double *>bias,
                                                      <double *>residual, <double *>y,
                                                      nthreads)
        _check(rc)


cdef int _conv2d_backward_input(real *gx, const fc_conv2d_params *p, bint nhwc, gy, w,
                                bias, int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *pw = <real *>_ptr(w)
    cdef const real *pb = <real *>_ptr(bias)
    cdef int rc
    with nogil:
        rc = conv2d_bwd_input(p, nhwc, pgy, pw, pb, gx, nthreads)
    return _check_conv(rc, FC_CONV_NHWC_BWD_INPUT if nhwc else FC_CONV_BWD_INPUT, p,
                       FC_DTYPE_f32 if real is float else FC_DTYPE_f64)


def conv2d_backward_input(geometry, cnp.ndarray gy, cnp.ndarray w, object bias, cnp.ndarray gx,
                          int nthreads):
    """gx = the gradient of conv2d with respect to its input, given gy, plus bias (one per
    input channel, conv_transpose2d's) unless it is None."""
    if _must_hop(nthreads):
        return _on_fresh_thread(conv2d_backward_input, geometry, gy, w, bias, gx, nthreads)
    cdef fc_conv2d_params p = _conv_params(geometry, 1)
    if _is_f32(gx):
        _conv2d_backward_input(<float *>_ptr(gx), &p, _nhwc(geometry), gy, w, bias, nthreads)
    else:
        _conv2d_backward_input(<double *>_ptr(gx), &p, _nhwc(geometry), gy, w, bias, nthreads)


cdef int _conv2d_relu_backward(real *gz, const fc_conv2d_params *p, gy, y, gb,
                               int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *py = <real *>_ptr(y)
    cdef real *pgb = <real *>_ptr(gb)
    cdef int rc
    with nogil:
        rc = conv2d_relu_bwd(p, pgy, py, gz, pgb, nthreads)
    return _check(rc)


def conv2d_relu_backward(geometry, cnp.ndarray gy, cnp.ndarray y, cnp.ndarray gz,
                         cnp.ndarray gb, int nthreads):
    """gz = gy through the gradient of conv2d_relu's ReLU at its output y, gb = gz's sums over
    images and pixels: the backward of the fused epilogue."""
    if _must_hop(nthreads):
        return _on_fresh_thread(conv2d_relu_backward, geometry, gy, y, gz, gb, nthreads)
    cdef fc_conv2d_params p = _conv_params(geometry, 0)
    if _is_f32(gz):
        _conv2d_relu_backward(<float *>_ptr(gz), &p, gy, y, gb, nthreads)
    else:
        _conv2d_relu_backward(<double *>_ptr(gz), &p, gy, y, gb, nthreads)


cdef int _conv2d_backward_weight(real *gw, const fc_conv2d_params *p, bint nhwc, gy, x, gb,
                                 int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef real *pgb = <real *>_ptr(gb)
    cdef int rc
    with nogil:
        rc = conv2d_bwd_weight(p, nhwc, pgy, px, gw, pgb, nthreads)
    return _check_conv(rc, FC_CONV_NHWC_BWD_WEIGHT if nhwc else FC_CONV_BWD_WEIGHT, p,
                       FC_DTYPE_f32 if real is float else FC_DTYPE_f64)


def conv2d_backward_weight(geometry, cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gw, object gb,
                           int nthreads):
    """gw (and gb unless it is None) = the gradients of conv2d's weight and bias, given gy."""
    if _must_hop(nthreads):
        return _on_fresh_thread(conv2d_backward_weight, geometry, gy, x, gw, gb, nthreads)
    cdef fc_conv2d_params p = _conv_params(geometry, 2)
    if _is_f32(gw):
        _conv2d_backward_weight(<float *>_ptr(gw), &p, _nhwc(geometry), gy, x, gb, nthreads)
    else:
        _conv2d_backward_weight(<double *>_ptr(gw), &p, _nhwc(geometry), gy, x, gb, nthreads)


# ---- pooling -----------------------------------------------------------------------------------

cdef int _maxpool2d_forward(real *y, const fc_pool2d_params *p, bint nhwc, x, indices,
                            int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int64_t *pi = <int64_t *>_ptr(indices)
    cdef int rc
    with nogil:
        rc = maxpool2d_fwd(p, nhwc, px, y, pi, nthreads)
    return _check(rc)


def maxpool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, object indices, int nthreads):
    """y (and the int64 indices unless they are None) = max_pool2d(x)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(maxpool2d_forward, geometry, x, y, indices, nthreads)
    cdef fc_pool2d_params p = _pool_params(geometry)
    if _is_f32(y):
        _maxpool2d_forward(<float *>_ptr(y), &p, _nhwc(geometry), x, indices, nthreads)
    else:
        _maxpool2d_forward(<double *>_ptr(y), &p, _nhwc(geometry), x, indices, nthreads)


cdef int _maxpool2d_backward(real *gx, const fc_pool2d_params *p, bint nhwc, gy, indices,
                             int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const int64_t *pi = <int64_t *>_ptr(indices)
    cdef int rc
    with nogil:
        rc = maxpool2d_bwd(p, nhwc, pgy, pi, gx, nthreads)
    _check(rc)
    return rc != FC_EINDEX


def maxpool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray indices, cnp.ndarray gx,
                       int nthreads):
    """Scatter gy to gx at the int64 indices; True if every index was in [-1, H*W) (False: some
    lay outside, and were skipped)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(maxpool2d_backward, geometry, gy, indices, gx, nthreads)
    cdef fc_pool2d_params p = _pool_params(geometry)
    if _is_f32(gx):
        return bool(_maxpool2d_backward(<float *>_ptr(gx), &p, _nhwc(geometry), gy, indices,
                                        nthreads))
    return bool(_maxpool2d_backward(<double *>_ptr(gx), &p, _nhwc(geometry), gy, indices,
                                    nthreads))


cdef int _avgpool2d_forward(real *y, const fc_pool2d_params *p, bint nhwc, x,
                            int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = avgpool2d_fwd(p, nhwc, px, y, nthreads)
    return _check(rc)


def avgpool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, int nthreads, *,
                      bint count_include_pad, fc_index divisor_override):
    """y = avg_pool2d(x); divisor_override 0 means none."""
    if _must_hop(nthreads):
        return _on_fresh_thread(avgpool2d_forward, geometry, x, y, nthreads, count_include_pad=count_include_pad, divisor_override=divisor_override)
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.count_include_pad = count_include_pad
    p.divisor_override = divisor_override
    if _is_f32(y):
        _avgpool2d_forward(<float *>_ptr(y), &p, _nhwc(geometry), x, nthreads)
    else:
        _avgpool2d_forward(<double *>_ptr(y), &p, _nhwc(geometry), x, nthreads)


cdef int _avgpool2d_backward(real *gx, const fc_pool2d_params *p, bint nhwc, gy,
                             int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef int rc
    with nogil:
        rc = avgpool2d_bwd(p, nhwc, pgy, gx, nthreads)
    return _check(rc)


def avgpool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray gx, int nthreads, *,
                       bint count_include_pad, fc_index divisor_override):
    """gx = the gradient of avg_pool2d, given gy."""
    if _must_hop(nthreads):
        return _on_fresh_thread(avgpool2d_backward, geometry, gy, gx, nthreads, count_include_pad=count_include_pad, divisor_override=divisor_override)
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.count_include_pad = count_include_pad
    p.divisor_override = divisor_override
    if _is_f32(gx):
        _avgpool2d_backward(<float *>_ptr(gx), &p, _nhwc(geometry), gy, nthreads)
    else:
        _avgpool2d_backward(<double *>_ptr(gx), &p, _nhwc(geometry), gy, nthreads)


cdef int _lppool2d_forward(real *y, const fc_pool2d_params *p, bint nhwc, x,
                           int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = lppool2d_fwd(p, nhwc, px, y, nthreads)
    return _check(rc)


def lppool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, int nthreads, *, double norm):
    """y = lp_pool2d(x, norm)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(lppool2d_forward, geometry, x, y, nthreads, norm=norm)
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.norm = norm
    if _is_f32(y):
        _lppool2d_forward(<float *>_ptr(y), &p, _nhwc(geometry), x, nthreads)
    else:
        _lppool2d_forward(<double *>_ptr(y), &p, _nhwc(geometry), x, nthreads)


cdef int _lppool2d_backward(real *gx, const fc_pool2d_params *p, bint nhwc, gy, x,
                            int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = lppool2d_bwd(p, nhwc, pgy, px, gx, nthreads)
    return _check(rc)


def lppool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gx, int nthreads, *,
                      double norm):
    """gx = the gradient of lp_pool2d(x, norm), given gy."""
    if _must_hop(nthreads):
        return _on_fresh_thread(lppool2d_backward, geometry, gy, x, gx, nthreads, norm=norm)
    cdef fc_pool2d_params p = _pool_params(geometry)
    p.norm = norm
    if _is_f32(gx):
        _lppool2d_backward(<float *>_ptr(gx), &p, _nhwc(geometry), gy, x, nthreads)
    else:
        _lppool2d_backward(<double *>_ptr(gx), &p, _nhwc(geometry), gy, x, nthreads)


# ---- adaptive pooling --------------------------------------------------------------------------

cdef fc_pool2d_params _adaptive_params(g) except *:
    """The C geometry of a validated fastconv._validation.AdaptivePoolGeometry: the planes and
    the sizes (what the adaptive kernels read), the rest a 1 x 1 pool's."""
    cdef fc_pool2d_params p
    _fill_adaptive(&p, g.batch, g.channels, g.in_h, g.in_w, g.out_h, g.out_w)
    return p


cdef void _fill_adaptive(fc_pool2d_params *p, fc_index batch, fc_index channels, fc_index in_h,
                         fc_index in_w, fc_index out_h, fc_index out_w) noexcept:
    p.planes = batch * channels
    p.channels = channels
    p.in_h = in_h
    p.in_w = in_w
    p.out_h = out_h
    p.out_w = out_w
    p.kernel_h = p.kernel_w = p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 0
    p.count_include_pad = True
    p.divisor_override = 0
    p.norm = 0


cdef int _adaptive_avgpool2d_forward(real *y, const fc_pool2d_params *p, x,
                                     int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = adaptive_avgpool2d_fwd(p, px, y, nthreads)
    return _check(rc)


def adaptive_avgpool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, int nthreads):
    """y = adaptive_avg_pool2d(x) for the AdaptivePoolGeometry `geometry`."""
    if _must_hop(nthreads):
        return _on_fresh_thread(adaptive_avgpool2d_forward, geometry, x, y, nthreads)
    cdef fc_pool2d_params p = _adaptive_params(geometry)
    if _is_f32(y):
        _adaptive_avgpool2d_forward(<float *>_ptr(y), &p, x, nthreads)
    else:
        _adaptive_avgpool2d_forward(<double *>_ptr(y), &p, x, nthreads)


cdef int _adaptive_avgpool2d_backward(real *gx, const fc_pool2d_params *p, gy,
                                      int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef int rc
    with nogil:
        rc = adaptive_avgpool2d_bwd(p, pgy, gx, nthreads)
    return _check(rc)


def adaptive_avgpool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray gx, int nthreads):
    """gx = the gradient of adaptive_avg_pool2d, given gy."""
    if _must_hop(nthreads):
        return _on_fresh_thread(adaptive_avgpool2d_backward, geometry, gy, gx, nthreads)
    cdef fc_pool2d_params p = _adaptive_params(geometry)
    if _is_f32(gx):
        _adaptive_avgpool2d_backward(<float *>_ptr(gx), &p, gy, nthreads)
    else:
        _adaptive_avgpool2d_backward(<double *>_ptr(gx), &p, gy, nthreads)


cdef int _adaptive_maxpool2d_forward(real *y, const fc_pool2d_params *p, x, indices,
                                     int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef int64_t *pi = <int64_t *>_ptr(indices)
    cdef int rc
    with nogil:
        rc = adaptive_maxpool2d_fwd(p, px, y, pi, nthreads)
    return _check(rc)


def adaptive_maxpool2d_forward(geometry, cnp.ndarray x, cnp.ndarray y, object indices,
                               int nthreads):
    """y (and the int64 indices unless they are None) = adaptive_max_pool2d(x)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(adaptive_maxpool2d_forward, geometry, x, y, indices, nthreads)
    cdef fc_pool2d_params p = _adaptive_params(geometry)
    if _is_f32(y):
        _adaptive_maxpool2d_forward(<float *>_ptr(y), &p, x, indices, nthreads)
    else:
        _adaptive_maxpool2d_forward(<double *>_ptr(y), &p, x, indices, nthreads)


def adaptive_maxpool2d_backward(geometry, cnp.ndarray gy, cnp.ndarray indices, cnp.ndarray gx,
                                int nthreads):
    """Scatter gy to gx at the int64 indices (max pooling's scatter); True if every index was in
    [-1, H*W) (False: some lay outside, and were skipped)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(adaptive_maxpool2d_backward, geometry, gy, indices, gx, nthreads)
    cdef fc_pool2d_params p = _adaptive_params(geometry)
    if _is_f32(gx):
        return bool(_maxpool2d_backward(<float *>_ptr(gx), &p, False, gy, indices, nthreads))
    return bool(_maxpool2d_backward(<double *>_ptr(gx), &p, False, gy, indices, nthreads))


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
    if _must_hop(nthreads):
        return _on_fresh_thread(relu_forward, x, y, nthreads)
    if _is_f32(y):
        _relu_forward(<float *>_ptr(y), x, nthreads)
    else:
        _relu_forward(<double *>_ptr(y), x, nthreads)



cdef int _add_relu_forward(real *y, a, b, int nthreads) except -1:
    cdef fc_index n = cnp.PyArray_SIZE(<cnp.ndarray>a)
    cdef const real *pa = <real *>_ptr(a)
    cdef const real *pb = <real *>_ptr(b)
    cdef int rc
    with nogil:
        rc = add_relu_fwd(n, pa, pb, y, nthreads)
    return _check(rc)


def add_relu_forward(cnp.ndarray a, cnp.ndarray b, cnp.ndarray y, int nthreads):
    """y = relu(a + b), any shape (all three alike; y may be a)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(add_relu_forward, a, b, y, nthreads)
    if _is_f32(y):
        _add_relu_forward(<float *>_ptr(y), a, b, nthreads)
    else:
        _add_relu_forward(<double *>_ptr(y), a, b, nthreads)

cdef int _relu_backward(real *gx, gy, x, bint accumulate, int nthreads) except -1:
    cdef fc_index n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef int rc
    with nogil:
        rc = relu_bwd_add(n, pgy, px, gx, nthreads) if accumulate else \
            relu_bwd(n, pgy, px, gx, nthreads)
    return _check(rc)


def relu_backward(cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gx, int nthreads,
                  bint accumulate=False):
    """gx = the gradient of relu at x, given gy; with accumulate, gx += it."""
    if _must_hop(nthreads):
        return _on_fresh_thread(relu_backward, gy, x, gx, nthreads, accumulate)
    if _is_f32(gx):
        _relu_backward(<float *>_ptr(gx), gy, x, accumulate, nthreads)
    else:
        _relu_backward(<double *>_ptr(gx), gy, x, accumulate, nthreads)


# ---- fully connected -------------------------------------------------------------------------
# x (m, k), w (n, k), y and gy (m, n): C-contiguous, k and n from w's shape, m given (x may be
# empty when k is 0).

cdef int _linear_forward(real *y, fc_index m, x, cnp.ndarray w, bias, int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef const real *pw = <real *>_ptr(w)
    cdef const real *pb = <real *>_ptr(bias)
    cdef fc_index n = w.shape[0], k = w.shape[1]
    cdef int rc
    with nogil:
        rc = linear_fwd(m, k, n, px, pw, pb, y, nthreads)
    return _check(rc)


def linear_forward(fc_index m, cnp.ndarray x, cnp.ndarray w, object bias, cnp.ndarray y,
                   int nthreads):
    """y = x w^T (+ bias unless it is None)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(linear_forward, m, x, w, bias, y, nthreads)
    if _is_f32(y):
        _linear_forward(<float *>_ptr(y), m, x, w, bias, nthreads)
    else:
        _linear_forward(<double *>_ptr(y), m, x, w, bias, nthreads)


cdef int _linear_backward_input(real *gx, fc_index m, gy, cnp.ndarray w,
                                int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *pw = <real *>_ptr(w)
    cdef fc_index n = w.shape[0], k = w.shape[1]
    cdef int rc
    with nogil:
        rc = linear_bwd_input(m, k, n, pgy, pw, gx, nthreads)
    return _check(rc)


def linear_backward_input(fc_index m, cnp.ndarray gy, cnp.ndarray w, cnp.ndarray gx,
                          int nthreads):
    """gx = gy w."""
    if _must_hop(nthreads):
        return _on_fresh_thread(linear_backward_input, m, gy, w, gx, nthreads)
    if _is_f32(gx):
        _linear_backward_input(<float *>_ptr(gx), m, gy, w, nthreads)
    else:
        _linear_backward_input(<double *>_ptr(gx), m, gy, w, nthreads)


cdef int _linear_backward_weight(real *gw, fc_index m, gy, x, gb, bint accumulate,
                                 int nthreads, fc_index n, fc_index k) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *px = <real *>_ptr(x)
    cdef real *pgb = <real *>_ptr(gb)
    cdef int rc
    with nogil:
        rc = linear_bwd_weight(m, k, n, pgy, px, gw, pgb, accumulate, nthreads)
    return _check(rc)


def linear_backward_weight(fc_index m, cnp.ndarray gy, cnp.ndarray x, cnp.ndarray gw,
                           object gb, bint accumulate, int nthreads):
    """gw (n, k) = gy^T x and gb (unless None) = gy summed over its rows; with `accumulate`
    both are added to instead."""
    if _must_hop(nthreads):
        return _on_fresh_thread(linear_backward_weight, m, gy, x, gw, gb, accumulate, nthreads)
    if _is_f32(gw):
        _linear_backward_weight(<float *>_ptr(gw), m, gy, x, gb, accumulate, nthreads,
                                gw.shape[0], gw.shape[1])
    else:
        _linear_backward_weight(<double *>_ptr(gw), m, gy, x, gb, accumulate, nthreads,
                                gw.shape[0], gw.shape[1])


# ---- batch normalisation -------------------------------------------------------------------
# x (N, C, *) C-contiguous; mean, var, weight, bias, running statistics and the parameter
# gradients (C,) of x's dtype; weight, bias and the running statistics may be None.

cdef fc_batchnorm_params _batchnorm_params(cnp.ndarray x, double eps, double momentum,
                                           bint relu=False):
    cdef fc_batchnorm_params p
    p.batch = x.shape[0]
    p.channels = x.shape[1]
    p.inner = 1
    for d in range(2, x.ndim):
        p.inner *= x.shape[d]
    p.eps = eps
    p.momentum = momentum
    p.relu = relu
    return p


cdef int _batchnorm_stats(real *mean, const fc_batchnorm_params *p, x, var, running_mean,
                          running_var, int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef real *pv = <real *>_ptr(var)
    cdef real *prm = <real *>_ptr(running_mean)
    cdef real *prv = <real *>_ptr(running_var)
    cdef int rc
    with nogil:
        rc = batchnorm_stats(p, px, mean, pv, prm, prv, nthreads)
    return _check(rc)


def batch_norm_stats(cnp.ndarray x, cnp.ndarray mean, cnp.ndarray var, object running_mean,
                    object running_var, double momentum, int nthreads):
    """mean, var = x's per-channel mean and biased variance; the running statistics (unless
    None) updated with `momentum`."""
    if _must_hop(nthreads):
        return _on_fresh_thread(batch_norm_stats, x, mean, var, running_mean, running_var,
                                momentum, nthreads)
    cdef fc_batchnorm_params p = _batchnorm_params(x, 0.0, momentum)
    if _is_f32(mean):
        _batchnorm_stats(<float *>_ptr(mean), &p, x, var, running_mean, running_var, nthreads)
    else:
        _batchnorm_stats(<double *>_ptr(mean), &p, x, var, running_mean, running_var, nthreads)


cdef int _batchnorm_forward(real *y, const fc_batchnorm_params *p, x, mean, var, weight, bias,
                            add, int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef const real *pm = <real *>_ptr(mean)
    cdef const real *pv = <real *>_ptr(var)
    cdef const real *pw = <real *>_ptr(weight)
    cdef const real *pb = <real *>_ptr(bias)
    cdef const real *pa = <real *>_ptr(add)
    cdef int rc
    with nogil:
        rc = batchnorm_fwd(p, px, pm, pv, pw, pb, pa, y, nthreads)
    return _check(rc)


def batch_norm_forward(cnp.ndarray x, cnp.ndarray mean, cnp.ndarray var, object weight,
                      object bias, cnp.ndarray y, double eps, int nthreads, bint relu=False,
                      object add=None):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel, plus add (x's shape, C
    order) unless None; then ReLU with relu."""
    if _must_hop(nthreads):
        return _on_fresh_thread(batch_norm_forward, x, mean, var, weight, bias, y, eps, nthreads,
                                relu, add)
    cdef fc_batchnorm_params p = _batchnorm_params(x, eps, 0.0, relu)
    if _is_f32(y):
        _batchnorm_forward(<float *>_ptr(y), &p, x, mean, var, weight, bias, add, nthreads)
    else:
        _batchnorm_forward(<double *>_ptr(y), &p, x, mean, var, weight, bias, add, nthreads)


cdef int _batchnorm_train_forward(real *y, const fc_batchnorm_params *p, x, mean, var,
                                  running_mean, running_var, weight, bias, add,
                                  int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef real *pm = <real *>_ptr(mean)
    cdef real *pv = <real *>_ptr(var)
    cdef real *prm = <real *>_ptr(running_mean)
    cdef real *prv = <real *>_ptr(running_var)
    cdef const real *pw = <real *>_ptr(weight)
    cdef const real *pb = <real *>_ptr(bias)
    cdef const real *pa = <real *>_ptr(add)
    cdef int rc
    with nogil:
        rc = batchnorm_train_fwd(p, px, pm, pv, prm, prv, pw, pb, pa, y, nthreads)
    return _check(rc)


def batch_norm_train_forward(cnp.ndarray x, cnp.ndarray mean, cnp.ndarray var,
                             object running_mean, object running_var, double momentum,
                             object weight, object bias, cnp.ndarray y, double eps, int nthreads,
                             bint relu=False, object add=None):
    """batch_norm_stats, then batch_norm_forward with those statistics, in one kernel."""
    if _must_hop(nthreads):
        return _on_fresh_thread(batch_norm_train_forward, x, mean, var, running_mean,
                                running_var, momentum, weight, bias, y, eps, nthreads, relu, add)
    cdef fc_batchnorm_params p = _batchnorm_params(x, eps, momentum, relu)
    if _is_f32(y):
        _batchnorm_train_forward(<float *>_ptr(y), &p, x, mean, var, running_mean, running_var,
                                 weight, bias, add, nthreads)
    else:
        _batchnorm_train_forward(<double *>_ptr(y), &p, x, mean, var, running_mean,
                                 running_var, weight, bias, add, nthreads)


cdef int _batchnorm_backward(real *gx, const fc_batchnorm_params *p, gy, y, x, mean, var,
                             weight, bint training, gw, gb, int nthreads) except -1:
    cdef const real *pgy = <real *>_ptr(gy)
    cdef const real *py = <real *>_ptr(y)
    cdef const real *px = <real *>_ptr(x)
    cdef const real *pm = <real *>_ptr(mean)
    cdef const real *pv = <real *>_ptr(var)
    cdef const real *pw = <real *>_ptr(weight)
    cdef real *pgw = <real *>_ptr(gw)
    cdef real *pgb = <real *>_ptr(gb)
    cdef int rc
    with nogil:
        rc = batchnorm_bwd(p, pgy, py, px, pm, pv, pw, training, gx, pgw, pgb, nthreads)
    return _check(rc)


def batch_norm_backward(cnp.ndarray gy, cnp.ndarray x, cnp.ndarray mean, cnp.ndarray var,
                       object weight, bint training, cnp.ndarray gx, cnp.ndarray gw,
                       cnp.ndarray gb, double eps, int nthreads, object y=None):
    """gx, gw, gb = the gradients of batch normalisation with statistics (mean, var), through
    them when `training`; through the ReLU of the fused forward whose output is y, unless y is
    None."""
    if _must_hop(nthreads):
        return _on_fresh_thread(batch_norm_backward, gy, x, mean, var, weight, training, gx, gw,
                                gb, eps, nthreads, y)
    cdef fc_batchnorm_params p = _batchnorm_params(x, eps, 0.0)
    if _is_f32(gx):
        _batchnorm_backward(<float *>_ptr(gx), &p, gy, y, x, mean, var, weight, training, gw,
                            gb, nthreads)
    else:
        _batchnorm_backward(<double *>_ptr(gx), &p, gy, y, x, mean, var, weight, training, gw,
                            gb, nthreads)


# ---- the rest of a training step ---------------------------------------------------------------
# C-contiguous arrays of one dtype (labels int64); each function's first array picks it.

cdef int _cross_entropy(real *loss, cnp.ndarray logits, target, double grad_scale, grad,
                        int nthreads) except -1:
    cdef const real *pl = <real *>_ptr(logits)
    cdef const int64_t *pt = <int64_t *>_ptr(target)
    cdef real *pg = <real *>_ptr(grad)
    cdef fc_index n = logits.shape[0], c = logits.shape[1]
    cdef int rc
    with nogil:
        rc = cross_entropy(n, c, pl, pt, grad_scale, loss, pg, nthreads)
    return _check(rc)


def cross_entropy_forward(cnp.ndarray logits, cnp.ndarray target, cnp.ndarray loss,
                          object grad, double grad_scale, int nthreads):
    """loss (0-d) = mean cross-entropy of logits (n, c) against int64 target (n,); grad (unless
    None) = (softmax(logits) - one_hot(target)) * grad_scale."""
    if _must_hop(nthreads):
        return _on_fresh_thread(cross_entropy_forward, logits, target, loss, grad, grad_scale,
                                nthreads)
    if _is_f32(logits):
        _cross_entropy(<float *>_ptr(loss), logits, target, grad_scale, grad, nthreads)
    else:
        _cross_entropy(<double *>_ptr(loss), logits, target, grad_scale, grad, nthreads)


cdef int _dropout(real *y, cnp.ndarray x, double p, mask, int nthreads) except -1:
    cdef const real *px = <real *>_ptr(x)
    cdef real *pm = <real *>_ptr(mask)
    cdef fc_index n = cnp.PyArray_SIZE(x)
    cdef int rc
    with nogil:
        rc = dropout(n, px, p, pm, y, nthreads)
    return _check(rc)


def dropout_forward(cnp.ndarray x, double p, cnp.ndarray uniform_mask, cnp.ndarray y,
                    int nthreads):
    """uniform_mask: draws in [0, 1), overwritten with the dropout mask; y = x * mask."""
    if _must_hop(nthreads):
        return _on_fresh_thread(dropout_forward, x, p, uniform_mask, y, nthreads)
    if _is_f32(y):
        _dropout(<float *>_ptr(y), x, p, uniform_mask, nthreads)
    else:
        _dropout(<double *>_ptr(y), x, p, uniform_mask, nthreads)


cdef int _adam(real *param, cnp.ndarray grad, exp_avg, exp_avg_sq, const fc_adam_params *p,
               int nthreads) except -1:
    cdef const real *pg = <real *>_ptr(grad)
    cdef real *pm = <real *>_ptr(exp_avg)
    cdef real *ps = <real *>_ptr(exp_avg_sq)
    cdef fc_index n = cnp.PyArray_SIZE(grad)
    cdef int rc
    with nogil:
        rc = adam_update(n, param, pg, pm, ps, p, nthreads)
    return _check(rc)


def adam_step(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
              cnp.ndarray exp_avg_sq, fc_index step, double lr, double beta1, double beta2,
              double eps, double weight_decay, int nthreads):
    """One Adam update of param, exp_avg and exp_avg_sq in place (step: 1 on the first)."""
    if _must_hop(nthreads):
        return _on_fresh_thread(adam_step, param, grad, exp_avg, exp_avg_sq, step, lr, beta1,
                                beta2, eps, weight_decay, nthreads)
    cdef fc_adam_params p
    p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, p.step = (lr, beta1, beta2, eps,
                                                             weight_decay, step)
    if _is_f32(param):
        _adam(<float *>_ptr(param), grad, exp_avg, exp_avg_sq, &p, nthreads)
    else:
        _adam(<double *>_ptr(param), grad, exp_avg, exp_avg_sq, &p, nthreads)


cdef int _sgd(real *param, cnp.ndarray grad, buf, const fc_sgd_params *p,
              int nthreads) except -1:
    cdef const real *pg = <real *>_ptr(grad)
    cdef real *pb = <real *>_ptr(buf)
    cdef fc_index n = cnp.PyArray_SIZE(grad)
    cdef int rc
    with nogil:
        rc = sgd_update(n, param, pg, pb, p, nthreads)
    return _check(rc)


def sgd_step(cnp.ndarray param, cnp.ndarray grad, object momentum_buffer, bint first,
             double lr, double momentum, double dampening, double weight_decay, bint nesterov,
             int nthreads):
    """One SGD update of param (and of momentum_buffer unless it is None) in place."""
    if _must_hop(nthreads):
        return _on_fresh_thread(sgd_step, param, grad, momentum_buffer, first, lr, momentum,
                                dampening, weight_decay, nesterov, nthreads)
    cdef fc_sgd_params p
    p.lr, p.momentum, p.dampening, p.weight_decay = lr, momentum, dampening, weight_decay
    p.nesterov, p.first = nesterov, first
    if _is_f32(param):
        _sgd(<float *>_ptr(param), grad, momentum_buffer, &p, nthreads)
    else:
        _sgd(<double *>_ptr(param), grad, momentum_buffer, &p, nthreads)


# ---- the fast path of fastconv.functional's ops ------------------------------------------------

include "_fastpath.pxi"


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


# ---- for the tests: the microkernels, transforms and packing routines one by one ---------------

cdef _name(const char *s):
    return None if s == NULL else s.decode()


def ukernel_table(str isa, dtype):
    """The UkernelTable of instruction set `isa` for float32 or float64; ValueError where this
    build or CPU lacks the ISA."""
    return UkernelTable(isa, dtype)


cdef class UkernelTable:
    """One ISA's and dtype's GEMM microkernels, Winograd F(2x2, 3x3) transforms and packing
    routines, called directly on NumPy arrays (src/kernels/fc_ukernels.h; their contracts are in
    docs/KERNELS.md). For the tests: every array must be C-contiguous and of the table's dtype,
    and each call checks that the elements it will touch lie inside the arrays it is given.
    Pointer arguments (A rows, B rows, the 16 Winograd matrices) are given as one array and the
    element offsets into it."""

    cdef const fc_ukernel_table *t
    cdef readonly str isa
    cdef readonly object dtype

    def __init__(self, str isa, dtype):
        self.isa = isa
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"ukernel_table: dtype must be float32 or float64, got {dtype}")
        self.t = fc_ukernel_table_for(isa_names().index(isa), self.dtype == np.float64)
        if self.t == NULL:
            raise ValueError(f"ukernel_table: this build or CPU has no {isa} path")

    @property
    def mr(self):
        return self.t.mr

    @property
    def nr(self):
        return self.t.nr

    @property
    def names(self):
        """{routine: the C name it runs}, None for a routine this ISA lacks."""
        t = self.t
        return {"gemm": _name(t.gemm_name), "gemm_half": _name(t.gemm_half_name),
                "gemm_rows": _name(t.gemm_rows_name),
                "gemm_rows_half": _name(t.gemm_rows_half_name), "pack_a": _name(t.pack_a_name),
                "pack_b": _name(t.pack_b_name), "pack_b_panel": _name(t.pack_b_panel_name),
                "pack_dyt": _name(t.pack_dyt_name), "gather_run": _name(t.gather_run_name),
                "scatter_add_run": _name(t.scatter_add_run_name),
                "winograd_kernel": _name(t.winograd_kernel_name),
                "winograd_input": _name(t.winograd_input_name),
                "winograd_output": _name(t.winograd_output_name),
                "plane_sum": _name(t.plane_sum_name), "plane_argmax": _name(t.plane_argmax_name),
                "dwconv": _name(t.dwconv_name), "dwconv_dot": _name(t.dwconv_dot_name),
                "igemm": _name(t.igemm_name), "igemm_half": _name(t.igemm_half_name),
                "gemm_cols": _name(t.gemm_cols_name),
                "gemm_cols_half": _name(t.gemm_cols_half_name),
                "dwconv_nhwc": _name(t.dwconv_nhwc_name),
                "dwconv_dot_nhwc": _name(t.dwconv_dot_nhwc_name),
                "gconv4_nhwc": _name(t.gconv4_nhwc_name),
                "gconv4_dot_nhwc": _name(t.gconv4_dot_nhwc_name),
                "igemm_wide": _name(t.igemm_wide_name),
                "gemm_rows_images": _name(t.gemm_rows_images_name),
                "gemm_rows_images_half": _name(t.gemm_rows_images_half_name),
                "gemm_cols_wide": _name(t.gemm_cols_wide_name)}

    @property
    def gemm_cols_wide_rows(self):
        """The rows of gemm_cols' tall tile (`pixels`' 14), 0 where this ISA lacks it."""
        return self.t.gemm_cols_wide_rows

    cdef void *_data(self, cnp.ndarray a, fc_index need, str what) except NULL:
        """a's data, after checking its dtype and layout and that it holds `need` elements."""
        if a.dtype != self.dtype or not a.flags.c_contiguous:
            raise TypeError(f"{what} must be a C-contiguous {self.dtype} array")
        if need > a.size:
            raise ValueError(f"{what} has {a.size} elements, the call touches {need}")
        return cnp.PyArray_DATA(a)

    cdef const void **_pointers(self, cnp.ndarray base, offsets, fc_index extent,
                                str what) except NULL:
        """Pointers base + offsets[i] (elements), each with `extent` elements inside base; the
        caller frees the array."""
        cdef char *data = <char *>self._data(base, 0, what)
        cdef fc_index n = len(offsets), i, off, item = base.itemsize
        cdef const void **ptrs = <const void **>PyMem_Malloc(sizeof(void *) * max(n, 1))
        if ptrs == NULL:
            raise MemoryError()
        for i in range(n):
            off = offsets[i]
            if off < 0 or off + extent > base.size:
                PyMem_Free(ptrs)
                raise ValueError(f"{what}: offset {off} + {extent} elements lies outside the "
                                 f"{base.size} given")
            ptrs[i] = data + off * item
        return ptrs

    def gemm(self, fc_index kc, cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, fc_index ldc,
             int mr, int nr, bint accumulate, cnp.ndarray bias=None, bint half=False):
        """C[mr x nr] (+)= A panel [kc][MR] * B panel [kc][NR] (+ bias[:mr]); half: the
        half-width microkernel (nr <= NR/2)."""
        fn = self.t.gemm_half if half else self.t.gemm
        if fn == NULL:
            raise ValueError(f"{self.isa} has no half-width microkernel")
        if not (1 <= mr <= self.t.mr and 1 <= nr <= (self.t.nr // 2 if half else self.t.nr)
                and ldc >= nr and kc >= 1):
            raise ValueError(f"gemm: mr={mr}, nr={nr}, ldc={ldc}, kc={kc} outside the tile")
        cdef const void *pa = self._data(a, kc * self.t.mr, "a")
        cdef const void *pb = self._data(b, kc * self.t.nr, "b")
        cdef void *pc = self._data(c, (mr - 1) * ldc + nr, "c")
        cdef const void *pbias = NULL if bias is None else self._data(bias, mr, "bias")
        fn(kc, pa, pb, pc, ldc, mr, nr, accumulate, pbias)

    def gemm_rows(self, fc_index kc, cnp.ndarray a, a_offsets, cnp.ndarray b, cnp.ndarray c,
                  fc_index ldc, bint half=False, fc_index segments=1, fc_index a_step=0,
                  images=None, fc_index a_img=0, fc_index b_img=0):
        """C[MR x NR] += A * B panel [kc][NR], A's row i being a[a_offsets[i]:] read in
        `segments` segments of kc / segments steps, a_step apart; half: the half-width rows
        microkernel, C[MR x NR/2] on the panel's first NR/2 columns. With `images` (an int):
        gemm_rows_images[_half], the sum of that over images g < images, image g's rows
        a_img further on in a and its panel b_img further on in b."""
        fn = self.t.gemm_rows_half if half else self.t.gemm_rows
        fn_images = self.t.gemm_rows_images_half if half else self.t.gemm_rows_images
        if fn == NULL or fn_images == NULL:
            raise ValueError(f"{self.isa} has no half-width rows microkernel")
        cdef fc_index cols = self.t.nr // 2 if half else self.t.nr
        cdef fc_index imgs = 1 if images is None else images
        if (len(a_offsets) != self.t.mr or ldc < cols or kc < 1 or segments < 1
                or kc % segments or a_step < 0 or imgs < 1 or a_img < 0 or b_img < 0):
            raise ValueError(f"gemm_rows: MR row offsets, ldc >= {cols}, kc >= 1 a multiple of "
                             "segments >= 1, a_step, a_img, b_img >= 0 and images >= 1 needed")
        cdef fc_index seg_len = kc // segments
        cdef const void *pb = self._data(b, (imgs - 1) * b_img + kc * self.t.nr, "b")
        cdef void *pc = self._data(c, (self.t.mr - 1) * ldc + cols, "c")
        cdef const void **rows = self._pointers(
            a, a_offsets, (imgs - 1) * a_img + (segments - 1) * a_step + seg_len, "a")
        if images is None:
            fn(segments, seg_len, a_step, rows, pb, pc, ldc)
        else:
            fn_images(imgs, a_img, b_img, segments, seg_len, a_step, rows, pb, pc, ldc)
        PyMem_Free(rows)

    def pack_a(self, fc_index m, fc_index kd, cnp.ndarray src, fc_index rs, fc_index cs,
               cnp.ndarray dst):
        """dst = A(i, k) = src[i * rs + k * cs] packed as [ceil(m / MR)][kd][MR]."""
        if m < 1 or kd < 1 or rs < 0 or cs < 0:
            raise ValueError("pack_a: m, kd >= 1 and strides >= 0 needed")
        cdef const void *ps = self._data(src, (m - 1) * rs + (kd - 1) * cs + 1, "src")
        cdef void *pd = self._data(dst, -(-m // self.t.mr) * self.t.mr * kd, "dst")
        self.t.pack_a(m, kd, ps, rs, cs, pd)

    def pack_b(self, fc_index kd, fc_index nc, cnp.ndarray src, fc_index ld, cnp.ndarray dst):
        """dst = B(k, q) = src[k * ld + q] packed as [ceil(nc / NR)][kd][NR]."""
        if nc < 1 or kd < 1 or ld < nc:
            raise ValueError("pack_b: nc, kd >= 1 and ld >= nc needed")
        cdef const void *ps = self._data(src, (kd - 1) * ld + nc, "src")
        cdef void *pd = self._data(dst, -(-nc // self.t.nr) * self.t.nr * kd, "dst")
        self.t.pack_b(kd, nc, ps, ld, pd)

    def pack_b_panel(self, fc_index kc, cnp.ndarray rows, row_offsets, fc_index q,
                     cnp.ndarray dst):
        """dst[r][u] = rows[row_offsets[r] + q + u] for r < kc, u < NR."""
        if len(row_offsets) != kc or q < 0:
            raise ValueError("pack_b_panel: kc row offsets and q >= 0 needed")
        cdef void *pd = self._data(dst, kc * self.t.nr, "dst")
        cdef const void **pr = self._pointers(rows, [o + q for o in row_offsets], self.t.nr,
                                              "rows")
        cdef fc_index i, shift = q * rows.itemsize
        for i in range(kc):  # the routine is given the rows' starts and adds q itself
            pr[i] = <const char *>pr[i] - shift
        self.t.pack_b_panel(kc, pr, q, pd)
        PyMem_Free(pr)

    def pack_dyt(self, cnp.ndarray gy, fc_index kg, fc_index p, fc_index ow, fc_index wph,
                 fc_index q0, fc_index n, cnp.ndarray dst):
        """dst = dY^T of grid pixels [q0, q0 + n) (wph columns per output row of ow) of the
        kg channels of gy (p pixels each), as [ceil(kg / NR)][n][NR]."""
        if kg < 1 or ow < 1 or p % ow or wph < ow or q0 < 0 or n < 1 or q0 + n > p // ow * wph:
            raise ValueError("pack_dyt: the chunk must lie on the grid")
        cdef const void *pg = self._data(gy, kg * p, "gy")
        cdef void *pd = self._data(dst, -(-kg // self.t.nr) * self.t.nr * n, "dst")
        self.t.pack_dyt(pg, kg, p, ow, wph, q0, n, pd)

    def gather_run(self, cnp.ndarray row, fc_index iw0, fc_index s, fc_index w,
                   fc_index length, cnp.ndarray dst, fc_index ds):
        """dst[t * ds] = row[iw0 + t * s] (0 outside [0, w), or everywhere for row None)."""
        if s < 1 or ds < 1 or length < 1 or w < 1:
            raise ValueError("gather_run: s, ds, length and w >= 1 needed")
        cdef const void *pr = NULL if row is None else self._data(row, w, "row")
        cdef void *pd = self._data(dst, (length - 1) * ds + 1, "dst")
        self.t.gather_run(pr, iw0, s, w, length, pd, ds)

    def scatter_add_run(self, cnp.ndarray row, fc_index iw0, fc_index s, fc_index w,
                        fc_index length, cnp.ndarray src):
        """row[iw0 + t * s] += src[t] where 0 <= iw0 + t * s < w."""
        if s < 1 or length < 1 or w < 1:
            raise ValueError("scatter_add_run: s, length and w >= 1 needed")
        cdef void *pr = self._data(row, w, "row")
        cdef const void *ps = self._data(src, length, "src")
        self.t.scatter_add_run(pr, iw0, s, w, length, ps)

    def winograd_kernel(self, cnp.ndarray w, fc_index k0, fc_index kg, fc_index cg, fc_index c,
                        cnp.ndarray u):
        """u[e][i] = (G g G^T)[e] for kernel k0 + i of w (kg, cg, 3, 3), channel c (0 past kg);
        True if any of them is Inf or NaN."""
        if not (0 <= k0 < kg and 0 <= c < cg):
            raise ValueError("winograd_kernel: k0 < kg and c < cg needed")
        cdef const void *pw = self._data(w, kg * cg * 9, "w")
        cdef void *pu = self._data(u, 16 * self.t.mr, "u")
        return bool(self.t.winograd_kernel(pw, k0, kg, cg, c, pu))

    def winograd_input(self, cnp.ndarray plane, fc_index wp, fc_index th0, fc_index th1,
                       fc_index m0, fc_index m1, cnp.ndarray v, v_offsets):
        """V_e = (B^T d B)[e] of the tiles m in [m0, m1) counted from tile row th0 of a padded
        plane (wp = 2 * tiles per row + 2 columns), into v[v_offsets[e] + m - m0]."""
        cdef fc_index tw = (wp - 2) // 2
        if wp < 4 or wp % 2 or not (0 <= th0 < th1) or not (0 <= m0 < m1 <= (th1 - th0) * tw) \
                or m0 >= tw or m1 <= (th1 - th0 - 1) * tw or len(v_offsets) != 16:
            raise ValueError("winograd_input: [m0, m1) must start in tile row th0 and end in "
                             "th1 - 1, with 16 offsets")
        cdef const void *pp = self._data(plane, (2 * th1 + 2) * wp, "plane")
        cdef cnp.ndarray lo = np.empty(4 * (th1 - th0) * (wp - 2), self.dtype)
        cdef cnp.ndarray hi = np.empty_like(lo)
        cdef const void **pv = self._pointers(v, v_offsets, m1 - m0, "v")
        self.t.winograd_input(pp, wp, th0, th1, m0, m1, cnp.PyArray_DATA(lo),
                              cnp.PyArray_DATA(hi), <void *const *>pv)
        PyMem_Free(pv)

    def plane_sum(self, fc_index n, cnp.ndarray x):
        """The sum of x[:n] (as the table's dtype)."""
        if n < 0:
            raise ValueError("plane_sum: n >= 0 needed")
        cdef const void *px = self._data(x, n, "x")
        cdef cnp.ndarray out = np.empty(1, self.dtype)
        self.t.plane_sum(n, px, cnp.PyArray_DATA(out))
        return out[0]

    def igemm(self, fc_index ks, fc_index kc, cnp.ndarray a, a_offsets, cnp.ndarray b,
              cnp.ndarray c, fc_index ldc, int mr, int nr, bint accumulate,
              cnp.ndarray bias=None, bint half=False, cnp.ndarray b2=None):
        """C[mr x nr] (+)= sum over s < ks of A_s * B_s (+ bias[:nr]), row i of A_s being
        a[a_offsets[i * ks + s]:][:kc] (MR * ks offsets), B packed [ks][kc][NR]; half: the
        half-width microkernel (nr <= NR/2); b2: the one-and-a-half-panel microkernel, the
        columns past NR from b2's first NR/2 (NR < nr <= NR + NR/2)."""
        wide = b2 is not None
        fn = self.t.igemm_half if half else self.t.igemm
        if half and wide:
            raise ValueError("igemm: half and b2 (the one-and-a-half-panel microkernel) "
                             "exclude each other, got both")
        if half and fn == NULL:
            raise ValueError(f"igemm: {self.isa} has no half-width microkernel")
        if wide and self.t.igemm_wide == NULL:
            raise ValueError(f"igemm: {self.isa} has no one-and-a-half-panel microkernel")
        cdef int lo = self.t.nr + 1 if wide else 1
        cdef int hi = (self.t.nr + self.t.nr // 2 if wide
                       else self.t.nr // 2 if half else self.t.nr)
        if not (1 <= mr <= self.t.mr and lo <= nr <= hi
                and ldc >= nr and kc >= 1 and ks >= 1 and len(a_offsets) == self.t.mr * ks):
            raise ValueError(f"igemm: mr={mr}, nr={nr}, ldc={ldc}, kc={kc}, ks={ks} or "
                             f"{len(a_offsets)} offsets outside the contract")
        cdef const void *pb = self._data(b, ks * kc * self.t.nr, "b")
        cdef const void *pb2 = self._data(b2, ks * kc * self.t.nr, "b2") if wide else NULL
        cdef void *pc = self._data(c, (mr - 1) * ldc + nr, "c")
        cdef const void *pbias = NULL if bias is None else self._data(bias, nr, "bias")
        cdef const void **rows = self._pointers(a, a_offsets, kc, "a")
        if wide:
            self.t.igemm_wide(ks, kc, rows, pb, pb2, pc, ldc, mr, nr, accumulate, pbias)
        else:
            fn(ks, kc, rows, pb, pc, ldc, mr, nr, accumulate, pbias)
        PyMem_Free(rows)

    def gemm_cols(self, fc_index kc, cnp.ndarray a, a_offsets, fc_index off, cnp.ndarray b,
                  cnp.ndarray c, fc_index ldc, bint half=False, bint wide=False):
        """C[MR x NR] += A * B panel [kc][NR], A's column r being a[a_offsets[r] + off:][:MR];
        half: C[2 MR x NR/2] on the panel's first NR/2 columns, A's columns 2 MR long; wide
        (not with half): C[gemm_cols_wide_rows x NR], `pixels`' tall tile."""
        fn = (self.t.gemm_cols_half if half else self.t.gemm_cols_wide if wide
              else self.t.gemm_cols)
        if fn == NULL:
            raise ValueError(f"{self.isa} has no {'wide' if wide else 'half-width'} "
                             "gemm_cols microkernel")
        cdef fc_index rows = (2 * self.t.mr if half else self.t.gemm_cols_wide_rows if wide
                              else self.t.mr)
        cdef fc_index cols_n = self.t.nr // 2 if half else self.t.nr
        if len(a_offsets) != kc or ldc < cols_n or kc < 1 or off < 0 or (half and wide):
            raise ValueError("gemm_cols: kc column offsets, ldc >= the tile's columns, kc >= 1 "
                             "and off >= 0 needed, half and wide exclusive")
        cdef const void *pb = self._data(b, kc * self.t.nr, "b")
        cdef void *pc = self._data(c, (rows - 1) * ldc + cols_n, "c")
        cdef const void **cols = self._pointers(a, a_offsets, off + rows, "a")
        fn(kc, cols, off, pb, pc, ldc)
        PyMem_Free(cols)

    def dwconv_nhwc(self, fc_index c, cnp.ndarray a, a_offsets, cnp.ndarray b, b_offsets,
                    cnp.ndarray y, bint accumulate, cnp.ndarray bias=None):
        """y[:c] = (y[:c] if accumulate else bias[:c] or 0) + sum over e of
        a[a_offsets[e]:][:c] * b[b_offsets[e]:][:c]."""
        self._terms("dwconv_nhwc", c, a, a_offsets, b, b_offsets, y, accumulate, bias)

    def dwconv_dot_nhwc(self, fc_index c, fc_index n, fc_index kh, fc_index kw, cnp.ndarray x,
                        fc_index xs, fc_index rs, fc_index ts, cnp.ndarray g, cnp.ndarray y):
        """y[(i kw + j) c + q] += sum over e < n of x[e xs + i rs + j ts + q] g[e c + q],
        i < kh, j < kw, q < c."""
        if c < 0 or n < 0 or kh < 0 or kw < 0 or xs < 0 or rs < 0 or ts < 0:
            raise ValueError("dwconv_dot_nhwc: c, n, kh, kw, xs, rs, ts >= 0 needed")
        cdef fc_index extent = ((n - 1) * xs + (kh - 1) * rs + (kw - 1) * ts + c
                                if n and kh and kw else 0)
        cdef const void *px = self._data(x, extent, "x")
        cdef const void *pg = self._data(g, n * c, "g")
        cdef void *py = self._data(y, kh * kw * c, "y")
        self.t.dwconv_dot_nhwc(c, n, kh, kw, px, xs, rs, ts, pg, py)

    def gconv4_nhwc(self, fc_index c, cnp.ndarray a, a_offsets, cnp.ndarray b, b_offsets,
                    cnp.ndarray y, bint accumulate, cnp.ndarray bias=None):
        """dwconv_nhwc for groups of four channels (c a multiple of 4): four rows of c weights
        per b offset, lane q of row r meeting a's lane q - q % 4 + (q % 4 + r) % 4."""
        self._terms("gconv4_nhwc", c, a, a_offsets, b, b_offsets, y, accumulate, bias)

    def gconv4_dot_nhwc(self, fc_index c, cnp.ndarray a, a_offsets, cnp.ndarray b, b_offsets,
                        cnp.ndarray y):
        """y[r c + q] += sum over e of a[a_offsets[e] + q - q % 4 + (q % 4 + r) % 4] *
        b[b_offsets[e] + q], r < 4 (c a multiple of 4)."""
        self._terms("gconv4_dot_nhwc", c, a, a_offsets, b, b_offsets, y, True, None)

    cdef _terms(self, str kind, fc_index c, cnp.ndarray a, a_offsets, cnp.ndarray b, b_offsets,
                cnp.ndarray y, bint accumulate, cnp.ndarray bias):
        """The channelwise microkernels of one pointer per term and operand: checks, pointers,
        the call. b holds four weight rows per term for gconv4_nhwc, y four rows of sums for
        gconv4_dot_nhwc."""
        grouped = kind != "dwconv_nhwc"
        if len(a_offsets) != len(b_offsets) or c < 0 or (grouped and c % 4):
            raise ValueError(f"{kind}: as many a as b offsets and c >= 0 needed"
                             + (", a multiple of 4" if grouped else ""))
        cdef fc_index ne = len(a_offsets)
        cdef void *py = self._data(y, 4 * c if kind == "gconv4_dot_nhwc" else c, "y")
        cdef const void *pbias = NULL if bias is None else self._data(bias, c, "bias")
        cdef const void **pa = self._pointers(a, a_offsets, c, "a")
        cdef const void **pb
        try:
            pb = self._pointers(b, b_offsets, 4 * c if kind == "gconv4_nhwc" else c, "b")
        except ValueError:
            PyMem_Free(pa)
            raise
        if kind == "dwconv_nhwc":
            self.t.dwconv_nhwc(c, ne, pa, pb, py, accumulate, pbias)
        elif kind == "gconv4_nhwc":
            self.t.gconv4_nhwc(c, ne, pa, pb, py, accumulate, pbias)
        else:
            self.t.gconv4_dot_nhwc(c, ne, pa, pb, py)
        PyMem_Free(pa)
        PyMem_Free(pb)

    def plane_argmax(self, fc_index n, cnp.ndarray x):
        """(index, value) of the first maximum of x[:n], or of its last NaN."""
        if n < 1:
            raise ValueError("plane_argmax: n >= 1 needed")
        cdef const void *px = self._data(x, n, "x")
        cdef cnp.ndarray value = np.empty(1, self.dtype)
        cdef fc_index at = self.t.plane_argmax(n, px, cnp.PyArray_DATA(value))
        return at, value[0]

    cdef fc_index *_offsets(self, offsets, fc_index n, fc_index size, str what) except NULL:
        """offsets as a C array, each with n elements inside an array of `size`; the caller
        frees it."""
        cdef fc_index count = len(offsets), i
        cdef fc_index *out = <fc_index *>PyMem_Malloc(sizeof(fc_index) * max(count, 1))
        if out == NULL:
            raise MemoryError()
        for i in range(count):
            out[i] = offsets[i]
            if out[i] < 0 or out[i] + n > size:
                PyMem_Free(out)
                raise ValueError(f"{what}: offset {out[i]} + {n} elements lies outside the "
                                 f"{size} given")
        return out

    def dwconv(self, fc_index n, cnp.ndarray w, cnp.ndarray src, offsets, cnp.ndarray out):
        """out[q] = sum over t of w[t] * src[offsets[t] + q] for q < n, t < len(offsets)."""
        cdef int kk = len(offsets)
        if kk < 1 or n < 0:
            raise ValueError("dwconv: at least one tap and n >= 0 needed")
        cdef const void *pw = self._data(w, kk, "w")
        cdef void *po = self._data(out, n, "out")
        cdef const void *ps = self._data(src, 0, "src")
        cdef fc_index *off = self._offsets(offsets, n, src.size, "src")
        self.t.dwconv(n, kk, pw, ps, off, po)
        PyMem_Free(off)

    def dwconv_dot(self, fc_index n, cnp.ndarray g, cnp.ndarray src, offsets, cnp.ndarray acc):
        """acc[t] += sum over q < n of g[q] * src[offsets[t] + q], t < len(offsets)."""
        cdef int kk = len(offsets)
        if kk < 1 or n < 0:
            raise ValueError("dwconv_dot: at least one tap and n >= 0 needed")
        cdef const void *pg = self._data(g, n, "g")
        cdef void *pa = self._data(acc, kk, "acc")
        cdef const void *ps = self._data(src, 0, "src")
        cdef fc_index *off = self._offsets(offsets, n, src.size, "src")
        self.t.dwconv_dot(n, kk, pg, ps, off, pa)
        PyMem_Free(off)

    def winograd_output(self, cnp.ndarray m, m_offsets, fc_index n, double bias,
                        cnp.ndarray tmp, fc_index ts):
        """Rows 8..11 of tmp (row stride ts) = outputs (0, 0), (0, 1), (1, 0), (1, 1) of
        A^T M A + bias for the n tiles whose M_e is m[m_offsets[e]:][:n]."""
        if len(m_offsets) != 16 or n < 1 or ts < n:
            raise ValueError("winograd_output: 16 offsets, n >= 1 and ts >= n needed")
        cdef void *pt = self._data(tmp, 11 * ts + n, "tmp")
        cdef float bias32 = <float>bias
        cdef const void *pbias = &bias32 if self.t.dtype == 0 else <const void *>&bias
        cdef const void **pm = self._pointers(m, m_offsets, n, "m")
        self.t.winograd_output(pm, n, pbias, pt, ts)
        PyMem_Free(pm)
