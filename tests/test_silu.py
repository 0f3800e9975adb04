"""SiLU (x sigmoid(x), PyTorch's nn.SiLU), added through the registry alone (issue 10, item 5): its
row in fastbp/kernels/registry.py, its f and f' in _formulas.h, its NumPy twin.  Everything else
must follow by itself: the kernels on both backends, the dense layers, the engine, the estimators.

Truths: exact values from Python's math module in float64 (at extreme inputs), PyTorch autograd
where torch is importable, central differences (fastbp.gradcheck), the layer-by-layer trainer for
the engine, and held-out accuracy on digits for the estimators."""
import math

import numpy as np
import pytest

import fastbp
from fastbp import engine, kernels
from fastbp.kernels import registry
from fastbp.nn import Dense, Sequential, make_mlp
from fastbp.optim import SGD
from fastbp import training

from conftest import require_compiled

POINTS = [-1e38, -100.0, -20.0, -1.5, -1e-30, 0.0, 1e-30, 0.5, 20.0, 100.0, 1e38, float("nan")]


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, in float64."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _silu(z):
    return z * _sigmoid(z) if z == z else z


def _silu_slope(z):
    """s + z s (1 - s) = s (1 + z (1 - s)), 1 - s = sigmoid(-z)."""
    if z != z:
        return z
    return _sigmoid(z) * (1.0 + z * _sigmoid(-z))


def _backends():
    return ["numpy", "compiled"]


def _in(dtype, value):
    """The exact value rounded to dtype, as math computed it in float64."""
    with np.errstate(over="ignore", under="ignore"):
        return np.asarray(value, np.float64).astype(dtype)


