# cython: auto_pickle=False
# Compiled training engine: whole epochs of minibatch backprop, and prediction, for a plain stack of
# dense layers; fastbp.fused drives it.  The work is done in fastbp/_train_engine.h with the GIL
# released.  This module only hands the engine the addresses of three tables (layout in
# fb_load / fb_run there), filled by fastbp.fused from arrays it has checked and keeps alive: no
# NumPy C-API, no memoryviews and argument-free calls keep the .so small.
# Products go to SciPy's BLAS (scipy.linalg.cython_blas), held at one thread by fastbp.fused
# while the engine runs its own threads.
from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport calloc, free
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from "_train_engine.h" nogil:
    int FB_MAXL, FB_MAXT, FB_MAXG
    ctypedef struct fb_pool:
        pass
    ctypedef void (*fb_sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *,
                                float *, int *, float *, float *, int *)
    ctypedef void (*fb_dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *,
                                double *, int *, double *, double *, int *)
    fb_sgemm_t fb_sgemm
    fb_dgemm_t fb_dgemm
    ctypedef struct fb_net:
        fb_pool *pool
    void fb_pool_init(fb_pool *pool, int size, uintptr_t create, uintptr_t join)
    void fb_pool_stop(fb_pool *pool)
    int fb_load(fb_net *N, const int64_t *ints, const double *floats, const uintptr_t *ptrs)
    void fb_run(fb_net *N, int dbl, int predict)

fb_sgemm = <fb_sgemm_t>sgemm
fb_dgemm = <fb_dgemm_t>dgemm

LIMITS = (FB_MAXL, FB_MAXT, FB_MAXG)  # dense layers, threads, dropout generators


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

    def load(self, uintptr_t ints, uintptr_t floats, uintptr_t ptrs):
        """Addresses of the int64, float64 and pointer tables describing the network."""
        if fb_load(self.net, <const int64_t *>ints, <const double *>floats,
                   <const uintptr_t *>ptrs) != 0:
            raise ValueError("network layout out of range")

    def train(self):
        """Train the minibatches named in the control block (GIL released)."""
        with nogil:
            fb_run(self.net, self.dbl, 0)

    def predict(self):
        """Forward pass of the rows named in the control block (GIL released)."""
        with nogil:
            fb_run(self.net, self.dbl, 1)
