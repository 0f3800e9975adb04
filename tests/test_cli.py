"""The ``fastbp`` command line: CSV files as people write them, arguments checked before any
training, errors without tracebacks, ``fastbp predict``, ``--version``."""
import re
import subprocess
import sys

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
from fastbp.cli import main
from fastbp.cli._table import infer_task, read_table

SPECIES = np.array(["setosa", "versicolor", "virginica"])


def _iris_like(path, delimiter=",", label_first=False, missing_at=None, n=90):
    """A CSV with a header, a text label column and 4 numeric features (separable classes);
    ``missing_at``: (data row, feature) left empty.  Returns (X, labels)."""
    X, y = blobs(n, 4, 3, spread=6.0)
    names = ["sepal length", "sepal width", "petal length", "petal width"]
    header = ["species", *names] if label_first else [*names, "species"]
    lines = [delimiter.join(header)]
    for i, (row, label) in enumerate(zip(X, SPECIES[y])):
        cells = [f"{v:.3f}" for v in row]
        if missing_at is not None and i == missing_at[0]:
            cells[missing_at[1]] = ""
        lines.append(delimiter.join([label, *cells] if label_first else [*cells, label]))
    path.write_text("\n".join(lines) + "\n")
    return X, SPECIES[y]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("label_first", [False, True], ids=["label-last", "label-first"])
def test_text_labels_any_delimiter_either_end(tmp_path, delimiter, label_first):
    path = tmp_path / "iris.csv"
    X, labels = _iris_like(path, delimiter, label_first)
    table = read_table(str(path))
    assert table.target_name == "species"
    assert table.feature_names == ["sepal length", "sepal width", "petal length", "petal width"]
    np.testing.assert_allclose(table.X, np.round(X, 3))
    assert list(table.y) == list(labels) and infer_task(table.y) == "classify"


def test_target_by_name_or_number_and_task_inference(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 2))
    price = X @ [3.0, -1.0] + 10.25
    grade = rng.integers(1, 4, 40)
    path = tmp_path / "houses.csv"
    np.savetxt(path, np.c_[price, X, grade], delimiter=",", header="price,a,b,grade",
               comments="", fmt="%.6g")
    by_name = read_table(str(path), "price")
    by_number = read_table(str(path), "1")
    np.testing.assert_array_equal(by_name.y, by_number.y)
    assert by_name.feature_names == ["a", "b", "grade"] and infer_task(by_name.y) == "regress"
    last = read_table(str(path))  # default: the last column
    assert last.target_name == "grade" and infer_task(last.y) == "classify"
    assert read_table(str(path), "-1").target_name == "grade"
    # 200 distinct whole numbers are a quantity, not 200 classes
    assert infer_task(np.arange(200.0)) == "regress"
    for target, words in (("cost", "no column of that name"), ("5", "has 4 columns"),
                          ("0", "has 4 columns")):
        with pytest.raises(ValueError, match=words):
            read_table(str(path), target)


