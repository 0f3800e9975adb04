"""fastbp's exceptions and warnings: one public home for each.

- :class:`NotFittedError` (ValueError, AttributeError): a method that needs a fitted model was
  called before ``fit``.  It *is* ``sklearn.exceptions.NotFittedError``.
- :class:`ConvergenceWarning` (UserWarning): training stopped before converging (``max_iter``
  epochs ran out, or the loss rose: divergence).  It *is* ``sklearn.exceptions.ConvergenceWarning``,
  so ``warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)`` silences fastbp too.
- :class:`DataDimensionalityWarning` (UserWarning): a model's code does not reduce the
  dimensionality where that defeats it (an unregularised autoencoder whose every hidden layer is
  at least as wide as its input can learn the identity).  It *is*
  ``sklearn.exceptions.DataDimensionalityWarning``, scikit-learn's warning for
  ``n_components`` above the number of features.
- :class:`InconsistentVersionWarning` (UserWarning): an estimator pickled by another fastbp
  version was unpickled.  A subclass of ``sklearn.exceptions.InconsistentVersionWarning``.
- :class:`GradientWarning` (UserWarning): vanishing or exploding gradients in training (the
  first layer's gradient norm far below or above the last's for several epochs).

The scikit-learn classes (and the subclass) load on first use (``import sklearn`` takes about a
second, and the modules below the estimators -- ``fastbp.training`` among them -- import this
one): ``from fastbp.exceptions import ConvergenceWarning`` imports scikit-learn then, plain
``import fastbp.exceptions`` does not.
"""
import importlib

__all__ = ["NotFittedError", "ConvergenceWarning", "DataDimensionalityWarning",
           "InconsistentVersionWarning", "GradientWarning"]

_SKLEARN = ("NotFittedError", "ConvergenceWarning", "DataDimensionalityWarning")
_made = {}


def __getattr__(name):
    if name in _SKLEARN:
        return getattr(importlib.import_module("sklearn.exceptions"), name)
    if name == "InconsistentVersionWarning":
        if name not in _made:
            _made[name] = _inconsistent_version_warning()
        return _made[name]
    raise AttributeError(f"module 'fastbp.exceptions' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _inconsistent_version_warning():
    """fastbp's InconsistentVersionWarning: a subclass of scikit-learn's (so that its filters
    apply to fastbp's pickles too), made on first use."""
    from sklearn.exceptions import InconsistentVersionWarning as SklearnWarning

    class InconsistentVersionWarning(SklearnWarning):
        """An estimator pickled by another fastbp version was unpickled (a subclass of
        scikit-learn's warning of that name): its attributes may not be what this version
        expects.  Refit it, or save it with ``model.save`` (a format read across versions) under
        the version that made it.

        Parameters
        ----------
        estimator_name : str
            The unpickled estimator's class name.
        original_version : str
            The fastbp version that pickled it.
        current_version : str
            This fastbp's version.

        Attributes
        ----------
        estimator_name, original_version, current_version : str
            The parameters, as given (also under scikit-learn's names
            ``original_sklearn_version`` and ``current_sklearn_version``).
        """

        def __init__(self, estimator_name, original_version, current_version):
            super().__init__(estimator_name=estimator_name, current_sklearn_version=current_version,
                             original_sklearn_version=original_version)
            self.original_version = original_version
            self.current_version = current_version

        def __str__(self):
            return (f"Trying to unpickle estimator {self.estimator_name} from fastbp version "
                    f"{self.original_version} when using version {self.current_version}. This "
                    "might lead to breaking code or invalid results; refit it, or save it with "
                    "model.save() under the version that made it.")

    InconsistentVersionWarning.__module__ = __name__
    return InconsistentVersionWarning


class GradientWarning(UserWarning):
    """Vanishing or exploding gradients: for several epochs the first Dense layer's gradient
    norm stayed below 1e-4 (or above 1e4) times the last's (``fastbp.training.gradient_imbalance``;
    the norms are the estimators' ``grad_norms_``).  The message names the layers and the
    activation and suggests a relu-family activation or another learning rate."""
