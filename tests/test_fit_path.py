"""``fit_path_``: every fitted estimator records which path trained it and why (issue 10, item 3).

The truth a recorded path is held to is what ran: ``FusedTrainer.train_epoch`` (whole epochs) and
``StackPasses.forward`` (the engine's passes inside each step) are counted, and a fit whose path is
``"engine"`` must have run the first only, one whose path is ``"engine steps (...)"`` the second
only, and one whose path is ``"layerwise: ..."`` neither.  A declined engine is never silent: the reason is recorded, and verbose output says it.
"""
import io
import re
from contextlib import redirect_stdout

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
import fastbp.engine as engine
from fastbp import GAN, VAE, Autoencoder, MLPClassifier, MLPRegressor
from fastbp.models.gan import FIT_PATH as GAN_PATH
from fastbp.nn import Dense, Dropout, Sequential, make_mlp
from fastbp.training import make_optimizer, TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")

SMALL = dict(max_iter=2, random_state=0)
STEPS = "engine steps (not a plain Dense/Dropout stack ({} layer))"
ARMIJO = "layerwise: Armijo line search (learning_rate='backtracking')"

# (name, estimator factory, fit arguments' kind, path on the compiled backend)
CASES = [
    ("classifier", lambda **kw: MLPClassifier((8,), **kw), "labels", "engine"),
    ("classifier-dropout", lambda **kw: MLPClassifier((8,), dropout=0.2, **kw), "labels", "engine"),
    ("classifier-sgd", lambda **kw: MLPClassifier((8,), solver="sgd", **kw), "labels", "engine"),
    ("classifier-float64", lambda **kw: MLPClassifier((8,), dtype="float64", **kw), "labels",
     "engine"),
    ("classifier-backtracking",
     lambda **kw: MLPClassifier((8,), solver="gd", learning_rate="backtracking", **kw), "labels",
     ARMIJO),
    ("regressor", lambda **kw: MLPRegressor((8,), **kw), "values", "engine"),
    ("regressor-float64", lambda **kw: MLPRegressor((8,), dtype="float64", **kw), "values",
     "engine"),
    ("autoencoder", lambda **kw: Autoencoder(2, (8,), **kw), "data", "engine"),
    ("autoencoder-denoising", lambda **kw: Autoencoder(2, (8,), noise="gaussian", **kw), "data",
     "engine"),
    ("autoencoder-sparse", lambda **kw: Autoencoder(2, (8,), sparsity="l1", **kw), "data",
     "engine"),
    ("autoencoder-sparse-kl",
     lambda **kw: Autoencoder(2, (8,), sparsity="kl", code_activation="sigmoid", **kw), "data",
     "engine"),
    ("vae", lambda **kw: VAE(2, (8,), **kw), "data", STEPS.format("Reparameterize")),
    ("gan", lambda **kw: GAN(1, (8,), (8,), **kw), "data", GAN_PATH),
]


def _data(kind):
    X, y = blobs(60, 4, 3)
    X = (X - X.min(0)) / (X.max(0) - X.min(0))  # in [0, 1] for every reconstruction loss
    return {"labels": (X, y), "values": (X, X[:, :2] - X[:, 2:]), "data": (X,)}[kind]


@pytest.fixture
def engine_epochs(monkeypatch):
    """Counts the epochs the compiled engine ran (the independent record of the path taken)."""
    calls = []
    run = engine.FusedTrainer.train_epoch

    def counting(self, *args):
        calls.append(1)
        return run(self, *args)

    monkeypatch.setattr(engine.FusedTrainer, "train_epoch", counting)
    return calls


@pytest.fixture
def engine_passes(monkeypatch):
    """Counts the engine's forward passes inside steps (StackPasses.forward)."""
    calls = []
    run = engine.StackPasses.forward

    def counting(self, X):
        calls.append(1)
        return run(self, X)

    monkeypatch.setattr(engine.StackPasses, "forward", counting)
    return calls


@pytest.fixture
def on_compiled(compiled):
    """The compiled backend, whatever FASTBP_BACKEND chose."""
    with fastbp.use_backend("compiled"):
        yield


def _expected(path, backend):
    """The line search never asks the engine; every other path on NumPy is its."""
    if backend == "numpy" and path != ARMIJO:
        return "layerwise: numpy backend"
    return path


