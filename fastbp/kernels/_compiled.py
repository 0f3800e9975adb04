"""The compiled backend: the Cython kernels under the names of their NumPy twins
(fastbp/kernels/_reference.py), with the same signatures, semantics and aliasing rules.

Each compiled module imports on its own, so one that is missing or damaged costs only its own
kernels: ``find(kernel)`` gives the compiled function or the reason there is none, and the kernels
package runs that kernel on its NumPy twin (fastbp.kernels.implementations says which).
"""
import importlib

from fastbp._platform import _blas_threads

MODULES = ("_c_activation", "_c_linear", "_c_step")  # the compiled modules that hold kernels


def _import_all():
    """(modules that imported by name, {name: why another did not}), never raising: a damaged
    .so can raise ImportError, OSError, ..."""
    loaded, failed = {}, {}
    for name in MODULES:
        try:
            loaded[name] = importlib.import_module(f"fastbp.kernels.{name}")
        except Exception as error:
            failed[name] = f"{type(error).__name__}: {error}"
    return loaded, failed


modules, failures = _import_all()


def find(kernel):
    """(the compiled function named ``kernel``, None) or (None, why there is none)."""
    for module in modules.values():
        function = getattr(module, kernel, None)
        if function is not None:
            return function, None
    searched = [f"not in {', '.join(modules)}"] if modules else []
    return None, "; ".join([*searched, *failures.values()])


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
        modules["_c_linear"].use_ilp64_blas(found.sgemm, found.dgemm)
    elif name == "scipy":
        modules["_c_linear"].use_ilp64_blas(0, 0)
    else:
        raise ValueError(f"unknown BLAS {name!r}; expected 'numpy' or 'scipy'")
    blas = name


def _start():
    """The start-up choice (FASTBP_BLAS, see fastbp._platform._blas_threads.blas_choice); none
    without _c_linear (its kernels then run on their twins)."""
    if "_c_linear" not in modules:
        return
    choice = _blas_threads.blas_choice()
    found = _blas_threads.numpy_openblas()
    use_blas("numpy" if choice == "numpy" and found is not None and found.ilp64 else "scipy")


_start()
