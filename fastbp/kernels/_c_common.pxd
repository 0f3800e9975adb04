# Shared by the compiled kernels (fastbp/_c_*.pyx): the float type they are written for,
# reductions in LANES partial sums, and the cheap guard every `def` entry runs.  The friendly
# checks live in fastbp/kernels/_checks.py; the guard only keeps arrays the C loops cannot take away from
# them, since the compiled modules can be called directly.
cimport numpy as cnp
from libc.string cimport strlen, strncmp

ctypedef fused floating:
    float
    double

cdef enum:
    LANES = 8    # independent partial results: no single serial chain, and gcc vectorises the
                 # sums without -ffast-math (which it would need to reorder one running sum)
    CHUNK = 256  # elements per block of a scratch buffer (on the stack; stays in L1)


# ---------------------------------------------------------------------------- reductions
cdef inline double dot(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    """sum_i x_i y_i with products and sums in double (float32 data of 1e38 do not overflow)."""
    cdef double part[LANES]
    cdef Py_ssize_t i = 0, l
    for l in range(LANES):
        part[l] = 0
    while i + LANES <= n:
        for l in range(LANES):
            part[l] += <double>x[i + l] * y[i + l]
        i += LANES
    for i in range(i, n):
        part[0] += <double>x[i] * y[i]
    for l in range(1, LANES):
        part[0] += part[l]
    return part[0]


cdef inline floating total(const floating* x, Py_ssize_t n) noexcept nogil:
    """sum_i x_i in the dtype's precision."""
    cdef floating part[LANES]
    cdef Py_ssize_t i = 0, l
    for l in range(LANES):
        part[l] = 0
    while i + LANES <= n:
        for l in range(LANES):
            part[l] += x[i + l]
        i += LANES
    for i in range(i, n):
        part[0] += x[i]
    for l in range(1, LANES):
        part[0] += part[l]
    return part[0]


# -------------------------------------------------------------------------- entry guards
cdef inline int fail(type kind, str template, tuple args) except -1:
    """Raise ``kind(template % args)`` (one compact formatting call for all error messages)."""
    raise kind(template % args)


cdef inline int float_type(object a, str name) except -1:
    """The dtype number (NPY_FLOAT or NPY_DOUBLE) of the array that fixes a call's dtype."""
    if not cnp.PyArray_Check(a):
        return fail(TypeError, "%s must be a NumPy array, got %s", (name, type(a)))
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        return fail(TypeError, "%s must be float32 or float64, got dtype %s", (name, a.dtype))
    return typenum


cdef inline int check(object a, str name, int typenum, int ndim, Py_ssize_t rows, Py_ssize_t cols,
                      bint writeable) except -1:
    """Refuse anything a C loop cannot take: not an ndarray, another dtype, not ``ndim``-D with
    shape (rows, cols) (-1: any size), not C-contiguous and aligned (or, with ``writeable``, read-only)."""
    if not cnp.PyArray_Check(a):
        return fail(TypeError, "%s must be a NumPy array, got %s", (name, type(a)))
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(arr), typenum):
        return fail(TypeError, "%s has dtype %s, expected %s",
                    (name, a.dtype, cnp.PyArray_DescrFromType(typenum)))
    if (cnp.PyArray_NDIM(arr) != ndim or (rows >= 0 and cnp.PyArray_DIM(arr, 0) != rows)
            or (cols >= 0 and cnp.PyArray_DIM(arr, 1) != cols)):
        return fail(ValueError, "%s has shape %s, expected %d-D, %d rows, %d columns (-1: any)",
                    (name, a.shape, ndim, rows, cols))
    if not (cnp.PyArray_ISCARRAY(arr) if writeable else cnp.PyArray_ISCARRAY_RO(arr)):
        return fail(ValueError, "%s must be a C-contiguous, aligned, native-order%s array",
                    (name, ", writeable" if writeable else ""))
    return 0


cdef inline int check_like(object a, str name, object like, bint writeable) except -1:
    """``check`` that ``a`` has the dtype and the shape (any number of dimensions) of ``like``."""
    cdef cnp.ndarray ref = <cnp.ndarray>like
    check(a, name, cnp.PyArray_TYPE(ref), cnp.PyArray_NDIM(ref), -1, -1, writeable)
    if not cnp.PyArray_SAMESHAPE(<cnp.ndarray>a, ref):
        return fail(ValueError, "%s has shape %s, expected %s", (name, a.shape, like.shape))
    return 0


cdef inline Py_ssize_t dim(object a, int axis) noexcept:
    """Size of ``axis`` of an array that passed ``check``."""
    return cnp.PyArray_DIM(<cnp.ndarray>a, axis)


cdef inline char* data(object a) noexcept:
    """Data pointer of an array that passed ``check`` (NULL for None, e.g. an absent bias)."""
    return NULL if a is None else cnp.PyArray_BYTES(<cnp.ndarray>a)


cdef inline bint overlaps(object a, object b) noexcept:
    """Whether two checked arrays (or None) share memory."""
    if a is None or b is None:
        return False
    cdef char* pa = cnp.PyArray_BYTES(<cnp.ndarray>a)
    cdef char* pb = cnp.PyArray_BYTES(<cnp.ndarray>b)
    return (pa < pb + cnp.PyArray_NBYTES(<cnp.ndarray>b)
            and pb < pa + cnp.PyArray_NBYTES(<cnp.ndarray>a))


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL


cdef inline int table_code(object name, const char* const* names, int n, str kind) except -1:
    """The code of ``name`` in a registry table (its names in code order: fastbp/kernels/registry.py
    via the generated _registry.h); ValueError for any other name."""
    cdef Py_ssize_t size
    cdef const char* s
    cdef int code
    if isinstance(name, str):
        s = PyUnicode_AsUTF8AndSize(name, &size)
        for code in range(n):
            if strlen(names[code]) == <size_t>size and strncmp(s, names[code], size) == 0:
                return code
    return fail(ValueError, "unknown %s %r", (kind, name))
