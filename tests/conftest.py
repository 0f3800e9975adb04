"""Shared fixtures and helpers for fastbp's tests.

Backends.  The ``backend`` fixture runs a test once per backend ('numpy', 'compiled'), switched with
``fastbp.use_backend``.  'compiled' is skipped when the compiled kernels cannot be imported -- unless
``FASTBP_BACKEND=compiled`` is set (CI's compiled run), where an unavailable compiled backend, or a
compiled op missing from it, is a failure.  (With that variable set and no compiled backend,
importing ``fastbp.kernels`` below already raises ImportError, so the whole run fails loudly.)

Kernel cases.  ``CASES`` lists one entry per kernel call worth comparing (every kernel, every
activation, every loss and target form, every optimizer flavour).  A case builds random inputs
for a shape (n rows, d features, k outputs) and calls the *public* API; the test modules run the
same case on both backends, in several layouts, with aliased buffers, and so on.
"""
import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

try:
    import fastbp
except ImportError:  # a source checkout that is not installed: test the tree these tests live in
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastbp

from fastbp import kernels  # noqa: E402  (and the imports below)
from fastbp import _backend
from fastbp.kernels import _checks
from fastbp.kernels import _reference

BACKENDS = ("numpy", "compiled")
FORCED = os.environ.get("FASTBP_BACKEND", "auto").strip().lower()
PACKAGE_DIR = Path(fastbp.__file__).resolve().parent
DTYPES = (np.float32, np.float64)


# ------------------------------------------------------------------------------------- backends
def require_compiled():
    """Skip the calling test unless the compiled backend imports; fail instead when CI forces it."""
    if _backend.compiled_unavailable() is not None:
        reason = f"compiled backend unavailable ({_backend.compiled_unavailable()})"
        if FORCED == "compiled":
            pytest.fail(f"FASTBP_BACKEND=compiled but the {reason}")
        pytest.skip(reason)
    missing = {k: how for k, how in kernels.implementations("compiled").items() if how != "compiled"}
    if missing and FORCED == "compiled":
        pytest.fail(f"FASTBP_BACKEND=compiled but compiled ops are missing: {missing}")


@pytest.fixture(autouse=True)
def _restore_backend():
    """No test leaks a backend switch into the next one."""
    default, here = _backend.default, _backend.backend()
    yield
    fastbp.use_backend(default)  # the process default...
    _backend._choice.set(here)  # ...and this context's choice


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run the test on each backend in turn; the value is the backend's name."""
    if request.param == "compiled":
        require_compiled()
    with fastbp.use_backend(request.param):
        yield request.param


@pytest.fixture
def compiled():
    """For tests that compare the compiled backend with its NumPy twin."""
    require_compiled()


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, and different for every test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ----------------------------------------------------------------------------------- tolerances
# Compiled vs twin: the same formulas, summed in another order (BLAS, partial sums) and with float32
# libm functions where the twin goes through float64.  Measured over CASES x SHAPES: at most 3e-7
# (float32) and 2e-15 (float64) times the largest expected magnitude; these leave ~10x headroom.
TOLERANCE = {np.dtype(np.float32): (2e-5, 2e-6), np.dtype(np.float64): (1e-11, 1e-13)}


def _pairs(got, want):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want), f"{len(got)} results, expected {len(want)}"
    return zip(got, want)


def assert_results_close(got, want, dtype=None, rtol=None, atol=None):
    """Compare result tuples (arrays, float loss values, None) entry by entry.

    Arrays must agree in shape and dtype; values within ``rtol`` and ``atol`` scaled by the
    largest expected magnitude (default: the per-dtype TOLERANCE).
    """
    for i, (g, w) in enumerate(_pairs(got, want)):
        if w is None:
            assert g is None, f"result {i}: expected None, got {type(g).__name__}"
            continue
        if isinstance(w, float):
            assert isinstance(g, float), f"result {i}: expected a float, got {type(g).__name__}"
        else:
            assert isinstance(g, np.ndarray), f"result {i}: expected an array, got {type(g).__name__}"
            assert (g.shape, g.dtype) == (w.shape, w.dtype), \
                f"result {i}: got {g.shape} {g.dtype}, expected {w.shape} {w.dtype}"
        r, a = TOLERANCE[np.dtype(dtype or w.dtype)]
        r, a = (rtol if rtol is not None else r), (atol if atol is not None else a)
        scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=r, atol=a * scale, err_msg=f"result {i}")


