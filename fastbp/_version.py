"""fastbp's version: a leaf module, so that any layer may read it without importing the package
facade (``fastbp/__init__.py``) above it."""

__version__ = "0.1.0"
