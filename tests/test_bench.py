"""``fastbp bench``'s peers and tables at tiny sizes: each peer does fastbp's work (the same loss
after one step from the same weights), a peer doing other work is left out, and every table
(training with JAX and ONNX Runtime, one-row serving, generative epochs, float64, peak memory)
runs and lands in the JSON output.  Timings are not asserted."""
import argparse
import json

import numpy as np
import pytest
from _helpers import one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
from fastbp.cli import main
from fastbp.tools import bench

pytestmark = pytest.mark.skipif(fastbp.backend() != "compiled",
                                reason="fastbp bench times the compiled trainer")
TINY = {"rows": 64, "features": 12, "batch": 16, "encoder": (8,), "code": 2}


def _args(*argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def _workload(solver, loss="softmax_cross_entropy", sizes=(16, 8, 4)):
    sizes = list(sizes) if loss != "squared_error" else [12, 6, 12]
    return bench.Workload(sizes, 8, 3, loss, "relu", solver=solver)


def _importable(peer):
    library = bench.MAKERS[peer][1]
    if library != "fastbp":
        pytest.importorskip(library)


@pytest.mark.parametrize("solver, loss", [("sgd", "softmax_cross_entropy"),
                                          ("adam", "squared_error")])
@pytest.mark.parametrize("peer", bench.PEERS)
def test_each_peer_gives_fastbps_loss_after_one_step(peer, solver, loss):
    """From fastbp's initial weights, one step of each peer (its own autodiff and optimizer:
    PyTorch, JAX, scikit-learn, fastbp's NumPy twin) lands on fastbp's loss; ONNX Runtime
    predicts fastbp's output.  (JAX: its lax.scan contender; the jit one runs the same step and
    is checked in the training table's test.)"""
    _importable(peer)
    w = _workload(solver, loss)
    ok, words = bench.check_peer(bench.MAKERS[peer][0][-1], w)
    assert ok, f"{peer}: {words}"


def test_a_peer_doing_other_work_is_left_out(capsys):
    """A peer taking two steps where fastbp takes one (or predicting with other weights) fails
    the check, and make_contenders leaves it out, saying so."""
    w = _workload("adam")

    def twice(w):
        peer = bench.FastbpLayers(w, "numpy")
        once = peer.train
        peer.train = lambda: (once(), once())
        return peer

    def other_weights(w):
        peer = bench.FastbpLayers(w, "numpy")
        peer.network.dense_layers[0].W *= 1.01
        peer.train = None
        return peer
    assert not bench.check_peer(twice, w)[0]
    assert not bench.check_peer(other_weights, w)[0]
    saved = bench.MAKERS["numpy"]
    bench.MAKERS["numpy"] = ([twice], "fastbp")
    try:
        made = bench.make_contenders(w, _args("--peers", "numpy,layers"), print)
    finally:
        bench.MAKERS["numpy"] = saved
    assert [c.name for c in made] == ["fastbp", "fastbp-layers"]
    assert "numpy: left out, not the same work: loss after one step" in capsys.readouterr().out


def test_jax_without_optax_uses_its_own_adam(monkeypatch):
    """Without optax, JAX's contender runs Adam and SGD written in jax.numpy, with the same
    loss after one step as fastbp's, and says so."""
    pytest.importorskip("jax")
    monkeypatch.setitem(__import__("sys").modules, "optax", None)
    for solver in bench.SOLVERS:
        w = _workload(solver)
        ok, words = bench.check_peer(lambda w: bench.Jax(w, scan=True), w)
        assert ok, words
        assert "no optax" in bench.Jax(w, scan=False).optimizer


def test_training_tables_with_jax_and_onnx_in_json(tmp_path, capsys):
    pytest.importorskip("jax")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "bench.json"
    assert main(["bench", "--net", "16-8-4", "--steps", "2", "--repeat", "1", "--pause", "0",
                 "--workloads", "train,predict", "--peers", "jax,onnx", "--solver", "adam",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(JAX's optimizer: optax" in out or "(JAX's optimizer: Adam in jax.numpy" in out
    assert "faster than JAX (lax.scan)" in out or "slower than JAX (lax.scan)" in out \
        or "about as fast as JAX (lax.scan)" in out
    (result,) = json.loads(path.read_text())["results"]
    assert result["solver"] == "adam"
    assert {"fastbp", "jax jit", "jax scan"} == set(result["train"])
    assert all(r["threads"] >= 1 and len(r["ms_runs"]) == 1 for r in result["train"].values())
    onnx = next(name for name in result["predict_bulk"] if name.startswith("onnxruntime"))
    assert "jax scan" not in result["predict"] and onnx in result["predict"]
    assert "per_sample" not in result


def test_serving_generative_float64_and_memory_tables(tmp_path, capsys, monkeypatch):
    """Every other table at tiny sizes; the peak memory of fastbp's trainer is at least its
    weights, gradients and Adam moments."""
    monkeypatch.setattr(bench, "GENERATIVE", TINY)
    monkeypatch.setattr(bench, "FLOAT64_HIDDEN", (6,))
    monkeypatch.setattr(bench, "SERVING_NETS", ("12-6-3",))
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--repeat", "1", "--pause", "0", "--peers", "numpy",
                 "--workloads", "serving,generative,float64,memory", "--net", "256-512-256",
                 "--batch", "64", "--steps", "2", "--solver", "adam", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    found = json.loads(path.read_text())
    (serving,) = found["serving"]
    assert {"predict_proba", "engine", "numpy by hand"} <= set(serving["one_row"])
    assert "predict_proba is" in out
    models = found["generative"]["models"]
    assert list(models) == list(bench.MODELS) and found["generative"]["rows"] == bench.QUICK_ROWS
    assert models["autoencoder"]["fit_path"] == "engine"
    assert models["vae"]["fastbp"]["s_per_epoch"] > 0
    assert found["float64"]["fit_path"].startswith(("engine", "layerwise"))
    (memory,) = found["memory"]
    params = sum(d * k + k for d, k in ((256, 512), (512, 256)))
    assert memory["mib"]["fastbp"] >= 4 * params * 4 / 2 ** 20  # W, dW, m, v in float32


def test_old_flags_and_bad_lists(capsys):
    args = _args("--no-torch", "--no-sklearn", "--no-predict", "--no-scaling")
    assert bench.peers(args) == ["numpy", "layers", "jax", "onnx"]
    assert "predict" not in bench.workloads(args) and "scaling" not in bench.workloads(args)
    for option, value in (("--peers", "jax,tensorflow"), ("--workloads", ""),
                          ("--solver", "lbfgs")):
        with pytest.raises(SystemExit):
            main(["bench", option, value])
        assert f"{value!r}: choose from" in capsys.readouterr().err


def test_workload_head_is_the_first_minibatch():
    w = _workload("sgd")
    head = w.head()
    assert head.steps == 1 and head.n == w.batch
    np.testing.assert_array_equal(head.X[head.order], w.X[w.order[:w.batch]])
    np.testing.assert_array_equal(head.Y[head.order], w.Y[w.order[:w.batch]])
