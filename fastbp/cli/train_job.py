"""``fastbp train``: train a network on the bundled digits or your own data.

With no arguments it trains an ``MLPClassifier`` (one hidden layer of 100 relu units, Adam) on
the handwritten digits shipped with fastbp, holding out 20% of the images as a test set and 10% of
the rest as a validation set, stopping when the validation score stops improving; a progress bar
shows each fit, and a short summary gives the test accuracy and the training time with the
compiled kernels and, for comparison, the NumPy kernels (same seed: the two models agree up to
rounding).
"""
import argparse
import inspect

import numpy as np

from fastbp.cli._jobs import (check_outputs, choose_backends, dropout_rate, finish,
                              fit_with_progress, fraction, non_negative_float, non_negative_int,
                              parse_sizes, positive_float, positive_int, pyplot, PLOT_STYLE,
                              split_rows)
from fastbp.optim import OPTIMIZERS
from fastbp.training import SOLVERS, STEP_SOLVERS

# --lr when not given, per solver of fastbp.training.STEP_SOLVERS: its optimizer's own default step
# length (fastbp.optim, the registry's), except where another trains the digits network better
# (full-batch 'gd' takes one step per epoch); 'lbfgs' has no learning rate
TUNED_LR = {"gd": 1.0, "rmsprop": 1e-3}
DEFAULT_LR = {solver: TUNED_LR[solver] if solver in TUNED_LR else
              inspect.signature(OPTIMIZERS[solver]).parameters["lr"].default
              for solver in STEP_SOLVERS}

USAGE = "fastbp train [--data FILE [--target NAME|N]] [options]   (fastbp train -h: all)"

DESCRIPTION = """Train a network on the bundled handwritten digits (the default) or your own data.

The default run trains a digits classifier on the compiled backend and again on the NumPy
backend, and compares their speed.  --data FILE trains once, on the compiled backend (--compare
for both)."""

EPILOG = """your own data (--data FILE):
  A CSV file (any delimiter, an optional header row) or a 2-D .npy array, one example per row.
  Columns of numbers are features; the target is --target (a header name, or a column number
  counted from 1, -1 for the last), else the one text column, else the last column.  Text labels
  and a few whole-number values mean classification, other numbers regression (--task to
  choose).  Empty cells and NA, N/A, NaN, null, ? are missing values: refused with the file's
  line and column, or filled in with --impute mean|median.

examples:
  fastbp train --data iris.csv --target species --hidden 32 --save iris.npz
  fastbp train --data houses.csv --target price --impute median --plot loss.png
  fastbp train --model autoencoder --plot reconstructions.png"""

__all__ = ["add_arguments", "run", "DEFAULT_LR"]


def _activations():
    from fastbp.nn import ACTIVATION_ALIASES, ACTIVATIONS
    return sorted((set(ACTIVATIONS) - {"softmax"}) | set(ACTIVATION_ALIASES))


