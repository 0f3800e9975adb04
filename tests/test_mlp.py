"""MLPClassifier and MLPRegressor: accuracy, scikit-learn parity, reproducibility, backends,
fitted attributes and bad input."""
import pickle
import warnings

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread, smooth_regression  # noqa: F401  (autouse fixture)

import fastbp
from fastbp import ConvergenceWarning, MLPClassifier, MLPRegressor

quiet = pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")


def _split(X, y, n_train):
    order = np.random.default_rng(0).permutation(len(X))
    return X[order[:n_train]], X[order[n_train:]], y[order[:n_train]], y[order[n_train:]]


# ------------------------------------------------------------------------------------- accuracy
@quiet
def test_digits_accuracy_with_defaults():
    X, y = fastbp.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and 0 <= X.min() and X.max() == 1
    X_train, X_test, y_train, y_test = _split(X, y, 1437)
    model = MLPClassifier(random_state=0).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.96
    assert list(model.classes_) == list(range(10))
    assert model.loss_curve_[-1] < model.loss_curve_[0]


@quiet
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # scikit-learn's ConvergenceWarning
def test_multioutput_regression_on_par_with_sklearn():
    neural_network = pytest.importorskip("sklearn.neural_network")
    X, Y = smooth_regression(600, 6, 4)
    assert Y.shape[1] >= 3
    X_train, X_test, Y_train, Y_test = X[:450], X[450:], Y[:450], Y[450:]
    settings = dict(hidden_layer_sizes=(32,), learning_rate_init=0.01, batch_size=32, max_iter=150,
                    random_state=0)
    ours = MLPRegressor(**settings).fit(X_train, Y_train)
    theirs = neural_network.MLPRegressor(**settings).fit(X_train, Y_train)
    prediction = ours.predict(X_test)
    assert prediction.shape == Y_test.shape and prediction.dtype == np.float64
    assert ours.score(X_test, Y_test) >= theirs.score(X_test, Y_test) - 0.02
    assert ours.score(X_test, Y_test) > 0.95


@quiet
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # scikit-learn's ConvergenceWarning
def test_multilabel_on_par_with_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    neural_network = pytest.importorskip("sklearn.neural_network")
    X, Y = datasets.make_multilabel_classification(n_samples=600, n_features=20, n_classes=5,
                                                   n_labels=2, random_state=0)
    X = X / X.max()
    X_train, X_test, Y_train, Y_test = X[:450], X[450:], Y[:450], Y[450:]
    settings = dict(hidden_layer_sizes=(64,), max_iter=100, random_state=0, learning_rate_init=0.01,
                    alpha=1e-3)
    ours = MLPClassifier(**settings).fit(X_train, Y_train)
    theirs = neural_network.MLPClassifier(**settings).fit(X_train, Y_train)
    predicted = ours.predict(X_test)
    assert predicted.shape == Y_test.shape and predicted.dtype.kind == "i"
    assert set(np.unique(predicted)) <= {0, 1}
    assert ours.out_activation_ == "logistic" and ours.loss_ == "sigmoid_cross_entropy"
    hamming_ours = np.mean(predicted == Y_test)
    hamming_theirs = np.mean(theirs.predict(X_test) == Y_test)
    assert hamming_ours >= hamming_theirs - 0.02
    assert ours.score(X_test, Y_test) >= theirs.score(X_test, Y_test) - 0.05
    proba = ours.predict_proba(X_test)
    assert proba.shape == Y_test.shape
    np.testing.assert_array_equal(proba > 0.5, predicted == 1)


@quiet
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu", "leaky_relu",
                                        "softplus", "elu", "gelu", "softmax"])
def test_every_activation_learns(activation):
    X, y = blobs(150, 4, 3, seed=1)
    model = MLPClassifier((16,), activation=activation, max_iter=60, learning_rate_init=0.02,
                          random_state=0).fit(X, y)
    assert model.score(X, y) > 0.85


@quiet
@pytest.mark.parametrize("solver, learning_rate, lr", [
    ("sgd", "constant", 0.1), ("sgd", "invscaling", 0.5), ("sgd", "adaptive", 0.1),
    ("adam", "constant", 0.01), ("gd", "constant", 0.5), ("gd", "backtracking", 4.0)])
