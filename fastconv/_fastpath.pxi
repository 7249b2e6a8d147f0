# The compiled fast path of fastconv.functional (included in _kernels.pyx).
#
# On a tiny input an op's time was Python's: checking the arguments, building the validated
# geometry (tuples, a frozen dataclass, messages formatted in case they were needed) and the
# calls between the layers took several times the kernel's own time. So each public op first
# offers its arguments to its `fast_<op>` here. That takes the common case: ndarrays (not
# subclasses) of one float dtype, C-contiguous, aligned and in native byte order, a non-empty
# batch; geometry arguments as Python ints, tuples or lists of them (and 'same' / 'valid' where
# the op takes them); bools as bools. It checks them by fastconv._validation's rules in typed
# code, fills the C geometry directly, allocates the outputs and calls the same kernel wrappers
# as the Python path. Anything else (another layout, dtype or argument form, an empty batch or
# output, a value some rule refuses, a forked child's stale OpenMP thread, bad max-pool indices)
# returns None, and the op goes on along its Python path, which converts, validates and raises
# its errors exactly as before. So the fast path raises nothing for bad input, and its results
# are the Python path's bit for bit (tests/test_fastpath.py forces both on a case table).

import threading

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.tuple cimport PyTuple_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport isfinite

cdef enum:
    # _validation.MAX_PARAM, the most any geometry value may be; the fast path also keeps input
    # heights and widths at most this, so that every product it forms fits in int64
    MAX_PARAM = 2147483647
# outputs of more elements go the Python way, which checks its limit (2**60) exactly
cdef double MAX_FAST_ELEMENTS = 2.0 ** 59
# the adaptive kernels form output index * input size: at most this (_validation's 2**60)
cdef fc_index MAX_ADAPTIVE_PRODUCT = 1152921504606846976

cdef bint _fast = True


class fast_path:
    """``with fastconv._kernels.fast_path(False):`` makes every op take its Python path (for the
    tests, which compare the two); process-wide, like force_conv_algorithms."""

    def __init__(self, bint enabled):
        self.enabled = enabled

    def __enter__(self):
        global _fast
        self.saved, _fast = _fast, self.enabled
        return self

    def __exit__(self, *exc):
        global _fast
        _fast = self.saved


# ---- thread count: fastconv._config's settings, kept here so compiled code reads them cheaply ---

class _ThreadSettings(threading.local):
    # a class attribute, so that a thread that set none reads None without an AttributeError
    # being raised and caught inside getattr (its message's formatting showed in perf's profile
    # of a tiny relu call)
    num_threads = None  # a `with fastconv.num_threads(n)` block's n


thread_settings = _ThreadSettings()
cdef int _process_threads = 0  # fastconv.set_num_threads's n, 0 for none


def set_process_threads(int n):
    """Set fastconv.set_num_threads's value (0: none, OpenMP's default)."""
    global _process_threads
    _process_threads = n


def process_threads():
    """fastconv.set_num_threads's value, or 0 if none is set."""
    return _process_threads


cdef int _threads() except -1:
    n = thread_settings.num_threads
    if n is not None:
        return n
    if _process_threads > 0:
        return _process_threads
    return max(1, fc_default_num_threads())


def current_threads():
    """The most threads a kernel called from this thread uses now (fastconv.get_num_threads)."""
    return _threads()


# ---- arguments ---------------------------------------------------------------------------------

cdef int _float_array(object a, int ndim) except -2:
    """a's type number (NPY_FLOAT or NPY_DOUBLE) when a is an ndarray of `ndim` dims (any number
    when ndim < 0) that the kernels read in place: C-contiguous, aligned, native byte order;
    else -1."""
    if not cnp.PyArray_CheckExact(a):
        return -1
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if ndim >= 0 and cnp.PyArray_NDIM(arr) != ndim:
        return -1
    if not (cnp.PyArray_CHKFLAGS(arr, cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED)
            and cnp.PyArray_ISNOTSWAPPED(arr)):
        return -1
    cdef int t = cnp.PyArray_TYPE(arr)
    return t if t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE else -1


cdef bint _same_dims(cnp.ndarray a, int nd, const cnp.npy_intp *dims):
    if cnp.PyArray_NDIM(a) != nd:
        return False
    cdef int i
    for i in range(nd):
        if cnp.PyArray_DIMS(a)[i] != dims[i]:
            return False
    return True


