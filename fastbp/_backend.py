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
  (Between ``use_backend(name)`` and the block's start -- a few bytecodes -- a context that never
  chose may still run ``name``: the call cannot know it starts a block until the block starts.)

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
import threading
import warnings
import weakref

BACKENDS = ("compiled", "numpy")

_choice = contextvars.ContextVar("fastbp_backend")  # unset: the process default
default = None  # the process default; None until the start (FASTBP_BACKEND)

# use_backend cannot tell a plain call from a block before the block is entered, so each call is
# pending until then: the newest pending call sets the default, entering a block withdraws its call,
# and a call whose object is gone (never entered: a plain call) settles.  So blocks opened at once
# in several threads leave the default as they found it.
_lock = threading.Lock()
_settled = None  # the default that plain calls (and the start) settled
_pending = []  # [(weak reference to a use_backend, its name)], oldest first
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
    """Why no compiled kernel can run (a string naming the import errors), or None when some can
    (the others then run on their twins: ``fastbp.kernels.implementations``)."""
    _ensure_registered()
    return _compiled_error


def backend():
    """The backend the current thread or asyncio task runs.

    Returns
    -------
    str
        ``'compiled'`` or ``'numpy'``: the context's last ``use_backend`` choice, else the process
        default (``'numpy'`` where no compiled kernel can be imported, unless forced).
    """
    if default is None:
        _ensure_registered()
    return _choice.get(default)


def _checked(name):
    """``name``, once it is known to be a backend that can run (and the start is done)."""
    unavailable = compiled_unavailable()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "compiled" and unavailable is not None:
        raise ImportError(f"fastbp's compiled kernels cannot be imported ({unavailable})")
    return name


class use_backend:
    """Run the kernels on ``'compiled'`` or ``'numpy'``.

    As a plain call, ``use_backend(name)`` switches for good: the current context and the process
    default (what new threads, and every context that never chose, run).  As a context manager,
    ``with use_backend(name):`` switches the current thread or asyncio task only, for the block,
    and puts its previous choice back on exit (also after an exception).

    Parameters
    ----------
    name : {'compiled', 'numpy'}

    Raises
    ------
    ValueError
        For another name.
    ImportError
        For ``'compiled'`` where no compiled kernel can be imported, naming the reason.
        Either way the choice is unchanged.
    """

    def __init__(self, name):
        _checked(name)
        self._token = _choice.set(name)
        with _lock:
            _pending.append((weakref.ref(self), name))
            _update_default()

    def __enter__(self):
        with _lock:  # a block: its call was never meant for the process default
            _pending[:] = [call for call in _pending if call[0]() is not self]
            _update_default()
        return self

    def __exit__(self, *exc_info):
        _choice.reset(self._token)
        return False


def _update_default():
    """Under _lock: settle the oldest calls that can no longer be blocks; the newest call's name
    (or the settled one) is the default."""
    global default, _settled
    while _pending and _pending[0][0]() is None:
        _settled = _pending.pop(0)[1]
    default = _pending[-1][1] if _pending else _settled


def _start():
    global _settled
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
    with _lock:
        _settled = _checked(choice)
        _update_default()
