"""``checkpoint_segments``: memory for time in the training passes (issue 12, item 3).

The truth a checkpointed network is held to is the same network storing every layer's values
(``checkpoint_segments=None``): the same loss and, bit for bit, the same gradients and fits (the
same kernels on the same values in the same order), with the dropout masks drawn once; the
memory saved is counted from the arrays held, against a count made by hand.
"""
import pickle

import numpy as np
import pytest
from _helpers import one_blas_thread  # noqa: F401  (autouse fixture)
from sklearn.base import clone

import fastbp
import fastbp.engine as engine
from fastbp import GAN, VAE, Autoencoder, MLPClassifier, MLPRegressor
from fastbp.kernels import ACTIVATIONS
from fastbp.models._generative import PenalisedSequential, Reparameterize, SparsityPenalty
from fastbp.nn import Dense, Dropout, Layer, Sequential, make_mlp
from fastbp.training import TrainConfig, make_optimizer

pytestmark = pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")

HOURGLASS = (20, 10, 5, 3, 5, 10, 20)  # 784-1000-500-250-30-250-500-1000-784, scaled down
SEGMENTS = (1, 2, 3, "sqrt", 8, 50)


def _step(net, X, Y, loss="squared_error"):
    """One forward, loss and backward; the value and copies of the gradients."""
    value = net.loss_and_grad(loss, X, Y)
    return value, [g.copy() for g in net.grads()]


def _same_step(build, segments, X, Y, loss="squared_error"):
    """The step of the network ``build()`` makes with ``segments`` equals, bit for bit, the one
    storing everything (two steps, two batch sizes: buffers per size); the generators of the
    dropout layers end where the stored net's do (every mask drawn once)."""
    stored, checkpointed = build(), build()
    checkpointed.checkpoint_segments = segments
    for rows in (len(X), len(X) - 3):
        want, got = _step(stored, X[:rows], Y[:rows], loss), _step(checkpointed, X[:rows], Y[:rows],
                                                                  loss)
        assert got[0] == want[0]
        for g, w in zip(got[1], want[1]):
            np.testing.assert_array_equal(g, w)
    for a, b in zip(stored.layers, checkpointed.layers):
        if isinstance(a, Dropout):
            assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradients_equal_the_stored_ones(backend, dtype, activation):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((11, 20)).astype(dtype)
    for dropout, segments in ((0.0, 2), (0.3, "sqrt"), (0.3, 8)):
        _same_step(lambda: make_mlp(20, HOURGLASS, 20, activation, dropout=dropout, dtype=dtype,
                                    rng=1), segments, X, X)


@pytest.mark.parametrize("segments", SEGMENTS)
def test_every_segment_count_and_loss(backend, segments):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 20)).astype(np.float32)
    labels = rng.integers(0, 4, 9)
    _same_step(lambda: make_mlp(20, HOURGLASS, 4, "tanh", dropout=0.2, rng=2), segments, X, labels,
               "softmax_cross_entropy")


class _Affine(Layer):
    """A layer of one's own (the fastbp.nn.Layer docstring's example), keeping its input."""
    param_names, grad_names = ("gamma", "beta"), ("dgamma", "dbeta")

    def __init__(self, n, dtype=np.float32):
        self.gamma = np.linspace(0.5, 1.5, n).astype(dtype)
        self.beta = np.linspace(-0.1, 0.1, n).astype(dtype)
        self.dgamma, self.dbeta = np.zeros(n, dtype), np.zeros(n, dtype)

    def forward(self, X, training=False):
        self.X = X
        return X * self.gamma + self.beta

    def backward(self, dA, need_dX=True):
        np.sum(dA * self.X, axis=0, out=self.dgamma)
        np.sum(dA, axis=0, out=self.dbeta)
        return dA * self.gamma if need_dX else None


