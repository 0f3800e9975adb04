"""model.save(path) / fastbp.load(path): round trips, atomic writes, clear errors on bad files."""
import json
import os
import zipfile

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread, quiet_fit, smooth_regression  # noqa: F401  (autouse fixture)

import fastbp
from fastbp import MLPClassifier, MLPRegressor
from fastbp.models import persist


def _models():
    X, y = blobs(60, 4, 3)
    Xr, Yr = smooth_regression(60)
    multilabel = np.c_[y == 0, y > 0, X[:, 0] > 0].astype(int)
    return [
        (quiet_fit(MLPClassifier((8, 5), activation="elu", activation_alpha=0.5, dropout=0.2, max_iter=4,
                            random_state=0), X, np.array(["a", "b", "c"])[y]), X),
        (quiet_fit(MLPClassifier((6,), max_iter=3, dtype=np.float64, random_state=0), X, y == 1), X),
        (quiet_fit(MLPClassifier((6,), max_iter=3, early_stopping=True, random_state=0), X, multilabel), X),
        (quiet_fit(MLPRegressor((6,), activation="logistic", max_iter=3, random_state=0), Xr, Yr), Xr),
        (quiet_fit(MLPRegressor((), max_iter=3, random_state=0), Xr, Yr[:, 0]), Xr),
    ]


@pytest.mark.parametrize("index", range(5))
def test_round_trip_predicts_identically(tmp_path, index):
    model, X = _models()[index]
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastbp.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
        np.testing.assert_array_equal(loaded.classes_, model.classes_)
    for a, b in zip(loaded.coefs_ + loaded.intercepts_, model.coefs_ + model.intercepts_):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert loaded.loss_curve_ == model.loss_curve_ and loaded.n_iter_ == model.n_iter_
    assert loaded.t_ == model.t_ and loaded.best_loss_ == model.best_loss_
    np.testing.assert_array_equal(loaded.grad_norms_, model.grad_norms_)
    assert loaded.validation_scores_ == model.validation_scores_
    assert not list(tmp_path.glob(".fastbp-*"))  # no temporary file left behind


def test_loaded_model_trains_on(tmp_path):
    model, X = _models()[0]
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    loaded.partial_fit(X, model.predict(X))
    assert loaded.n_iter_ == model.n_iter_ + 1


def test_save_is_atomic(tmp_path, monkeypatch):
    model, X = _models()[3]
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persist.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before  # the old model is intact
    assert os.listdir(tmp_path) == ["model.npz"]  # and no temporary file is left


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(fastbp.NotFittedError):
        MLPClassifier().save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_truncated_foreign_and_future_files(tmp_path):
    model, X = _models()[3]
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        fastbp.load(truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(garbage)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(foreign)

    def rewrite(path, change):
        with np.load(good) as archive:
            contents = {key: archive[key] for key in archive.files}
        document = json.loads(contents["__fastbp__"].tobytes())
        change(document)
        contents["__fastbp__"] = np.frombuffer(json.dumps(document).encode(), np.uint8)
        np.savez(path, **contents)

    future = tmp_path / "future.npz"
    rewrite(future, lambda d: d.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99"):
        fastbp.load(future)
    unknown = tmp_path / "unknown.npz"
    rewrite(unknown, lambda d: d.update({"class": "Perceptron", "module": "os"}))
    with pytest.raises(ValueError, match="does not know"):
        fastbp.load(unknown)

    with zipfile.ZipFile(good) as archive:  # a model with a weight array missing
        names = [n for n in archive.namelist() if n != "coef_0.npy"]
        partial = tmp_path / "partial.npz"
        with zipfile.ZipFile(partial, "w") as out:
            for name in names:
                out.writestr(name, archive.read(name))
    with pytest.raises(ValueError, match="inconsistent"):
        fastbp.load(partial)
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("array", [np.array([[1.5, -2.0], [0.25, 3.0]], np.float32),
                                   np.arange(4, dtype=np.int64), np.zeros((0, 3)),
                                   np.array([True, False])])
def test_array_parameters_round_trip_through_json(array):
    decoded = persist._decode(json.loads(json.dumps(persist._encode(array))))
    assert type(decoded) is np.ndarray and decoded.dtype == array.dtype
    assert decoded.shape == array.shape and np.array_equal(decoded, array)
