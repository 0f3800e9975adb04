"""A process forked after the compiled engine has run works as a fresh process would (issue 11,
section 1): the child predicts and fits with the parent's results, and exits.

The engine's thread pool, its BLAS holds and the trainers' locks are inherited by a forked child
without the threads behind them; before the fix, a child's predict waited forever on the parent's
workers and its interpreter exit joined a parent's thread id.  Each case runs in a child
interpreter with a timeout, so that a regression fails instead of hanging the run.
"""
import json

import pytest

from conftest import last_json_line, require_compiled, run_python

# The example: 2 x 256 hidden units on 64 features, big enough for the engine to run its
# minibatches and its 600-row predict on two threads where two CPUs are free.
SETUP = r"""
import json, os, sys, time, warnings
import numpy as np
import fastbp

rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 64)).astype(np.float32)
y = rng.integers(0, 10, 2000)


def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return fastbp.MLPClassifier((256, 256), max_iter=2, random_state=0).fit(X, y)


est = fitted()
p = est.predict_proba(X[:600])
assert fastbp.backend() == "compiled"
"""

# the parent waits at most 60 s for the forked child `pid`, then kills it (a hang fails, never blocks)
WAIT_FOR_CHILD = r"""
deadline = time.monotonic() + 60
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done or time.monotonic() > deadline:
        break
    time.sleep(0.02)
if not done:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""

OS_FORK = SETUP + r"""
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    q = est.predict_proba(X[:600])          # the parent's engine, in the child
    refit = fitted().predict_proba(X[:600])  # a new fit in the child
    est.fit(X, y)                            # the parent's engine trains in the child
    os.write(write, json.dumps({"predict": bool(np.array_equal(p, q)),
                                "refit": bool(np.array_equal(p, refit)),
                                "fit_again": bool(np.array_equal(p, est.predict_proba(X[:600])))
                                }).encode())
    os.close(write)
    sys.exit(0)                              # a normal interpreter exit (cleanup runs)
os.close(write)
""" + WAIT_FOR_CHILD + r"""child = json.loads(os.read(read, 4096).decode() or "{}")
print(json.dumps({"exited": bool(done), "status": status if done else None, **child,
                  "parent_again": bool(np.array_equal(p, est.predict_proba(X[:600])))}))
"""

POOL = SETUP + r"""
import multiprocessing


def task(kind):
    if kind == "predict":
        return est.predict_proba(X[:600])
    return fitted().predict_proba(X[:600])


with multiprocessing.get_context("fork").Pool(2) as pool:
    results = pool.map_async(task, ["predict", "fit", "predict"]).get(timeout=60)
try:  # joblib's multiprocessing backend: a fork pool too (where fork is the default)
    import joblib
    if multiprocessing.get_start_method() == "fork":
        results += joblib.Parallel(n_jobs=2, backend="multiprocessing", timeout=60)(
            joblib.delayed(task)(kind) for kind in ["predict", "fit"])
except ImportError:
    pass
print(json.dumps({"same": [bool(np.array_equal(p, r)) for r in results]}))
"""


def run(code):
    require_compiled()
    proc = run_python(code, env={"FASTBP_BACKEND": "compiled"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return last_json_line(proc)


def test_os_fork_child_predicts_fits_and_exits_like_a_fresh_process():
    report = run(OS_FORK)
    assert report == {"exited": True, "status": 0, "predict": True, "refit": True,
                      "fit_again": True, "parent_again": True}


def test_multiprocessing_fork_pool_predicts_and_fits_like_the_parent():
    same = run(POOL)["same"]
    assert len(same) >= 3 and all(same), same


BLAS_HELD = r"""
import json, os, threading, time
import numpy as np
from fastbp._platform import _blas_threads

libraries = _blas_threads.all_blas()
before = [lib.get() for lib in libraries]
inside, leave = threading.Event(), threading.Event()


def hold():
    with _blas_threads.limit_blas_threads(1):
        inside.set()
        leave.wait()


thread = threading.Thread(target=hold)
thread.start()
inside.wait()
pid = os.fork()
if pid == 0:  # the holding thread is not in the child: its cap must not stay
    os._exit(0 if [lib.get() for lib in libraries] == before else 1)