def assert_results_same(got, want, dtype):
    """Same computation on the same backend (another layout, aliased buffers): a few ulps at most."""
    eps = float(np.finfo(dtype).eps)
    assert_results_close(got, want, dtype, rtol=16 * eps, atol=16 * eps)


# ------------------------------------------------------------------------------------ kernel cases
ACTIVATION_VARIANTS = [(name, {}) for name in kernels.ACTIVATIONS] + [
    ("leaky_relu", {"alpha": 0.2}), ("elu", {"alpha": 0.5})]


def variant_id(name, params):
    return name + "".join(f"[{key}={value}]" for key, value in params.items())


class Inputs:
    """Random arrays of one dtype for a shape: X is n x d, W is d x k, Z/A/outputs are n x k."""

    def __init__(self, rng, n, d, k, dtype):
        self.rng, self.n, self.d, self.k, self.dtype = rng, n, d, k, np.dtype(dtype)

    def normal(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(self.dtype)

    def layer(self):
        return dict(X=self.normal(self.n, self.d), W=self.normal(self.d, self.k, scale=0.5),
                    b=self.normal(self.k))

    def forward(self, name, params, Z):
        """A = f(Z) by the NumPy twin, for inputs of a backward pass."""
        A = np.empty_like(Z)
        return _reference.activation(name, Z, A, _checks.activation_alpha(name, params))

    def target(self, kind):
        n, k = self.n, self.k
        if kind == "labels":
            return self.rng.integers(0, k, n)
        if kind == "one_hot":
            return np.eye(k, dtype=self.dtype)[self.rng.integers(0, k, n)]
        if kind == "probabilities":
            return self.rng.dirichlet(np.ones(k), n).astype(self.dtype).reshape(n, k)
        if kind == "binary":
            return (self.rng.random((n, k)) < 0.5).astype(self.dtype)
        return self.normal(n, k)  # "real"


@dataclass(frozen=True)
class Case:
    """One public kernel call.  ``inputs(Inputs)`` returns the arrays the call reads (they may take
    any layout); ``state(Inputs)`` the C-contiguous buffers it updates in place (optimizers).
    ``call(**inputs, **state)`` returns a tuple of results."""

    id: str
    inputs: Callable
    call: Callable
    state: Callable = field(default=lambda g: {})
    has_rows: bool = True  # results have one row per example (not so for optimizers)

    def make(self, rng, shape, dtype):
        g = Inputs(rng, *shape, dtype)
        return self.inputs(g), self.state(g)

    def run(self, inputs, state):
        """Call on copies, so one set of inputs serves several runs."""
        copies = {name: array.copy() for name, array in state.items()}
        return self.call(**inputs, **copies)


def _linear_cases():
    def with_dY(g):
        return dict(X=g.normal(g.n, g.d), W=g.normal(g.d, g.k), dY=g.normal(g.n, g.k))
    yield Case("linear_forward", Inputs.layer, lambda X, W, b: (kernels.linear_forward(X, W, b),))
    yield Case("linear_backward", with_dY, lambda X, W, dY: kernels.linear_backward(X, W, dY))
    yield Case("linear_backward[no_dX]", with_dY,
               lambda X, W, dY: kernels.linear_backward(X, W, dY, need_dX=False))


def _activation_cases(name, params):
    vid = variant_id(name, params)

    def z_only(g):
        return dict(Z=g.normal(g.n, g.k, scale=2.0))

    def z_a_da(g):
        Z = g.normal(g.n, g.k, scale=2.0)
        return dict(Z=Z, A=g.forward(name, params, Z), dA=g.normal(g.n, g.k))

    def dense_backward_inputs(g):
        arrays = g.layer()
        Z = arrays.pop("b") + arrays["X"] @ arrays["W"]
        return dict(arrays, Z=Z, A=g.forward(name, params, Z), dA=g.normal(g.n, g.k))

    def dense_backward(need_dX):
        return lambda X, W, Z, A, dA: kernels.dense_backward(
            X, W, Z, A, dA, activation=name, need_dX=need_dX, **params)

    yield Case(f"activation-{vid}", z_only, lambda Z: (kernels.activation(name, Z, **params),))
    yield Case(f"activation_grad-{vid}", z_a_da,
               lambda Z, A, dA: (kernels.activation_grad(name, Z, A, dA, **params),))
    yield Case(f"dense_forward-{vid}", Inputs.layer,
               lambda X, W, b: kernels.dense_forward(X, W, b, activation=name, **params))
    yield Case(f"dense_backward-{vid}", dense_backward_inputs, dense_backward(True))
    if name == "relu":
        yield Case(f"dense_backward-{vid}[no_dX]", dense_backward_inputs, dense_backward(False))


LOSS_VARIANTS = [("squared_error", "real"), ("softmax_cross_entropy", "one_hot"),
                 ("softmax_cross_entropy", "probabilities"), ("softmax_cross_entropy", "labels"),
                 ("sigmoid_cross_entropy", "binary"), ("sigmoid_cross_entropy", "probabilities")]


def _loss_case(name, kind):
    def inputs(g):
        return dict(output=g.normal(g.n, g.k, scale=3.0), target=g.target(kind))
    return Case(f"loss-{name}[{kind}]", inputs,
                lambda output, target: kernels.loss(name, output, target))


OPTIMIZER_STEPS = 3
SGD_VARIANTS = {"plain": dict(lr=0.1), "weight_decay": dict(lr=0.1, weight_decay=0.01),
                "momentum": dict(lr=0.1, momentum=0.9),
                "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)}
ADAM_VARIANTS = {"plain": dict(lr=0.01), "weight_decay": dict(lr=0.01, beta1=0.8, weight_decay=0.1)}


def _grads(g):
    """One gradient per step, stacked: OPTIMIZER_STEPS x d x k."""
    return dict(grads=g.normal(OPTIMIZER_STEPS, g.d, g.k))


def _sgd_case(variant, settings):
    def state(g):
        return dict(param=g.normal(g.d, g.k), velocity=np.zeros((g.d, g.k), g.dtype))

    def call(grads, param, velocity):
        for grad in grads:
            kernels.sgd_update(param, grad, velocity, **settings)
        return param, velocity
    return Case(f"sgd_update[{variant}]", _grads, call, state, has_rows=False)


def _adam_case(variant, settings):
    def state(g):
        zeros = np.zeros((g.d, g.k), g.dtype)
        return dict(param=g.normal(g.d, g.k), m=zeros, v=zeros.copy())

    def call(grads, param, m, v):
        for step, grad in enumerate(grads, start=1):
            kernels.adam_update(param, grad, m, v, step=step, **settings)
        return param, m, v
    return Case(f"adam_update[{variant}]", _grads, call, state, has_rows=False)


CASES = [
    *_linear_cases(),
    *(case for name, params in ACTIVATION_VARIANTS for case in _activation_cases(name, params)),
    *(_loss_case(name, kind) for name, kind in LOSS_VARIANTS),
    *(_sgd_case(variant, settings) for variant, settings in SGD_VARIANTS.items()),
    *(_adam_case(variant, settings) for variant, settings in ADAM_VARIANTS.items()),
]

# (n, d, k): rows, features, outputs
SHAPES = {
    "empty_batch": (0, 3, 4), "one_row": (1, 5, 3), "one_column": (6, 4, 1),
    "one_feature": (5, 1, 3), "square": (17, 19, 23), "wide": (3, 4, 257), "tall": (301, 3, 2),
    "large": (512, 256, 128),
}


def case_params(cases=None):
    return [pytest.param(case, id=case.id) for case in (CASES if cases is None else cases)]


def dtype_params():
    return [pytest.param(dtype, id=np.dtype(dtype).name) for dtype in DTYPES]


# ------------------------------------------------------------------------------- input layouts
def strided(a):
    """The same values in a view with step 2 on every axis (not contiguous)."""
    base = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
    view = base[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def reversed_(a):
    """The same values in a view with negative strides on every axis."""
    flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
    return flipped[tuple(slice(None, None, -1) for _ in a.shape)]


def read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def read_only_strided(a):
    view = strided(a)
    view.setflags(write=False)
    return view


def unaligned(a):
    """The same values, C-contiguous but at an odd address (as np.frombuffer at an offset gives)."""
    view = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


LAYOUTS = {"strided": strided, "fortran": np.asfortranarray, "reversed": reversed_,
           "read_only": read_only, "read_only_strided": read_only_strided, "unaligned": unaligned}

# ------------------------------------------------------------------------------ finite differences
def numeric_gradient(f, x, h=1e-6):
    """Central differences of the scalar f() with respect to every entry of x (changed in place and
    restored)."""
    grad = np.empty(x.shape)
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        grad.flat[i] = (up - down) / (2 * h)
    return grad


# ------------------------------------------------------------------------------------ subprocesses
def run_python(code, *, args=(), env=None, pythonpath=None, cwd=None, timeout=120):
    """Run ``code`` (with ``sys.argv[1:] == args``) in a fresh interpreter that imports fastbp from
    ``pythonpath`` (default: where the tests import it from).  FASTBP_BACKEND comes only from
    ``env``; the working directory is ``cwd`` (default: the one holding that fastbp)."""
    full_env = {k: v for k, v in os.environ.items() if k != "FASTBP_BACKEND"}
    full_env["PYTHONPATH"] = str(pythonpath or PACKAGE_DIR.parent)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env,
                          cwd=cwd or PACKAGE_DIR.parent, capture_output=True, text=True,
                          timeout=timeout)


# A child that runs named probes, each printing one JSON line [name, outcome] with outcome
# ["ok", summary], ["error", "TypeError" | "ValueError" | other exception type]; a crash stops it.
PROBE_RUNNER = r"""
import faulthandler, json, sys
faulthandler.enable()


def run_probes(probes):
    for name, probe in probes.items():
        print("start", name, file=sys.stderr, flush=True)
        try:
            outcome = ["ok", probe()]
        except (TypeError, ValueError) as error:
            outcome = ["error", "TypeError" if isinstance(error, TypeError) else "ValueError"]
        except Exception as error:
            outcome = ["error", type(error).__name__]
        print(json.dumps([name, outcome]), flush=True)
"""


class ProbeOutcomes(dict):
    """The outcomes of one probe child; ``[name]`` fails the test for a probe that crashed the
    child (with its exit code and faulthandler trace) or never ran because of an earlier crash."""

    def __init__(self, code, args=()):
        proc = run_python(PROBE_RUNNER + code, args=args)
        super().__init__(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("["))
        started = [line[6:] for line in proc.stderr.splitlines() if line.startswith("start ")]
        self.crash = None
        if proc.returncode != 0:
            self.crash = (f"child exited with {proc.returncode} during probe "
                          f"{started[-1] if started else '<start-up>'}\n{proc.stderr[-3000:]}")

    def __getitem__(self, name):
        if name not in self:
            pytest.fail(self.crash or f"probe {name} did not run")
        return super().__getitem__(name)


def last_json_line(proc):
    """The JSON report a child printed last; fails with the child's output if it crashed."""
    assert proc.returncode == 0, (f"child exited with {proc.returncode}\n--- stdout\n{proc.stdout}"
                                  f"\n--- stderr\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
