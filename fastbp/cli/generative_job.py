"""``fastbp train --model autoencoder|vae|gan``: a generative model on the digits (or your data).

The defaults need no arguments: 80% of the 1797 digit images (8 x 8 pixels scaled to [0, 1]) train
the model, with a progress bar, and the other 20% test it:

- autoencoder: hourglass 64-``--hidden``-``--components``-``--hidden``-64 (cross-entropy for data in
  [0, 1]); prints the test reconstruction error ||d(e(x)) - x||^2 per image next to PCA's with as
  many components.  ``--noise``/``--sparsity`` make it denoising/sparse.
- vae: the same shape with a Gaussian latent; prints the test ELBO per image.
- gan: generator z -> ``--hidden`` -> 64 and discriminator 64 -> ``--hidden`` -> 1; prints both
  players' final losses and how far samples lie from their nearest training image, next to the
  test images' distance.

Like the MLP job it trains on the compiled backend, and for the bundled digits (or with
``--compare``) again on NumPy's, and prints the times.  ``--plot FILE.png`` draws the loss curves
(both players' for the GAN) beside test images with their reconstructions (autoencoder, VAE) or
generated samples (VAE, GAN); for a GAN on data that are not images, its samples against the
test data at four epochs (histograms for 1-D data, scatter plots of the first two features
otherwise).  ``--data FILE`` (CSV or NPY): every column is a feature (but
``--target``'s, if given).  ``--save`` writes the first model.
"""
import textwrap

import numpy as np

from fastbp.cli._jobs import (PLOT_STYLE, choose_backends, finish, fit_with_progress, pyplot,
                              split_rows)

__all__ = ["add_generative_arguments", "run_generative", "MODELS"]

MODELS = ("autoencoder", "vae", "gan")
DEFAULT_COMPONENTS = {"autoencoder": 16, "vae": 8, "gan": 8}


def add_generative_arguments(parser):
    """The options of the generative models, beside ``fastbp train``'s own."""
    group = parser.add_argument_group("generative models (--model autoencoder, vae or gan)")
    from fastbp.cli._jobs import non_negative_float, positive_int
    group.add_argument("--components", type=positive_int, default=None, metavar="K",
                       help="code / latent size (default: 16 autoencoder, 8 vae and gan)")
    group.add_argument("--loss", choices=("cross_entropy", "squared_error"), default=None,
                       help="reconstruction loss (default cross_entropy for data in [0, 1])")
    group.add_argument("--noise", choices=("gaussian", "mask"), default=None,
                       help="denoising autoencoder: corrupt the inputs with this noise")
    group.add_argument("--noise-level", type=non_negative_float, default=0.1,
                       help="noise std (gaussian) or masked fraction (mask); default 0.1")
    group.add_argument("--sparsity", choices=("l1", "kl"), default=None,
                       help="sparse autoencoder: penalise the code's activity")
    group.add_argument("--sparsity-weight", type=non_negative_float, default=1e-3,
                       help="default 1e-3")


def _model(name, args, X, verbose):
    from fastbp.models.autoencoder import Autoencoder
    from fastbp.models.gan import GAN
    from fastbp.models.vae import VAE

    hidden = args.hidden
    k = DEFAULT_COMPONENTS[name] if args.components is None else args.components
    common = dict(activation=args.activation, solver=args.solver, learning_rate=args.learning_rate,
                  max_iter=args.epochs, alpha=args.alpha, dtype=args.dtype, n_threads=args.threads,
                  random_state=args.seed, verbose=verbose,
                  batch_size="auto" if args.batch_size is None else args.batch_size)
    if args.lr is not None:
        common["learning_rate_init"] = args.lr
    unit = X.min() >= 0 and X.max() <= 1
    if name == "gan":
        return GAN(n_components=k, generator_layer_sizes=hidden, discriminator_layer_sizes=hidden,
                   output_activation="sigmoid" if unit else "identity", **common)
    loss = args.loss or ("cross_entropy" if unit else "squared_error")
    common.update(n_components=k, encoder_layer_sizes=hidden, loss=loss,
                  early_stopping=args.early_stopping, n_iter_no_change=args.patience,
                  validation_fraction=args.validation_size)
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
        return f"test reconstruction error {error:.4f} per example (PCA, same k: {pca:.4f})"
    if name == "vae":
        return f"test ELBO {model.score(X_test):.4f} per example"

    def nearest(points):
        distances = ((points[:, None, :] - X_train[None]) ** 2).sum(axis=2)
        return float(np.sqrt(distances.min(axis=1)).mean())

    samples = model.sample(min(len(X_test), 500), random_state=0)
    return (f"final losses: discriminator {model.discriminator_loss_curve_[-1]:.4f}, generator "
            f"{model.generator_loss_curve_[-1]:.4f}; distance to the nearest training image: "
            f"samples {nearest(samples):.3f}, test images {nearest(X_test):.3f}")


