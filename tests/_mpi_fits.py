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
from fastbp.models._generative import PenalisedSequential
from mpi4py import MPI

warnings.simplefilter("ignore")
comm = MPI.COMM_WORLD
X, y = fastbp.load_digits()
X, y = X[:700], y[:700]
Xr = X[:, :16]
yr = np.c_[Xr[:, :3].sum(1) - Xr[:, 3:6].sum(1), Xr[:, 6] * 2.0]
row_weight = np.random.default_rng(0).uniform(0.2, 2.0, len(X))
zero_weight = row_weight.copy()
zero_weight[90:225] = 0.0  # unshuffled: minibatch 2 (weight 0: no step), rank 0's share of minibatch 3

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
    # weights: the engine divides by the global minibatch's weight itself (every rank holds all)
    "weighted_regressor": lambda: (fastbp.MLPRegressor(
        (16,), batch_size=89, max_iter=4, dtype="float64", alpha=1e-2, random_state=5), Xr, yr,
        row_weight),
}


def float32(make):
    def made():
        est, *data = make()
        return est.set_params(dtype="float32"), *data
    return made


# the generative models' layers (each prior, a learned decoder variance, the sparsity penalties:
# per-row terms, and the global minibatch's statistics reduced inside the forward pass) and
# weights with zeros: never on the engine, so once each, layer by layer
GENERATIVE = {
    "vae_standard_prior": lambda: (fastbp.VAE(
        2, (8,), decoder_std=1.0, prior="fixed", batch_size=90, max_iter=3, dtype="float64",
        random_state=6), Xr, None),
    "vae_fixed_mixture_f32": lambda: (fastbp.VAE(
        2, (8,), loss="cross_entropy", prior="fixed", prior_means=[[-1, 0], [1, 1]],
        batch_size=90, max_iter=3, random_state=7), Xr, None),
    "vae_gaussian_learned_std_weighted": lambda: (fastbp.VAE(
        2, (8,), prior="gaussian", batch_size=90, max_iter=3, dtype="float64",
        random_state=8), Xr, None, row_weight),
    "vae_mixture": lambda: (fastbp.VAE(
        2, (8,), prior="mixture", n_prior_components=3, batch_size=89, max_iter=3,
        dtype="float64", random_state=9), Xr, None),
    "sparse_l1_f32": lambda: (fastbp.Autoencoder(
        4, (12,), sparsity="l1", sparsity_weight=0.1, batch_size=90, max_iter=3,
        random_state=10), Xr, None),
    "sparse_kl_weighted": lambda: (fastbp.Autoencoder(
        4, (12,), code_activation="logistic", sparsity="kl", sparsity_weight=2.0, batch_size=90,
        learning_rate_init=0.01, max_iter=3, dtype="float64", random_state=11), Xr, None, row_weight),
    "weighted_zeros_dropout": lambda: (fastbp.MLPRegressor(
        (16,), dropout=0.1, shuffle=False, batch_size=90, max_iter=3, dtype="float64",
        alpha=1e-2, random_state=12), Xr, yr, zero_weight),
}

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
    est, X_, y_, *sample_weight = make()
    kwargs = {"sample_weight": sample_weight[0]} if sample_weight else {}
    return est.fit(X_, **kwargs) if y_ is None else est.fit(X_, y_, **kwargs)


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

for name, make in GENERATIVE.items():
    with data_parallel():
        est = fit(make)
    w = weights(est)
    std = getattr(est, "decoder_std_", None)
    same = identical(w) and (std is None or identical(std))
    if comm.rank == 0:
        one = fit(make)
        got = {"diff": float(np.abs(w - weights(one)).max()), "identical": same,
               "path": est.fit_path_, "one_path": one.fit_path_}
        if getattr(one, "decoder_std_", None) is not None:
            got["std_diff"] = float(np.abs(est.decoder_std_ - one.decoder_std_).max())
        report[name] = got

