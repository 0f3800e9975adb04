"""``fastbp bench``: fastbp against its peers (its own NumPy backend, PyTorch, scikit-learn, JAX,
ONNX Runtime), every figure measured in the same run, interleaved, and given as a ratio to
fastbp's own figure of that run.

Workloads (``--workloads``, default all; each a table, or one per net):

* ``train``: one training step (gather a minibatch + forward + loss + backward + optimizer update,
  SGD and Adam: ``--solver``) of the four reference nets (relu hidden layers, identity output;
  softmax cross-entropy with labels, squared error for the autoencoder), batch 32 to 256.  Each
  contender trains its own copy of the same network (fastbp's initial weights, copied), on the
  same float32 data in the same minibatch order; a *run* is ``steps`` consecutive minibatches,
  and the time per step is the run's time over ``steps``.  A large float32 product (2048^3,
  ``numpy.matmul`` and SciPy's ``sgemm``) is timed in the same rounds: the GFLOP/s reference.
* ``predict``: the forward pass, one call per minibatch (serving-like) and one call over all rows.
* ``scaling``: fastbp's time per training row for batch sizes 32 to 1024 on the same rows.
* ``serving``: the latency of one-row prediction, 64-32-10 and 784-256-128-10: the estimator's
  ``predict_proba`` (baseline), the engine predictor (logits), NumPy's ``X @ W + b`` chain by hand
  (logits), ONNX Runtime (``to_onnx``, ``intra_op_num_threads=1``), PyTorch (probabilities).
* ``generative``: one epoch (``partial_fit``) of ``Autoencoder``, sparse ``Autoencoder`` (L1),
  ``VAE`` and ``GAN`` on 4096 x 784, batch 128, Adam, against the same loop in PyTorch: encoder
  784-1000-500-250-30 and its mirror as decoder (the hourglass), the GAN's generator the
  decoder and its discriminator the encoder with one output.
* ``float64``: one float64 epoch of 784-256-128-10 on 4096 rows, batch 128, Adam:
  ``MLPClassifier(dtype='float64')`` against scikit-learn's ``MLPClassifier`` (its
  ``partial_fit``) and a PyTorch float64 loop.
* ``memory``: the peak memory of each training contender: a fresh Python process per contender
  imports its library and makes the data, then the contender is built and runs once; the figure
  is the peak resident set size (Linux ``VmHWM``, reset just before) above the resident size just
  before: the contender's weights, optimizer state, activations and workspaces, and whatever its
  library allocates to run them (thread stacks, compiled code, copies of the data).

Contenders (``--peers``, default all; one whose library is missing is skipped and said so):
``fastbp`` (the compiled engine, :func:`fastbp.engine.make_trainer`); ``numpy`` (fastbp's
layer-by-layer path on its NumPy backend) and ``layers`` (the same path on the compiled
kernels); ``torch`` (``torch.nn.Sequential``, ``torch.optim``); ``sklearn`` (its MLPs' own
minibatch step, ``_backprop`` and its optimizer as ``fit`` runs them; ``partial_fit`` if those
internals change); ``jax`` (two contenders: ``jax jit``, a ``jax.jit``-compiled step called once
per minibatch, and ``jax scan``, ``lax.scan`` over a whole run's minibatches in one compiled call;
``optax``'s Adam/SGD when installed, else the same Adam written in ``jax.numpy``: the header says
which); ``onnx`` (ONNX Runtime: prediction only).  Each training peer is checked once before any
timing: from the same weights, one step on the first minibatch must give the loss fastbp's step
gives (float32 tolerance), so that a timing never compares different work; a peer that fails is
left out and said so.  Each table says the threads each contender uses: fastbp's engine
chooses by the work (up to ``--threads``); NumPy, scikit-learn and the layer-by-layer paths use
the BLAS's threads; PyTorch its intra-op threads; JAX's XLA runs one thread per CPU this process
may use (XLA has no setting for it); ONNX Runtime as set.

Timing: every round times each contender once, in a rotating order; before each timed run come
a short pause, so that the thread pools of the previous library are idle again (OpenBLAS and
OpenMP workers spin for up to ~0.1 s after a call and would steal the cores), and one untimed
run of the same contender.  The tables give medians over rounds and their spread (half the range
of the rounds, relative to the median).  Before measuring, every contender runs once (its
warm-up), which gives the estimate of the whole run's time printed first; each table is printed
as soon as its rounds are done, and a progress bar (stderr, terminals only) shows the time left.
The speed floors the project holds itself to are the benchmarks' business
(``benchmarks/floors.py``), not the user's.
"""
import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

__all__ = ["add_arguments", "run", "NETS", "main", "bench_net", "Workload", "PEERS",
           "WORKLOADS", "SOLVERS", "make_contenders", "check_peer", "bench_serving",
           "bench_generative", "bench_float64", "peak_memory"]

HOURGLASS = "784-1000-500-250-30-250-500-1000-784"
# name -> (batch, steps per run, loss)
NETS = {
    "64-32-10": (32, 400, "softmax_cross_entropy"),
    "784-256-128-10": (128, 40, "softmax_cross_entropy"),
    HOURGLASS: (256, 6, "squared_error"),
    "1024-1024-1024-10": (256, 8, "softmax_cross_entropy"),
}
SCALING_BATCHES = (32, 64, 128, 256, 512, 1024)
GEMM_SIZE = 2048
LR = 1e-3
SOLVERS = ("sgd", "adam")
PEERS = ("numpy", "layers", "torch", "sklearn", "jax", "onnx")
WORKLOADS = ("train", "predict", "scaling", "serving", "generative", "float64", "memory")
SERVING_NETS = ("64-32-10", "784-256-128-10")
# the generative models and the float64 fit (the sizes); --quick takes QUICK_ROWS rows
GENERATIVE = {"rows": 4096, "features": 784, "batch": 128, "encoder": (1000, 500, 250), "code": 30}
MODELS = ("autoencoder", "sparse autoencoder", "vae", "gan")
FLOAT64_HIDDEN = (256, 128)
QUICK_ROWS, QUICK_PAUSE = 256, 0.05
SERVING_RUN = {False: 0.01, True: 0.002}  # seconds of one-row calls per run (--quick: True)
# a peer's loss after one step may differ from fastbp's by this much relative to the loss
# (float32 sums in another order) plus this fraction of what the step changed
CHECK_RTOL, CHECK_STEP_RTOL = 2e-5, 0.02


def _names(allowed):
    """An argparse type: a comma-separated list of names from ``allowed``, as a tuple."""
    def parse(text):
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose from {','.join(allowed)} (comma-separated)")
        return names
    return parse


