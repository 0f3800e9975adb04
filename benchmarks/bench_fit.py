"""Fit speed: fastbp vs scikit-learn's MLPClassifier on the same network, epochs and batches.

784-256-128-10 (relu, Adam), batch 128, float32, ``EPOCHS`` epochs over the handwritten digits
upsampled from 8x8 to 28x28 pixels (784 features, the size of MNIST) and repeated to ``N_ROWS``
rows.  Both fit with ``tol=0`` and a large ``n_iter_no_change`` so that they run exactly
``EPOCHS`` epochs, from float32 data (scikit-learn keeps float32 too).  Run with

    pytest benchmarks/bench_fit.py            # add --benchmark-disable to just time once

The first tests time each contender with pytest-benchmark; the last one times them again
interleaved (robust to a machine whose load changes), prints the table (median fit times, time per
minibatch step, speed relative to scikit-learn) and checks fastbp >= 3x faster than scikit-learn
with the compiled backend.  Set FASTBP_BENCH_THREADS to cap BLAS threads for every contender alike
(default: each library's own default).
"""
import os
import time
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import _backend

sklearn_nn = pytest.importorskip("sklearn.neural_network")
ndimage = pytest.importorskip("scipy.ndimage")

EPOCHS = 3
BATCH = 128
N_ROWS = 3594
HIDDEN = (256, 128)
SPEEDUP = 3.0
THREADS = int(os.environ["FASTBP_BENCH_THREADS"]) if os.environ.get("FASTBP_BENCH_THREADS") else None
ROUNDS = 5
PAUSE = 0.25  # seconds idle before each timed fit (see fastbp bench --pause)


@pytest.fixture(scope="module")
def data():
    X, y = fastbp.load_digits()
    images = ndimage.zoom(X.reshape(-1, 8, 8), (1, 3.5, 3.5), order=1)  # 28 x 28
    X = np.clip(images.reshape(len(X), 784), 0, 1).astype(np.float32)
    repeat = -(-N_ROWS // len(X))
    return np.tile(X, (repeat, 1))[:N_ROWS], np.tile(y, repeat)[:N_ROWS]


def _limits():
    from contextlib import nullcontext
    if THREADS is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=THREADS, user_api="blas")


def _fastbp(X, y):
    model = fastbp.MLPClassifier(HIDDEN, batch_size=BATCH, max_iter=EPOCHS, tol=0.0,
                                 n_iter_no_change=10 * EPOCHS, shuffle=True, random_state=0,
                                 n_threads=THREADS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return model.fit(X, y)


def _sklearn(X, y):
    model = sklearn_nn.MLPClassifier(HIDDEN, batch_size=BATCH, max_iter=EPOCHS, tol=0.0,
                                     n_iter_no_change=10 * EPOCHS, shuffle=True, random_state=0)
    with warnings.catch_warnings(), _limits():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


def _run(benchmark, fit, X, y):
    model = benchmark.pedantic(fit, args=(X, y), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert model.n_iter_ == EPOCHS
    assert model.coefs_[0].dtype == np.float32
    return model


def test_fit_fastbp_compiled(benchmark, data):
    if _backend.compiled_unavailable() is not None:
        pytest.skip(f"compiled backend unavailable ({_backend.compiled_unavailable()})")
    with fastbp.use_backend("compiled"):
        _run(benchmark, _fastbp, *data)


def test_fit_fastbp_numpy(benchmark, data):
    with fastbp.use_backend("numpy"):
        _run(benchmark, _fastbp, *data)


def test_fit_sklearn(benchmark, data):
    _run(benchmark, _sklearn, *data)


def test_speedup_table(data):
    """Interleaved timings (fastbp compiled, fastbp NumPy, scikit-learn, again and again), so that
    a machine whose load changes over time treats the contenders alike; medians of ROUNDS."""
    X, y = data
    contenders = {"scikit-learn": lambda: _sklearn(X, y)}
    if _backend.compiled_unavailable() is None:
        contenders["fastbp (compiled)"] = lambda: _with_backend("compiled", X, y)
    contenders["fastbp (NumPy)"] = lambda: _with_backend("numpy", X, y)
    times = {name: [] for name in contenders}
    for fit in contenders.values():  # warm-up
        fit()
    for _ in range(ROUNDS):
        for name, fit in contenders.items():
            time.sleep(PAUSE)  # let the previous contender's spinning BLAS workers go to sleep
            started = time.perf_counter()
            fit()
            times[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    reference = medians["scikit-learn"]
    steps = EPOCHS * -(-N_ROWS // BATCH)
    lines = [f"fit 784-{'-'.join(map(str, HIDDEN))}-10, batch {BATCH}, float32, {EPOCHS} epochs x "
             f"{N_ROWS} rows ({steps} steps), BLAS threads: {THREADS or 'default'}, "
             f"median of {ROUNDS} interleaved rounds",
             f"{'contender':<20}{'fit':>10}{'per step':>12}{'speed vs sklearn':>18}"]
    for name, seconds in medians.items():
        lines.append(f"{name:<20}{seconds:>8.3f} s{seconds / steps * 1e3:>9.2f} ms"
                     f"{reference / seconds:>17.1f}x")
    print("\n" + "\n".join(lines))
    if "fastbp (compiled)" in medians:
        assert reference / medians["fastbp (compiled)"] >= SPEEDUP


def _with_backend(name, X, y):
    with fastbp.use_backend(name):
        return _fastbp(X, y)
