"""Optimizers: update a list of parameter arrays in place from their gradients.

They own their state (velocities; Adam's moments and step count; RMSprop's running means) as
arrays made once, beside the parameters, so a step allocates nothing.  ``lr`` is a plain
attribute: learning-rate schedules change it between steps.  ``weight_decay`` is one L2 coefficient per parameter (0 for biases):
the step uses ``grad + weight_decay * param``.  The arrays are trusted (made by the network), so
the steps call the active backend directly, skipping the public kernels' checks.
"""
import numpy as np

from fastbp.kernels import ops


def _decays(params, weight_decay):
    if np.ndim(weight_decay) == 0:
        return [float(weight_decay)] * len(params)
    if len(weight_decay) != len(params):
        raise ValueError(f"{len(weight_decay)} weight decays for {len(params)} parameters")
    return [float(w) for w in weight_decay]


class SGD:
    """Stochastic gradient descent with optional momentum (classical or Nesterov)."""

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        if lr < 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr >= 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        self.params = list(params)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = _decays(self.params, weight_decay)
        self.velocities = [np.zeros_like(p) for p in self.params] if momentum > 0 else None
        self.t = 0

    def describe(self):
        """The step as the compiled engine runs it (fastbp.engine takes no optimizer types):
        (kind -- a ``fastbp.kernels.registry.STEPS`` name, whose hyperparameters are attributes
        of the same names --, per parameter the state arrays s1 (velocity or None) and s2 (None));
        None for a subclass, whose step may differ."""
        if type(self) is not SGD:
            return None
        kind = "sgd" if self.momentum == 0 else ("nesterov" if self.nesterov else "momentum")
        n = len(self.params)
        s1 = list(self.velocities) if self.velocities is not None else [None] * n
        return kind, s1, [None] * n

    def step(self, grads):
        update = ops().sgd_update
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            velocity = self.velocities[i] if self.velocities is not None else None
            update(param, grad, velocity, self.lr, self.momentum, self.nesterov,
                   self.weight_decay[i])
        self.t += 1


class Adam:
    """Adam with bias correction (Kingma & Ba, 2015)."""

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        if lr < 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1) or eps <= 0:
            raise ValueError("need lr >= 0, 0 <= beta1, beta2 < 1 and eps > 0")
        self.params = list(params)
        self.lr = float(lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decay = _decays(self.params, weight_decay)
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def describe(self):
        """The step as the compiled engine runs it: ("adam", m, v); None for a subclass (see
        SGD.describe)."""
        if type(self) is not Adam:
            return None
        return "adam", list(self.m), list(self.v)

    def step(self, grads):
        self.t += 1
        update = ops().adam_update
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            update(param, grad, self.m[i], self.v[i], self.t, self.lr, self.beta1, self.beta2,
                   self.eps, self.weight_decay[i])


class RMSprop:
    """RMSprop with PyTorch's semantics (``torch.optim.RMSprop``, same names and defaults): the
    step divides the gradient by the root of a running mean of its square (``alpha`` its
    smoothing constant, ``eps`` added to the root); ``centered`` subtracts the square of the
    running mean of the gradient first; ``momentum`` > 0 keeps a buffer of the divided steps.
    State arrays: ``square_avg``, ``grad_avg`` (centered, else None), ``momentum_buffer``
    (momentum > 0, else None), each a list with one array per parameter.  Not in the compiled
    engine (its ``describe()`` is None): networks train with it layer by layer."""

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        if lr < 0 or not 0 <= alpha < 1 or eps <= 0 or momentum < 0:
            raise ValueError(f"need lr >= 0, 0 <= alpha < 1, eps > 0 and momentum >= 0, got lr={lr}, "
                             f"alpha={alpha}, eps={eps}, momentum={momentum}")
        self.params = list(params)
        self.lr = float(lr)
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.centered = bool(centered)
        self.weight_decay = _decays(self.params, weight_decay)
        self.square_avg = [np.zeros_like(p) for p in self.params]
        self.grad_avg = [np.zeros_like(p) for p in self.params] if self.centered else None
        self.momentum_buffer = ([np.zeros_like(p) for p in self.params] if self.momentum > 0
                                else None)
        self.t = 0

    def describe(self):
        """None: the compiled engine has no RMSprop step."""
        return None

    def step(self, grads):
        update = ops().rmsprop_update
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            update(param, grad, self.square_avg[i],
                   self.grad_avg[i] if self.grad_avg is not None else None,
                   self.momentum_buffer[i] if self.momentum_buffer is not None else None,
                   self.lr, self.alpha, self.eps, self.weight_decay[i], self.momentum)
        self.t += 1
