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
from fastbp.kernels._checks import FLOAT_DTYPES, hyperparameter

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

    The base of ``SGD``, ``Adam`` and ``RMSprop``; a subclass names its step by ``step_name``.

    Each hyperparameter is an attribute of its registry name (``lr`` and the others: float, or
    bool for a "bool" domain), read at every step (and by the compiled engine before every
    epoch), so schedules may change it between steps; each state array is an attribute of its
    registry name: a list with one array of its parameter's shape and dtype per parameter
    (zeros at construction), or None where the settings at construction leave the state out.

    Parameters
    ----------
    params : list of ndarray of float32 or float64
        The parameters, updated in place by ``step``; each C-contiguous and writeable (the
        step trusts them: fastbp's networks make them so).
    weight_decay : float >= 0 or sequence of float >= 0, default 0.0
        The L2 coefficient, one for all parameters or one per parameter (``params`` order): the
        step uses ``grad + weight_decay * param``.
    **hyper
        The step's other hyperparameters by their registry names (defaults: the registry's,
        ``fastbp.kernels.registry.STEPS[step_name].hyper``).

    Attributes
    ----------
    step_name : str
        Class attribute: the key of the step in ``fastbp.kernels.registry.STEPS``.
    params : list of ndarray
        The parameters, as given.
    weight_decay : list of float
        One L2 coefficient per parameter.
    t : int
        The steps taken so far (0 at construction; ``step`` adds one first, so an update's
        count is t >= 1).

    Raises
    ------
    ValueError
        A hyperparameter outside its domain (an eps-like one below the smallest normal number
        of the narrowest parameter dtype: it would vanish in the divisor), a weight decay that is
        negative or not finite, or a weight-decay list of the wrong length.
    TypeError
        An unknown hyperparameter, or one that is no real number.
    """

    step_name = None  # a key of fastbp.kernels.registry.STEPS, set by each subclass

    def __init__(self, params, weight_decay=0.0, **hyper):
        entry = registry.STEPS[self.step_name]
        names = [h.name for h in entry.hyper if h.name != "weight_decay"]
        unknown = set(hyper) - set(names)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown hyperparameters {sorted(unknown)}")
        self.params = list(params)
        # the eps-like bounds ("tiny") are the narrowest parameter dtype's, as the kernels' checks
        narrowest = min((p.dtype for p in self.params if getattr(p, "dtype", None) in FLOAT_DTYPES),
                        key=lambda dtype: dtype.itemsize, default=None)
        self._narrowest = narrowest
        for h in entry.hyper:
            if h.name != "weight_decay":
                setattr(self, h.name, hyperparameter(h, hyper.get(h.name, h.default), narrowest))
        self.weight_decay = _decays(self.params, weight_decay)
        self._checked = None  # the last hyperparameters() answer: (attribute values, checked)
        for name, wanted_by in entry.state.items():
            kept = wanted_by is None or getattr(self, wanted_by)
            setattr(self, name, [np.zeros_like(p) for p in self.params] if kept else None)
        self.t = 0

    def state_arrays(self):
        """The state arrays a step reads and writes, under the current settings.

        Returns
        -------
        dict of str to list
            {state name: one array per parameter (the attribute's own list), or a list of None
            where the settings now leave the state out}, in the registry's order.

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

    def hyperparameters(self):
        """The step's hyperparameters as the attributes hold them now, checked again (a schedule,
        or a user, may set them between steps).

        Returns
        -------
        tuple of float
            In the registry's order, ``weight_decay``'s slot 0.0 (one decay per parameter:
            ``weight_decay``).

        Raises
        ------
        ValueError, TypeError
            A hyperparameter outside its domain, or a ``weight_decay`` list of another length
            than ``params``.
        """
        entry = registry.STEPS[self.step_name]
        checked = self._checked
        if checked is None or any(h.name != "weight_decay" and getattr(self, h.name) is not value
                                  for h, value in zip(entry.hyper, checked[0])):
            now = tuple(0.0 if h.name == "weight_decay" else getattr(self, h.name)
                        for h in entry.hyper)
            checked = self._checked = (now, tuple(
                0.0 if h.name == "weight_decay" else
                hyperparameter(h, value, getattr(self, "_narrowest", None))
                for h, value in zip(entry.hyper, now)))
        if len(self.weight_decay) != len(self.params):
            raise ValueError(f"weight_decay has {len(self.weight_decay)} entries for "
                             f"{len(self.params)} parameters")
        return checked[1]

    def describe(self):
        """The step as the compiled engine runs it (fastbp.engine takes no optimizer types).

        The hyperparameters are this object's attributes of the registry's names.

        Returns
        -------
        tuple of (str, dict) or None
            (the registry step's name, ``state_arrays()``); None for a subclass that overrides
            ``step`` (its step may differ): such an optimizer trains layer by layer.

        Raises
        ------
        ValueError
            As ``state_arrays``.
        """
        if type(self).step is not Optimizer.step:
            return None
        return self.step_name, self.state_arrays()

    def step(self, grads, skip=()):
        """Update every parameter in place from its gradient, and the state arrays.

        Advances ``t`` by one, then runs the registry step of each parameter on the active
        backend (``fastbp.kernels.ops().step_update``: no input checks, the arrays are trusted).

        Parameters
        ----------
        grads : list of ndarray
            One gradient per parameter, in ``params`` order, each of its parameter's shape and
            dtype (without the weight-decay term).
        skip : collection of int, default=()
            Positions of parameters whose step ``t + 1`` was taken already (by the compiled
            engine's passes: ``fastbp.nn.Sequential.engine_stepped``); their entries of
            ``grads`` are not read.

        Raises
        ------
        ValueError
            As ``state_arrays``.
        """
        self.t += 1
        entry = registry.STEPS[self.step_name]
        update = ops().step_update
        states = list(zip(*self.state_arrays().values()))
        hyper = list(self.hyperparameters())
        decay = [h.name for h in entry.hyper].index("weight_decay")
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            if i in skip:
                continue
            hyper[decay] = self.weight_decay[i]
            update(self.step_name, param, grad, states[i], tuple(hyper), self.t)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (classical or Nesterov).

    In scikit-learn's velocity form: ``v = momentum v - lr g``, ``p += v`` (Nesterov: ``p +=
    momentum v - lr g``), ``g = grad + weight_decay p``; without momentum the lecture's
    ``p -= lr g`` ("CS771 Deep Learning III", slide 14).  Sources: ``fastbp.kernels.sgd_update``.

    Parameters
    ----------
    params : list of ndarray of float32 or float64
        The parameters, updated in place; each C-contiguous and writeable.
    lr : float >= 0, default 0.01
        The learning rate (step length).
    momentum : float >= 0, default 0.0
        The velocity's decay per step; 0: plain SGD, no velocity kept.
    nesterov : bool, default False
        Nesterov's momentum (the step looks ahead along the new velocity).
    weight_decay : float >= 0 or sequence of float >= 0, default 0.0
        The L2 coefficient, one for all or one per parameter.

    Attributes
    ----------
    lr, momentum, nesterov, weight_decay, params, t
        As given (``weight_decay`` a list) and the step count; see ``Optimizer``.
    velocity : list of ndarray or None
        One velocity per parameter (zeros at construction) when momentum > 0, else None.

    Raises
    ------
    ValueError
        A hyperparameter outside its domain (lr or momentum negative or not finite), or a bad
        weight decay (see ``Optimizer``).
    """

    step_name = "sgd"

    @property
    def velocities(self):
        """The ``velocity`` state under its earlier name (one array per parameter, or None)."""
        return self.velocity

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, weight_decay, lr=lr, momentum=momentum, nesterov=nesterov)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015, "Adam: A Method for Stochastic
    Optimization", Algorithm 1), ``torch.optim.Adam``'s defaults.  The formula:
    ``fastbp.kernels.adam_update``.

    Parameters
    ----------
    params : list of ndarray of float32 or float64
        The parameters, updated in place; each C-contiguous and writeable.
    lr : float >= 0, default 0.001
        The learning rate (step length).
    beta1 : float in [0, 1), default 0.9
        The decay of the first-moment estimate m per step.
    beta2 : float in [0, 1), default 0.999
        The decay of the second-moment estimate v per step.
    eps : float > 0, default 1e-8
        Added to sqrt(v_hat) in the divisor; at least the smallest normal number of the
        parameters' dtype (1.2e-38 for float32).
    weight_decay : float >= 0 or sequence of float >= 0, default 0.0
        The L2 coefficient, one for all or one per parameter.

    Attributes
    ----------
    lr, beta1, beta2, eps, weight_decay, params, t
        As given (``weight_decay`` a list) and the step count t of the bias correction; see
        ``Optimizer``.
    m, v : list of ndarray
        The first and second moment estimates, one per parameter (zeros at construction).

    Raises
    ------
    ValueError
        A hyperparameter outside its domain, or a bad weight decay (see ``Optimizer``).
    """

    step_name = "adam"

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, weight_decay, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


