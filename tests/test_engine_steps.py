"""The compiled engine's passes inside each training step (``fastbp.engine.StackPasses``): the runs
of Dense layers of a network that is not one plain stack -- the VAE's encoder and decoder around
its sampling layer, the GAN's two networks, a layer of the user's own -- run on the engine, every
other layer runs itself.  The truth is the layer-by-layer pass of the same network: the same
output, input gradient and parameter gradients (the same dropout masks), on both dtypes, one and
two threads, and odd shapes; and fits of the VAE and the GAN equal to their layer-by-layer fits.
"""
import pickle
import threading
import time
import warnings

import numpy as np
import pytest
from _helpers import one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
import fastbp.engine as engine
import fastbp.training
from fastbp.nn import Dense, Dropout, Layer, Sequential

pytestmark = pytest.mark.skipif(engine._c_train is None, reason="compiled engine not built")


@pytest.fixture(autouse=True)
def on_compiled(compiled):
    """The compiled backend, whatever FASTBP_BACKEND chose (the engine runs on it only)."""
    with fastbp.use_backend("compiled"):
        yield


class Scale(Layer):
    """x * gamma, a layer of the user's own (a break between runs of Dense layers)."""

    param_names, grad_names = ("gamma",), ("dgamma",)

    def __init__(self, n, dtype, transpose=False):
        self.gamma = np.linspace(0.5, 1.5, n).astype(dtype)
        self.dgamma = np.zeros(n, dtype)
        self.transpose = transpose

    def forward(self, X, training=False):
        self.X = X
        out = X * self.gamma
        # a view that is neither C-contiguous nor what the engine would allocate
        return np.asfortranarray(out) if self.transpose else out

    def backward(self, dA, need_dX=True):
        np.sum(dA * self.X, axis=0, out=self.dgamma)
        if not need_dX:
            return None
        return np.asfortranarray(dA * self.gamma) if self.transpose else dA * self.gamma


def _layers(kind, dtype):
    """Fresh layers of a network shape, the same for the same arguments (seeded)."""
    rng = np.random.default_rng(0)
    drop = np.random.default_rng(1)
    if kind == "middle":  # Dense runs around a layer of its own, dropout inside a run
        return [Dense(7, 9, "tanh", rng=rng, dtype=dtype), Dropout(0.3, rng=drop),
                Dense(9, 5, "relu", rng=rng, dtype=dtype), Scale(5, dtype),
                Dense(5, 6, "sigmoid", rng=rng, dtype=dtype), Dense(6, 3, "identity", rng=rng,
                                                                     dtype=dtype)]
    if kind == "dropout-first":  # the input of a run dropped out: dL/dX carries the mask
        return [Scale(7, dtype, transpose=True), Dropout(0.5, rng=drop),
                Dense(7, 8, "relu", rng=rng, dtype=dtype), Dense(8, 3, "softmax", rng=rng,
                                                                 dtype=dtype)]
    if kind == "dropouts-apart":  # a Dropout last, two in a row, a rate-0 one
        return [Dropout(0.0, rng=drop), Dense(7, 8, "leaky_relu", rng=rng, dtype=dtype),
                Dropout(0.2, rng=drop), Dropout(0.4, rng=drop),
                Dense(8, 4, "elu", rng=rng, dtype=dtype), Dropout(0.25, rng=drop)]
    raise ValueError(kind)


def _pass(kind, dtype, X, on_engine, threads=None):
    net = Sequential(_layers(kind, dtype))
    if on_engine:
        passes, why = engine.make_stack_passes(net)
        assert why is None, why
        for _, _, p in passes:
            p._ready(X.shape[0]).n_threads = threads
        net.engine_passes = passes
    out = net._forward(X, True).copy()
    grad = np.cos(np.arange(out.size, dtype=np.float64)).reshape(out.shape).astype(dtype)
    dX = net._backward(grad, True)
    return out, np.array(dX), [g.copy() for g in net.grads()], net


@pytest.mark.parametrize("kind", ["middle", "dropout-first", "dropouts-apart"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [0, 1, 5, 300])
@pytest.mark.parametrize("threads", [1, 2])
def test_engine_passes_equal_the_layer_by_layer_pass(compiled, kind, dtype, rows, threads):
    X = np.random.default_rng(2).standard_normal((rows, 7)).astype(dtype)
    got, want = _pass(kind, dtype, X, True, threads), _pass(kind, dtype, X, False)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(got[:2], want[:2]):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, **tol)
    for a, b in zip(got[2], want[2]):
        np.testing.assert_allclose(a, b, **tol)
    assert got[3]._on_engine and not want[3]._on_engine


