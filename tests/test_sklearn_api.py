"""The scikit-learn conventions users rely on, held to scikit-learn's own behaviour: its warning
classes, feature names and column checks, set_output, the HTML repr, random_state, the stratified
early-stopping split."""
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn.exceptions
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastbp
from _helpers import blobs, one_blas_thread, quiet_fit  # noqa: F401

X, y = blobs(60, d=4)
FRAME = pd.DataFrame(X, columns=["a", "b", "c", "d"])


def test_convergence_warning_is_filtered_by_sklearns_class():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        fastbp.MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
        GridSearchCV(fastbp.MLPClassifier((4,), max_iter=2, random_state=0),
                     {"alpha": [1e-4, 1e-3]}, cv=2).fit(X, y)
    assert not [w for w in caught if "iterations" in str(w.message)]
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="Maximum iterations"):
        fastbp.MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)


def test_not_fitted_error_is_sklearns():
    with pytest.raises(sklearn.exceptions.NotFittedError, match="not fitted"):
        fastbp.MLPRegressor().predict(X)


@pytest.mark.parametrize("model", [fastbp.MLPClassifier((4,), max_iter=3, random_state=0),
                                   fastbp.Autoencoder(2, (4,), max_iter=3, random_state=0)])
def test_feature_names_are_kept_and_checked_like_sklearns(model, tmp_path):
    model = quiet_fit(model, FRAME, y)  # (the autoencoder ignores y)
    reference = quiet_fit(LogisticRegression(), FRAME, y)
    np.testing.assert_array_equal(model.feature_names_in_, reference.feature_names_in_)
    method = model.predict if hasattr(model, "predict") else model.transform
    reversed_columns = FRAME[FRAME.columns[::-1]]
    with pytest.raises(ValueError, match="feature names should match") as ours:
        method(reversed_columns)
    with pytest.raises(ValueError) as theirs:
        reference.predict(reversed_columns)
    assert str(ours.value).split("\n")[0] == str(theirs.value).split("\n")[0]
    with pytest.warns(UserWarning, match="X does not have valid feature names"):  # as sklearn
        np.testing.assert_array_equal(method(FRAME), method(X))
    model.save(tmp_path / "m.npz")
    loaded = fastbp.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)
    with pytest.raises(ValueError, match="feature names should match"):
        (loaded.predict if hasattr(loaded, "predict") else loaded.transform)(reversed_columns)


@pytest.mark.parametrize("cls, prefix", [(fastbp.Autoencoder, "autoencoder"), (fastbp.VAE, "vae")])
def test_transformers_set_output_pandas_in_a_pipeline(cls, prefix):
    inner = cls(3, (8,), max_iter=5, random_state=0)
    pipe = make_pipeline(StandardScaler(), inner, LogisticRegression()).set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        pipe.fit(FRAME, y)
    codes = pipe[:-1].transform(FRAME)
    assert isinstance(codes, pd.DataFrame)
    assert list(codes.columns) == [f"{prefix}{i}" for i in range(3)]
    assert list(inner.get_feature_names_out()) == list(codes.columns)
    np.testing.assert_array_equal(codes.to_numpy(), inner.transform(pipe[0].transform(FRAME)))
    assert codes.index.equals(FRAME.index)
    assert pipe.score(FRAME, y) > 0.5


def test_html_repr_names_the_estimator_and_its_changed_parameters():
    model = fastbp.MLPClassifier(hidden_layer_sizes=(7,), solver="sgd")
    html = model._repr_html_()
    assert "MLPClassifier" in html and "hidden_layer_sizes" in html and "sgd" in html
    assert repr(model) == "MLPClassifier(hidden_layer_sizes=(7,), solver='sgd')"


def _weights(random_state):
    return quiet_fit(fastbp.MLPClassifier((4,), max_iter=2, random_state=random_state), X, y).coefs_[0]


