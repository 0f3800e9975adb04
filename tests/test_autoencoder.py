"""fastbp.Autoencoder: shapes, PCA equivalence, denoising, sparsity, save/load, bad input, the CLI.

Training tests run on the active backend (CI runs the suite with FASTBP_BACKEND=compiled and
=numpy); they are seeded and small.
"""
import pickle
import warnings

import numpy as np
import pytest
from scipy.linalg import subspace_angles

import fastbp
from _helpers import assert_refit_fails_unchanged, one_blas_thread  # noqa: F401  (autouse fixture)
from fastbp.models import _generative
from fastbp import training as _training
from fastbp.models import mlp
from fastbp.models.autoencoder import Autoencoder
from fastbp.nn import Dense, Sequential

pytestmark = pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")


def low_rank(n=400, d=8, k=3, noise=0.05, seed=0):
    """Rows x = mean + z diag(s) Q^T + noise: k strong directions, a clear spectral gap."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((d, k)))[0]
    Z = rng.standard_normal((n, k)) * np.array([3.0, 2.5, 2.0][:k])
    return Z @ Q.T + rng.standard_normal(d) + noise * rng.standard_normal((n, d))


def small(**params):
    defaults = dict(n_components=3, encoder_layer_sizes=(16,), max_iter=30, random_state=0)
    return Autoencoder(**{**defaults, **params})


# ------------------------------------------------------------------------------------ the shape
def test_hourglass_default_mirrors_the_encoder():
    ae = Autoencoder(encoder_layer_sizes=(1000, 500, 250), n_components=30, max_iter=1,
                     batch_size=4).fit(np.random.default_rng(0).random((8, 784)))
    sizes = [ae.coefs_[0].shape[0]] + [W.shape[1] for W in ae.coefs_]
    assert sizes == [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    assert ae.transform(np.zeros((2, 784))).shape == (2, 30)
    assert ae.inverse_transform(np.zeros((2, 30))).shape == (2, 784)


@pytest.mark.parametrize("params, widths", [
    (dict(encoder_layer_sizes=(6,), n_components=2, decoder_layer_sizes=(4, 7)), [5, 6, 2, 4, 7, 5]),
    (dict(encoder_layer_sizes=(), n_components=12), [5, 12, 5]),  # overcomplete
])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataDimensionalityWarning")  # overcomplete
def test_any_shape(params, widths):
    ae = Autoencoder(max_iter=2, random_state=0, **params).fit(np.random.default_rng(0).random((20, 5)))
    assert [ae.coefs_[0].shape[0]] + [W.shape[1] for W in ae.coefs_] == widths


# ------------------------------------------------------------------------------------ the maths
def test_linear_autoencoder_spans_the_pca_subspace():
    """With identity activations the decoder spans the top-k principal subspace."""
    X = low_rank()
    ae = Autoencoder(n_components=3, encoder_layer_sizes=(), activation="identity",
                     learning_rate_init=0.01, max_iter=300, tol=1e-7, random_state=0).fit(X)
    decoder_span = ae.decoder_.dense_layers[-1].W.T  # d x k: d(h) = h W + b
    pca = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)[2][:3].T
    angle = float(np.max(subspace_angles(decoder_span.astype(np.float64), pca)))
    assert angle < 0.05, angle


def test_transform_inverse_transform_reconstruct_and_score_agree():
    X = low_rank(n=200)
    ae = small(max_iter=50, learning_rate_init=0.01).fit(X)
    codes = ae.transform(X)
    np.testing.assert_allclose(ae.inverse_transform(codes), ae.reconstruct(X), rtol=1e-5, atol=1e-5)
    error = np.sum((ae.reconstruct(X).astype(np.float64) - X) ** 2, axis=1)
    np.testing.assert_allclose(ae.score_samples(X), -error, rtol=1e-4)
    assert ae.score(X) == pytest.approx(-error.mean(), rel=1e-4)
    assert ae.loss_curve_[-1] < 0.5 * ae.loss_curve_[0]
    assert ae.score(X) > small(max_iter=1).fit(X).score(X)
    np.testing.assert_array_equal(ae.fit_transform(X), ae.transform(X))


def test_cross_entropy_for_inputs_in_unit_interval():
    X = np.clip(low_rank(n=200) / 10 + 0.5, 0, 1)
    ae = small(loss="cross_entropy", max_iter=40).fit(X)
    r = ae.reconstruct(X)
    assert ae.loss_ == "sigmoid_cross_entropy" and r.min() > 0 and r.max() < 1
    assert ae.score(X) > small(loss="cross_entropy", max_iter=1).fit(X).score(X)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        small(loss="cross_entropy").fit(X * 2)


# -------------------------------------------------------------------------- the training paths
def spy_fit_network(monkeypatch):
    """Record what the autoencoder hands the generic training loop, epoch by epoch."""
    calls = []
    original = mlp.fit_network

    def spy(network, loss, X, Y, config, state=None, *, callback=None, **kwargs):
        record = {"network": network, "Y": Y, "inputs": [X.copy()]}
        calls.append(record)

        def after_epoch(state):
            stop = callback(state) if callback else False
            record["inputs"].append(X.copy())
            return stop
        return original(network, loss, X, Y, config, state, callback=after_epoch, **kwargs)

    monkeypatch.setattr(mlp, "fit_network", spy)
    return calls


def test_plain_autoencoder_trains_x_to_x_on_a_plain_dense_stack(monkeypatch):
    calls = spy_fit_network(monkeypatch)
    X = low_rank(n=100)
    small(max_iter=3).fit(X)
    (call,) = calls
    assert type(call["network"]) is Sequential  # what the compiled fast path takes
    assert all(isinstance(layer, Dense) for layer in call["network"].layers)
    np.testing.assert_array_equal(call["Y"], X.astype(np.float32))
    np.testing.assert_array_equal(call["inputs"][0], call["Y"])


@pytest.mark.parametrize("noise, level", [("gaussian", 0.3), ("mask", 0.25)])
def test_denoising_draws_fresh_noise_every_epoch_against_clean_targets(monkeypatch, noise, level):
    calls = spy_fit_network(monkeypatch)
    X = low_rank(n=300)
    small(max_iter=4, noise=noise, noise_level=level, tol=0).fit(X)
    (call,) = calls
    assert type(call["network"]) is Sequential
    clean = call["Y"]
    np.testing.assert_array_equal(clean, X.astype(np.float32))
    inputs = call["inputs"]
    assert len(inputs) == 5 and all(not np.array_equal(a, b) for a, b in zip(inputs, inputs[1:]))
    for noisy in inputs:
        if noise == "gaussian":
            assert np.std(noisy - clean) == pytest.approx(level, rel=0.05)
        else:
            assert np.mean(noisy == 0) == pytest.approx(level, abs=0.03)
            np.testing.assert_array_equal(noisy[noisy != 0], clean[noisy != 0])


def test_denoising_autoencoder_removes_noise():
    X = low_rank(n=400)
    rng = np.random.default_rng(1)
    noisy = X + 0.5 * rng.standard_normal(X.shape)
    ae = small(encoder_layer_sizes=(), activation="identity", noise="gaussian", noise_level=0.5,
               learning_rate_init=0.01, max_iter=300).fit(X)
    before = np.mean(np.sum((noisy - X) ** 2, axis=1))
    after = np.mean(np.sum((ae.reconstruct(noisy) - X) ** 2, axis=1))
    assert after < 0.5 * before, (after, before)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataDimensionalityWarning")  # overcomplete
def test_l1_sparsity_shrinks_the_code():
    X = low_rank(n=300)
    settings = dict(n_components=12, code_activation="relu", max_iter=100, learning_rate_init=0.01)
    plain = small(**settings).fit(X).transform(X)
    model = small(sparsity="l1", sparsity_weight=0.1, **settings).fit(X)
    assert type(model.network_) is _generative.PenalisedSequential
    sparse = model.transform(X)
    assert np.abs(sparse).mean() < 0.5 * np.abs(plain).mean()
    assert np.mean(sparse == 0) > np.mean(plain == 0) + 0.2


def test_kl_sparsity_drives_mean_activation_to_rho():
    X = low_rank(n=300)
    ae = small(n_components=6, max_iter=200, sparsity="kl", sparsity_weight=1.0,
               sparsity_target=0.1, learning_rate_init=0.01).fit(X)
    assert ae.encoder_.dense_layers[-1].activation == "sigmoid"
    np.testing.assert_allclose(ae.transform(X).mean(axis=0), 0.1, atol=0.03)


def test_which_penalised_networks_the_engine_runs(compiled):
    """The engine computes a sparsity penalty on a hidden layer's output itself; a penalty on the
    output or before a Dropout, or a layer it does not know, leaves the fit to the Python loop,
    with the reason."""
    fused = pytest.importorskip("fastbp.engine")
    from fastbp.models._generative import PenalisedSequential, SparsityPenalty
    from fastbp.nn import Dropout, make_mlp
    sparse = small(max_iter=1, sparsity="l1").fit(low_rank(n=50))
    enc, dec = make_mlp(6, [5], 3, rng=0), make_mlp(3, [5], 6, rng=1)
    cases = [
        (sparse.network_, None),
        (PenalisedSequential(enc.layers + dec.layers + [SparsityPenalty("l1", 0.1)]),
         "a penalty layer on the output or before a Dropout"),
        (PenalisedSequential(enc.layers + [SparsityPenalty("kl", 0.1), Dropout(0.2, rng=0)]
                             + dec.layers), "a penalty layer on the output or before a Dropout"),
        (PenalisedSequential(enc.layers + [SparsityPenalty("l1", 0.1)] + dec.layers,
                             decoder_variance=0.5), "a Gaussian decoder variance"),
    ]
    with fastbp.use_backend("compiled"):
        for network, reason in cases:
            optimizer = _training.make_optimizer(network, _training.TrainConfig(), 50)
            got = fused.engine_decline(network, "squared_error", optimizer, 50)
            assert got == (reason and f"not a plain Dense/Dropout stack ({reason})")
            made = fused.make_trainer(network, "squared_error", optimizer, 50)
            assert (made is None) == (reason is not None)


def test_partial_fit_warm_start_and_early_stopping():
    X = low_rank(n=200)
    ae = small(max_iter=5)
    ae.partial_fit(X).partial_fit(X)
    assert ae.n_iter_ == 2
    ae.set_params(warm_start=True).fit(X)
    assert ae.n_iter_ == 7
    stopped = small(max_iter=500, early_stopping=True, n_iter_no_change=3, tol=1e-2).fit(X)
    assert stopped.n_iter_ < 500 and len(stopped.validation_scores_) == stopped.n_iter_
    assert stopped.best_validation_score_ == max(stopped.validation_scores_)


# -------------------------------------------------------------------------- persistence, params
@pytest.mark.parametrize("params", [{}, dict(sparsity="kl"), dict(noise="mask", noise_level=0.2),
                                    dict(loss="cross_entropy", dtype="float64")])
def test_save_load_and_pickle_round_trip(tmp_path, params):
    X = np.clip(low_rank(n=60) / 10 + 0.5, 0, 1)
    ae = small(max_iter=3, **params).fit(X)
    path = tmp_path / "ae.npz"
    ae.save(path)
    for twin in (fastbp.load(path), pickle.loads(pickle.dumps(ae))):
        assert type(twin) is Autoencoder and twin.get_params() == ae.get_params()
        np.testing.assert_array_equal(twin.transform(X), ae.transform(X))
        np.testing.assert_array_equal(twin.reconstruct(X), ae.reconstruct(X))
        assert twin.loss_curve_ == ae.loss_curve_ and twin.n_iter_ == ae.n_iter_
        assert twin.encoder_.layers[0] is twin.network_.layers[0]  # still one set of weights


def test_clone_and_params():
    sklearn_base = pytest.importorskip("sklearn.base")
    ae = small(noise="gaussian", sparsity="l1")
    twin = sklearn_base.clone(ae)
    assert twin.get_params() == ae.get_params() and "n_components=3" in repr(ae)
    assert set(ae.get_params()) >= {"n_components", "encoder_layer_sizes", "decoder_layer_sizes",
                                    "solver", "learning_rate", "early_stopping", "dtype", "n_threads"}


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("params, match", [
    (dict(n_components=0), "n_components"),
    (dict(n_components=2.5), "n_components"),
    (dict(encoder_layer_sizes=(4, 0)), "encoder_layer_sizes"),
    (dict(noise="gaussian", noise_level=-0.1), "noise_level"),
    (dict(noise_level=float("nan")), "noise_level"),
    (dict(noise="mask", noise_level=1.0), "noise_level"),
    (dict(noise="salt"), "noise"),
    (dict(sparsity="l1", sparsity_weight=-1), "sparsity_weight"),
    (dict(sparsity="kl", sparsity_target=0), "sparsity_target"),
    (dict(sparsity="kl", code_activation="relu"), "sigmoid"),
    (dict(sparsity="l1", solver="gd", learning_rate="backtracking"), "backtracking"),
    (dict(loss="hinge"), "loss"),
    (dict(learning_rate_init=-1), "learning_rate_init"),
    (dict(activation="swish"), "activation"),
])
def test_bad_parameters_raise_and_leave_the_model_alone(params, match):
    X = low_rank(n=40)
    assert_refit_fails_unchanged(small(max_iter=2).fit(X), X, params, match)


@pytest.mark.parametrize("X, match", [
    (np.full((5, 8), np.nan), "NaN"),
    (np.full((5, 8), np.inf), "infinity"),
    (np.zeros((0, 8)), "0 sample"),
    (np.zeros((5, 0)), "0 feature"),
    (np.zeros(8), "2D"),
])
def test_bad_data_raise(X, match):
    with pytest.raises(ValueError, match=match):
        small().fit(X)


def test_wrong_feature_counts_name_both(tmp_path):
    ae = small(max_iter=2).fit(low_rank(n=40))
    for method in (ae.transform, ae.reconstruct, ae.score):
        with pytest.raises(ValueError, match="7 features.*expecting 8"):
            method(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="expecting 3"):
        ae.inverse_transform(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="NaN"):
        ae.transform(np.full((3, 8), np.nan))
    with pytest.raises(fastbp.NotFittedError):
        small().transform(np.zeros((3, 8)))


