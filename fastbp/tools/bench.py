"""``fastbp bench``: time training steps (and the forward pass) of fastbp's compiled trainer against
fastbp's NumPy backend, PyTorch and scikit-learn, all measured in the same run, interleaved.

One training step = gather a minibatch + forward + loss + backward + optimizer update (plain SGD).
Each contender trains its own copy of the same network on the same data in the same minibatch
order; a *run* is ``steps`` consecutive minibatches, and the time per step is the run's time
divided by ``steps``.  Every round times each contender once, in a rotating order; before each
timed run come a short pause, so that the thread pools of the previous library are idle again
(OpenBLAS and OpenMP workers spin for up to ~0.1 s after a call and would steal the cores), and
one untimed run of the same contender; the report gives medians over rounds.

Contenders (those whose library is missing are skipped):

* ``fastbp``: :func:`fastbp.engine.make_trainer`, the compiled epoch (threads chosen by the work);
* ``numpy``: fastbp's layer-by-layer path on the NumPy backend (the floors' "NumPy" line);
* ``fastbp-layers``: the layer-by-layer path on the compiled kernels (for information);
* ``torch``: ``torch.nn.Sequential`` of ``Linear`` layers, ``torch.optim.SGD``, default threads;
* ``sklearn``: ``MLPClassifier``/``MLPRegressor``'s own minibatch step (``_backprop`` and its
  SGD optimizer, as ``fit`` runs them; ``partial_fit`` if those internals change).

GFLOP/s count 2 d k multiply-adds per row and layer for the forward, the weight gradient and the
input gradient (none for the first layer).  The reference line is a large float32 product
(``numpy.matmul``, 2048 x 2048 x 2048, default BLAS threads), measured in every round as well;
SciPy's ``sgemm`` is shown beside it (fastbp's products go to NumPy's OpenBLAS, or SciPy's:
the header line says which).  Prediction is the forward pass,
timed two ways: one call per minibatch of the training batch size (serving-like; per-call
overheads count), and one call over all the run's rows.  The per-sample table times fastbp's
step for batch sizes 32 to 1024 on the same rows.  The default nets are the four reference nets
(relu hidden layers, identity output; softmax cross-entropy with labels for classifiers, squared
error for the autoencoder); the speed floors the project holds them to are the benchmarks' business
(``benchmarks/floors.py``), not the user's.

Before measuring, every contender of every net runs once (untimed for the tables: its warm-up),
which gives the estimate of the whole run's time printed first; each table is printed as soon as
its rounds are done, and a progress bar (stderr, terminals only) shows the time left.
"""
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

__all__ = ["add_arguments", "run", "NETS", "main", "bench_net", "Workload"]

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