def test_engine_runs_describe_where_the_engine_runs():
    layers = _layers("dropouts-apart", np.float32)
    runs = Sequential(layers).engine_runs()
    # [Dropout(0), Dense] then [Dropout(0.4), Dense]; Dropout(0.2) and the last Dropout run alone
    assert [(start, stop) for start, stop, _, _ in runs] == [(0, 2), (3, 5)]
    assert [dense for _, _, dense, _ in runs] == [[layers[1]], [layers[4]]]
    assert runs[0][3] == {} and runs[1][3] == {0: layers[3]}  # rate 0: the identity, no draws
    middle = _layers("middle", np.float32)
    runs = Sequential(middle).engine_runs()
    assert [(start, stop) for start, stop, _, _ in runs] == [(0, 3), (4, 6)]
    assert runs[0][3] == {1: middle[1]}


def test_buffers_grow_and_a_second_call_reuses_them(compiled):
    """More rows than the last call: the engine's buffers grow; then fewer rows reuse them."""
    net = Sequential(_layers("middle", np.float32))
    ref = Sequential(_layers("middle", np.float32))
    net.engine_passes = engine.make_stack_passes(net)[0]
    for rows in (3, 40, 2):
        X = np.random.default_rng(rows).standard_normal((rows, 7)).astype(np.float32)
        np.testing.assert_allclose(net._forward(X, True), ref._forward(X, True), rtol=2e-5,
                                   atol=1e-6)
    trainer = net.engine_passes[0][2]._trainer
    assert trainer.batch_size == 40


def test_inference_and_replaced_weights(compiled):
    """A forward pass out of training runs layer by layer (no dropout: the engine's passes are
    for training); weights replaced by set_weights are the ones the engine uses next."""
    net = Sequential(_layers("middle", np.float32))
    ref = Sequential(_layers("middle", np.float32))
    net.engine_passes = engine.make_stack_passes(net)[0]
    X = np.random.default_rng(3).standard_normal((20, 7)).astype(np.float32)
    for training in (True, False):  # the same draws on both
        np.testing.assert_allclose(net._forward(X, training), ref._forward(X, training),
                                   rtol=2e-5, atol=1e-6)
        assert net._on_engine == training
    weights = [w * 2 for w in ref.get_weights()]
    ref.set_weights(weights)
    net.set_weights(weights)
    np.testing.assert_allclose(net._forward(X, True), ref._forward(X, True), rtol=2e-5, atol=1e-6)


