"""Keras- and PyTorch-style conveniences: summary() and fit(callbacks=[...])."""
import warnings

import numpy as np
import pytest

import fastbp
from _helpers import blobs, one_blas_thread, quiet_fit  # noqa: F401

X, y = blobs(60, d=5, k=3)


def test_summary_lists_layers_shapes_counts_and_activations():
    model = quiet_fit(fastbp.MLPClassifier((7, 4), activation="tanh", dropout=0.1, max_iter=2,
                                           random_state=0), X, y)
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[0] == "MLPClassifier network: 5 inputs -> 3 outputs"
    table = [line.split() for line in lines[2:-2]]
    assert [row[1] for row in table] == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [" ".join(row[2:5]) for row in table] == ["5 -> 7", "7 -> 7", "7 -> 4", "4 -> 4",
                                                     "4 -> 3"]
    assert [row[5] for row in table] == ["tanh", "-", "tanh", "-", "identity"]
    counts = [5 * 7 + 7, 0, 7 * 4 + 4, 0, 4 * 3 + 3]  # d k + k per Dense layer, by hand
    assert [int(row[6].replace(",", "")) for row in table] == counts
    assert sum(W.size + b.size for W, b in zip(model.coefs_, model.intercepts_)) == sum(counts)
    assert lines[-2] == f"{sum(counts)} parameters (float32)"
    assert "softmax" in lines[-1] and "softmax_cross_entropy" in lines[-1]
    with pytest.raises(fastbp.NotFittedError):
        fastbp.MLPRegressor().summary()


def test_summary_of_the_gan_shows_both_networks():
    gan = fastbp.GAN(2, (6,), (5,), max_iter=1, random_state=0).fit(X)
    lines = []
    gan.summary(print_fn=lines.append)
    assert "GAN generator: 2 inputs -> 5 outputs" in lines
    assert "GAN discriminator: 5 inputs -> 1 outputs" in lines
    assert f"{2 * 6 + 6 + 6 * 5 + 5} parameters (float32)" in lines


@pytest.mark.parametrize("make", [lambda: fastbp.MLPClassifier((4,), max_iter=50, random_state=0),
                                  lambda: fastbp.Autoencoder(2, (4,), noise="gaussian",
                                                             max_iter=50, random_state=0),
                                  lambda: fastbp.GAN(2, (4,), (4,), max_iter=50, random_state=0)])
def test_callbacks_see_every_epoch_and_stop_training(make):
    """Every callback runs after every epoch with the training state; a true return stops the
    fit there (no ConvergenceWarning: a stop asked for is not a failure to converge)."""
    seen, also = [], []

    def stop_at_three(state):
        seen.append((state.n_iter, len(state.loss_curve)))
        return state.n_iter == 3

    model = make()
    args = (X, y) if isinstance(model, fastbp.MLPClassifier) else (X,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(*args, callbacks=[stop_at_three, lambda state: also.append(state.n_iter)])
    assert seen == [(1, 1), (2, 2), (3, 3)] and also == [1, 2, 3]
    assert model.n_iter_ == 3 == len(model.loss_curve_)
    with pytest.raises(TypeError, match="callables"):
        make().fit(*args, callbacks=[1])