def add_arguments(parser):
    data = parser.add_argument_group("data")
    data.add_argument("--data", metavar="FILE",
                      help="CSV or .npy file, one example per row (default: the bundled digits)")
    data.add_argument("--target", metavar="NAME|N",
                      help="the target column: header name or number (default: the text column, "
                           "else the last)")
    data.add_argument("--impute", choices=("mean", "median"),
                      help="fill missing feature values with the column's mean or median")
    data.add_argument("--task", choices=("auto", "classify", "regress"), default="auto",
                      help="auto (default): classify text or whole-number targets, else regress")
    data.add_argument("--test-size", type=fraction, default=0.2, metavar="FRACTION",
                      help="fraction held out for the test (default 0.2)")
    data.add_argument("--validation-size", type=fraction, default=0.1, metavar="FRACTION",
                      help="fraction of the training rows held out for the validation score "
                           "(default 0.1)")
    net = parser.add_argument_group("network and training")
    net.add_argument("--model", choices=("mlp", "autoencoder", "vae", "gan"), default="mlp",
                     help="mlp (default) or a generative model: autoencoder, vae, gan")
    net.add_argument("--hidden", type=parse_sizes, default=(100,), metavar="SIZES",
                     help="hidden layer sizes, comma-separated, e.g. 256,128 (default 100)")
    net.add_argument("--activation", default="relu", choices=_activations(),
                     metavar="NAME", help=f"hidden activation: {', '.join(_activations())} "
                                          "(default relu)")
    net.add_argument("--solver", default="adam", choices=SOLVERS,
                     help="default adam; lbfgs: full-batch L-BFGS, --epochs its iterations")
    net.add_argument("--learning-rate", default="constant",
                     choices=("constant", "invscaling", "adaptive", "backtracking"),
                     help="learning-rate schedule (backtracking needs --solver gd)")
    net.add_argument("--lr", type=positive_float, default=None, metavar="RATE",
                     help="initial learning rate (default: "
                          + ", ".join(f"{rate:g} {name}" for name, rate in DEFAULT_LR.items())
                          + "; unused by lbfgs)")
    net.add_argument("--epochs", type=positive_int, default=200,
                     help="maximum number of epochs (default 200)")
    net.add_argument("--batch-size", type=positive_int, default=None,
                     help="minibatch rows (default min(200, n))")
    net.add_argument("--alpha", type=non_negative_float, default=1e-4,
                     help="L2 penalty (default 1e-4)")
    net.add_argument("--dropout", type=dropout_rate, default=0.0,
                     help="dropout rate on hidden layers (default 0)")
    net.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=None,
                     help="stop when the validation score stops improving and keep the best "
                          "weights (default for the bundled digits), or stop when the training "
                          "loss does (default for --data, as scikit-learn: a small validation "
                          "set is a noisy guide)")
    net.add_argument("--patience", type=positive_int, default=20,
                     help="stop after this many epochs without improvement (default 20)")
    net.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    net.add_argument("--seed", type=int, default=0, help="random seed (split, weights, shuffling)")
    from fastbp.cli.generative_job import add_generative_arguments
    add_generative_arguments(parser)
    run = parser.add_argument_group("how it runs")
    run.add_argument("--backend", choices=("auto", "compiled", "numpy"), default="auto",
                     help="auto (default): compiled when it loads, else NumPy")
    run.add_argument("--compare", action="store_true",
                     help="train on the compiled and the NumPy backend and compare their speed "
                          "(the default for the bundled digits)")
    run.add_argument("--threads", type=non_negative_int, default=1,
                     help="threads for the matrix products (default 1: digits-sized products run "
                          "fastest on one; 0 = the libraries' own default)")
    out = parser.add_argument_group("output")
    out.add_argument("--save", metavar="MODEL.npz", help="save the trained model")
    out.add_argument("--plot", metavar="PLOT.png",
                     help="plot the loss curve, validation score and gradient norms (matplotlib)")
    shown = out.add_mutually_exclusive_group()
    shown.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    shown.add_argument("--verbose", "-v", action="store_true",
                       help="one line per epoch instead of the progress bar")


def _model(args, task, verbose):
    from fastbp.models.mlp import MLPClassifier, MLPRegressor

    cls = MLPRegressor if task == "regress" else MLPClassifier
    rate = args.lr if args.lr is not None else DEFAULT_LR.get(args.solver)
    return cls(hidden_layer_sizes=args.hidden, activation=args.activation, solver=args.solver,
               learning_rate=args.learning_rate,
               **({} if rate is None else {"learning_rate_init": rate}),
               max_iter=args.epochs, batch_size="auto" if args.batch_size is None else args.batch_size,
               alpha=args.alpha, dropout=args.dropout, early_stopping=args.early_stopping,
               n_iter_no_change=args.patience, dtype=args.dtype,
               n_threads=args.threads or None, random_state=args.seed, verbose=verbose)


def load_data(args):
    """(X, y, a description of the data, the task, a line about the target or None)."""
    from fastbp.cli._table import features, infer_task, read_table
    from fastbp.datasets import load_digits

    if not args.data:
        if args.target or args.impute:
            raise ValueError("--target and --impute are for your own --data")
        X, y = load_digits()
        return X, y, "handwritten digits", "classify" if args.task == "auto" else \
            args.task, None
    table = read_table(args.data, args.target)
    X, y = features(table, args.data, args.impute), table.y
    task = infer_task(y) if args.task == "auto" else args.task
    if task == "regress" and y.dtype.kind not in "fiub":
        raise ValueError(f"--task regress: the target {table.target_name!r} holds text "
                         f"({y[0]!r}), not numbers")
    if task == "classify":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        classes = np.unique(y)
        shown = ", ".join(map(str, classes[:5])) + (", ..." if len(classes) > 5 else "")
        what = f"classes ({len(classes)}: {shown})"
    else:
        what = "a quantity (regression)"
    chosen = "; --task to choose" if args.task == "auto" else ""
    about = f"target {table.target_name!r}: {what}{chosen}"
    extras = table.notes + ([f"{len(table.missing)} missing {'value' if len(table.missing) == 1 else 'values'} "
                             f"filled in by the column's {args.impute}"] if table.missing else [])
    source = args.data + (f" ({'; '.join(extras)})" if extras else "")
    return X, y, source, task, about


