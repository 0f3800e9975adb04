"""fastbp's exceptions and warnings: one public home for each.

- :class:`NotFittedError` (ValueError, AttributeError): a method that needs a fitted model was
  called before ``fit``.  It *is* ``sklearn.exceptions.NotFittedError``.
- :class:`ConvergenceWarning` (UserWarning): training stopped before converging (``max_iter``
  epochs ran out, or the loss rose: divergence).  It *is* ``sklearn.exceptions.ConvergenceWarning``,
  so ``warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)`` silences fastbp too.
- :class:`InconsistentVersionWarning` (UserWarning): an estimator pickled by another fastbp
  version was unpickled.
- :class:`GradientWarning` (UserWarning): vanishing or exploding gradients in training (the
  first layer's gradient norm far below or above the last's for several epochs).

The two scikit-learn classes load on first use (``import sklearn`` takes about a second, and the
modules below the estimators -- ``fastbp.training`` among them -- import this one): ``from
fastbp.exceptions import ConvergenceWarning`` imports scikit-learn then, plain ``import
fastbp.exceptions`` does not.
"""
import importlib

__all__ = ["NotFittedError", "ConvergenceWarning", "InconsistentVersionWarning", "GradientWarning"]

_SKLEARN = ("NotFittedError", "ConvergenceWarning")


def __getattr__(name):
    if name in _SKLEARN:
        return getattr(importlib.import_module("sklearn.exceptions"), name)
    raise AttributeError(f"module 'fastbp.exceptions' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class InconsistentVersionWarning(UserWarning):
    """An estimator pickled by another fastbp version was unpickled (as scikit-learn's warning
    of that name): its attributes may not be what this version expects.  Refit it, or save it
    with ``model.save`` (a format read across versions) under the version that made it.

    Attributes ``estimator_name``, ``original_version``, ``current_version`` (str).
    """

    def __init__(self, estimator_name, original_version, current_version):
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version
        super().__init__(f"Trying to unpickle estimator {estimator_name} from fastbp version "
                         f"{original_version} when using version {current_version}. This might "
                         "lead to breaking code or invalid results; refit it, or save it with "
                         "model.save() under the version that made it.")


class GradientWarning(UserWarning):
    """Vanishing or exploding gradients: for several epochs the first Dense layer's gradient
    norm stayed below 1e-4 (or above 1e4) times the last's (``fastbp.training.gradient_imbalance``;
    the norms are the estimators' ``grad_norms_``).  The message names the layers and the
    activation and suggests a relu-family activation or another learning rate."""
