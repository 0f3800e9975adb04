"""Input validation for the estimators: scikit-learn's own (``validate_data``, ``check_array``,
``check_is_fitted``) for X, fastbp's for the targets.

Everything here raises before an estimator changes any of its state: bad input leaves a fitted
model as it was.  Non-numeric data fails in NumPy's own conversion (ValueError "could not convert
string to float", TypeError for objects that are not numbers); missing values (NaN, None, pd.NA,
NaT) are a ValueError.  X's checks (``check_data``) set and check ``n_features_in_`` and
``feature_names_in_`` as scikit-learn's estimators do: a DataFrame whose columns differ from those
seen in ``fit`` (other names, or the same in another order) is a ValueError.
"""
import numbers

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted as _sklearn_check_is_fitted
from sklearn.utils.validation import validate_data

__all__ = ["check_data", "check_X", "check_targets", "check_is_fitted", "check_classes",
           "check_labels", "label_kind"]


def _as_numeric(X, name):
    if X is None:
        raise ValueError(f"requires {name} to be passed, but the target {name} is None"
                         if name == "y" else f"Expected array-like (array or non-string sequence), got None")
    array = np.asarray(X)
    if array.dtype.kind == "c":
        raise ValueError(f"Complex data not supported\n{array}\n")
    return array


def _missing_value(X, name):
    """scikit-learn converts pandas' missing values (pd.NA, NaT) in an object column with
    ``float()``, a TypeError; for fastbp a missing value is a ValueError, as NaN is."""
    values = X.to_numpy(dtype=object) if hasattr(X, "to_numpy") else np.asarray(X, dtype=object)
    missing = [value for value in values.flat if _value_kind(value) == "missing"]
    if missing:
        raise ValueError(f"Input {name} contains a missing value ({missing[0]!r}).") from None


def _as_float(array, name):
    """An object or string array as float64: NumPy's own errors for values that are not numbers
    ("could not convert string to float", TypeError for other objects), except pandas' missing
    values (pd.NA, NaT), which are a ValueError as NaN is."""
    try:
        return array.astype(np.float64)
    except TypeError:
        _missing_value(array, name)
        raise


# Arrays of up to this many entries are checked finite entry by entry (np.isfinite raises no
# floating-point flag; counted by np.count_nonzero, ~0.7 us for one row where .all() costs
# ~1 us); larger ones by their sum (no temporary array), with the flags of an overflowing or NaN
# sum masked (np.errstate alone costs ~1 us).
FINITE_BY_ENTRY = 1 << 14