def _layers(kind):
    """Networks of every shape a segment boundary meets."""
    def dense(n_in, n_out, activation="gelu"):
        return Dense(n_in, n_out, activation, rng=n_in * 100 + n_out)

    def drop(seed):
        return Dropout(0.4, rng=seed)

    if kind == "dropouts-doubled-and-last":
        return Sequential([drop(1), dense(8, 6), drop(2), drop(3), dense(6, 5, "relu"),
                           dense(5, 8, "elu"), drop(4)])
    if kind == "own-layer":
        return Sequential([dense(8, 6), _Affine(6), drop(5), dense(6, 5), _Affine(5),
                           dense(5, 8, "identity"), _Affine(8)])
    if kind == "sparse":
        return PenalisedSequential([dense(8, 6), dense(6, 3, "sigmoid"), SparsityPenalty("kl", 0.5),
                                    dense(3, 6), dense(6, 8, "identity")])
    prior = Reparameterize(3, rng=7, prior="mixture", n_prior_components=2, dtype=np.float32)
    return PenalisedSequential([dense(8, 6), dense(6, 6, "identity"), prior, dense(3, 6),
                                drop(6), dense(6, 8, "identity")], decoder_variance="learned")


@pytest.mark.parametrize("kind", ["dropouts-doubled-and-last", "own-layer", "sparse", "vae"])
@pytest.mark.parametrize("segments", [1, 2, 4])
def test_other_layers_run_once_and_keep_their_own_buffers(backend, kind, segments):
    """Penalty layers (the sparse code's, the VAE's sampling with its draw) and a layer of one's
    own are never run again; dropout next to them, doubled or last still reuses its masks."""
    X = np.random.default_rng(3).random((10, 8), dtype=np.float32)
    _same_step(lambda: _layers(kind), segments, X, X)


def test_backward_to_the_input_and_gradcheck(backend):
    """dL/dX (what the GAN's generator receives) is the stored pass's; finite differences agree."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((7, 20))
    dOut = rng.standard_normal((7, 20))
    nets = [make_mlp(20, HOURGLASS, 20, "silu", dtype=np.float64, rng=5) for _ in range(2)]
    nets[1].checkpoint_segments = 3
    got = []
    for net in nets:
        net.forward(X, training=True)
        got.append(net.backward(dOut, need_dX=True).copy())
    np.testing.assert_array_equal(got[1], got[0])
    assert fastbp.gradcheck(nets[1], X[:4], X[:4], loss="squared_error") < 1e-6


def _hand_count(n, widths, segments, itemsize):
    """The bytes a checkpointed relu stack of these widths holds for batch n, counted from the
    class docstring: each segment's last output but the network's (A in Z's buffer) as a
    checkpoint; one workspace for the largest segment's other outputs; one dZ buffer as wide as
    the widest layer, two dX buffers as wide as the widest input; the loss gradient."""
    outs = widths[1:]
    bounds = np.cumsum([0] + segments)
    checkpoints = sum(outs[hi - 1] for hi in bounds[1:-1])
    workspace = max(sum(outs[lo:hi - 1]) + (outs[hi - 1] if hi == len(outs) else 0)
                    for lo, hi in zip(bounds, bounds[1:]))
    columns = checkpoints + workspace + max(outs) + 2 * max(widths[:-1]) + outs[-1]
    return n * columns * itemsize


def test_the_memory_saved_is_real(backend):
    """The layers' own per-batch buffers are not made; what is held is the hand count (batch 16,
    float32: every view a whole number of cache lines), well under the stored pass's."""
    widths = [20, *HOURGLASS, 20]
    X = np.random.default_rng(5).random((16, 20), dtype=np.float32)
    stored = make_mlp(20, HOURGLASS, 20, rng=0)
    stored.loss_and_grad("squared_error", X, X)
    # relu layers: Z, A, dZ; the identity output: Z (= A), dZ; dX per layer; the loss gradient
    assert stored.buffer_nbytes() == 16 * 4 * (3 * sum(widths[1:-1]) + 2 * 20 + sum(widths[:-1])
                                               + 20)
    for segments, groups in ((1, [8]), (2, [4, 4]), ("sqrt", [3, 3, 2]), (8, [1] * 8)):
        net = make_mlp(20, HOURGLASS, 20, rng=0)
        net.checkpoint_segments = segments
        net.loss_and_grad("squared_error", X, X)
        assert all(layer._cache.nbytes() == 0 for layer in net.layers)
        assert net.buffer_nbytes() == _hand_count(16, widths, groups, 4)
        assert net.buffer_nbytes() < 0.5 * stored.buffer_nbytes()


