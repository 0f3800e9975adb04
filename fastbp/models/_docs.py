"""The numpydoc sections of the estimators' docstrings.

Every parameter and fitted attribute is described once, here; :func:`numpydoc` appends to a class
docstring the entries of its ``__init__`` arguments (their defaults read from the signature, so a
default is never written twice) and of the fitted attributes it names, so that
``help(fastbp.MLPClassifier)`` lists them and Sphinx's numpydoc renders them.

The methods' ``Parameters``, ``Returns`` and ``Raises`` entries that several methods share (the
rows X, ``Before fit``, X with NaN, ...) are written once too, in :data:`ARGUMENTS`,
:data:`RETURNS` and :data:`RAISES`; :func:`sections` appends a method's sections to its docstring
from their keys and its own entries, e.g. ``@sections(["X"], "codes", ["not fitted", "bad X"])``.
"""
import inspect
import textwrap

from fastbp.training import SOLVERS

__all__ = ["numpydoc", "sections", "PARAMETERS", "ATTRIBUTES", "MLP_ATTRIBUTES",
           "ARGUMENTS", "RETURNS", "RAISES"]

# name -> (type, description); the default comes from the class's signature
PARAMETERS = {
    # the networks
    "hidden_layer_sizes": ("tuple of int", "Widths of the hidden layers; () for none."),
    "n_components": ("int", "Size of the code: the bottleneck h = e(x) (Autoencoder), the latent "
                     "z (VAE), the generator's noise z ~ N(0, I) (GAN)."),
    "encoder_layer_sizes": ("tuple of int", "Widths of the encoder's hidden layers, from the "
                            "input side."),
    "decoder_layer_sizes": ("tuple of int or None", "Widths of the decoder's hidden layers, from "
                            "the code side; None mirrors the encoder (an hourglass)."),
    "generator_layer_sizes": ("tuple of int", "Widths of the generator's hidden layers."),
    "discriminator_layer_sizes": ("tuple of int", "Widths of the discriminator's hidden layers."),
    "activation": ("str", "Activation f of the hidden layers: any of "
                   "``fastbp.kernels.ACTIVATIONS`` ('identity', 'sigmoid' = 'logistic', 'tanh', "
                   "'relu', 'leaky_relu', 'softplus', 'elu', 'gelu', 'silu', 'softmax')."),
    "activation_alpha": ("float or None", "The parameter of leaky_relu (its slope, 0.01 when "
                         "None) or elu (its scale, 1.0 when None)."),
    "code_activation": ("str or None", "Activation of the code layer; None: identity (a linear "
                        "code), or sigmoid with ``sparsity='kl'``."),
    "discriminator_activation": ("str", "Activation of the discriminator's hidden layers."),
    "output_activation": ("str", "Activation of the generator's output layer (e.g. 'sigmoid' "
                          "for data in [0, 1])."),
    "dropout": ("float in [0, 1)", "Inverted-dropout rate after every hidden layer in training."),
    # the objective
    "loss": ("{'squared_error', 'cross_entropy'}", "Reconstruction loss: ||r - x||^2 / 2 per "
             "row, or the sigmoid cross-entropy of the decoder's logits (X must lie in [0, 1])."),
    "noise": ("{None, 'gaussian', 'mask'}", "Denoising: train on x + eps, eps ~ N(0, "
              "noise_level^2 I), or on x with each input zeroed with probability noise_level; "
              "fresh noise every epoch, clean targets."),
    "noise_level": ("float >= 0", "Standard deviation (gaussian) or masked fraction (mask)."),
    "sparsity": ("{None, 'l1', 'kl'}", "Sparse code: sparsity_weight * mean_i ||h_i||_1, or "
                 "sparsity_weight * sum_j KL(rho || rho_hat_j) with rho = sparsity_target."),
    "sparsity_weight": ("float >= 0", "Weight of the sparsity penalty."),
    "sparsity_target": ("float in (0, 1)", "The target mean activation rho of ``sparsity='kl'``."),
    "decoder_std": ("float > 0 or 'learned'", "Standard deviation of the Gaussian p(x | z) "
                    "(squared_error): the same number for every feature, or 'learned': one per "
                    "feature at its maximum-likelihood value, the decoder's mean squared "
                    "residual (each minibatch's in training; ``decoder_std_`` after fit: the last "
                    "epoch's).  "
                    "'learned' is the default because no fixed number suits every data scale: "
                    "with 1.0 (and N(0, I)), samples of a 2-D Gaussian embedded in 8-D had "
                    "0.66-0.86 of the data's variance, with 'learned' (and the learned Gaussian "
                    "prior) 0.96-0.98 (the ``fastbp.models.vae`` module docstring has the "
                    "table)."),
    "prior": ("{'fixed', 'gaussian', 'mixture'}", "The prior p(z): 'fixed' is N(0, I) (or, with "
              "``prior_means``, that fixed mixture); 'gaussian' learns N(m, S) with a full "
              "covariance S = L L^T; 'mixture' learns the weights, means and diagonal variances "
              "of ``n_prior_components`` Gaussians.  Learned priors train with the networks "
              "(the same optimizer) and are ``prior_weights_``, ``prior_means_``, "
              "``prior_covariances_``."),
    "n_prior_components": ("int >= 1", "The number C of Gaussians of ``prior='mixture'`` (unused "
                           "otherwise); components the codes do not need keep small weights."),
    "prior_means": ("array-like of shape (C, n_components) or None", "With ``prior='fixed'``: "
                    "None for N(0, I), else the equal-weight mixture of N(m_c, prior_std^2 I) "
                    "(nothing learned)."),
    "prior_std": ("float > 0", "Standard deviation of every component of the fixed mixture "
                  "given by ``prior_means``."),
    "generator_loss": ("{'non_saturating', 'minimax'}", "G minimises -log D(G(z)) (strong "
                       "gradients early) or log(1 - D(G(z))) (the game as written)."),
    "n_discriminator_steps": ("int >= 1", "Discriminator steps between generator turns."),
    "n_generator_steps": ("int >= 1", "Generator steps per turn."),
    "discriminator_learning_rate": ("float > 0 or None", "D's learning rate; None: G's."),
    "minibatch_std": ("bool", "Give D the minibatch-standard-deviation feature (Karras et al. "
                      "2018, 'Progressive Growing of GANs', section 3): beside its last hidden "
                      "layer, the mean over its units of their standard deviation over the batch "
                      "(real and generated rows apart), so that D sees a generator whose samples "
                      "are too alike (mode collapse).  After training D uses a constant instead, "
                      "the running average of that feature over the real batches (as batch "
                      "normalisation does), so that ``decision_function`` judges each row alone."),
    "generator_average": ("float in [0, 1)", "Sample from an exponential moving average of G's "
                          "weights (``average_generator_``; Karras et al. 2018, section A.1; "
                          "Yazici et al. 2019, 'The Unusual Effectiveness of Averaging in GAN "
                          "Training'), decay min(generator_average, (1 + t) / (10 + t)) after "
                          "G's t-th step; 0: sample from G itself."),
    "alpha": ("float >= 0", "L2 penalty alpha / (2 batch_size) * sum_l ||W^l||_F^2 per minibatch "
              "(biases not penalised)."),
    # the optimisation
    "solver": ("{" + ", ".join(map(repr, SOLVERS)) + "}", "'sgd' (minibatch, with ``momentum`` "
               "and ``nesterovs_momentum``), 'adam' (``beta_1``, ``beta_2``, ``epsilon``), "
               "'rmsprop' (``torch.optim.RMSprop`` with ``beta_2`` as its alpha, ``epsilon`` as "
               "eps, ``momentum``; not centered), 'gd' (full-batch gradient descent) or 'lbfgs' "
               "(SciPy's L-BFGS-B on the full-batch objective, as scikit-learn's: ``max_iter`` "
               "iterations, ``max_fun`` evaluations, converged when every gradient entry is "
               "within ``tol``; random draws such as the VAE's noise or the denoising "
               "corruption are fixed for the whole run; no ``partial_fit``, dropout or "
               "data-parallel training; not for the GAN, a two-player game with no single "
               "objective).  The schedules, ``batch_size``, ``shuffle``, ``n_iter_no_change`` and "
               "``early_stopping`` are ignored by 'lbfgs', as by scikit-learn."),
    "max_fun": ("int >= 1", "'lbfgs' only: the most evaluations of the objective (each one "
                "forward and backward pass over all rows)."),
    "learning_rate": ("{'constant', 'invscaling', 'adaptive', 'backtracking'}",
                      "Step-length schedule (``fastbp.training``); 'backtracking' is an Armijo "
                      "line search, for solver 'gd'."),
    "learning_rate_init": ("float > 0", "The initial step length."),
    "power_t": ("float >= 0", "Exponent of 'invscaling': learning_rate_init / (t + 1)^power_t."),
    "batch_size": ("int or 'auto'", "Rows per minibatch; 'auto' = min(200, n_samples) (the GAN: "
                   "min(64, n_samples))."),
    "max_iter": ("int >= 1", "Epochs at most (passes over the data); for 'lbfgs', "
                 "iterations."),
    "shuffle": ("bool", "Shuffle the rows every epoch."),
    "random_state": ("int, RandomState instance, numpy Generator or None", "Initial weights, "
                     "validation split, shuffling, dropout and noise.  As scikit-learn documents: "
                     "an int gives the same fit on every call; a RandomState (or Generator) is "
                     "drawn from, so successive fits differ; None draws from NumPy's global "
                     "RandomState (``np.random.seed``)."),
    "tol": ("float >= 0", "An epoch improves when the loss falls (or the validation score rises) "
            "by more than tol."),
    "n_iter_no_change": ("int >= 1", "Epochs in a row without improvement before stopping; "
                         "``ConvergenceWarning`` when ``max_iter`` comes first."),
    "verbose": ("bool", "Print the training path and one progress line per epoch."),
    "warm_start": ("bool", "``fit`` continues from the current weights."),
    "momentum": ("float in [0, 1)", "Momentum of 'sgd' (and 'rmsprop')."),
    "nesterovs_momentum": ("bool", "Nesterov's momentum for 'sgd'."),
    "early_stopping": ("bool", "Hold out ``validation_fraction`` of the rows (stratified for "
                       "class labels; or use ``fit``'s ``validation_data``), stop on its score "
                       "and restore the best weights.  Ignored by solver='lbfgs', as by "
                       "scikit-learn (all rows train; ``validation_data`` is only scored)."),
    "validation_fraction": ("float in (0, 1)", "The held-out fraction for ``early_stopping``."),
    "beta_1": ("float in [0, 1)", "Adam's decay of the first-moment estimate."),
    "beta_2": ("float in [0, 1)", "Adam's decay of the second-moment estimate (RMSprop's alpha)."),
    "epsilon": ("float > 0", "Adam's and RMSprop's denominator offset."),
    "dtype": ("{'float32', 'float64'}", "Precision of the weights, activations and training "
              "(both train on the compiled engine; float32 is about twice as fast)."),
    "n_threads": ("int >= 1 or None", "Cap on BLAS threads (and the engine's) during fit and "
                  "predict; None leaves the libraries' defaults."),
    "checkpoint_segments": ("None, 'sqrt' or int >= 1", "Memory for time in training (\"CS771 "
                            "Deep Learning III\", slide 19: storing every layer's values for "
                            "backprop \"saves time but also uses up a lot of memory\"): None "
                            "stores them all; k keeps only the inputs of k segments of layers "
                            "and recomputes each segment in the backward pass (Chen et al. 2016, "
                            "\"Training Deep Nets with Sublinear Memory Cost\"; PyTorch's "
                            "``checkpoint_sequential`` segments), with the same gradients bit "
                            "for bit (dropout masks kept, not drawn again); 'sqrt': "
                            "round(sqrt(L)) segments for L Dense layers.  Trains layer by layer "
                            "(the compiled engine stores every layer: ``fit_path_`` says so); "
                            "prediction is unchanged.  See ``fastbp.nn.Sequential``."),
}