def _check_finite(array, name):
    """ValueError naming NaN or infinity (scikit-learn's messages); cheap when all is finite."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    if array.size <= FINITE_BY_ENTRY:
        if np.count_nonzero(np.isfinite(array)) == array.size:
            return
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(array.sum()):
                return
    if np.isnan(array).any():
        raise ValueError(f"Input {name} contains NaN.")
    if not np.isfinite(array).all():
        raise ValueError(f"Input {name} contains infinity or a value too large for {array.dtype!r}.")


def check_data(estimator, X, dtype, reset, min_samples=1):
    """X for ``estimator`` by scikit-learn's ``validate_data``: a C-contiguous 2-D finite array
    of ``dtype`` with >= ``min_samples`` rows; ``reset`` (a fresh fit) sets ``n_features_in_`` and
    ``feature_names_in_`` (a DataFrame's columns), else X must match them (ValueError).

    The serving path: an X that is already what ``validate_data`` would return (``_in_layout``,
    of the fitted width, for a model fitted without feature names) is only checked finite -- the
    same outcome in about a microsecond instead of ~100 (scikit-learn's checks look for DataFrame
    libraries and feature names on every call)."""
    if (not reset and _in_layout(X, dtype, min_samples)
            and X.shape[1] == getattr(estimator, "n_features_in_", -1)
            and not hasattr(estimator, "feature_names_in_")):
        _check_finite(X, "X")
        return X
    try:
        with np.errstate(over="ignore"):  # too large for dtype: reported as infinity
            return validate_data(estimator, X, reset=reset, dtype=dtype, order="C",
                                 ensure_min_samples=min_samples)
    except TypeError:
        _missing_value(X, "X")
        raise


def _in_layout(X, dtype, min_samples=1):
    """Whether X is what scikit-learn's ``check_array`` returns for it as it is, but for the
    finite check: an ndarray of ``dtype``, 2-D with >= ``min_samples`` rows and a column,
    C-contiguous and aligned."""
    return (type(X) is np.ndarray and X.dtype == dtype and X.ndim == 2
            and X.flags.c_contiguous and X.flags.aligned
            and X.shape[0] >= min_samples and X.shape[1] >= 1)


def check_X(X, dtype, name="X"):
    """An array that is not the estimator's X (codes to decode, validation rows, a target like X)
    checked as X is, without the feature bookkeeping (one already ``_in_layout`` only checked
    finite, as in ``check_data``)."""
    if _in_layout(X, dtype):
        _check_finite(X, name)
        return X
    try:
        with np.errstate(over="ignore"):  # too large for dtype: reported as infinity
            return check_array(X, dtype=dtype, order="C", input_name=name)
    except TypeError:
        _missing_value(X, name)
        raise


def check_is_fitted(estimator):
    """scikit-learn's ``NotFittedError`` (``fastbp.NotFittedError``) unless ``estimator`` is fitted
    (it has ``coefs_``: asked directly first, as scikit-learn's check costs ~10 us a call)."""
    if "coefs_" not in vars(estimator):
        _sklearn_check_is_fitted(estimator, "coefs_")


def check_targets(y, n_samples, dtype=None):
    """y as a 1-D or 2-D array with ``n_samples`` rows: regression targets of float ``dtype``
    (finite) when given, else class labels (checked by ``check_labels``)."""
    array = _as_numeric(y, "y")
    if array.ndim == 0 or array.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D, got shape {array.shape}")
    if array.shape[0] != n_samples:
        raise ValueError("Found input variables with inconsistent numbers of samples: "
                         f"[{n_samples}, {array.shape[0]}]")
    if array.ndim == 2 and array.shape[1] < 1:
        raise ValueError(f"y has 0 columns (shape={array.shape})")
    if dtype is not None:
        if array.dtype.kind not in "fiub":
            array = _as_float(array, "y")
        with np.errstate(over="ignore"):
            array = np.require(array, dtype, "CAE")  # C order, aligned, an ndarray
        _check_finite(array, "y")
    else:
        check_labels(_as_given(y, array), "y")
    return array


def _as_given(values, array):
    """The labels as the caller gave them: NumPy turns a list mixing numbers and strings into
    strings (0 -> '0'), so such a list is looked at as the objects it holds."""
    if array.dtype.kind in "US" and not isinstance(values, np.ndarray):
        return np.asarray(values, dtype=object)
    return array


def check_classes(classes):
    """``partial_fit``'s ``classes``: the sorted unique labels, checked like y's."""
    array = np.asarray(classes)
    check_labels(_as_given(classes, array), "classes")
    return np.unique(array)


def _value_kind(value):
    """'string', 'bytes', 'number' (bools too), 'missing' (None, NaN, pd.NA, NaT) or 'other'."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, (numbers.Real, np.bool_)):
        return "missing" if value != value else "number"  # NaN
    if value is None or type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return "missing"
    return "other"


def check_labels(y, name="y"):
    """ValueError unless the class labels ``y`` (an array) are of one kind that can be sorted and
    compared: numbers without NaN (bools count as numbers), strings, or bytes.

    Object arrays (pandas columns) are checked element by element: missing labels (None, NaN,
    pd.NA, NaT), strings mixed with numbers and other objects are each named.
    """
    if y.dtype.kind == "f":
        _check_finite(y, name)
    if y.dtype.kind in "biufUS":
        return
    if y.dtype.kind != "O":
        raise ValueError(f"{name} holds labels of dtype {y.dtype}; class labels must be numbers "
                         "or strings")
    types = set(map(type, y.flat))
    if all(issubclass(t, str) for t in types):
        return  # pandas' usual column
    if all(issubclass(t, (numbers.Real, np.bool_)) for t in types):
        floats = np.fromiter((v for v in y.flat if isinstance(v, (float, np.floating))), float)
        if not np.isnan(floats).any():
            return
    found = {}  # the first label of each kind, to name the problem
    for value in y.flat:
        found.setdefault(_value_kind(value), value)
    if "missing" in found:
        raise ValueError(f"{name} contains a missing label ({found['missing']!r}); drop or fill "
                         "the missing labels before fitting")
    if "other" in found:
        raise ValueError(f"{name} holds a label of type {type(found['other']).__name__} "
                         f"({found['other']!r}); class labels must be numbers or strings")
    if len(found) > 1:
        examples = " and ".join(f"{kind} {value!r}" for kind, value in sorted(found.items()))
        raise ValueError(f"{name} mixes labels of different types ({examples}); use one type, "
                         f"e.g. {name}.astype(str)")


def label_kind(y):
    """'multilabel' for a 2-D indicator matrix of 0/1 or of -1/+1 (the lecture's sign
    convention), else 'labels' (1-D class labels).

    ValueError for continuous targets (scikit-learn's "Unknown label type") and for 2-D targets
    that are not indicator matrices.
    """
    if y.ndim == 2:
        if y.dtype.kind not in "fiub" or not (np.isin(y, (0, 1)).all() or np.isin(y, (-1, 1)).all()):
            raise ValueError("Unknown label type: multiclass-multioutput. A 2-D y must be an "
                             "indicator matrix of 0/1 or of -1/+1 (multilabel classification).")
        return "multilabel"
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        raise ValueError("Unknown label type: continuous. Maybe you are trying to fit a classifier, "
                         "which expects discrete classes on a regression target with continuous values.")
    return "labels"