# the GAN (layer by layer: its own alternating epoch): every D and G step over the ranks' shares
# of the real rows and of the noise drawn for the whole minibatch, D's minibatch-std statistics
# over the global minibatch; batch 45 splits unevenly over 2 ranks (22/23) and the last batch of
# 25 over 3 (8/8/9).  Compared: G, D, the averaged G and D's running minibatch std.
GAN = {
    "gan_default": lambda: (fastbp.GAN(
        2, (8,), (8,), batch_size=45, max_iter=2, dtype="float64", random_state=16), Xr, None),
    "gan_no_minibatch_std": lambda: (fastbp.GAN(
        2, (8,), (8,), minibatch_std=False, batch_size=45, max_iter=2, dtype="float64",
        random_state=17), Xr, None),
    "gan_minimax_weighted": lambda: (fastbp.GAN(
        2, (8,), (8,), generator_loss="minimax", n_generator_steps=2, solver="sgd", alpha=1e-2,
        batch_size=45, max_iter=2, dtype="float64", random_state=18), Xr, None, row_weight),
    # minibatches of 2 rows (the last of 1): a rank with no rows of a step still takes part
    "gan_empty_shares": lambda: (fastbp.GAN(
        2, (4,), (4,), batch_size=2, max_iter=2, dtype="float64", random_state=19), Xr[:7], None),
}
GAN.update({f"{name}_f32": float32(make) for name, make in GAN.items()
            if name in ("gan_default", "gan_no_minibatch_std")})


def gan_weights(est):
    networks = (est.generator_, est.discriminator_, est.average_generator_)
    return np.concatenate([p.ravel() for network in networks if network is not None
                           for p in network.params()])


def running_std(est):
    return [layer.running for layer in est.discriminator_.layers if hasattr(layer, "running")]


for name, make in GAN.items():
    with data_parallel():
        est = fit(make)
    w = gan_weights(est)
    same = identical(np.r_[w, running_std(est)])
    if comm.rank == 0:
        one = fit(make)
        report[name] = {"diff": float(np.abs(w - gan_weights(one)).max()), "identical": same,
                        "path": est.fit_path_, "one_path": one.fit_path_,
                        "std_diff": float(np.abs(np.subtract(running_std(est),
                                                             running_std(one))).max(initial=0)),
                        "loss_diff": float(np.abs(np.subtract(est.discriminator_loss_curve_,
                                                              one.discriminator_loss_curve_)).max())}

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

def local_statistics_control(name, make, weights_of):
    """A negative control: a fit whose statistics over the minibatch (Share.mean) are each
    rank's own rows' must differ from one process's fit."""
    original_mean = distributed.Share.mean
    distributed.Share.mean = lambda self, local, weighted=True: local
    try:
        with data_parallel():
            est = fit(make)
    finally:
        distributed.Share.mean = original_mean
    if comm.rank == 0:
        report[name] = {"diff": float(np.abs(weights_of(est) - weights_of(fit(make))).max())}


# the KL sparsity penalty with rho_hat, and the GAN's minibatch-std statistics, from each rank's
# own rows
local_statistics_control("control_kl_local_rho_hat", GENERATIVE["sparse_kl_weighted"], weights)
local_statistics_control("control_gan_local_minibatch_std", GAN["gan_default"], gan_weights)

# sharded, one full batch a step ('gd': the rows' order within a batch does not matter), each
# rank every P-th row of the 696 (a multiple of 2 and 3: every rank's share of the batch holds
# all its rows): the same model as one process on all rows -- weighted (layer by layer: the
# engine declines sharded weights), and the sparse autoencoder's global rho_hat
Xs, ys, ws = Xr[:696], yr[:696], row_weight[:696]
mine = slice(comm.rank, None, comm.size)
SHARDED = {
    "sharded_weighted_gd": lambda: (fastbp.MLPRegressor(
        (16,), solver="gd", learning_rate_init=0.05, max_iter=4, dtype="float64", alpha=1e-2,
        random_state=13), Xs, ys, ws),
    "sharded_sparse_kl_gd": lambda: (fastbp.Autoencoder(
        4, (12,), code_activation="logistic", sparsity="kl", sparsity_weight=0.5, solver="gd",
        learning_rate_init=0.05, max_iter=4, dtype="float64", random_state=14), Xs, None),
}
for name, make in SHARDED.items():
    est, X_, y_, *sample_weight = make()
    with data_parallel(sharded=True):
        est.fit(X_[mine], *([] if y_ is None else [y_[mine]]),
                **({"sample_weight": sample_weight[0][mine]} if sample_weight else {}))
    same = identical(weights(est))
    if comm.rank == 0:
        report[name] = {"diff": float(np.abs(weights(est) - weights(fit(make))).max()),
                        "identical": same, "path": est.fit_path_}
# sharded VAE: the learned decoder std after fit is the maximum-likelihood value of its last
# epoch's training residuals over every rank's rows (each rank records its steps' residuals
# x - d(z) here, in NumPy, and mpi4py sums them)
steps, ends = [], []
objective = PenalisedSequential._objective


