"""Optimizers: update a list of parameter arrays in place from their gradients.

Each optimizer is one step of ``fastbp.kernels.registry.STEPS``: its hyperparameters are
attributes of the registry's names (PyTorch's names and defaults), its state arrays are
attributes too, one list per state with one array per parameter (or None where the settings
leave the state out: SGD's ``velocity`` without momentum), made once beside the parameters, so a
step allocates no arrays.  ``lr`` is a plain attribute: learning-rate schedules change it between
steps.  ``weight_decay`` is one L2 coefficient per parameter (0 for biases): the step uses
``grad + weight_decay * param``.  The arrays are trusted (made by the network), so a step calls
the active backend directly (``fastbp.kernels.ops().step_update``), skipping the public kernels'
checks; the compiled training engine runs the same step (see ``describe``).

A new optimizer is a registry row, its C step in _formulas.h, its NumPy twin in
fastbp/kernels/_reference.py and a class here naming its step.
"""
import math

import numpy as np

from fastbp.kernels import ops, registry
from fastbp.kernels._checks import hyperparameter

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "OPTIMIZERS"]


def _decays(params, weight_decay):
    if np.ndim(weight_decay) == 0:
        decays = [float(weight_decay)] * len(params)
    elif len(weight_decay) != len(params):
        raise ValueError(f"{len(weight_decay)} weight decays for {len(params)} parameters")
    else:
        decays = [float(w) for w in weight_decay]
    if not all(math.isfinite(w) and w >= 0 for w in decays):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay}")
    return decays


class Optimizer:
    """The optimizer of one registry step (``step_name``), its hyperparameters checked against the
    registry's domains and kept as attributes.

    Parameters
    ----------
    params : list of float32 or float64 arrays
        Updated in place by ``step``; C-contiguous and writeable.
    weight_decay : float >= 0 or sequence of them (one per parameter), default 0
    **hyper
        The step's other hyperparameters by their registry names (defaults: the registry's).

    Raises
    ------
    ValueError
        A hyperparameter outside its domain, or a weight-decay list of the wrong length.
    TypeError
        An unknown hyperparameter.
    """

    step_name = None  # a key of fastbp.kernels.registry.STEPS, set by each subclass

    def __init__(self, params, weight_decay=0.0, **hyper):
        entry = registry.STEPS[self.step_name]
        names = [h.name for h in entry.hyper if h.name != "weight_decay"]
        unknown = set(hyper) - set(names)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown hyperparameters {sorted(unknown)}")
        self.params = list(params)
        for h in entry.hyper:
            if h.name != "weight_decay":
                setattr(self, h.name, hyperparameter(h, hyper.get(h.name, h.default)))
        self.weight_decay = _decays(self.params, weight_decay)
        for name, wanted_by in entry.state.items():
            kept = wanted_by is None or getattr(self, wanted_by)
            setattr(self, name, [np.zeros_like(p) for p in self.params] if kept else None)
        self.t = 0

    def state_arrays(self):
        """{state name: one array per parameter, or None for each where the settings now leave the
        state out}, in the registry's order: what a step reads and writes.

        Raises
        ------
        ValueError
            When a setting changed after construction asks for a state this optimizer never made
            (``centered=True`` set on an RMSprop made without it).
        """
        n, arrays = len(self.params), {}
        for name, wanted_by in registry.STEPS[self.step_name].state.items():
            kept = getattr(self, name)
            if wanted_by is not None and not getattr(self, wanted_by):
                kept = None
            elif kept is None:
                raise ValueError(f"{type(self).__name__} has no {name} arrays, which its settings "
                                 f"need ({wanted_by}); make a new optimizer")
            arrays[name] = kept if kept is not None else [None] * n  # the lists themselves
        return arrays

    def describe(self):
        """The step as the compiled engine runs it (fastbp.engine takes no optimizer types):
        (the registry step's name, ``state_arrays()``); the hyperparameters are this object's
        attributes of the registry's names.  None for a subclass that overrides ``step`` (its
        step may differ)."""
        if type(self).step is not Optimizer.step:
            return None
        return self.step_name, self.state_arrays()

    def step(self, grads):
        """Update every parameter in place from its gradient (a list in ``params`` order)."""
        self.t += 1
        entry = registry.STEPS[self.step_name]
        update = ops().step_update
        states = list(zip(*self.state_arrays().values()))
        hyper = [getattr(self, h.name, None) for h in entry.hyper]
        decay = [h.name for h in entry.hyper].index("weight_decay")
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            hyper[decay] = self.weight_decay[i]
            update(self.step_name, param, grad, states[i], tuple(hyper), self.t)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (classical or Nesterov), in
    scikit-learn's velocity form: ``v = momentum v - lr g``, ``p += v`` (Nesterov: ``p +=
    momentum v - lr g``), ``g = grad + weight_decay p``.  State: ``velocity`` (momentum > 0)."""

    step_name = "sgd"

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, weight_decay, lr=lr, momentum=momentum, nesterov=nesterov)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015, "Adam: A Method for Stochastic
    Optimization"), ``torch.optim.Adam``'s defaults.  State: ``m``, ``v`` (the moment
    estimates)."""

    step_name = "adam"

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, weight_decay, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


class RMSprop(Optimizer):
    """RMSprop with PyTorch's semantics (``torch.optim.RMSprop``, same names and defaults): the
    step divides the gradient by the root of a running mean of its square (``alpha`` its
    smoothing constant, ``eps`` added to the root); ``centered`` subtracts the square of the
    running mean of the gradient first; ``momentum`` > 0 keeps a buffer of the divided steps.
    State: ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` (momentum > 0)."""

    step_name = "rmsprop"

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, weight_decay, lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                         centered=centered)


OPTIMIZERS = {cls.step_name: cls for cls in (SGD, Adam, RMSprop)}  # by registry step name