_, status = os.waitpid(pid, 0)
held = [lib.get() for lib in libraries]
leave.set()
thread.join()
print(json.dumps({"before": before, "held": held, "child_status": status,
                  "after": [lib.get() for lib in libraries]}))
"""


def test_a_blas_cap_held_by_another_thread_is_lifted_in_a_forked_child():
    report = run(BLAS_HELD)
    if not any(count > 1 for count in report["before"]):
        pytest.skip("every BLAS runs on one thread here: nothing to restore")
    assert report["held"] == [1] * len(report["before"])
    assert report["child_status"] == 0 and report["after"] == report["before"]


BUSY_AT_FORK = SETUP + r"""
import threading
from fastbp import engine as fused

blas = fused.engine_blas()[1][0]  # the BLAS the engine holds at one thread while it runs
before = blas.get()
for predictor in est._network._predictors.values():  # as by threads inside predict at the fork
    predictor._lock.acquire()
big = fastbp.MLPClassifier((1024, 1024), solver="sgd", max_iter=1000, random_state=0)
fitter = threading.Thread(target=big.fit, args=(X, y), daemon=True)
fitter.start()
deadline = time.monotonic() + 30
while blas.get() != 1 and time.monotonic() < deadline:  # the engine holds the BLAS: inside
    time.sleep(0.001)
held = blas.get()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    q = est.predict_proba(X[:600])
    os.write(write, json.dumps({"predict": bool(np.array_equal(p, q)),
                                "blas": blas.get()}).encode())
    sys.exit(0)
""" + WAIT_FOR_CHILD + r"""os.close(write)
child = json.loads(os.read(read, 4096).decode() or "{}")
print(json.dumps({"before": before, "held": held, "exited": bool(done),
                  "status": status if done else None, **child}), flush=True)
os._exit(0)  # (the fit thread need not finish)
"""


def test_a_fork_while_other_threads_are_inside_the_engine_gives_a_working_child():
    """Another thread trains (the engine holds the BLAS at one thread) and a predictor's lock is
    held when the process forks: in the child, predict works with the parent's results and the
    BLAS has its thread count back."""
    report = run(BUSY_AT_FORK)
    if report["before"] == 1:
        pytest.skip("the engine's BLAS runs on one thread here: nothing to hold")
    assert report["held"] == 1, "the fit never held the BLAS: the fork did not meet the engine"
    assert report == {"before": report["before"], "held": 1, "exited": True, "status": 0,
                      "predict": True, "blas": report["before"]}


# The engine's passes inside steps (a VAE: one engine and one lock shared by all passes of a
# dtype) in a forked child: the child fits as the parent did, and exits.
ENGINE_STEPS = r"""
import json, os, sys, time, threading, warnings
import numpy as np
import fastbp

X = np.random.default_rng(0).random((600, 40)).astype(np.float32)


def fitted(n_threads=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return fastbp.VAE(3, (128, 64), max_iter=2, random_state=0, n_threads=n_threads).fit(X)


est = fitted()
assert est.fit_path_.startswith("engine steps (")
z = est.transform(X)
# another thread is inside a fit (holding the shared engine's lock, or about to) at the fork;
# its BLAS at one thread (n_threads=1): a fork in the middle of a threaded OpenBLAS call can
# hang that call in the parent (OpenBLAS's fork handler), whoever makes it
worker = threading.Thread(target=lambda: [fitted(1) for _ in range(3)])
worker.start()
time.sleep(0.05)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    again = fitted()
    os.write(write, json.dumps({"same": bool(np.array_equal(z, again.transform(X))),
                                "path": again.fit_path_}).encode())
    os.close(write)
    sys.exit(0)
os.close(write)
""" + WAIT_FOR_CHILD + r"""worker.join()
child = json.loads(os.read(read, 4096).decode() or "{}")
print(json.dumps({"exited": bool(done), "status": status if done else None, **child}))
"""


def test_a_forked_child_fits_on_the_engines_passes_like_the_parent():
    report = run(ENGINE_STEPS)
    assert report["exited"] and report["status"] == 0 and report["same"], report
    assert report["path"].startswith("engine steps ("), report