def add_arguments(parser):
    from fastbp.cli._jobs import non_negative_float, positive_int
    parser.add_argument("--workloads", type=_names(WORKLOADS), metavar="LIST",
                        help=f"what to measure (default all: {','.join(WORKLOADS)}; with --quick "
                        "all but memory)")
    parser.add_argument("--peers", type=_names(PEERS), default=PEERS, metavar="LIST",
                        help=f"whom to measure against (default all installed: {','.join(PEERS)})")
    parser.add_argument("--net", action="append", metavar="SIZES",
                        help="layer sizes of a training net, e.g. 64-32-10 (repeatable; default: "
                        "the four reference nets)")
    parser.add_argument("--batch", type=int, action="append",
                        help="batch size of each --net (default: 32, or the reference net's batch)")
    parser.add_argument("--solver", type=_names(SOLVERS), metavar="LIST",
                        help="the training steps' optimizers (default sgd,adam; with --quick adam)")
    parser.add_argument("--loss", choices=["auto", "squared_error", "softmax_cross_entropy"],
                        default="auto", help="auto: squared error when the output is as wide as "
                        "the input (autoencoder), else softmax cross-entropy")
    parser.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    parser.add_argument("--repeat", type=positive_int, default=7, help="rounds (default 7)")
    parser.add_argument("--steps", type=positive_int, help="minibatches per run (default: per net)")
    parser.add_argument("--threads", type=positive_int,
                        help="cap fastbp's threads (default: all CPUs)")
    parser.add_argument("--pause", type=non_negative_float, default=0.25,
                        help="seconds of idle before each run, so that the previous library's "
                        "spinning BLAS/OpenMP workers are asleep (default 0.25)")
    parser.add_argument("--no-torch", action="store_true",
                        help="same as leaving torch out of --peers")
    parser.add_argument("--no-sklearn", action="store_true",
                        help="same as leaving sklearn out of --peers")
    parser.add_argument("--no-predict", action="store_true",
                        help="same as leaving predict out of --workloads")
    parser.add_argument("--no-scaling", action="store_true",
                        help="same as leaving scaling out of --workloads")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: 3 rounds, pauses of {QUICK_PAUSE} s, shorter runs, "
                        f"the first net, {QUICK_ROWS} rows for the epochs, a {GEMM_SIZE // 2}^3 GEMM")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def peers(args):
    """The peers chosen by ``--peers`` less the old ``--no-torch``/``--no-sklearn``."""
    dropped = {"torch"} if args.no_torch else set()
    dropped |= {"sklearn"} if args.no_sklearn else set()
    return [name for name in args.peers if name not in dropped]


def workloads(args):
    """The workloads chosen by ``--workloads`` less the old ``--no-predict``/``--no-scaling``."""
    dropped = {"predict"} if args.no_predict else set()
    dropped |= {"scaling"} if args.no_scaling else set()
    chosen = args.workloads or [name for name in WORKLOADS if not (args.quick and name == "memory")]
    return [name for name in chosen if name not in dropped]


def solvers(args):
    return args.solver or (("adam",) if args.quick else SOLVERS)


# ------------------------------------------------------------------------------------ workloads
class Workload:
    """A network shape, its optimizer, its data and minibatch order."""

    def __init__(self, sizes, batch, steps, loss, activation, seed=0, solver="sgd"):
        self.sizes, self.batch, self.steps, self.loss = sizes, batch, steps, loss
        self.activation, self.solver = activation, solver
        rng = np.random.default_rng(seed)
        self.n = n = batch * steps
        self.X = rng.standard_normal((n, sizes[0])).astype(np.float32)
        self.classes = loss == "softmax_cross_entropy"
        if self.classes:
            self.Y = rng.integers(0, sizes[-1], n).astype(np.intp)
        elif sizes[-1] == sizes[0]:
            self.Y = self.X  # autoencoder: the input is the target
        else:
            self.Y = rng.standard_normal((n, sizes[-1])).astype(np.float32)
        self.order = rng.permutation(n).astype(np.intp)
        pairs = list(zip(sizes, sizes[1:]))
        self.forward_flops = 2.0 * batch * sum(d * k for d, k in pairs)
        self.train_flops = 3 * self.forward_flops - 2.0 * batch * pairs[0][0] * pairs[0][1]

    @property
    def name(self):
        return "-".join(map(str, self.sizes))

    def head(self):
        """The same workload cut to its first minibatch (one step: the peers' check)."""
        import copy
        one = copy.copy(self)
        one.steps, one.n = 1, self.batch
        one.X, one.Y = self.X[self.order[:self.batch]], self.Y[self.order[:self.batch]]
        one.order = np.arange(self.batch, dtype=np.intp)
        return one

    def loss_of(self, output):
        """fastbp's loss (``fastbp.kernels.loss``) of ``output`` for this workload's targets."""
        from fastbp import kernels
        return float(kernels.loss(self.loss, np.ascontiguousarray(output, np.float32), self.Y)[0])


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return next((lib["num_threads"] for lib in threadpool_info()
                     if lib.get("user_api") == "blas"), None)
    except Exception:
        return None


class Contender:
    """A library's way to run ``steps`` training steps (``train``) and forward passes
    (``predict``: a call per minibatch, ``predict_bulk``: one call); ``forward(X)`` is its network's
    output for X now (the check), ``threads()`` the threads it runs on."""

    name = "?"
    train = predict = predict_bulk = None

    def forward(self, X):
        raise NotImplementedError

    def threads(self, kind="train"):
        """The threads its last ``kind`` call ran on ('train', 'predict' or 'predict_bulk')."""
        return _blas_threads()

    def close(self):
        pass


def _fastbp_network(w, seed=1):
    from fastbp.nn import make_mlp
    return make_mlp(w.sizes[0], w.sizes[1:-1], w.sizes[-1], activation=w.activation, rng=seed)


def _fastbp_optimizer(w, params):
    from fastbp.optim import SGD, Adam
    return (Adam if w.solver == "adam" else SGD)(params, lr=LR)


def _minibatches(w):
    return [np.ascontiguousarray(w.X[w.order[i:i + w.batch]]) for i in range(0, w.n, w.batch)]


class FastbpFused(Contender):
    name = "fastbp"

    def __init__(self, w, threads=None):
        from fastbp import engine as fused
        self.network = _fastbp_network(w)
        self.optimizer = _fastbp_optimizer(w, self.network.params())
        self.trainer = fused.make_trainer(self.network, w.loss, self.optimizer, w.batch, threads)
        if self.trainer is None:
            raise RuntimeError("fastbp.engine.make_trainer refused the network (backend "
                               "'numpy' or _c_train not built?)")
        norms = np.zeros(len(w.sizes) - 1)
        batches = _minibatches(w)
        outs = [np.empty((w.batch, w.sizes[-1]), np.float32) for _ in batches]
        self._threads = {}

        def train():
            self.trainer.train_epoch(w.X, w.Y, w.order, norms)
            self._threads["train"] = self.trainer.last_threads

        def predict():
            for xb, out in zip(batches, outs):
                self.trainer.predict(xb, out)
            self._threads["predict"] = self.trainer.last_threads
        bulk_out = np.empty((w.n, w.sizes[-1]), np.float32)

        def predict_bulk():
            self.trainer.predict(w.X, bulk_out)
            self._threads["predict_bulk"] = self.trainer.last_threads
        self.train, self.predict, self.predict_bulk = train, predict, predict_bulk

    def forward(self, X):
        return self.trainer.predict(X)

    def threads(self, kind="train"):
        return self._threads.get(kind)


@contextlib.contextmanager
def _layer_by_layer():
    """Sequential.predict layer by layer (on the compiled backend it would take the engine)."""
    from fastbp import engine
    saved, engine.USE_FUSED = engine.USE_FUSED, False
    try:
        yield
    finally:
        engine.USE_FUSED = saved


class FastbpLayers(Contender):
    """fastbp's layer-by-layer path (fastbp.training.LayerwiseTrainer) on one backend."""

    def __init__(self, w, backend):
        from fastbp import _backend
        from fastbp import training as _training
        self.name = "numpy" if backend == "numpy" else "fastbp-layers"
        if backend == "compiled" and _backend.compiled_unavailable() is not None:
            raise RuntimeError("compiled kernels unavailable")
        self.network = network = _fastbp_network(w)
        optimizer = _fastbp_optimizer(w, network.params())
        trainer = _training.LayerwiseTrainer(network, w.loss, optimizer, w.batch)
        norms = np.zeros(len(w.sizes) - 1)
        batches = _minibatches(w)
        self._use = lambda: _backend.use_backend(backend)

        def train():
            with self._use():
                trainer.train_epoch(w.X, w.Y, w.order, norms)

        def predict():
            with self._use(), _layer_by_layer():
                for xb in batches:
                    network.predict(xb)
        self.train, self.predict = train, predict
        self.predict_bulk = lambda: self.forward(w.X)

    def forward(self, X):
        with self._use(), _layer_by_layer():
            return self.network.predict(X)


