"""fastbp: fast backpropagation for dense networks on the CPU.

Compiled (Cython) kernels with a NumPy twin of each; ``backend()`` tells which runs and
``use_backend('compiled' | 'numpy')`` switches (also as a context manager).

Names load on first use, so that tools such as ``fastbp size`` never import a compiled module.
"""
import importlib

# public name -> module that defines it
_LAZY = {
    "__version__": "fastbp._version",
    "backend": "fastbp._backend",
    "use_backend": "fastbp._backend",
    "MLPClassifier": "fastbp.models.mlp",
    "MLPRegressor": "fastbp.models.mlp",
    "NotFittedError": "fastbp.exceptions",
    "ConvergenceWarning": "fastbp.exceptions",
    "DataDimensionalityWarning": "fastbp.exceptions",
    "gradcheck": "fastbp.models.gradcheck",
    "jacobian": "fastbp.models.jacobian",
    "load": "fastbp.models.persist",
    "InconsistentVersionWarning": "fastbp.exceptions",
    "GradientWarning": "fastbp.exceptions",
    "load_digits": "fastbp.datasets",
    "Sequential": "fastbp.nn",
    "Dense": "fastbp.nn",
    "Dropout": "fastbp.nn",
    "make_mlp": "fastbp.nn",
    "fit_network": "fastbp.training",
    "TrainConfig": "fastbp.training",
    "Autoencoder": "fastbp.models.autoencoder",
    "VAE": "fastbp.models.vae",
    "GAN": "fastbp.models.gan",
}
__all__ = ["kernels", "exceptions", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("kernels", "exceptions"):
        return importlib.import_module(f"fastbp.{name}")
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
