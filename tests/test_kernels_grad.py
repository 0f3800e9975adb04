"""Derivatives against central finite differences of the forward kernels, in float64, on both
backends: every activation (softmax's full Jacobian-vector product included), every loss, and the
linear and fused dense backward passes (dX, dW, db).

Each check differentiates a scalar: the loss value, or <f(...), U> for a random upstream gradient U,
whose gradient is exactly what the backward kernel returns for dA = U.
"""
import numpy as np
import pytest

from conftest import ACTIVATION_VARIANTS, LOSS_VARIANTS, Inputs, numeric_gradient, variant_id
from fastbp import kernels

RTOL, ATOL = 1e-6, 1e-8  # central differences with h = 1e-6: truncation ~1e-12, rounding ~1e-10

activation_variants = pytest.mark.parametrize(
    "name, params", [pytest.param(n, p, id=variant_id(n, p)) for n, p in ACTIVATION_VARIANTS])


def away_from_zero(g, *shape):
    """Normal entries pushed at least 0.1 away from 0, where relu, leaky_relu and elu have kinks."""
    z = g.normal(*shape)
    return np.where(z < 0, z - 0.1, z + 0.1)


def layer_away_from_kinks(g):
    """X, W, b whose pre-activations X W + b all lie at least 0.05 away from 0."""
    while True:
        X, W, b = g.layer().values()
        if np.abs(X @ W + b).min() > 0.05:
            return X, W, b


def assert_matches_numeric(got, f, x):
    np.testing.assert_allclose(got, numeric_gradient(f, x), rtol=RTOL, atol=ATOL)


@activation_variants
def test_activation_grad(name, params, backend, rng):
    g = Inputs(rng, 4, 0, 5, np.float64)
    Z, U = away_from_zero(g, 4, 5), g.normal(4, 5)
    A = kernels.activation(name, Z, **params)
    dZ = kernels.activation_grad(name, Z, A, U, **params)
    assert_matches_numeric(dZ, lambda: np.vdot(kernels.activation(name, Z, **params), U), Z)


@pytest.mark.parametrize("name, kind", [pytest.param(n, k, id=f"{n}[{k}]") for n, k in LOSS_VARIANTS])
def test_loss_grad(name, kind, backend, rng):
    g = Inputs(rng, 4, 0, 5, np.float64)
    output, target = g.normal(4, 5, scale=2.0), g.target(kind)
    value, grad = kernels.loss(name, output, target)
    assert_matches_numeric(grad, lambda: kernels.loss(name, output, target)[0], output)


def test_linear_backward(backend, rng):
    g = Inputs(rng, 4, 3, 5, np.float64)
    X, W, b = g.layer().values()
    U = g.normal(4, 5)
    grads = kernels.linear_backward(X, W, U)

    def f():
        return np.vdot(kernels.linear_forward(X, W, b), U)
    for got, x in zip(grads, (X, W, b)):
        assert_matches_numeric(got, f, x)


@activation_variants
def test_dense_backward(name, params, backend, rng):
    g = Inputs(rng, 4, 3, 5, np.float64)
    X, W, b = layer_away_from_kinks(g)
    U = g.normal(4, 5)
    Z, A = kernels.dense_forward(X, W, b, name, **params)
    grads = kernels.dense_backward(X, W, Z, A, U, name, **params)

    def f():
        return np.vdot(kernels.dense_forward(X, W, b, name, **params)[1], U)
    for got, x in zip(grads, (X, W, b)):
        assert_matches_numeric(got, f, x)
