"""One home per formula (fastbp/kernels/_formulas.h): the NumPy twin, the compiled kernels and the
compiled training engine held to exact values at extreme inputs, computed in float64 or with
Python's math module (the truth here is neither implementation)."""
import math

import re

import numpy as np
import pytest

import fastbp
from fastbp import engine, kernels
from fastbp.nn import Dense, Sequential
from fastbp.optim import SGD, Adam

from conftest import require_compiled


def _phi(z):
    """The standard normal CDF, exactly (math.erfc)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _gelu(z):
    return z * _phi(z)


def _gelu_slope(z):
    return _phi(z) + z * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


GELU_POINTS = [-10.0, -6.0, -3.0, -0.5, 0.0, 0.5, 3.0, 6.0]


def _backends():
    return ["numpy", "compiled"]


def _engine_net(activation, n_in, n_out, W, b, optimizer="sgd", lr=0.0):
    """A one-layer network and its engine trainer (skipped when the engine is not built)."""
    require_compiled()
    if engine._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    net = Sequential([Dense(n_in, n_out, activation=activation, rng=0)])
    net.layers[0].W[...] = W
    net.layers[0].b[...] = b
    opt = Adam(net.params(), lr=lr) if optimizer == "adam" else SGD(net.params(), lr=lr)
    return net, opt


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_kernels_exact_in_the_left_tail(backend, dtype):
    if backend == "compiled":
        require_compiled()
    z = np.array([GELU_POINTS], dtype)
    with fastbp.use_backend(backend):
        a = kernels.activation("gelu", z)
        slope = kernels.activation_grad("gelu", z, a, np.ones_like(z))
    want = np.array([[_gelu(v) for v in GELU_POINTS]])
    want_slope = np.array([[_gelu_slope(v) for v in GELU_POINTS]])
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(a, want, rtol=rtol, atol=0)
    np.testing.assert_allclose(slope, want_slope, rtol=rtol, atol=1e-300)
    assert a[0, 1] == pytest.approx(-5.92e-9, rel=1e-3)  # GELU(-6): not 0
    assert a[0, 0] == pytest.approx(-7.62e-23, rel=1e-3)  # GELU(-10)


def test_gelu_engine_exact_in_the_left_tail():
    """The engine's forward (predict) and one training step's activation slope, against math."""
    k = len(GELU_POINTS)
    net, opt = _engine_net("gelu", 1, k, np.ones((1, k)), np.array(GELU_POINTS) - 1.0)
    with fastbp.use_backend("compiled"):
        trainer = engine.make_trainer(net, "squared_error", opt, 1)
        assert trainer is not None
        X = np.ones((1, 1), np.float32)
        out = trainer.predict(X)
        want = np.array([[_gelu(v) for v in GELU_POINTS]])
        np.testing.assert_allclose(out, want, rtol=2e-6, atol=0)
        # one step at lr 0: db = gelu'(z) (a - y) with y = a - 1, so db = gelu'(z) exactly
        Y = (want - 1.0).astype(np.float32)
        trainer.train_epoch(X, Y, np.arange(1, dtype=np.intp), np.zeros(1))
    want_db = np.array([_gelu_slope(v) * (o - y) for v, o, y in zip(GELU_POINTS, out[0], Y[0])])
    np.testing.assert_allclose(net.layers[0].db, want_db, rtol=5e-6, atol=1e-300)


@pytest.mark.parametrize("backend", _backends())
def test_adam_kernel_with_a_gradient_of_1e20(backend):
    """g^2 = 1e40 overflows float32, (sqrt(1 - b2) g)^2 = v = 1e37 does not (the float32 step
    scales before squaring): step t = 1 moves p by -lr."""
    if backend == "compiled":
        require_compiled()
    p = np.zeros(3, np.float32)
    g = np.array([1e20, -1e20, 1e-10], np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with fastbp.use_backend(backend):
        kernels.adam_update(p, g, m, v, step=1, lr=0.01)
    # exact: m = 0.1 g, v = 0.001 g^2; p = -lr m / (1 - b1) / (sqrt(v / (1 - b2)) + eps)
    want = [-0.01 * gi / (abs(gi) + 1e-8) for gi in map(float, g)]
    np.testing.assert_allclose(p, want, rtol=1e-6)
    np.testing.assert_allclose(v, [1e-3 * float(gi) ** 2 for gi in g], rtol=1e-6)
    assert np.isfinite(v).all()


def test_adam_engine_with_a_gradient_of_1e20():
    """dW = x (o - y) = 1e10 * 1e10 through the engine: W moves by -lr, as the kernel's."""
    net, opt = _engine_net("identity", 1, 1, np.zeros((1, 1)), np.zeros(1), "adam", lr=0.01)
    X = np.full((1, 1), 1e10, np.float32)
    Y = np.full((1, 1), -1e10, np.float32)
    with fastbp.use_backend("compiled"):
        trainer = engine.make_trainer(net, "squared_error", opt, 1)
        assert trainer is not None
        trainer.train_epoch(X, Y, np.arange(1, dtype=np.intp), np.zeros(1))
    layer = net.layers[0]
    assert float(layer.dW[0, 0]) == pytest.approx(1e20, rel=1e-6)
    assert float(layer.W[0, 0]) == pytest.approx(-0.01, rel=1e-6)  # old engine: 0 (v = inf)
    assert float(layer.b[0]) == pytest.approx(-0.01, rel=1e-6)
    assert float(opt.v[0][0, 0]) == pytest.approx(1e-3 * 1e40, rel=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_engine_momentum_with_a_decay_term_of_1e39(nesterov):
    """W = 1e38, weight decay 10: wd W = 1e39 overflows float32, the step does not (the decay
    enters as (lr wd) W): velocity -lr wd W = -5e37, W + v = 5e37 (Nesterov: W + mu v + v)."""
    net, _ = _engine_net("identity", 1, 1, np.full((1, 1), 1e38), np.zeros(1))
    opt = SGD(net.params(), lr=0.05, momentum=0.5, nesterov=nesterov, weight_decay=10.0)
    X, Y = np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)  # zero gradients
    with fastbp.use_backend("compiled"):
        trainer = engine.make_trainer(net, "squared_error", opt, 1)
        assert trainer is not None
        trainer.train_epoch(X, Y, np.arange(1, dtype=np.intp), np.zeros(1))
    want = 2.5e37 if nesterov else 5e37
    assert float(net.layers[0].W[0, 0]) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("backend", _backends())
