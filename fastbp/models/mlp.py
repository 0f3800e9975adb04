"""Multi-output networks trained by backprop, as scikit-learn estimators.

- :class:`MLPRegressor`: vector regression, identity output g(t) = t, squared error
  L = 1/(2n) sum_i ||y_hat_i - y_i||^2; y of shape (n,) or (n, k).
- :class:`MLPClassifier`: multiclass with softmax output and cross-entropy; binary with one
  sigmoid output; multilabel (y an n x k 0/1 indicator matrix) with k sigmoid outputs and sigmoid
  cross-entropy, predicting label j where the logit t_j > 0 (the lecture's sign(t)).

The network is the lecture's g(V^T f((W^L)^T ... f((W^1)^T x))): ``hidden_layer_sizes`` Dense
layers with ``activation`` f, then an output Dense layer (``coefs_[-1]`` is V) whose g is applied
by the loss from the logits.  Training minimises, per minibatch of ``batch_size`` rows,

    mean data loss over the batch + alpha / (2 * batch_size) * sum_l ||W^l||_F^2

(biases not penalised) with 'sgd' (momentum, Nesterov), 'adam', 'rmsprop' or 'gd' (full batch),
by the loop of :mod:`fastbp.training` (see there for the learning-rate schedules, the Armijo line search,
convergence and early stopping), or the whole full-batch objective (batch_size = n) with 'lbfgs':
SciPy's L-BFGS-B as scikit-learn runs it (``max_iter`` iterations, ``max_fun`` evaluations,
``tol`` on the largest gradient entry; ``fastbp.training.fit_lbfgs``).  As in scikit-learn,
'lbfgs' ignores ``early_stopping`` and has no ``partial_fit`` (``hasattr(model, 'partial_fit')``
is False: its AttributeError says why).

The parameters, their names and defaults follow scikit-learn's ``MLPClassifier``/``MLPRegressor``;
fastbp adds ``dropout``, ``activation_alpha``, ``dtype``, ``n_threads`` and
``checkpoint_segments`` (memory for time: see ``fastbp.nn.Sequential``).  The estimators are
scikit-learn's kind (its ``BaseEstimator`` and mixins, its input validation with
``feature_names_in_``); the parameters and fitted attributes are listed in each class's
docstring (written once, in :mod:`fastbp.models._docs`).

``model.save(path)`` writes one .npz file and ``fastbp.load(path)`` restores a model that predicts
identically (:mod:`fastbp.models.persist`); models pickle too (unpickling one pickled by another fastbp
version warns: ``fastbp.InconsistentVersionWarning``).  Bad input (NaN or infinity, a wrong
number of features, fewer than 2 samples for ``fit`` -- ``partial_fit`` takes single samples --,
one class, labels outside ``classes``, missing labels or labels mixing strings and numbers,
non-numeric or empty arrays) raises ValueError with scikit-learn's messages (TypeError for sparse
matrices) before the model changes.  Training whose loss, gradients or weights become non-finite
(too large a step, too large inputs) raises ValueError naming the epoch and the learning rate, and
any call that fails or is interrupted leaves the model as it was before the call (not fitted, or its
previous fit); a loss that rose when training stopped is reported by a ``ConvergenceWarning``, never
taken for convergence.
"""
import copy
import dataclasses
import math
import numbers
import sys
import warnings
from contextlib import nullcontext

import numpy as np
from scipy import special
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight

from fastbp._version import __version__
from fastbp._platform._blas_threads import limit_blas_threads
from fastbp.exceptions import InconsistentVersionWarning
from fastbp.training import STEP_SOLVERS, TrainConfig, TrainState, fit_network
from fastbp.models._validation import (check_classes, check_data, check_is_fitted, check_labels,
                                      check_targets, check_X, label_kind)
from fastbp.nn import Dense, Sequential, activation_name, check_checkpoint_segments, make_mlp
from fastbp.models import export
from fastbp.models.persist import register
from fastbp.models._docs import MLP_ATTRIBUTES, numpydoc, sections

__all__ = ["MLPClassifier", "MLPRegressor"]