def run(args):
    """Train as ``args`` say; the exit status (every argument is checked before training)."""
    from fastbp.cli._progress import choose_mode

    check_outputs(args)
    if args.model != "mlp":
        from fastbp.cli.generative_job import run_generative
        return run_generative(args.model, args)
    X, y, source, task, about = load_data(args)
    if args.early_stopping is None:
        args.early_stopping = not args.data
    train, test = split_rows(len(X), args.test_size, args.seed)
    fit_rows, validation = split_rows(len(train), args.validation_size, args.seed + 1)
    fit_rows, validation = train[fit_rows], train[validation]
    backends, note = choose_backends(args.backend, args.compare or not args.data)
    if task == "classify" and len(np.unique(y[fit_rows])) < 2:
        raise ValueError("the training rows hold a single class: nothing to classify")
    mode = choose_mode(args.quiet, args.verbose)

    n_outputs = 1 if task == "regress" else len(np.unique(y))
    n_outputs = 1 if n_outputs == 2 else n_outputs
    architecture = "-".join(str(size) for size in (X.shape[1], *args.hidden, n_outputs))
    print(f"data: {source}, {X.shape[0]} rows x {X.shape[1]} features")
    print(f"split: {len(fit_rows)} training, {len(validation)} validation, {len(test)} test rows")
    if about:
        print(about)
    stop = "early stopping" if args.early_stopping else "stop on the training loss"
    print(f"network {architecture} ({args.activation}), {args.solver}, up to {args.epochs} "
          f"epochs, {stop}, {args.dtype}")
    if note:
        print(f"note: {note}; training with NumPy only")
    results, models = [], []
    for name in backends:
        model = _model(args, task, verbose=mode != "none")
        seconds, unconverged = fit_with_progress(
            model, name, mode, X[fit_rows], y[fit_rows],
            validation_data=(X[validation], y[validation]))
        results.append((name, model.score(X[test], y[test]), seconds, model.n_iter_, unconverged))
        models.append((name, model))

    metric = "test R^2" if task == "regress" else "test accuracy"
    print(f"\n{'backend':<10}{metric:>14}{'time':>10}{'epochs':>8}{'per epoch':>11}")
    for name, score, seconds, epochs, _ in results:
        print(f"{name:<10}{score:>14.4f}{seconds:>8.2f} s{epochs:>8}{seconds / epochs * 1e3:>8.1f} ms")
    first, data_name = finish(args, models, [seconds for _, _, seconds, _, _ in results],
                              results[0][4])
    if args.plot:
        _plot(first, f"{type(first).__name__} {architecture} on {data_name}: "
                     f"{metric} {results[0][1]:.3f}", args.plot)
        print(f"loss curve and gradient norms plotted to {args.plot}")
    return 0


def _plot(model, title, path):
    plt = pyplot()
    with plt.rc_context(PLOT_STYLE):
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        figure.suptitle(title)
        epochs = np.arange(1, len(model.loss_curve_) + 1)
        left.plot(epochs, model.loss_curve_, color="tab:blue", label="training loss")
        left.set_xlabel("epoch")
        left.set_ylabel("training loss", color="tab:blue")
        left.set_title("Loss and validation score")
        if model.validation_scores_:
            twin = left.twinx()
            twin.plot(epochs, model.validation_scores_, color="tab:orange",
                      label="validation score")
            twin.set_ylabel("validation score", color="tab:orange")
            best = int(np.argmax(model.validation_scores_))
            twin.plot(epochs[best], model.validation_scores_[best], "o", color="tab:orange")
        n_layers = model.grad_norms_.shape[1]
        for layer in range(n_layers):
            name = "output layer" if layer == n_layers - 1 else f"hidden layer {layer + 1}"
            right.semilogy(epochs, model.grad_norms_[:, layer], label=name)
        right.set_xlabel("epoch")
        right.set_ylabel("gradient norm (mean per minibatch)")
        right.set_title("Size of the weight gradients, per layer")
        right.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