def test_sigmoid_cross_entropy_kernel_sums_in_double(backend):
    """Two logits of 3e38 (target 0): the loss 6e38 is finite in double, inf in float32."""
    if backend == "compiled":
        require_compiled()
    o = np.full((1, 2), 3e38, np.float32)
    with fastbp.use_backend(backend):
        value, grad = kernels.loss("sigmoid_cross_entropy", o, np.zeros_like(o))
    assert value == pytest.approx(2 * float(np.float32(3e38)), rel=1e-6)
    np.testing.assert_allclose(grad, [[1.0, 1.0]])


@pytest.mark.parametrize("loss", ["sigmoid_cross_entropy", "squared_error"])
def test_losses_engine_sum_in_double(loss):
    """The engine's objective for outputs of 3e38 (target 0) is the float64 value, not inf."""
    big = float(np.float32(3e38))
    net, opt = _engine_net("identity", 1, 2, np.zeros((1, 2)), np.full(2, big))
    X = np.zeros((1, 1), np.float32)
    Y = np.zeros((1, 2), np.float32)
    with fastbp.use_backend("compiled"):
        trainer = engine.make_trainer(net, loss, opt, 1)
        assert trainer is not None
        value = trainer.train_epoch(X, Y, np.arange(1, dtype=np.intp), np.zeros(1))
    want = 2 * big if loss == "sigmoid_cross_entropy" else big * big  # 2 * big^2 / 2
    assert value == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_sigmoid_tanh_slopes_in_double_engine(activation):
    """Slopes from A, in double ((1 - A)(1 + A), A (1 - A)), the same bits from the engine's step
    as from the kernel (the old engine's float32 1 - A^2 was not)."""
    net, opt = _engine_net(activation, 1, 1, np.zeros((1, 1)), np.full(1, 4.0))
    X = np.zeros((1, 1), np.float32)
    with fastbp.use_backend("compiled"):
        trainer = engine.make_trainer(net, "squared_error", opt, 1)
        a = float(trainer.predict(X)[0, 0])
        Y = np.full((1, 1), a - 1.0, np.float32)
        trainer.train_epoch(X, Y, np.arange(1, dtype=np.intp), np.zeros(1))
        want_a = math.tanh(4.0) if activation == "tanh" else 1 / (1 + math.exp(-4.0))
        assert a == pytest.approx(want_a, rel=1e-7)
        w = float(np.float32(want_a))  # the slope is had from the float32 A
        slope = (1 - w) * (1 + w) if activation == "tanh" else w * (1 - w)
        d = float(np.float32(a) - np.float32(a - 1.0))
        assert float(net.layers[0].db[0]) == pytest.approx(slope * d, rel=1e-6)
        # the compiled kernel: the same formula
        A = np.array([[a]], np.float32)
        got = kernels.activation_grad(activation, A, A, np.full((1, 1), d, np.float32))
        assert float(got[0, 0]) == float(net.layers[0].db[0])


