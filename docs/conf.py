"""Sphinx configuration of fastbp's documentation: an API reference generated from the numpydoc
docstrings, and a guide whose code runs as doctests (``sphinx-build -b doctest``).

Built in CI with warnings as errors (.ci/run), on the installed package::

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest

(or, in a tree built in place, with ``PYTHONPATH=.`` in front of each ``sphinx-build``).
"""
import logging
import sys

import fastbp

project = "fastbp"
author = "the fastbp developers"
copyright = "fastbp developers"
release = version = fastbp.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.doctest", "sphinx.ext.mathjax", "numpydoc"]
exclude_patterns = ["_build"]
html_theme = "pydata_sphinx_theme"
html_title = f"fastbp {release}"

autodoc_default_options = {"members": True, "member-order": "bysource"}
numpydoc_show_class_members = False   # members are documented by autodoc, below each class
numpydoc_xref_param_type = False
nitpicky = False

# Doctests compare with ELLIPSIS and NORMALIZE_WHITESPACE (docstrings wrap long reprs, as
# scikit-learn's NotFittedError example, which the exceptions' reference pulls in, does).
import doctest  # noqa: E402

doctest_default_flags = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
                         | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1)

# The guide's code: each document's doctests share one namespace.
doctest_global_setup = """
import warnings
import numpy as np
import fastbp
warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
try:
    import onnxruntime
except ImportError:
    onnxruntime = None
"""

# scikit-learn's own docstrings, which the estimators inherit (set_output, the metadata-routing
# methods, RegressorMixin.score), refer to scikit-learn's glossary and labels, which these docs do
# not have: their warnings are printed as reports, not fatal.  Every docstring of fastbp's own
# must build without a warning.
LENIENT_SOURCES = ("docstring of sklearn.",)
LENIENT_NAMES = ()

# numpydoc's checks: every parameter documented and no unknown one, a Returns section where
# something is returned
numpydoc_validation_checks = {"PR01", "PR02", "RT01"}


def _source(record):
    location = getattr(record, "location", None)
    if isinstance(location, tuple):
        location = location[0]
    line = getattr(location, "line", None)
    source = str(getattr(location, "source", None) or location or "")
    return f"{source}:{line}" if line else source


class _Lenient(logging.Filter):
    """Warnings about LENIENT_SOURCES or LENIENT_NAMES are printed as reports and do not count as
    warnings."""

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return True
        source, message = _source(record), record.getMessage()
        if not (any(part in source for part in LENIENT_SOURCES)
                or any(f"docstring for '{name}" in message for name in LENIENT_NAMES)):
            return True
        where = f"{source}: " if source else ""
        print(f"reported, not fatal (scikit-learn's docstring): {where}{message}", file=sys.stderr)
        return False


def setup(app):
    # before Sphinx's own filters (which turn a warning into an error under -W)
    for handler in logging.getLogger("sphinx").handlers:
        handler.filters.insert(0, _Lenient())