def test_every_solver_and_schedule_learns(solver, learning_rate, lr):
    X, y = blobs(150, 4, 3, seed=2)
    model = MLPClassifier((16,), solver=solver, learning_rate=learning_rate, learning_rate_init=lr,
                          power_t=0.25, max_iter=60, random_state=0).fit(X, y)
    assert model.score(X, y) > 0.85
    assert len(model.learning_rates_) == model.n_iter_


# ------------------------------------------------------------------------------- reproducibility
@quiet
def test_same_seed_same_model():
    X, y = blobs(100, 5, 3)
    settings = dict(hidden_layer_sizes=(8, 6), dropout=0.2, max_iter=5, random_state=3)
    first, second = MLPClassifier(**settings).fit(X, y), MLPClassifier(**settings).fit(X, y)
    for a, b in zip(first.coefs_ + first.intercepts_, second.coefs_ + second.intercepts_):
        np.testing.assert_array_equal(a, b)
    other = MLPClassifier(**{**settings, "random_state": 4}).fit(X, y)
    assert not np.array_equal(first.coefs_[0], other.coefs_[0])
    rs = MLPClassifier(**{**settings, "random_state": np.random.RandomState(0)}).fit(X, y)
    assert rs.n_iter_ == 5


@quiet
@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_both_backends_give_the_same_model(compiled, estimator):
    if estimator == "classifier":
        X, y = blobs(90, 5, 3)
        make = MLPClassifier
    else:
        X, y = smooth_regression(90)
        make = MLPRegressor
    models = []
    for name in ("numpy", "compiled"):
        with fastbp.use_backend(name):
            models.append(make((7, 6), activation="tanh", dropout=0.1, max_iter=6, batch_size=16,
                               dtype="float64", random_state=0).fit(X, y))
    numpy_model, compiled_model = models
    for a, b in zip(numpy_model.coefs_ + numpy_model.intercepts_,
                    compiled_model.coefs_ + compiled_model.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(numpy_model.loss_curve_, compiled_model.loss_curve_, rtol=1e-8)
    # float32: the same model up to float32 rounding
    models32 = []
    for name in ("numpy", "compiled"):
        with fastbp.use_backend(name):
            models32.append(make((7, 6), max_iter=3, batch_size=16, random_state=0).fit(X, y))
    for a, b in zip(models32[0].coefs_, models32[1].coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------- fitted attributes
def test_fitted_attributes_and_convergence_warning():
    X, y = blobs(80, 4, 3)
    with pytest.warns(ConvergenceWarning):
        model = MLPClassifier((8, 5), max_iter=4, random_state=0).fit(X, y)
    assert [W.shape for W in model.coefs_] == [(4, 8), (8, 5), (5, 3)]
    assert [b.shape for b in model.intercepts_] == [(8,), (5,), (3,)]
    assert model.coefs_[0].dtype == np.float32
    assert model.n_iter_ == 4 == len(model.loss_curve_)
    assert model.t_ == 4 * 80 and model.best_loss_ == min(model.loss_curve_)
    assert model.grad_norms_.shape == (4, 3) and np.all(model.grad_norms_ > 0)
    assert model.validation_scores_ is None and model.n_features_in_ == 4
    assert model.n_layers_ == 4 and model.n_outputs_ == 3 and model.out_activation_ == "softmax"
    assert model.network_.dense_layers[0].W is model.coefs_[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        MLPClassifier((8,), max_iter=500, tol=1.0, random_state=0).fit(X, y)  # converges at once


@quiet
def test_vanishing_gradients_are_visible():
    """Deep sigmoid nets: the first layer's gradient is far smaller than the last one's."""
    X, y = blobs(200, 10, 3)
    ratios = {}
    for activation in ("logistic", "relu"):
        model = MLPClassifier((32,) * 6, activation=activation, max_iter=2, random_state=0).fit(X, y)
        ratios[activation] = model.grad_norms_[0, 0] / model.grad_norms_[0, -1]
    assert ratios["logistic"] < 0.01 < ratios["relu"]


@quiet
def test_early_stopping_restores_the_best_weights(monkeypatch):
    held_out = []
    split = fastbp.models.mlp._BaseMLP._split_validation

    def spy(self, X, Y, sample_weight=None):
        X_train, Y_train, w_train, score = split(self, X, Y, sample_weight)
        held_out.append((X, Y, X_train))
        return X_train, Y_train, w_train, score

    monkeypatch.setattr(fastbp.models.mlp._BaseMLP, "_split_validation", spy)
    X, y = blobs(200, 5, 3, spread=1.0)
    model = MLPClassifier((32,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                          max_iter=200, learning_rate_init=0.05, random_state=0).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ < 200
    assert model.best_validation_score_ == max(model.validation_scores_)
    X_all, _, X_train = held_out[0]
    assert len(X_train) == 160
    train_rows = {row.tobytes() for row in X_train}
    validation = np.array([row.tobytes() not in train_rows for row in X_all])
    # the final weights score the best validation score on the held-out rows
    assert model.score(X[validation], y[validation]) == model.best_validation_score_


@quiet
def test_warm_start_and_partial_fit():
    X, y = blobs(100, 4, 3)
    model = MLPClassifier((8,), max_iter=3, warm_start=True, random_state=0).fit(X, y)
    weights = model.coefs_[0].copy()
    model.fit(X, y)
    assert model.n_iter_ == 6 and len(model.loss_curve_) == 6
    assert not np.array_equal(weights, model.coefs_[0])
    with pytest.raises(ValueError, match="warm_start can only be used"):
        model.fit(X, np.where(y == 2, 1, y))

    online = MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        online.partial_fit(X, y)
    online.partial_fit(X[:10], y[:10], classes=[0, 1, 2, 3])
    online.partial_fit(X[10:11], y[10:11])  # one sample is fine for an online step
    assert online.n_iter_ == 2 and list(online.classes_) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="classes not in"):
        online.partial_fit(X[:5], np.array([0, 1, 2, 3, 7]))
    with pytest.raises(ValueError, match="is not the same as on last call"):
        online.partial_fit(X[:5], y[:5], classes=[0, 1])
    reg = MLPRegressor((8,), random_state=0)
    reg.partial_fit(*smooth_regression(20))
    reg.partial_fit(*smooth_regression(20, seed=1))
    assert reg.n_iter_ == 2


@quiet
def test_labels_binary_strings_and_probabilities():
    X, y = blobs(120, 4, 3)
    names = np.array(["cat", "dog", "emu"])[y]
    model = MLPClassifier((8,), max_iter=50, learning_rate_init=0.02, random_state=0).fit(X, names)
    assert list(model.classes_) == ["cat", "dog", "emu"]
    assert set(model.predict(X)) <= set(names) and model.score(X, names) > 0.9
    proba = model.predict_proba(X)
    assert proba.dtype == np.float32  # the model's dtype, as scikit-learn's float32 MLPs
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), proba, rtol=1e-5, atol=1e-7)
    binary = MLPClassifier((8,), max_iter=50, random_state=0).fit(X, y == 1)
    assert binary.n_outputs_ == 1 and binary.loss_ == "sigmoid_cross_entropy"
    p = binary.predict_proba(X)
    assert p.shape == (120, 2)
    np.testing.assert_array_equal(binary.classes_[p.argmax(axis=1)], binary.predict(X))


@quiet
def test_regressor_single_output_and_dtype():
    X, Y = smooth_regression(100)
    model = MLPRegressor((8,), max_iter=5, dtype="float64", random_state=0).fit(X, Y[:, 0])
    assert model.predict(X).shape == (100,) and model.coefs_[0].dtype == np.float64
    assert MLPRegressor((8,), max_iter=5, random_state=0).fit(X, Y[:, :1]).predict(X).shape == (100,)


@quiet
def test_dropout_is_off_at_predict_time():
    X, y = blobs(100, 4, 3)
    model = MLPClassifier((16,), dropout=0.5, max_iter=20, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X))
    assert sum(type(layer).__name__ == "Dropout" for layer in model.network_.layers) == 1