def _torch_net(torch, sizes, activation, weights, dtype=None):
    """``torch.nn.Sequential`` of Linear layers holding ``weights`` ([(W, b)], fastbp's layout)."""
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
           "leaky_relu": torch.nn.LeakyReLU}
    if activation not in act:
        raise ValueError(f"activation {activation!r} not mapped to PyTorch here")
    layers = []
    for i, (d, k) in enumerate(zip(sizes, sizes[1:])):
        linear = torch.nn.Linear(d, k, dtype=dtype)
        if weights is not None:
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[i][0].T)))
                linear.bias.copy_(torch.from_numpy(weights[i][1]))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(act[activation]())
    return torch.nn.Sequential(*layers)


def _torch_optimizer(torch, solver, params, betas=(0.9, 0.999)):
    if solver == "adam":
        return torch.optim.Adam(params, lr=LR, betas=betas)
    return torch.optim.SGD(params, lr=LR)


def _weights(network):
    return [(layer.W, layer.b) for layer in network.dense_layers]


class Torch(Contender):
    name = "torch"

    def __init__(self, w):
        import torch
        self.torch = torch
        self.name = f"torch {torch.__version__.split('+')[0]}"
        self.model = model = _torch_net(torch, w.sizes, w.activation,
                                        _weights(_fastbp_network(w)))
        optimizer = _torch_optimizer(torch, w.solver, model.parameters())
        X = torch.from_numpy(w.X)
        Y = torch.from_numpy(w.Y.astype(np.int64) if w.classes else w.Y)
        cross_entropy = torch.nn.CrossEntropyLoss()

        def criterion(out, target):  # fastbp's losses: squared error is 1/(2n) sum ||o - t||^2
            if w.classes:
                return cross_entropy(out, target)
            return 0.5 * ((out - target) ** 2).sum() / out.shape[0]
        slices = [torch.from_numpy(w.order[i:i + w.batch].astype(np.int64))
                  for i in range(0, w.n, w.batch)]
        batches = [X.index_select(0, idx) for idx in slices]

        def train():
            for idx in slices:
                xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(xb), yb)
                loss.backward()
                optimizer.step()

        def predict():
            with torch.inference_mode():
                for xb in batches:
                    model(xb)
        self.train, self.predict = train, predict
        self.predict_bulk = lambda: self.forward(w.X)

    def forward(self, X):
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(X)).numpy()

    def threads(self, kind="train"):
        return self.torch.get_num_threads()


class Sklearn(Contender):
    name = "sklearn"

    def __init__(self, w):
        import sklearn
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        self.name = f"sklearn {sklearn.__version__}"
        kind = MLPClassifier if w.classes else MLPRegressor
        self.mlp = mlp = kind(
            hidden_layer_sizes=tuple(w.sizes[1:-1]), activation=(
                "logistic" if w.activation == "sigmoid" else w.activation), solver=w.solver,
            learning_rate_init=LR, momentum=0.0, alpha=0.0, batch_size=w.batch, shuffle=False,
            max_iter=1, random_state=0)
        first = w.order[:w.batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if w.classes:
                mlp.partial_fit(w.X[first], w.Y[first], classes=np.arange(w.sizes[-1]))
            else:
                mlp.partial_fit(w.X[first], w.Y[first])
        for mine, (W, b) in zip(zip(mlp.coefs_, mlp.intercepts_), _weights(_fastbp_network(w))):
            mine[0][...], mine[1][...] = W, b  # fastbp's initial weights, in place
        slices = [w.order[i:i + w.batch] for i in range(0, w.n, w.batch)]
        batches = _minibatches(w)
        Y = (mlp._label_binarizer.transform(w.Y).astype(np.float32) if w.classes else w.Y)
        try:
            train = self._internal_step(mlp, w, slices, Y)
        except Exception:  # scikit-learn's internals changed: its public incremental step
            self.name += " (partial_fit)"

            def train():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for idx in slices:
                        mlp.partial_fit(w.X[idx], w.Y[idx])

        def predict():
            for xb in batches:
                mlp._forward_pass_fast(xb, check_input=False)
        self.train, self.predict = train, predict
        self.predict_bulk = lambda: mlp._forward_pass_fast(w.X, check_input=False)

    @staticmethod
    def _internal_step(mlp, w, slices, Y):
        """The body of MLP._fit_stochastic's minibatch loop (sklearn >= 1.0), with a fresh
        optimizer (partial_fit above stepped the first)."""
        from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
        L = len(w.sizes) - 1
        coef_grads = [np.empty((d, k), np.float32) for d, k in zip(w.sizes, w.sizes[1:])]
        intercept_grads = [np.empty(k, np.float32) for k in w.sizes[1:]]
        params = mlp.coefs_ + mlp.intercepts_
        mlp._optimizer = (AdamOptimizer(params, LR) if w.solver == "adam" else
                          SGDOptimizer(params, LR, momentum=0.0, nesterov=False))
        first = slices[0]  # a probe of the internals' signatures (no step)
        mlp._backprop(w.X[first], Y[first], None, [w.X[first]] + [None] * L, [None] * L,
                      coef_grads, intercept_grads)

        def train():
            for idx in slices:
                xb = w.X[idx]
                activations = [xb] + [None] * L
                deltas = [None] * L
                _, cg, ig = mlp._backprop(xb, Y[idx], None, activations, deltas, coef_grads,
                                          intercept_grads)
                mlp._optimizer.update_params(params, cg + ig)
        return train

    def forward(self, X):
        saved, self.mlp.out_activation_ = self.mlp.out_activation_, "identity"  # the logits
        try:
            return self.mlp._forward_pass_fast(X, check_input=False)
        finally:
            self.mlp.out_activation_ = saved


def _jax_optimizer(jax, solver):
    """(init, update, which): optax's Adam/SGD when installed, else the same steps in jax.numpy
    (torch.optim.Adam's formula: eps added to the bias-corrected sqrt(v))."""
    try:
        import optax
        transform = optax.adam(LR) if solver == "adam" else optax.sgd(LR)
        return transform.init, transform.update, f"optax {optax.__version__}"
    except ImportError:
        pass
    jnp, tree = jax.numpy, jax.tree_util
    if solver == "sgd":
        return (lambda params: ()), (lambda g, state, params: (
            tree.tree_map(lambda x: -LR * x, g), state)), "SGD in jax.numpy (no optax)"
    b1, b2, eps = 0.9, 0.999, 1e-8

    def init(params):  # m and v: two buffers each (a compiled step donates them)
        return (jnp.zeros((), jnp.int32), tree.tree_map(jnp.zeros_like, params),
                tree.tree_map(jnp.zeros_like, params))

    def update(g, state, params):
        t, m, v = state
        t = t + 1
        m = tree.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = tree.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        step = tree.tree_map(lambda m, v: -LR * (m / c1) / (jnp.sqrt(v / c2) + eps), m, v)
        return step, (t, m, v)
    return init, update, "Adam in jax.numpy (no optax)"


class Jax(Contender):
    """JAX: ``jax jit`` calls a compiled step once per minibatch; ``jax scan`` runs a whole run's
    minibatches in one compiled ``lax.scan``.  Both gather each minibatch from the whole data
    inside the compiled code, as fastbp's engine does."""

    def __init__(self, w, scan):
        import jax
        import jax.numpy as jnp
        self.jax = jax
        act = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}.get(w.activation)
        if act is None:
            raise ValueError(f"activation {w.activation!r} not mapped to JAX here")
        init, update, self.optimizer = _jax_optimizer(jax, w.solver)
        self.name = f"jax {'scan' if scan else 'jit'}"
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in _weights(_fastbp_network(w))]

        def forward(params, x):
            for W, b in params[:-1]:
                x = act(x @ W + b)
            W, b = params[-1]
            return x @ W + b

        def loss(params, xb, yb):
            out = forward(params, xb)
            if w.classes:
                picked = jnp.take_along_axis(out, yb[:, None], axis=1)[:, 0]
                return jnp.mean(jax.nn.logsumexp(out, axis=1) - picked)
            return 0.5 * jnp.sum((out - yb) ** 2) / xb.shape[0]

        def step(carry, rows, X, Y):
            params, state = carry
            grads = jax.grad(loss)(params, X[rows], Y[rows])
            updates, state = update(grads, state, params)
            return jax.tree_util.tree_map(lambda p, u: p + u, params, updates), state

        X = jnp.asarray(w.X)
        Y = jnp.asarray(w.Y.astype(np.int32)) if w.classes else (
            X if w.Y is w.X else jnp.asarray(w.Y))
        idx = jnp.asarray(w.order.reshape(w.steps, w.batch).astype(np.int32))
        self.carry = (params, init(params))
        if scan:
            run = jax.jit(lambda carry, X, Y, idx: jax.lax.scan(
                lambda c, rows: (step(c, rows, X, Y), None), carry, idx)[0], donate_argnums=0)

            def train():
                self.carry = jax.block_until_ready(run(self.carry, X, Y, idx))
        else:
            one = jax.jit(step, donate_argnums=0)
            rows = list(idx)

            def train():
                carry = self.carry
                for r in rows:
                    carry = one(carry, r, X, Y)
                self.carry = jax.block_until_ready(carry)
        self.train = train
        self._forward = jax.jit(forward)
        if not scan:  # prediction is the same for both: timed once
            batches = [jnp.asarray(xb) for xb in _minibatches(w)]

            def predict():
                for xb in batches:
                    out = self._forward(self.carry[0], xb)
                out.block_until_ready()
            self.predict = predict
            self.predict_bulk = lambda: self._forward(self.carry[0], X).block_until_ready()

    def forward(self, X):
        return np.asarray(self._forward(self.carry[0], X))

    def threads(self, kind="train"):
        from fastbp.engine import cpu_count
        return cpu_count()  # XLA's CPU pool: one thread per CPU of the process's affinity


