"""Which BLAS fastbp's compiled products use, and its thread counts, read and set cheaply.

threadpoolctl finds the BLAS libraries loaded in the process (NumPy's and SciPy's OpenBLAS are
two different copies); it is asked once, and its OpenBLAS symbols are then called directly:
``threadpoolctl.threadpool_limits`` costs ~0.7 ms per use (it looks every library up again),
which is more than a forward pass of a small network.

- :func:`scipy_blas`: the BLAS that ``scipy.linalg.cython_blas`` calls (fastbp's fallback), or
  every BLAS when it cannot be told apart.
- :func:`numpy_openblas`, :func:`blas_choice`: NumPy's own OpenBLAS, which fastbp's compiled
  products prefer to SciPy's (``FASTBP_BLAS``).
- :func:`thread_entry_points`: addresses of a BLAS's get/set functions, for the engine.
- :class:`SingleThreadBlas`: hold the BLAS at one thread around a call, from Python (the engine's
  fallback when it cannot do it itself).
- :func:`limit_blas_threads`: cap every BLAS at ``n`` threads inside a ``with`` block (the
  estimators' ``n_threads``).
"""
import os

__all__ = ["scipy_blas", "all_blas", "numpy_openblas", "blas_choice", "thread_entry_points",
           "SingleThreadBlas", "limit_blas_threads"]

_libraries = None  # (SciPy's, all, NumPy's OpenBLAS or None), found once
_numpy_openblas = None


class _BlasThreads:
    """get/set of one BLAS library's thread count: OpenBLAS's own functions when threadpoolctl
    can hand them out, else threadpoolctl's controller methods."""

    __slots__ = ("get", "set")

    def __init__(self, controller):
        self.get, self.set = controller.get_num_threads, controller.set_num_threads
        symbol = getattr(controller, "_get_symbol", None)  # threadpoolctl's OpenBLAS controller
        if symbol is not None and getattr(controller, "internal_api", "") == "openblas" \
                and getattr(controller, "threading_layer", "") != "openmp":
            get, set_ = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
            if get is not None and set_ is not None:
                self.get, self.set = get, set_


