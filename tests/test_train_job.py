"""``fastbp train``: the default digits job (its terminal output under a pseudo-terminal of 80
columns), own data, options, progress display, and the training loop's log records."""
import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import warnings

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
from fastbp.cli import main

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _table(output):
    """{backend: (score, seconds, epochs)} from the summary table."""
    rows = re.findall(r"^(compiled|numpy)\s+([\d.-]+)\s+([\d.]+) s\s+(\d+)", output, re.MULTILINE)
    return {name: (float(score), float(seconds), int(epochs)) for name, score, seconds, epochs in rows}


def _in_terminal(argv, cwd, columns=80, rows=24, timeout=120):
    """What ``python -m fastbp *argv``, run in the folder ``cwd``, shows in a pseudo-terminal of
    ``columns`` columns (stdout and stderr both on it, as in a shell), and its exit status."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    # the fastbp these tests import (not a source tree that happens to be the working folder)
    env = dict(os.environ, COLUMNS=str(columns),
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", *argv], stdin=slave, stdout=slave,
                            stderr=slave, env=env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=10)
    return b"".join(chunks).decode(), code


def test_default_job_fits_an_80_column_terminal(tmp_path):
    """The default run as a new user sees it: a progress bar per backend redrawn in place, a
    short summary, under 25 lines, none wider than the terminal; it converges (early stopping)."""
    screen, code = _in_terminal(["train"], tmp_path)
    assert code == 0, screen
    lines = screen.replace("\r\n", "\n").rstrip("\n").split("\n")
    assert len(lines) < 25, screen
    shown = [ANSI.sub("", part) for line in lines for part in line.split("\r")]
    assert max(map(len, shown)) <= 80, [part for part in shown if len(part) > 80]
    assert "before converging" not in screen  # stopped by early stopping
    bars = [part for part in shown if re.match(r"(compiled|numpy) +epoch [1-9]\d*/200 \|", part)]
    assert bars and all("loss" in bar and "validation" in bar for bar in bars), shown
    table = _table(screen.replace("\r\n", "\n"))
    expected = {"numpy"} if fastbp._backend.compiled_unavailable() is not None else {"compiled", "numpy"}
    assert set(table) == expected
    for score, seconds, epochs in table.values():
        assert score >= 0.96 and seconds > 0 and 1 <= epochs < 200
    # the path that trained each backend's model: the float32 default MLP on the engine
    paths = dict(re.findall(r"^fit path \((compiled|numpy)\): (.*?)\r?$", screen, re.MULTILINE))
    assert paths["numpy"] == "layerwise: numpy backend"
    if "compiled" in expected:
        assert paths["compiled"] == "engine"
        assert "compiled backend: " in screen


def test_verbose_lines_fit_80_columns(capsys):
    assert main(["train", "--backend", "numpy", "--epochs", "3", "--verbose", "--hidden", "16"]) == 0
    out = capsys.readouterr().out
    epochs = [line for line in out.splitlines() if re.match(r"numpy +epoch [123]/3  loss ", line)]
    assert len(epochs) == 3 and all("validation " in line for line in epochs)
    assert "numpy: training path: layerwise: numpy backend" in out
    assert max(map(len, out.splitlines())) <= 80
    assert "before converging (raise --epochs)" in out


def test_quiet_and_not_a_terminal_show_no_epochs(capsys):
    """Captured output is not a terminal: no bar, no epoch lines, only the summary."""
    for flags in ([], ["--quiet"]):
        assert main(["train", "--backend", "numpy", "--epochs", "2", "--hidden", "8", *flags]) == 0
        captured = capsys.readouterr()
        assert " epoch " not in captured.out + captured.err and "|" not in captured.err
        assert _table(captured.out)["numpy"][2] == 2


def test_estimator_verbose_goes_through_logging(capsys):
    """``verbose=True`` lines are INFO records of fastbp.training with structured progress,
    printed to stdout by default and silenced the usual way."""
    X, y = blobs(60, 3, 2)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger, handler = logging.getLogger("fastbp.training"), Keep()
    logger.addHandler(handler)
    try:
        fastbp.MLPClassifier((4,), max_iter=2, verbose=True, random_state=0).fit(X, y)
        shown = capsys.readouterr().out
        logging.getLogger("fastbp").setLevel(logging.WARNING)
        fastbp.MLPClassifier((4,), max_iter=2, verbose=True, random_state=0).fit(X, y)
        silenced = capsys.readouterr().out
    finally:
        logging.getLogger("fastbp").setLevel(logging.INFO)
        logger.removeHandler(handler)
    progress = [record.progress for record in records]
    assert "fit_path" in progress[0]
    assert [p["epoch"] for p in progress[1:]] == [1, 2] and progress[1]["epochs"] == 2
    assert set(progress[1]["values"]) == {"loss"} and progress[1]["values"]["loss"] > 0
    assert shown.splitlines()[1].startswith("MLPClassifier: epoch    1  loss ")
    assert silenced == "" and len(records) == 3


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_own_csv_data_save_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    X, y = blobs(120, 3, 3, spread=8.0)
    csv = tmp_path / "data.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,c,label", comments="", fmt="%g")
    model_path, plot_path = tmp_path / "model.npz", tmp_path / "loss.png"
    code = main(["train", "--data", str(csv), "--hidden", "16,8", "--solver", "sgd", "--lr", "0.2",
                 "--epochs", "50", "--save", str(model_path), "--plot", str(plot_path)])
    output = capsys.readouterr().out
    assert code == 0, output
    assert set(_table(output)) <= {"compiled", "numpy"} and len(_table(output)) == 1  # once
    assert next(iter(_table(output).values()))[0] > 0.8
    assert "target 'label': classes (3: 0, 1, 2)" in output
    model = fastbp.load(model_path)
    assert [W.shape for W in model.coefs_] == [(3, 16), (16, 8), (8, 3)]
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_npy_float_target_is_regression(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (150, 2))
    npy = tmp_path / "data.npy"
    np.save(npy, np.c_[X, X[:, 0] - 2 * X[:, 1]])
    assert main(["train", "--data", str(npy), "--epochs", "40", "--lr", "0.01",
                 "--backend", "numpy", "--compare"]) == 0
    output = capsys.readouterr().out
    assert "a quantity (regression)" in output and "test R^2" in output
    assert _table(output)["numpy"][0] > 0.8


def test_every_solver_that_steps_has_a_default_step_length():
    from fastbp.cli import train_job
    from fastbp.training import STEP_SOLVERS
    assert set(train_job.DEFAULT_LR) == set(STEP_SOLVERS)


@pytest.mark.parametrize("model", ["autoencoder", "vae", "gan"])
def test_generative_models_on_digits(model, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot, saved = tmp_path / "plot.png", tmp_path / "model.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--model", model, "--epochs", "2", "--backend", "numpy", "--plot",
                     str(plot), "--save", str(saved), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^numpy +epoch 2/2  ", out, re.MULTILINE)
    assert {"autoencoder": "reconstruction error", "vae": "ELBO",
            "gan": "discriminator"}[model] in out
    assert max(len(line) for line in out.splitlines() if str(tmp_path) not in line) <= 80
    assert plot.read_bytes()[:4] == b"\x89PNG" and type(fastbp.load(saved)).__name__.lower() == model


def test_generative_loss_curves_are_the_recorded_ones():
    """The plot's curves: both players' for the GAN, training (and validation) loss otherwise."""
    from fastbp.cli.generative_job import _loss_curves
    X = fastbp.load_digits()[0][:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gan = fastbp.GAN(n_components=2, generator_layer_sizes=(8,), discriminator_layer_sizes=(8,),
                         max_iter=3, random_state=0).fit(X)
        ae = fastbp.Autoencoder(n_components=2, max_iter=3, early_stopping=True,
                                random_state=0).fit(X)
    curves = _loss_curves("gan", gan)
    assert curves == {"discriminator loss": gan.discriminator_loss_curve_,
                      "generator loss": gan.generator_loss_curve_}
    curves = _loss_curves("autoencoder", ae)
    assert curves["training loss"] == ae.loss_curve_
    assert curves["validation loss"] == [-s for s in ae.validation_scores_]


@pytest.mark.parametrize("params", [dict(n_components=2, prior="mixture", n_prior_components=3),
                                    dict(n_components=3, prior="gaussian"),
                                    dict(n_components=1, prior="fixed")],
                         ids=["2-d mixture", "3-d gaussian", "1-d fixed"])
def test_the_vae_plot_shows_the_learned_prior_against_the_codes(params, tmp_path):
    """Issue 14 item 5: one point per test row (its code mu(x), first two coordinates) and a 1-
    and 2-sigma ellipse per prior component, centred on its mean; written by --plot."""
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Ellipse
    from fastbp.cli.generative_job import _plot, _plot_prior

    X = blobs(n=120, d=4)[0].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vae = fastbp.VAE(encoder_layer_sizes=(8,), max_iter=5, random_state=0, **params).fit(X)
    figure, axis = plt.subplots()
    _plot_prior(vae, X[:50], axis)
    ellipses = [patch for patch in axis.patches if isinstance(patch, Ellipse)]
    assert len(ellipses) == 2 * len(vae.prior_weights_)
    centres = np.array([e.center for e in ellipses[::2]])
    means = np.column_stack([vae.prior_means_[:, 0], vae.prior_means_[:, 1]
                             if vae.n_components > 1 else np.zeros(len(vae.prior_means_))])
    np.testing.assert_allclose(centres, means)
    assert axis.collections[0].get_offsets().shape == (50, 2)
    plt.close(figure)
    _plot("vae", vae, X[:50], "title", tmp_path / "vae.png")
    assert (tmp_path / "vae.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("n_features", [1, 2])
def test_gan_plot_shows_samples_over_epochs(n_features, tmp_path, capsys, monkeypatch):
    """--plot of a GAN on data that are not images: samples of one fixed z recorded by a fit
    callback at four epochs spread over the run (the last among them), then drawn."""
    pytest.importorskip("matplotlib")
    from fastbp.cli import generative_job
    rng = np.random.default_rng(0)
    data, plot = tmp_path / "data.npy", tmp_path / "gan.png"
    shape = (200, n_features)
    np.save(data, rng.choice([-4.0, 4.0], shape) + rng.standard_normal(shape))
    histories = []

    class Kept(generative_job.SampleHistory):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            histories.append(self)

    monkeypatch.setattr(generative_job, "SampleHistory", Kept)
    assert main(["train", "--model", "gan", "--data", str(data), "--epochs", "6", "--hidden",
                 "8", "--backend", "numpy", "--plot", str(plot), "--quiet"]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG" and "plotted to" in capsys.readouterr().out
    (history,) = histories
    assert history.epochs == [1, 3, 4, 6]
    assert [samples.shape for samples in history.samples] == [(500, n_features)] * 4
    # the last snapshot is the fitted generator at the same z
    with fastbp.use_backend("numpy"):
        final = history.model.average_generator_.predict(history.z.astype(np.float32))
    np.testing.assert_array_equal(history.samples[-1], final)