@pytest.mark.parametrize("name, make, kind, path", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_every_estimator_records_its_path(backend, engine_epochs, engine_passes, name, make, kind,
                                         path, method):
    data = _data(kind)
    model = make(**SMALL)
    if method == "partial_fit" and name.startswith("classifier"):
        model.partial_fit(*data, classes=np.unique(data[1]))
    else:
        getattr(model, method)(*data)
    want = _expected(path, backend)
    assert model.fit_path_ == want
    assert bool(engine_epochs) == (want == "engine")  # the path recorded is the path that ran
    assert bool(engine_passes) == want.startswith("engine steps (")


@pytest.mark.parametrize("name, make, kind, path", CASES, ids=[case[0] for case in CASES])
def test_verbose_output_says_the_path_first(backend, name, make, kind, path):
    out = io.StringIO()
    with redirect_stdout(out):
        model = make(verbose=True, **SMALL).fit(*_data(kind))
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{type(model).__name__}: training path: {_expected(path, backend)}"
    assert re.match(rf"{type(model).__name__}: epoch +1 ", lines[1])


def test_a_declined_engine_is_never_silent(backend):
    """Whatever the model and backend, the path is 'engine' or 'layerwise: ' with a reason."""
    for name, make, kind, _ in CASES:
        path = make(**SMALL).fit(*_data(kind)).fit_path_
        assert path == "engine" or re.fullmatch(r"(layerwise: |engine steps \()\S.{3,}", path), \
            (name, path)


def test_switched_off_and_unavailable_engine(on_compiled, engine_epochs, monkeypatch):
    X, y = _data("labels")
    monkeypatch.setattr(engine, "USE_FUSED", False)
    model = MLPClassifier((8,), **SMALL).fit(X, y)
    assert model.fit_path_ == "layerwise: engine switched off (fastbp.engine.USE_FUSED)"
    monkeypatch.setattr(engine, "USE_FUSED", True)
    # a damaged engine: the reason names the import error, and one RuntimeWarning says it
    monkeypatch.setattr(engine, "_c_train", None)
    monkeypatch.setattr(engine, "_c_train_error", "ImportError: damaged _c_train")
    monkeypatch.setattr(engine, "_c_train_warned", False)
    with pytest.warns(RuntimeWarning, match="training engine is unavailable"):
        model = MLPClassifier((8,), **SMALL).fit(X, y)
    assert model.fit_path_ == "layerwise: engine unavailable (ImportError: damaged _c_train)"
    assert engine_epochs == []


def test_a_loaded_model_has_no_path_until_it_trains(on_compiled, tmp_path):
    X, y = _data("labels")
    model = MLPClassifier((8,), **SMALL).fit(X, y)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.fit_path_ is None
    assert loaded.partial_fit(X, y).fit_path_ == "engine"


def test_engine_decline_reasons_match_make_trainer(on_compiled, monkeypatch):
    """Each decline condition of the engine has its reason, and make_trainer makes a trainer
    exactly when engine_decline finds none."""
    net = make_mlp(4, [6], 3, rng=0)
    opt = make_optimizer(net, TrainConfig(solver="sgd"), 8)
    double = make_mlp(4, [6], 3, rng=0, dtype=np.float64)
    trailing = Sequential([Dense(4, 3, rng=0), Dropout(0.5, rng=0)])

    class Custom(Dense):
        pass

    custom = Sequential([Custom(4, 3, rng=0)])
    other = make_mlp(4, [6], 3, rng=1)

    def sgd(network):
        return make_optimizer(network, TrainConfig(solver="sgd"), 8)

    cases = [
        (net, "softmax_cross_entropy", opt, None),
        (net, "hinge", opt, "loss 'hinge' not in the engine"),
        (double, "squared_error", sgd(double), None),
        (trailing, "squared_error", sgd(trailing), "not a plain Dense/Dropout stack (a Dropout"),
        (custom, "squared_error", sgd(custom), "not a plain Dense/Dropout stack (Custom layer)"),
        (net, "squared_error", sgd(other), "optimizer SGD is not over this network's parameters"),
    ]
    for network, loss, optimizer, reason in cases:
        got = engine.engine_decline(network, loss, optimizer, 8)
        trainer = engine.make_trainer(network, loss, optimizer, 8)
        assert (trainer is None) == (got is not None)
        assert got == reason if reason is None else got.startswith(reason), (got, reason)
    monkeypatch.setattr(engine._c_train, "DOUBLE", False)  # an engine built with FB_FLOAT_ONLY
    assert engine.engine_decline(double, "squared_error", sgd(double), 8) == "float64"
    assert engine.make_trainer(double, "squared_error", sgd(double), 8) is None
    with fastbp.use_backend("numpy"):
        assert engine.engine_decline(net, "squared_error", opt, 8) == "numpy backend"
        assert engine.make_trainer(net, "squared_error", opt, 8) is None