def _ort_session(model_proto, threads):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model_proto.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


class Onnx(Contender):
    """ONNX Runtime on fastbp's network (``fastbp.models.export``): prediction only."""

    def __init__(self, w):
        import onnxruntime

        from fastbp.engine import cpu_count
        from fastbp.models import export
        self.name = f"onnxruntime {onnxruntime.__version__}"
        path = export.Path(export.layer_steps(_fastbp_network(w)), "output")
        self._threads = cpu_count()
        session = _ort_session(export.onnx_graph(path, w.name), self._threads)
        self.forward = lambda X: session.run(["output"], {"X": X})[0]
        batches = _minibatches(w)

        def predict():
            for xb in batches:
                self.forward(xb)
        self.predict = predict
        self.predict_bulk = lambda: self.forward(w.X)

    def threads(self, kind="train"):
        return self._threads


# peer -> the contenders it brings (each a class called with the workload), and its library
MAKERS = {
    "numpy": ([lambda w: FastbpLayers(w, "numpy")], "fastbp"),
    "layers": ([lambda w: FastbpLayers(w, "compiled")], "fastbp"),
    "torch": ([Torch], "torch"),
    "sklearn": ([Sklearn], "sklearn"),
    "jax": ([lambda w: Jax(w, scan=False), lambda w: Jax(w, scan=True)], "jax"),
    "onnx": ([Onnx], "onnxruntime"),
}


def check_peer(make, w, threads=None):
    """Whether the contender made by ``make`` does fastbp's work on ``w``: from the same initial
    weights, one step on the first minibatch gives it the loss that fastbp's step gives (within
    CHECK_RTOL of the loss plus CHECK_STEP_RTOL of what the step changed); a prediction-only
    contender must give fastbp's output.  Returns (ok, words)."""
    head = w.head()
    ours = FastbpFused(head, threads)
    before = head.loss_of(ours.forward(head.X))
    peer = make(head)
    if peer.train is None:
        theirs = np.asarray(peer.forward(head.X))
        ok = np.allclose(theirs, ours.forward(head.X), rtol=1e-4, atol=1e-5)
        return ok, "output " + ("equal to fastbp's" if ok else "differs from fastbp's")
    ours.train()
    peer.train()
    after, theirs = head.loss_of(ours.forward(head.X)), head.loss_of(peer.forward(head.X))
    limit = CHECK_RTOL * abs(before) + CHECK_STEP_RTOL * abs(after - before)
    ok = abs(theirs - after) <= limit
    return ok, (f"loss after one step {theirs:.6g}, fastbp's {after:.6g} "
                f"(from {before:.6g}; tolerance {limit:.2g})")


def make_contenders(w, args, log=print):
    """fastbp and every chosen peer for workload ``w``, each peer checked first
    (:func:`check_peer`); those that cannot run or fail the check are logged and left out."""
    made = [FastbpFused(w, args.threads)]
    for peer in peers(args):
        for make in MAKERS[peer][0]:
            try:
                ok, words = check_peer(make, w, args.threads)
                if not ok:
                    log(f"  ({peer}: left out, not the same work: {words})")
                    continue
                made.append(make(w))
            except ImportError as error:
                log(f"  ({peer}: not installed, skipped: {error})")
                break
            except Exception as error:  # a contender that cannot run is reported, not fatal
                log(f"  ({peer}: skipped: {type(error).__name__}: {error})")
    return made