cdef bint _input4(cnp.ndarray x):
    """An (N, C, H, W) input the fast path takes: nothing empty, H and W at most 2**31 - 1."""
    cdef const cnp.npy_intp *s = cnp.PyArray_DIMS(x)
    return min(s[0], s[1], s[2], s[3]) >= 1 and max(s[2], s[3]) <= MAX_PARAM


cdef bint _int(object v, fc_index low, fc_index *out) except -1:
    """A Python int (not a bool) in [low, 2**31 - 1], into *out."""
    cdef int overflow = 0
    cdef long long n
    if not PyLong_CheckExact(v):
        return False
    n = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or n < low or n > MAX_PARAM:
        return False
    out[0] = n
    return True


cdef Py_ssize_t _ints(object v, fc_index low, fc_index *out, Py_ssize_t most) except -1:
    """len(v) when v is a tuple or list of 1 to `most` ints as _int takes them (into out), else
    0."""
    if not (PyTuple_CheckExact(v) or PyList_CheckExact(v)):
        return 0
    cdef Py_ssize_t i, n = len(v)
    if n > most:
        return 0
    for i in range(n):
        if not _int(v[i], low, &out[i]):
            return 0
    return n


cdef bint _pair(object v, fc_index low, fc_index *out) except -1:
    """_validation.pair: an int or a pair of them, as (h, w)."""
    if _int(v, low, out):
        out[1] = out[0]
        return True
    return _ints(v, low, out, 2) == 2


cdef bint _padding(object v, const fc_index *kernel, const fc_index *stride,
                   const fc_index *dilation, bint strings, fc_index *pad,
                   bint *pair_form) except -1:
    """_validation.padding4: an int, a pair, a (top, bottom, left, right) tuple or, when
    `strings`, 'valid' or 'same' (stride 1), into pad as (top, bottom, left, right); *pair_form
    says whether it was an int or a pair (the pools' at-most-half-the-kernel rule)."""
    cdef fc_index q[4]
    cdef fc_index total
    cdef Py_ssize_t n
    cdef int i
    pair_form[0] = False
    if PyUnicode_CheckExact(v):
        if not strings:
            return False
        if v == "valid":
            pad[0] = pad[1] = pad[2] = pad[3] = 0
            return True
        if v != "same" or stride[0] != 1 or stride[1] != 1:
            return False
        for i in range(2):  # at stride 1, d (k - 1) in all: half before, the odd one after
            total = dilation[i] * (kernel[i] - 1)
            pad[2 * i] = total // 2
            pad[2 * i + 1] = total - total // 2
        return True
    if _int(v, 0, q):
        n = 2
        q[1] = q[0]
    else:
        n = _ints(v, 0, q, 4)
    if n == 2:
        pair_form[0] = True
        pad[0] = pad[1] = q[0]
        pad[2] = pad[3] = q[1]
    elif n == 4:
        for i in range(4):
            pad[i] = q[i]
    return n == 2 or n == 4


cdef bint _bool(object v, bint *out) except -1:
    """A bool (True or False, not NumPy's), into *out."""
    if v is True or v is False:
        out[0] = v is True
        return True
    return False


cdef bint _small(double elements):
    return elements <= MAX_FAST_ELEMENTS


# ---- outputs -----------------------------------------------------------------------------------

cdef size_t _cache_limit = 0  # the output cache's limit, as set_cache_limit last set it


cdef cnp.ndarray _output(int nd, cnp.npy_intp *dims, int typenum):
    """np.empty(dims) of the type, as `empty` makes it: through the output cache when that is on
    and would keep the buffer (see src/runtime/output_cache.h), else NumPy's own allocator."""
    cdef cnp.npy_intp nbytes = cnp.PyArray_MultiplyList(dims, nd) * (
        4 if typenum == cnp.NPY_FLOAT else 8)
    if _cache_limit == 0 or <size_t>nbytes < FC_CACHE_MIN_BYTES:
        return cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    old = PyDataMem_SetHandler(_cache_handler)
    try:
        return cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    finally:
        PyDataMem_SetHandler(old)


cdef bint _ready(int *nthreads) except -1:
    """Whether the fast path is on and the kernel may be called from this thread (not a forked
    child's stale one, which the Python path moves to a fresh thread); the thread count."""
    if not _fast:
        return False
    nthreads[0] = _threads()
    return not _must_hop(nthreads[0])


# ---- convolution -------------------------------------------------------------------------------

