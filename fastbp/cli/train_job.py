"""``fastbp train``: train a network and compare the compiled backend with the NumPy one.

With no arguments it trains an ``MLPClassifier`` with scikit-learn's defaults (one hidden layer
of 100 relu units, Adam, up to 200 epochs, stopping when the training loss stops improving) on the
handwritten digits shipped with fastbp, holding out 20% of the images as a test set and 10% of the
rest as a validation set; it prints one line per epoch (loss, validation score, time), then the
test accuracy and the training time with the compiled kernels and, for comparison, again with the
NumPy kernels (same seed: the two models agree up to rounding).  ``--early-stopping`` stops on the
validation score instead (and keeps the best weights).

Your own data: ``--data file.csv`` or ``--data file.npy``.  Each row is one example; the LAST
column is the label (class labels for classification, a number for ``--task regress``) and the
other columns are the features.  A CSV file is comma-separated numbers; a first line that is not
numeric is taken as a header and skipped.  A .npy file holds one 2-D numeric array.
"""
import sys
import time

import numpy as np

from fastbp.cli._jobs import (choose_backends, fit_noting_convergence, load_table, parse_sizes,
                    print_fit_paths, print_speedup, pyplot, require_matplotlib, save_model,
                    split_rows, warm_up)

# --lr when not given, per solver of fastbp.training.SOLVERS (tests/test_train_job.py checks
# that every solver has one): a step length that trains the digits network well
DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2, "gd": 1.0, "rmsprop": 1e-3}

__all__ = ["add_arguments", "run", "load_table"]