# name -> (type, description)
ATTRIBUTES = {
    "classes_": ("ndarray of shape (n_classes,)", "The sorted class labels (``arange(k)`` for "
                 "multilabel targets)."),
    "coefs_": ("list of ndarray", "W^l of every Dense layer (n_in x n_out, ``dtype``): the "
               "network's own arrays."),
    "intercepts_": ("list of ndarray", "b^l of every Dense layer (n_out,)."),
    "n_features_in_": ("int", "Number of features seen in ``fit``."),
    "feature_names_in_": ("ndarray of str", "Column names of a DataFrame X seen in ``fit`` "
                          "(only then); later calls must pass the same columns in that order."),
    "n_outputs_": ("int", "Width of the network's output."),
    "n_layers_": ("int", "Number of layers, input and output included."),
    "out_activation_": ("str", "The output g applied by the loss to the logits."),
    "loss_": ("str", "The loss trained (a ``fastbp.kernels.LOSSES`` name)."),
    "loss_curve_": ("list of float", "Mean objective per epoch ('lbfgs': per iteration)."),
    "validation_scores_": ("list of float or None", "Validation score per epoch (with "
                           "``early_stopping`` or ``validation_data``)."),
    "best_validation_score_": ("float or None", "The best of ``validation_scores_``."),
    "best_loss_": ("float", "The lowest of ``loss_curve_``."),
    "n_iter_": ("int", "Epochs run ('lbfgs': iterations)."),
    "t_": ("int", "Training rows seen ('lbfgs': n rows per evaluation of the objective)."),
    "grad_norms_": ("ndarray of shape (n_epochs, n_dense_layers)", "Mean ||dW||_F of every "
                    "Dense layer in every epoch: vanishing gradients show in its first column "
                    "(``fastbp.GradientWarning``)."),
    "learning_rates_": ("list of float", "Step length of every epoch; for 'lbfgs' the "
                        "length ||w_k - w_(k-1)|| of every iteration's step."),
    "fit_path_": ("str or None", "Which path trained the last fit: ``'engine'`` (the compiled "
                  "engine's whole epochs), ``'engine steps (<reason>)'`` (each step's passes "
                  "through the Dense layers on the engine, the other layers in Python) or "
                  "``'layerwise: <reason>'``; None for a model loaded from a file."),
    "network_": ("fastbp.nn.Sequential", "The fitted network."),
    "encoder_": ("fastbp.nn.Sequential", "The encoder e (x -> code; the VAE's: x -> [mu, "
                 "log sigma^2])."),
    "decoder_": ("fastbp.nn.Sequential", "The decoder d (code -> reconstruction logits)."),
    "prior_weights_": ("ndarray of shape (C,)", "The prior's mixture weights pi_c (float64; "
                       "C = 1 for a Gaussian prior)."),
    "prior_means_": ("ndarray of shape (C, n_components)", "The prior's component means."),
    "prior_covariances_": ("ndarray of shape (C, n_components, n_components)", "The prior's "
                           "component covariances (diagonal for a mixture)."),
    "decoder_std_": ("ndarray of shape (n_features,) or None", "The standard deviation of "
                     "p(x | z) per feature (``decoder_std``, or its learned value: the root "
                     "mean squared residual, weighted by ``sample_weight``, of the rows of the "
                     "epoch whose weights the fit ends with, at their training draws and steps; "
                     "see the ``fastbp.models.vae`` module docstring); "
                     "None for the cross-entropy loss."),
    "generator_": ("fastbp.nn.Sequential", "G: noise z -> sample, as trained (``sample`` uses "
                   "``average_generator_`` when there is one)."),
    "discriminator_": ("fastbp.nn.Sequential", "D: point x -> logit of D(x)."),
    "discriminator_coefs_": ("list of ndarray", "D's weight matrices."),
    "discriminator_intercepts_": ("list of ndarray", "D's biases."),
    "generator_loss_curve_": ("list of float", "G's mean objective per epoch (= ``loss_curve_``)."),
    "discriminator_loss_curve_": ("list of float", "D's mean -L per epoch."),
    "average_generator_": ("fastbp.nn.Sequential or None", "The average of G's weights that "
                           "``sample`` uses (``generator_average``); None without."),
}

