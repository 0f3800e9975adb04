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


def test_multilabel_in_the_lectures_sign_convention(backend, tmp_path):
    """A -1/+1 indicator matrix trains exactly as its 0/1 twin (the same network targets), and
    predict answers in the convention it was given: sign(t) in {-1, +1}; save/load keeps it."""
    rng = np.random.default_rng(0)
    Xm = rng.standard_normal((60, 4))
    Y01 = (Xm[:, :3] + 0.3 * rng.standard_normal((60, 3)) > 0).astype(int)
    Ysign = 2 * Y01 - 1
    params = dict(hidden_layer_sizes=(8,), max_iter=60, learning_rate_init=0.05, random_state=0)
    zero_one = quiet_fit(fastbp.MLPClassifier(**params), Xm, Y01)
    signs = quiet_fit(fastbp.MLPClassifier(**params), Xm, Ysign)
    for a, b in zip(zero_one.coefs_, signs.coefs_):
        np.testing.assert_array_equal(a, b)
    predicted = signs.predict(Xm)
    np.testing.assert_array_equal(predicted, 2 * zero_one.predict(Xm) - 1)
    assert set(np.unique(predicted)) <= {-1, 1}
    logits = signs.network_.predict(Xm.astype(np.float32))
    np.testing.assert_array_equal(predicted, np.where(logits > 0, 1, -1))  # sign(t)
    assert signs.score(Xm, Ysign) == zero_one.score(Xm, Y01) > 0.5
    signs.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(fastbp.load(tmp_path / "m.npz").predict(Xm), predicted)
    with pytest.raises(ValueError, match="indicator matrix of 0/1 or of -1/\\+1"):
        fastbp.MLPClassifier(**params).fit(Xm, np.where(Y01, 1, [0, -1, -1]))  # 0 and -1
