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
step for batch sizes 32 to 1024 on the same rows.  The default nets are the floors of issue 5 (relu hidden layers, identity
output; softmax cross-entropy with labels for classifiers, squared error for the autoencoder).
"""
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

__all__ = ["add_arguments", "run", "NETS", "main"]

HOURGLASS = "784-1000-500-250-30-250-500-1000-784"
# name -> (batch, steps per run, loss, floors); floors: max ratio vs numpy, max ratio vs torch,
# min fraction of the large-GEMM GFLOP/s
NETS = {
    "64-32-10": (32, 400, "softmax_cross_entropy", (1 / 6, 1 / 30, None)),
    "784-256-128-10": (128, 40, "softmax_cross_entropy", (0.9, 0.6, None)),
    HOURGLASS: (256, 6, "squared_error", (None, 0.9, 0.8)),
    "1024-1024-1024-10": (256, 8, "softmax_cross_entropy", (None, 0.9, 0.8)),
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
    parser.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--steps", type=int, help="minibatches per run (default: per net)")
    parser.add_argument("--threads", type=int, help="cap fastbp's threads (default: all CPUs)")
    parser.add_argument("--pause", type=float, default=0.25,
                        help="seconds of idle before each run, so that the previous library's "
                        "spinning BLAS/OpenMP workers are asleep (default 0.25)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn")
    parser.add_argument("--no-predict", action="store_true", help="skip the forward-pass timings")
    parser.add_argument("--no-scaling", action="store_true", help="skip the batch-size table")
    parser.add_argument("--quick", action="store_true", help="3 rounds, shorter runs (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


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


def _rounds(runners, repeat, pause, warm=1):
    """Interleaved rounds: {name: [seconds per run, one per round]}.

    Before each timed run: ``pause`` seconds of idle (the previous library's spinning thread
    pools go to sleep), then one untimed run of the same contender (its own threads and caches
    warm), so that every contender is timed in its steady state, undisturbed by the others."""
    for fn in runners.values():
        for _ in range(warm):
            fn()
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if pause:
                time.sleep(pause)
                runners[name]()
            times[name].append(_timed(runners[name]))
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


def bench_net(w, floors, args, log=print):
    """Measure one workload; returns a dict of results."""
    contenders = _contenders(w, args, log)
    if not contenders or contenders[0].name != "fastbp":
        raise SystemExit("fastbp bench: the compiled trainer is unavailable")
    gemm = _gemm_runs()
    runners = {c.name: c.train for c in contenders}
    for name, fn in gemm.items():
        runners["gemm " + name] = fn
    times = _rounds(runners, args.repeat, args.pause)
    result = {"net": w.name, "batch": w.batch, "steps": w.steps, "loss": w.loss,
              "activation": w.activation, "train_gflop_per_step": w.train_flops / 1e9,
              "train": {}, "gemm": {}, "predict": {}, "floors": {}}
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
    if not args.no_predict:
        runners = {}
        for c in contenders:
            runners[c.name] = c.predict
            runners["bulk " + c.name] = c.predict_bulk
        ptimes = _rounds(runners, args.repeat, args.pause)
        result["predict_bulk"] = {}
        for name, seconds in ptimes.items():
            step = statistics.median(seconds) / w.steps  # a bulk call covers steps batches
            entry = {"ms_per_batch": step * 1e3, "gflops": w.forward_flops / step / 1e9}
            if name.startswith("bulk "):
                result["predict_bulk"][name[5:]] = entry
            else:
                result["predict"][name] = entry
    for c in contenders:
        c.close()
    if not args.no_scaling:
        result["per_sample"] = per_sample(w, args)
    result["floors"] = judge(result, floors)
    return result


def per_sample(w, args):
    """fastbp's time per training row at each batch size, on the same rows (interleaved)."""
    from fastbp import engine as fused
    from fastbp.nn import make_mlp
    from fastbp.optim import SGD
    rows = max(SCALING_BATCHES) * (4 if w.forward_flops / w.batch > 1e6 else 32)
    if args.quick:
        rows //= 4
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
    times = _rounds(runners, args.repeat, args.pause)
    return {str(b): statistics.median(s) / rows * 1e6 for b, s in times.items()}


def judge(result, floors):
    """The issue's floors, met or missed, with the figures they compare."""
    max_numpy, max_torch, min_gemm = floors
    train, predict = result["train"], result.get("predict", {})
    verdicts = {}

    def ratio_floor(table, key, other_prefix, limit, label):
        if limit is None or not table:
            return
        other = next((v for k, v in table.items() if k.startswith(other_prefix)), None)
        if other is None or "fastbp" not in table:
            return
        ratio = table["fastbp"][key] / other[key]
        verdicts[label] = {"ratio": ratio, "limit": limit, "met": ratio <= limit}

    ratio_floor(train, "ms_per_step", "numpy", max_numpy, "train vs numpy")
    ratio_floor(train, "ms_per_step", "torch", max_torch, "train vs torch")
    bulk = result.get("predict_bulk", {})
    ratio_floor(predict, "ms_per_batch", "numpy", max_numpy, "predict (batches) vs numpy")
    ratio_floor(predict, "ms_per_batch", "torch", max_torch, "predict (batches) vs torch")
    ratio_floor(bulk, "ms_per_batch", "numpy", max_numpy, "predict (bulk) vs numpy")
    ratio_floor(bulk, "ms_per_batch", "torch", max_torch, "predict (bulk) vs torch")
    if min_gemm is not None and result["gemm"]:
        reference = result["gemm"].get("numpy.matmul") or next(iter(result["gemm"].values()))
        fraction = train["fastbp"]["gflops"] / reference["gflops"]
        verdicts["train GFLOP/s vs large GEMM"] = {"ratio": fraction, "limit": min_gemm,
                                                    "met": fraction >= min_gemm}
        for table, label in ((predict, "batches"), (bulk, "bulk")):
            if table:
                fraction = table["fastbp"]["gflops"] / reference["gflops"]
                verdicts[f"predict ({label}) GFLOP/s vs large GEMM"] = {
                    "ratio": fraction, "limit": min_gemm, "met": fraction >= min_gemm}
    if "per_sample" in result:
        per = [result["per_sample"][str(b)] for b in SCALING_BATCHES]
        growth = max(per[i] / min(per[:i]) for i in range(1, len(per)))
        verdicts["per-sample time not growing (32..1024)"] = {
            "ratio": growth, "limit": 1.05, "met": growth <= 1.05}
    return verdicts


