"""pytest-benchmark: one training step (and the forward pass) of fastbp's compiled trainer against
fastbp's NumPy backend, PyTorch, scikit-learn, JAX (jit and lax.scan) and ONNX Runtime (prediction)
on issue 5's four nets, SGD and Adam (see ``fastbp bench``, whose contenders these are; missing
libraries are skipped).

    pytest benchmarks/bench_step.py --benchmark-group-by=group --benchmark-columns=median,iqr
    pytest benchmarks/bench_step.py -k interleaved -s      # the floors, measured interleaved

pytest-benchmark times one test at a time, so the per-contender tests below are *not*
interleaved; on a shared machine compare within ``test_interleaved_floors``, which runs
``fastbp.tools.bench`` (all contenders, each checked to give fastbp's loss after one step, and the
large-GEMM reference in rotating order, medians) and records every figure and floor verdict in
``extra_info``; ``test_interleaved_other_floors`` does the same for the one-row serving, generative
and float64 tables.  Set ``FASTBP_ASSERT_FLOORS=1`` to make
a missed floor fail the test.
"""
import argparse
import os
import time

import numpy as np
import pytest

from fastbp import _backend
from fastbp.tools import bench
from floors import FLOORS, OTHER_FLOORS, judge

NETS = list(bench.NETS)
# contender -> (peer, index of its maker in bench.MAKERS[peer])
CONTENDERS = {"fastbp": (None, 0), "numpy": ("numpy", 0), "fastbp-layers": ("layers", 0),
              "torch": ("torch", 0), "sklearn": ("sklearn", 0), "jax jit": ("jax", 0),
              "jax scan": ("jax", 1), "onnxruntime": ("onnx", 0)}


def _workload(net, solver="sgd"):
    batch, steps, loss = bench.NETS[net]
    sizes = [int(s) for s in net.split("-")]
    return bench.Workload(sizes, batch, steps, loss, "relu", solver=solver)


def _contender(name, w):
    if _backend.compiled_unavailable() is not None:
        pytest.skip("compiled backend unavailable")
    peer, index = CONTENDERS[name]
    try:
        if peer is None:
            return bench.FastbpFused(w)
        make = bench.MAKERS[peer][0][index]
        ok, words = bench.check_peer(make, w)
        assert ok, f"{name} does other work than fastbp: {words}"
        return make(w)
    except ImportError as error:
        pytest.skip(f"{name} not installed ({error})")
    except RuntimeError as error:
        pytest.skip(f"{name}: {error}")


def _settle():
    time.sleep(0.1)  # let the previous library's BLAS/OpenMP workers go idle


@pytest.mark.parametrize("solver", bench.SOLVERS)
@pytest.mark.parametrize("contender", [name for name in CONTENDERS if name != "onnxruntime"])
@pytest.mark.parametrize("net", NETS)
def test_train_step(benchmark, net, contender, solver):
    w = _workload(net, solver)
    c = _contender(contender, w)
    benchmark.group = f"train {net} {solver} (batch {w.batch}, {w.steps} steps per round)"
    benchmark.extra_info.update(net=net, batch=w.batch, steps=w.steps,
                                gflop_per_step=w.train_flops / 1e9)
    c.train()
    _settle()
    benchmark.pedantic(c.train, rounds=7, iterations=1, warmup_rounds=1)
    step = benchmark.stats.stats.median / w.steps
    benchmark.extra_info.update(ms_per_step=step * 1e3, gflops=w.train_flops / step / 1e9)


@pytest.mark.parametrize("contender", [name for name in CONTENDERS if name != "jax scan"])
@pytest.mark.parametrize("net", NETS)
def test_predict(benchmark, net, contender):
    w = _workload(net)
    c = _contender(contender, w)
    benchmark.group = f"predict {net} (batches of {w.batch}, {w.steps} per round)"
    c.predict()
    _settle()
    benchmark.pedantic(c.predict, rounds=7, iterations=1, warmup_rounds=1)
    step = benchmark.stats.stats.median / w.steps
    benchmark.extra_info.update(ms_per_batch=step * 1e3, gflops=w.forward_flops / step / 1e9)


@pytest.mark.parametrize("which", ["numpy.matmul", "scipy sgemm"])
def test_large_gemm(benchmark, which):
    run = bench._gemm_runs().get(which)
    if run is None:
        pytest.skip(f"{which} unavailable")
    benchmark.group = f"large GEMM {bench.GEMM_SIZE}^3 float32"
    run()
    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["gflops"] = 2.0 * bench.GEMM_SIZE ** 3 / benchmark.stats.stats.median / 1e9


def _args(*argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(["--repeat", "5", *argv])


def _verdicts(benchmark, name, result, verdicts):
    for label, v in verdicts.items():
        sign = ">=" if "GFLOP" in label else "<="
        print(f"  floor {label}: {v['ratio']:.3f} (need {sign} {v['limit']:.3f})  "
              f"{'met' if v['met'] else 'MISSED'}")
    result["floors"] = verdicts
    benchmark.extra_info.update(result=result)
    if os.environ.get("FASTBP_ASSERT_FLOORS") == "1":
        missed = [label for label, v in verdicts.items() if not v["met"]]
        assert not missed, f"{name}: floors missed: {missed}"


@pytest.mark.parametrize("solver", bench.SOLVERS)
@pytest.mark.parametrize("net", NETS)
def test_interleaved_floors(benchmark, net, solver):
    """All contenders and the GEMM reference in one interleaved measurement, as ``fastbp bench``."""
    if _backend.compiled_unavailable() is not None:
        pytest.skip("compiled backend unavailable")
    args = _args("--workloads", "train,predict,scaling")
    w = _workload(net, solver)
    benchmark.group = "interleaved (fastbp bench)"
    result = benchmark.pedantic(lambda: bench.bench_net(w, args, forward=solver == "sgd"),
                                rounds=1, iterations=1)
    _verdicts(benchmark, f"{net} {solver}", result, judge(result, FLOORS[net]))
    assert np.isfinite(result["train"]["fastbp"]["ms_per_step"])


@pytest.mark.parametrize("table", ["serving", "generative", "float64"])
def test_interleaved_other_floors(benchmark, table):
    """The one-row serving, generative and float64 tables of ``fastbp bench``, with their floors."""
    if _backend.compiled_unavailable() is not None:
        pytest.skip("compiled backend unavailable")
    args = _args("--workloads", table)
    plans = [measure for _, _, measure in bench._plans(args, print)]
    benchmark.group = "interleaved (fastbp bench)"
    results = benchmark.pedantic(lambda: [measure(print, None) for measure in plans],
                                 rounds=1, iterations=1)
    verdicts = {}
    for result in results:
        verdicts.update(OTHER_FLOORS[table](result))
    _verdicts(benchmark, table, {"tables": results}, verdicts)