def _make_rng(random_state):
    """The numpy Generator that draws a fit's randomness, from ``random_state`` as scikit-learn
    documents it (``sklearn.utils.check_random_state``): an int gives the same draws on every call;
    a RandomState instance, or None (NumPy's global RandomState, ``np.random.seed``), is drawn from,
    so successive calls differ.  A numpy Generator is used as it is (drawn from, as a RandomState)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        check_random_state(random_state)  # ValueError for ints NumPy cannot seed with
        return np.random.default_rng(random_state)
    return np.random.default_rng(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _chain(callbacks):
    """``fit``'s ``callbacks`` as the training loop's one callback (None for none): every
    callback runs after each epoch; training stops when any returns a true value."""
    if callbacks is None:
        return None
    callbacks = list(callbacks)
    if not all(callable(callback) for callback in callbacks):
        raise TypeError(f"callbacks must be a list of callables, got {callbacks!r}")

    def callback(state):
        return any([bool(callback(state)) for callback in callbacks])
    return callback


def _check_solver(estimator):
    """Whether ``partial_fit`` exists (scikit-learn's ``available_if``, as its MLPs decide): not
    for solver='lbfgs', which minimises the whole objective (AttributeError, so ``hasattr(model,
    'partial_fit')`` is False)."""
    if estimator.solver == "lbfgs":
        raise AttributeError("partial_fit is not available with solver='lbfgs': L-BFGS minimises "
                             "the whole objective over all the rows and has no one-epoch step "
                             "(as scikit-learn's MLPs); call fit, or use a solver that takes "
                             f"steps (one of {STEP_SOLVERS})")
    return True


partial_fit_available = available_if(_check_solver)


def user_stacklevel():
    """The ``stacklevel`` (as ``fit_network`` counts it, from its caller) that points warnings at
    the first frame outside fastbp: the user's call of fit / partial_fit."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("fastbp."):
        frame, level = frame.f_back, level + 1
    return level


class _BaseMLP(BaseEstimator):
    """What all the estimators share: parameters and their checks, fitting, the validation
    split, fitted attributes, prediction checks, summary, save/load (the parameters and
    attributes are documented on each public class, from ``fastbp.models._docs``).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, dropout=0.0, activation_alpha=None,
                 dtype="float32", n_threads=None, checkpoint_segments=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.activation_alpha = activation_alpha
        self.dtype = dtype
        self.n_threads = n_threads
        self.checkpoint_segments = checkpoint_segments

    @sections([("path", "str or os.PathLike", "Exactly the file written (no suffix is added).")],
              raises=["not fitted", ("OSError", "Writing failed; ``path`` is then as it was.")])
    def save(self, path):
        """Write the fitted model to one ``.npz`` file, atomically.

        ``fastbp.load(path)`` reads it."""
        from fastbp.models.persist import save
        save(self, path)

    def __getstate__(self):
        """Pickles record the fastbp version that made them (see ``__setstate__``)."""
        state = self.__dict__.copy()
        state["_fastbp_version"] = __version__
        return state

    def __setstate__(self, state):
        """Unpickling a model of another fastbp version warns (InconsistentVersionWarning)."""
        state = dict(state)
        version = state.pop("_fastbp_version", "unknown (not recorded)")
        if version != __version__:
            warnings.warn(InconsistentVersionWarning(type(self).__name__, version, __version__),
                          stacklevel=2)
        self.__dict__.update(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    # ------------------------------------------------------------------------------- parameters
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive ints, got {self.hidden_layer_sizes!r}")
        return [int(h) for h in sizes]

    def _dtype(self):
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        return dtype

    def _config(self):
        """Check every parameter (ValueError) and return the training settings."""
        self._hidden_sizes()
        self._dtype()
        activation_name(self.activation)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if self.n_threads is not None and (not isinstance(self.n_threads, (int, np.integer))
                                           or self.n_threads < 1):
            raise ValueError(f"n_threads must be None or an int >= 1, got {self.n_threads!r}")
        check_checkpoint_segments(self.checkpoint_segments)
        for name in ("max_iter", "n_iter_no_change", "max_fun"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int, got {value!r}")
        # every training setting is the estimator parameter of the same name (TrainConfig's
        # fields are the one list), converted to the field's type
        return TrainConfig(**{
            field.name: (field.type(getattr(self, field.name)) if field.type in (float, bool, int)
                         else getattr(self, field.name))
            for field in dataclasses.fields(TrainConfig)}).validate()

    def _threads(self):
        """Cap the BLAS threads to ``n_threads`` for the duration of a call (None: no cap)."""
        if self.n_threads is None:
            return nullcontext()
        return limit_blas_threads(self.n_threads)

    # ----------------------------------------------------------------------------------- fitting
    @sections(["training X", "targets",
               ("sample_weight", "array-like of shape (n_samples,)",
                "Weights >= 0, not all 0: each minibatch's loss is the weighted mean of the "
                "rows' losses, and the L2 term is taken over the batch's weight "
                "(``fastbp.training``); with the whole data in one batch, integer weights train "
                "as rows repeated that many times.  Weighted fits train on the compiled engine "
                "when every weight is > 0 (a weight of 0 trains layer by layer: ``fit_path_`` "
                "says so).  The early-stopping split and its score are weighted too."),
               ("validation_data", "tuple (X_val, y_val)",
                "Scored after every epoch (accuracy or R^2, in ``validation_scores_`` and the "
                "verbose lines).  Without ``early_stopping`` it only watches; with it, it replaces "
                "the random ``validation_fraction`` split."),
               "callbacks"],
              "self", ["bad fit", "sparse X"])
    def fit(self, X, y, sample_weight=None, *, validation_data=None, callbacks=None):
        """Train on (X, y) for up to ``max_iter`` epochs (continuing from the current weights when
        ``warm_start``)."""
        return self._fit(X, y, incremental=False, validation_data=validation_data,
                         sample_weight=sample_weight, callbacks=callbacks)

    def _fit(self, X, y, incremental, classes=None, validation_data=None, sample_weight=None,
             callbacks=None):
        config = self._config()
        dtype = self._dtype()
        fresh = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        callback = _chain(callbacks)
        # A failed call (bad data, non-finite training, an interrupt) leaves the estimator as it
        # was: a fresh fit replaces every fitted attribute, so they are kept by reference; training
        # in place (warm start, partial fit) changes the arrays, so they are copied -- all but the
        # networks' gradients, scratch that every step rewrites.
        if fresh:
            before = self.__dict__.copy()
        else:
            scratch = [grad for value in self.__dict__.values() if isinstance(value, Sequential)
                       for grad in value.grads()]
            before = copy.deepcopy(self.__dict__, {id(grad): grad for grad in scratch})
        try:
            X = check_data(self, X, dtype, reset=fresh, min_samples=1 if incremental else 2)
            if sample_weight is not None:
                sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                     ensure_non_negative=True)
            Y, target = self._encode_targets(y, X, dtype, fresh, incremental, classes)
            validation = None
            if validation_data is not None and not incremental:
                try:
                    X_val, y_val = validation_data
                except (TypeError, ValueError):
                    raise ValueError("validation_data must be a pair (X_val, y_val)") from None
                X_val = check_data(self, X_val, dtype, reset=False)
                Y_val = self._encode_like(y_val, X_val.shape[0], dtype, target)
                validation = self._scorer(X_val, Y_val)
            # training reports non-finite values itself (fastbp.training.check_finite): NumPy's
            # floating-point warnings on the way would only forerun that error, on one backend
            with self._threads(), np.errstate(all="ignore"):
                if fresh:
                    self._rng = _make_rng(self.random_state)
                    self._set_target(target)
                    self._network = self._build_network(X.shape[1], dtype)
                    self._state = TrainState()
                for _, network in self._summary_networks():  # every network the model trains
                    network.checkpoint_segments = self.checkpoint_segments
                if (self.early_stopping and not incremental and validation is None
                        and config.solver != "lbfgs"):  # lbfgs ignores it, as scikit-learn's
                    X, Y, sample_weight, validation = self._split_validation(X, Y, sample_weight)
                self._train(X, Y, config, validation, incremental, sample_weight=sample_weight,
                            callback=callback)
            self._publish()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        return self

    def _build_network(self, n_features, dtype):
        """A fresh network for ``n_features`` inputs (after ``_set_target``), weights from ``_rng``."""
        return make_mlp(n_features, self._hidden_sizes(), self.n_outputs_, activation=self.activation,
                        dropout=float(self.dropout), dtype=dtype, rng=self._rng,
                        activation_alpha=self.activation_alpha)

    def _train(self, X, Y, config, validation, incremental, sample_weight=None, callback=None):
        """Train ``_network`` from inputs X to targets Y by the generic loop (subclasses may not)."""
        fit_network(self._network, self.loss_, X, Y, config, self._state, rng=self._rng,
                    validation_score=validation, early_stopping=bool(self.early_stopping),
                    incremental=incremental, callback=callback, name=type(self).__name__,
                    stacklevel=user_stacklevel(), sample_weight=sample_weight)

    def _split_validation(self, X, Y, sample_weight=None):
        """Hold out ``validation_fraction`` of the rows (and their weights) for the early-stopping
        score, by scikit-learn's ``train_test_split`` (stratified by class for the classifier's
        labels)."""
        n = X.shape[0]
        arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
        try:
            parts = train_test_split(*arrays, test_size=self.validation_fraction,
                                     stratify=self._stratify(Y),
                                     random_state=int(self._rng.integers(np.iinfo(np.int32).max)))
        except ValueError as error:
            raise ValueError(f"validation_fraction={self.validation_fraction} of {n} samples: "
                             f"{error}") from None
        X_train, X_val, Y_train, Y_val = parts[:4]
        w_train, w_val = parts[4:] or (None, None)
        return (np.ascontiguousarray(X_train), np.ascontiguousarray(Y_train), w_train,
                self._scorer(X_val, Y_val, w_val))

    def _stratify(self, Y):
        """The labels the validation split keeps in proportion (None: a plain random split)."""
        return None

    def _scorer(self, X_val, Y_val, sample_weight=None):
        """The per-epoch validation score on encoded targets (accuracy, or R^2), weighted by
        ``sample_weight`` when given."""
        def score(network):
            return self._score_output(network.predict(X_val), Y_val, sample_weight)
        return score

    def _publish(self):
        """Expose the training state as scikit-learn's fitted attributes."""
        network, state = self._network, self._state
        dense = network.dense_layers
        self.coefs_ = [layer.W for layer in dense]
        self.intercepts_ = [layer.b for layer in dense]
        self.n_layers_ = len(dense) + 1
        self.loss_curve_ = list(state.loss_curve)
        self.n_iter_ = state.n_iter
        self.t_ = state.t
        self.best_loss_ = state.best_loss
        self.grad_norms_ = (np.array(state.grad_norms) if state.grad_norms
                            else np.zeros((0, len(dense))))
        self.learning_rates_ = list(state.learning_rates)
        self.fit_path_ = state.fit_path
        if state.validation_scores:
            self.validation_scores_ = list(state.validation_scores)
            self.best_validation_score_ = state.best_validation_score
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None

    # -------------------------------------------------------------------------------- prediction
    def _forward(self, X, output=None):
        """The network output (logits for the classifier) for X, validated, in a new array of
        the model's dtype; ``output``: an activation applied to it in the same pass (see
        ``fastbp.nn.Sequential.predict``)."""
        check_is_fitted(self)
        X = check_data(self, X, self.coefs_[0].dtype, reset=False)
        return self._predict(self._network, X, output)

    def _predict(self, network, X, output=None):
        """``network.predict(X, output)`` under the ``n_threads`` cap (the serving path: no cap
        is set up without ``n_threads``)."""
        if self.n_threads is None:
            return network.predict(X, output)
        with self._threads():
            return network.predict(X, output)

    @sections([("print_fn", "callable", "Called with each line, in order (e.g. ``lines.append`` to "
                "keep them).")],
              raises=["not fitted"])
    def summary(self, print_fn=print):
        """Print the fitted network (Keras' ``model.summary()``): every layer with its widths
        in -> out, activation and parameter count, the totals, and the loss."""
        check_is_fitted(self)
        for title, network in self._summary_networks():
            print_fn(f"{type(self).__name__} {title}: {network.n_inputs} inputs -> "
                     f"{network.n_outputs} outputs")
            network.summary(print_fn)
        output = getattr(self, "out_activation_", None)
        print_fn((f"output activation {output!r} (applied by the loss to the logits), "
                  if output not in (None, "identity") else "") + f"loss {self.loss_!r}")

    def _summary_networks(self):
        """(title, Sequential) of every network ``summary`` shows."""
        return [("network", self._network)]

    @property
    def network_(self):
        """The fitted :class:`fastbp.nn.Sequential` (its arrays are ``coefs_``/``intercepts_``)."""
        check_is_fitted(self)
        return self._network

    @sections([("method", "str or None", """
                The method the graph computes (None: the first listed):

                - MLPClassifier: ``'predict_proba'``, with two outputs, ``"label"`` (what
                  ``predict`` returns) and ``"probabilities"``;
                - MLPRegressor: ``'predict'`` (output ``"predict"``, 1-D for one output);
                - Autoencoder, VAE: ``'transform'`` (the code; the VAE's posterior mean),
                  ``'inverse_transform'`` (input ``"H"``: codes), ``'reconstruct'``;
                - GAN: ``'sample'`` (input ``"z"``: noise rows of ``n_components`` numbers
                  drawn from N(0, I); output G(z)), ``'decision_function'``.

                The input is ``"X"`` (n x ``n_features_in_``, the model's dtype) unless named
                above; a single output is named after the method.""")],
              (None, "onnx.ModelProto", "Run it with ``onnxruntime.InferenceSession("
               "model.SerializeToString())``, or write it with ``onnx.save(model, path)``."),
              ["not fitted", ("ValueError", "For a method the estimator does not export."),
               ("ImportError", "When the ``onnx`` package is not installed.")])
    def to_onnx(self, method=None):
        """The fitted network as an ONNX graph, to serve it without Python or fastbp.

        The graph computes in the model's dtype (float32 or float64) with one ``Gemm`` per dense
        layer and ONNX operators for the activations; ONNX Runtime's results equal the method's
        within float tolerance.  Needs the ``onnx`` package (``pip install 'fastbp[onnx]'``)."""
        return export.to_onnx(self, method)

    # ------------------------------------------------------------------------------ persistence
    def _fitted_arrays(self):
        check_is_fitted(self)
        arrays = {}
        for i, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            arrays[f"coef_{i}"] = W
            arrays[f"intercept_{i}"] = b
        for layer in self._network.layers:  # other layers' parameters (the VAE's learned prior)
            if not isinstance(layer, Dense):
                arrays.update((name, getattr(layer, name)) for name in layer.param_names)
        arrays["loss_curve_"] = np.asarray(self.loss_curve_, dtype=np.float64)
        arrays["grad_norms_"] = self.grad_norms_
        arrays["learning_rates_"] = np.asarray(self.learning_rates_, dtype=np.float64)
        if self.validation_scores_ is not None:
            arrays["validation_scores_"] = np.asarray(self.validation_scores_, dtype=np.float64)
        if hasattr(self, "feature_names_in_"):  # strings: saved as a plain array
            arrays["feature_names_in_"] = np.array(self.feature_names_in_.tolist(), dtype=str)
        return arrays

    def _fitted_meta(self):
        return {"n_features_in_": int(self.n_features_in_), "n_outputs_": int(self.n_outputs_),
                "n_iter_": int(self.n_iter_), "t_": int(self.t_), "best_loss_": float(self.best_loss_),
                "best_validation_score_": self.best_validation_score_, "target": self._target_meta()}

    def _restore(self, arrays, meta):
        """Rebuild the fitted model from ``_fitted_arrays`` and ``_fitted_meta`` (fastbp.load)."""
        self._config()
        self._rng = _make_rng(self.random_state)
        self.n_features_in_ = int(meta["n_features_in_"])
        if "feature_names_in_" in arrays:
            names = arrays["feature_names_in_"]
            if names.dtype.kind != "U" or names.shape != (self.n_features_in_,):
                raise ValueError(f"feature_names_in_ must be {self.n_features_in_} strings, got "
                                 f"{names.dtype} of shape {names.shape}")
            self.feature_names_in_ = names.astype(object)
        self._set_target(self._target_from_meta(meta["target"], arrays))
        if int(meta["n_outputs_"]) != self.n_outputs_:
            raise ValueError("inconsistent model file: n_outputs_ does not match the target")
        self._network = self._build_network(self.n_features_in_, self._dtype())
        self._restore_state(arrays, meta)
        self._publish()

    def _restore_state(self, arrays, meta):
        """Weights and training state of the freshly built network from the saved arrays;
        ValueError unless the record is one fit makes (every per-epoch list n_iter_ long)."""
        weights, dense = [], 0
        for layer in self._network.layers:  # in params() order, as _fitted_arrays names them
            if isinstance(layer, Dense):
                weights += [arrays[f"coef_{dense}"], arrays[f"intercept_{dense}"]]
                dense += 1
            else:
                weights += [arrays[name] for name in layer.param_names]
        self._network.set_weights(weights)
        state = self._state = TrainState()
        state.loss_curve = [float(v) for v in arrays["loss_curve_"]]
        state.grad_norms = list(np.asarray(arrays["grad_norms_"], dtype=np.float64))
        state.learning_rates = [float(v) for v in arrays["learning_rates_"]]
        if "validation_scores_" in arrays:
            state.validation_scores = [float(v) for v in arrays["validation_scores_"]]
        n_iter, t = meta["n_iter_"], meta["t_"]
        if type(n_iter) is not int or type(t) is not int or not 1 <= n_iter <= t:
            raise ValueError(f"n_iter_={n_iter!r} epochs over t_={t!r} rows are not counts that "
                             "fit makes")
        state.n_iter, state.t = n_iter, t
        epochs = [len(state.loss_curve), len(state.learning_rates), len(state.grad_norms)]
        if "validation_scores_" in arrays:
            epochs.append(len(state.validation_scores))
        if set(epochs) != {n_iter} or arrays["grad_norms_"].shape[1:] != (dense,):
            raise ValueError("the training record (loss_curve_, learning_rates_, grad_norms_, "
                             "validation_scores_) does not describe n_iter_ epochs of this "
                             "network")
        state.best_loss = float(meta["best_loss_"])
        best_score = meta.get("best_validation_score_")
        if best_score is not None:
            state.best_validation_score = float(best_score)
        if (math.isnan(state.best_loss) or (best_score is None) != (not state.validation_scores)
                or math.isnan(state.best_validation_score or 0.0)):
            raise ValueError("best_loss_ or best_validation_score_ is NaN, or "
                             "best_validation_score_ disagrees with validation_scores_")


