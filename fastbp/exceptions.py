"""fastbp's exceptions and warnings (as ``sklearn.exceptions``): one public home for each.

- :class:`NotFittedError` (ValueError, AttributeError): a method that needs a fitted model was
  called before ``fit``.
- :class:`ConvergenceWarning` (UserWarning): training stopped before converging (``max_iter``
  epochs ran out, or the loss rose: divergence).
- :class:`InconsistentVersionWarning` (UserWarning): an estimator pickled by another fastbp
  version was unpickled.

The modules that raise them (``fastbp.models._validation``, ``fastbp.training``,
``fastbp.models.mlp``) import them from here; ``fastbp.NotFittedError`` etc. are these classes.
"""

__all__ = ["NotFittedError", "ConvergenceWarning", "InconsistentVersionWarning"]


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    When scikit-learn is loaded, the error raised also derives from scikit-learn's
    NotFittedError, so that its tools recognise it (scikit-learn is never imported for this:
    see ``fastbp.models._validation.check_is_fitted``).
    """


class ConvergenceWarning(UserWarning):
    """Training stopped before the convergence criterion was met: at ``max_iter`` epochs, or
    because the loss rose (diverged)."""


class InconsistentVersionWarning(UserWarning):
    """An estimator pickled by another fastbp version was unpickled (as scikit-learn's warning
    of that name): its attributes may not be what this version expects.  Refit it, or save it
    with ``model.save`` (a format read across versions) under the version that made it.

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
        The parameters, as given.
    """

    def __init__(self, estimator_name, original_version, current_version):
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version
        super().__init__(f"Trying to unpickle estimator {estimator_name} from fastbp version "
                         f"{original_version} when using version {current_version}. This might "
                         "lead to breaking code or invalid results; refit it, or save it with "
                         "model.save() under the version that made it.")
