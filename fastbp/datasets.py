"""Small data sets shipped with fastbp, available offline.

``data/digits.npz`` holds the handwritten digits: 1797 images of 8 x 8 pixels with 17 grey levels
(0..16) as ``images`` (uint8, 1797 x 64, row-major pixels) and their ``labels`` (uint8, 0..9).
Source: the UCI "Optical Recognition of Handwritten Digits" data set (optdigits, test part) by
E. Alpaydin and C. Kaynak, as bundled with scikit-learn (``sklearn.datasets.load_digits``),
licensed CC BY 4.0; written once with ``numpy.savez_compressed``.
"""
from importlib import resources

import numpy as np

__all__ = ["load_digits", "DIGITS_PATH"]

DIGITS_PATH = resources.files("fastbp") / "data" / "digits.npz"


def load_digits(dtype=np.float32):
    """The handwritten digits shipped with fastbp (see the module docstring).

    Parameters
    ----------
    dtype : numpy dtype, default=numpy.float32
        The dtype of X.

    Returns
    -------
    X : ndarray of shape (1797, 64)
        Pixel intensities scaled to [0, 1], one 8 x 8 image per row (row-major pixels).
    y : ndarray of shape (1797,), int64
        The digits' labels, 0 to 9.
    """
    with resources.as_file(DIGITS_PATH) as path, np.load(path, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    X = images.astype(dtype) / dtype(16.0)
    return X, labels.astype(np.int64)