cdef bint _conv_geometry(cnp.ndarray x, cnp.ndarray w, stride, padding, dilation, groups,
                         fc_conv2d_params *p) except -1:
    """_validation.conv_geometry's rules on conv2d's arguments, into p (its algorithm left
    unset)."""
    cdef const cnp.npy_intp *xs = cnp.PyArray_DIMS(x)
    cdef const cnp.npy_intp *ws = cnp.PyArray_DIMS(w)
    cdef fc_index s[2]
    cdef fc_index d[2]
    cdef fc_index k[2]
    cdef fc_index pad[4]
    cdef fc_index g, rows, cols
    cdef bint pair_form
    if not (_input4(x) and _pair(stride, 1, s) and _pair(dilation, 1, d)
            and _int(groups, 1, &g)):
        return False
    if min(ws[0], ws[1], ws[2], ws[3]) < 1 or max(ws[2], ws[3]) > MAX_PARAM:
        return False
    if xs[1] % g or ws[0] % g or ws[1] * g != xs[1]:
        return False
    k[0], k[1] = ws[2], ws[3]
    if not _padding(padding, k, s, d, True, pad, &pair_form):
        return False
    rows = xs[2] + pad[0] + pad[1] - d[0] * (k[0] - 1) - 1
    cols = xs[3] + pad[2] + pad[3] - d[1] * (k[1] - 1) - 1
    if rows < 0 or cols < 0:  # an output size below 1 (Python's floor division)
        return False
    p.batch, p.in_channels, p.in_h, p.in_w = xs[0], xs[1], xs[2], xs[3]
    p.out_channels, p.groups = ws[0], g
    p.kernel_h, p.kernel_w = k[0], k[1]
    p.stride_h, p.stride_w = s[0], s[1]
    p.pad_top, p.pad_left = pad[0], pad[2]
    p.dilation_h, p.dilation_w = d[0], d[1]
    p.out_h, p.out_w = rows // s[0] + 1, cols // s[1] + 1
    p.weight_format = FC_WEIGHT_OIHW  # the fast path takes NCHW calls with PyTorch weights only
    p.relu = 0
    return _small(<double>p.batch * p.out_channels * p.out_h * p.out_w)


cdef cnp.ndarray _run_conv_forward(fc_conv2d_params *p, x, w, bias, int typenum,
                                   int nthreads):
    """y = conv2d(x, w, bias), shape (batch, out_channels, out_h, out_w) of p."""
    cdef cnp.npy_intp dims[4]
    dims[:] = [p.batch, p.out_channels, p.out_h, p.out_w]
    cdef cnp.ndarray y = _output(4, dims, typenum)
    p.algorithm = _forced[<int>FC_CONV_FWD]
    if typenum == cnp.NPY_FLOAT:
        _conv2d_forward(<float *>_ptr(y), p, False, x, w, bias, nthreads)
    else:
        _conv2d_forward(<double *>_ptr(y), p, False, x, w, bias, nthreads)
    return y


cdef bint _bias(object bias, int typenum, fc_index channels) except -1:
    """None, or a (channels,) array of the type that the kernels read in place."""
    return bias is None or (_float_array(bias, 1) == typenum
                            and cnp.PyArray_DIMS(<cnp.ndarray>bias)[0] == channels)


def fast_conv2d(x, weight, bias, stride, padding, dilation, groups, bint relu):
    """conv2d's fast path (relu: conv2d_relu's, the ReLU in the pass that writes y): its
    result, or None for the Python path."""
    cdef int nthreads
    cdef fc_conv2d_params p
    cdef int t = _float_array(x, 4)
    if t < 0 or _float_array(weight, 4) != t or not _ready(&nthreads):
        return None
    if not (_conv_geometry(x, weight, stride, padding, dilation, groups, &p)
            and _bias(bias, t, p.out_channels)):
        return None
    p.relu = relu
    return _run_conv_forward(&p, x, weight, bias, t, nthreads)


