"""scikit-learn's estimator checks for all five estimators, built on scikit-learn's own bases.

No warning is allowed but the ConvergenceWarning of the checks' short fits, filtered by
scikit-learn's class (which is fastbp's), and the DataDimensionalityWarning of the Autoencoder,
whose 2-unit code is as wide as the checks' 2-feature data (it could learn the identity: rightly
warned)."""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, DataDimensionalityWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastbp import GAN, VAE, Autoencoder, MLPClassifier, MLPRegressor

# Small settings keep the checks fast; they still train enough to pass the score checks.
ESTIMATORS = [
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.02, n_threads=1),
    MLPRegressor(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.02, n_threads=1),
    Autoencoder(2, (8,), max_iter=20, learning_rate_init=0.02, n_threads=1),
    # decoder_std fixed: on the checks' data (offset 100, pure noise) the learned std leaves the
    # decoder's last layer almost no gradient after 20 epochs, which GradientWarning reports
    VAE(2, (8,), decoder_std=1.0, max_iter=20, learning_rate_init=0.02, n_threads=1),
    GAN(2, (8,), (8,), max_iter=5, n_threads=1),
]



@pytest.fixture(autouse=True)
def _same_draws():
    """random_state=None draws from NumPy's global RandomState (scikit-learn's convention): seed it
    for each check, so that a check's outcome does not depend on the tests run before it (a tiny
    fit can land on dead relu units, whose first layer then gets no gradient and rightly warns)."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


_FLOAT32_SUBSETS = (
    "float32 (the default dtype) products of one row and of many rows differ in the last bits: "
    "BLAS computes them with different kernels and summation orders, so predictions on a subset "
    "differ from those on the whole batch by ~1 float32 ulp (~1e-7 relative), which the check's "
    "rtol=atol=1e-7 does not allow.  With dtype='float64' the check passes.")


_MINIBATCHES = (
    "minibatch training with shuffled rows: repeating a row changes which rows share a minibatch "
    "and how many steps an epoch takes, so a weighted fit is not a fit on repeated rows (as for "
    "scikit-learn's own MLPs, which list this check as an expected failure).  With the whole data "
    "in one batch it is: tests/test_sample_weight.py holds every estimator to repeated rows there.")
_SAMPLED = (
    "a draw per row (the VAE's eps, the GAN's fake for each real row): repeated rows draw other "
    "noise.  tests/test_sample_weight.py holds the weighted objective with the noise fixed.")


def expected_failures(estimator):
    # Not strict: whether the last bits agree depends on the backend and the rows.
    sampled = isinstance(estimator, (VAE, GAN))
    return {"check_methods_subset_invariance": _FLOAT32_SUBSETS,
            "check_sample_weight_equivalence_on_dense_data": _SAMPLED if sampled else _MINIBATCHES}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures, xfail_strict=False)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)  # the checks' fits are short
        warnings.simplefilter("ignore", DataDimensionalityWarning)  # 2 features, a 2-unit code
        check(estimator)


def test_float64_passes_subset_invariance():
    """The one expected failure above is float32 rounding: in float64 the check passes."""
    from sklearn.utils.estimator_checks import check_methods_subset_invariance
    for estimator in ESTIMATORS:
        estimator = estimator.__class__(**{**estimator.get_params(), "dtype": "float64"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            check_methods_subset_invariance(type(estimator).__name__, estimator)
