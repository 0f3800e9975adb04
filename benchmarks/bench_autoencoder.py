"""One training step of the hourglass autoencoder 784-1000-500-250-30-250-500-1000-784.

``Autoencoder(encoder_layer_sizes=(1000, 500, 250), n_components=30)`` (relu, linear code,
identity output, squared error, Adam), batch 256, float32: one step = forward, loss, backward and
Adam update, run as fastbp's training loop runs it (the compiled trainer of ``fastbp.engine`` when
the compiled backend is active, else layer by layer), against the NumPy backend and the same
network, loss and optimizer in PyTorch on the CPU (when installed; imported only here).  Run with

    pytest benchmarks/bench_autoencoder.py            # --benchmark-disable to just time once

The last test times the contenders again, interleaved round by round (steadier on a busy
machine), and prints the table: median ms per step, GFLOP/s, ratio to the compiled backend.
"""
import time
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import _backend
from fastbp import training as _training

ENCODER, CODE, BATCH = (1000, 500, 250), 30, 256
SIZES = [784, *ENCODER, CODE, *ENCODER[::-1], 784]
# forward 2 n d k per layer, backward 4 n d k (dX skipped for the first layer: 2 n d k)
FLOP = sum(6 * BATCH * d * k for d, k in zip(SIZES, SIZES[1:])) - 2 * BATCH * SIZES[0] * SIZES[1]
ROUNDS = 20
_steps = {}  # contender -> one training step


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).random((BATCH, 784), dtype=np.float32)


def _fastbp_step(X, backend):
    """A fitted-for-one-step autoencoder and a callable running one more training step."""
    with fastbp.use_backend(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model = fastbp.Autoencoder(encoder_layer_sizes=ENCODER, n_components=CODE, batch_size=BATCH,
                                   max_iter=1, shuffle=False, random_state=0).fit(X)
        trainer = _training.make_trainer(model.network_, model.loss_, model._state.optimizer, BATCH)
    order, norms = np.arange(BATCH), np.zeros(len(SIZES) - 1)

    def step():
        with fastbp.use_backend(backend):
            return trainer.train_epoch(X, X, order, norms)
    return step, type(trainer).__name__


def _record(benchmark, name, step):
    _steps[name] = step
    benchmark.pedantic(step, rounds=30, iterations=1, warmup_rounds=3)


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
def test_step_fastbp(benchmark, batch, backend):
    if backend == "compiled" and _backend.compiled_unavailable() is not None:
        pytest.skip(f"compiled backend unavailable ({_backend.compiled_unavailable()})")
    step, trainer = _fastbp_step(batch, backend)
    assert np.isfinite(step())
    _record(benchmark, f"fastbp {backend} ({trainer})", step)


def test_step_pytorch(benchmark, batch):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layers = []
    for i, (d, k) in enumerate(zip(SIZES, SIZES[1:])):
        layers.append(torch.nn.Linear(d, k))
        if i not in (len(ENCODER), len(SIZES) - 2):  # linear code and output, as fastbp's
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.from_numpy(batch)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = 0.5 * ((net(x) - x) ** 2).sum() / BATCH  # fastbp's squared_error
        loss.backward()
        optimizer.step()
        return loss.detach().item()

    assert np.isfinite(step())
    _record(benchmark, f"PyTorch {torch.__version__} CPU ({torch.get_num_threads()} threads)", step)


def test_print_table():
    if not _steps:
        pytest.skip("no contender ran")
    times = {name: [] for name in _steps}
    for _ in range(ROUNDS):
        for name, step in _steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    reference = next((v for k, v in medians.items() if k.startswith("fastbp compiled")), None)
    print(f"\none training step, {'-'.join(map(str, SIZES))}, batch {BATCH}, float32, Adam "
          f"(median of {ROUNDS}, interleaved)")
    print(f"{'contender':<44}{'ms/step':>9}{'GFLOP/s':>9}{'vs compiled':>13}")
    for name, seconds in medians.items():
        ratio = f"{seconds / reference:.2f}x" if reference else "-"
        print(f"{name:<44}{seconds * 1e3:>9.2f}{FLOP / seconds / 1e9:>9.1f}{ratio:>13}")
