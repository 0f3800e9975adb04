"""pytest-benchmark: one training step (and the forward pass) of fastbp's compiled trainer against
fastbp's NumPy backend, PyTorch and scikit-learn on issue 5's four nets (see ``fastbp bench``,
whose contenders these are; missing libraries are skipped).

    pytest benchmarks/bench_step.py --benchmark-group-by=group --benchmark-columns=median,iqr
    pytest benchmarks/bench_step.py -k interleaved -s      # the floors, measured interleaved

pytest-benchmark times one test at a time, so the per-contender tests below are *not*
interleaved; on a shared machine compare within ``test_interleaved_floors``, which runs
``fastbp.tools.bench`` (all contenders and the large-GEMM reference in rotating order, medians) and
records every figure and floor verdict in ``extra_info``.  Set ``FASTBP_ASSERT_FLOORS=1`` to make
a missed floor fail the test.
"""
import argparse
import os
import time

import numpy as np
import pytest

import fastbp
from fastbp.tools import bench
from floors import FLOORS, judge

NETS = list(bench.NETS)
CONTENDERS = ["fastbp", "numpy", "fastbp-layers", "torch", "sklearn"]


def _workload(net, quick=False):
    batch, steps, loss = bench.NETS[net]
    sizes = [int(s) for s in net.split("-")]
    return bench.Workload(sizes, batch, max(2, steps // 2) if quick else steps, loss, "relu")


def _contender(name, w):
    if name in ("fastbp", "fastbp-layers") and fastbp._backend.compiled_unavailable() is not None:
        pytest.skip("compiled backend unavailable")
    try:
        if name == "fastbp":
            return bench.FastbpFused(w)
        if name == "numpy":
            return bench.FastbpLayers(w, "numpy")
        if name == "fastbp-layers":
            return bench.FastbpLayers(w, "compiled")
        if name == "torch":
            return bench.Torch(w)
        return bench.Sklearn(w)
    except ImportError as error:
        pytest.skip(f"{name} not installed ({error})")
    except RuntimeError as error:
        pytest.skip(f"{name}: {error}")


def _settle():
    time.sleep(0.1)  # let the previous library's BLAS/OpenMP workers go idle


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("net", NETS)
def test_train_step(benchmark, net, contender):
    w = _workload(net)
    c = _contender(contender, w)
    benchmark.group = f"train {net} (batch {w.batch}, {w.steps} steps per round)"
    benchmark.extra_info.update(net=net, batch=w.batch, steps=w.steps,
                                gflop_per_step=w.train_flops / 1e9)
    c.train()
    _settle()
    benchmark.pedantic(c.train, rounds=7, iterations=1, warmup_rounds=1)
    step = benchmark.stats.stats.median / w.steps
    benchmark.extra_info.update(ms_per_step=step * 1e3, gflops=w.train_flops / step / 1e9)


@pytest.mark.parametrize("contender", CONTENDERS)
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


@pytest.mark.parametrize("net", NETS)
def test_interleaved_floors(benchmark, net):
    """All contenders and the GEMM reference in one interleaved measurement, as ``fastbp bench``."""
    if fastbp._backend.compiled_unavailable() is not None:
        pytest.skip("compiled backend unavailable")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--repeat", "5"])
    w = _workload(net)
    benchmark.group = "interleaved (fastbp bench)"
    result = benchmark.pedantic(lambda: bench.bench_net(w, args), rounds=1, iterations=1)
    result["floors"] = judge(result, FLOORS[net])
    for label, v in result["floors"].items():
        sign = ">=" if "GFLOP" in label else "<="
        print(f"  floor {label}: {v['ratio']:.3f} (need {sign} {v['limit']:.3f})  "
              f"{'met' if v['met'] else 'MISSED'}")
    benchmark.extra_info.update(result=result)
    if os.environ.get("FASTBP_ASSERT_FLOORS") == "1":
        missed = [label for label, v in result["floors"].items() if not v["met"]]
        assert not missed, f"{net}: floors missed: {missed}"
    assert np.isfinite(result["train"]["fastbp"]["ms_per_step"])
