"""RMSprop (PyTorch's torch.optim.RMSprop semantics): the kernel against its NumPy twin and against
an independent plain-float implementation of PyTorch's documented algorithm (and torch itself when
it is installed), every option combination, both dtypes, both backends; the optimizer and the
estimators' solver='rmsprop'."""
import itertools
import math

import numpy as np
import pytest

import fastbp
from fastbp import kernels
from fastbp.kernels import _reference
from fastbp.optim import Adam, RMSprop

OPTIONS = list(itertools.product((False, True), (0.0, 0.9), (0.0, 0.1)))  # centered, momentum, wd
OPTION_IDS = [f"centered={c}-momentum={m}-wd={w}" for c, m, w in OPTIONS]


def torch_rmsprop(p, grads, lr, alpha, eps, weight_decay, momentum, centered):
    """torch.optim.RMSprop's documented algorithm, element by element in Python floats."""
    p = list(p)
    v, ga, buf = [0.0] * len(p), [0.0] * len(p), [0.0] * len(p)
    for grad in grads:
        for i, g in enumerate(grad):
            g = g + weight_decay * p[i] if weight_decay else g
            v[i] = alpha * v[i] + (1 - alpha) * g * g
            if centered:
                ga[i] = alpha * ga[i] + (1 - alpha) * g
                denom = math.sqrt(v[i] - ga[i] * ga[i]) + eps
            else:
                denom = math.sqrt(v[i]) + eps
            if momentum > 0:
                buf[i] = momentum * buf[i] + g / denom
                p[i] -= lr * buf[i]
            else:
                p[i] -= lr * g / denom
    return p, v, ga, buf


def run_kernel(p0, grads, dtype, centered, momentum, wd, lr=0.01, alpha=0.9, eps=1e-8):
    p = np.array(p0, dtype)
    v, ga, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        kernels.rmsprop_update(p, np.array(g, dtype), v, ga if centered else None,
                               buf if momentum else None, lr=lr, alpha=alpha, eps=eps,
                               weight_decay=wd, momentum=momentum, centered=centered)
    return p, v, ga, buf


@pytest.mark.parametrize("centered, momentum, wd", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_algorithm(centered, momentum, wd, dtype, backend):
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(7).tolist()
    grads = [rng.standard_normal(7).tolist() for _ in range(5)]
    want = torch_rmsprop(p0, grads, 0.01, 0.9, 1e-8, wd, momentum, centered)
    got = run_kernel(p0, grads, dtype, centered, momentum, wd)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for name, g, w in zip(("param", "square_avg", "grad_avg", "momentum_buffer"), got, want):
        if (name == "grad_avg" and not centered) or (name == "momentum_buffer" and not momentum):
            np.testing.assert_array_equal(g, 0, err_msg=f"unused {name} written")
            continue
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * 1e-2, err_msg=name)


