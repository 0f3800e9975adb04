"""What the ``fastbp train`` jobs share (``train_job`` for the MLPs, ``generative_job`` for the
generative models): parsing layer sizes, reading a data table, the train/test split, choosing the
backends, and the closing lines (speed ratio, save, plot)."""
import os
import warnings

import numpy as np

__all__ = ["parse_sizes", "load_table", "split_rows", "choose_backends", "require_matplotlib",
           "pyplot", "print_fit_paths", "print_speedup", "save_model"]


def parse_sizes(text):
    """``--hidden`` '256,128' -> (256, 128); ValueError for anything but positive ints."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError("--hidden takes comma-separated layer sizes such as 256,128, "
                         f"got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise ValueError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


def load_table(path):
    """(X, y) from a CSV or NPY file whose last column is the label."""
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if path.lower().endswith(".npy"):
        table = np.load(path, allow_pickle=False)
    else:
        try:
            table = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError:
            try:
                table = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
            except ValueError as error:
                raise ValueError(f"{path}: expected comma-separated numbers ({error})") from None
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] < 2:
        raise ValueError(f"{path}: expected a 2-D table with features and a last label column, "
                         f"got shape {table.shape}")
    if table.dtype.kind not in "fiub":
        raise ValueError(f"{path}: expected numbers, got dtype {table.dtype}")
    return table[:, :-1], table[:, -1]


def split_rows(n, test_size, seed):
    """(kept, held out): sorted row indices, ``test_size`` of the n rows held out at random."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"--test-size and --validation-size must be in (0, 1), got {test_size}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_size * n)))
    if n - n_test < 2:
        raise ValueError(f"{n} examples are too few to hold out {test_size:.0%} for a test")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def choose_backends(choice):
    """(backend names to train with, a note why the compiled one is missing or None)."""
    from fastbp import _backend

    if choice == "numpy":
        return ["numpy"], None
    if _backend.compiled_unavailable() is not None:
        reason = f"compiled backend unavailable ({_backend.compiled_unavailable()})"
        if choice == "compiled":
            raise ValueError(reason)
        return ["numpy"], reason
    return (["compiled", "numpy"] if choice == "both" else ["compiled"]), None


def require_matplotlib():
    """ValueError before any training when ``--plot`` cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib, which is not installed "
                         "(pip install matplotlib, or fastbp[plot])") from None


def pyplot():
    """matplotlib's pyplot drawing to files (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fit_noting_convergence(fit, *args, **kwargs):
    """Call ``fit(*args, **kwargs)``; True when it stopped at ``max_iter`` before converging.

    That ConvergenceWarning is swallowed (the jobs print a short note instead); any other warning
    (a diverging loss among them) is shown as usual.
    """
    from fastbp.exceptions import ConvergenceWarning
    from fastbp.training import MAX_ITER_WARNING

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit(*args, **kwargs)
    unconverged = False
    for w in caught:
        if issubclass(w.category, ConvergenceWarning) and str(w.message).startswith(
                MAX_ITER_WARNING.split("(")[0]):
            unconverged = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return unconverged


def warm_up(model, *data):
    """Fit a throwaway copy of ``model`` for one epoch on a few rows, untimed.  The first fit in a
    process pays one-time start-up costs (lazy imports, first calls into the libraries: ~25 ms
    measured on digits, against ~7 ms for the same 3-epoch fit afterwards), which would otherwise
    be charged to whichever backend a job times first."""
    import copy
    twin = copy.deepcopy(model)
    settings = {"max_iter": 1, "verbose": False, "early_stopping": False}
    own = twin.get_params()
    twin.set_params(**{key: value for key, value in settings.items() if key in own})
    import numpy as np
    n = len(data[0])
    rows = np.unique(np.linspace(0, n - 1, min(64, n)).astype(np.intp))  # spread: several classes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin.fit(*(array[rows] for array in data))
    except Exception:  # only a warm-up: the timed fit reports any real problem
        pass


def print_fit_paths(models):
    """One line per backend naming the path that trained its model (``fit_path_``: "engine", or
    "layerwise: <why the engine declined>"); ``models``: (backend name, fitted model) pairs."""
    for backend, model in models:
        print(f"fit path ({backend}): {model.fit_path_}")


def print_speedup(seconds):
    """The speed ratio line when both backends ran (``seconds``: compiled's, then NumPy's)."""
    if len(seconds) == 2:
        print(f"compiled backend: {seconds[1] / seconds[0]:.1f}x the speed of NumPy")


def save_model(model, path):
    model.save(path)
    print(f"model saved to {path} (fastbp.load({path!r}) restores it)")