def fast_conv2d_backward(grad_output, x, weight, stride, padding, dilation, groups):
    """conv2d_backward's fast path: (grad_input, grad_weight, grad_bias), or None."""
    cdef int nthreads
    cdef fc_conv2d_params p
    cdef cnp.npy_intp dims[4]
    cdef int t = _float_array(x, 4)
    if t < 0 or _float_array(weight, 4) != t or _float_array(grad_output, 4) != t \
            or not _ready(&nthreads):
        return None
    if not _conv_geometry(x, weight, stride, padding, dilation, groups, &p):
        return None
    dims[:] = [p.batch, p.out_channels, p.out_h, p.out_w]
    if not _same_dims(grad_output, 4, dims):
        return None
    cdef cnp.ndarray gx = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    cdef cnp.ndarray gw = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>weight), t)
    cdef cnp.ndarray gb = cnp.PyArray_EMPTY(1, dims + 1, t, 0)
    p.algorithm = _forced[<int>FC_CONV_BWD_INPUT]
    if t == cnp.NPY_FLOAT:
        _conv2d_backward_input(<float *>_ptr(gx), &p, False, grad_output, weight, None, nthreads)
    else:
        _conv2d_backward_input(<double *>_ptr(gx), &p, False, grad_output, weight, None, nthreads)
    p.algorithm = _forced[<int>FC_CONV_BWD_WEIGHT]
    if t == cnp.NPY_FLOAT:
        _conv2d_backward_weight(<float *>_ptr(gw), &p, False, grad_output, x, gb, nthreads)
    else:
        _conv2d_backward_weight(<double *>_ptr(gw), &p, False, grad_output, x, gb, nthreads)
    return gx, gw, gb


cdef bint _conv_transpose_geometry(cnp.ndarray x, cnp.ndarray w, stride, padding,
                                   output_padding, groups, dilation,
                                   fc_conv2d_params *p) except -1:
    """_validation.conv_transpose_geometry's rules, into p (its algorithm left unset): as
    there, conv_transpose2d is the input gradient of the conv2d that takes the transposed output
    (N, C_out, OH, OW) to x (N, C_in, H, W)."""
    cdef const cnp.npy_intp *xs = cnp.PyArray_DIMS(x)
    cdef const cnp.npy_intp *ws = cnp.PyArray_DIMS(w)
    cdef fc_index s[2]
    cdef fc_index d[2]
    cdef fc_index op[2]
    cdef fc_index k[2]
    cdef fc_index pad[4]
    cdef fc_index out[2]
    cdef fc_index g, i
    cdef bint pair_form
    if not (_input4(x) and _pair(stride, 1, s) and _pair(output_padding, 0, op)
            and _int(groups, 1, &g) and _pair(dilation, 1, d)):
        return False
    if min(ws[0], ws[1], ws[2], ws[3]) < 1 or max(ws[2], ws[3]) > MAX_PARAM:
        return False
    if ws[0] != xs[1] or xs[1] % g:
        return False
    k[0], k[1] = ws[2], ws[3]
    if not _padding(padding, k, s, d, False, pad, &pair_form):
        return False
    for i in range(2):
        if op[i] >= s[i] and op[i] >= d[i]:
            return False
        # the uncropped output every tap reaches, plus output_padding, cropped by the padding
        out[i] = (xs[2 + i] - 1) * s[i] + d[i] * (k[i] - 1) + op[i] + 1 - pad[2 * i] \
            - pad[2 * i + 1]
        if out[i] < 1:
            return False
    p.batch, p.in_channels, p.in_h, p.in_w = xs[0], ws[1] * g, out[0], out[1]
    p.out_channels, p.groups = xs[1], g
    p.kernel_h, p.kernel_w = k[0], k[1]
    p.stride_h, p.stride_w = s[0], s[1]
    p.pad_top, p.pad_left = pad[0], pad[2]
    p.dilation_h, p.dilation_w = d[0], d[1]
    p.out_h, p.out_w = xs[2], xs[3]
    p.weight_format = FC_WEIGHT_OIHW  # the fast path takes NCHW calls with PyTorch weights only
    p.relu = 0
    return _small(<double>p.batch * p.in_channels * p.in_h * p.in_w)


