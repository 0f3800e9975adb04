"""Sphinx configuration of fastbp's documentation: an API reference generated from the numpydoc
docstrings, and a guide whose code runs as doctests (``sphinx-build -b doctest``).

Built in CI with warnings as errors (.ci/run), on the installed package::

    pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest

(or, in a tree built in place, with ``PYTHONPATH=.`` in front of each ``sphinx-build``).
"""
import logging
import os
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

# Docstrings being rewritten to numpydoc elsewhere (issue 15: the estimators' in fastbp/models, the
# kernels' and optimizers' by the lead): their docutils warnings are reported, not fatal, until
# they are clean.  Every other module's docstrings must build without a warning.
LENIENT_SOURCES = (
    os.path.join("fastbp", "models", "mlp.py"),
    os.path.join("fastbp", "models", "autoencoder.py"),
    os.path.join("fastbp", "models", "vae.py"),
    os.path.join("fastbp", "models", "gan.py"),
    os.path.join("fastbp", "models", "_generative.py"),
    os.path.join("fastbp", "kernels", ""),
    os.path.join("fastbp", "optim.py"),
)


def _source(record):
    location = getattr(record, "location", None)
    if isinstance(location, tuple):
        location = location[0]
    line = getattr(location, "line", None)
    source = str(getattr(location, "source", None) or location or "")
    return f"{source}:{line}" if line else source


class _Lenient(logging.Filter):
    """Warnings located in LENIENT_SOURCES are printed as reports and do not count as warnings."""

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return True
        source = _source(record)
        if not any(part in source for part in LENIENT_SOURCES):
            return True
        print(f"reported, not fatal (docstring being rewritten): {source}: {record.getMessage()}",
              file=sys.stderr)
        return False


def setup(app):
    # before Sphinx's own filters (which turn a warning into an error under -W)
    for handler in logging.getLogger("sphinx").handlers:
        handler.filters.insert(0, _Lenient())

# numpydoc's checks of the docstrings outside LENIENT_SOURCES: every parameter documented and no
# unknown one, a Returns section where something is returned (each failure a warning: fatal)
numpydoc_validation_checks = {"PR01", "PR02", "RT01"}
numpydoc_validation_exclude = {
    r"^fastbp\.(MLPClassifier|MLPRegressor|Autoencoder|VAE|GAN)($|\.)",
    r"^fastbp\.models\.(mlp|autoencoder|vae|gan|_generative)\.",
    r"^fastbp\.kernels\.", r"^fastbp\.optim\.",
    # being extended in issue 15 (callbacks, the Layer extension API): completed after that merge
    r"^fastbp\.training\.", r"^fastbp\.nn\.Layer($|\.)",
}