# ---------------------------------------------------------------------------------- measuring
def _timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _gemm_runs(size=GEMM_SIZE):
    """(numpy.matmul, SciPy sgemm) runners of a large float32 product (size^3)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    c = np.empty_like(a)
    runs = {"numpy.matmul": lambda: np.matmul(a, b, out=c)}
    try:
        from scipy.linalg.blas import sgemm
        af, bf = np.asfortranarray(a), np.asfortranarray(b)
        cf = np.asfortranarray(c)
        runs["scipy sgemm"] = lambda: sgemm(1.0, af, bf, c=cf, overwrite_c=True)
    except Exception:
        pass
    return runs


def _rounds(runners, repeat, pause, warm=1, tick=None):
    """Interleaved rounds: {name: [seconds per run, one per round]}.

    Before each timed run: ``pause`` seconds of idle (the previous library's spinning thread
    pools go to sleep), then one untimed run of the same contender (its own threads and caches
    warm), so that every contender is timed in its steady state, undisturbed by the others."""
    tick = tick or (lambda seconds: None)
    for fn in runners.values():
        for _ in range(warm):
            tick(_timed(fn))
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if pause:
                time.sleep(pause)
                tick(pause + _timed(runners[name]))
            times[name].append(_timed(runners[name]))
            tick(times[name][-1])
    return times


def _gemm_size(args):
    return GEMM_SIZE // 2 if args.quick else GEMM_SIZE


def _rounds_seconds(first, args, warm=1):
    """Seconds that :func:`_rounds` takes, from one run of each runner (``first``: seconds)."""
    return (warm * sum(first) + args.repeat * (2 * sum(first) + len(first) * args.pause))


def _entry(seconds, per, unit, flops=None):
    """A table row: the median of ``seconds`` (one per round) over ``per``, in ``unit`` (a factor
    and its key), its spread (half the range over the median) and the runs."""
    scale, key = unit
    med = statistics.median(seconds)
    entry = {key: med / per * scale, "spread": (max(seconds) - min(seconds)) / 2 / med,
             key.split("_")[0] + "_runs": [s / per * scale for s in seconds]}
    if flops is not None:
        entry["gflops"] = flops / (med / per) / 1e9
    return entry


MS_PER_STEP, MS_PER_BATCH, US_PER_CALL, S_PER_EPOCH = ((1e3, "ms_per_step"), (1e3, "ms_per_batch"),
                                                       (1e6, "us_per_call"), (1.0, "s_per_epoch"))


def bench_net(w, args, log=print, contenders=None, tick=None, forward=True):
    """Measure one workload (``contenders``: made by :func:`make_contenders`, or made here):
    its training step (``train`` in the workloads), and with ``forward`` its predictions and
    per-sample table; each table is logged as soon as it is measured.  Returns a dict of results."""
    contenders = contenders or make_contenders(w, args, log)
    if not contenders or contenders[0].name != "fastbp":
        raise ValueError("the compiled trainer is unavailable (see fastbp.kernels.implementations())")
    chosen = workloads(args)
    log(f"\n== {w.name}  batch {w.batch}  {w.activation} hidden, {w.loss}, {w.solver}  "
        f"({w.train_flops * 1e-6:.2f} MFLOP per step, {w.steps} steps per run)")
    jax_optimizer = next((c.optimizer for c in contenders if isinstance(c, Jax)), None)
    if jax_optimizer:
        log(f"  (JAX's optimizer: {jax_optimizer})")
    result = {"net": w.name, "batch": w.batch, "steps": w.steps, "loss": w.loss,
              "activation": w.activation, "solver": w.solver,
              "train_gflop_per_step": w.train_flops / 1e9, "train": {}, "gemm": {}, "predict": {}}
    if "train" in chosen:
        size = _gemm_size(args)
        gemm = _gemm_runs(size)
        runners = {c.name: c.train for c in contenders if c.train is not None}
        for name, fn in gemm.items():
            runners["gemm " + name] = fn
        times = _rounds(runners, args.repeat, args.pause, tick=tick)
        threads = {c.name: c.threads() for c in contenders}
        gemm_flops = 2.0 * size ** 3
        for name, seconds in times.items():
            if name.startswith("gemm "):
                med = statistics.median(seconds)
                result["gemm"][name[5:]] = {"gflops": gemm_flops / med / 1e9,
                                            "gflops_runs": [gemm_flops / s / 1e9 for s in seconds]}
            else:
                result["train"][name] = dict(_entry(seconds, w.steps, MS_PER_STEP, w.train_flops),
                                             threads=threads[name])
        _table(log, "training step", result["train"], MS_PER_STEP[1])
        for name, g in result["gemm"].items():
            log(f"  large GEMM {size}^3, {name:13s} {'':17s}{g['gflops']:8.1f}  "
                f"{_blas_threads() or '-':>7}")
    if forward and "predict" in chosen:
        runners = {}
        for c in contenders:
            if c.predict is not None:
                runners[c.name] = c.predict
                runners["bulk " + c.name] = c.predict_bulk
        ptimes = _rounds(runners, args.repeat, args.pause, tick=tick)
        by_name = {c.name: c for c in contenders}
        result["predict_bulk"] = {}
        for name, seconds in ptimes.items():  # a bulk call covers steps batches
            bulk = name.startswith("bulk ")
            table, own, kind = ((result["predict_bulk"], name[5:], "predict_bulk") if bulk
                                else (result["predict"], name, "predict"))
            table[own] = dict(_entry(seconds, w.steps, MS_PER_BATCH, w.forward_flops),
                              threads=by_name[own].threads(kind))
        _table(log, f"predict, {w.batch} rows a call", result["predict"], MS_PER_BATCH[1])
        _table(log, f"predict, {w.n} rows at once", result["predict_bulk"], MS_PER_BATCH[1])
    for c in contenders:
        c.close()
    if forward and "scaling" in chosen:
        result["per_sample"] = per_sample(w, args, tick)
        cells = "  ".join(f"{b}: {us:.3f}" for b, us in result["per_sample"].items())
        log(f"  fastbp us per training row by batch size: {cells}")
    return result


def _table(log, title, table, key, baseline="fastbp"):
    """One table of medians: spread, GFLOP/s, threads, and the baseline's speed against each
    other contender in words."""
    from fastbp.cli._jobs import faster

    unit = key.replace("_per_", "/")
    log(f"  {title:26s} {unit:>10s} {'spread':>6s} {'GFLOP/s':>8s} {'threads':>7s}  "
        f"{_plain(baseline)} is")
    ours = table[baseline][key]
    for name, r in table.items():
        words = "" if name == baseline else faster(r[key] / ours, _plain(name))
        gflops = f"{r['gflops']:8.1f}" if "gflops" in r else f"{'':8s}"
        threads = r.get("threads") or "-"
        log(f"  {name:26s} {r[key]:10.4f} {r['spread']:6.1%} {gflops} {threads:>7}  {words}")


def _plain(name):
    """A contender's name as a person says it: 'PyTorch', 'scikit-learn', 'JAX (lax.scan)'."""
    words = {"torch": "PyTorch", "sklearn": "scikit-learn", "numpy": "its NumPy backend",
             "fastbp-layers": "its layer-by-layer path", "onnxruntime": "ONNX Runtime",
             "jax jit": "JAX (jit)", "jax scan": "JAX (lax.scan)", "engine": "the engine predictor",
             "numpy by hand": "NumPy by hand", "predict_proba": "predict_proba"}
    return words.get(name, words.get(name.split()[0], name))


def per_sample(w, args, tick=None):
    """fastbp's time per training row at each batch size, on the same rows (interleaved)."""
    from fastbp import engine as fused
    from fastbp.nn import make_mlp
    from fastbp.optim import SGD
    rows = per_sample_rows(w, args)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((rows, w.sizes[0])).astype(np.float32)
    Y = rng.integers(0, w.sizes[-1], rows).astype(np.intp) if w.classes else (
        X if w.sizes[0] == w.sizes[-1] else rng.standard_normal((rows, w.sizes[-1])).astype(np.float32))
    order = rng.permutation(rows).astype(np.intp)
    runners = {}
    for batch in SCALING_BATCHES:
        net = make_mlp(w.sizes[0], w.sizes[1:-1], w.sizes[-1], activation=w.activation, rng=1)
        trainer = fused.make_trainer(net, w.loss, SGD(net.params(), lr=1e-4), batch, args.threads)
        norms = np.zeros(len(w.sizes) - 1)
        runners[batch] = (lambda t=trainer, g=norms: t.train_epoch(X, Y, order, g))
    times = _rounds(runners, args.repeat, args.pause, tick=tick)
    return {str(b): statistics.median(s) / rows * 1e6 for b, s in times.items()}