def add_arguments(parser):
    parser.add_argument("--net", action="append", metavar="SIZES",
                        help="layer sizes, e.g. 64-32-10 (repeatable; default: the four floor nets)")
    parser.add_argument("--batch", type=int, action="append",
                        help="batch size of each --net (default: 32, or the floor net's batch)")
    parser.add_argument("--loss", choices=["auto", "squared_error", "softmax_cross_entropy"],
                        default="auto", help="auto: squared error when the output is as wide as "
                        "the input (autoencoder), else softmax cross-entropy")
    parser.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    from fastbp.cli._jobs import non_negative_float, positive_int
    parser.add_argument("--repeat", type=positive_int, default=7, help="rounds (default 7)")
    parser.add_argument("--steps", type=positive_int, help="minibatches per run (default: per net)")
    parser.add_argument("--threads", type=positive_int,
                        help="cap fastbp's threads (default: all CPUs)")
    parser.add_argument("--pause", type=non_negative_float, default=0.25,
                        help="seconds of idle before each run, so that the previous library's "
                        "spinning BLAS/OpenMP workers are asleep (default 0.25)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn")
    parser.add_argument("--no-predict", action="store_true", help="skip the forward-pass timings")
    parser.add_argument("--no-scaling", action="store_true", help="skip the batch-size table")
    parser.add_argument("--quick", action="store_true", help="3 rounds, shorter runs (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------ workloads
class Workload:
    """A network shape, its data and minibatch order."""

    def __init__(self, sizes, batch, steps, loss, activation, seed=0):
        self.sizes, self.batch, self.steps, self.loss = sizes, batch, steps, loss
        self.activation = activation
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


class Contender:
    """A library's way to run ``steps`` training steps (``train``) and forward passes (``predict``)."""

    name = "?"
    train = predict = predict_bulk = None

    def close(self):
        pass


def _fastbp_network(w, seed=1):
    from fastbp.nn import make_mlp
    return make_mlp(w.sizes[0], w.sizes[1:-1], w.sizes[-1], activation=w.activation, rng=seed)


class FastbpFused(Contender):
    name = "fastbp"

    def __init__(self, w, threads=None):
        from fastbp import engine as fused
        from fastbp.optim import SGD
        self.network = _fastbp_network(w)
        self.optimizer = SGD(self.network.params(), lr=1e-3)
        self.trainer = fused.make_trainer(self.network, w.loss, self.optimizer, w.batch, threads)
        if self.trainer is None:
            raise RuntimeError("fastbp.engine.make_trainer refused the network (backend "
                               "'numpy' or _c_train not built?)")
        norms = np.zeros(len(w.sizes) - 1)
        batches = [np.ascontiguousarray(w.X[w.order[i:i + w.batch]])
                   for i in range(0, w.n, w.batch)]
        outs = [np.empty((w.batch, w.sizes[-1]), np.float32) for _ in batches]
        self.train = lambda: self.trainer.train_epoch(w.X, w.Y, w.order, norms)

        def predict():
            for xb, out in zip(batches, outs):
                self.trainer.predict(xb, out)
        bulk_out = np.empty((w.n, w.sizes[-1]), np.float32)
        self.predict = predict
        self.predict_bulk = lambda: self.trainer.predict(w.X, bulk_out)


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
        from fastbp.optim import SGD
        self.name = "numpy" if backend == "numpy" else "fastbp-layers"
        if backend == "compiled" and _backend.compiled_unavailable() is not None:
            raise RuntimeError("compiled kernels unavailable")
        self.network = _fastbp_network(w)
        optimizer = SGD(self.network.params(), lr=1e-3)
        trainer = _training.LayerwiseTrainer(self.network, w.loss, optimizer, w.batch)
        norms = np.zeros(len(w.sizes) - 1)
        batches = [np.ascontiguousarray(w.X[w.order[i:i + w.batch]])
                   for i in range(0, w.n, w.batch)]
        use = _backend.use_backend

        def train():
            with use(backend):
                trainer.train_epoch(w.X, w.Y, w.order, norms)

        network = self.network

        def predict():
            with use(backend), _layer_by_layer():
                for xb in batches:
                    network.predict(xb)

        def predict_bulk():
            with use(backend), _layer_by_layer():
                network.predict(w.X)
        self.train, self.predict, self.predict_bulk = train, predict, predict_bulk


class Torch(Contender):
    name = "torch"

    def __init__(self, w):
        import torch
        self.name = f"torch {torch.__version__.split('+')[0]}"
        torch.manual_seed(0)
        layers = []
        for i, (d, k) in enumerate(zip(w.sizes, w.sizes[1:])):
            layers.append(torch.nn.Linear(d, k))
            if i < len(w.sizes) - 2:
                layers.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
                               "sigmoid": torch.nn.Sigmoid}.get(w.activation, torch.nn.ReLU)())
        model = torch.nn.Sequential(*layers)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        criterion = torch.nn.CrossEntropyLoss() if w.classes else torch.nn.MSELoss()
        X = torch.from_numpy(w.X)
        Y = torch.from_numpy(w.Y.astype(np.int64) if w.classes else w.Y)
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

        def predict_bulk():
            with torch.inference_mode():
                model(X)
        self.train, self.predict, self.predict_bulk = train, predict, predict_bulk


