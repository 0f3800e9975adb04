"""What the ``fastbp train`` jobs share (``train_job`` for the MLPs, ``generative_job`` for the
generative models): argument types that refuse bad values before anything runs, the checks of
output paths, the train/test split, the choice of backends, fitting with progress, and the
closing lines (speed ratio, save, plot)."""
import argparse
import os
import textwrap
import time
import warnings

import numpy as np

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "fraction",
           "parse_sizes", "check_output_path", "split_rows", "choose_backends", "pyplot",
           "fit_with_progress", "fit_noting_convergence", "print_fit_paths", "faster", "print_speedup", "save_model",
           "finish", "PLOT_STYLE"]

# readable figures: larger fonts than matplotlib's defaults
PLOT_STYLE = {"font.size": 11, "axes.titlesize": 12, "figure.titlesize": 13, "legend.fontsize": 10}


def _number_type(kind, test, words):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value
    convert.__name__ = words  # argparse names the type in its messages
    return convert


positive_int = _number_type(int, lambda v: v >= 1, "a whole number >= 1")
non_negative_int = _number_type(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _number_type(float, lambda v: v > 0 and np.isfinite(v), "a number > 0")
non_negative_float = _number_type(float, lambda v: v >= 0 and np.isfinite(v), "a number >= 0")
fraction = _number_type(float, lambda v: 0 < v < 1, "a fraction between 0 and 1")
dropout_rate = _number_type(float, lambda v: 0 <= v < 1, "a rate in [0, 1)")


def parse_sizes(text):
    """``--hidden`` '256,128' -> (256, 128); argparse's error for anything but positive ints."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("expected comma-separated layer sizes >= 1 such as "
                                         f"256,128, got {text!r}")
    return sizes


def check_output_path(path, option, suffixes=None):
    """ValueError, before any training, when ``path`` cannot be written: a missing or read-only
    folder, a folder in its place, or (``suffixes``) a file type that cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: the file is not writable")
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffixes is not None and suffix not in suffixes:
        raise ValueError(f"{option} {path}: cannot write a {suffix or 'suffix-less'!r} file; use "
                         f"one of {', '.join('.' + s for s in sorted(suffixes))}")


def plot_suffixes():
    """The file types matplotlib can write; ValueError when matplotlib is not installed."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise ValueError("--plot needs matplotlib, which is not installed "
                         "(pip install matplotlib, or fastbp[plot])") from None
    return set(FigureCanvasBase.get_supported_filetypes())


def check_outputs(args):
    """Every output of a ``fastbp train`` run checked before anything trains."""
    if args.plot:
        check_output_path(args.plot, "--plot", plot_suffixes())
    if args.save:
        check_output_path(args.save, "--save")


def split_rows(n, test_size, seed):
    """(kept, held out): sorted row indices, ``test_size`` of the n rows held out at random."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_size * n)))
    if n - n_test < 2:
        raise ValueError(f"{n} examples are too few to hold out {test_size:.0%} for a test")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def choose_backends(choice, compare):
    """(backend names to train with, a note why the compiled one is missing or None).

    ``choice``: 'auto' (compiled when it loads), 'compiled' or 'numpy'; ``compare``: also train
    on the NumPy backend, for the speed ratio."""
    from fastbp import _backend

    if choice == "numpy":
        return ["numpy"], None
    if _backend.compiled_unavailable() is not None:
        reason = f"compiled backend unavailable ({_backend.compiled_unavailable()})"
        if choice == "compiled":
            raise ValueError(reason)
        return ["numpy"], reason
    return (["compiled", "numpy"] if compare else ["compiled"]), None


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


def _warm_up(model, *data):
    """Fit a throwaway copy of ``model`` for one epoch on a few rows, untimed.  The first fit in a
    process pays one-time start-up costs (lazy imports, first calls into the libraries: ~25 ms
    measured on digits, against ~7 ms for the same 3-epoch fit afterwards), which would otherwise
    be charged to whichever backend a job times first."""
    import copy
    twin = copy.deepcopy(model)
    settings = {"max_iter": 1, "verbose": False, "early_stopping": False}
    own = twin.get_params()
    twin.set_params(**{key: value for key, value in settings.items() if key in own})
    n = len(data[0])
    rows = np.unique(np.linspace(0, n - 1, min(64, n)).astype(np.intp))  # spread: several classes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin.fit(*(array[rows] for array in data))
    except Exception:  # only a warm-up: the timed fit reports any real problem
        pass


def fit_with_progress(model, backend, mode, *data, **fit_params):
    """Fit ``model`` on ``backend``, its epochs shown as ``mode`` says (see ``_progress``):
    (seconds, True when it stopped at ``max_iter`` before converging)."""
    from fastbp import _backend
    from fastbp.cli._progress import showing_progress

    with _backend.use_backend(backend):
        _warm_up(model, *data)
        with showing_progress(f"{backend:<8}", mode):
            started = time.perf_counter()
            unconverged = fit_noting_convergence(model.fit, *data, **fit_params)
            seconds = time.perf_counter() - started
    return seconds, unconverged


def print_fit_paths(models):
    """One line per backend naming the path that trained its model (``fit_path_``: "engine", or
    "layerwise: <why the engine declined>"); ``models``: (backend name, fitted model) pairs."""
    for backend, model in models:
        print(textwrap.fill(f"fit path ({backend}): {model.fit_path_}", 79, subsequent_indent="  "))


def faster(ratio, than):
    """``ratio`` (their time / ours) in words: '2.3x faster than PyTorch', 'about as fast as
    PyTorch' (within 5%) or '1.4x slower than PyTorch'."""
    if 1 / 1.05 <= ratio <= 1.05:
        return f"about as fast as {than}"
    return f"{ratio:.1f}x faster than {than}" if ratio > 1 else f"{1 / ratio:.1f}x slower than {than}"


def print_speedup(seconds):
    """The speed ratio line when both backends ran (``seconds``: compiled's, then NumPy's)."""
    if len(seconds) == 2:
        print(f"compiled backend: {faster(seconds[1] / seconds[0], 'NumPy')}")


def save_model(model, path):
    model.save(path)
    print(f"model saved to {path} (fastbp predict {path} DATA.csv; fastbp.load in Python)")


def finish(args, models, seconds, unconverged):
    """The end every training job shares, after its table of results: the convergence note, the
    fit paths, the speed ratio, the saved model (``--save``).  ``models``: (backend, fitted model)
    pairs; ``seconds``: their fit times; ``unconverged``: whether the first stopped at --epochs.
    Returns (the first model, the data's name for a plot title)."""
    if unconverged:
        print(f"note: stopped at --epochs={args.epochs} before converging (raise --epochs)")
    print_fit_paths(models)
    print_speedup(seconds)
    first = models[0][1]
    if args.save:
        save_model(first, args.save)
    return first, "digits" if not args.data else args.data.rsplit("/", 1)[-1]
