"""``fastbp train``: the default digits job, own data, options, and clear errors."""
import re
import subprocess
import sys

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
from fastbp.cli import main


def _table(output):
    """{backend: (score, seconds, epochs)} from the summary table."""
    rows = re.findall(r"^(compiled|numpy)\s+([\d.-]+)\s+([\d.]+) s\s+(\d+)", output, re.MULTILINE)
    return {name: (float(score), float(seconds), int(epochs)) for name, score, seconds, epochs in rows}


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_default_job_trains_digits_on_both_backends(capsys):
    assert main(["train"]) == 0
    output = capsys.readouterr().out
    assert "handwritten digits" in output
    epoch_lines = [line for line in output.splitlines() if " epoch " in line]
    assert epoch_lines and all("loss" in line and "validation score" in line and line.endswith(" s")
                               for line in epoch_lines)
    table = _table(output)
    expected = {"numpy"} if fastbp._backend.compiled_unavailable() is not None else {"compiled", "numpy"}
    assert set(table) == expected
    for score, seconds, epochs in table.values():
        assert score >= 0.96 and seconds > 0 and epochs >= 1
    # the path that trained each backend's model is printed: the float32 default MLP on the engine
    paths = dict(re.findall(r"^fit path \((compiled|numpy)\): (.*)$", output, re.MULTILINE))
    assert paths["numpy"] == "layerwise: numpy backend"
    if "compiled" in expected:
        assert paths["compiled"] == "engine"
    first = "compiled" if "compiled" in expected else "numpy"
    assert f"MLPClassifier: training path: {paths[first]}" in output  # verbose: at the start


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_own_csv_data_save_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    X, y = blobs(120, 3, 3, spread=8.0)
    csv = tmp_path / "data.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,c,label", comments="")
    model_path, plot_path = tmp_path / "model.npz", tmp_path / "loss.png"
    code = main(["train", "--data", str(csv), "--hidden", "16,8", "--solver", "sgd", "--lr", "0.2",
                 "--epochs", "50",
                 "--backend", "numpy", "--save", str(model_path), "--plot", str(plot_path), "--quiet"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert " epoch " not in output
    assert _table(output)["numpy"][0] > 0.8
    model = fastbp.load(model_path)
    assert [W.shape for W in model.coefs_] == [(3, 16), (16, 8), (8, 3)]
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_npy_regression(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (150, 2))
    npy = tmp_path / "data.npy"
    np.save(npy, np.c_[X, X[:, 0] - 2 * X[:, 1]])
    assert main(["train", "--data", str(npy), "--task", "regress", "--epochs", "40", "--lr", "0.01",
                 "--backend", "numpy", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "test R^2" in output and _table(output)["numpy"][0] > 0.8


def test_clear_errors(tmp_path, capsys, monkeypatch):
    assert main(["train", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,cat\n2,dog\n")
    assert main(["train", "--data", str(bad)]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main(["train", "--hidden", "10,x"]) == 2
    assert "--hidden" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["train", "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "fastbp", "train", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "--data" in proc.stdout and "last column" in proc.stdout


def test_every_solver_is_a_choice_with_a_default_step_length():
    from fastbp.cli import train_job
    from fastbp.training import SOLVERS
    assert set(train_job.DEFAULT_LR) == set(SOLVERS)