class Sklearn(Contender):
    name = "sklearn"

    def __init__(self, w):
        import warnings

        import sklearn
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        self.name = f"sklearn {sklearn.__version__}"
        kind = MLPClassifier if w.classes else MLPRegressor
        mlp = kind(hidden_layer_sizes=tuple(w.sizes[1:-1]), activation=(
            "logistic" if w.activation == "sigmoid" else w.activation), solver="sgd",
            learning_rate_init=1e-3, momentum=0.0, alpha=0.0, batch_size=w.batch, shuffle=False,
            max_iter=1, random_state=0)
        first = w.order[:w.batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if w.classes:
                mlp.partial_fit(w.X[first], w.Y[first], classes=np.arange(w.sizes[-1]))
            else:
                mlp.partial_fit(w.X[first], w.Y[first])
        slices = [w.order[i:i + w.batch] for i in range(0, w.n, w.batch)]
        batches = [np.ascontiguousarray(w.X[idx]) for idx in slices]
        Y = (mlp._label_binarizer.transform(w.Y).astype(np.float32) if w.classes else w.Y)
        try:
            train = self._internal_step(mlp, w, slices, Y)
            train()
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
        """The body of MLP._fit_stochastic's minibatch loop (sklearn >= 1.0)."""
        L = len(w.sizes) - 1
        coef_grads = [np.empty((d, k), np.float32) for d, k in zip(w.sizes, w.sizes[1:])]
        intercept_grads = [np.empty(k, np.float32) for k in w.sizes[1:]]
        params = mlp.coefs_ + mlp.intercepts_

        def train():
            for idx in slices:
                xb = w.X[idx]
                activations = [xb] + [None] * L
                deltas = [None] * L
                _, cg, ig = mlp._backprop(xb, Y[idx], None, activations, deltas, coef_grads,
                                          intercept_grads)
                mlp._optimizer.update_params(params, cg + ig)
        return train


# ---------------------------------------------------------------------------------- measuring
def _timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _gemm_runs():
    """(numpy.matmul, SciPy sgemm) runners of a large float32 product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(np.float32)
    b = rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(np.float32)
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


def _contenders(w, args, log):
    made = []
    makers = [("fastbp", lambda: FastbpFused(w, args.threads)),
              ("numpy", lambda: FastbpLayers(w, "numpy")),
              ("fastbp-layers", lambda: FastbpLayers(w, "compiled"))]
    if not args.no_torch:
        makers.append(("torch", lambda: Torch(w)))
    if not args.no_sklearn:
        makers.append(("sklearn", lambda: Sklearn(w)))
    for name, make in makers:
        try:
            made.append(make())
        except ImportError:
            log(f"  ({name}: not installed, skipped)")
        except Exception as error:  # a contender that cannot run is reported, not fatal
            log(f"  ({name}: skipped: {type(error).__name__}: {error})")
    return made


def bench_net(w, args, log=print, contenders=None, tick=None):
    """Measure one workload (``contenders``: made by :func:`make_contenders`, or made here);
    each table is logged as soon as it is measured.  Returns a dict of results."""
    contenders = contenders or make_contenders(w, args, log)
    if not contenders or contenders[0].name != "fastbp":
        raise ValueError("the compiled trainer is unavailable (see fastbp.kernels.implementations())")
    log(f"\n== {w.name}  batch {w.batch}  {w.activation} hidden, {w.loss}  "
        f"({w.train_flops * 1e-6:.2f} MFLOP per step, {w.steps} steps per run)")
    gemm = _gemm_runs()
    runners = {c.name: c.train for c in contenders}
    for name, fn in gemm.items():
        runners["gemm " + name] = fn
    times = _rounds(runners, args.repeat, args.pause, tick=tick)
    result = {"net": w.name, "batch": w.batch, "steps": w.steps, "loss": w.loss,
              "activation": w.activation, "train_gflop_per_step": w.train_flops / 1e9,
              "train": {}, "gemm": {}, "predict": {}}
    gemm_flops = 2.0 * GEMM_SIZE ** 3
    for name, seconds in times.items():
        med = statistics.median(seconds)
        if name.startswith("gemm "):
            result["gemm"][name[5:]] = {"gflops": gemm_flops / med / 1e9,
                                        "gflops_runs": [gemm_flops / s / 1e9 for s in seconds]}
        else:
            step = med / w.steps
            result["train"][name] = {"ms_per_step": step * 1e3,
                                     "gflops": w.train_flops / step / 1e9,
                                     "ms_runs": [s / w.steps * 1e3 for s in seconds]}
    _table(log, "training step", "ms/step", result["train"], "ms_per_step")
    for name, g in result["gemm"].items():
        log(f"  large GEMM {GEMM_SIZE}^3, {name:13s} {'':10s}{g['gflops']:9.1f}")
    if not args.no_predict:
        runners = {}
        for c in contenders:
            runners[c.name] = c.predict
            runners["bulk " + c.name] = c.predict_bulk
        ptimes = _rounds(runners, args.repeat, args.pause, tick=tick)
        result["predict_bulk"] = {}
        for name, seconds in ptimes.items():
            step = statistics.median(seconds) / w.steps  # a bulk call covers steps batches
            entry = {"ms_per_batch": step * 1e3, "gflops": w.forward_flops / step / 1e9}
            if name.startswith("bulk "):
                result["predict_bulk"][name[5:]] = entry
            else:
                result["predict"][name] = entry
        _table(log, f"predict, {w.batch} rows a call", "ms/batch", result["predict"],
               "ms_per_batch")
        _table(log, f"predict, {w.n} rows at once", "ms/batch", result["predict_bulk"],
               "ms_per_batch")
    for c in contenders:
        c.close()
    if not args.no_scaling:
        result["per_sample"] = per_sample(w, args, tick)
        cells = "  ".join(f"{b}: {us:.3f}" for b, us in result["per_sample"].items())
        log(f"  fastbp us per training row by batch size: {cells}")
    return result


def _table(log, title, unit, table, key):
    """One table of medians, fastbp's speed against each other contender in words."""
    from fastbp.cli._jobs import faster

    log(f"  {title:24s} {unit:>10s} {'GFLOP/s':>9s}  fastbp is")
    ours = table["fastbp"][key]
    for name, r in table.items():
        words = "" if name == "fastbp" else faster(r[key] / ours, _plain(name))
        log(f"  {name:24s} {r[key]:10.4f} {r['gflops']:9.1f}  {words}")


def _plain(name):
    """A contender's name as a person says it: 'PyTorch', 'scikit-learn', 'fastbp's NumPy backend'."""
    words = {"torch": "PyTorch", "sklearn": "scikit-learn", "numpy": "its NumPy backend",
             "fastbp-layers": "its layer-by-layer path"}
    return words.get(name.split()[0], name)


def make_contenders(w, args, log=print):
    """Every contender for workload ``w`` (those that cannot run are logged and skipped)."""
    return _contenders(w, args, log)


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


def workload(spec, args, batch=None):
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
    return Workload(sizes, batch, steps, loss, args.activation)


def _workloads(args):
    batches = args.batch or []
    return [workload(spec, args, batches[i] if i < len(batches) else None)
            for i, spec in enumerate(args.net or list(NETS))]


def _estimate(w, first, gemm_seconds, args):
    """Seconds that :func:`bench_net` will take, from one run of each contender (``first``:
    {name: seconds}) and of the large GEMM: the rounds (each run twice: warm and timed, after
    a pause), the forward passes (~1/3 of a step each, two ways) and the per-sample table."""
    runs = len(first) + len(gemm_seconds)
    train = args.repeat * (2 * (sum(first.values()) + sum(gemm_seconds)) + runs * args.pause)
    predict = 0.0 if args.no_predict else (
        2 * args.repeat * (2 * sum(first.values()) / 3 + len(first) * args.pause))
    scaling = 0.0
    if not args.no_scaling:
        per_row = first["fastbp"] / w.n
        scaling = (len(SCALING_BATCHES) * (2 * args.repeat + 1) * per_row * per_sample_rows(w, args)
                   + len(SCALING_BATCHES) * args.repeat * args.pause)
    return train + predict + scaling


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _environment():
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "machine": platform.machine(), "cpus": None}
    from fastbp._platform import _blas_threads
    from fastbp import engine as fused
    env["cpus"] = fused.cpu_count()
    env["fastbp_blas"] = _blas_threads.blas_choice()
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "num_threads",
                                                 "filepath", "architecture")}
                       for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except Exception:
        pass
    return env


