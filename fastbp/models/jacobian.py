"""Jacobians of a fitted estimator's outputs, by backprop (CS771 Deep Learning III: the Jacobian of
f: R^d -> R^k stacks the k gradient rows of f_1 ... f_k, a k x d matrix).

For each output unit j the network is run backwards from the unit vector e_j, exactly as training
backpropagates a loss's gradient (the layers' own backward over the kernels, in float64): the
input gradient of every row is row j of that row's Jacobian, and the weight gradient of one row is
the Jacobian of output j with respect to the weights.  The function differentiated is an
inference method's, as :mod:`fastbp.models.export` declares it for ONNX (probabilities for a
classifier, the code for an autoencoder, ...), so ``jacobian`` and ``to_onnx`` see the same
network.
"""
import numpy as np

from fastbp.models._validation import check_X
from fastbp.models.export import exported_path
from fastbp.nn import Dense, Sequential

__all__ = ["jacobian"]


def _float64_network(path):
    """The path's layers as a float64 Sequential (copies: the estimator is left alone)."""
    layers = []
    for step in path.layers:
        W, b = step.W[:, :step.n_out], step.b[:step.n_out]
        layer = Dense(W.shape[0], W.shape[1], step.activation, alpha=step.alpha,
                      dtype=np.float64)
        layer.W[...], layer.b[...] = W, b
        layers.append(layer)
    return Sequential(layers)


def _find(path, wrt):
    """(index of the layer, "W" or "b") of the array ``wrt`` on the path; ValueError otherwise."""
    for i, step in enumerate(path.layers):
        if wrt is step.W:
            return i, "W"
        if wrt is step.b:
            return i, "b"
    raise ValueError("wrt must be 'X' or one of the estimator's weight arrays on the method's "
                     "path (an entry of coefs_ or intercepts_, or discriminator_coefs_ ... for "
                     "the GAN's decision_function), given as the array object itself")


def jacobian(estimator, X, method=None, wrt="X"):
    """The Jacobian of a fitted estimator's outputs with respect to its inputs or one weight array.

    Parameters
    ----------
    estimator : fitted fastbp estimator
        ``MLPClassifier``, ``MLPRegressor``, ``Autoencoder``, ``VAE`` or ``GAN``.
    X : array-like of shape (n_samples, n_inputs)
        The points at which to differentiate: rows of the method's input (data; codes for
        ``inverse_transform``; noise z for the GAN's ``sample``).
    method : str or None, default=None
        The function differentiated, as in ``estimator.to_onnx``: ``'predict_proba'``
        (MLPClassifier, the default there), ``'predict'`` (MLPRegressor), ``'transform'``
        (default), ``'inverse_transform'``, ``'reconstruct'`` (Autoencoder, VAE: the VAE's code
        is its posterior mean), ``'sample'`` (default), ``'decision_function'`` (GAN).
    wrt : 'X' or ndarray, default='X'
        ``'X'``: with respect to the inputs.  Otherwise one of the estimator's own weight arrays
        on the method's path (e.g. ``est.coefs_[0]`` or ``est.intercepts_[-1]``, the array object
        itself); X must then be one sample.

    Returns
    -------
    ndarray of float64
        ``wrt='X'``: shape (n_samples, k, n_inputs), entry [i, j, l] = d output_j / d x_l at
        row i, for the method's k outputs (a 1-D output is k = 1; a binary classifier's
        probabilities are k = 2).  A weight array of shape s: shape ``(k, *s)``, the Jacobian at
        the one sample (zero for the columns the method does not use, such as the VAE encoder's
        log-variance units under ``transform``).

    Raises
    ------
    NotFittedError
        Before ``fit``.
    ValueError
        For a method the estimator does not export, X of the wrong width or with NaN or
        infinity, ``wrt`` not a weight array of the method's path, or more than one sample
        with a weight array.
    """
    method, path = exported_path(estimator, method)
    X = check_X(X, np.float64)
    if X.shape[1] != path.n_inputs:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__}.{method} "
                         f"takes {path.n_inputs}")
    target = None if isinstance(wrt, str) and wrt == "X" else _find(path, wrt)
    if target is not None and X.shape[0] != 1:
        raise ValueError(f"the Jacobian with respect to a weight array is for one sample; X has "
                         f"{X.shape[0]} rows")
    network = _float64_network(path)
    output = network.forward(X)
    rows = []
    for j in range(output.shape[1]):
        unit = np.zeros_like(output)
        unit[:, j] = 1.0
        dX = network.backward(unit, need_dX=True)
        if target is None:
            rows.append(dX.copy())
        else:
            i, name = target
            grad = getattr(network.dense_layers[i], "d" + name)
            full = np.zeros(wrt.shape)  # the units a sliced layer leaves out have zero slope
            full[..., :grad.shape[-1]] = grad
            rows.append(full)
    J = np.stack(rows, axis=1 if target is None else 0)
    if path.two_class:  # [1 - p, p]
        J = np.concatenate([-J, J], axis=1 if target is None else 0)
    return J