def per_sample_rows(w, args):
    """The rows the per-sample table trains on (see :func:`per_sample`)."""
    rows = max(SCALING_BATCHES) * (4 if w.forward_flops / w.batch > 1e6 else 32)
    return rows // 4 if args.quick else rows


def workload(spec, args, batch=None, solver="sgd"):
    """The :class:`Workload` of one ``--net`` (the reference nets keep their batch and steps)."""
    sizes = [int(s) for s in spec.replace("x", "-").split("-") if s.strip().isdigit()]
    if len(sizes) < 2 or min(sizes) < 1 or len(sizes) != len(spec.replace("x", "-").split("-")):
        raise ValueError(f"--net {spec!r}: want layer sizes such as 64-32-10")
    key = "-".join(map(str, sizes))
    own_batch, steps, loss = NETS.get(key, (32, None, None))
    batch = own_batch if batch is None else batch
    if loss is None or args.loss != "auto":
        loss = args.loss if args.loss != "auto" else (
            "squared_error" if sizes[0] == sizes[-1] else "softmax_cross_entropy")
    if args.steps:
        steps = args.steps
    elif steps is None or batch != own_batch:
        per_step = 6.0 * batch * sum(d * k for d, k in zip(sizes, sizes[1:]))
        steps = int(min(400, max(4, 4e8 / max(per_step, 1.0))))
    if args.quick:
        steps = max(2, steps // 4)
    return Workload(sizes, batch, steps, loss, args.activation, solver=solver)


def _workloads(args):
    """The training workloads: each --net (default: the reference nets, the first only with
    --quick) with each --solver."""
    batches = args.batch or []
    nets = args.net or list(NETS)[:1 if args.quick else None]
    return [workload(spec, args, batches[i] if i < len(batches) else None, solver)
            for i, spec in enumerate(nets) for solver in solvers(args)]


def _estimate(w, first, gemm_seconds, args, forward):
    """Seconds that :func:`bench_net` will take, from one run of each contender (``first``:
    {name: seconds}) and of the large GEMM: the rounds, the forward passes (~1/3 of a step each,
    two ways) and the per-sample table."""
    chosen = workloads(args)
    train = _rounds_seconds(list(first.values()) + gemm_seconds, args) if "train" in chosen else 0
    predict = 0.0 if not forward or "predict" not in chosen else (
        2 * args.repeat * (2 * sum(first.values()) / 3 + len(first) * args.pause))
    scaling = 0.0
    if forward and "scaling" in chosen:
        per_row = first["fastbp"] / w.n
        scaling = (len(SCALING_BATCHES) * (2 * args.repeat + 1) * per_row * per_sample_rows(w, args)
                   + len(SCALING_BATCHES) * args.repeat * args.pause)
    return train + predict + scaling


# ------------------------------------------------------------------------------------- serving
def serving_runners(net, args):
    """One-row prediction on ``net`` (a 'd-h...-k' string) by every chosen contender, checked
    equal to the estimator's ``predict_proba`` (probabilities) or the network's logits: {name:
    (call, threads)}.  The estimator is a fastbp.MLPClassifier fitted one epoch on random data."""
    from sklearn.exceptions import ConvergenceWarning  # fastbp's own (fastbp.exceptions)

    from fastbp import engine
    from fastbp.models import export
    from fastbp.models.mlp import MLPClassifier
    sizes = [int(s) for s in net.split("-")]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, sizes[0])).astype(np.float32)
    y = np.arange(256) % sizes[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(tuple(sizes[1:-1]), max_iter=1, random_state=0).fit(X, y)
    x = np.ascontiguousarray(X[:1])
    proba = model.predict_proba(x)
    network = model.network_
    weights = _weights(network)
    predictor = engine.make_predictor(network)
    out = np.empty((1, sizes[-1]), np.float32)
    logits = network.predict(x)
    one_row_threads = 1  # the engine's one-row plan (network.predict runs on it too)
    if predictor is not None:
        predictor.predict(x, out)
        one_row_threads = predictor.last_threads
    calls = {"predict_proba": (lambda: model.predict_proba(x), proba, one_row_threads)}
    if predictor is not None:
        calls["engine"] = (lambda: predictor.predict(x, out), logits, one_row_threads)

    def by_hand():
        a = x
        for W, b in weights[:-1]:
            a = a @ W + b
            np.maximum(a, 0, out=a)
        W, b = weights[-1]
        return a @ W + b
    calls["numpy by hand"] = (by_hand, logits, 1)
    chosen = peers(args)
    if "onnx" in chosen:
        with contextlib.suppress(ImportError):
            import onnxruntime
            session = _ort_session(export.to_onnx(model, "predict_proba"), 1)
            calls[f"onnxruntime {onnxruntime.__version__}"] = (
                lambda: session.run(["probabilities"], {"X": x})[0], proba, 1)
    if "torch" in chosen:
        with contextlib.suppress(ImportError):
            import torch
            torch_net = torch.nn.Sequential(_torch_net(torch, sizes, "relu", weights),
                                            torch.nn.Softmax(dim=1))
            tx = torch.from_numpy(x)

            def torch_call():
                with torch.inference_mode():
                    return torch_net(tx)
            calls[f"torch {torch.__version__.split('+')[0]}"] = (torch_call, proba,
                                                                 torch.get_num_threads())
    for name, (call, want, _) in calls.items():
        got = call()
        got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
        if not np.allclose(got, want, rtol=1e-4, atol=1e-6):
            raise RuntimeError(f"one-row prediction of {name} differs from fastbp's")
    return {name: (call, threads) for name, (call, _, threads) in calls.items()}


def _repeated(call, times):
    def run():
        for _ in range(times):
            call()
    return run


def bench_serving(plan, args, log=print, tick=None):
    """The one-row latency table of one net (``plan`` from :func:`_serving_plans`)."""
    net, calls, runners = plan
    times = _rounds({name: fn for name, fn in runners.items()}, args.repeat, args.pause, tick=tick)
    table = {name: dict(_entry(seconds, calls[name][0], US_PER_CALL), threads=calls[name][1])
             for name, seconds in times.items()}
    log(f"\n== serving {net}: one row a call (engine and NumPy: logits; the others: "
        f"probabilities)")
    _table(log, "one-row prediction", table, US_PER_CALL[1], baseline="predict_proba")
    return {"net": net, "one_row": table}


def _serving_plans(args):
    """[(net, {name: (calls per run, threads)}, {name: run})], runs of about SERVING_RUN
    seconds (from 20 calls each)."""
    plans = []
    for net in SERVING_NETS:
        found = serving_runners(net, args)
        calls, runners = {}, {}
        for name, (call, threads) in found.items():
            seconds = _timed(_repeated(call, 20)) / 20
            times = max(20, int(SERVING_RUN[args.quick] / max(seconds, 1e-7)))
            calls[name], runners[name] = (times, threads), _repeated(call, times)
        plans.append((net, calls, runners))
    return plans


# --------------------------------------------------------------------- generative and float64
def _epoch_data(args, dtype=np.float32):
    rows = QUICK_ROWS if args.quick else GENERATIVE["rows"]
    return np.random.default_rng(0).random((rows, GENERATIVE["features"])).astype(dtype)


def _fastbp_threads(estimator):
    """The threads a fitted fastbp estimator trains on: the engine's (up to the CPUs), else the
    BLAS's of the layer-by-layer path."""
    from fastbp.engine import cpu_count
    return (estimator.n_threads or cpu_count()) if estimator.fit_path_ == "engine" else (
        _blas_threads())


def _fastbp_generative(model, X):
    """A fastbp generative estimator, fitted one epoch (the warm-up); a run is one more epoch."""
    from fastbp.models.autoencoder import Autoencoder
    from fastbp.models.gan import GAN
    from fastbp.models.vae import VAE
    batch, encoder, code = GENERATIVE["batch"], GENERATIVE["encoder"], GENERATIVE["code"]
    common = dict(batch_size=batch, alpha=0.0, random_state=0, solver="adam")
    if model == "gan":
        estimator = GAN(n_components=code, generator_layer_sizes=encoder[::-1],
                               discriminator_layer_sizes=encoder, **common)
    elif model == "vae":
        estimator = VAE(n_components=code, encoder_layer_sizes=encoder, **common)
    else:
        estimator = Autoencoder(n_components=code, encoder_layer_sizes=encoder,
                                sparsity="l1" if model.startswith("sparse") else None, **common)
    estimator.partial_fit(X)
    return estimator, lambda: estimator.partial_fit(X)


def _torch_generative(model, X):
    """The same model and epoch as :func:`_fastbp_generative`, in PyTorch (its own init)."""
    import torch
    torch.manual_seed(0)
    batch, encoder, code = GENERATIVE["batch"], GENERATIVE["encoder"], GENERATIVE["code"]
    d = X.shape[1]
    data = torch.from_numpy(X)
    if model == "gan":
        G = _torch_net(torch, [code, *encoder[::-1], d], "relu", None)
        D = _torch_net(torch, [d, *encoder, 1], "leaky_relu", None)
        g_opt = _torch_optimizer(torch, "adam", G.parameters(), betas=(0.5, 0.999))
        d_opt = _torch_optimizer(torch, "adam", D.parameters(), betas=(0.5, 0.999))
        bce = torch.nn.BCEWithLogitsLoss()

        def epoch():
            for start in range(0, len(data), batch):
                real = data[start:start + batch]
                m = len(real)
                with torch.no_grad():
                    fake = G(torch.randn(m, code))
                target = torch.cat([torch.ones(m, 1), torch.zeros(m, 1)])
                d_opt.zero_grad(set_to_none=True)
                (2 * bce(D(torch.cat([real, fake])), target)).backward()
                d_opt.step()
                g_opt.zero_grad(set_to_none=True)
                bce(D(G(torch.randn(m, code))), torch.ones(m, 1)).backward()  # non-saturating
                g_opt.step()
        return epoch
    k = 2 * code if model == "vae" else code
    encode = _torch_net(torch, [d, *encoder, k], "relu", None)
    decode = _torch_net(torch, [code, *encoder[::-1], d], "relu", None)
    optimizer = _torch_optimizer(torch, "adam", [*encode.parameters(), *decode.parameters()])

    def epoch():
        for start in range(0, len(data), batch):
            x = data[start:start + batch]
            h = encode(x)
            penalty = 0.0
            if model == "vae":
                mu, log_var = h[:, :code], h[:, code:]
                h = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
                penalty = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).sum() / len(x)
            elif model.startswith("sparse"):
                penalty = 1e-3 * h.abs().sum() / len(x)  # fastbp's default sparsity_weight
            loss = 0.5 * ((decode(h) - x) ** 2).sum() / len(x) + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return epoch


