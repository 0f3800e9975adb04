"""Gradient check: backprop's gradients against central finite differences, in float64.

For every weight matrix W^l and bias b^l of the network, the backprop gradient g (from the
``backward`` pass the training uses, on the active backend) is compared with

    n_j = (L(p_j + h) - L(p_j - h)) / (2 h)          for every entry p_j (h = ``eps``)

where L is the network's training objective on (X, y): the mean data loss, plus any penalty
layer's term (a sparse code, the VAE's KL); the L2 term is left out (its gradient is analytic).
The error of one parameter array is the norm-wise relative error ||g - n|| / max(||g||, ||n||)
(entry-wise ratios blow up on entries whose gradient is ~0, where finite differences are all
round-off), and :func:`gradcheck` returns the worst over all arrays.  With double precision and
the default ``eps`` a correct backprop gives ~1e-9 or less; a wrong one gives ~1e-2 or more.

The check runs on a float64 deep copy of the network (the network itself is left alone), with any
kind of layer.  Random layers (dropout, the VAE's sampling) are kept on, with the same draws for
every evaluation (each layer's ``rng`` is reset to one state before each forward), so the check
covers them too.  Kinks (relu, leaky_relu) are harmless unless a pre-activation lies within
``eps`` of 0, which random data makes unlikely.
"""
import copy

import numpy as np

from fastbp.kernels._checks import LOSSES
from fastbp.nn import Dense, Sequential, _as_input, _as_target

__all__ = ["gradcheck"]


def _float64_copy(network):
    """A deep copy of the network with every parameter and gradient in float64 (any layer kind:
    custom layers declare their arrays in ``param_names``/``grad_names``)."""
    net = copy.deepcopy(network)
    for layer in net.layers:
        for name in (*layer.param_names, *layer.grad_names):
            setattr(layer, name, np.ascontiguousarray(getattr(layer, name), dtype=np.float64))
        layer._reset_cache()
    return net


def _model_network(model, X, y):
    """(network, X, target) for a fitted estimator or a Sequential."""
    if isinstance(model, Sequential):
        if y is None:
            raise ValueError("gradcheck of a Sequential needs the target y")
        return model, X, y
    network = getattr(model, "_network", None)
    if network is None:
        from fastbp.models._validation import check_is_fitted
        check_is_fitted(model)
        raise TypeError(f"gradcheck needs a fitted fastbp estimator or a Sequential, got {model!r}")
    if getattr(model, "loss_", None) not in LOSSES:
        raise TypeError(f"gradcheck needs a model trained on one loss; {type(model).__name__} "
                        f"trains with {getattr(model, 'loss_', None)!r}")
    from fastbp.models._validation import check_data
    X = check_data(model, X, np.float64, reset=False)
    Y = model._encode_like(X if y is None else y, X.shape[0], np.float64, model._fitted_target())
    return network, X, Y


def _param_names(net):
    """The name of every parameter in ``params()`` order: W1, b1, W2, ... for the Dense layers
    (numbered among them), ``<Class><position>.<name>`` for any other layer's (e.g. Affine2.gamma)."""
    names, n_dense = [], 0
    for position, layer in enumerate(net.layers, 1):
        if isinstance(layer, Dense):
            n_dense += 1
            names += [f"{name}{n_dense}" for name in layer.param_names]
        else:
            names += [f"{type(layer).__name__}{position}.{name}" for name in layer.param_names]
    return names


def gradcheck(model, X, y=None, loss=None, eps=1e-6, max_entries=None, random_state=0,
              return_details=False):
    """Worst norm-wise relative error between backprop and central-difference gradients.

    The check runs on a float64 copy of the network (see the module docstring); keep X to a few
    rows.

    Parameters
    ----------
    model : fitted fastbp estimator or fastbp.nn.Sequential
        ``MLPClassifier``/``MLPRegressor`` (its loss and target encoding are used), a model of X
        alone such as ``Autoencoder`` or ``VAE`` (y None: the target is X), or a Sequential.
    X : array-like of shape (n_samples, n_features)
        The rows the objective is evaluated on.
    y : array-like or None, default=None
        The targets, as the estimator's ``fit`` takes them (for a Sequential: as
        ``fastbp.kernels.loss`` takes them; required).
    loss : str or None, default=None
        For a Sequential: one of ``fastbp.kernels.LOSSES`` (None: 'squared_error'); an
        estimator's own loss otherwise.
    eps : float, default=1e-6
        The finite-difference step h.
    max_entries : int or None, default=None
        Check at most that many randomly chosen entries per parameter array (None: all).
    random_state : int or None, default=0
        Seed of the choice of entries.
    return_details : bool, default=False
        Also return the error of every parameter array.

    Returns
    -------
    float
        The worst error over all parameter arrays; with ``return_details`` the pair
        (worst, {"W1": error, "b1": error, ...}), one entry per parameter array, custom layers'
        included (``Affine2.gamma``).

    Raises
    ------
    ValueError
        For X with no row or of the wrong width, bad targets, or a Sequential without y.
    TypeError
        For anything other than a fitted fastbp estimator trained on one loss, or a Sequential.
    NotFittedError
        For an estimator before ``fit``.
    """
    network, X, Y = _model_network(model, X, y)
    if loss is None:
        loss = getattr(model, "loss_", "squared_error")
    net = _float64_copy(network)
    X = _as_input(X, np.float64, net.n_inputs)
    Y = _as_target(loss, Y, np.float64, X.shape[0], net.n_outputs)
    if X.shape[0] == 0:
        raise ValueError("gradcheck needs at least one row of X")
    random_layers = [layer for layer in net.layers if hasattr(layer, "rng")]
    states = [layer.rng.bit_generator.state for layer in random_layers]

    def reset_draws():
        for layer, state in zip(random_layers, states):
            layer.rng.bit_generator.state = state

    def value():
        reset_draws()
        return net._objective(loss, X, Y, True)[0]

    reset_draws()
    net._loss_and_grad(loss, X, Y, True)
    analytic = [g.copy() for g in net.grads()]
    names = _param_names(net)
    rng = np.random.default_rng(random_state)
    details = {}
    for name, param, grad in zip(names, net.params(), analytic):
        flat, gflat = param.reshape(-1), grad.reshape(-1)
        entries = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            entries = np.sort(rng.choice(flat.size, max_entries, replace=False))
        numeric = np.empty(entries.size)
        for k, j in enumerate(entries):
            original = flat[j]
            flat[j] = original + eps
            up = value()
            flat[j] = original - eps
            down = value()
            flat[j] = original
            numeric[k] = (up - down) / (2 * eps)
        backprop = gflat[entries]
        scale = max(np.linalg.norm(backprop), np.linalg.norm(numeric))
        difference = np.linalg.norm(backprop - numeric)
        details[name] = float(difference / scale) if scale > 0 else float(difference)
    worst = max(details.values())
    return (worst, details) if return_details else worst
