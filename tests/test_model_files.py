"""fastbp.load reads untrusted files: crafted and damaged model files are each a ValueError.

Every file here starts from a real saved model and changes one thing, the way an attacker or a
damaged download would: the class or module it names, weights, classes, the target kind, dtypes,
npy headers, zip entries, the parameters, deep JSON, extra members, random bit flips.  Also:
format-1 files written by an older fastbp still load (tests/data), every label type round-trips,
``kill -9`` during ``save`` leaves the old file and no temporary, pickles carry their version.
"""
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _helpers import one_blas_thread  # noqa: F401  (autouse fixture)
from _helpers import blobs, quiet_fit, smooth_regression

import fastbp
from fastbp.models import persist

DATA = Path(__file__).resolve().parent / "data"


def _classifier(labels=("ant", "bee", "cat")):
    X, y = blobs(40, 3, 3)
    return quiet_fit(fastbp.MLPClassifier((5,), max_iter=3, random_state=0), X,
                     np.array(labels)[y]), X


def _contents(path):
    """The saved model's document and arrays (our own file: read with np.load)."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return json.loads(arrays.pop("__fastbp__").tobytes()), arrays


def _write(path, document, arrays):
    payload = np.frombuffer(json.dumps(document).encode(), np.uint8)
    np.savez(path, __fastbp__=payload, **arrays)
    return path


def _crafted(tmp_path, model, change, name="crafted.npz"):
    """Save ``model``, let ``change(document, arrays)`` alter its contents, write them back."""
    good = tmp_path / "good.npz"
    model.save(good)
    document, arrays = _contents(good)
    change(document, arrays)
    return _write(tmp_path / name, document, arrays)


def _refused(path, match=None):
    with pytest.raises(ValueError, match=match):
        fastbp.load(path)


# ------------------------------------------------------------------------------ modules, classes
def test_load_never_imports_a_module_the_file_names(tmp_path, monkeypatch):
    package = tmp_path / "fastbp_sentinel"
    package.mkdir()
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    main_loaded = "fastbp.__main__" in sys.modules
    model, X = _classifier()

    crafted = [("fastbp_sentinel", "fastbp_sentinel"), ("Sentinel", "fastbp_sentinel"),
               ("__main__", "fastbp.__main__"), ("main", "fastbp.__main__"),
               ("load", "fastbp.models.persist"), ("kernels", "fastbp"), ("NotFittedError", "fastbp"),
               ("Dense", "fastbp.nn"), ("BaseEstimator", "fastbp.models.mlp"), (["MLPClassifier"], None)]
    for i, (name, module) in enumerate(crafted):
        path = _crafted(tmp_path, model, lambda d, a: d.update({"class": name, "module": module}),
                        f"crafted{i}.npz")
        _refused(path, "does not know")
    # a known class with a foreign module still loads: the module entry is never used
    path = _crafted(tmp_path, model, lambda d, a: d.update(module="fastbp_sentinel"))
    np.testing.assert_array_equal(fastbp.load(path).predict(X), model.predict(X))

    assert not marker.exists() and "fastbp_sentinel" not in sys.modules
    assert main_loaded or "fastbp.__main__" not in sys.modules


def test_every_public_saveable_class_loads(tmp_path):
    X = np.random.default_rng(0).uniform(0, 1, (30, 4))
    models = [fastbp.Autoencoder(2, (3,), max_iter=2, random_state=0),
              fastbp.VAE(2, (3,), max_iter=2, random_state=0),
              fastbp.GAN(2, (3,), (3,), max_iter=2, random_state=0)]
    for model in models:
        quiet_fit(model, X)
        model.save(tmp_path / "m.npz")
        loaded = fastbp.load(tmp_path / "m.npz")
        assert type(loaded) is type(model)
        for a, b in zip(loaded.coefs_, model.coefs_):
            np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------------------------- array contents
@pytest.mark.parametrize("key", ["coef_0", "intercept_1", "loss_curve_", "grad_norms_"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_are_refused(tmp_path, key, value):
    model, _ = _classifier()

    def change(document, arrays):
        arrays[key] = arrays[key].copy()
        arrays[key].flat[0] = value

    _refused(_crafted(tmp_path, model, change), f"{key}.*NaN or infinity")


@pytest.mark.parametrize("classes, match", [
    (np.array([0.0, np.nan, 2.0]), "NaN"),
    (np.array([0, 0, 2]), "sorted unique"),
    (np.array([2, 0, 1]), "sorted unique"),
    (np.array(["b", "a", "c"]), "sorted unique"),
    (np.array([0, 1, 2, 3]), "n_outputs_|does not match"),
    (np.array([[0, 1, 2]]), "1-D"),
    (np.array([1 + 2j, 2, 3]), "dtype complex128"),
])
def test_inconsistent_classes_are_refused(tmp_path, classes, match):
    model, _ = _classifier((0, 1, 2))
    _refused(_crafted(tmp_path, model, lambda d, a: a.update(classes_=classes)), match)


@pytest.mark.parametrize("target, labels, match", [
    ({"kind": "multilabel"}, ("ant", "bee", "cat"), "multilabel model's classes_"),
    ({"kind": "multilabel"}, (0, 1, 3), "multilabel model's classes_"),
    ({"kind": "multiclass"}, (0, 1, 2), "unknown target kind"),
    ({"y_ndim": 1, "n_outputs": 1}, (0, 1, 2), "inconsistent"),
    (None, (0, 1, 2), "inconsistent"),
])
def test_a_target_kind_that_disagrees_is_refused(tmp_path, target, labels, match):
    model, _ = _classifier(labels)
    _refused(_crafted(tmp_path, model, lambda d, a: d["meta"].update(target=target)), match)


@pytest.mark.parametrize("target", [{"y_ndim": 3, "n_outputs": 2}, {"y_ndim": 1, "n_outputs": 2},
                                    {"kind": "labels"}, {"y_ndim": 2, "n_outputs": 5}])
def test_a_regression_target_that_disagrees_is_refused(tmp_path, target):
    X, Y = smooth_regression(30)
    model = quiet_fit(fastbp.MLPRegressor((4,), max_iter=2, random_state=0), X, Y[:, :2])
    _refused(_crafted(tmp_path, model, lambda d, a: d["meta"].update(target=target)))


@pytest.mark.parametrize("key, convert, match", [
    ("coef_0", lambda w: np.round(w * 10).astype(np.int64), "int64"),
    ("coef_0", lambda w: w.astype(np.float64), "float64"),
    ("intercept_0", lambda b: b.astype(np.float16), "float16"),
    ("coef_1", lambda w: w[:-1], "shape"),
    ("coef_0", lambda w: w.T.copy(), "shape"),
    ("grad_norms_", lambda g: g.astype(np.int32), "int32"),
    ("loss_curve_", lambda c: c.astype(np.float32), "float32"),
    ("coef_0", lambda w: w.astype(object), "object|Object"),
])
def test_weights_of_another_dtype_or_shape_are_refused(tmp_path, key, convert, match):
    model, _ = _classifier()
    _refused(_crafted(tmp_path, model, lambda d, a: a.update({key: convert(a[key])})), match)


@pytest.mark.parametrize("change", [
    lambda d, a: a.update(loss_curve_=a["loss_curve_"][:-1]),
    lambda d, a: a.update(learning_rates_=np.r_[a["learning_rates_"], 0.1]),
    lambda d, a: a.update(grad_norms_=a["grad_norms_"][:, :1].copy()),
    lambda d, a: a.update(grad_norms_=a["grad_norms_"].ravel()),
    lambda d, a: a.update(validation_scores_=np.ones(1)),
    lambda d, a: d["meta"].update(n_iter_=d["meta"]["n_iter_"] + 1),
])
def test_a_training_record_of_other_epochs_is_refused(tmp_path, change):
    model, _ = _classifier()
    _refused(_crafted(tmp_path, model, change), "does not describe n_iter_ epochs")


@pytest.mark.parametrize("meta", [{"n_iter_": 0}, {"n_iter_": 3.0}, {"n_iter_": True},
                                  {"t_": -1}, {"t_": 1e308}, {"t_": 2},
                                  {"best_loss_": float("nan")},
                                  {"best_validation_score_": 0.5}])
def test_training_counts_that_fit_does_not_make_are_refused(tmp_path, meta):
    model, _ = _classifier()
    _refused(_crafted(tmp_path, model, lambda d, a: d["meta"].update(meta)),
             "counts that fit makes|does not describe|is NaN")


def test_missing_and_extra_arrays_are_refused(tmp_path):
    model, _ = _classifier()
    _refused(_crafted(tmp_path, model, lambda d, a: a.pop("coef_1")), "no array 'coef_1'")
    _refused(_crafted(tmp_path, model, lambda d, a: a.update(coef_2=a["coef_1"])),
             r"does not name: \['coef_2'\]")


# ------------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("params", [
    {"activation": "os.system"}, {"learning_rate_init": -1.0}, {"alpha": float("nan")},
    {"hidden_layer_sizes": {"__tuple__": [5.5]}}, {"hidden_layer_sizes": {"__tuple__": [0]}},
    {"dtype": {"__dtype__": "int32"}}, {"dtype": {"__dtype__": "object"}}, {"solver": "newton"},
    {"dropout": 1.5}, {"max_iter": "many"}, {"random_state": "seed"}, {"batch_size": -3},
    {"not_a_parameter": 1}, {"hidden_layer_sizes": {"__array__": [5], "dtype": "<U2",
                                                    "shape": [1]}},
    {"hidden_layer_sizes": {"__pickle__": "cos\nsystem\n"}},
])
def test_parameters_go_through_the_estimators_checks(tmp_path, params):
    model, _ = _classifier()
    _refused(_crafted(tmp_path, model, lambda d, a: d["params"].update(params)))


@pytest.mark.parametrize("where", ["params", "meta"])
def test_every_entry_of_a_wrong_type_is_a_value_error(tmp_path, where):
    """Each parameter / metadata entry replaced by junk: the file loads, or ValueError."""
    model, X = _classifier()
    good = tmp_path / "good.npz"
    model.save(good)
    document, arrays = _contents(good)
    junk = [None, "x", [], {}, 1e300, -1, 2 ** 70, [[[]]], {"__tuple__": 3}]
    for key in list(document[where]):
        for value in junk:
            changed = json.loads(json.dumps(document))
            changed[where][key] = value
            path = _write(tmp_path / "junk.npz", changed, arrays)
            try:
                loaded = fastbp.load(path)
            except ValueError:
                continue
            loaded.predict(X)  # a file that loads gives a working model


def test_huge_hidden_layer_sizes_are_refused_before_allocating(tmp_path):
    model, _ = _classifier()
    tracemalloc.start()
    try:
        for sizes in ([2 ** 20, 2 ** 20], [2 ** 40], [5, 10 ** 12]):
            path = _crafted(tmp_path, model, lambda d, a: d["params"].update(
                hidden_layer_sizes={"__tuple__": sizes}))
            _refused(path, "bytes, more than the model file holds")
        path = _crafted(tmp_path, model, lambda d, a: d["meta"].update(n_features_in_=10 ** 13))
        _refused(path, "bytes, more than the model file holds")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_deeply_nested_json_is_a_value_error(tmp_path):
    model, _ = _classifier()
    for depth in (100_000, 990):
        nested = "[" * depth + "]" * depth
        good = tmp_path / "good.npz"
        model.save(good)
        document, arrays = _contents(good)
        text = json.dumps(document).replace('"relu"', nested)
        payload = np.frombuffer(text.encode(), np.uint8)
        np.savez(tmp_path / "deep.npz", __fastbp__=payload, **arrays)
        _refused(tmp_path / "deep.npz")


# ------------------------------------------------------------------- npy headers and zip entries
def _npy(header_shape, dtype, data):
    """An .npy member whose header claims ``header_shape`` but holds ``data`` bytes."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": header_shape})
    return out.getvalue() + data