def test_silu_is_a_registry_activation():
    assert "silu" in registry.ACTIVATIONS
    assert "silu" in kernels.ACTIVATIONS
    entry = registry.ACTIVATIONS["silu"]
    assert entry.alpha is None and not entry.slope_from_a and not entry.slope_from_sign


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_exact_at_extreme_inputs(backend, dtype):
    if backend == "compiled":
        require_compiled()
    # in float32 +-1e38 is representable; the exact values are computed at the float32 inputs
    z = np.array([POINTS], dtype)
    exact = [float(v) for v in z[0]]
    da = np.array([[1.0] * len(POINTS)], dtype)
    with fastbp.use_backend(backend):
        a = kernels.activation("silu", z)
        dz = kernels.activation_grad("silu", z, a, da)
    assert a.dtype == dtype and dz.dtype == dtype
    want = _in(dtype, [[_silu(v) for v in exact]])
    want_slope = _in(dtype, [[_silu_slope(v) for v in exact]])
    tiny = np.finfo(dtype).tiny  # below it (subnormal results) an absolute error of tiny is allowed
    rtol = 4e-7 if dtype == np.float32 else 4e-16
    np.testing.assert_allclose(a, want, rtol=rtol, atol=tiny, equal_nan=True)
    np.testing.assert_allclose(dz, want_slope, rtol=rtol * 4, atol=tiny, equal_nan=True)
    # the points that naive forms lose: silu(-20) is -4.1e-8 (not 0), slope(20) is 1 (not NaN),
    # +-1e38 stay finite
    i = POINTS.index(-20.0)
    assert a[0, i] == pytest.approx(-20.0 * math.exp(-20.0) / (1 + math.exp(-20.0)), rel=1e-6)
    assert np.isfinite(a[0, :-1]).all() and np.isfinite(dz[0, :-1]).all()
    assert np.isnan(a[0, -1]) and np.isnan(dz[0, -1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_compiled_matches_its_twin(compiled, dtype, rng):
    z = (rng.standard_normal((37, 29)) * 8).astype(dtype)
    da = rng.standard_normal(z.shape).astype(dtype)
    out = {}
    for backend in _backends():
        with fastbp.use_backend(backend):
            a = kernels.activation("silu", z)
            out[backend] = a, kernels.activation_grad("silu", z, a, da)
    rtol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out["compiled"][0], out["numpy"][0], rtol=rtol, atol=0)
    # the slope 1 + z (1 - s) crosses 0 near z = -1.28: there its error is absolute, ~ulp(1) |da|
    np.testing.assert_allclose(out["compiled"][1], out["numpy"][1], rtol=rtol,
                               atol=rtol * float(np.abs(da).max()))


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_matches_pytorch_autograd(backend, dtype, rng):
    torch = pytest.importorskip("torch")
    if backend == "compiled":
        require_compiled()
    z = np.concatenate([rng.standard_normal(200) * 10, [-100.0, -20.0, 0.0, 20.0, 100.0]])
    z = z.astype(dtype)[None, :]
    da = rng.standard_normal(z.shape).astype(dtype)
    t = torch.tensor(z, requires_grad=True)
    y = torch.nn.SiLU()(t)
    y.backward(torch.tensor(da))
    with fastbp.use_backend(backend):
        a = kernels.activation("silu", z)
        dz = kernels.activation_grad("silu", z, a, da)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(a, y.detach().numpy(), rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(dz, t.grad.numpy(), rtol=rtol * 4, atol=rtol * float(np.abs(da).max()))


@pytest.mark.parametrize("backend", _backends())
def test_silu_network_gradients_match_central_differences(backend, rng):
    if backend == "compiled":
        require_compiled()
    net = make_mlp(5, [6, 4], 3, activation="silu", rng=3, dtype=np.float64)
    X = rng.standard_normal((7, 5))
    y = rng.integers(0, 3, 7)
    with fastbp.use_backend(backend):
        worst = fastbp.gradcheck(net, X, y, loss="softmax_cross_entropy")
    assert worst < 1e-6


@pytest.mark.parametrize("backend", _backends())
def test_silu_dense_layer_forward_and_backward(backend, rng):
    if backend == "compiled":
        require_compiled()
    layer = Dense(4, 6, activation="silu", rng=1)
    X = rng.standard_normal((5, 4)).astype(np.float32)
    with fastbp.use_backend(backend):
        A = layer.forward(X)
        Z = X.astype(np.float64) @ layer.W.astype(np.float64) + layer.b
        want = Z / (1 + np.exp(-Z))
        np.testing.assert_allclose(A, want, rtol=2e-5, atol=1e-6)
        dA = np.ones_like(A)
        layer.backward(dA)
    s = 1 / (1 + np.exp(-Z))
    np.testing.assert_allclose(layer.db, (s * (1 + Z * (1 - s))).sum(0), rtol=1e-4, atol=1e-5)


def test_silu_engine_matches_layer_by_layer(compiled, rng):
    if engine._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    nets = [make_mlp(11, [9, 8], 5, activation="silu", rng=7) for _ in range(2)]
    opts = [SGD(net.params(), lr=0.1, momentum=0.9) for net in nets]
    with fastbp.use_backend("compiled"):
        reference = training.LayerwiseTrainer(nets[0], "softmax_cross_entropy", opts[0], 16)
        trainer = engine.make_trainer(nets[1], "softmax_cross_entropy", opts[1], 16)
        assert trainer is not None
        X = rng.standard_normal((70, 11)).astype(np.float32)
        Y = rng.integers(0, 5, 70).astype(np.intp)
        for _ in range(3):
            order = rng.permutation(70).astype(np.intp)
            want = reference.train_epoch(X, Y, order, np.zeros(3))
            got = trainer.train_epoch(X, Y, order, np.zeros(3))
            assert got == pytest.approx(want, rel=1e-5)
    for a, b in zip(nets[0].params(), nets[1].params()):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("make", [
    lambda: fastbp.MLPRegressor((8,), activation="silu", max_iter=3, random_state=0),
    lambda: fastbp.Autoencoder(2, (8,), activation="silu", max_iter=3, random_state=0),
    lambda: fastbp.VAE(2, (8,), activation="silu", max_iter=3, random_state=0),
    lambda: fastbp.GAN(2, (8,), (8,), activation="silu", discriminator_activation="silu",
                       max_iter=3, random_state=0),
], ids=["MLPRegressor", "Autoencoder", "VAE", "GAN"])
@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_silu_reaches_every_estimator(make, rng):
    X = rng.standard_normal((40, 6)).astype(np.float32)
    model = make()
    model.fit(X, X[:, 0]) if isinstance(model, fastbp.MLPRegressor) else model.fit(X)
    assert model.activation == "silu" and np.isfinite(model.transform(X) if hasattr(
        model, "transform") else model.predict(X) if hasattr(model, "predict") else
        model.sample(3)).all()
    if isinstance(model, fastbp.MLPRegressor) and fastbp.backend() == "compiled" \
            and engine._c_train is not None:
        assert model.fit_path_ == "engine"


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_silu_classifier_learns_digits():
    X, y = fastbp.load_digits()
    idx = np.random.default_rng(0).permutation(len(y))
    train, test = idx[:1300], idx[1300:]
    model = fastbp.MLPClassifier((32,), activation="silu", max_iter=40, random_state=0)
    model.fit(X[train], y[train])
    assert model.score(X[test], y[test]) > 0.9
    if fastbp.backend() == "compiled" and engine._c_train is not None:
        assert model.fit_path_ == "engine"