@quiet
def test_n_threads_and_params():
    X, y = blobs(60, 4, 3)
    model = MLPClassifier((8,), max_iter=2, n_threads=1, random_state=0).fit(X, y)
    assert model.get_params()["n_threads"] == 1
    model.set_params(alpha=0.5, hidden_layer_sizes=(4,))
    assert model.alpha == 0.5 and "alpha=0.5" in repr(model)
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(nonsense=1)
    for bad in (dict(n_threads=0), dict(dtype="int32"), dict(dropout=1.0), dict(solver="newton"),
                dict(hidden_layer_sizes=(0,)), dict(activation="swish"), dict(validation_fraction=1.0),
                dict(batch_size=-1), dict(max_iter=0)):
        with pytest.raises(ValueError):
            MLPClassifier(**bad).fit(X, y)


@quiet
def test_pickle_round_trip():
    X, y = blobs(60, 4, 3)
    model = MLPClassifier((8,), dropout=0.2, max_iter=3, random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict_proba(X), model.predict_proba(X))
    assert clone.coefs_[0] is clone.network_.dense_layers[0].W  # still one set of arrays
    clone.partial_fit(X, y)  # and it trains on
    assert clone.n_iter_ == 4


# ------------------------------------------------------------------------------------ bad input
@quiet
@pytest.mark.parametrize("make", [MLPClassifier, MLPRegressor])
def test_bad_input_raises_and_leaves_the_model_alone(make):
    X, y = blobs(40, 3, 3)
    model = make((4,), max_iter=2, random_state=0).fit(X, y)
    before = [W.copy() for W in model.coefs_]
    n_iter = model.n_iter_
    bad_X = [
        (np.where(np.arange(120).reshape(40, 3) == 5, np.nan, X), "Input X contains NaN"),
        (np.where(np.arange(120).reshape(40, 3) == 5, np.inf, X), "Input X contains infinity"),
        (X[:1], "1 sample"),
        (X[:0], "0 sample"),
        (X[:, :0], "0 feature"),
        (X[:, 0], "Expected 2D array"),
        (X.astype(str).astype(object) + "x", "could not convert"),
        (X + 1j, "Complex data not supported"),
        (np.full((40, 3), 1e39), "infinity or a value too large for dtype\\('float32'\\)"),
    ]
    for data, message in bad_X:
        with pytest.raises(ValueError, match=message):
            model.fit(data, y[:len(data)])
    with pytest.raises(ValueError, match="Input y contains NaN" if make is MLPRegressor else "NaN"):
        model.fit(X, np.where(np.arange(40) == 3, np.nan, y))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.fit(X, y[:-1])
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3 features"):
        model.predict(X[:, :2])
    with pytest.raises(ValueError, match="requires y to be passed"):
        model.fit(X, None)
    with pytest.raises(TypeError, match="Sparse data"):
        from scipy import sparse
        model.fit(sparse.csr_matrix(X), y)
    for W, old in zip(model.coefs_, before):
        np.testing.assert_array_equal(W, old)
    assert model.n_iter_ == n_iter