def fast_conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation):
    """conv_transpose2d's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_conv2d_params p
    cdef cnp.npy_intp dims[4]
    cdef int t = _float_array(x, 4)
    if t < 0 or _float_array(weight, 4) != t or not _ready(&nthreads):
        return None
    if not (_conv_transpose_geometry(x, weight, stride, padding, output_padding, groups,
                                     dilation, &p) and _bias(bias, t, p.in_channels)):
        return None
    dims[:] = [p.batch, p.in_channels, p.in_h, p.in_w]
    cdef cnp.ndarray y = _output(4, dims, t)
    p.algorithm = _forced[<int>FC_CONV_BWD_INPUT]
    if t == cnp.NPY_FLOAT:
        _conv2d_backward_input(<float *>_ptr(y), &p, False, x, weight, bias, nthreads)
    else:
        _conv2d_backward_input(<double *>_ptr(y), &p, False, x, weight, bias, nthreads)
    return y


def fast_conv_transpose2d_backward(grad_output, x, weight, stride, padding, output_padding,
                                   groups, dilation):
    """conv_transpose2d_backward's fast path: (grad_input, grad_weight), or None (grad_bias is
    NumPy's sum, which the caller adds)."""
    cdef int nthreads
    cdef fc_conv2d_params p
    cdef cnp.npy_intp dims[4]
    cdef int t = _float_array(x, 4)
    if t < 0 or _float_array(weight, 4) != t or _float_array(grad_output, 4) != t \
            or not _ready(&nthreads):
        return None
    if not _conv_transpose_geometry(x, weight, stride, padding, output_padding, groups,
                                    dilation, &p):
        return None
    dims[:] = [p.batch, p.in_channels, p.in_h, p.in_w]
    if not _same_dims(grad_output, 4, dims):
        return None
    cdef cnp.ndarray gx = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    cdef cnp.ndarray gw = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>weight), t)
    p.algorithm = _forced[<int>FC_CONV_FWD]
    if t == cnp.NPY_FLOAT:
        _conv2d_forward(<float *>_ptr(gx), &p, False, grad_output, weight, None, nthreads)
    else:
        _conv2d_forward(<double *>_ptr(gx), &p, False, grad_output, weight, None, nthreads)
    p.algorithm = _forced[<int>FC_CONV_BWD_WEIGHT]
    if t == cnp.NPY_FLOAT:
        _conv2d_backward_weight(<float *>_ptr(gw), &p, False, x, grad_output, None, nthreads)
    else:
        _conv2d_backward_weight(<double *>_ptr(gw), &p, False, x, grad_output, None, nthreads)
    return gx, gw


# ---- pooling -----------------------------------------------------------------------------------

cdef bint _pool_geometry(cnp.ndarray x, kernel_size, stride, padding, dilation, ceil_mode,
                         fc_pool2d_params *p) except -1:
    """_validation.pool_geometry's rules, into p (the options of avg and L^p pooling set to
    their defaults)."""
    cdef const cnp.npy_intp *xs = cnp.PyArray_DIMS(x)
    cdef fc_index k[2]
    cdef fc_index s[2]
    cdef fc_index d[2]
    cdef fc_index pad[4]
    cdef fc_index out[2]
    cdef fc_index i, size, span
    cdef bint pair_form, ceil
    if not (_input4(x) and _pair(kernel_size, 1, k) and _pair(dilation, 1, d)
            and _bool(ceil_mode, &ceil)):
        return False
    if stride is None or ((PyTuple_CheckExact(stride) or PyList_CheckExact(stride))
                          and len(stride) == 0):
        s[0], s[1] = k[0], k[1]
    elif not _pair(stride, 1, s):
        return False
    if not _padding(padding, k, s, d, True, pad, &pair_form):
        return False
    for i in range(2):
        if pair_form and 2 * pad[2 * i] > k[i]:
            return False
        # _validation.pool_output_size: PyTorch's, its ceil_mode dropping a last window that
        # would start in the bottom or right padding
        size = xs[2 + i]
        span = size + pad[2 * i] + pad[2 * i + 1] - d[i] * (k[i] - 1) - 1 + (s[i] - 1 if ceil
                                                                             else 0)
        if span < 0:
            return False
        out[i] = span // s[i] + 1
        if ceil and (out[i] - 1) * s[i] >= size + pad[2 * i]:
            out[i] -= 1
        if out[i] < 1:
            return False
    p.planes, p.channels, p.in_h, p.in_w = xs[0] * xs[1], xs[1], xs[2], xs[3]
    p.kernel_h, p.kernel_w = k[0], k[1]
    p.stride_h, p.stride_w = s[0], s[1]
    p.pad_top, p.pad_bottom, p.pad_left, p.pad_right = pad[0], pad[1], pad[2], pad[3]
    p.dilation_h, p.dilation_w = d[0], d[1]
    p.out_h, p.out_w = out[0], out[1]
    p.count_include_pad = True
    p.divisor_override = 0
    p.norm = 0
    return _small(<double>p.planes * p.out_h * p.out_w)