def test_switching_drops_the_old_buffers():
    X = np.random.default_rng(6).random((16, 20), dtype=np.float32)
    net = make_mlp(20, HOURGLASS, 20, dropout=0.1, rng=0)
    net.loss_and_grad("squared_error", X, X)
    stored = net.buffer_nbytes()
    net.checkpoint_segments = 2
    assert net.buffer_nbytes() == 16 * 20 * 4  # only the loss gradient's, until the next step
    net.loss_and_grad("squared_error", X, X)
    assert 0 < net.buffer_nbytes() < stored
    net.checkpoint_segments = None
    net.loss_and_grad("squared_error", X, X)
    assert net.buffer_nbytes() == stored


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "recompute", "SQRT", [2]])
def test_bad_values_are_refused_naming_the_parameter(bad):
    with pytest.raises(ValueError, match="checkpoint_segments"):
        make_mlp(4, (3,), 2).checkpoint_segments = bad
    with pytest.raises(ValueError, match="checkpoint_segments"):
        Sequential([Dense(4, 2)], checkpoint_segments=bad)
    X, y = np.random.default_rng(0).random((20, 4)), np.arange(20) % 2
    for model, data in ((MLPClassifier((3,), checkpoint_segments=bad), (X, y)),
                        (Autoencoder(2, (3,), checkpoint_segments=bad), (X,)),
                        (VAE(2, (3,), checkpoint_segments=bad), (X,)),
                        (GAN(2, (3,), (3,), checkpoint_segments=bad), (X,))):
        with pytest.raises(ValueError, match="checkpoint_segments"):
            model.fit(*data)
        assert not hasattr(model, "coefs_")


FITS = [
    ("classifier-dropout", lambda **kw: MLPClassifier((12, 8, 8), dropout=0.2, **kw), "labels"),
    ("regressor-float64", lambda **kw: MLPRegressor((12, 8), dtype="float64", solver="sgd", **kw),
     "values"),
    ("autoencoder-denoising", lambda **kw: Autoencoder(3, (12, 8), noise="mask", **kw), "data"),
    ("autoencoder-sparse", lambda **kw: Autoencoder(3, (12, 8), sparsity="l1", **kw), "data"),
    ("vae", lambda **kw: VAE(2, (12, 8), **kw), "data"),
    ("gan", lambda **kw: GAN(2, (12, 8), (12, 8), **kw), "data"),
]


@pytest.mark.parametrize("name, make, kind", FITS, ids=[case[0] for case in FITS])
def test_fits_equal_the_stored_fits(backend, monkeypatch, name, make, kind):
    rng = np.random.default_rng(7)
    X = rng.random((64, 6))
    data = {"labels": (X, (X[:, 0] > X[:, 1]).astype(int)), "values": (X, X[:, :2] - X[:, 2:4]),
            "data": (X,)}[kind]
    kw = dict(max_iter=4, batch_size=16, random_state=0)
    monkeypatch.setattr(engine, "USE_FUSED", False)  # stored layer by layer too: the same kernels
    stored = make(**kw).fit(*data)
    monkeypatch.undo()
    checkpointed = make(checkpoint_segments=2, **kw).fit(*data)
    assert checkpointed.loss_curve_ == stored.loss_curve_
    for a, b in zip(checkpointed.network_.params(), stored.network_.params()):
        np.testing.assert_array_equal(a, b)
    if name != "gan":  # on the compiled backend: the engine's passes, each segment run again
        assert checkpointed.fit_path_ == ("layerwise: numpy backend" if backend == "numpy" else
                                          f"engine steps ({ENGINE_EPOCHS.format(2)})")


