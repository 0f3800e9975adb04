# cython: auto_pickle=False
# Compiled training engine: whole epochs of minibatch backprop, and prediction, for a plain stack of
# dense layers; fastbp.engine drives it.  The work is done in fastbp/engine/_train_engine.h with the GIL
# released.  This module only hands the engine the address of the network's description (fb_desc,
# a named structure: fastbp/engine/layout.py, which points at a call's fb_call and fb_result),
# filled by fastbp.engine from arrays it has checked and keeps alive: no
# NumPy C-API, no memoryviews and argument-free calls keep the .so small.
# Products go to SciPy's BLAS (scipy.linalg.cython_blas), or to the sgemm whose address
# fastbp.engine hands over (NumPy's OpenBLAS), held at one thread while the engine runs its own.
from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_C_CONTIGUOUS, PyBUF_FORMAT,
                             PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer)

cdef extern from "Python.h":
    # the same function, declared without Cython's exception check: a refusal is an answer here
    int _get_buffer_or_not "PyObject_GetBuffer" (object, Py_buffer *, int)
    void PyErr_Clear()
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from scipy.linalg.cython_blas cimport dgemm, sgemm, sgemv

cdef extern from "_train_engine.h" nogil:
    int FB_MAXL, FB_MAXT, FB_MAXG
    ctypedef struct fb_pool:
        pass
    ctypedef void (*fb_sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *,
                                float *, int *, float *, float *, int *)
    ctypedef void (*fb_dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *,
                                double *, int *, double *, double *, int *)
    ctypedef void (*fb_sgemv_t)(char *, int *, int *, float *, float *, int *, float *, int *,
                                float *, float *, int *)
    fb_sgemm_t fb_sgemm
    fb_dgemm_t fb_dgemm
    fb_sgemv_t fb_sgemv
    ctypedef struct fb_desc:
        pass
    ctypedef struct fb_result:
        pass
    ctypedef struct fb_call:
        int64_t mb0, mb1, pn
        uint64_t px, pout
    ctypedef struct fb_net:
        fb_pool *pool
        int L
        int d[1]
        fb_call *call
    void fb_pool_init(fb_pool *pool, int size, uintptr_t create, uintptr_t join)
    void fb_pool_stop(fb_pool *pool)
    int fb_load(fb_net *N, const fb_desc *D)
    void fb_run(fb_net *N, int dbl, int predict)
    void fb_blas_after_fork()
    const char* FB_ACTIVATION_NAMES
    const char* FB_LOSS_NAMES
    const char* FB_STEP_NAMES
    int FB_DOUBLE_ENGINE

fb_sgemm = <fb_sgemm_t>sgemm
fb_dgemm = <fb_dgemm_t>dgemm
fb_sgemv = <fb_sgemv_t>sgemv

LIMITS = (FB_MAXL, FB_MAXT, FB_MAXG)  # dense layers, threads, dropout generators
DOUBLE = bool(FB_DOUBLE_ENGINE)  # whether float64 networks run here too
# the names of the codes in code order, as compiled (tests check them against registry.py)
NAMES = (FB_ACTIVATION_NAMES, FB_LOSS_NAMES, FB_STEP_NAMES)  # bytes
# fastbp.engine checks its structured dtypes against these
STRUCT_SIZES = {"fb_desc": sizeof(fb_desc), "fb_call": sizeof(fb_call), "fb_result": sizeof(fb_result)}


def after_fork():
    """In a forked child: forget the BLAS holds of the parent's threads (see fb_blas_after_fork).
    Engine pools reset themselves (fb_pool_adopt)."""
    fb_blas_after_fork()


def address(a):
    """The data address of a contiguous buffer (a NumPy array), without allocating."""
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_ANY_CONTIGUOUS)
    cdef uintptr_t p = <uintptr_t>view.buf
    PyBuffer_Release(&view)
    return p


cdef class Engine:
    """One network's engine state and thread pool (at most ``threads``, the caller included;
    ``create``/``join``: addresses of pthread_create/pthread_join, 0 for no threads).

    Every address handed in must stay valid while the engine is used.
    """
    cdef fb_net *net
    cdef fb_pool pool
    cdef bint dbl
    cdef readonly long long trained  # minibatches trained by this engine (counted in C)

    def __cinit__(self, bint dbl, int threads, uintptr_t create, uintptr_t join):
        self.net = <fb_net *>calloc(1, sizeof(fb_net))
        if self.net == NULL:
            raise MemoryError()
        fb_pool_init(&self.pool, threads, create, join)
        self.net.pool = &self.pool
        self.dbl = dbl

    def __dealloc__(self):
        with nogil:
            fb_pool_stop(&self.pool)
        free(self.net)

    def load(self, uintptr_t desc):
        """The address of the network's description (an fb_desc, see fastbp/engine/layout.py)."""
        if fb_load(self.net, <const fb_desc *>desc) != 0:
            raise ValueError("network layout out of range")

    def train(self):
        """Train the minibatches named in the control block (GIL released)."""
        with nogil:
            fb_run(self.net, self.dbl, 0)
        self.trained += self.net.call.mb1 - self.net.call.mb0

    def forward(self, X, out, Py_ssize_t rows):
        """Forward pass of X into out (GIL released), both C-contiguous aligned arrays of the
        engine's type (float32, or float64 for a double engine) with
        ``rows`` rows and the network's widths, out writeable and apart from X, the rest of the
        control block (plan, workspace) set by the caller; False, without running, otherwise."""
        cdef Py_buffer x, o
        cdef fb_call *call = self.net.call
        if _get_buffer_or_not(X, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0:
            PyErr_Clear()
            return False
        if _get_buffer_or_not(out, &o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0:
            PyErr_Clear()
            PyBuffer_Release(&x)
            return False
        cdef char *xb = <char *>x.buf
        cdef char *ob = <char *>o.buf
        cdef bint ok = (call != NULL and _is_real(&x, self.dbl) and _is_real(&o, self.dbl)
                        and x.ndim == 2 and o.ndim == 2
                        and x.shape[0] == rows and o.shape[0] == rows
                        and x.shape[1] == self.net.d[0] and o.shape[1] == self.net.d[self.net.L]
                        and <uintptr_t>xb % x.itemsize == 0 and <uintptr_t>ob % o.itemsize == 0
                        and (xb + x.len <= ob or ob + o.len <= xb))  # aligned, apart
        if ok:
            call.px = <uintptr_t>x.buf
            call.pout = <uintptr_t>o.buf
            call.pn = rows
            with nogil:
                fb_run(self.net, self.dbl, 1)
        PyBuffer_Release(&x)
        PyBuffer_Release(&o)
        return ok


cdef inline bint _is_real(Py_buffer *view, bint dbl):
    """A native float32 buffer (format "f", "=f" or "@f"), or float64 ("d", ...) when dbl."""
    cdef const char *f = view.format
    if view.itemsize != (8 if dbl else 4) or f == NULL:
        return False
    if f[0] == b'=' or f[0] == b'@':
        f += 1
    return f[1] == 0 and ((dbl and f[0] == b'd') or (not dbl and f[0] == b'f'))