cdef void _pool_output_dims(cnp.ndarray x, const fc_pool2d_params *p, cnp.npy_intp *dims):
    dims[0], dims[1] = cnp.PyArray_DIMS(x)[0], cnp.PyArray_DIMS(x)[1]
    dims[2], dims[3] = p.out_h, p.out_w


cdef int _pool_input(x, grad_output, int *nthreads) except -2:
    """x's type when x (and grad_output, unless it is None) are arrays the fast path takes for
    a pooling op and the kernels may run; else -1."""
    cdef int t = _float_array(x, 4)
    if t < 0 or (grad_output is not None and _float_array(grad_output, 4) != t) \
            or not _ready(nthreads):
        return -1
    return t


cdef bint _pool_grad_output(cnp.ndarray x, grad_output, const fc_pool2d_params *p):
    """grad_output has the pooling output's shape."""
    cdef cnp.npy_intp dims[4]
    _pool_output_dims(x, p, dims)
    return _same_dims(grad_output, 4, dims)


cdef object _max_pool_forward(cnp.ndarray x, fc_pool2d_params *p, bint adaptive,
                              bint with_indices, int t, int nthreads):
    """(y, int64 indices or None) of max pooling (adaptive: the adaptive kernels) over p."""
    cdef cnp.npy_intp dims[4]
    _pool_output_dims(x, p, dims)
    cdef cnp.ndarray y = _output(4, dims, t)
    indices = _output(4, dims, cnp.NPY_INT64) if with_indices else None
    if adaptive and t == cnp.NPY_FLOAT:
        _adaptive_maxpool2d_forward(<float *>_ptr(y), p, x, indices, nthreads)
    elif adaptive:
        _adaptive_maxpool2d_forward(<double *>_ptr(y), p, x, indices, nthreads)
    elif t == cnp.NPY_FLOAT:
        _maxpool2d_forward(<float *>_ptr(y), p, False, x, indices, nthreads)
    else:
        _maxpool2d_forward(<double *>_ptr(y), p, False, x, indices, nthreads)
    return y, indices


cdef object _max_pool_backward(cnp.ndarray x, grad_output, indices, fc_pool2d_params *p,
                               bint adaptive, int t, int nthreads):
    """Max pooling's input gradient: grad_output added at the maxima, whose indices are
    computed when None; None (the Python path raises the error) when an index lies outside
    its plane."""
    cdef cnp.npy_intp dims[4]
    _pool_output_dims(x, p, dims)
    if indices is None:
        indices = _max_pool_forward(x, p, adaptive, True, t, nthreads)[1]
    elif not (cnp.PyArray_CheckExact(indices)
              and cnp.PyArray_TYPE(<cnp.ndarray>indices) == cnp.NPY_INT64
              and cnp.PyArray_CHKFLAGS(<cnp.ndarray>indices,
                                       cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED)
              and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>indices)
              and _same_dims(indices, 4, dims)):
        return None
    cdef cnp.ndarray gx = _output(4, cnp.PyArray_DIMS(x), t)
    cdef bint inside
    if t == cnp.NPY_FLOAT:
        inside = _maxpool2d_backward(<float *>_ptr(gx), p, False, grad_output, indices,
                                     nthreads)
    else:
        inside = _maxpool2d_backward(<double *>_ptr(gx), p, False, grad_output, indices,
                                     nthreads)
    return gx if inside else None


def fast_max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    """max_pool2d's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef bint with_indices
    cdef int t = _pool_input(x, None, &nthreads)
    if t < 0 or not (_bool(return_indices, &with_indices) and _pool_geometry(
            x, kernel_size, stride, padding, dilation, ceil_mode, &p)):
        return None
    y, indices = _max_pool_forward(x, &p, False, with_indices, t, nthreads)
    return (y, indices) if with_indices else y


def fast_max_pool2d_backward(grad_output, x, kernel_size, stride, padding, dilation, ceil_mode,
                             indices):
    """max_pool2d_backward's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef int t = _pool_input(x, grad_output, &nthreads)
    if t < 0 or not (_pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, &p)
                     and _pool_grad_output(x, grad_output, &p)):
        return None
    return _max_pool_backward(x, grad_output, indices, &p, False, t, nthreads)