def test_random_state_as_sklearn_documents():
    """An int: the same fit on every call; a RandomState: drawn from, so successive fits differ
    and the sequence repeats from the same seed; None: NumPy's global RandomState."""
    np.testing.assert_array_equal(_weights(3), _weights(3))
    rs = np.random.RandomState(0)
    first, second = _weights(rs), _weights(rs)
    assert not np.array_equal(first, second)
    rs = np.random.RandomState(0)
    np.testing.assert_array_equal(_weights(rs), first)
    np.testing.assert_array_equal(_weights(rs), second)
    np.random.seed(5)
    a = _weights(None)
    np.random.seed(5)
    np.testing.assert_array_equal(_weights(None), a)
    with pytest.raises(ValueError, match="cannot be used to seed"):
        fastbp.MLPClassifier(random_state="zero").fit(X, y)


def test_early_stopping_split_is_stratified():
    """Like scikit-learn's MLP, the validation rows keep the classes' proportions: 30 rows, a
    third of class 1, validation_fraction 0.3 -> 3 of the 9 held-out rows are class 1, always."""
    X30 = np.random.default_rng(0).standard_normal((30, 3))
    y30 = np.array([0, 0, 1] * 10)
    for seed in range(5):
        model = quiet_fit(fastbp.MLPClassifier((3,), max_iter=1, random_state=seed), X30, y30)
        model.validation_fraction = 0.3
        X_train, Y_train, _, _ = model._split_validation(X30.astype(np.float32),
                                                      model._encode_like(y30, 30, np.float32,
                                                                         model._fitted_target()))
        assert X_train.shape == (21, 3) and int(Y_train.sum()) == 7


def test_core_layers_import_without_sklearn():
    """scikit-learn (about a second to import) loads with the estimators only: the kernels,
    fastbp.nn, the engine and the training loop import without it."""
    from conftest import run_python  # the fastbp the tests import (installed, in CI)
    code = ("import sys, fastbp, fastbp.kernels, fastbp.nn, fastbp.engine, fastbp.training, "
            "fastbp.exceptions; print(sorted(m for m in sys.modules if m.startswith('sklearn')))")
    out = run_python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("cls", [fastbp.MLPClassifier, fastbp.MLPRegressor, fastbp.Autoencoder,
                                 fastbp.VAE, fastbp.GAN])
def test_help_lists_every_parameter_and_the_fitted_attributes(cls):
    """numpydoc sections on the public class: every __init__ argument with its default, and the
    fitted attributes -- each of which a fitted model has, and no public one undocumented."""
    import inspect
    import pydoc
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    doc = inspect.getdoc(cls)
    assert "Parameters\n----------" in doc and "Attributes\n----------" in doc
    for name, parameter in inspect.signature(cls).parameters.items():
        assert f"{name} : " in doc and f"default={parameter.default!r}" in text
    model = cls() if cls is not fastbp.GAN else cls(max_iter=1)
    model.set_params(max_iter=2)
    quiet_fit(model, FRAME, y)
    attributes = doc.split("Attributes\n----------\n")[1]
    documented = {line.split(" : ")[0] for line in attributes.splitlines() if " : " in line
                  and not line.startswith(" ")}
    public = {name for name in vars(model) if name.endswith("_") and not name.startswith("_")}
    assert public <= documented and all(hasattr(model, name) for name in documented)


def test_unpickling_another_version_is_filtered_by_sklearns_warning_class():
    """fastbp's InconsistentVersionWarning is a scikit-learn one: its filters apply."""
    import pickle
    model = quiet_fit(fastbp.MLPClassifier((3,), max_iter=1, random_state=0), X, y)
    state = model.__getstate__()
    state["_fastbp_version"] = "0.0.1"
    blob = pickle.dumps(model)
    restored = pickle.loads(blob)
    with pytest.warns(sklearn.exceptions.InconsistentVersionWarning, match="fastbp version 0.0.1"):
        restored.__setstate__(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", sklearn.exceptions.InconsistentVersionWarning)
        restored.__setstate__(state)