def _loss_curves(name, model):
    """{label: per-epoch values} of the curves ``model`` recorded."""
    if name == "gan":
        return {"discriminator loss": model.discriminator_loss_curve_,
                "generator loss": model.generator_loss_curve_}
    curves = {"training loss": model.loss_curve_}
    if getattr(model, "validation_scores_", None):
        curves["validation loss"] = [-score for score in model.validation_scores_]
    return curves


def _plot(name, model, X_test, title, path):
    plt = pyplot()
    d = X_test.shape[1]
    side = int(round(np.sqrt(d)))
    if name == "gan":
        rows = list(zip(("samples", "", ""), np.split(model.sample(30, random_state=0), 3)))
    else:
        rows = [("test images", X_test[:10]), ("reconstructed", model.reconstruct(X_test[:10]))]
        if name == "vae":
            rows.append(("samples", model.sample(10, random_state=0)))
    with plt.rc_context(PLOT_STYLE):
        vae = name == "vae"
        figure = plt.figure(figsize=(18 if vae else 14, 4.2), layout="constrained")
        figure.suptitle(title)
        left, right, *prior = figure.subfigures(1, 3 if vae else 2,
                                                width_ratios=(1, 1.7, 1) if vae else (1, 1.7))
        if vae:
            _plot_prior(model, X_test, prior[0].subplots())
        axis = left.subplots()
        for label, curve in _loss_curves(name, model).items():
            axis.plot(np.arange(1, len(curve) + 1), curve, label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss per example")
        axis.set_title("Loss curves")
        axis.legend()
        if not _is_image(d):  # not images: the first two features, data against model
            axis = right.subplots()
            axis.scatter(X_test[:, 0], X_test[:, 1], s=6, label="test data")
            points = (model.reconstruct(X_test) if name == "autoencoder"
                      else model.sample(len(X_test), random_state=0))
            axis.scatter(points[:, 0], points[:, 1], s=6,
                         label="reconstructed" if name == "autoencoder" else "samples")
            axis.set_xlabel("feature 1")
            axis.set_ylabel("feature 2")
            axis.set_title("Test data and the model's points")
            axis.legend()
        else:
            axes = right.subplots(len(rows), 10, squeeze=False)
            right.suptitle({"gan": "Generated samples",
                            "vae": "Test images, their reconstructions, and samples"}.get(
                                name, "Test images and their reconstructions"))
            for r, (label, images) in enumerate(rows):
                for c in range(10):
                    axes[r, c].imshow(images[c].reshape(side, side), cmap="gray_r")
                    axes[r, c].set_xticks([])
                    axes[r, c].set_yticks([])
                axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
        figure.savefig(path, dpi=100)
        plt.close(figure)


def _plot_prior(model, X_test, axis):
    """The VAE's learned prior against the codes: the test rows' posterior means mu(x) as
    points, each prior component as its 1- and 2-sigma ellipses (line width by its weight).
    Codes wider than 2: their first two coordinates, where the components' marginals are the
    Gaussians of the means' and covariances' first two entries."""
    from matplotlib.patches import Ellipse

    codes = model.transform(X_test)
    second = codes[:, 1] if codes.shape[1] > 1 else np.zeros(len(codes))
    axis.scatter(codes[:, 0], second, s=4, alpha=0.5, label="codes mu(x) of the test rows")
    for weight, mean, covariance in zip(model.prior_weights_, model.prior_means_,
                                        model.prior_covariances_):
        if len(mean) == 1:
            mean, covariance = np.append(mean, 0.0), np.diag([covariance[0, 0], 1e-12])
        values, vectors = np.linalg.eigh(covariance[:2, :2])
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for n_std in (1, 2):
            axis.add_patch(Ellipse(mean[:2], *(2 * n_std * np.sqrt(np.maximum(values[::-1], 0))),
                                   angle=angle, fill=False, color="C1",
                                   linewidth=0.5 + 3 * weight))
    axis.plot([], [], color="C1", label=f"prior p(z): {len(model.prior_weights_)} component(s)")
    axis.set_xlabel("z 1")
    axis.set_ylabel("z 2" if codes.shape[1] > 1 else "")
    axis.set_title(f"Learned prior ({model.prior}) and codes"
                   + (" (first 2 of %d dims)" % codes.shape[1] if codes.shape[1] > 2 else ""))
    axis.legend(fontsize="small")
    axis.autoscale_view()


class SampleHistory:
    """A fit callback recording the GAN's samples over epochs, for data that are not images
    (images keep :func:`_plot`'s grid of final samples): ``n_samples`` points G(z) of one fixed
    z after ``n_snapshots`` epochs spread over ``max_iter`` (the last among them).
    ``epochs``/``samples``: the epochs recorded and their samples (n_samples x n_features)."""

    def __init__(self, model, n_features, n_snapshots=4, n_samples=500):
        self.model, self.epochs, self.samples = model, [], []
        self.at = set() if _is_image(n_features) else set(
            np.unique(np.linspace(1, model.max_iter, n_snapshots).round().astype(int)).tolist())
        self.z = np.random.default_rng(0).standard_normal((n_samples, model.n_components))

    def __call__(self, state):
        if state.n_iter in self.at:
            generator = self.model._sampler()  # what sample() draws from (not fitted yet)
            self.epochs.append(state.n_iter)
            self.samples.append(generator.predict(self.z.astype(generator.dtype)))


def _is_image(d):
    """Rows of d features drawn as square images (the digits: 8 x 8)."""
    side = int(round(np.sqrt(d)))
    return side * side == d and d >= 16


def _plot_gan_history(model, X_test, history, title, path):
    """The GAN's loss curves beside its samples against the test data at the recorded epochs:
    histograms for 1-D data, scatter plots of the first two features otherwise."""
    plt = pyplot()
    n = len(history.epochs)
    with plt.rc_context(PLOT_STYLE):
        figure = plt.figure(figsize=(4.2 * (n + 1), 4.2), layout="constrained")
        figure.suptitle(title)
        axes = figure.subplots(1, n + 1, squeeze=False)[0]
        for label, curve in _loss_curves("gan", model).items():
            axes[0].plot(np.arange(1, len(curve) + 1), curve, label=label)
        axes[0].set_xlabel("epoch")
        axes[0].set_ylabel("loss per example")
        axes[0].set_title("Loss curves")
        axes[0].legend()
        one_d = X_test.shape[1] == 1
        for axis, epoch, samples in zip(axes[1:], history.epochs, history.samples):
            if one_d:
                bins = np.histogram_bin_edges(np.r_[X_test[:, 0], samples[:, 0]], bins=40)
                axis.hist(X_test[:, 0], bins=bins, density=True, alpha=0.5, label="test data")
                axis.hist(samples[:, 0], bins=bins, density=True, alpha=0.5, label="samples")
                axis.set_xlabel("x")
            else:
                axis.scatter(X_test[:, 0], X_test[:, 1], s=6, label="test data")
                axis.scatter(samples[:, 0], samples[:, 1], s=6, label="samples")
                axis.set_xlabel("feature 1")
                axis.set_ylabel("feature 2")
            axis.set_title(f"epoch {epoch}")
        axes[1].legend()
        figure.savefig(path, dpi=100)
        plt.close(figure)


def run_generative(model_name, args):
    """Train and test the generative model ``model_name`` as ``args`` say; the exit status."""
    from fastbp.cli._progress import choose_mode
    from fastbp.cli._table import features, read_table
    from fastbp.datasets import load_digits

    if args.impute and not args.data:
        raise ValueError("--impute is for your own --data")
    if args.data:
        table = read_table(args.data, args.target, has_target=False)
        X, source = features(table, args.data, args.impute), args.data
    else:
        X = load_digits()[0]
        source = "handwritten digits"
    X = np.asarray(X, dtype=args.dtype)
    if args.early_stopping is None:
        args.early_stopping = not args.data
    train, test = split_rows(len(X), args.test_size, args.seed)
    backends, note = choose_backends(args.backend, args.compare or not args.data)
    mode = choose_mode(args.quiet, args.verbose)

    print(f"data: {source}, {X.shape[0]} rows x {X.shape[1]} features")
    print(f"split: {len(train)} training, {len(test)} test rows")
    print(textwrap.fill(repr(_model(model_name, args, X, False)), 79, subsequent_indent="    "))
    if note:
        print(f"note: {note}; training with NumPy only")
    results, models, history = [], [], None
    for backend in backends:
        model = _model(model_name, args, X, verbose=mode != "none")
        fit_params = {}
        if args.plot and model_name == "gan" and history is None:  # the plotted (first) model's
            history = SampleHistory(model, X.shape[1])
            fit_params["callbacks"] = [history]
        seconds, unconverged = fit_with_progress(model, backend, mode, X[train], **fit_params)
        results.append((backend, seconds, model.n_iter_, _report(model_name, model, X[train],
                                                                 X[test]), unconverged))
        models.append((backend, model))
    print()
    for backend, seconds, epochs, _, _ in results:
        print(f"{backend:<9} {seconds:7.2f} s, {epochs} epochs")
    print(textwrap.fill(results[0][3], 79))  # the backends agree up to rounding
    first, data_name = finish(args, models, [seconds for _, seconds, _, _, _ in results],
                              results[0][4])
    if args.plot:
        summary = results[0][3].split(";")[0].split(" (")[0]
        title = f"{type(first).__name__} on {data_name}: {summary}"
        if history is not None and history.epochs:
            _plot_gan_history(first, X[test], history, title, args.plot)
        else:
            _plot(model_name, first, X[test], title, args.plot)
        print(f"loss curves and {'samples' if model_name == 'gan' else 'reconstructions'} "
              f"plotted to {args.plot}")
    return 0
