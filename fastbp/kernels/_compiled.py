"""The compiled backend: the Cython kernels under the names of their NumPy twins
(fastbp/kernels/_reference.py), with the same signatures, semantics and aliasing rules."""
from fastbp._platform import _blas_threads
from fastbp.kernels import _c_linear
from fastbp.kernels._c_activation import activation, activation_grad
from fastbp.kernels._c_linear import dense_backward, dense_forward, linear_backward, linear_forward
from fastbp.kernels._c_step import adam_update, loss, sgd_update

# the kernels (use_blas and blas below are this module's own, not kernels)
__all__ = ["linear_forward", "linear_backward", "dense_forward", "dense_backward", "activation",
           "activation_grad", "loss", "sgd_update", "adam_update"]

blas = "scipy"  # where the matrix products go: 'numpy' (NumPy's own OpenBLAS) or 'scipy'


def use_blas(name):
    """Send the kernels' matrix products to NumPy's own OpenBLAS ('numpy': one thread pool with
    NumPy's own products, and a newer, faster library in NumPy's wheels) or to SciPy's
    cython_blas ('scipy'); 'numpy' needs NumPy's ILP64 OpenBLAS (ValueError otherwise)."""
    global blas
    if name == "numpy":
        found = _blas_threads.numpy_openblas()
        if found is None or not found.ilp64:
            raise ValueError("NumPy has no ILP64 OpenBLAS that fastbp can call")
        _c_linear.use_ilp64_blas(found.sgemm, found.dgemm)
    elif name == "scipy":
        _c_linear.use_ilp64_blas(0, 0)
    else:
        raise ValueError(f"unknown BLAS {name!r}; expected 'numpy' or 'scipy'")
    blas = name


def _start():
    """The start-up choice (FASTBP_BLAS, see fastbp._platform._blas_threads.blas_choice)."""
    choice = _blas_threads.blas_choice()
    found = _blas_threads.numpy_openblas()
    use_blas("numpy" if choice == "numpy" and found is not None and found.ilp64 else "scipy")


_start()
