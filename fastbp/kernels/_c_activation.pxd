# Activation kernels shared with the dense layers (fastbp/kernels/_c_linear.pyx), and array math shared
# with the losses (fastbp/kernels/_c_step.pyx).
from fastbp.kernels._c_common cimport floating

cdef floating v_max(const floating* x, Py_ssize_t n) noexcept nogil
cdef void v_exp(const floating* x, floating* y, Py_ssize_t n, floating shift) noexcept nogil
cdef void v_log1p_pos(const floating* x, floating* y, Py_ssize_t n) noexcept nogil

cdef int activation_code(object name) except -1
cdef void act_forward(int code, floating* Z, const floating* b, floating* A, Py_ssize_t n,
                      Py_ssize_t k, floating alpha) noexcept nogil
cdef void act_backward(int code, const floating* Z, const floating* A, const floating* dA,
                       floating* dZ, floating* db, Py_ssize_t n, Py_ssize_t k,
                       floating alpha) noexcept nogil