# ------------------------------------------------------------------------------------ printing
def report(result, log=print):
    w = result
    log(f"\n== {w['net']}  batch {w['batch']}  {w['activation']} hidden, {w['loss']}  "
        f"({w['train_gflop_per_step'] * 1e3:.2f} MFLOP per step, {w['steps']} steps per run)")
    base = w["train"]["fastbp"]["ms_per_step"]
    log(f"  {'training step':24s} {'ms/step':>10s} {'GFLOP/s':>9s} {'fastbp/this':>12s}")
    for name, r in w["train"].items():
        ratio = "" if name == "fastbp" else f"{base / r['ms_per_step']:.3f}x"
        log(f"  {name:24s} {r['ms_per_step']:10.4f} {r['gflops']:9.1f} {ratio:>12s}")
    for name, g in w["gemm"].items():
        log(f"  large GEMM {GEMM_SIZE}^3, {name:13s} {'':10s}{g['gflops']:9.1f}")
    for key, title in (("predict", f"predict, {w['batch']} rows a call"),
                       ("predict_bulk", f"predict, {w['batch'] * w['steps']} rows at once")):
        table = w.get(key)
        if not table:
            continue
        pbase = table["fastbp"]["ms_per_batch"]
        log(f"  {title:24s} {'ms/batch':>10s} {'GFLOP/s':>9s} {'fastbp/this':>12s}")
        for name, r in table.items():
            ratio = "" if name == "fastbp" else f"{pbase / r['ms_per_batch']:.3f}x"
            log(f"  {name:24s} {r['ms_per_batch']:10.4f} {r['gflops']:9.1f} {ratio:>12s}")
    if "per_sample" in w:
        cells = "  ".join(f"{b}: {us:.3f}" for b, us in w["per_sample"].items())
        log(f"  fastbp us per training row by batch size: {cells}")
    for label, v in w["floors"].items():
        sign = ">=" if "GFLOP" in label else "<="
        log(f"  floor {label}: {v['ratio']:.3f} (need {sign} {v['limit']:.3f})  "
            f"{'met' if v['met'] else 'MISSED'}")


def _workloads(args):
    nets = args.net or list(NETS)
    batches = args.batch or []
    out = []
    for i, spec in enumerate(nets):
        sizes = [int(s) for s in spec.replace("x", "-").split("-") if s]
        if len(sizes) < 2 or min(sizes) < 1:
            raise SystemExit(f"fastbp bench: bad --net {spec!r} (want sizes like 64-32-10)")
        key = "-".join(map(str, sizes))
        batch, steps, loss, floors = NETS.get(key, (32, None, None, (None, None, None)))
        if i < len(batches):
            batch = batches[i]
        if loss is None or args.loss != "auto":
            loss = args.loss if args.loss != "auto" else (
                "squared_error" if sizes[0] == sizes[-1] else "softmax_cross_entropy")
        if args.steps:
            steps = args.steps
        elif steps is None or key not in NETS or batch != NETS[key][0]:
            per_step = 6.0 * batch * sum(d * k for d, k in zip(sizes, sizes[1:]))
            steps = int(min(400, max(4, 4e8 / max(per_step, 1.0))))
        if args.quick:
            steps = max(2, steps // 4)
        if key not in NETS or batch != NETS[key][0] or loss != NETS[key][2]:
            floors = (None, None, None)  # the floors are for its own configurations
        out.append((Workload(sizes, batch, steps, loss, args.activation), floors))
    return out


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
    env = _environment()
    blas = {lib.get("filepath", ""): lib.get("version") for lib in env.get("blas", [])}
    versions = ", ".join(f"{os.path.basename(path).split('-')[0]} {version}"
                         for path, version in blas.items())
    log(f"fastbp bench: float32, {env['cpus']} CPUs, numpy {env['numpy']}, medians of "
        f"{args.repeat} interleaved rounds; fastbp's products on {env['fastbp_blas']}'s BLAS"
        + (f" (loaded: {versions})" if versions else ""))
    results = []
    for w, floors in _workloads(args):
        result = bench_net(w, floors, args, log)
        report(result, log)
        results.append(result)
        sys.stdout.flush()
    missed = [(r["net"], label) for r in results for label, v in r["floors"].items()
              if not v["met"]]
    log("\nfloors: " + ("all met" if not missed else
                        "MISSED: " + "; ".join(f"{n} {label}" for n, label in missed)))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "results": results}, handle, indent=1)
    return 0


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="fastbp bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
