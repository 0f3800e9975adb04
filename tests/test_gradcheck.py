"""Backprop against central finite differences on random nets: every activation, every loss."""
import warnings

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread, quiet_fit, smooth_regression  # noqa: F401  (autouse fixture)

import fastbp
from fastbp import kernels
from fastbp.models import _generative
from fastbp.nn import Dense, Dropout, Sequential, make_mlp

LOSS_TARGETS = ["squared_error", "softmax_cross_entropy", "softmax_cross_entropy[one_hot]",
                "sigmoid_cross_entropy"]


def _target(kind, rng, n, k):
    if kind == "squared_error":
        return kind, rng.standard_normal((n, k))
    if kind == "softmax_cross_entropy":
        return kind, rng.integers(0, k, n)
    if kind == "softmax_cross_entropy[one_hot]":
        return "softmax_cross_entropy", np.eye(k)[rng.integers(0, k, n)]
    return kind, (rng.random((n, k)) < 0.5).astype(float)


@pytest.mark.parametrize("loss_kind", LOSS_TARGETS)
@pytest.mark.parametrize("activation", sorted(kernels.ACTIVATIONS))
def test_random_nets_every_activation_and_loss(backend, activation, loss_kind):
    rng = np.random.default_rng(abs(hash((activation, loss_kind))) % 2**32)
    n, d, k = 6, 4, 3
    net = make_mlp(d, (5, 4), k, activation=activation, output_activation="identity",
                   dtype=np.float64, rng=rng)
    loss, Y = _target(loss_kind, rng, n, k)
    X = rng.standard_normal((n, d))
    worst, details = fastbp.gradcheck(net, X, Y, loss=loss, return_details=True)
    assert worst <= 1e-6, details
    assert set(details) == {"W1", "b1", "W2", "b2", "W3", "b3"}


@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_activation_parameter(activation):
    rng = np.random.default_rng(5)
    net = make_mlp(3, (4,), 2, activation=activation, activation_alpha=0.3, dtype=np.float64, rng=rng)
    assert net.layers[0].alpha == 0.3
    assert fastbp.gradcheck(net, rng.standard_normal((5, 3)), rng.standard_normal((5, 2))) <= 1e-6


@pytest.mark.parametrize("output_activation", ["sigmoid", "softmax", "tanh"])
def test_non_identity_output_layers(output_activation):
    rng = np.random.default_rng(6)
    net = make_mlp(3, (4,), 3, activation="gelu", output_activation=output_activation,
                   dtype=np.float64, rng=rng)
    assert fastbp.gradcheck(net, rng.standard_normal((5, 3)), rng.standard_normal((5, 3))) <= 1e-6


def test_dropout_is_checked_with_fixed_masks():
    rng = np.random.default_rng(7)
    net = make_mlp(4, (6, 5), 3, activation="tanh", dropout=0.3, dtype=np.float64, rng=rng)
    X, Y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    assert fastbp.gradcheck(net, X, Y, loss="softmax_cross_entropy") <= 1e-6


def test_float32_network_is_checked_in_float64():
    rng = np.random.default_rng(8)
    net = make_mlp(4, (5,), 2, activation="sigmoid", rng=rng)
    assert net.dtype == np.float32
    assert fastbp.gradcheck(net, rng.standard_normal((6, 4)), rng.standard_normal((6, 2))) <= 1e-6
    assert net.dtype == np.float32  # the network itself is left alone


def test_fitted_estimators():
    X, y = blobs(60, 4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fastbp.MLPClassifier((6,), max_iter=5, random_state=0).fit(X, y)
        binary = fastbp.MLPClassifier((6,), activation="elu", max_iter=5, random_state=0).fit(X, y > 0)
        multilabel_y = np.c_[y == 0, y > 0, X[:, 0] > 0].astype(int)
        multi = fastbp.MLPClassifier((6,), max_iter=5, random_state=0).fit(X, multilabel_y)
        Xr, Yr = smooth_regression(60)
        reg = fastbp.MLPRegressor((6, 5), activation="softplus", max_iter=5, random_state=0).fit(Xr, Yr)
    assert fastbp.gradcheck(clf, X[:5], y[:5]) <= 1e-6
    assert fastbp.gradcheck(binary, X[:5], y[:5] > 0) <= 1e-6
    assert fastbp.gradcheck(multi, X[:5], multilabel_y[:5]) <= 1e-6
    assert fastbp.gradcheck(reg, Xr[:5], Yr[:5], max_entries=10) <= 1e-6
    with pytest.raises(fastbp.NotFittedError):
        fastbp.gradcheck(fastbp.MLPRegressor(), Xr, Yr)


class _BrokenDense(Dense):
    """A layer whose backward forgets the activation's derivative."""

    def _backward(self, dA, need_dX):
        activation, self.activation = self.activation, "identity"
        try:
            return super()._backward(dA, need_dX)
        finally:
            self.activation = activation


def test_a_wrong_backward_is_caught():
    rng = np.random.default_rng(9)
    hidden = _BrokenDense(3, 4, "tanh", dtype=np.float64, rng=rng)
    net = Sequential([hidden, Dropout(0.0), Dense(4, 2, "identity", dtype=np.float64, rng=rng)])
    X = rng.standard_normal((5, 3)) * 2
    assert fastbp.gradcheck(net, X, rng.standard_normal((5, 2))) > 1e-2


@pytest.mark.parametrize("sparsity", ["l1", "kl"])
def test_sparse_autoencoder_penalty_is_checked(sparsity, monkeypatch):
    """The check differentiates the whole objective, penalty included: a right backward passes,
    one that drops the penalty's gradient fails."""
    X = np.random.default_rng(10).random((30, 5))
    ae = quiet_fit(fastbp.Autoencoder(n_components=3, encoder_layer_sizes=(4,), activation="tanh",
                                    sparsity=sparsity, sparsity_weight=0.5, max_iter=2,
                                    random_state=0), X)
    assert fastbp.gradcheck(ae, X[:6]) <= 1e-6
    monkeypatch.setattr(_generative.SparsityPenalty, "_backward", lambda self, dA, need_dX: dA)
    assert fastbp.gradcheck(ae, X[:6]) > 1e-2


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
@pytest.mark.parametrize("prior", [None, [[1.5, 0.0], [-1.5, 0.5]]], ids=["normal", "mixture"])
def test_vae_with_its_sampling_noise_held_fixed(loss, prior):
    """gradcheck replays the sampling layer's draws of eps for every evaluation."""
    X = np.random.default_rng(11).random((30, 5))
    vae = quiet_fit(fastbp.VAE(n_components=2, encoder_layer_sizes=(4,), activation="tanh",
                             loss=loss, prior="fixed", prior_means=prior, prior_std=0.8,
                             decoder_std=0.7,
                             max_iter=2, random_state=0), X)
    worst, details = fastbp.gradcheck(vae, X[:6], return_details=True)
    assert worst <= 1e-6, details
    assert len(details) == 2 * len(vae.coefs_)


def test_models_without_one_loss_are_refused():
    X = np.random.default_rng(12).random((30, 3))
    gan = quiet_fit(fastbp.GAN(generator_layer_sizes=(4,), discriminator_layer_sizes=(4,),
                             max_iter=1, random_state=0), X)
    with pytest.raises(TypeError, match="non_saturating"):
        fastbp.gradcheck(gan, X[:3])
