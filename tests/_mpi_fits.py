"""Run under mpiexec by tests/test_distributed.py: data-parallel fits against one process's.

Prints one JSON line (rank 0): per case, the largest difference from one process's fit (or from
the wrong variant's), whether every rank ended with identical weights, and the fit path.
"""
import contextlib
import itertools
import json
import sys
import warnings

import numpy as np

import fastbp
import fastbp.engine
from fastbp import distributed, training
from fastbp.distributed import data_parallel
from mpi4py import MPI

warnings.simplefilter("ignore")
comm = MPI.COMM_WORLD
X, y = fastbp.load_digits()
X, y = X[:700], y[:700]
Xr = X[:, :16]
yr = np.c_[Xr[:, :3].sum(1) - Xr[:, 3:6].sum(1), Xr[:, 6] * 2.0]

BASE = {
    # name: (estimator, X, y); batch 90 leaves an uneven last batch (700 = 7 x 90 + 70), split
    # over 3 ranks unevenly (23/23/24); batch 89 splits unevenly over 2 ranks too (44/45, 38/39)
    "nesterov_dropout_early_stopping": lambda: (fastbp.MLPClassifier(
        (24,), solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.05,
        dropout=0.2, early_stopping=True, batch_size=90, max_iter=6, dtype="float64",
        random_state=0), X, y),
    "adam_regressor": lambda: (fastbp.MLPRegressor(
        (16, 8), solver="adam", batch_size=89, max_iter=6, dtype="float64", alpha=1e-3,
        random_state=1), Xr, yr),
    "adam_float32": lambda: (fastbp.MLPClassifier(
        (24,), batch_size=70, max_iter=4, random_state=2), X, y),
    "autoencoder": lambda: (fastbp.Autoencoder(
        4, (12,), batch_size=90, max_iter=5, dtype="float64", random_state=3), Xr, None),
}


def float32(make):
    def made():
        est, X_, y_ = make()
        return est.set_params(dtype="float32"), X_, y_
    return made


# each case in float64 and float32, on the engine (on the compiled backend: it sums the
# gradients over the ranks itself) and layer by layer (the engine switched off: through mpi4py);
# the one-process fit takes the same path
CASES = dict(BASE, **{f"{name}_f32": float32(make) for name, make in BASE.items()
                      if name != "adam_float32"})


@contextlib.contextmanager
def engine(on):
    fastbp.engine.USE_FUSED = on
    try:
        yield
    finally:
        fastbp.engine.USE_FUSED = True


def fit(make):
    est, X_, y_ = make()
    return est.fit(X_) if y_ is None else est.fit(X_, y_)


def weights(est):
    return np.concatenate([p.ravel() for p in est._network.params()])


def identical(w):
    return all(np.array_equal(w, other) for other in comm.allgather(w))


report = {}
for (name, make), on in itertools.product(CASES.items(), (True, False)):
    with engine(on):
        with data_parallel():
            est = fit(make)
        w = weights(est)
        same = identical(w)
        one = fit(make) if comm.rank == 0 else None
    if comm.rank == 0:
        report[name + ("" if on else "_layerwise")] = {"diff": float(np.abs(w - weights(one)).max()), "identical": same,
                        "path": est.fit_path_, "one_path": one.fit_path_,
                        "loss": [est.loss_curve_[-1], one.loss_curve_[-1]]}

# negative controls: what DDP/Horovod do by default, and L2 with the per-rank batch, must differ
make = CASES["adam_regressor"]
reference = fit(make) if comm.rank == 0 else None
reference_f32 = fit(CASES["adam_regressor_f32"]) if comm.rank == 0 else None


class MeanOfMeans(distributed.DataParallel):
    def allreduce(self, buffer):  # each rank's mean, summed, divided by P
        count = float(buffer[-1])
        if count:
            buffer[:-1] /= count
        super().allreduce(buffer)
        buffer[:-1] /= self.size
        buffer[-1] = 1.0


def per_rank_decays(network, alpha, batch_size):
    return original(network, alpha, max(1, batch_size // comm.size))


for name, patch, case, truth, on in (
        ("control_mean_of_means", "class", "adam_regressor", reference, False),  # mpi4py's sum
        ("control_l2_per_rank", "decay", "adam_regressor", reference, True),
        ("control_l2_per_rank_layerwise", "decay", "adam_regressor", reference, False),
        ("control_l2_per_rank_f32", "decay", "adam_regressor_f32", reference_f32, True)):
    original = training.weight_decays
    with engine(on), data_parallel() as dp:
        if patch == "class":
            dp.__class__ = MeanOfMeans
        else:
            training.weight_decays = per_rank_decays
        try:
            est = fit(CASES[case])
        finally:
            training.weight_decays = original
    if comm.rank == 0:
        report[name] = {"diff": float(np.abs(weights(est) - weights(truth)).max()),
                        "path": est.fit_path_}

# sharded: each rank its own rows (rank r: every P-th row from r); replicas agree, and it learns
with data_parallel(sharded=True):
    est = fastbp.MLPClassifier((24,), batch_size=60, max_iter=15, random_state=4).fit(
        X[comm.rank::comm.size], y[comm.rank::comm.size])
same = identical(weights(est))
score = est.score(X, y)
# the same sharded fit layer by layer: the same global order, the same model
with engine(False), data_parallel(sharded=True):
    layerwise = fastbp.MLPClassifier((24,), batch_size=60, max_iter=15, random_state=4).fit(
        X[comm.rank::comm.size], y[comm.rank::comm.size])
if comm.rank == 0:
    report["sharded"] = {"identical": same, "score": score, "path": est.fit_path_,
                         "layerwise_path": layerwise.fit_path_,
                         "layerwise_diff": float(np.abs(weights(est) - weights(layerwise)).max())}

# save: written once (rank 0), whole
path = sys.argv[1]
with data_parallel():
    est = fit(CASES["adam_float32"])
    est.save(path)
comm.Barrier()
if comm.rank == 0:
    loaded = fastbp.load(path)
    report["save"] = {"same": bool(np.array_equal(loaded.predict_proba(X), est.predict_proba(X)))}
    print(json.dumps(report))