def _replace_member(good, path, name, payload, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            if info.filename != name:
                out.writestr(info, source.read(info))
        out.writestr(name, payload, compress_type=compress)
    return path


@pytest.mark.parametrize("shape", [(10 ** 12,), (2 ** 40, 2 ** 30), (5, 3, 2 ** 50)])
def test_npy_header_claiming_a_huge_shape_is_refused(tmp_path, shape):
    model, _ = _classifier()
    good = tmp_path / "good.npz"
    model.save(good)
    tracemalloc.start()
    try:
        for compress in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            path = _replace_member(good, tmp_path / "huge.npz", "coef_0.npy",
                                   _npy(shape, np.float32, bytes(60)), compress)
            _refused(path, "header declares")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def _set_declared_size(data, name, size):
    """The file with member ``name``'s uncompressed size set to ``size`` in both zip headers."""
    data = bytearray(data)
    encoded = name.encode()
    for signature, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            if data[start + name_at:start + name_at + len(encoded)] == encoded:
                data[start + offset:start + offset + 4] = size.to_bytes(4, "little")
            start += 4
    return bytes(data)


def test_declared_sizes_are_bounded_by_the_compressed_sizes(tmp_path):
    model, _ = _classifier()
    good = tmp_path / "good.npz"
    model.save(good)
    for compress in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = _replace_member(good, tmp_path / "m.npz", "coef_0.npy",
                               _npy((2 ** 28,), np.float32, bytes(4096)), compress)
        path.write_bytes(_set_declared_size(path.read_bytes(), "coef_0.npy", 2 ** 30 + 128))
        _refused(path, "declares 1073741952 bytes, more than")


def test_an_extra_huge_member_is_never_decompressed(tmp_path, monkeypatch):
    model, _ = _classifier()
    path = tmp_path / "extra.npz"
    model.save(path)
    info = zipfile.ZipInfo("extra.npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = 1
    with zipfile.ZipFile(path, "a") as archive, \
            archive.open(info, "w", force_zip64=True) as member:
        member.write(_npy((2 ** 26,), np.float32, b""))
        chunk = bytes(1 << 24)
        for _ in range(16):  # 256 MiB of zeros: about 256 KiB on disk
            member.write(chunk)
    assert path.stat().st_size < 2 << 20

    opened = []
    original_open = zipfile.ZipFile.open

    def recording_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return original_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    tracemalloc.start()
    try:
        _refused(path, r"does not name: \['extra'\]")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "extra.npy" not in opened and "coef_0.npy" in opened
    assert peak < 32 << 20


@pytest.mark.parametrize("region", ["directory", "anywhere"])
def test_bit_flips_give_a_value_error_or_the_same_model(tmp_path, region):
    model, X = _classifier()
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    start = data.find(b"PK\x01\x02") if region == "directory" else 0
    rng = np.random.default_rng(11)
    positions = rng.integers(start, len(data), 60)
    outcomes = {"ValueError": 0, "same model": 0}
    for position, bit in zip(positions, rng.integers(0, 8, 60)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << bit
        path = tmp_path / "flipped.npz"
        path.write_bytes(bytes(damaged))
        try:
            loaded = fastbp.load(path)
        except ValueError:
            outcomes["ValueError"] += 1
            continue
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
        outcomes["same model"] += 1
    assert outcomes["ValueError"] > 20


@pytest.mark.parametrize("cut", [0, 1, 22, 100, 0.5, -1])
def test_truncated_files_are_a_value_error(tmp_path, cut):
    model, _ = _classifier()
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    cut = int(len(data) * cut) if isinstance(cut, float) else cut
    (tmp_path / "cut.npz").write_bytes(data[:cut])
    _refused(tmp_path / "cut.npz")


def test_unsupported_compression_and_non_npy_members_are_refused(tmp_path):
    model, _ = _classifier()
    good = tmp_path / "good.npz"
    model.save(good)
    with zipfile.ZipFile(good) as source:
        payload = source.read("coef_0.npy")
    path = _replace_member(good, tmp_path / "bz.npz", "coef_0.npy", payload, zipfile.ZIP_BZIP2)
    _refused(path, "compression method 12")
    path = _replace_member(good, tmp_path / "txt.npz", "readme.txt", b"hello")
    _refused(path, "not an .npy array")
    path = _replace_member(good, tmp_path / "obj.npz", "coef_0.npy",
                           _npy((1,), object, b"\x80\x04K\x01."))
    _refused(path, "dtype object")


# ------------------------------------------------------------------------------------ old files
@pytest.mark.parametrize("name", ["classifier_str", "classifier_bool_f64", "regressor",
                                  "autoencoder"])
def test_format_1_files_still_load(name, backend):
    expected = json.loads((DATA / "models_v1.json").read_text())
    X = np.array(expected["X"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fastbp.load(DATA / f"models_v1_{name}.npz")
    output = model.predict(X) if hasattr(model, "predict") else model.transform(X)
    want = np.array(expected[name])
    if output.dtype.kind == "f":
        np.testing.assert_allclose(output, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(output, want)
        assert output.dtype == want.dtype


@pytest.mark.parametrize("name", ["standard", "mixture"])
def test_format_1_vae_files_still_load(name, backend):
    """VAE files written before the learned prior and decoder variance (tests/data/make_vae_v1.py):
    the same codes, ELBO and samples (their fixed prior and decoder_std come back as saved)."""
    expected = json.loads((DATA / "models_v1_vae.json").read_text())
    X = np.array(expected["X"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fastbp.load(DATA / f"models_v1_vae_{name}.npz")
    want = expected[name]
    np.testing.assert_allclose(model.transform(X), want["transform"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.sample(4, random_state=0), want["sample"], rtol=1e-5,
                               atol=1e-6)
    assert model.score(X) == pytest.approx(want["score"], rel=1e-5)


@pytest.mark.parametrize("prior, key, value, match", [
    ("gaussian", "prior_tril", lambda a: a - np.diag([800.0, 0.0]), "positive definite"),
    ("gaussian", "prior_tril", lambda a: a + np.diag([800.0, 0.0]), "positive definite"),
    ("mixture", "prior_log_variances", lambda a: a - 800.0, "positive definite"),
    ("gaussian", "prior_loc", lambda a: a[:1], "shape"),
    ("gaussian", "decoder_std_", lambda a: -a, "decoder_std_"),
    ("gaussian", "decoder_std_", lambda a: a[:2], "decoder_std_"),
    ("gaussian", "decoder_std_", lambda a: a.astype(np.float32), "decoder_std_"),
])
def test_a_learned_prior_or_decoder_std_that_fit_cannot_make_is_refused(tmp_path, prior, key,
                                                                        value, match):
    """The VAE's learned prior (a covariance overflowing, or underflowing to singular) and
    decoder std come from the file as untrusted numbers: what training never makes is refused."""
    X = np.random.default_rng(0).standard_normal((30, 4))
    model = quiet_fit(fastbp.VAE(2, (3,), prior=prior, n_prior_components=2, dtype="float64",
                                 max_iter=2, random_state=0), X)
    assert key in _contents_arrays(tmp_path, model)

    def change(document, arrays):
        arrays[key] = value(arrays[key])
    _refused(_crafted(tmp_path, model, change), match)


def _contents_arrays(tmp_path, model):
    model.save(tmp_path / "names.npz")
    return _contents(tmp_path / "names.npz")[1]


# ------------------------------------------------------------------------------ label round trip
def _label_sets():
    sets = {"int": np.array([7, -2, 30]), "float": np.array([0.5, 1.0, 2.0]) * 2,
            "bool": np.array([True, False, True]), "str": np.array(["ant", "bee", "cat"]),
            "object str": np.array(["ant", "bee", "cat"], dtype=object),
            "object int": np.array([7, -2, 30], dtype=object),
            "bytes": np.array([b"a", b"b", b"c"])}
    return sets


@pytest.mark.parametrize("kind", list(_label_sets()))
def test_every_label_type_round_trips(tmp_path, kind, backend):
    labels = _label_sets()[kind]
    X, y = blobs(40, 3, 3)
    y = labels[y]
    model = quiet_fit(fastbp.MLPClassifier((5,), max_iter=3, random_state=0), X, y)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert loaded.classes_.dtype == model.classes_.dtype
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    predicted, want = loaded.predict(X), model.predict(X)
    assert predicted.dtype == want.dtype and list(predicted) == list(want)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.score(X, y) == model.score(X, y)


@pytest.mark.parametrize("dtype", ["object", "string", "category"])
def test_pandas_string_labels_round_trip(tmp_path, dtype, backend):
    """The issue's example: pandas' strings come as an object array of str."""
    pd = pytest.importorskip("pandas")
    X = np.array([[0.0], [1.0], [0.2], [0.9]])
    y = pd.Series(["a", "b", "a", "b"], dtype=dtype)
    model = quiet_fit(fastbp.MLPClassifier((2,), max_iter=1), X, y)
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    assert list(loaded.predict(X)) == list(model.predict(X))
    assert loaded.predict(X).dtype == model.predict(X).dtype == object


def test_a_model_load_would_refuse_is_not_saved_over_a_good_file(tmp_path):
    model, X = _classifier()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()
    model.coefs_[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="'coef_0': it contains NaN or infinity"):
        model.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_labels_that_are_not_all_strings_or_numbers_cannot_be_saved(tmp_path):
    model, _ = _classifier()
    model.classes_ = np.array(["a", 1, 2.5], dtype=object)  # not something fit makes
    with pytest.raises(ValueError, match="classes_ mixes labels of different types"):
        model.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------- kill -9 save
_SAVER = """
import sys, warnings
import numpy as np
import fastbp
from fastbp.models import persist
if sys.argv[2] == "named":  # a system without O_TMPFILE
    persist._open_unnamed = lambda folder: None
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
model = fastbp.MLPRegressor((1500, 1500), dtype="float64", max_iter=1, random_state=0)
model.fit(rng.standard_normal((4, 3)), rng.standard_normal(4))
model.save(sys.argv[1])
print(repr(float(model.coefs_[1].sum())), flush=True)
while True:
    model.save(sys.argv[1])
"""


@pytest.mark.parametrize("mode", ["unnamed", "named"])
def test_kill_9_during_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, mode):
    import time

    target = tmp_path / "model.npz"
    home = str(Path(fastbp.__file__).parents[1])  # the fastbp under test, not the one in the cwd
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", _SAVER, str(target), mode],
                             stdout=subprocess.PIPE, env=env, text=True, cwd=home)
    try:
        checksum = float(child.stdout.readline())  # the first save is complete
        time.sleep(0.4)  # several saves of 36 MB in: the kill lands mid-write or mid-fsync
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.stdout.close()
    loaded = fastbp.load(target)  # the old file (or the new one: the same model), whole
    assert [W.shape for W in loaded.coefs_] == [(3, 1500), (1500, 1500), (1500, 1)]
    assert float(loaded.coefs_[1].sum()) == checksum
    left = sorted(os.listdir(tmp_path))
    if mode == "unnamed":
        assert left == ["model.npz"]
    else:  # the killed process's temporary may be there: the next save removes it
        alive = tmp_path / ".fastbp-1-alive.tmp"  # pid 1 is running: its temporary stays
        alive.write_bytes(b"")
        model, _ = _classifier()
        model.save(tmp_path / "other.npz")
        assert sorted(os.listdir(tmp_path)) == [alive.name, "model.npz", "other.npz"]


@pytest.mark.parametrize("unnamed", [True, False])
def test_save_removes_only_the_temporaries_of_dead_processes(tmp_path, monkeypatch, unnamed):
    if not unnamed:
        monkeypatch.setattr(persist, "_open_unnamed", lambda folder: None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [f".fastbp-{dead.pid}-x1.tmp", ".fastbp-1-x2.tmp", f".fastbp-{os.getpid()}-x3.tmp",
             ".fastbp-x4.tmp", "notes.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    model, _ = _classifier()
    model.save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:] + ["m.npz"])


def test_save_never_leaves_a_temporary_and_keeps_the_file_mode(tmp_path):
    model, _ = _classifier()
    path = tmp_path / "m.npz"
    mask = os.umask(0o027)
    try:
        model.save(path)
        model.save(path)  # replacing an existing file
    finally:
        os.umask(mask)
    assert os.listdir(tmp_path) == ["m.npz"]
    assert path.stat().st_mode & 0o777 == 0o640


# -------------------------------------------------------------------------------- pickle version
def _fitted_estimators():
    X = np.random.default_rng(0).uniform(0, 1, (30, 4))
    y = (X[:, 0] > 0.5).astype(int)
    return [quiet_fit(fastbp.MLPClassifier((3,), max_iter=2, random_state=0), X, y),
            quiet_fit(fastbp.MLPRegressor((3,), max_iter=2, random_state=0), X, X[:, 0]),
            quiet_fit(fastbp.Autoencoder(2, (3,), max_iter=2, random_state=0), X),
            quiet_fit(fastbp.VAE(2, (3,), max_iter=2, random_state=0), X),
            quiet_fit(fastbp.GAN(2, (3,), (3,), max_iter=2, random_state=0), X)]


def test_pickles_carry_the_version_and_warn_on_a_mismatch(monkeypatch):
    import fastbp.models.mlp

    for model in _fitted_estimators():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same version: silent
            same = pickle.loads(pickle.dumps(model))
        assert type(same) is type(model) and not hasattr(same, "_fastbp_version")

        monkeypatch.setattr(fastbp.models.mlp, "__version__", "0.0.1")
        data = pickle.dumps(model)
        monkeypatch.undo()
        with pytest.warns(fastbp.InconsistentVersionWarning,
                          match=f"{type(model).__name__} from fastbp version 0.0.1 when using "
                                f"version {fastbp.__version__}") as record:
            other = pickle.loads(data)
        warning = record[0].message
        assert (warning.estimator_name, warning.original_version, warning.current_version) == (
            type(model).__name__, "0.0.1", fastbp.__version__)
        np.testing.assert_array_equal(other.coefs_[0], model.coefs_[0])

        state = model.__getstate__()
        del state["_fastbp_version"]  # a pickle of a fastbp that did not record it
        with pytest.warns(fastbp.InconsistentVersionWarning, match="unknown"):
            type(model).__new__(type(model)).__setstate__(state)
