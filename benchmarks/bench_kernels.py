"""Kernel speed: the compiled backend against its NumPy twins, both through the public API.

Every kernel is timed on both backends (``fastbp.use_backend``) at three float32 shapes
(n, width) = (32, 64), (256, 1024), (1024, 4096), called through ``fastbp.kernels`` so that both
pay the same input checks.  Elementwise kernels, losses and optimizer steps work on n x width
arrays.  The layers map X (n x width) through a square weight W (width x width), the hidden
layer of a wide network; at (1024, 4096) a forward gemm is 34 GFLOP, so those rows take seconds
(leave them out with ``-k "not 4096"``).  Run with

    pytest benchmarks/bench_kernels.py                          # everything (minutes)
    pytest benchmarks/bench_kernels.py -k "activation and 256"  # a subset

pytest-benchmark prints its tables grouped by kernel and shape; benchmarks/conftest.py then prints
one summary line per kernel and shape: the twin's and the compiled kernel's fastest round, their
ratio and the speed floor the compiled kernel is held to.  BLAS keeps its default thread count
(set OPENBLAS_NUM_THREADS to change it for both backends alike).
"""
import numpy as np
import pytest

import fastbp
from fastbp import kernels
from fastbp.kernels._checks import ACTIVATIONS

SHAPES = [(32, 64), (256, 1024), (1024, 4096)]
SMALL, MEDIUM = SHAPES[0], SHAPES[1]
# Speed floors, twin time / compiled time: elementwise kernels and losses must be >= 3x faster at
# the small shape and >= 2x at the medium one; layers >= 2x at the small shape and no slower
# (>= 1x) at the larger ones, where BLAS does the work for both.
ELEMENTWISE_FLOORS = {SMALL: 3.0, MEDIUM: 2.0}
LAYER_FLOORS = {SMALL: 2.0, MEDIUM: 1.0, SHAPES[2]: 1.0}


def _arrays(n, width, seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return rng, normal


def _layer(kernel, activation):
    def build(n, width):
        rng, normal = _arrays(n, width)
        X, W, b = normal(n, width), normal(width, width, scale=width ** -0.5), normal(width)
        Z, A, dA = normal(n, width), np.empty((n, width), np.float32), normal(n, width)
        kernels.activation(activation, Z, out=A)
        grads = (np.empty_like(X), np.empty_like(W), np.empty_like(b))
        out = np.empty((n, width), np.float32)
        return {
            "linear_forward": lambda: kernels.linear_forward(X, W, b, out=out),
            "linear_backward": lambda: kernels.linear_backward(X, W, dA, out=grads),
            "dense_forward": lambda: kernels.dense_forward(X, W, b, activation, out=(Z, A)),
            "dense_backward": lambda: kernels.dense_backward(
                X, W, Z, A, dA, activation, out=grads + (out,)),
        }[kernel]
    return build


def _activation(name, grad):
    def build(n, width):
        rng, normal = _arrays(n, width)
        Z, dA, out = normal(n, width, scale=2.0), normal(n, width), np.empty((n, width), np.float32)
        A = kernels.activation(name, Z)
        if grad:
            return lambda: kernels.activation_grad(name, Z, A, dA, out=out)
        return lambda: kernels.activation(name, Z, out=out)
    return build


def _loss(name, target_kind):
    def build(n, width):
        rng, normal = _arrays(n, width)
        output, grad = normal(n, width, scale=2.0), np.empty((n, width), np.float32)
        if target_kind == "labels":
            target = rng.integers(0, width, n)
        else:
            target = rng.random((n, width)).astype(np.float32)
            if name == "softmax_cross_entropy":
                target /= target.sum(axis=1, keepdims=True)
        return lambda: kernels.loss(name, output, target, out=grad)
    return build


def _optimizer(name):
    def build(n, width):
        rng, normal = _arrays(n, width)
        param, grad = normal(n, width), normal(n, width, scale=0.1)
        first, second = np.zeros_like(param), np.zeros_like(param)
        if name == "sgd_update":
            return lambda: kernels.sgd_update(param, grad, first, lr=1e-3, momentum=0.9)
        return lambda: kernels.adam_update(param, grad, first, second, step=10, lr=1e-3)
    return build


# kernel label -> (builder(n, width) -> zero-argument call, floors by shape)
KERNELS = {
    "linear_forward": (_layer("linear_forward", "identity"), LAYER_FLOORS),
    "linear_backward": (_layer("linear_backward", "identity"), LAYER_FLOORS),
    "dense_forward[relu]": (_layer("dense_forward", "relu"), LAYER_FLOORS),
    "dense_backward[relu]": (_layer("dense_backward", "relu"), LAYER_FLOORS),
    **{f"activation[{name}]": (_activation(name, False), ELEMENTWISE_FLOORS) for name in ACTIVATIONS},
    **{f"activation_grad[{name}]": (_activation(name, True), ELEMENTWISE_FLOORS)
       for name in ACTIVATIONS},
    "loss[squared_error]": (_loss("squared_error", "values"), ELEMENTWISE_FLOORS),
    "loss[softmax_cross_entropy-labels]": (_loss("softmax_cross_entropy", "labels"),
                                           ELEMENTWISE_FLOORS),
    "loss[softmax_cross_entropy-probabilities]": (_loss("softmax_cross_entropy", "values"),
                                                  ELEMENTWISE_FLOORS),
    "loss[sigmoid_cross_entropy]": (_loss("sigmoid_cross_entropy", "values"), ELEMENTWISE_FLOORS),
    "sgd_update[momentum]": (_optimizer("sgd_update"), ELEMENTWISE_FLOORS),
    "adam_update": (_optimizer("adam_update"), ELEMENTWISE_FLOORS),
}


@pytest.fixture(scope="module")
def calls():
    """Built calls, shared by both backends of a kernel and shape (built once: big arrays)."""
    cache = {}

    def get(kernel, shape):
        if (kernel, shape) not in cache:
            cache.clear()  # keep one case's arrays alive at a time
            cache[kernel, shape] = KERNELS[kernel][0](*shape)
        return cache[kernel, shape]
    return get


# backend varies fastest: both backends of a kernel and shape run back to back, on the same arrays
@pytest.mark.parametrize("backend", ["numpy", "compiled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel_speed(benchmark, record_speed, calls, kernel, shape, backend):
    call = calls(kernel, shape)
    benchmark.group = f"{kernel} {shape[0]}x{shape[1]}"
    with fastbp.use_backend(backend):
        benchmark(call)
    record_speed(kernel, shape, backend, KERNELS[kernel][1].get(shape), benchmark)
