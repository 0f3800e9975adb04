"""Helpers for the network, training and estimator tests (test_nn, test_training, test_mlp, ...)."""
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small products run faster and steadier on one BLAS thread (2-core machines, shared CI)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def blobs(n=120, d=5, k=3, seed=0, spread=3.0):
    """Gaussian blobs: X (n x d float64) and integer labels 0..k-1, well separated."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * spread
    y = rng.integers(0, k, n)
    return centers[y] + rng.standard_normal((n, d)), y


def smooth_regression(n=200, d=4, k=3, seed=0):
    """A smooth nonlinear map R^d -> R^k with a little noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, d))
    A = rng.standard_normal((d, k))
    Y = np.tanh(X @ A) + 0.1 * np.sin(3 * X[:, :1]) + 0.01 * rng.standard_normal((n, k))
    return X, Y


def quiet_fit(model, *data):
    """``model.fit(*data)`` with ConvergenceWarning silenced (short fits on purpose)."""
    import fastbp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return model.fit(*data)


def assert_refit_fails_unchanged(model, X, params, match, y=None, method="fit"):
    """``model.set_params(**params).fit(X)`` (``fit(X, y)`` when y is given; ``method`` may name
    ``partial_fit``) raises ValueError matching ``match`` and leaves every weight matrix (a GAN's
    discriminator's too) and ``n_iter_`` as they were."""
    def weights():
        return [W.copy() for W in model.coefs_ + getattr(model, "discriminator_coefs_", [])]

    before, n_iter = weights(), model.n_iter_
    call = getattr(model.set_params(**params), method)
    with pytest.raises(ValueError, match=match):
        call(X) if y is None else call(X, y)
    after = weights()
    assert len(after) == len(before) and model.n_iter_ == n_iter
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