MLP_ATTRIBUTES = ("coefs_", "intercepts_", "n_features_in_", "feature_names_in_", "n_outputs_",
                  "n_layers_", "out_activation_", "loss_", "loss_curve_", "validation_scores_",
                  "best_validation_score_", "best_loss_", "n_iter_", "t_", "grad_norms_",
                  "learning_rates_", "fit_path_", "network_")


# The entries the methods share.  A method's argument: key -> (name, type, description); its
# default comes from the method's signature
ARGUMENTS = {
    "X": ("X", "array-like or DataFrame of shape (n_samples, n_features)", "Rows with the columns "
          "of ``fit`` (their number, or a DataFrame's names and order)."),
    "training X": ("X", "array-like or DataFrame of shape (n_samples, n_features)", "Training "
                   "rows (converted to ``dtype``); a DataFrame's columns become "
                   "``feature_names_in_``."),
    "targets": ("y", "array-like of shape (n_samples,) or (n_samples, n_outputs)", "Targets "
                "(see the class docstring)."),
    "no y": ("y", "None", "Ignored (scikit-learn's convention for models of X alone)."),
    "sample_weight as fit": ("sample_weight", "array-like of shape (n_samples,)",
                             "As for ``fit``."),
    "n_samples": ("n_samples", "int >= 0", "How many points to draw."),
    "callbacks": ("callbacks", "list of callables", "Each is called after every epoch as "
                  "``callback(state)`` with the :class:`fastbp.training.TrainState` (``n_iter``, "
                  "``loss_curve``, ``validation_scores``, ``grad_norms``, ``learning_rates``, "
                  "...); a true return value stops training after that epoch (not a convergence: "
                  "no warning is silenced by it)."),
    "random_state of z": ("random_state", "int, RandomState instance, numpy Generator or None",
                          "The draws of z; None: the model's own generator (successive calls "
                          "differ)."),
}