@sections(returns=(None, "sklearn.neural_network.MLPClassifier or "
                   "sklearn.neural_network.MLPRegressor",
                   "A fitted estimator, of this model's class name."),
          raises=["not fitted", ("ValueError", "When scikit-learn cannot represent the network: "
                                 "its MLPs have only the activations identity, logistic "
                                 "(sigmoid), tanh and relu.")])
def _to_sklearn(self):
    """The fitted network as scikit-learn's estimator of the same name (``MLPClassifier`` or
    ``MLPRegressor``), with a copy of its weights: its ``predict`` (and ``predict_proba``) equal
    this model's within float tolerance.

    The parameters scikit-learn shares are copied as they are (a ``solver`` or schedule it lacks,
    such as 'gd' or 'rmsprop', then makes its ``fit`` raise; prediction does not use them), as are
    the fitted attributes it knows."""
    return export.to_sklearn(self)


@register("MLPRegressor")
@numpydoc(*MLP_ATTRIBUTES)
class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-output regression by a deep network: identity output, squared error.

    ``fit(X, y)`` with y of shape (n,) or (n, k); ``predict`` returns the same shape (a single
    output is returned 1-D, as scikit-learn does) as float64, whatever the model's ``dtype``;
    ``score`` is the coefficient of determination R^2 averaged over the outputs
    (scikit-learn's ``RegressorMixin``).  The parameters are scikit-learn's ``MLPRegressor``'s,
    plus ``dropout``, ``activation_alpha``, ``dtype`` and ``n_threads``.
    """

    @partial_fit_available
    @sections(["training X", "targets", "sample_weight as fit"], "self", ["as fit"])
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) continuing from the current state (the first call initialises)."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _encode_targets(self, y, X, dtype, fresh, incremental, classes):
        n = X.shape[0]
        Y = check_targets(y, n, dtype)
        target = {"y_ndim": Y.ndim, "n_outputs": 1 if Y.ndim == 1 else Y.shape[1]}
        if not fresh and target["n_outputs"] != self.n_outputs_:
            raise ValueError(f"y has {target['n_outputs']} outputs, but the model was fitted with "
                             f"{self.n_outputs_}")
        return np.ascontiguousarray(Y.reshape(n, -1)), target

    def _encode_like(self, y, n, dtype, target):
        Y = check_targets(y, n, dtype).reshape(n, -1)
        if Y.shape[1] != target["n_outputs"]:
            raise ValueError(f"y has {Y.shape[1]} outputs, but the model has {target['n_outputs']}")
        return np.ascontiguousarray(Y)

    def _set_target(self, target):
        self._y_ndim = target["y_ndim"]
        self.n_outputs_ = target["n_outputs"]
        self.out_activation_ = "identity"
        self.loss_ = "squared_error"

    def _target_meta(self):
        return {"y_ndim": self._y_ndim, "n_outputs": self.n_outputs_}

    def _fitted_target(self):
        return self._target_meta()

    def _target_from_meta(self, meta, arrays):
        y_ndim, n_outputs = int(meta["y_ndim"]), int(meta["n_outputs"])
        if y_ndim not in (1, 2) or n_outputs < 1 or (y_ndim == 1 and n_outputs != 1):
            raise ValueError(f"a regression target of {y_ndim} dimension(s) with {n_outputs} "
                             "output(s) is not one fit makes")
        return {"y_ndim": y_ndim, "n_outputs": n_outputs}

    def _score_output(self, output, Y, sample_weight=None):
        """R^2 of network outputs against the targets (early-stopping score)."""
        return r2_score(Y, output, sample_weight=sample_weight)

    @sections(["X"], ("y", "ndarray of float64, shape (n_samples,) for one output, else "
                      "(n_samples, n_outputs)",
                      "float64 whatever the model's ``dtype``: scikit-learn's estimator checks "
                      "hold a regressor's predictions to float64 "
                      "(``check_regressor_multioutput``)."),
              ["not fitted", "bad X"])
    def predict(self, X):
        """Predicted targets."""
        output = self._forward(X).astype(np.float64, copy=False)
        return output.ravel() if output.shape[1] == 1 else output

    def _exports(self):
        return {"predict": export.Path(export.layer_steps(self._network), "predict",
                                       ravel=self.n_outputs_ == 1)}

    to_sklearn = _to_sklearn

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


@register("MLPClassifier")
@numpydoc("classes_", *MLP_ATTRIBUTES)
class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Classification by a deep network trained with cross-entropy.

    - multiclass (y 1-D with > 2 classes): softmax output, softmax cross-entropy;
    - binary (2 classes): one sigmoid output, sigmoid cross-entropy;
    - multilabel (y an n x k indicator matrix of 0/1, or of -1/+1: the lecture's sign
      convention): k sigmoid outputs, sigmoid cross-entropy; ``predict`` gives the labels whose
      logit is > 0 (probability > 1/2) as an int matrix in the targets' convention (1 present,
      0 or -1 absent).

    ``classes_`` are the sorted class labels (``arange(k)`` for multilabel); ``predict_proba``
    returns probabilities of the model's ``dtype`` (n x n_classes; n x k for multilabel);
    ``score`` is the accuracy (subset accuracy for multilabel).  Labels may be numbers or
    strings.  The parameters are scikit-learn's ``MLPClassifier``'s, plus ``dropout``,
    ``activation_alpha``, ``dtype`` and ``n_threads``.
    """

    @partial_fit_available
    @sections(["training X",
               ("y", "array-like of shape (n_samples,) or (n_samples, n_labels)",
                "Class labels, or a multilabel indicator matrix (0/1 or -1/+1)."),
               "sample_weight as fit",
               ("classes", "array-like", "All the labels that will ever appear: required on the "
                "first call for 1-D labels; later calls must only use labels from it.")],
              "self", [("ValueError", "As ``fit``, and for a first call without ``classes`` or a "
                        "label outside them.")])
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y) continuing from the current state."""
        return self._fit(X, y, incremental=True, classes=classes, sample_weight=sample_weight)

    def _encode_targets(self, y, X, dtype, fresh, incremental, classes):
        n = X.shape[0]
        y = check_targets(y, n)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please change "
                          "the shape of y to (n_samples, ), for example using ravel().",
                          DataConversionWarning, stacklevel=4)
            y = y.ravel()
        kind = label_kind(y)
        first_partial = incremental and not hasattr(self, "classes_")
        if not fresh and kind == "labels" and self._kind != "labels":
            raise ValueError("y holds class labels, but the model was fitted on a multilabel "
                             "indicator matrix")
        if kind == "multilabel":
            k = y.shape[1]
            negative = -1 if (y < 0).any() else 0  # the sign convention {-1, +1}, else {0, 1}
            if not fresh:
                if self._kind != "multilabel" or self.n_outputs_ != k:
                    raise ValueError(f"y is a multilabel indicator matrix with {k} labels, unlike "
                                     "the targets the model was fitted with")
                negative = self._negative
            target = {"kind": "multilabel", "classes": np.arange(k), "negative": negative}
            return self._encode_like(y, n, dtype, target), target
        if incremental:
            if first_partial and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            classes = None if classes is None else check_classes(classes)
            if classes is not None and hasattr(self, "classes_") and not first_partial:
                if not np.array_equal(classes, self.classes_):
                    raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                     f"partial_fit, was: {self.classes_!r}")
            all_classes = classes if first_partial else self.classes_
        elif fresh:
            all_classes = np.unique(y)
        else:  # warm start
            all_classes = np.unique(y)
            if not np.array_equal(all_classes, self.classes_):
                raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                 f"previous call to fit. Previously got {self.classes_}, `y` has "
                                 f"{all_classes}")
            all_classes = self.classes_
        if len(all_classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                             f"but the data contains only one class: {all_classes[0]!r}")
        target = {"kind": "labels", "classes": all_classes}
        return self._encode_like(y, n, dtype, target), target

    def _encode_like(self, y, n, dtype, target):
        """y encoded for the network of a model with this ``target`` (no fitting of classes)."""
        y = check_targets(y, n)
        if target["kind"] == "multilabel":
            k = len(target["classes"])
            if label_kind(y) != "multilabel" or y.shape[1] != k:
                raise ValueError(f"y must be a 0/1 (or -1/+1) indicator matrix with {k} columns, "
                                 f"got shape {y.shape}")
            return np.ascontiguousarray(y > 0, dtype=dtype)  # the network's targets are 0/1
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if label_kind(y) != "labels":
            raise ValueError(f"y must hold class labels, got shape {y.shape}")
        classes = target["classes"]
        present = np.unique(y)
        unknown = np.setdiff1d(present, classes)
        if unknown.size:
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {classes}. "
                             f"'y' has {present}.")
        index = np.searchsorted(classes, y)
        if len(classes) == 2:
            return (index == 1).astype(dtype).reshape(n, 1)
        return np.ascontiguousarray(index, dtype=np.intp)

    def _set_target(self, target):
        self._kind = target["kind"]
        self.classes_ = target["classes"]
        self._negative = target.get("negative", 0)  # what predict gives for an absent label
        if self._kind == "multilabel":
            self.n_outputs_ = len(self.classes_)
            self.out_activation_, self.loss_ = "logistic", "sigmoid_cross_entropy"
        elif len(self.classes_) == 2:
            self.n_outputs_ = 1
            self.out_activation_, self.loss_ = "logistic", "sigmoid_cross_entropy"
        else:
            self.n_outputs_ = len(self.classes_)
            self.out_activation_, self.loss_ = "softmax", "softmax_cross_entropy"

    def _target_meta(self):
        meta = {"kind": self._kind}
        if self._negative:  # multilabel in the sign convention (0/1 files stay as they were)
            meta["negative"] = self._negative
        if self.classes_.dtype == object:  # e.g. pandas' strings, saved as a plain array
            meta["object_labels"] = True
        return meta

    def _fitted_target(self):
        return {"kind": self._kind, "classes": self.classes_, "negative": self._negative}

    def _target_from_meta(self, meta, arrays):
        """The saved target, refused unless it is one that fit makes."""
        kind, classes = meta["kind"], arrays["classes_"]
        if classes.ndim != 1:
            raise ValueError(f"classes_ must be 1-D, got shape {classes.shape}")
        negative = meta.get("negative", 0)
        if kind == "multilabel":
            if classes.dtype != np.intp or not np.array_equal(classes, np.arange(len(classes))):
                raise ValueError("a multilabel model's classes_ must be the ints 0, 1, ..., k-1")
            if type(negative) is not int or negative not in (0, -1):
                raise ValueError(f"a multilabel model's negative label must be 0 or -1, got "
                                 f"{negative!r}")
        elif kind == "labels":
            if meta.get("object_labels"):
                classes = classes.astype(object)
            check_labels(classes, "classes_")
            if len(classes) < 2 or not np.array_equal(np.unique(classes), classes):
                raise ValueError(f"classes_ must be 2 or more sorted unique labels, got {classes}")
        else:
            raise ValueError(f"unknown target kind {kind!r}; expected 'labels' or 'multilabel'")
        return {"kind": kind, "classes": classes, "negative": negative}

    def _fitted_arrays(self):
        arrays = super()._fitted_arrays()
        classes = self.classes_
        if classes.dtype == object:  # no pickles in the file: strings or numbers as they are
            check_labels(classes, "classes_")
            classes = np.array(classes.tolist())
        arrays["classes_"] = classes
        return arrays

    def _score_output(self, output, Y, sample_weight=None):
        """Accuracy of network outputs against encoded targets (early-stopping score)."""
        if Y.ndim == 1:
            correct = output.argmax(axis=1) == Y
        else:
            correct = np.all((output > 0) == (Y > 0.5), axis=1)
        return float(np.average(correct, weights=sample_weight))

    def _predict_indices(self, logits):
        if self._kind == "multilabel":  # sign(t): 1 where the logit is > 0, else 0 (or -1)
            return np.where(logits > 0, 1, self._negative).astype(np.intp)
        if logits.shape[1] == 1:
            return (logits[:, 0] > 0).astype(np.intp)
        return logits.argmax(axis=1)

    @sections(["X"], ("y", "ndarray of shape (n_samples,) or (n_samples, n_outputs)",
                      "Labels from ``classes_``; for multilabel an int matrix in the convention of "
                      "the targets ``fit`` saw: 1 where the logit is > 0, else 0 (or -1: the "
                      "lecture's sign(t))."),
              ["not fitted", "bad X"])
    def predict(self, X):
        """Predicted class labels."""
        indices = self._predict_indices(self._forward(X))
        return indices if self._kind == "multilabel" else self.classes_[indices]

    @sections(["X"], (None, "ndarray of shape (n_samples, n_classes)",
                      "As ``predict_proba``'s, of the model's ``dtype``."),
              ["not fitted", "bad X"])
    def predict_log_proba(self, X):
        """log of ``predict_proba``, computed stably from the logits."""
        logits = self._forward(X)
        if self.loss_ == "softmax_cross_entropy":
            logits -= logits.max(axis=1, keepdims=True)
            return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        log_p = -np.logaddexp(0, -logits)
        if self._kind == "multilabel":
            return log_p
        return np.hstack([-np.logaddexp(0, logits), log_p])

    @sections(["X"], ("proba", "ndarray of shape (n_samples, n_classes)",
                      "Softmax rows (multiclass), [1 - p, p] (binary), or the sigmoid of every "
                      "label's logit (multilabel: (n_samples, n_outputs), rows need not sum to "
                      "1).  Of the model's ``dtype`` (float32 by default), computed in it with no "
                      "float64 round trip, as scikit-learn's ``MLPClassifier`` keeps the float32 "
                      "of a model fitted on float32 data; ``dtype='float64'`` gives float64."),
              ["not fitted", "bad X"])
    def predict_proba(self, X):
        """Class probabilities."""
        check_is_fitted(self)
        if self.loss_ == "softmax_cross_entropy":
            return self._forward(X, "softmax")
        if self._kind == "multilabel":
            return self._forward(X, "sigmoid")
        logits = self._forward(X)  # binary: sigmoid(-t), sigmoid(t), each to full precision
        return special.expit(np.hstack([-logits, logits]))

    @sections(["X", ("y", "array-like of shape (n_samples,) or (n_samples, n_labels)",
                     "The true labels."),
               ("sample_weight", "array-like of shape (n_samples,)", "Weights of the rows.")],
              (None, "float", "In [0, 1]."), ["not fitted", "bad X"])
    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` (subset accuracy for multilabel), weighted by
        ``sample_weight`` when given (scikit-learn's ``accuracy_score``, computed here: labels
        of any type fastbp fits -- object ints, bytes -- compare, where scikit-learn's metrics
        refuse some)."""
        predicted = self.predict(X)
        y = check_targets(y, predicted.shape[0])
        if self._kind == "multilabel":  # as indicator matrices, whatever the sign convention
            correct = np.all((predicted > 0) == (y > 0), axis=1)
        else:
            correct = predicted == (y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, predicted)
        return float(np.average(correct, weights=sample_weight))

    def _stratify(self, Y):
        return Y if self._kind == "labels" else None

    def _exports(self):
        output = "softmax" if self.loss_ == "softmax_cross_entropy" else "sigmoid"
        multilabel = self._kind == "multilabel"
        return {"predict_proba": export.Path(
            export.layer_steps(self._network, output), "probabilities", classes=self.classes_,
            two_class=not multilabel and self.n_outputs_ == 1, multilabel=multilabel)}

    to_sklearn = _to_sklearn

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        return tags