ENGINE_EPOCHS = "checkpoint_segments={} (the engine's epochs store every layer's values)"


def test_the_engines_epochs_decline_its_passes_recompute(on_compiled, monkeypatch):
    """The engine's whole epochs store everything and decline; its passes inside each step take
    the segments as runs, share one workspace and run each segment but the last again before
    its backward pass (counted), with the stored fit's result."""
    X = np.random.default_rng(8).random((30, 6), dtype=np.float32)
    model = Autoencoder(3, (12, 8), max_iter=3, random_state=0)
    engine_fit = model.fit(X).network_.get_weights()
    replays = []
    replay = engine.StackPasses.replay
    monkeypatch.setattr(engine.StackPasses, "replay", lambda self: (replays.append(self),
                                                                    replay(self))[1])
    model.set_params(checkpoint_segments="sqrt").fit(X)  # 4 Dense layers: 2 segments
    assert model.fit_path_ == f"engine steps ({ENGINE_EPOCHS.format(repr('sqrt'))})"
    # one minibatch per epoch (30 rows): the first of the 2 segments again in each step
    assert len(replays) == model.n_iter_ and len({id(r) for r in replays}) == 1
    for a, b in zip(model.network_.params(), engine_fit):  # the engine's fit, to float tolerance
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    net = model.network_
    optimizer = make_optimizer(net, TrainConfig(), 8)
    assert engine.make_trainer(net, "squared_error", optimizer, 8) is None
    assert engine.make_predictor(net) is not None  # prediction is unchanged
    np.testing.assert_allclose(net.predict(X), net._forward(X, False, keep=False), rtol=1e-5,
                               atol=1e-6)


@pytest.fixture
def on_compiled(compiled):
    with fastbp.use_backend("compiled"):
        yield


def test_parameters_round_trip(tmp_path):
    X = np.random.default_rng(9).random((40, 6))
    model = Autoencoder(3, (8,), max_iter=2, random_state=0, checkpoint_segments=2).fit(X)
    assert model.get_params()["checkpoint_segments"] == 2
    assert clone(model).checkpoint_segments == 2
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.checkpoint_segments == 2
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    again = pickle.loads(pickle.dumps(model))
    assert again.network_.checkpoint_segments == 2
    for a, b in zip(again.partial_fit(X).network_.params(), model.partial_fit(X).network_.params()):
        np.testing.assert_array_equal(a, b)
    net = pickle.loads(pickle.dumps(make_mlp(6, (4,), 6, rng=0)))
    assert net.checkpoint_segments is None and net._segments is None


def test_the_engines_segments_share_one_workspace(on_compiled):
    """On the engine's passes the segments' values share one workspace: what a step holds of
    Z, A and D is the largest segment's plus the checkpoints, not every layer's (the bytes
    counted from the arrays the engine runs on, a shared workspace once)."""
    sizes = [20, 40, 30, 10, 30, 40, 20]

    def values(segments):
        net = Sequential([Dense(d, k, "relu" if i < 5 else "identity", rng=i)
                          for i, (d, k) in enumerate(zip(sizes, sizes[1:]))],
                         checkpoint_segments=segments)
        passes, why = engine.make_stack_passes(net)
        assert why is None
        net.engine_passes = passes
        X = np.random.default_rng(0).random((64, 20), dtype=np.float32)
        net._backward(np.ones_like(net._forward(X, True)), False)
        seen = {}
        for _, _, run in passes:
            for a in run._trainer._Z + run._trainer._A + run._trainer._D:
                if a is not None:
                    base = a if a.base is None else a.base
                    seen[id(base)] = base.nbytes
        return sum(seen.values()), len(passes)

    stored, one = values(None)
    checkpointed, runs = values(3)
    assert (one, runs) == (1, 3)
    # largest segment (40 + 20 wide, the last, its output in the workspace) + checkpoints 30, 30
    row = 64 * 4
    assert stored == row * sum(sizes[1:]) and checkpointed == row * (40 + 20 + 30 + 30)
