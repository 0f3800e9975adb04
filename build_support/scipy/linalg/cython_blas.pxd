# The three declarations of SciPy's scipy/linalg/cython_blas.pxd that fastbp cimports, copied
# verbatim (same ctypedef names: Cython checks the signature text against SciPy's capsule when the
# module is imported), so that a build needs no SciPy: only the run, where
# scipy.linalg.cython_blas provides the functions (SciPy is a runtime dependency).
# setup.py puts build_support/ first on Cython's include path.
ctypedef float s
ctypedef double d

cdef void dgemm(char *transa, char *transb, int *m, int *n, int *k, d *alpha, d *a, int *lda, d *b, int *ldb, d *beta, d *c, int *ldc) noexcept nogil
cdef void sgemm(char *transa, char *transb, int *m, int *n, int *k, s *alpha, s *a, int *lda, s *b, int *ldb, s *beta, s *c, int *ldc) noexcept nogil
cdef void sgemv(char *trans, int *m, int *n, s *alpha, s *a, int *lda, s *x, int *incx, s *beta, s *y, int *incy) noexcept nogil
