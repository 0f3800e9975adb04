"""The estimators' public methods say, in numpydoc sections, what they take, return and raise:
every argument of the signature in its order (Parameters), a Returns section exactly where the
code returns a value, and every exception that a call before ``fit`` or on X with NaN raises
(Raises) -- held to the signatures, the methods' source and what the calls do."""
import ast
import copy
import inspect
import pydoc
import textwrap
import warnings

import numpy as np
import pytest
from sklearn.base import clone

import fastbp
from _helpers import blobs, quiet_fit
from fastbp.models._docs import sections

X, labels = blobs(40, d=4)
TARGETS = {fastbp.MLPClassifier: labels, fastbp.MLPRegressor: X[:, :2].copy()}
ESTIMATORS = [fastbp.MLPClassifier((3,), max_iter=2, random_state=0),
              fastbp.MLPRegressor((3,), max_iter=2, random_state=0),
              fastbp.Autoencoder(2, (3,), max_iter=2, random_state=0),
              fastbp.VAE(2, (3,), max_iter=2, random_state=0),
              fastbp.GAN(2, (3,), (3,), max_iter=2, random_state=0)]


def public_methods(cls):
    """(name, function) of every public method fastbp defines (not scikit-learn's)."""
    for name in dir(cls):
        if name.startswith("_") or isinstance(inspect.getattr_static(cls, name), property):
            continue
        function = inspect.unwrap(getattr(cls, name))
        if callable(function) and function.__module__.startswith("fastbp."):
            yield name, function


def numpydoc_sections(doc):
    """title -> the names (or types) its entries begin with, of a docstring's numpydoc sections."""
    lines, found, entries = doc.splitlines(), {}, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1] == "-" * len(line) and line:
            entries = found[line] = []
        elif entries is not None and line and not line.startswith(" ") and set(line) != {"-"}:
            entries.append(line.split(" : ")[0])
    return found


def returns_a_value(function):
    """Whether the function's own body (not a nested function's) has ``return <value>``."""
    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if (isinstance(child, ast.Return) and child.value is not None) or walk(child):
                return True
        return False
    return walk(ast.parse(textwrap.dedent(inspect.getsource(function))).body[0])


def raised(method, arguments):
    """The class of what ``method(**arguments)`` raises, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            method(**arguments)
    except Exception as error:  # noqa: BLE001 -- whatever it is must be documented
        return type(error)
    return None


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_every_public_method_documents_what_it_takes_returns_and_raises(estimator, tmp_path):
    cls = type(estimator)
    y = TARGETS.get(cls)
    fitted = quiet_fit(clone(estimator), X, y)
    n_components = getattr(fitted, "n_components", 2)
    nan_X = X.copy()
    nan_X[3, 1] = np.nan
    good = {"X": X, "y": y, "H": np.zeros((5, n_components)), "path": tmp_path / "m.npz"}
    bad = dict(good, X=nan_X, H=np.full((5, n_components), np.nan))
    methods = dict(public_methods(cls))
    assert {"fit", "save", "summary", "to_onnx"} <= set(methods)
    for name, function in methods.items():
        doc = inspect.getdoc(function)
        found = numpydoc_sections(doc)
        where = f"{cls.__name__}.{name}"
        signature = [p for p in inspect.signature(function).parameters.values()
                     if p.name != "self"]
        assert found.get("Parameters", []) == [p.name for p in signature], where
        assert ("Returns" in found) == returns_a_value(function), where
        documented = set(found.get("Raises", []))
        required = {p.name: good[p.name] for p in signature
                    if p.default is inspect.Parameter.empty}
        before_fit = raised(getattr(clone(estimator), name), required)
        if before_fit is not None:
            assert before_fit.__name__ in documented, (where, before_fit)
        assert ("NotFittedError" in documented) == (before_fit is fastbp.NotFittedError), where
        if {"X", "H"} & set(required):
            on_nan = raised(getattr(copy.deepcopy(fitted), name),
                            {key: bad[key] for key in required})
            assert on_nan is ValueError and "ValueError" in documented, (where, on_nan)
        text = pydoc.render_doc(getattr(cls, name), renderer=pydoc.plaintext)
        assert all(line.strip() in text for line in doc.splitlines()), where  # help() shows it


def test_sections_documents_every_argument_or_refuses_the_method():
    with pytest.raises(TypeError, match=r"documents the arguments \['X'\], not its own"):
        @sections(["X"])
        def predict(self, X, y):
            """Two arguments, one documented."""
    with pytest.raises(KeyError, match="unknown"):
        @sections(["X"], raises=["unknown"])
        def transform(self, X):
            """An exception not in RAISES."""

    @sections(["X", ("k", "int", "How many.")], (None, "float", "The value."), ["not fitted"])
    def score(self, X, k=3):
        """One line."""
    assert inspect.getdoc(score) == (
        "One line.\n\nParameters\n----------\n"
        "X : array-like or DataFrame of shape (n_samples, n_features)\n"
        "    Rows with the columns of ``fit`` (their number, or a DataFrame's names and order).\n"
        "k : int, default=3\n    How many.\n\n"
        "Returns\n-------\nfloat\n    The value.\n\n"
        "Raises\n------\nNotFittedError\n    Before ``fit``.")