def recording(self, loss, X_, Y_, training, sample_weight=None):
    result = objective(self, loss, X_, Y_, training, sample_weight)
    steps.append(np.square(self.output - Y_).sum(axis=0))
    return result


PenalisedSequential._objective = recording
try:
    with data_parallel(sharded=True):
        est = fastbp.VAE(2, (8,), batch_size=60, max_iter=2, dtype="float64", random_state=15)
        est.fit(Xs[mine], callbacks=[lambda state: ends.append(len(steps))])
finally:
    PenalisedSequential._objective = objective
same = identical(weights(est))
streams = comm.allgather(str(est._sampler.rng.bit_generator.state))  # each rank its own noise
last_epoch = np.sum(steps[ends[-2]:ends[-1]], axis=0)
truth = np.sqrt(comm.allreduce(last_epoch) / len(Xs))
stds = comm.gather(est.decoder_std_)
if comm.rank == 0:
    same_std = all(np.array_equal(std, stds[0]) for std in stds)
    report["sharded_vae"] = {"identical": same and same_std,
                             "streams_differ": len(set(streams)) == comm.size,
                             "std_diff": float(np.abs(est.decoder_std_ / truth - 1).max()),
                             "std_rank0_diff": float(np.abs(
                                 np.sqrt(last_epoch / len(Xs[mine])) / truth - 1).max())}

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

# the GAN on sharded rows (shuffle=False: each rank walks its own rows in order): rank r holds
# the rows at positions share(45, r, P) of every minibatch of 45 of Xr (the last, of 25, too:
# there a rank has fewer rows or none, and over 3 ranks rank 2 runs out a step early), so the
# ranks' rows of every step, in rank order, are one process's minibatch.  Each rank draws its
# own noise (its own stream): recorded, then replayed, concatenated in rank order, into one
# process's fit on all the rows -- the same model (G, D, the averaged G, D's running std and
# both loss curves), with and without weights and the minibatch-std feature.
SHARDED_GAN = {
    "gan_sharded": lambda: fastbp.GAN(2, (8,), (8,), batch_size=45, shuffle=False, max_iter=2,
                                      dtype="float64", random_state=20),
    "gan_sharded_weighted_minimax": lambda: fastbp.GAN(
        2, (8,), (8,), generator_loss="minimax", minibatch_std=False, n_generator_steps=2,
        solver="sgd", alpha=1e-2, batch_size=45, shuffle=False, max_iter=2, dtype="float64",
        random_state=21),
}
lo, hi = distributed.share(45, comm.rank, comm.size)
mine = np.flatnonzero((np.arange(len(Xr)) % 45 >= lo) & (np.arange(len(Xr)) % 45 < hi))
original_noise = fastbp.GAN._noise
for name, make in SHARDED_GAN.items():
    drawn = []

    def recording(self, m, out, parallel=None):
        original_noise(self, m, out, parallel)
        drawn.append(out.copy())

    weighted = "weighted" in name
    fastbp.GAN._noise = recording
    try:
        with data_parallel(sharded=True):
            est = make().fit(Xr[mine], **({"sample_weight": row_weight[mine]} if weighted else {}))
    finally:
        fastbp.GAN._noise = original_noise
    curves = np.r_[est.discriminator_loss_curve_, est.generator_loss_curve_]
    same = identical(np.r_[gan_weights(est), running_std(est), curves])
    streams = comm.allgather(str(est._rng.bit_generator.state))
    drawn = comm.gather(drawn)
    if comm.rank == 0:
        replay = iter([np.concatenate(parts) for parts in zip(*drawn)])

        def replaying(self, m, out, parallel=None):
            out[...] = next(replay)

        fastbp.GAN._noise = replaying
        try:
            one = make().fit(Xr, **({"sample_weight": row_weight} if weighted else {}))
        finally:
            fastbp.GAN._noise = original_noise
        report[name] = {
            "diff": float(np.abs(gan_weights(est) - gan_weights(one)).max()), "identical": same,
            "draws": [len(parts) for parts in drawn], "replayed": next(replay, None) is None,
            "streams_differ": len(set(streams)) == comm.size,
            "std_diff": float(np.abs(np.subtract(running_std(est),
                                                 running_std(one))).max(initial=0)),
            "loss_diff": float(np.abs(curves - np.r_[one.discriminator_loss_curve_,
                                                     one.generator_loss_curve_]).max())}

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