def _inside(path, package):
    """Whether ``path`` lies in an imported package's folder or its wheel's <name>.libs (not in a
    sibling that merely starts with the name, such as scipy_openblas64)."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(package.__file__))),
                        package.__name__)
    return path.startswith(root + os.sep) or path.startswith(root + ".libs" + os.sep)


def _find():
    global _libraries
    if _libraries is None:
        try:
            import numpy
            import scipy
            from threadpoolctl import ThreadpoolController
            found = [lib for lib in ThreadpoolController().lib_controllers
                     if lib.user_api == "blas"]
            every = [_BlasThreads(lib) for lib in found]
            paths = [os.path.abspath(lib.filepath) for lib in found]
            own = [t for t, path in zip(every, paths) if _inside(path, scipy)]
            numpys = [(t, lib) for t, lib, path in zip(every, found, paths)
                      if _inside(path, numpy) and lib.internal_api == "openblas"]
            _libraries = (own or every, every, numpys[0] if len(numpys) == 1 else None)
        except Exception:  # no threadpoolctl, or it cannot read a library: leave BLAS alone
            _libraries = ([], [], None)
    return _libraries


def scipy_blas():
    """Thread controls of the BLAS that scipy.linalg.cython_blas calls (found by path: SciPy's own
    OpenBLAS), or of every BLAS when that cannot be told; [] without threadpoolctl."""
    return _find()[0]


def all_blas():
    """Thread controls of every BLAS loaded in the process; [] without threadpoolctl."""
    return _find()[1]



class NumpyOpenblas:
    """NumPy's own OpenBLAS: the addresses of its sgemm, dgemm and sgemv (Fortran interface),
    whether they take 64-bit integers (always, for now: only ILP64 builds are used), and its
    thread controls."""

    __slots__ = ("sgemm", "dgemm", "sgemv", "ilp64", "threads")

    def __init__(self, sgemm, dgemm, sgemv, ilp64, threads):
        self.sgemm, self.dgemm, self.sgemv = sgemm, dgemm, sgemv
        self.ilp64, self.threads = ilp64, threads


def numpy_openblas():
    """NumPy's own OpenBLAS (a :class:`NumpyOpenblas`), or None when NumPy has none (a NumPy
    built on another BLAS, or an unknown symbol naming).

    fastbp prefers it to SciPy's: NumPy's wheels ship the newer OpenBLAS (0.3.31 vs SciPy's
    0.3.30 here), measured 11-16% faster on the engine's per-thread products of the big networks
    and ~40% on 32 x 64 x 32; and sharing NumPy's thread pool leaves one pool spinning after a
    product instead of two.  Its symbols carry the scipy-openblas prefix and, in the ILP64 build
    NumPy uses, a 64_ suffix with 64-bit integer arguments."""
    global _numpy_openblas
    if _numpy_openblas is None:
        found = _find()[2]
        _numpy_openblas = (_lookup(*found) if found else None) or ()
    return _numpy_openblas or None


def _lookup(threads, controller):
    import ctypes
    try:
        library = ctypes.CDLL(controller.filepath)
    except OSError:
        return None
    # only the 64_-suffixed names: they say ILP64 for sure (an unsuffixed sgemm_ could be either,
    # and a wrong integer width would pass garbage sizes)
    for prefix in ("scipy_", ""):
        s, d, v = (getattr(library, f"{prefix}{name}_64_", None)
                   for name in ("sgemm", "dgemm", "sgemv"))
        if s is not None and d is not None and v is not None:
            address = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
            return NumpyOpenblas(address(s), address(d), address(v), True, threads)
    return None


BLAS_CHOICES = ("auto", "numpy", "scipy")


def blas_choice():
    """The BLAS fastbp's compiled products go to: 'numpy' (NumPy's own OpenBLAS, when there is
    one) or 'scipy' (scipy.linalg.cython_blas); ``FASTBP_BLAS=auto|numpy|scipy`` forces one."""
    choice = os.environ.get("FASTBP_BLAS", "auto").strip().lower() or "auto"
    if choice not in BLAS_CHOICES:
        raise ValueError(f"FASTBP_BLAS must be one of {BLAS_CHOICES}, got {choice!r}")
    if choice == "scipy":
        return "scipy"
    if numpy_openblas() is not None:
        return "numpy"
    if choice == "numpy":
        raise RuntimeError("FASTBP_BLAS=numpy, but NumPy has no OpenBLAS that fastbp can call")
    return "scipy"


def thread_entry_points(libraries):
    """Addresses of (get, set) thread-count functions of the one BLAS in ``libraries``, for the
    engine to hold it at one thread while it runs its own threads (and to read its limit, which
    caps them); (0, 0) when there is not exactly one, or its functions are not plain C ones (then
    Python does it, around each call: see SingleThreadBlas)."""
    import ctypes
    if len(libraries) != 1:
        return 0, 0
    get, set_ = libraries[0].get, libraries[0].set
    if not (isinstance(get, ctypes._CFuncPtr) and isinstance(set_, ctypes._CFuncPtr)):
        return 0, 0
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value or 0  # noqa: E731
    return address(get), address(set_)


_held = []  # the _Cap blocks open now, innermost last (their threads restore the counts)


def _after_fork_in_child():
    """A forked child has only the thread that forked: the blocks the other threads had open
    never close there, so restore their counts now, innermost first, as a new process has them."""
    while _held:
        _held[-1].__exit__(None, None, None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Cap:
    """Hold each of ``libraries`` at no more than ``limit`` threads inside the block (restoring
    the counts after); ``limit`` is then the smallest count that was in force, capped."""

    __slots__ = ("libraries", "cap", "saved", "limit")

    def __init__(self, libraries, cap):
        self.libraries, self.cap = libraries, cap
        self.saved = [0] * len(libraries)
        self.limit = 0

    def __enter__(self):
        limit = 0
        for i, lib in enumerate(self.libraries):
            self.saved[i] = current = lib.get() or 1
            limit = current if limit == 0 else min(limit, current)
            if current > self.cap:
                lib.set(self.cap)
        self.limit = limit
        _held.append(self)
        return self

    def __exit__(self, *exc_info):
        for lib, saved in zip(self.libraries, self.saved):
            if saved > self.cap:
                lib.set(saved)
        if self in _held:
            _held.remove(self)
        return False


class SingleThreadBlas(_Cap):
    """Hold ``libraries`` at one thread around a call; ``limit`` is the limit that was in force
    (``threadpoolctl.threadpool_limits`` sets it).  Reusable."""

    __slots__ = ()

    def __init__(self, libraries):
        super().__init__(libraries, 1)


def limit_blas_threads(n):
    """A context manager capping every BLAS at ``n`` threads inside its block (a lower count in
    force stays), for a few microseconds where threadpoolctl.threadpool_limits takes ~0.7 ms."""
    return _Cap(all_blas(), max(1, int(n)))