@pytest.mark.parametrize("centered, momentum, wd", OPTIONS, ids=OPTION_IDS)
def test_matches_torch(centered, momentum, wd):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(4)]
    tp = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.RMSprop([tp], lr=0.01, alpha=0.9, eps=1e-8, weight_decay=wd,
                              momentum=momentum, centered=centered)
    for g in grads:
        tp.grad = torch.tensor(g)
        opt.step()
    got = run_kernel(p0, grads, np.float64, centered, momentum, wd)[0]
    np.testing.assert_allclose(got, tp.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("size", [0, 1, 5, 1031, 100_003])
@pytest.mark.parametrize("centered, momentum, wd", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_matches_twin(size, centered, momentum, wd, dtype):
    if size == 100_003 and (centered, momentum, wd) != (True, 0.9, 0.1):
        pytest.skip("the large size once, with every option")
    rng = np.random.default_rng(size)
    arrays = [rng.standard_normal(size).astype(dtype) for _ in range(2)]
    states = [np.abs(rng.standard_normal(size)).astype(dtype) + 1, rng.standard_normal(size).astype(dtype) * 0.1,
              rng.standard_normal(size).astype(dtype)]
    results = {}
    for name in ("numpy", "compiled"):
        with fastbp.use_backend(name):
            p, g = arrays[0].copy(), arrays[1]
            v, ga, buf = (s.copy() for s in states)
            for _ in range(3):
                kernels.rmsprop_update(p, g, v, ga, buf, lr=0.01, alpha=0.99, eps=1e-8,
                                       weight_decay=wd, momentum=momentum, centered=centered)
            results[name] = (p, v, ga, buf)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    for a, b in zip(results["compiled"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    # the buffers an option does not use are left alone
    if not centered:
        np.testing.assert_array_equal(results["compiled"][2], states[1])
    if not momentum:
        np.testing.assert_array_equal(results["compiled"][3], states[2])


def test_non_contiguous_param_and_grad_handled(backend):
    """A strided param is updated through a C-order copy and a strided grad read as is, as in
    adam_update; the result is the contiguous call's."""
    rng = np.random.default_rng(5)
    big_p, big_g = rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    before = big_p.copy()
    p, g = big_p[:, ::2], big_g[:, 1::2]
    p_ref, g_ref = np.ascontiguousarray(p), np.ascontiguousarray(g)
    v, v_ref = np.zeros((6, 4)), np.zeros((6, 4))
    kernels.rmsprop_update(p, g, v, lr=0.1)
    kernels.rmsprop_update(p_ref, g_ref, v_ref, lr=0.1)
    np.testing.assert_array_equal(p, p_ref)
    np.testing.assert_array_equal(v, v_ref)
    assert not np.array_equal(p_ref, before[:, ::2])
    np.testing.assert_array_equal(big_p[:, 1::2], before[:, 1::2])  # only the view's entries


def test_non_contiguous_state_refused(backend):
    p, g = np.ones((4, 4)), np.ones((4, 4))
    v = np.zeros((4, 8))[:, ::2]
    with pytest.raises(ValueError, match="square_avg"):
        kernels.rmsprop_update(p, g, v, lr=0.1)
    np.testing.assert_array_equal(p, 1)


def test_float32_large_gradient_no_overflow(backend):
    """(1e20)^2 overflows float32; the kernel squares sqrt(1 - alpha) g, finite where v is."""
    p, g = np.zeros(3, np.float32), np.full(3, 1e20, np.float32)
    v = np.zeros(3, np.float32)
    kernels.rmsprop_update(p, g, v, lr=0.01, alpha=0.99)
    v_want = 0.01 * 1e40
    np.testing.assert_allclose(v, v_want, rtol=1e-5)
    np.testing.assert_allclose(p, -0.01 * 1e20 / math.sqrt(v_want), rtol=1e-5)


# ------------------------------------------------------------------ the optimizer and the estimators
def test_optimizer_steps_match_torch_algorithm(backend):
    """fastbp.optim.RMSprop over two parameters, each with its own weight decay."""
    from fastbp.optim import RMSprop
    rng = np.random.default_rng(6)
    params = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    start = [p.ravel().tolist() for p in params]
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(4)]
    opt = RMSprop(params, lr=0.02, alpha=0.95, eps=1e-6, weight_decay=[0.1, 0.0], momentum=0.5,
                  centered=True)
    for g in grads:
        opt.step(g)
    assert opt.t == 4
    for i, (p, decay) in enumerate(zip(params, (0.1, 0.0))):
        want = torch_rmsprop(start[i], [g[i].ravel().tolist() for g in grads], 0.02, 0.95, 1e-6,
                             decay, 0.5, True)
        np.testing.assert_allclose(p.ravel(), want[0], rtol=1e-12)
        np.testing.assert_allclose(opt.momentum_buffer[i].ravel(), want[3], rtol=1e-12)


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_digits_classifier(backend, tmp_path):
    """solver='rmsprop' learns digits (> 0.9 held out), on the engine where it runs, and survives
    a save/load round trip."""
    X, y = fastbp.load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    model = fastbp.MLPClassifier((32,), solver="rmsprop", learning_rate_init=0.003, max_iter=40,
                                 random_state=0).fit(X[train], y[train])
    assert model.score(X[test], y[test]) > 0.9
    want = "engine" if backend == "compiled" else "layerwise: numpy backend"
    assert model.fit_path_ == want
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.get_params()["solver"] == "rmsprop"
    np.testing.assert_array_equal(loaded.predict_proba(X[test]), model.predict_proba(X[test]))


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
@pytest.mark.parametrize("make", [
    lambda: fastbp.MLPRegressor((8,), solver="rmsprop", max_iter=30, random_state=0),
    lambda: fastbp.Autoencoder(2, (8,), solver="rmsprop", max_iter=30, random_state=0),
    lambda: fastbp.VAE(2, (8,), solver="rmsprop", max_iter=30, random_state=0),
    lambda: fastbp.GAN(1, (8,), (8,), solver="rmsprop", max_iter=5, random_state=0),
], ids=["regressor", "autoencoder", "vae", "gan"])
def test_every_estimator_trains_with_rmsprop(make):
    from fastbp.optim import RMSprop
    X, _ = fastbp.load_digits()
    X = X[:200, :16]
    model = make()
    model.fit(X, X[:, :2] - X[:, 2:4]) if isinstance(model, fastbp.MLPRegressor) else model.fit(X)
    curve = np.asarray(model.loss_curve_)
    assert np.isfinite(curve).all()
    if not isinstance(model, fastbp.GAN):  # a GAN's objective need not fall
        assert curve[-1] < curve[0]
    else:
        assert isinstance(model._d_optimizer, RMSprop)


def test_eps_that_vanishes_in_the_dtype_refused(backend):
    p, g, v = np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(2, np.float32)
    with pytest.raises(ValueError, match=r"eps must be in \[1.17549e-38, inf\) for float32"):
        kernels.rmsprop_update(p, g, v, eps=1e-40)
    np.testing.assert_array_equal(p, 1)
    p64 = np.ones(2)
    kernels.rmsprop_update(p64, np.ones(2), np.zeros(2), eps=1e-40, lr=0.1)  # normal in float64
    np.testing.assert_allclose(p64, 1 - 0.1 / math.sqrt(1 - 0.99), atol=1e-12)


def test_centered_overflowing_square_avg_is_not_nan(backend):
    """float32: v = (0.1 * 3e37)^2 overflows (as the float64 twin's does when stored); the
    centered divisor is inf there, not inf - inf = NaN: the step is 0, as PyTorch's ratio
    g / sqrt(v - ga^2) tends to for a growing v."""
    p, g = np.ones(3, np.float32), np.full(3, 3e37, np.float32)
    v, ga = np.zeros(3, np.float32), np.zeros(3, np.float32)
    with np.errstate(over="ignore"):
        kernels.rmsprop_update(p, g, v, ga, centered=True, lr=0.01)
    assert np.isinf(v).all() and np.isfinite(ga).all()
    assert np.isfinite(p).all()


def test_zero_lr_leaves_param(backend):
    """lr = 0: the state moves, the parameter does not, even where the divided step overflows."""
    p, g = np.array([1.0, -2.0]), np.array([1e300, 3.0])
    v, buf = np.zeros(2), np.zeros(2)
    with np.errstate(over="ignore"):
        kernels.rmsprop_update(p, g, v, None, buf, lr=0.0, eps=1e-300, momentum=0.9)
    np.testing.assert_array_equal(p, [1.0, -2.0])
    np.testing.assert_allclose(v, [np.inf, (1 - 0.99) * 9.0])


@pytest.mark.parametrize("make", [lambda p, eps: Adam(p, eps=eps), lambda p, eps: RMSprop(p, eps=eps)],
                         ids=["Adam", "RMSprop"])
def test_optimizer_refuses_an_eps_that_vanishes_in_its_parameters_dtype(make, backend):
    """The optimizers hold eps to the kernels' bound for their parameters' dtype: an eps of 1e-46
    is 0 in float32, where the compiled step divides 0 by 0 (NaN; the float64 twin does not), so a
    float32 optimizer refuses it (naming eps), as rmsprop_update/adam_update do; float64
    parameters take it (normal there) and step to the twin's values."""
    with pytest.raises(ValueError, match=r"eps must be in \[1.17549e-38, inf\) for float32"):
        make([np.ones(3), np.ones(2, np.float32)], 1e-46)
    p = np.ones(3)
    opt = make([p], 1e-46)
    opt.step([np.array([0.0, 1.0, -1.0])])
    assert np.isfinite(p).all() and p[0] == 1.0 and p[1] < 1.0 < p[2]