# A return value: key -> (name or None, type, description)
RETURNS = {
    "self": ("self", "object", "The estimator, fitted."),
    "codes": (None, "ndarray of shape (n_samples, n_components)", "Of the model's ``dtype`` (a "
              "DataFrame with columns ``get_feature_names_out()`` under "
              "``set_output(transform=\"pandas\")``)."),
    "row scores": (None, "ndarray of float64, shape (n_samples,)", "One number per row of X."),
}

# An exception: key -> (class name, when)
RAISES = {
    "not fitted": ("NotFittedError", "Before ``fit``."),
    "bad X": ("ValueError", "X with NaN or infinity, or other columns than in ``fit`` (their "
              "number, or a DataFrame's names and order)."),
    "bad fit": ("ValueError", "Bad parameters or data (NaN, infinity, wrong shapes, other column "
                "names than in the last fit), and training that produces non-finite values; the "
                "model is then left as it was before the call."),
    "sparse X": ("TypeError", "Sparse X, or X holding objects that are not numbers."),
    "as fit": ("ValueError", "As ``fit``."),
}


def _entry(head, text):
    """A numpydoc entry: its head line, then the text indented (wrapped, unless it has line
    breaks of its own, e.g. a list: then as it is, its common indentation removed)."""
    if not text:
        return head
    if "\n" in text:
        return head + "\n" + textwrap.indent(inspect.cleandoc(text), "    ")
    return head + "\n" + textwrap.fill(text, 96, initial_indent="    ", subsequent_indent="    ")