cdef bint _avg_options(count_include_pad, divisor_override, fc_pool2d_params *p) except -1:
    """avg_pool2d's count_include_pad (a bool) and divisor_override (None or a non-zero int of
    at most 2**31 - 1 in size), into p."""
    cdef bint counted
    cdef fc_index div = 0
    if not _bool(count_include_pad, &counted):
        return False
    if divisor_override is not None and not _nonzero_int(divisor_override, &div):
        return False
    p.count_include_pad = counted
    p.divisor_override = div
    return True


cdef bint _nonzero_int(object v, fc_index *out) except -1:
    """A Python int (not a bool), non-zero and at most 2**31 - 1 in size, into *out."""
    cdef int overflow = 0
    cdef long long n
    if not PyLong_CheckExact(v):
        return False
    n = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or n == 0 or n > MAX_PARAM or n < -MAX_PARAM:
        return False
    out[0] = n
    return True


def fast_avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override):
    """avg_pool2d's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef cnp.npy_intp dims[4]
    cdef int t = _pool_input(x, None, &nthreads)
    if t < 0 or not (_pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode, &p)
                     and _avg_options(count_include_pad, divisor_override, &p)):
        return None
    _pool_output_dims(x, &p, dims)
    cdef cnp.ndarray y = _output(4, dims, t)
    if t == cnp.NPY_FLOAT:
        _avgpool2d_forward(<float *>_ptr(y), &p, False, x, nthreads)
    else:
        _avgpool2d_forward(<double *>_ptr(y), &p, False, x, nthreads)
    return y


def fast_avg_pool2d_backward(grad_output, x, kernel_size, stride, padding, ceil_mode,
                             count_include_pad, divisor_override):
    """avg_pool2d_backward's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef int t = _pool_input(x, grad_output, &nthreads)
    if t < 0 or not (_pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode, &p)
                     and _avg_options(count_include_pad, divisor_override, &p)
                     and _pool_grad_output(x, grad_output, &p)):
        return None
    cdef cnp.ndarray gx = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    if t == cnp.NPY_FLOAT:
        _avgpool2d_backward(<float *>_ptr(gx), &p, False, grad_output, nthreads)
    else:
        _avgpool2d_backward(<double *>_ptr(gx), &p, False, grad_output, nthreads)
    return gx


cdef bint _norm(object v, fc_pool2d_params *p) except -1:
    """_validation.norm_type: a positive finite number (a Python float or int here), into p."""
    cdef fc_index n
    if PyFloat_CheckExact(v):
        p.norm = PyFloat_AS_DOUBLE(v)
        return isfinite(p.norm) and p.norm > 0
    if _int(v, 1, &n):
        p.norm = <double>n
        return True
    return False


def fast_lp_pool2d(x, norm_type, kernel_size, stride, ceil_mode, padding):
    """lp_pool2d's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef cnp.npy_intp dims[4]
    cdef int t = _pool_input(x, None, &nthreads)
    if t < 0 or not (_pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode, &p)
                     and _norm(norm_type, &p)):
        return None
    _pool_output_dims(x, &p, dims)
    cdef cnp.ndarray y = _output(4, dims, t)
    if t == cnp.NPY_FLOAT:
        _lppool2d_forward(<float *>_ptr(y), &p, False, x, nthreads)
    else:
        _lppool2d_forward(<double *>_ptr(y), &p, False, x, nthreads)
    return y


def fast_lp_pool2d_backward(grad_output, x, norm_type, kernel_size, stride, ceil_mode,
                            padding):
    """lp_pool2d_backward's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef int t = _pool_input(x, grad_output, &nthreads)
    if t < 0 or not (_pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode, &p)
                     and _norm(norm_type, &p) and _pool_grad_output(x, grad_output, &p)):
        return None
    cdef cnp.ndarray gx = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    if t == cnp.NPY_FLOAT:
        _lppool2d_backward(<float *>_ptr(gx), &p, False, grad_output, x, nthreads)
    else:
        _lppool2d_backward(<double *>_ptr(gx), &p, False, grad_output, x, nthreads)
    return gx


# ---- adaptive pooling --------------------------------------------------------------------------

