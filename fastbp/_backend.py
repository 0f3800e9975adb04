"""Which kernels run: the choice between ``'compiled'`` and ``'numpy'``, per thread and async context.

This module holds only the choice; the kernels package (``fastbp.kernels``) holds the
implementations and runs, op by op, the one the current context chose.

The choice lives in a :class:`contextvars.ContextVar`:

- ``with use_backend(name):`` switches the current thread or asyncio task only, and puts the
  previous choice back on exit (also after an exception);
- ``use_backend(name)`` as a plain call switches for good: it sets the current context's choice
  and the *process default*;
- a context that never chose -- a new thread (threads start from an empty context, not from their
  parent's) -- runs the process default.  An asyncio task starts from a copy of the context that
  created it, so it inherits that context's choice; its own switches stay in the task.

A block puts back, on exit, the choice its context had before it; a plain call inside a block
still sets the process default, which outlives the block.

The process default starts from the environment variable ``FASTBP_BACKEND`` = ``auto`` (default),
``compiled`` or ``numpy``.  With ``auto``, compiled kernels that cannot be imported at all (missing,
built for another platform, corrupt) make fastbp run on NumPy and warn once, naming the import
error; forcing ``compiled`` there raises ImportError with the reason.  (Where only some compiled ops
are missing, the compiled backend runs and those ops run on their NumPy twins, each said once:
see ``fastbp.kernels.implementations``.)

Whether the compiled kernels are available is the kernels package's to say: it calls
:func:`register_compiled` at its import.  The one dynamic edge of this module: asked for the
choice before the kernels package was imported, it imports ``fastbp.kernels`` by name (which
registers and starts).
"""
import contextvars
import importlib
import os
import warnings

BACKENDS = ("compiled", "numpy")

_choice = contextvars.ContextVar("fastbp_backend")  # unset: the process default
default = None  # the process default; None until the start (FASTBP_BACKEND)
_compiled_error = None  # why the compiled kernels cannot run at all (None: they can)
_registered = False


def register_compiled(error):
    """Called by ``fastbp.kernels`` at its import: ``error`` is None when at least one compiled
    kernel imports, else the reason none does.  Starts the process default from FASTBP_BACKEND
    (raising ValueError for a bogus value, ImportError for ``compiled`` where it cannot run)."""
    global _compiled_error, _registered
    _compiled_error, _registered = error, True
    if default is None:
        _start()


def _ensure_registered():
    if not _registered:
        importlib.import_module("fastbp.kernels")  # the one dynamic edge: its import registers


def compiled_unavailable():
    """Why the compiled kernels cannot run at all (a string), or None when they can."""
    _ensure_registered()
    return _compiled_error


def backend():
    """The current context's backend: ``'compiled'`` or ``'numpy'``."""
    if default is None:
        _ensure_registered()
    return _choice.get(default)


def _checked(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "compiled" and compiled_unavailable() is not None:
        raise ImportError(f"fastbp's compiled kernels cannot be imported ({_compiled_error})")
    return name


class use_backend:
    """Run the kernels on ``'compiled'`` or ``'numpy'``.

    As a plain call, ``use_backend(name)`` switches for good: the current context and the process
    default (what new threads, and every context that never chose, run).  As a context manager,
    ``with use_backend(name):`` switches the current thread or asyncio task only, for the block.

    Raises ValueError for another name, and ImportError (with the reason) for ``'compiled'`` where
    no compiled kernel can be imported; the choice is then unchanged.
    """

    def __init__(self, name):
        global default
        _checked(name)
        self._previous_default = default
        self._token = _choice.set(name)
        default = name

    def __enter__(self):
        # A block switches its own context only: the process default goes back at once.
        global default
        default = self._previous_default
        return self

    def __exit__(self, *exc_info):
        _choice.reset(self._token)
        return False


def _start():
    global default
    choice = os.environ.get("FASTBP_BACKEND", "auto").strip().lower() or "auto"
    if choice == "auto":
        if _compiled_error is not None:
            warnings.warn(
                f"fastbp: compiled kernels unavailable ({_compiled_error}); running on NumPy",
                RuntimeWarning, stacklevel=4)
            choice = "numpy"
        else:
            choice = "compiled"
    elif choice not in BACKENDS:
        raise ValueError(f"FASTBP_BACKEND={choice!r}: expected auto, compiled or numpy")
    default = _checked(choice)
