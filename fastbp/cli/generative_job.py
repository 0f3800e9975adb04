"""``fastbp train --model autoencoder|vae|gan``: a generative model on the digits (or your data).

The defaults need no arguments: 80% of the 1797 digit images (8 x 8 pixels scaled to [0, 1]) train
the model, printing one line per epoch, and the other 20% test it:

- autoencoder: hourglass 64-``--hidden``-``--components``-``--hidden``-64 (cross-entropy for data in
  [0, 1]); prints the test reconstruction error ||d(e(x)) - x||^2 per image next to PCA's with as
  many components.  ``--noise``/``--sparsity`` make it denoising/sparse.
- vae: the same shape with a Gaussian latent; prints the test ELBO per image.
- gan: generator z -> ``--hidden`` -> 64 and discriminator 64 -> ``--hidden`` -> 1; prints both
  players' final losses and how far samples lie from their nearest training image, next to the
  test images' distance.

Like the MLP job it trains with the compiled kernels and again with NumPy's (``--backend``), and
prints the times.  ``--plot FILE.png`` draws test images with their reconstructions (autoencoder,
VAE) or generated samples (VAE, GAN) (matplotlib).  ``--data FILE`` (CSV or NPY): every column is
a feature.  ``--save`` writes the first model.
"""
import sys
import time

import numpy as np

from fastbp.cli._jobs import (choose_backends, fit_noting_convergence, load_table, parse_sizes,
                    print_fit_paths, print_speedup, pyplot, require_matplotlib, save_model,
                    split_rows, warm_up)

__all__ = ["add_generative_arguments", "run_generative", "MODELS"]

MODELS = ("autoencoder", "vae", "gan")
DEFAULT_COMPONENTS = {"autoencoder": 16, "vae": 8, "gan": 8}


def add_generative_arguments(parser):
    """The options of the generative models, beside ``fastbp train``'s own."""
    group = parser.add_argument_group("generative models (--model autoencoder, vae or gan)")
    group.add_argument("--components", type=int, default=None, metavar="K",
                       help="code / latent size (default: 16 autoencoder, 8 vae and gan)")
    group.add_argument("--loss", choices=("cross_entropy", "squared_error"), default=None,
                       help="reconstruction loss (default cross_entropy for data in [0, 1])")
    group.add_argument("--noise", choices=("gaussian", "mask"), default=None,
                       help="denoising autoencoder: corrupt the inputs with this noise")
    group.add_argument("--noise-level", type=float, default=0.1,
                       help="noise std (gaussian) or masked fraction (mask); default 0.1")
    group.add_argument("--sparsity", choices=("l1", "kl"), default=None,
                       help="sparse autoencoder: penalise the code's activity")
    group.add_argument("--sparsity-weight", type=float, default=1e-3, help="default 1e-3")


def _table(path):
    X, last = load_table(path)
    return np.column_stack([X, last])  # every column is a feature here


def _model(name, args, X, verbose):
    from fastbp.models.autoencoder import Autoencoder
    from fastbp.models.gan import GAN
    from fastbp.models.vae import VAE

    hidden = parse_sizes(getattr(args, "hidden", "100"))
    k = DEFAULT_COMPONENTS[name] if args.components is None else args.components
    common = dict(activation=args.activation, solver=args.solver, learning_rate=args.learning_rate,
                  max_iter=args.epochs, alpha=args.alpha, dtype=args.dtype, n_threads=args.threads,
                  random_state=args.seed, verbose=verbose,
                  batch_size="auto" if args.batch_size is None else args.batch_size)
    if args.lr is not None:
        common["learning_rate_init"] = args.lr
    unit = X.min() >= 0 and X.max() <= 1
    if name == "gan":
        if args.batch_size is None:
            common["batch_size"] = 64
        return GAN(n_components=k, generator_layer_sizes=hidden, discriminator_layer_sizes=hidden,
                   output_activation="sigmoid" if unit else "identity", **common)
    loss = args.loss or ("cross_entropy" if unit else "squared_error")
    common.update(n_components=k, encoder_layer_sizes=hidden, loss=loss,
                  early_stopping=getattr(args, "early_stopping", False),
                  n_iter_no_change=getattr(args, "patience", 10),
                  validation_fraction=getattr(args, "validation_size", 0.1))
    if name == "vae":
        return VAE(**common)
    return Autoencoder(noise=args.noise, noise_level=args.noise_level, sparsity=args.sparsity,
                       sparsity_weight=args.sparsity_weight, **common)