cdef bint _adaptive_geometry(cnp.ndarray x, output_size, fc_pool2d_params *p) except -1:
    """_validation.adaptive_geometry's rules (an output of at least 1 x 1 here), into p."""
    cdef const cnp.npy_intp *xs = cnp.PyArray_DIMS(x)
    cdef fc_index out[2]
    cdef int i
    if not _input4(x):
        return False
    if _int(output_size, 1, out):
        out[1] = out[0]
    elif (PyTuple_CheckExact(output_size) or PyList_CheckExact(output_size)) \
            and len(output_size) == 2:
        for i in range(2):
            if output_size[i] is None:
                out[i] = xs[2 + i]
            elif not _int(output_size[i], 1, &out[i]):
                return False
    else:
        return False
    _fill_adaptive(p, xs[0], xs[1], xs[2], xs[3], out[0], out[1])
    # the kernels form o * in: both below 2**31 here, so the product fits
    return _small(<double>p.planes * out[0] * out[1]) and max(
        xs[2] * out[0], xs[3] * out[1]) <= MAX_ADAPTIVE_PRODUCT


def fast_adaptive_avg_pool2d(x, output_size):
    """adaptive_avg_pool2d's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef cnp.npy_intp dims[4]
    cdef int t = _pool_input(x, None, &nthreads)
    if t < 0 or not _adaptive_geometry(x, output_size, &p):
        return None
    _pool_output_dims(x, &p, dims)
    cdef cnp.ndarray y = _output(4, dims, t)
    if t == cnp.NPY_FLOAT:
        _adaptive_avgpool2d_forward(<float *>_ptr(y), &p, x, nthreads)
    else:
        _adaptive_avgpool2d_forward(<double *>_ptr(y), &p, x, nthreads)
    return y


def fast_adaptive_avg_pool2d_backward(grad_output, x, output_size):
    """adaptive_avg_pool2d_backward's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef int t = _pool_input(x, grad_output, &nthreads)
    if t < 0 or not (_adaptive_geometry(x, output_size, &p)
                     and _pool_grad_output(x, grad_output, &p)):
        return None
    cdef cnp.ndarray gx = _output(4, cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    if t == cnp.NPY_FLOAT:
        _adaptive_avgpool2d_backward(<float *>_ptr(gx), &p, grad_output, nthreads)
    else:
        _adaptive_avgpool2d_backward(<double *>_ptr(gx), &p, grad_output, nthreads)
    return gx


def fast_adaptive_max_pool2d(x, output_size, return_indices):
    """adaptive_max_pool2d's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef bint with_indices
    cdef int t = _pool_input(x, None, &nthreads)
    if t < 0 or not (_bool(return_indices, &with_indices)
                     and _adaptive_geometry(x, output_size, &p)):
        return None
    y, indices = _max_pool_forward(x, &p, True, with_indices, t, nthreads)
    return (y, indices) if with_indices else y


def fast_adaptive_max_pool2d_backward(grad_output, x, output_size, indices):
    """adaptive_max_pool2d_backward's fast path: its result, or None."""
    cdef int nthreads
    cdef fc_pool2d_params p
    cdef int t = _pool_input(x, grad_output, &nthreads)
    if t < 0 or not (_adaptive_geometry(x, output_size, &p)
                     and _pool_grad_output(x, grad_output, &p)):
        return None
    return _max_pool_backward(x, grad_output, indices, &p, True, t, nthreads)


# ---- element-wise ------------------------------------------------------------------------------

def fast_relu(x):
    """relu's fast path: its result, or None."""
    cdef int nthreads
    cdef int t = _float_array(x, -1)
    if t < 0 or not _ready(&nthreads):
        return None
    cdef cnp.ndarray y = _output(cnp.PyArray_NDIM(<cnp.ndarray>x),
                                 cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    if t == cnp.NPY_FLOAT:
        _relu_forward(<float *>_ptr(y), x, nthreads)
    else:
        _relu_forward(<double *>_ptr(y), x, nthreads)
    return y


def fast_relu_backward(grad_output, x):
    """relu_backward's fast path: its result, or None."""
    cdef int nthreads
    cdef int t = _float_array(x, -1)
    if t < 0 or _float_array(grad_output, -1) != t or not _same_dims(
            grad_output, cnp.PyArray_NDIM(<cnp.ndarray>x), cnp.PyArray_DIMS(<cnp.ndarray>x)) \
            or not _ready(&nthreads):
        return None
    cdef cnp.ndarray gx = _output(cnp.PyArray_NDIM(<cnp.ndarray>x),
                                  cnp.PyArray_DIMS(<cnp.ndarray>x), t)
    if t == cnp.NPY_FLOAT:
        _relu_backward(<float *>_ptr(gx), grad_output, x, False, nthreads)
    else:
        _relu_backward(<double *>_ptr(gx), grad_output, x, False, nthreads)
    return gx