def test_the_passes_are_not_pickled_and_leave_with_the_epoch(compiled):
    X = np.random.default_rng(4).random((64, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        vae = fastbp.VAE(2, (8,), max_iter=2, random_state=0).fit(X)
    assert vae.fit_path_.startswith("engine steps (")
    network = vae._network if hasattr(vae, "_network") else None
    for net in filter(None, [network, vae.encoder_, vae.decoder_]):
        assert net.engine_passes is None
    copy = pickle.loads(pickle.dumps(vae))
    np.testing.assert_array_equal(copy.transform(X), vae.transform(X))


def _fit(make, X, on_engine, monkeypatch):
    monkeypatch.setattr(engine, "USE_FUSED", on_engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return make().fit(X)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", [
    lambda dtype: fastbp.VAE(3, (40, 20), max_iter=3, batch_size=50, random_state=0, dtype=dtype),
    lambda dtype: fastbp.VAE(3, (40,), prior="mixture", n_prior_components=3,
                             loss="cross_entropy", max_iter=3, batch_size=50, random_state=0,
                             dtype=dtype),
    lambda dtype: fastbp.GAN(2, (32, 16), (32, 16), max_iter=3, random_state=0, dtype=dtype),
    lambda dtype: fastbp.GAN(2, (32,), (32,), generator_loss="minimax", minibatch_std=False,
                             max_iter=3, random_state=0, dtype=dtype),
], ids=["vae", "vae-mixture-bernoulli", "gan", "gan-minimax"])
def test_generative_fits_on_engine_steps_equal_the_layer_by_layer_fits(compiled, monkeypatch,
                                                                        make, dtype):
    X = np.random.default_rng(5).random((230, 12)).astype(dtype)
    got = _fit(lambda: make(dtype), X, True, monkeypatch)
    want = _fit(lambda: make(dtype), X, False, monkeypatch)
    assert got.fit_path_.startswith("engine steps (")
    assert want.fit_path_ == "layerwise: engine switched off (fastbp.engine.USE_FUSED)"
    nets = ("encoder_", "decoder_") if hasattr(got, "encoder_") else ("generator_",
                                                                        "discriminator_")
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    for name in nets:
        for a, b in zip(getattr(got, name).params(), getattr(want, name).params()):
            np.testing.assert_allclose(a, b, **tol)
    np.testing.assert_allclose(got.loss_curve_, want.loss_curve_, **tol)


@pytest.mark.parametrize("make", [
    lambda: fastbp.MLPRegressor((30, 20), solver="lbfgs", max_iter=15, dtype="float64",
                                random_state=0),
    lambda: fastbp.VAE(2, (20,), solver="lbfgs", max_iter=10, dtype="float64", random_state=0),
], ids=["regressor", "vae"])
def test_lbfgs_evaluations_on_the_engine_equal_the_layer_by_layer_ones(compiled, monkeypatch,
                                                                        make):
    """Each L-BFGS evaluation is one pass over all rows: on the engine's passes (gradients only,
    SciPy steps) the run is the layer-by-layer run."""
    rng = np.random.default_rng(6)
    X = rng.random((150, 8))
    fits = []
    for on in (True, False):
        monkeypatch.setattr(engine, "USE_FUSED", on)
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
            model.fit(X, X[:, :3].sum(1)) if isinstance(model, fastbp.MLPRegressor) else model.fit(X)
        fits.append(model)
    assert fits[0].fit_path_ == fastbp.training.LBFGS_PATH
    assert fits[1].fit_path_.startswith("layerwise: engine switched off")
    np.testing.assert_allclose(fits[0].loss_curve_, fits[1].loss_curve_, rtol=1e-9)
    for a, b in zip(fits[0]._network.params(), fits[1]._network.params()):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_inference_forward_of_runs_without_dropout_is_on_the_engine(compiled):
    """Where no run draws dropout masks, a forward pass out of training is the same pass: it
    runs on the engine too (the GAN's fakes for D's step), and backward follows it there."""
    layers = lambda: [Dense(7, 9, "tanh", rng=np.random.default_rng(0)), Scale(9, np.float32),
                      Dense(9, 2, "identity", rng=np.random.default_rng(1))]
    net, ref = Sequential(layers()), Sequential(layers())
    net.engine_passes = engine.make_stack_passes(net)[0]
    X = np.random.default_rng(7).standard_normal((33, 7)).astype(np.float32)
    np.testing.assert_allclose(net._forward(X, False), ref._forward(X, False), rtol=2e-5,
                               atol=1e-6)
    assert net._on_engine
    grad = np.ones((33, 2), np.float32)
    np.testing.assert_allclose(net._backward(grad, True), ref._backward(grad, True), rtol=2e-5,
                               atol=1e-6)


class Handing(Layer):
    """An identity that hands the next layer its input, and the layer before its gradient, as
    ``forward_as`` / ``backward_as`` make them: what a layer of the user's own may return."""

    def __init__(self, forward_as, backward_as=lambda a: a):
        self.forward_as, self.backward_as = forward_as, backward_as

    def forward(self, X, training=False):
        return self.forward_as(X)

    def backward(self, dA, need_dX=True):
        return self.backward_as(dA) if need_dX else None


def _misaligned(a):
    """a's values in a C-contiguous array whose data is not aligned for its dtype."""
    raw = np.empty(a.nbytes + 1, np.uint8)[1:]
    out = raw.view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


def _handing_net(handing):
    rng = np.random.default_rng(0)
    return Sequential([Dense(4, 5, "tanh", rng=rng), handing, Dense(5, 2, "relu", rng=rng)])


@pytest.mark.parametrize("forward_as, backward_as, error", [
    (lambda X: X.astype(np.float64), lambda g: g, TypeError),   # not the next run's dtype
    (lambda X: np.hstack([X, X]), lambda g: g, ValueError),     # wider than its input
    (lambda X: X[:, :3], lambda g: g, ValueError),              # narrower (read past its end)
    (lambda X: X, lambda g: g.astype(np.float64), TypeError),
    (lambda X: X, lambda g: g[:-1], ValueError),                # fewer rows than the forward's
    (lambda X: X, lambda g: np.hstack([g, g]), ValueError),
], ids=["forward-dtype", "forward-wide", "forward-narrow", "backward-dtype", "backward-rows",
        "backward-wide"])
def test_a_layer_handing_the_engine_wrong_arrays_gets_the_layer_by_layer_error(
        compiled, forward_as, backward_as, error):
    """A layer of the user's own that hands a run of Dense layers an input or a gradient of
    another dtype or shape is told so, as the layer-by-layer pass tells it (TypeError for the
    dtype, ValueError for the shape): the engine never reads such an array as the run's."""
    X = np.random.default_rng(8).standard_normal((6, 4)).astype(np.float32)
    for on_engine in (False, True):
        net = _handing_net(Handing(forward_as, backward_as))
        if on_engine:
            net.engine_passes = engine.make_stack_passes(net)[0]
        with pytest.raises(error):
            out = net._forward(X, True)
            net._backward(np.ones_like(out), True)


def test_misaligned_arrays_from_a_layer_of_ones_own(compiled):
    """An input or gradient that is C-contiguous but not aligned is copied before the engine
    reads it (its loads may assume the dtype's alignment): the pass equals the layer-by-layer
    pass of aligned copies."""
    X = np.random.default_rng(9).standard_normal((11, 4)).astype(np.float32)
    net = _handing_net(Handing(_misaligned, _misaligned))
    net.engine_passes = engine.make_stack_passes(net)[0]
    ref = _handing_net(Handing(np.copy))
    out, want = net._forward(X, True).copy(), ref._forward(X, True)
    assert net.engine_passes[1][2]._X.flags.aligned  # what the second run's engine call read
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=1e-6)
    grad = np.cos(np.arange(out.size, dtype=np.float32)).reshape(out.shape)
    np.testing.assert_allclose(net._backward(grad, True), ref._backward(grad, True), rtol=2e-5,
                               atol=1e-6)
    for a, b in zip(net.grads(), ref.grads()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_threads_starting_at_once_share_one_engine_and_lock(compiled, monkeypatch):
    """Two threads whose first passes start together get the same engine and the same lock: two
    engines under two locks would let one thread's pass run on the engine the other one uses."""
    monkeypatch.setattr(engine, "_shared", {})
    made = engine._c_train.Engine

    def slow_engine(*args):  # the other thread starts while this one makes the engine
        time.sleep(0.1)
        return made(*args)

    monkeypatch.setattr(engine._c_train, "Engine", slow_engine)
    got = [None, None]

    def first_use(i):
        got[i] = engine._shared_engine(np.dtype(np.float32))

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got[0] is got[1] is engine._shared[False]


def test_a_layer_of_ones_own_raising_in_backward_leaves_no_step_half_taken(compiled, monkeypatch):
    """Layer by layer, an exception from a layer's backward pass leaves the step untaken; on the
    engine's passes too: a run after a layer of the user's own keeps its gradients for the
    optimizer's step (its step is not taken inside its backward pass)."""
    class Failing(Scale):
        calls = 0

        def backward(self, dA, need_dX=True):
            Failing.calls += 1
            if Failing.calls == 3:
                raise RuntimeError("the third backward pass fails")
            return super().backward(dA, need_dX)

    X = np.random.default_rng(9).standard_normal((40, 7)).astype(np.float32)
    results = []
    for on in (True, False):
        monkeypatch.setattr(engine, "USE_FUSED", on)
        Failing.calls = 0
        net = Sequential([Dense(7, 9, "tanh", rng=np.random.default_rng(0)), Failing(9, np.float32),
                          Dense(9, 2, "identity", rng=np.random.default_rng(1))])
        state = fastbp.training.TrainState()
        with pytest.raises(RuntimeError, match="third"):
            fastbp.training.fit_network(net, "squared_error", X, np.ascontiguousarray(X[:, :2]),
                                        fastbp.training.TrainConfig(max_iter=5, batch_size=40),
                                        state, rng=0)
        results.append(([p.copy() for p in net.params()], state.optimizer.t))
    (got, t_got), (want, t_want) = results
    assert t_got == t_want
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