def _generative_plan(args, log):
    X = _epoch_data(args)
    runners, paths, threads = {}, {}, {}
    for model in MODELS:
        estimator, runners[f"fastbp {model}"] = _fastbp_generative(model, X)
        paths[model] = estimator.fit_path_
        threads[f"fastbp {model}"] = _fastbp_threads(estimator)
        if "torch" in peers(args):
            try:
                import torch
                runners[f"torch {model}"] = _torch_generative(model, X)
                threads[f"torch {model}"] = torch.get_num_threads()
            except ImportError:
                log("  (torch: not installed, skipped)")
    return X, runners, paths, threads


def bench_generative(plan, args, log=print, tick=None):
    """One epoch of each generative model, fastbp against PyTorch (``plan`` from
    :func:`_generative_plan`)."""
    X, runners, paths, threads = plan
    times = _rounds(runners, args.repeat, args.pause, warm=0, tick=tick)
    result = {"rows": X.shape[0], "batch": GENERATIVE["batch"], "models": {}}
    log(f"\n== generative models: one epoch of {X.shape[0]} x {X.shape[1]}, batch "
        f"{GENERATIVE['batch']}, Adam, float32; encoder {GENERATIVE['encoder']}, code "
        f"{GENERATIVE['code']} (not checked against fastbp's losses: own inits and noise)")
    for model in MODELS:
        table = {name.split()[0]: dict(_entry(times[name], 1, S_PER_EPOCH), threads=threads[name])
                 for name in runners if name.split(" ", 1)[1] == model}
        result["models"][model] = dict(table, fit_path=paths[model])
        log(f"  {model}: fastbp's fit path: {paths[model]}")
        _table(log, f"{model} epoch", table, S_PER_EPOCH[1])
    return result


def _float64_plan(args, log):
    from sklearn.exceptions import ConvergenceWarning

    from fastbp.models.mlp import MLPClassifier as FastbpClassifier
    X = _epoch_data(args, np.float64)
    y = np.random.default_rng(1).integers(0, 10, len(X))
    batch, hidden = GENERATIVE["batch"], FLOAT64_HIDDEN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = FastbpClassifier(hidden, batch_size=batch, alpha=0.0, dtype="float64",
                                random_state=0).partial_fit(X, y, classes=np.arange(10))
    runners = {"fastbp": lambda: ours.partial_fit(X, y)}
    threads = {"fastbp": _fastbp_threads(ours)}
    result = {"fit_path": ours.fit_path_}
    chosen = peers(args)
    if "sklearn" in chosen:
        import sklearn
        from sklearn.neural_network import MLPClassifier
        theirs = MLPClassifier(hidden, batch_size=batch, alpha=0.0, random_state=0)
        theirs.partial_fit(X, y, classes=np.arange(10))
        runners[f"sklearn {sklearn.__version__}"] = lambda: theirs.partial_fit(X, y)
        threads[f"sklearn {sklearn.__version__}"] = _blas_threads()
    if "torch" in chosen:
        try:
            import torch
            w = Workload([X.shape[1], *hidden, 10], batch, 1, "softmax_cross_entropy", "relu")
            net = _torch_net(torch, w.sizes, "relu", None, dtype=torch.float64)
            optimizer = _torch_optimizer(torch, "adam", net.parameters())
            data, labels = torch.from_numpy(X), torch.from_numpy(y)
            cross_entropy = torch.nn.CrossEntropyLoss()

            def epoch():
                for start in range(0, len(data), batch):
                    optimizer.zero_grad(set_to_none=True)
                    cross_entropy(net(data[start:start + batch]),
                                  labels[start:start + batch]).backward()
                    optimizer.step()
            name = f"torch {torch.__version__.split('+')[0]}"
            runners[name], threads[name] = epoch, torch.get_num_threads()
        except ImportError:
            log("  (torch: not installed, skipped)")
    return X, runners, threads, result


def bench_float64(plan, args, log=print, tick=None):
    X, runners, threads, result = plan
    times = _rounds(runners, args.repeat, args.pause, tick=tick)
    table = {name: dict(_entry(seconds, 1, S_PER_EPOCH), threads=threads[name])
             for name, seconds in times.items()}
    log(f"\n== float64: one epoch of 784-{'-'.join(map(str, FLOAT64_HIDDEN))}-10 on {len(X)} rows, "
        f"batch {GENERATIVE['batch']}, Adam (fastbp: {result['fit_path']})")
    _table(log, "float64 epoch", table, S_PER_EPOCH[1])
    return dict(result, rows=len(X), epoch=table)


