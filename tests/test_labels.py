"""Bad class labels are a ValueError naming the problem, on fit, partial_fit and its classes, and
validation data, on both backends; the model is left as it was."""
import numpy as np
import pytest
from _helpers import one_blas_thread, quiet_fit  # noqa: F401  (autouse fixture)

import fastbp

N = 8
X = np.linspace(-1, 1, 2 * N).reshape(N, 2)


def _bad_labels():
    """(name, y of N labels, what the message must say)."""
    cases = [
        ("ints and strings, object", np.array([1, "a"] * (N // 2), dtype=object), "mixes labels"),
        ("ints and strings, list", [1, "a"] * (N // 2), "mixes labels"),
        ("floats and strings", np.array([1.5, "a"] * (N // 2), dtype=object), "mixes labels"),
        ("bytes and strings", np.array([b"a", "a"] * (N // 2), dtype=object), "mixes labels"),
        ("None", np.array(["a", None] * (N // 2), dtype=object), "missing label"),
        ("NaN among strings", np.array(["a", np.nan] * (N // 2), dtype=object), "missing label"),
        ("NaN among numbers", np.array([1, float("nan")] * (N // 2), dtype=object),
         "missing label"),
        ("NaN", np.array([1.0, np.nan] * (N // 2)), "contains NaN"),
        ("objects", np.array([1, object()] * (N // 2), dtype=object), "label of type object"),
        ("dates", np.array(["2020-01-01", "2021-01-01"] * (N // 2), dtype="datetime64[D]"),
         "dtype datetime64"),
    ]
    try:
        import pandas as pd
    except ImportError:
        return cases
    return cases + [
        ("pd.NA in strings", pd.Series(["a", pd.NA] * (N // 2)), "missing label"),
        ("pd.NA, string dtype", pd.Series(["a", None] * (N // 2), dtype="string"),
         "missing label"),
        ("pd.NA, Int64", pd.Series([1, None] * (N // 2), dtype="Int64"), "contains NaN"),
        ("NaT", pd.Series([pd.NaT, "a"] * (N // 2), dtype=object), "missing label"),
    ]


CASES = _bad_labels()


def _good_model():
    return quiet_fit(fastbp.MLPClassifier((3,), max_iter=2, random_state=0), X,
                     np.array(["a", "b"] * (N // 2)))


@pytest.mark.parametrize("name, y, match", CASES, ids=[case[0] for case in CASES])
def test_bad_labels_are_a_value_error_naming_the_problem(name, y, match, backend):
    with pytest.raises(ValueError, match=match):
        fastbp.MLPClassifier((3,), max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match=match):
        fastbp.MLPClassifier((3,), max_iter=2).partial_fit(X, y, classes=["a", "b"])
    with pytest.raises(ValueError, match=match.replace("label", "label|classes")):
        fastbp.MLPClassifier((3,), max_iter=2).partial_fit(X, ["a", "b"] * (N // 2), classes=y)

    model = _good_model()
    before = [W.copy() for W in model.coefs_]
    with pytest.raises(ValueError, match=match):
        model.partial_fit(X, y)
    with pytest.raises(ValueError, match=match):
        model.score(X, y)
    with pytest.raises(ValueError, match=match):
        fastbp.MLPClassifier((3,), max_iter=2).fit(X, ["a", "b"] * (N // 2),
                                                   validation_data=(X, y))
    assert all(np.array_equal(a, b) for a, b in zip(model.coefs_, before))


def test_lists_keep_numbers_and_strings_apart_but_accept_either():
    """NumPy turns [1, 'a'] into strings; a list of only numbers or only strings is fine."""
    for y, classes in (([3, 1] * (N // 2), [1, 3]), (["b", "a"] * (N // 2), ["a", "b"]),
                       ([True, False] * (N // 2), [False, True])):
        model = quiet_fit(fastbp.MLPClassifier((3,), max_iter=2, random_state=0), X, y)
        assert model.classes_.tolist() == classes


def test_pandas_missing_values_in_numeric_input_are_a_value_error(backend):
    """pd.NA and NaT in X or in regression targets: a ValueError like NaN's, not float()'s
    TypeError."""
    pd = pytest.importorskip("pandas")
    with_na = pd.DataFrame({"a": [1.0, pd.NA] * (N // 2), "b": 1.0})
    nullable = pd.DataFrame({"a": pd.array([1, None] * (N // 2), dtype="Int64"), "b": 1.0})
    y = X[:, 0]
    for fit in (lambda: fastbp.MLPRegressor((3,), max_iter=2).fit(with_na, y),
                lambda: fastbp.MLPClassifier((3,), max_iter=2).fit(with_na, y > 0),
                lambda: fastbp.Autoencoder(1, (3,), max_iter=2).fit(with_na),
                lambda: fastbp.MLPRegressor((3,), max_iter=2).fit(
                    X, pd.Series([1.0, pd.NA] * (N // 2), dtype=object))):
        with pytest.raises(ValueError, match=r"contains a missing value \(<NA>\)"):
            fit()
    with pytest.raises(ValueError, match="contains NaN"):  # a nullable column's NA is NaN
        fastbp.MLPRegressor((3,), max_iter=2).fit(nullable, y)
    with pytest.raises(ValueError, match="contains NaN"):
        fastbp.MLPRegressor((3,), max_iter=2).fit(X, pd.Series([1.0, None] * (N // 2),
                                                                dtype="Float64"))
    with pytest.raises(TypeError, match="dict"):  # an object that is no number: a type error
        fastbp.MLPRegressor((3,), max_iter=2).fit(np.array([[{}, 1]] * N, dtype=object), y)