def run(args):
    if args.quick:
        args.repeat = min(args.repeat, 3)
    log = print
    workloads = _workloads(args)
    env = _environment()
    blas = {lib.get("filepath", ""): lib.get("version") for lib in env.get("blas", [])}
    versions = ", ".join(f"{os.path.basename(path).split('-')[0]} {version}"
                         for path, version in blas.items())
    log(f"fastbp bench: float32, {env['cpus']} CPUs, numpy {env['numpy']}, medians of "
        f"{args.repeat} interleaved rounds; fastbp's products on {env['fastbp_blas']}'s BLAS"
        + (f" (loaded: {versions})" if versions else ""))
    log("timing one run of each contender to estimate the whole run ...")
    sys.stdout.flush()
    gemm_seconds = [_timed(fn) for fn in _gemm_runs().values()]
    plans, total = [], 0.0
    for w in workloads:
        contenders = make_contenders(w, args, log)
        first = {c.name: _timed(c.train) for c in contenders}
        if "fastbp" not in first:
            raise ValueError("the compiled trainer is unavailable "
                             "(see fastbp.kernels.implementations())")
        plans.append((w, contenders))
        total += _estimate(w, first, gemm_seconds, args)
    log(f"{len(workloads)} {'net' if len(workloads) == 1 else 'nets'}: about "
        f"{_duration(total)} in all (--quick, --repeat or --net for less)")
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

    results = []
    try:
        for w, contenders in plans:
            results.append(bench_net(w, args, _above(bar, log), contenders, tick))
            sys.stdout.flush()
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "results": results}, handle, indent=1)
    return 0


def _above(bar, log):
    """``log``, but printing above the progress bar while there is one."""
    if bar is None:
        return log
    from tqdm import tqdm
    return lambda text: tqdm.write(text, file=sys.stdout)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="fastbp bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