def add_arguments(parser):
    parser.add_argument("--data", metavar="FILE",
                        help="CSV or NPY file, one example per row, the last column the label "
                             "(default: the digits shipped with fastbp)")
    parser.add_argument("--task", choices=("classify", "regress"), default="classify",
                        help="classification (MLPClassifier, default) or regression (MLPRegressor)")
    parser.add_argument("--model", choices=("mlp", "autoencoder", "vae", "gan"), default="mlp",
                        help="mlp (default; --task picks classifier or regressor) or a generative "
                             "model: autoencoder, vae, gan")
    from fastbp.cli.generative_job import add_generative_arguments
    add_generative_arguments(parser)
    parser.add_argument("--hidden", default="100", metavar="SIZES",
                        help="hidden layer sizes, comma-separated, e.g. 256,128 (default 100)")
    parser.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    parser.add_argument("--solver", default="adam", choices=sorted(DEFAULT_LR), help="default adam")
    parser.add_argument("--learning-rate", default="constant",
                        choices=("constant", "invscaling", "adaptive", "backtracking"),
                        help="learning-rate schedule (backtracking needs --solver gd)")
    parser.add_argument("--lr", type=float, default=None, metavar="RATE",
                        help="initial learning rate (default 0.001; 0.01 for sgd, 1.0 for gd)")
    parser.add_argument("--epochs", type=int, default=200, help="maximum number of epochs (default 200)")
    parser.add_argument("--batch-size", type=int, default=None, help="minibatch rows (default min(200, n))")
    parser.add_argument("--alpha", type=float, default=1e-4, help="L2 penalty (default 1e-4)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate on hidden layers")
    parser.add_argument("--early-stopping", action="store_true",
                        help="stop when the validation score stops improving; keep the best weights")
    parser.add_argument("--patience", type=int, default=10,
                        help="stop after this many epochs without improvement (default 10)")
    parser.add_argument("--test-size", type=float, default=0.2, help="fraction held out for the test")
    parser.add_argument("--validation-size", type=float, default=0.1,
                        help="fraction of the training rows held out for the validation score")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for the matrix products (default 1: digits-sized products run "
                             "fastest on one; 0 = the libraries' own default)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (split, weights, shuffling)")
    parser.add_argument("--backend", choices=("both", "compiled", "numpy"), default="both",
                        help="train with both backends (default) or one")
    parser.add_argument("--save", metavar="MODEL.npz", help="save the (first) trained model")
    parser.add_argument("--plot", metavar="PLOT.png",
                        help="plot loss, validation score and per-layer gradient norms (matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def _model(args, backend):
    from fastbp.models.mlp import MLPClassifier, MLPRegressor

    cls = MLPRegressor if args.task == "regress" else MLPClassifier
    lr = args.lr
    if lr is None:
        lr = DEFAULT_LR[args.solver]
    return cls(hidden_layer_sizes=parse_sizes(args.hidden), activation=args.activation,
               solver=args.solver, learning_rate=args.learning_rate, learning_rate_init=lr,
               max_iter=args.epochs, batch_size="auto" if args.batch_size is None else args.batch_size,
               alpha=args.alpha, dropout=args.dropout, early_stopping=args.early_stopping,
               n_iter_no_change=args.patience,
               dtype=args.dtype, n_threads=args.threads or None, random_state=args.seed,
               verbose=not args.quiet and backend == "first")


def _plot(model, path):
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(model.loss_curve_) + 1)
    left.plot(epochs, model.loss_curve_, label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    if model.validation_scores_:
        twin = left.twinx()
        twin.plot(epochs, model.validation_scores_, color="tab:orange", label="validation score")
        twin.set_ylabel("validation score")
        twin.legend(loc="center right")
    left.legend(loc="upper right")
    left.set_title("Loss curve")
    for layer in range(model.grad_norms_.shape[1]):
        name = f"W{layer + 1}" if layer < model.grad_norms_.shape[1] - 1 else "V (output)"
        right.semilogy(epochs, model.grad_norms_[:, layer], label=name)
    right.set_xlabel("epoch")
    right.set_ylabel("mean ||dL/dW||_F per minibatch")
    right.set_title("Gradient norm per layer")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args):
    if args.model != "mlp":
        from fastbp.cli.generative_job import run_generative
        return run_generative(args.model, args)
    from fastbp import _backend
    from fastbp.datasets import load_digits

    try:
        if args.plot:
            require_matplotlib()
        hidden = parse_sizes(args.hidden)
        if args.data:
            X, y = load_table(args.data)
            source = args.data
        else:
            X, y = load_digits()
            source = "handwritten digits (1797 images of 8x8 pixels, 10 classes)"
        if args.task == "classify" and y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        train, test = split_rows(len(X), args.test_size, args.seed)
        fit_rows, validation = split_rows(len(train), args.validation_size, args.seed + 1)
        fit_rows, validation = train[fit_rows], train[validation]
        backends, note = choose_backends(args.backend)
    except ValueError as error:
        print(f"fastbp train: {error}", file=sys.stderr)
        return 2

    n_classes = len(np.unique(y)) if args.task == "classify" else 1
    n_outputs = 1 if n_classes == 2 else n_classes
    architecture = "-".join(str(size) for size in (X.shape[1], *hidden, n_outputs))
    print(f"data: {source}: {len(fit_rows)} training, {len(validation)} validation and {len(test)} "
          f"test examples, {X.shape[1]} features")
    print(f"network {architecture}, {args.activation}, solver {args.solver}, up to {args.epochs} epochs, "
          f"{args.dtype}")
    if note:
        print(f"note: {note}; training with NumPy only")
    results, models = [], []
    first_model = None
    for i, name in enumerate(backends):
        model = _model(args, "first" if i == 0 else "other")
        if i == 0 and not args.quiet:
            print(f"-- training with the {name} backend")
        try:
            with _backend.use_backend(name):
                warm_up(model, X[fit_rows], y[fit_rows])
                started = time.perf_counter()
                unconverged = fit_noting_convergence(
                    model.fit, X[fit_rows], y[fit_rows], validation_data=(X[validation], y[validation]))
                seconds = time.perf_counter() - started
                score = model.score(X[test], y[test])
        except ValueError as error:
            print(f"fastbp train: {error}", file=sys.stderr)
            return 2
        if i == 0 and unconverged:
            print(f"note: training stopped at --epochs={args.epochs} before the loss converged")
        results.append((name, score, seconds, model.n_iter_))
        models.append((name, model))
        if first_model is None:
            first_model = model

    metric = "test R^2" if args.task == "regress" else "test accuracy"
    print()
    print(f"{'backend':<10}{metric:>15}{'training time':>16}{'epochs':>8}{'s/epoch':>10}")
    for name, score, seconds, epochs in results:
        print(f"{name:<10}{score:>15.4f}{seconds:>14.2f} s{epochs:>8}{seconds / epochs:>10.4f}")
    print_fit_paths(models)
    print_speedup([seconds for _, _, seconds, _ in results])
    if args.save:
        save_model(first_model, args.save)
    if args.plot:
        _plot(first_model, args.plot)
        print(f"loss curve and gradient norms plotted to {args.plot}")
    return 0
