"""Which kernels run: the compiled modules (``fastbp.kernels._compiled``) or their NumPy twins.

The start is set by the environment variable ``FASTBP_BACKEND`` = ``auto`` (default), ``compiled``
or ``numpy``.  With ``auto``, a compiled module that cannot be imported (missing, built for another
platform, corrupt) makes fastbp run on NumPy and warn once, naming the import error.

A damaged compiled file (one cut short, say by a full disk) would not fail to import: it would
kill the process with SIGBUS.  So every compiled module of fastbp (``fastbp.*._c_*``, however it is
imported: they also import each other from C) has its ELF headers checked against its file first
(fastbp._platform._elf), and a damaged one raises ImportError, naming the file and the damage.
"""
import importlib
import importlib.machinery
import os
import sys
import warnings

from fastbp._platform import _elf

from fastbp.kernels import _reference


class _CheckedExtensions:
    """Import hook (on sys.meta_path): finds fastbp's compiled modules as the path finder does,
    and refuses those whose file is damaged (see the module docstring)."""

    def find_spec(self, name, path=None, target=None):
        package, _, module = name.rpartition(".")
        if not (module.startswith("_c_") and package.partition(".")[0] == "fastbp"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            damage = _elf.damage(spec.origin)
            if damage is not None:
                raise ImportError(f"{os.path.basename(spec.origin)} is damaged ({damage})",
                                  name=name, path=spec.origin)
        return spec


def _install_hook():
    """Put the hook just before the path finder: after any hook that others put first."""
    finders, path_finder = sys.meta_path, importlib.machinery.PathFinder
    where = finders.index(path_finder) if path_finder in finders else len(finders)
    finders.insert(where, _CheckedExtensions())


_install_hook()

BACKENDS = ("compiled", "numpy")


def _import_compiled():
    """Return (module, None) or (None, reason) without ever raising."""
    try:
        return importlib.import_module("fastbp.kernels._compiled"), None
    except Exception as error:  # a corrupt .so can raise ImportError, OSError, ...
        return None, f"{type(error).__name__}: {error}"


compiled_module, compiled_error = _import_compiled()
current = _reference  # the module whose functions kernels.py calls


def _require_compiled():
    if compiled_module is None:
        raise ImportError(f"fastbp's compiled kernels cannot be imported ({compiled_error})")
    return compiled_module


def backend():
    """The active backend: 'compiled' or 'numpy'."""
    return "compiled" if current is compiled_module else "numpy"


def _set(name):
    global current
    if name == "compiled":
        current = _require_compiled()
    elif name == "numpy":
        current = _reference
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


class use_backend:
    """Switch the kernels to ``'compiled'`` or ``'numpy'``.

    Works as a plain call (the switch stays) and as a context manager (the previous backend
    comes back on exit).  Forcing ``'compiled'`` where it cannot be imported raises ImportError
    with the reason.
    """

    def __init__(self, name):
        self.previous = backend()
        _set(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        _set(self.previous)
        return False


def _start():
    choice = os.environ.get("FASTBP_BACKEND", "auto").strip().lower() or "auto"
    if choice == "auto":
        if compiled_module is None:
            warnings.warn(
                f"fastbp: compiled kernels unavailable ({compiled_error}); running on NumPy",
                RuntimeWarning, stacklevel=3)
            _set("numpy")
        else:
            _set("compiled")
    elif choice in BACKENDS:
        _set(choice)
    else:
        raise ValueError(f"FASTBP_BACKEND={choice!r}: expected auto, compiled or numpy")


_start()