class RMSprop(Optimizer):
    """RMSprop with PyTorch's semantics (``torch.optim.RMSprop``, same names and defaults).

    The step divides the gradient by the root of a running mean of its square (``alpha`` its
    smoothing constant, ``eps`` added to the root); ``centered`` subtracts the square of the
    running mean of the gradient first; ``momentum`` > 0 keeps a buffer of the divided steps.
    Sources (Tieleman & Hinton's lecture 6.5, Graves 2013 for the centered variant, PyTorch)
    and the formula: ``fastbp.kernels.rmsprop_update``.

    Parameters
    ----------
    params : list of ndarray of float32 or float64
        The parameters, updated in place; each C-contiguous and writeable.
    lr : float >= 0, default 0.01
        The learning rate; 0 leaves the parameters as they are (the state still updates).
    alpha : float in [0, 1), default 0.99
        The smoothing constant of the running means.
    eps : float > 0, default 1e-8
        Added to the root mean square (the divisor); at least the smallest normal number of the
        parameters' dtype (1.2e-38 for float32).
    weight_decay : float >= 0 or sequence of float >= 0, default 0.0
        The L2 coefficient, one for all or one per parameter.
    momentum : float >= 0, default 0.0
        The momentum buffer's decay per step; 0: no buffer.
    centered : bool, default False
        Divide by the root of the estimated variance, ``square_avg - grad_avg**2``.

    Attributes
    ----------
    lr, alpha, eps, weight_decay, momentum, centered, params, t
        As given (``weight_decay`` a list) and the step count; see ``Optimizer``.
    square_avg : list of ndarray
        The running mean of the squared gradient, one per parameter (zeros at construction).
    grad_avg : list of ndarray or None
        The running mean of the gradient when centered, else None.
    momentum_buffer : list of ndarray or None
        The buffer of the divided steps when momentum > 0, else None.

    Raises
    ------
    ValueError
        A hyperparameter outside its domain, or a bad weight decay (see ``Optimizer``).
    """

    step_name = "rmsprop"

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, weight_decay, lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                         centered=centered)


OPTIMIZERS = {cls.step_name: cls for cls in (SGD, Adam, RMSprop)}  # by registry step name
