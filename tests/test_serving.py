"""The estimators' serving path: an X already in the model's layout skips scikit-learn's checks
(fastbp.models._validation.check_data) with the same outcome as the full checks."""
import warnings

import numpy as np
import pytest

import fastbp


@pytest.fixture(scope="module")
def fitted():
    X, y = fastbp.load_digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return fastbp.MLPClassifier((16,), max_iter=3, random_state=0).fit(X, y), X


@pytest.mark.parametrize("rows", [1, 5, 300])
def test_fast_and_full_checks_predict_alike(fitted, backend, rows):
    model, X = fitted
    fast = np.ascontiguousarray(X[:rows], np.float32)  # the model's layout: the fast path
    full = X[:rows].tolist()                            # a list: scikit-learn's checks
    np.testing.assert_array_equal(model.predict_proba(fast), model.predict_proba(full))
    np.testing.assert_array_equal(model.predict(fast), model.predict(full))


@pytest.mark.parametrize("bad, match", [(np.nan, "contains NaN"), (np.inf, "infinity")])
def test_fast_path_refuses_what_the_checks_refuse(fitted, backend, bad, match):
    model, X = fitted
    fast = np.ascontiguousarray(X[:3], np.float32)
    fast[1, 2] = bad
    with pytest.raises(ValueError, match=match):
        model.predict_proba(fast)
    with pytest.raises(ValueError, match="features"):  # another width
        model.predict_proba(np.zeros((2, 5), np.float32))


def test_a_model_fitted_on_named_columns_still_checks_them(backend):
    pd = pytest.importorskip("pandas")
    X, y = fastbp.load_digits()
    frame = pd.DataFrame(X[:300], columns=[f"p{i}" for i in range(64)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model = fastbp.MLPClassifier((8,), max_iter=2, random_state=0).fit(frame, y[:300])
    with pytest.warns(UserWarning, match="feature names"):
        model.predict(np.ascontiguousarray(X[:2], np.float32))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame[frame.columns[::-1]])