def _head(name, kind, default=inspect.Parameter.empty):
    """``name : kind, default=...`` (the default as the signature has it; a function by name)."""
    head = f"{name} : {kind}"
    if default is not inspect.Parameter.empty:
        head += f", default={default.__name__ if callable(default) else repr(default)}"
    return head


def _section(title, entries):
    return f"{title}\n{'-' * len(title)}\n" + "\n".join(entries)


def numpydoc(*attributes):
    """Class decorator: append numpydoc ``Parameters`` (every ``__init__`` argument, described
    in ``PARAMETERS``, with its default) and ``Attributes`` (the names given, from
    ``ATTRIBUTES``) sections to the class docstring.  A missing description is a KeyError at
    import: every parameter is documented."""
    def decorate(cls):
        signature = inspect.signature(cls.__init__).parameters
        params = [_entry(_head(name, PARAMETERS[name][0], signature[name].default),
                         PARAMETERS[name][1]) for name in signature if name != "self"]
        attrs = [_entry(_head(name, ATTRIBUTES[name][0]), ATTRIBUTES[name][1])
                 for name in attributes]
        cls.__doc__ = "\n\n".join([inspect.cleandoc(cls.__doc__ or ""),
                                   _section("Parameters", params),
                                   _section("Attributes", attrs)]) + "\n"
        return cls
    return decorate


def sections(parameters=(), returns=None, raises=()):
    """Method decorator: append numpydoc ``Parameters``, ``Returns`` and ``Raises`` sections to
    the method's docstring.

    Parameters
    ----------
    parameters : sequence of str or tuple
        The method's arguments in the signature's order, each a key of :data:`ARGUMENTS` or the
        method's own ``(name, type, description)``; every default is the signature's.
    returns : str or tuple or None
        A key of :data:`RETURNS` or ``(name or None, type, description)``; None: nothing
        returned.
    raises : sequence of str or tuple
        Keys of :data:`RAISES` or ``(exception, when)``.

    Raises
    ------
    KeyError
        At import, for an unknown key.
    TypeError
        At import, when the arguments given are not the signature's (every one is documented).
    """
    def own(item, table):
        return table[item] if isinstance(item, str) else item

    def decorate(function):
        signature = inspect.signature(function).parameters
        params = [own(item, ARGUMENTS) for item in parameters]
        documented = [name for name, _, _ in params]
        arguments = [name for name in signature if name != "self"]
        if documented != arguments:
            raise TypeError(f"{function.__qualname__} documents the arguments {documented}, "
                            f"not its own {arguments}")
        blocks = [inspect.cleandoc(function.__doc__ or "")]
        if params:
            blocks.append(_section("Parameters", [
                _entry(_head(name, kind, signature[name].default), text)
                for name, kind, text in params]))
        if returns is not None:
            name, kind, text = own(returns, RETURNS)
            blocks.append(_section("Returns", [_entry(kind if name is None else f"{name} : {kind}",
                                                      text)]))
        if raises:
            blocks.append(_section("Raises", [_entry(*own(item, RAISES)) for item in raises]))
        function.__doc__ = "\n\n".join(blocks) + "\n"
        return function
    return decorate
