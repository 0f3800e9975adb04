"""Data-parallel training over MPI (fastbp.distributed): real runs under ``mpiexec -n 2`` and
``-n 3`` in subprocesses (each under a timeout), on the current backend, against one process's
fit of the same settings (tests/_mpi_fits.py), and a rank that fails (tests/_mpi_fault.py)."""
import json
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from conftest import PACKAGE_DIR
import fastbp
from fastbp import distributed, training
from fastbp.models.gan import FIT_PATH as GAN_PATH

HERE = os.path.dirname(os.path.abspath(__file__))


def _declined():
    """How a fit that the engine's whole epochs decline starts: each step's passes on the engine
    on the compiled backend (the fits run there, in the ranks), layer by layer on NumPy's."""
    return "engine steps (" if fastbp._backend.backend() == "compiled" else "layerwise"


def mpiexec():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install \"fastbp[mpi]\")")
    found = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip("no mpiexec on PATH (pip install mpich brings one)")
    return found


def run(ranks, script, *args, timeout=240):
    # the fastbp the tests import (the installed one in CI, the source tree in development)
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR.parent))
    started = time.monotonic()
    proc = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, os.path.join(HERE, script),
                           *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(PACKAGE_DIR.parent))
    return proc, time.monotonic() - started


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def report(request, tmp_path_factory):
    proc, _ = run(request.param, "_mpi_fits.py", str(tmp_path_factory.mktemp("mpi") / "m.npz"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return request.param, json.loads(proc.stdout.strip().splitlines()[-1])


CASES = ["nesterov_dropout_early_stopping", "adam_regressor", "autoencoder", "weighted_regressor"]
ALL = CASES + ["adam_float32"] + [c + "_f32" for c in CASES]


@pytest.mark.parametrize("path", ["engine", "layerwise"])
@pytest.mark.parametrize("case", ALL)
def test_equals_one_process_with_identical_replicas(report, case, path):
    """SGD with Nesterov momentum and dropout and early stopping, Adam with L2, an autoencoder,
    a weighted fit with L2 (the mean over the global minibatch's weight), in float64 and float32, on the engine (on the compiled backend: it sums the gradients over
    the ranks itself, one MPI_Allreduce per step) and layer by layer (through mpi4py): every
    minibatch (the last uneven, 70 rows) split over the ranks unevenly, the same model as one
    process's fit on the same path."""
    ranks, got = report
    got = got[case if path == "engine" else case + "_layerwise"]
    assert got["identical"]
    float32 = case.endswith(("_f32", "float32"))
    assert got["diff"] < (1e-5 if float32 else 1e-12), got
    assert got["path"] == got["one_path"]
    if path == "layerwise":
        assert got["path"].startswith("layerwise")
    elif fastbp._backend.backend() == "compiled":
        assert got["path"] == "engine"


GENERATIVE = ["vae_standard_prior", "vae_fixed_mixture_f32", "vae_gaussian_learned_std_weighted",
              "vae_mixture", "sparse_l1_f32", "sparse_kl_weighted", "weighted_zeros_dropout"]


@pytest.mark.parametrize("case", GENERATIVE)
def test_generative_and_weighted_fits_equal_one_process(report, case):
    """The VAE with each prior (N(0, I), a fixed mixture, a learned Gaussian, a learned mixture:
    its parameters reduced with the weights'), its learned decoder variance (each minibatch's, a
    collective inside the step, and decoder_std_ after fit), its noise drawn for the global
    minibatch; the sparse autoencoder (L1 per row; KL on the global minibatch's rho_hat); sample
    weights (with zeros: a minibatch of weight 0, a rank whose share weighs 0; with dropout):
    the same model as one process's fit, every rank identical.  The VAE layer by layer; the
    sparse autoencoder on the engine with L1 (the same path as one process), layer by layer with
    KL (its mean activations span the ranks: the engine declines, and says so)."""
    got = report[1][case]
    assert got["identical"], got
    if case == "sparse_kl_weighted" and got["one_path"] == "engine":
        assert got["path"].startswith("engine steps (the KL sparsity penalty data-parallel"), got
    else:
        assert got["path"] == got["one_path"], got
    if case == "sparse_l1_f32" and fastbp._backend.backend() == "compiled":
        assert got["path"] == "engine", got
    elif not case.startswith("sparse"):  # each step's passes on the engine, the rest in Python
        assert got["path"].startswith(_declined()), got
    assert got["diff"] < (1e-5 if case.endswith("_f32") else 1e-12), got
    if "std_diff" in got:
        assert got["std_diff"] < 1e-12, got


def test_sharded_weights_and_rho_hat_are_the_global_minibatchs(report):
    """Sharded rows, one full batch a step: weighted (the engine declines: layer by layer) and
    the sparse autoencoder's KL penalty equal one process's fit on all the rows; the sharded VAE's
    decoder_std_ is the maximum-likelihood value of its last epoch's training residuals over
    every rank's rows (recorded on each rank in NumPy, summed by mpi4py; rank 0's alone differ),
    the same on every rank, and each rank draws its own noise."""
    got = report[1]
    for case in ("sharded_weighted_gd", "sharded_sparse_kl_gd"):
        assert got[case]["identical"] and got[case]["diff"] < 1e-12, got[case]
        assert got[case]["path"].startswith(_declined())
    if fastbp._backend.backend() == "compiled":
        assert "sample_weight with sharded rows" in got["sharded_weighted_gd"]["path"]
    vae = got["sharded_vae"]
    assert vae["identical"] and vae["std_diff"] < 1e-12 and vae["std_rank0_diff"] > 1e-4, vae
    assert vae["streams_differ"], vae  # no two ranks draw the same noise for their rows


GAN = ["gan_default", "gan_no_minibatch_std", "gan_minimax_weighted", "gan_empty_shares",
       "gan_default_f32", "gan_no_minibatch_std_f32"]


@pytest.mark.parametrize("case", GAN)
def test_gan_equals_one_process(report, case):
    """The GAN (its own alternating epoch, layer by layer): each rank's share of every D and G
    step's real rows and of the noise drawn for the whole minibatch (uneven shares), one
    allreduce per player step, D's minibatch-std statistics over the global minibatch (real and
    generated apart; with and without the feature), weighted real rows and the minimax loss,
    minibatches of 2 rows (a rank with none in a step still joins its collectives): G,
    D and the averaged G are one process's, every rank identical, and D's running minibatch std
    (the real batches' statistic) and the loss curve agree by construction."""
    got = report[1][case]
    assert got["identical"], got
    assert got["path"] == got["one_path"], got
    assert got["path"] == (GAN_PATH if _declined() == "engine steps (" else "layerwise: numpy backend")
    tolerance = 1e-5 if case.endswith("_f32") else 1e-12
    assert got["diff"] < tolerance and got["std_diff"] < tolerance, got
    assert got["loss_diff"] < tolerance, got


@pytest.mark.parametrize("case", ["gan_sharded", "gan_sharded_weighted_minimax"])
def test_sharded_gan_equals_one_process_with_the_ranks_noise(report, case):
    """The GAN on sharded rows: each rank walks its own rows (in slices of its share of the
    batch, the last uneven, a rank out of rows a step early over 3 ranks) and draws its own noise
    (its own stream, as many z as its real rows; for G its share of the batch); a one-process fit
    on all the rows, fed the ranks' noise concatenated in rank order (its minibatches are the
    ranks' rows in rank order), is the truth: the same G, D, averaged G, running minibatch std
    and loss curves (weighted real rows and the minimax loss too), every rank identical."""
    ranks, got = report
    got = got[case]
    assert got["identical"] and got["streams_differ"], got
    assert got["replayed"] and len(set(got["draws"])) == 1, got  # as many draws on every rank
    assert got["diff"] < 1e-12 and got["std_diff"] < 1e-12 and got["loss_diff"] < 1e-12, got


@pytest.mark.parametrize("control", ["control_mean_of_means", "control_l2_per_rank",
                                     "control_l2_per_rank_layerwise", "control_l2_per_rank_f32",
                                     "control_kl_local_rho_hat",
                                     "control_gan_local_minibatch_std"])
def test_negative_controls_differ(report, control):
    """Averaging the ranks' means by 1/P (DDP's and Horovod's default) and L2 scaled by the
    per-rank batch are wrong where shares are uneven, and so are the KL sparsity penalty on each
    rank's own rho_hat and the GAN's minibatch-std feature on each rank's own rows: the tests
    above would catch them (on the engine and layer by layer)."""
    assert report[1][control]["diff"] > 1e-4, report[1][control]


def test_sharded_rows_train_one_model(report):
    got = report[1]["sharded"]
    assert got["identical"] and got["score"] > 0.8, got
    assert got["layerwise_path"].startswith("layerwise")
    assert got["layerwise_diff"] < 1e-5, got  # the engine's sharded epochs are the same


def test_save_writes_once_a_whole_file(report):
    assert report[1]["save"]["same"]


def test_one_rank_failing_ends_the_job_with_its_error():
    proc, seconds = run(2, "_mpi_fault.py", timeout=60)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "rank 1 of 2 failed" in output and "contains NaN" in output, output[-2000:]
    assert seconds < 10


def test_a_layer_without_share_is_refused(monkeypatch):
    """A layer of your own trains data-parallel only when it has a ``share`` attribute (its terms
    per row, its statistics over the minibatch reduced through the epoch's Share): otherwise a
    ValueError names it before any collective (on every rank alike)."""
    class Shift(fastbp.nn.Layer):
        def forward(self, X, training=False):
            return X + 1.0

        def backward(self, dA, need_dX=True):
            return dA

    monkeypatch.setattr(distributed, "current", lambda: types.SimpleNamespace(sharded=False))
    rng = np.random.default_rng(0)
    net = fastbp.nn.Sequential([fastbp.nn.Dense(3, 4, "tanh", dtype=np.float64, rng=rng), Shift(),
                                fastbp.nn.Dense(4, 2, "identity", dtype=np.float64, rng=rng)])
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    with pytest.raises(ValueError, match="a network with Shift layers does not train "
                                         "data-parallel yet"):
        fastbp.fit_network(net, "squared_error", X, Y, training.TrainConfig(max_iter=1))


def test_a_trainer_hook_that_does_not_reduce_is_refused(monkeypatch):
    """A model with its own epoch (``fit_network``'s ``trainer`` hook) trains data-parallel only
    when the hook says its steps reduce over the ranks (``data_parallel = True``, as the GAN's):
    otherwise a ValueError before any collective, never a fit that silently trains per rank."""
    monkeypatch.setattr(distributed, "current", lambda: types.SimpleNamespace(sharded=False))
    rng = np.random.default_rng(0)
    net = fastbp.nn.Sequential([fastbp.nn.Dense(3, 2, "identity", dtype=np.float64, rng=rng)])
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    with pytest.raises(ValueError, match="a model with its own epoch whose steps do not reduce "
                                         "over the ranks does not train data-parallel yet"):
        fastbp.fit_network(net, "squared_error", X, Y, training.TrainConfig(max_iter=1),
                           trainer=lambda optimizer, batch_size, fresh: None)


@pytest.mark.parametrize("n, size", [(7, 3), (2, 3), (0, 2), (90, 3), (128, 1)])
def test_shares_cover_the_rows_once(n, size):
    bounds = [distributed.share(n, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def run_cli(ranks, *args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR.parent))
    env.pop("FASTBP_BACKEND", None)
    started = time.monotonic()
    proc = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-m", "fastbp", *args],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(PACKAGE_DIR.parent))
    return proc, time.monotonic() - started


def test_fastbp_train_under_mpiexec_trains_data_parallel_and_speaks_once(tmp_path):
    saved = tmp_path / "m.npz"
    proc, _ = run_cli(2, "train", "--epochs", "3", "--quiet", "--save", str(saved))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("data-parallel over 2 MPI ranks") == 1
    assert proc.stdout.count("test accuracy") == 1  # rank 1 prints nothing
    assert "fit path (compiled): engine" in proc.stdout  # the engine's own reduction
    assert "fit path (numpy): layerwise" in proc.stdout
    import fastbp
    assert fastbp.load(saved).n_iter_ == 3


def test_fastbp_train_error_under_mpiexec_ends_the_job(tmp_path):
    proc, seconds = run_cli(2, "train", "--data", str(tmp_path / "missing.csv"), timeout=60)
    assert proc.returncode != 0 and "missing.csv" in proc.stderr
    assert seconds < 10