def _report(name, model, X_train, X_test):
    """Lines about the trained model on the test rows."""
    if name == "autoencoder":
        error = np.mean(np.sum((model.reconstruct(X_test) - X_test) ** 2, axis=1))
        mean = X_train.mean(axis=0)
        _, _, Vt = np.linalg.svd(X_train - mean, full_matrices=False)
        V = Vt[:model.n_components].T
        pca = np.mean(np.sum(((X_test - mean) @ V @ V.T + mean - X_test) ** 2, axis=1))
        return f"test reconstruction error {error:.4f} per image (PCA, same k: {pca:.4f})"
    if name == "vae":
        return f"test ELBO {model.score(X_test):.4f} per image"

    def nearest(points):
        distances = ((points[:, None, :] - X_train[None]) ** 2).sum(axis=2)
        return float(np.sqrt(distances.min(axis=1)).mean())

    samples = model.sample(min(len(X_test), 500), random_state=0)
    return (f"final losses: discriminator {model.discriminator_loss_curve_[-1]:.4f}, generator "
            f"{model.generator_loss_curve_[-1]:.4f}; distance to the nearest training image: "
            f"samples {nearest(samples):.3f}, test images {nearest(X_test):.3f}")


def _plot(name, model, X_test, path):
    plt = pyplot()
    d = X_test.shape[1]
    side = int(round(np.sqrt(d)))
    if name == "gan":
        rows = [("sample", s) for s in np.split(model.sample(30, random_state=0), 3)]
    else:
        rows = [("test image", X_test[:10]), ("reconstruction", model.reconstruct(X_test[:10]))]
        if name == "vae":
            rows.append(("sample", model.sample(10, random_state=0)))
    if side * side != d:  # not images: the first two features, data against model
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.scatter(X_test[:, 0], X_test[:, 1], s=6, label="test data")
        points = (model.reconstruct(X_test) if name == "autoencoder"
                  else model.sample(len(X_test), random_state=0))
        axis.scatter(points[:, 0], points[:, 1], s=6, label="model")
        axis.legend()
    else:
        figure, axes = plt.subplots(len(rows), 10, figsize=(10, 1.1 * len(rows)), squeeze=False)
        for r, (label, images) in enumerate(rows):
            for c in range(10):
                axes[r, c].imshow(images[c].reshape(side, side), cmap="gray_r")
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
            axes[r, 0].set_ylabel(label, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_generative(model_name, args):
    """Train and test the generative model ``model_name`` as ``args`` say; the exit status."""
    from fastbp import _backend
    from fastbp.datasets import load_digits

    try:
        if model_name not in MODELS:
            raise ValueError(f"--model must be one of {MODELS}, got {model_name!r}")
        if args.plot:
            require_matplotlib()
        if args.data:
            X, source = _table(args.data), args.data
        else:
            X = load_digits()[0]
            source = "handwritten digits (1797 images of 8x8 pixels)"
        X = np.asarray(X, dtype=args.dtype)
        train, test = split_rows(len(X), args.test_size, args.seed)
        backends, note = choose_backends(args.backend)
        _model(model_name, args, X, False)._check_model_params()
    except ValueError as error:
        print(f"fastbp train: {error}", file=sys.stderr)
        return 2

    print(f"data: {source}: {len(train)} training and {len(test)} test examples, "
          f"{X.shape[1]} features")
    if note:
        print(f"note: {note}; training with NumPy only")
    results, models, first = [], [], None
    for i, backend in enumerate(backends):
        model = _model(model_name, args, X, verbose=i == 0 and not args.quiet)
        if i == 0:
            print(f"{model!r}")
            if not args.quiet:
                print(f"-- training with the {backend} backend")
        try:
            with _backend.use_backend(backend):
                warm_up(model, X[train])
                started = time.perf_counter()
                unconverged = fit_noting_convergence(model.fit, X[train])
                seconds = time.perf_counter() - started
                line = _report(model_name, model, X[train], X[test])
        except ValueError as error:
            print(f"fastbp train: {error}", file=sys.stderr)
            return 2
        if i == 0 and unconverged:
            print(f"note: training stopped at --epochs={args.epochs} before the loss converged")
        results.append((backend, seconds, model.n_iter_, line))
        models.append((backend, model))
        if first is None:
            first = model
    print()
    for backend, seconds, epochs, line in results:
        print(f"{backend:<9} {seconds:7.2f} s, {epochs} epochs: {line}")
    print_fit_paths(models)
    print_speedup([seconds for _, seconds, _, _ in results])
    if args.save:
        save_model(first, args.save)
    if args.plot:
        _plot(model_name, first, X[test], args.plot)
        print(f"{'samples' if model_name == 'gan' else 'reconstructions'} plotted to {args.plot}")
    return 0