def test_classifier_specific_bad_input():
    X, y = blobs(40, 3, 3)
    with pytest.raises(ValueError, match="only one class"):
        MLPClassifier().fit(X, np.zeros(40))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MLPClassifier().fit(X, np.linspace(0, 1, 40))
    with pytest.raises(ValueError, match="multiclass-multioutput"):
        MLPClassifier().fit(X, np.c_[y, y])
    with pytest.raises(fastbp.NotFittedError, match="not fitted yet"):
        MLPClassifier().predict(X)
    with pytest.raises(fastbp.NotFittedError):
        MLPRegressor().predict(X)


@quiet
def test_partial_fit_continues_the_invscaling_schedule():
    """As scikit-learn's: every epoch, a partial fit's too, ends with the rate
    learning_rate_init / (t + 1) ** power_t for the next (t: training rows seen)."""
    X, y = blobs(50, 4, 3)
    model = MLPClassifier((6,), solver="sgd", learning_rate="invscaling", power_t=0.25,
                          learning_rate_init=0.1, max_iter=2, random_state=0).fit(X, y)
    model.partial_fit(X, y).partial_fit(X, y)
    want = [0.1] + [0.1 / (50 * e + 1) ** 0.25 for e in (1, 2, 3)]
    np.testing.assert_allclose(model.learning_rates_, want, rtol=1e-12)