# -------------------------------------------------------------------------------------- memory
def _status_kib(field):
    with open("/proc/self/status") as handle:
        return int(re.search(rf"^{field}:\s+(\d+)", handle.read(), re.M).group(1))


def peak_memory(spec):
    """In a fresh process: the peak resident memory (MiB) one contender adds to build itself and
    run once, above the process with its library imported and the workload's data made (Linux:
    VmHWM reset by /proc/self/clear_refs).  ``spec``: the workload's arguments, the peer (or
    'fastbp') and the index of its contender."""
    w = Workload(spec["sizes"], spec["batch"], spec["steps"], spec["loss"], spec["activation"],
                 solver=spec["solver"])
    if spec["peer"] == "fastbp":
        make, library = (lambda w: FastbpFused(w, spec.get("threads"))), "fastbp.engine"
    else:
        makers, library = MAKERS[spec["peer"]]
        make = makers[spec["index"]]
    importlib.import_module(library)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _status_kib("VmRSS")
    c = make(w)
    (c.train or c.predict_bulk)()
    return {"name": c.name, "mib": (_status_kib("VmHWM") - before) / 1024}


def _memory_plan(args):
    """[(workload, [spec])]: the training nets (first solver), every contender."""
    plans = []
    for w in [w for w in _workloads(args) if w.solver == solvers(args)[0]]:
        base = {"sizes": w.sizes, "batch": w.batch, "steps": w.steps, "loss": w.loss,
                "activation": w.activation, "solver": w.solver, "threads": args.threads}
        specs = [dict(base, peer="fastbp", index=0)]
        specs += [dict(base, peer=peer, index=i) for peer in peers(args)
                  for i in range(len(MAKERS[peer][0]))]
        plans.append((w, specs))
    return plans


def bench_memory(plan, args, log=print, tick=None):
    """The peak memory table of one net, a subprocess per contender."""
    w, specs = plan
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    table = {}
    for spec in specs:
        started = time.perf_counter()
        code = ("import json, sys; from fastbp.tools.bench import peak_memory; "
                "print(json.dumps(peak_memory(json.loads(sys.argv[1]))))")
        # cwd = root: `python -c` puts its working directory first on the path, which would
        # import a source checkout's fastbp (unbuilt) instead of this one
        done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, cwd=root,
                              capture_output=True, text=True, timeout=600)
        if tick:
            tick(time.perf_counter() - started)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[-1]
            if "ModuleNotFoundError" not in reason:
                log(f"  ({spec['peer']}: memory not measured: {reason})")
            continue
        found = json.loads(done.stdout.strip().splitlines()[-1])
        table[found["name"]] = found["mib"]
    log(f"\n== peak memory, {w.name} batch {w.batch}, {w.solver}: MiB above the process with "
        f"its library and the data loaded, to build and run {w.steps} steps")
    for name, mib in table.items():
        log(f"  {name:26s} {mib:10.1f} MiB")
    return {"net": w.name, "batch": w.batch, "steps": w.steps, "mib": table}


# ----------------------------------------------------------------------------------------- run
def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _environment():
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "machine": platform.machine(), "cpus": None}
    from fastbp._platform import _blas_threads as blas
    from fastbp import engine as fused
    env["cpus"] = fused.cpu_count()
    env["fastbp_blas"] = blas.blas_choice()
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "num_threads",
                                                 "filepath", "architecture")}
                       for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except Exception:
        pass
    return env


def _plans(args, log):
    """[(key, estimated seconds, measure(log, tick) -> result)] for the chosen workloads; every
    contender is made (peers checked) and run once here."""
    chosen, plans = workloads(args), []
    if {"train", "predict", "scaling"} & set(chosen):
        gemm_seconds = ([_timed(fn) for fn in _gemm_runs(_gemm_size(args)).values()]
                        if "train" in chosen
                        else [])
        seen = set()
        for w in _workloads(args):
            contenders = make_contenders(w, args, log)
            first = {c.name: _timed(c.train) for c in contenders if c.train is not None}
            forward = w.name not in seen
            seen.add(w.name)
            plans.append(("results", _estimate(w, first, gemm_seconds, args, forward),
                          lambda log, tick, w=w, c=contenders, f=forward:
                          bench_net(w, args, log, c, tick, f)))
    if "serving" in chosen:
        for plan in _serving_plans(args):
            estimate = _rounds_seconds([SERVING_RUN[args.quick]] * len(plan[2]), args)
            plans.append(("serving", estimate, lambda log, tick, p=plan:
                          bench_serving(p, args, log, tick)))
    if "generative" in chosen:
        started = time.perf_counter()
        plan = _generative_plan(args, log)
        warm = time.perf_counter() - started
        plans.append(("generative", args.repeat * (2 * warm + len(plan[1]) * args.pause),
                      lambda log, tick, p=plan: bench_generative(p, args, log, tick)))
    if "float64" in chosen:
        plan = _float64_plan(args, log)
        first = [_timed(fn) for fn in plan[1].values()]
        plans.append(("float64", _rounds_seconds(first, args),
                      lambda log, tick, p=plan: bench_float64(p, args, log, tick)))
    if "memory" in chosen:
        for plan in _memory_plan(args):
            plans.append(("memory", 3.0 * len(plan[1]),
                          lambda log, tick, p=plan: bench_memory(p, args, log, tick)))
    return plans


def run(args):
    if args.quick:
        args.repeat, args.pause = min(args.repeat, 3), min(args.pause, QUICK_PAUSE)
    log = print
    env = _environment()
    blas = {lib.get("filepath", ""): lib.get("version") for lib in env.get("blas", [])}
    versions = ", ".join(f"{os.path.basename(path).split('-')[0]} {version}"
                         for path, version in blas.items())
    log(f"fastbp bench: {env['cpus']} CPUs, numpy {env['numpy']}, medians of "
        f"{args.repeat} interleaved rounds; fastbp's products on {env['fastbp_blas']}'s BLAS"
        + (f" (loaded: {versions})" if versions else ""))
    log("checking the peers and timing one run of each contender to estimate the whole run ...")
    sys.stdout.flush()
    if {"train", "predict", "scaling"} & set(workloads(args)):
        _workloads(args)  # a bad --net fails before anything runs
    plans = _plans(args, log)
    total = sum(seconds for _, seconds, _ in plans)
    nets = sum(key == "results" for key, _, _ in plans)
    parts = [f"{nets} net{'s' * (nets != 1)}"] if nets else []
    parts += list(dict.fromkeys(key for key, _, _ in plans if key != "results"))
    log(f"{', '.join(parts)}: about {_duration(total)} in all (--quick, --repeat, --net, "
        f"--workloads or --peers for less)")
    sys.stdout.flush()
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=round(total), file=sys.stderr, leave=False, dynamic_ncols=True,
                   smoothing=0,
                   bar_format="measuring |{bar}| {elapsed} of about {total_fmt} s, "
                              "{remaining} left")

    def tick(seconds):
        if bar is not None:
            bar.update(min(seconds, bar.total - bar.n))

    results = {"environment": env, "results": []}
    try:
        for key, _, measure in plans:
            result = measure(_above(bar, log), tick)
            if key in ("results", "serving", "memory"):
                results.setdefault(key, []).append(result)
            else:
                results[key] = result
            sys.stdout.flush()
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


def _above(bar, log):
    """``log``, but printing above the progress bar while there is one."""
    if bar is None:
        return log
    from tqdm import tqdm
    return lambda text: tqdm.write(text, file=sys.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastbp bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