# ------------------------------------------------------------------------------ one registry
def test_engine_codes_are_the_registry_codes():
    """The compiled engine reports the names of its C enums (generated from registry.py at build
    time) in code order: a module built from another table shows here."""
    from fastbp.kernels import registry
    if engine._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    compiled = tuple(names.decode().split(",") for names in engine._c_train.NAMES)
    assert compiled == (list(registry.ACTIVATIONS), list(registry.LOSSES), list(registry.STEPS))
    for table in (registry.ACTIVATIONS, registry.LOSSES, registry.STEPS):
        assert [entry.code for entry in table.values()] == list(range(len(table)))
    assert engine.ACTIVATION_CODES == {n: e.code for n, e in registry.ACTIVATIONS.items()}
    assert engine.LOSS_CODES == {n: e.code for n, e in registry.LOSSES.items()}


def test_checks_tables_derive_from_the_registry():
    from fastbp.kernels import _checks, registry
    assert _checks.ACTIVATIONS == {n: e.alpha for n, e in registry.ACTIVATIONS.items()}
    assert _checks.LOSSES == tuple(registry.LOSSES)
    assert kernels.ACTIVATIONS is _checks.ACTIVATIONS


def test_optimizer_classes_take_the_registry_hyperparameters_and_defaults():
    """fastbp.optim's classes spell their hyperparameters out in their signatures (PyTorch's
    style): the same names, order and defaults as their registry rows, and the public kernels'."""
    import inspect
    from fastbp import optim
    from fastbp.kernels import registry
    assert set(optim.OPTIMIZERS) == set(registry.STEPS)
    for name, cls in optim.OPTIMIZERS.items():
        want = [(h.name, h.default) for h in registry.STEPS[name].hyper]
        signature = inspect.signature(cls).parameters.values()
        assert [(p.name, p.default) for p in signature if p.name != "params"] == want, name
        kernel = inspect.signature(getattr(kernels, f"{name}_update")).parameters.values()
        assert [(p.name, p.default) for p in kernel if p.kind == p.KEYWORD_ONLY
                and p.name != "step"] == want, name


@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus",
                                  "elu", "gelu", "softmax"])
def test_compiled_kernels_know_every_registry_activation(name, rng):
    """Each name resolves to its own code in the compiled kernels (the twin's values)."""
    require_compiled()
    from fastbp.kernels import registry
    assert name in registry.ACTIVATIONS
    Z = rng.standard_normal((3, 4)).astype(np.float64)
    with fastbp.use_backend("numpy"):
        want = kernels.activation(name, Z)
    with fastbp.use_backend("compiled"):
        got = kernels.activation(name, Z)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


def test_compiled_kernels_refuse_unknown_names():
    require_compiled()
    from fastbp.kernels import _c_activation, _c_step
    Z = np.zeros((1, 2))
    for bad in ("relu\x00", "rel", "RELU", 3):
        with pytest.raises(ValueError, match="unknown activation"):
            _c_activation.activation(bad, Z, Z, 0.0)
    with pytest.raises(ValueError, match="unknown loss"):
        _c_step.loss("squared_errorx", Z, Z, Z.copy())


def test_engine_description_is_one_named_structure():
    """fb_desc, fb_call, fb_result (C) and their NumPy dtypes come from one field list each
    (fastbp/engine/layout.py): each compiled struct has its dtype's size, every field is 8 bytes
    (no padding), names are unique."""
    from fastbp.engine import layout
    if engine._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    assert set(engine._c_train.STRUCT_SIZES) == {struct for struct, _ in layout.STRUCTS}
    for struct, fields in layout.STRUCTS:
        assert engine._c_train.STRUCT_SIZES[struct] == engine.DTYPES[struct].itemsize
        assert engine.DTYPES[struct].itemsize == 8 * sum(count for _, _, count, _ in fields)
        assert len({name for name, *_ in fields}) == len(fields)
    assert engine._c_train.LIMITS == (layout.MAX_LAYERS, layout.MAX_THREADS, layout.MAX_GENERATORS)
    declared = dict(re.findall(r"^\s+\w+ (\w+)(\[\d+\])?;", layout.c_header(), re.M))
    for name, _, count, _ in layout.FIELDS:
        assert (declared[name] == "") == (count == 1), name


def test_engine_imports_only_downward():
    """fastbp.engine imports only the backend, the platform layer and the kernels (the layers and
    optimizers describe themselves to it: Sequential.engine_stack, SGD/Adam.describe)."""
    import ast
    import pathlib
    above = ("fastbp.nn", "fastbp.optim", "fastbp.training", "fastbp.models", "fastbp.cli",
             "fastbp.tools")
    for path in pathlib.Path(engine.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad = [n for n in names if n.startswith(above) or n in ("fastbp.nn", "fastbp.optim")]
            bad += [f"fastbp.{a.name}" for a in getattr(node, "names", ())
                    if getattr(node, "module", None) == "fastbp"
                    and a.name in ("nn", "optim", "training", "models", "cli", "tools")]
            assert not bad, f"{path.name} imports {bad}"