def test_no_header_numbers_only(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("1,2,0\n3,4,1\n5,6,0\n")
    table = read_table(str(path))
    assert table.feature_names == ["column 1", "column 2"] and list(table.y) == [0, 1, 0]


def test_missing_values_named_by_line_and_column_or_imputed(tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    X, _ = _iris_like(path, missing_at=(6, 1))  # data row 6 is line 8 (after the header)
    assert main(["train", "--data", str(path), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "gaps.csv, line 8, column 'sepal width': missing value" in err and "--impute" in err
    assert "Traceback" not in err
    table = read_table(str(path))
    assert table.missing == [(8, "sepal width")]
    from fastbp.cli._table import impute
    filled = impute(table.X, "mean")
    assert filled[6, 1] == pytest.approx(np.delete(np.round(X[:, 1], 3), 6).mean())
    assert main(["train", "--data", str(path), "--epochs", "2", "--impute", "median",
                 "--backend", "numpy", "--quiet"]) == 0
    assert "1 missing value filled in by the column's median" in capsys.readouterr().out


@pytest.mark.parametrize("text, words", [
    ("a,b,y\n1,2,0\n3,x,1\n4,5,0\n", "line 3, column 'b': 'x' is not a number"),
    ("a,b,y\n1,2,0\n3,4\n", "line 3: 2 cells where the header has 3"),
    ("a,b,y\n1,2,\n3,4,1\n", "line 2, column 'y': the target is missing"),
    ("", "no data"),
    ("a,b,y\n", "a header but no data rows"),
])
def test_bad_files_name_the_place(tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=words):
        read_table(str(path))


def test_binary_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "blob.csv"
    path.write_bytes(b"\xff\xfe\x00\x81" * 100)
    with pytest.raises(ValueError, match="not a text file"):
        read_table(str(path))
    npy = tmp_path / "objects.npy"
    np.save(npy, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable .npy"):
        read_table(str(npy))
    with pytest.raises(ValueError, match="no such file"):
        read_table(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "0"], "argument --epochs: expected a whole number >= 1, got '0'"),
    (["--activation", "foo"], "argument --activation: invalid choice: 'foo'"),
    (["--hidden", "10,x"], "argument --hidden: expected comma-separated layer sizes"),
    (["--lr", "-1"], "argument --lr: expected a number > 0"),
    (["--test-size", "1.5"], "argument --test-size: expected a fraction between 0 and 1"),
    (["--quiet", "--verbose"], "not allowed with argument"),
])
def test_bad_options_stop_at_parsing(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert words in err and len(err.splitlines()) <= 3  # a short usage line, then the error


def test_outputs_checked_before_training(tmp_path, capsys, monkeypatch):
    """Unwritable --plot/--save paths end the run before any training, in the user's words."""
    import fastbp.cli._jobs as jobs
    monkeypatch.setattr(jobs, "fit_with_progress", lambda *a, **k: pytest.fail("trained"))
    pytest.importorskip("matplotlib")
    cases = [(["--plot", str(tmp_path / "nowhere" / "x.png")], "does not exist"),
             (["--save", str(tmp_path / "nowhere" / "m.npz")], "does not exist"),
             (["--save", str(tmp_path)], "is a folder"),
             (["--plot", str(tmp_path / "plot.xyz")], "cannot write a 'xyz' file")]
    for argv, words in cases:
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and err.startswith("fastbp train: --") and "Traceback" not in err
    monkeypatch.setitem(sys.modules, "matplotlib.backend_bases", None)  # as if not installed
    assert main(["train", "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_train_on_text_labels_then_predict(tmp_path, capsys):
    data, model_path, out = tmp_path / "iris.csv", tmp_path / "iris.npz", tmp_path / "out.csv"
    X, labels = _iris_like(data, ";", label_first=True, n=120)
    assert main(["train", "--data", str(data), "--hidden", "16", "--lr", "0.02", "--epochs",
                 "60", "--save", str(model_path), "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "target 'species': classes (3: setosa, versicolor, virginica)" in output
    model = fastbp.load(model_path)
    # the file with its label column: one column more than the features, left out (said so)
    assert main(["predict", str(model_path), str(data), "-o", str(out)]) == 0
    assert "column 'species' left out" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction" and len(lines) == 121
    assert lines[1:] == list(model.predict(np.round(X, 3)))
    assert np.mean(np.array(lines[1:]) == labels) > 0.9
    # features only, to standard output
    features = tmp_path / "features.csv"
    np.savetxt(features, X[:3], delimiter=",", fmt="%.3f")
    assert main(["predict", str(model_path), str(features)]) == 0
    assert capsys.readouterr().out.splitlines() == ["prediction", *model.predict(np.round(X[:3], 3))]


def test_predict_refuses_what_it_cannot_serve(tmp_path, capsys):
    X, y = blobs(40, 3, 2)
    model_path = tmp_path / "m.npz"
    fastbp.MLPRegressor((4,), max_iter=2).fit(X, y.astype(float)).save(model_path)
    data = tmp_path / "five.csv"
    np.savetxt(data, np.c_[X, X[:, :2]], delimiter=",")
    assert main(["predict", str(model_path), str(data)]) == 2
    assert "5 feature columns, but the model takes 3" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.npz"), str(data)]) == 2
    assert "none.npz: no such file" in capsys.readouterr().err
    ae = tmp_path / "ae.npz"
    fastbp.Autoencoder(n_components=2, max_iter=2).fit(X).save(ae)
    assert main(["predict", str(ae), str(data)]) == 2
    assert "ae.npz: a saved Autoencoder; fastbp predict serves" in capsys.readouterr().err


def test_version_and_help_in_plain_words(tmp_path):
    """``python -m fastbp`` (the fastbp these tests import, run from another folder)."""
    import os
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastbp.__file__)))

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "fastbp", *argv], capture_output=True,
                              text=True, timeout=60, env=env, cwd=tmp_path)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"fastbp {fastbp.__version__}"
    top = run("--help")
    assert top.returncode == 0 and "``" not in top.stdout
    assert all(command in top.stdout for command in ("train", "predict", "bench", "size"))
    train = run("train", "--help")
    assert train.returncode == 0 and "--target" in train.stdout and "``" not in train.stdout
    none = run()
    assert none.returncode == 2 and "COMMAND" in none.stderr


def test_bench_says_how_long_and_compares_in_words(capsys):
    """``fastbp bench`` estimates the whole run first, prints each net's table as it is measured,
    in words ('... faster than ...'), and shows no acceptance floors."""
    if fastbp.backend() != "compiled":
        pytest.skip("fastbp bench times the compiled trainer")
    assert main(["bench", "--net", "16-8-4", "--steps", "2", "--repeat", "1", "--pause", "0",
                 "--workloads", "train,predict,scaling", "--peers", "numpy,layers,torch,sklearn",
                 "--solver", "sgd", "--no-torch", "--no-sklearn", "--no-scaling",
                 "--no-predict"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    estimate = next(i for i, line in enumerate(lines) if re.match(r"1 net: about \d+ s in all", line))
    table = next(i for i, line in enumerate(lines) if "training step" in line)
    assert estimate < table
    rows = {line.split()[0]: line for line in lines[table + 1:table + 4]}
    assert set(rows) == {"fastbp", "numpy", "fastbp-layers"}
    assert re.search(r"(\d+\.\dx (faster|slower) than|about as fast as) its NumPy backend$",
                     rows["numpy"])
    assert "floor" not in out.lower() and "fastbp/this" not in out
    with pytest.raises(SystemExit):
        main(["bench", "--repeat", "0"])
    assert main(["bench", "--net", "16-x-4"]) == 2
    assert "--net '16-x-4': want layer sizes" in capsys.readouterr().err
