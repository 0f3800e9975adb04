"""Export for serving: ONNX graphs of fitted estimators, and scikit-learn MLPs with the same weights.

Each estimator declares, in its ``_exports()``, what its inference methods compute, as
:class:`Path` objects: a stack of its own dense layers (W, b, activation, alpha), with the
output function (sigmoid or softmax probabilities) folded into the last activation, and what is
read off the end (the VAE's mean code: the first ``n_components`` units; a binary classifier's
[1 - p, p]; class labels).  Two things are built from a path, each here once:

- :func:`to_onnx`: an ONNX graph (Gemm per layer, then the activation as ONNX operators, from
  ``_ONNX_ACTIVATIONS``, a table keyed like ``fastbp.kernels.registry.ACTIVATIONS``), computing in
  the model's dtype (float32 or float64), which ONNX Runtime runs in either;
- :func:`fastbp.jacobian`, which differentiates the same path (:mod:`fastbp.models.jacobian`).

:func:`to_sklearn` copies a fitted MLP into scikit-learn's ``MLPClassifier``/``MLPRegressor`` when
scikit-learn can represent it.  ``onnx`` (the ``onnx`` extra) and scikit-learn are imported only
when asked for.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np

from fastbp._version import __version__
from fastbp.kernels import registry
from fastbp.models._validation import check_is_fitted
from fastbp.nn import activation_name

__all__ = ["Path", "LayerStep", "layer_steps", "exported_path", "to_onnx", "onnx_graph",
           "to_sklearn"]

OPSET = 17        # ONNX operator set of the graphs (ONNX Runtime >= 1.14 runs it)
IR_VERSION = 8    # the ONNX IR version of that opset


@dataclass(frozen=True)
class LayerStep:
    """One dense layer of a path: A = activation(X W + b), keeping the first ``n_out`` units
    (None: all).  ``W`` and ``b`` are the estimator's own arrays (``coefs_[i]``,
    ``intercepts_[i]``)."""

    W: np.ndarray
    b: np.ndarray
    activation: str
    alpha: float | None = None
    n_out: int | None = None


@dataclass(frozen=True)
class Path:
    """What one inference method computes from its input (``input``, a 2-D array).

    ``layers``: the :class:`LayerStep` s in order; ``output``: the name of the result (the graph
    output); ``two_class``: the one sigmoid unit p is returned as the two columns [1 - p, p]
    (a binary classifier's ``predict_proba``); ``ravel``: a single output column is returned 1-D;
    ``classes``: a classifier's labels -- the graph then also outputs ``"label"``, what
    ``predict`` returns, read off the last layer's logits (``classes[argmax]``, or
    ``classes[logit > 0]`` for two classes, or the 0/1 matrix of logits > 0 with ``multilabel``).
    """

    layers: tuple
    output: str
    input: str = "X"
    two_class: bool = False
    ravel: bool = False
    classes: np.ndarray | None = None
    multilabel: bool = False

    @property
    def n_inputs(self):
        return self.layers[0].W.shape[0]


def layer_steps(network, output_activation=None):
    """The Dense layers of a ``fastbp.nn.Sequential`` as :class:`LayerStep` s (dropout and penalty
    layers are the identity at inference); ``output_activation`` replaces the last layer's
    identity (the output function the loss applies: 'sigmoid' or 'softmax')."""
    dense = network.dense_layers
    steps = [LayerStep(layer.W, layer.b, layer.activation, layer.alpha) for layer in dense]
    if output_activation is not None:
        if dense[-1].activation != "identity":
            raise RuntimeError(f"an output function on a {dense[-1].activation} output layer")
        steps[-1] = LayerStep(dense[-1].W, dense[-1].b, output_activation)
    return tuple(steps)


def exported_path(estimator, method=None):
    """(method, its :class:`Path`) for ``estimator``'s ``method`` (None: its first, the main one).

    Raises NotFittedError before ``fit`` and ValueError for a method the estimator does not
    export."""
    check_is_fitted(estimator)
    paths = estimator._exports()
    if method is None:
        method = next(iter(paths))
    if method not in paths:
        raise ValueError(f"{type(estimator).__name__} exports the methods {list(paths)}, "
                         f"not {method!r}")
    return method, paths[method]


# ------------------------------------------------------------------------------------ ONNX graphs
class _Graph:
    """Nodes and constants of an ONNX graph computing in ``dtype``; every intermediate is named
    t<k>, every constant c<k>."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes, self.constants = [], []

    def const(self, value, dtype=None):
        array = np.asarray(value, self.dtype if dtype is None else dtype)
        name = f"c{len(self.constants)}"
        self.constants.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, *inputs, **attributes):
        name = f"t{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name],
                                                     name=f"{op_type}_{len(self.nodes)}",
                                                     **attributes))
        return name


def _log1p(g, t):
    """log(1 + t) to full relative precision for t >= 0 (Goldberg: log(u) t / (u - 1), u = 1 + t)."""
    u = g.op("Add", t, g.const(1))
    ratio = g.op("Mul", g.op("Log", u), g.op("Div", t, g.op("Sub", u, g.const(1))))
    return g.op("Where", g.op("Equal", u, g.const(1)), t, ratio)


def _expm1(g, x):
    """exp(x) - 1 for x <= 0, to full relative precision near 0 (Kahan: (u - 1) x / log u)."""
    u = g.op("Exp", x)
    u1 = g.op("Sub", u, g.const(1))
    near = g.op("Where", g.op("Equal", u, g.const(1)), x,
                g.op("Mul", u1, g.op("Div", x, g.op("Log", u))))
    return g.op("Where", g.op("Less", x, g.const(-1)), u1, near)


ERF_RANGE = 6.0     # erf(x) = sign(x) within 2.2e-17 beyond; erf is Chebyshev-fitted on [0, 6]
ERF_DEGREE = 40     # the fit's degree: max error < 1e-14 (tests/test_export.py)


@functools.cache
def erf_chebyshev():
    """Chebyshev coefficients of erf(x) on [0, ERF_RANGE] in s = 2x / ERF_RANGE - 1: the least
    squares fit to SciPy's erf at 4000 Chebyshev points."""
    from numpy.polynomial import chebyshev
    from scipy import special
    s = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)
    return chebyshev.chebfit(s, special.erf((s + 1) * ERF_RANGE / 2), ERF_DEGREE)


def _erf(g, x):
    """erf(x): ONNX's Erf in float32; in float64, where ONNX Runtime has no Erf, the Chebyshev
    fit of ``erf_chebyshev`` evaluated by Clenshaw's recurrence."""
    if g.dtype == np.float32:
        return g.op("Erf", x)
    a = g.op("Min", g.op("Abs", x), g.const(ERF_RANGE))
    s = g.op("Sub", g.op("Mul", a, g.const(2 / ERF_RANGE)), g.const(1))
    two_s = g.op("Mul", s, g.const(2))
    c = erf_chebyshev()
    b1, b2 = g.const(c[-1]), g.const(0)
    for coefficient in c[-2:0:-1]:  # b_k = 2 s b_(k+1) - b_(k+2) + c_k
        b1, b2 = g.op("Add", g.op("Sub", g.op("Mul", two_s, b1), b2), g.const(coefficient)), b1
    value = g.op("Add", g.op("Sub", g.op("Mul", s, b1), b2), g.const(c[0]))
    value = g.op("Where", g.op("Less", a, g.const(ERF_RANGE)), value, g.const(1))
    return g.op("Mul", g.op("Sign", x), value)


def _gelu(g, z):
    """z Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2 (the exact GELU, as the kernels compute it)."""
    erf = _erf(g, g.op("Mul", z, g.const(math.sqrt(0.5))))
    return g.op("Mul", z, g.op("Mul", g.op("Add", erf, g.const(1)), g.const(0.5)))


# activation name -> its ONNX form (graph, Z, alpha) -> A: the operators ONNX Runtime runs in float32
# and float64 alike (it has no float64 LeakyRelu, Softplus, Elu or Erf).
_ONNX_ACTIVATIONS = {
    "identity": lambda g, z, alpha: z,
    "sigmoid": lambda g, z, alpha: g.op("Sigmoid", z),
    "tanh": lambda g, z, alpha: g.op("Tanh", z),
    "relu": lambda g, z, alpha: g.op("Relu", z),
    "leaky_relu": lambda g, z, alpha: g.op("Where", g.op("Less", z, g.const(0)),
                                           g.op("Mul", z, g.const(alpha)), z),
    # max(z, 0) + log1p(exp(-|z|)): no overflow
    "softplus": lambda g, z, alpha: g.op("Add", g.op("Relu", z),
                                         _log1p(g, g.op("Exp", g.op("Neg", g.op("Abs", z))))),
    "elu": lambda g, z, alpha: g.op("Where", g.op("Less", z, g.const(0)),
                                    g.op("Mul", g.const(alpha),
                                         _expm1(g, g.op("Min", z, g.const(0)))), z),
    "gelu": lambda g, z, alpha: _gelu(g, z),
    "silu": lambda g, z, alpha: g.op("Mul", z, g.op("Sigmoid", z)),
    "softmax": lambda g, z, alpha: g.op("Softmax", z, axis=-1),
}


def _onnx_activation(name):
    if name not in _ONNX_ACTIVATIONS:  # a new entry of the registry without its ONNX form
        raise ValueError(f"activation {name!r} has no ONNX form; known: {list(_ONNX_ACTIVATIONS)} "
                         f"(fastbp.kernels.registry has {list(registry.ACTIVATIONS)})")
    return _ONNX_ACTIVATIONS[name]


def _class_array(classes):
    """Class labels as an array ONNX takes: numbers as they are, strings as a string tensor."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "OUS":
        return np.array([str(c) for c in classes], dtype=object)
    return classes


def to_onnx(estimator, method=None):
    """The ONNX graph (``onnx.ModelProto``) of ``estimator``'s ``method``; see
    :meth:`fastbp.MLPClassifier.to_onnx`."""
    method, path = exported_path(estimator, method)
    return onnx_graph(path, f"{type(estimator).__name__}.{method}")


def onnx_graph(path, name):
    """The ONNX model computing ``path`` (a :class:`Path`), its graph called ``name``."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (onnx.numpy_helper is a submodule)
    except ImportError as error:
        raise ImportError("to_onnx needs the onnx package: pip install 'fastbp[onnx]'") from error
    dtype = path.layers[0].W.dtype
    g = _Graph(onnx, dtype)
    helper, TensorProto = onnx.helper, onnx.TensorProto
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    x = path.input
    for step in path.layers:
        W, b = step.W[:, :step.n_out], step.b[:step.n_out]
        z = g.op("Gemm", x, g.const(W), g.const(b))
        x = _onnx_activation(step.activation)(g, z, step.alpha)
    k = path.layers[-1].W[:, :path.layers[-1].n_out].shape[1]
    if path.two_class:
        x = g.op("Concat", g.op("Sub", g.const(1), x), x, axis=1)
        k = 2
    if path.ravel:
        x = g.op("Reshape", x, g.const([-1], np.int64))
    outputs = [(x, path.output, elem, ["N"] if path.ravel else ["N", k])]
    if path.classes is not None:
        positive = g.op("Cast", g.op("Greater", z, g.const(0)), to=TensorProto.INT64)
        if path.multilabel:
            outputs.insert(0, (positive, "label", TensorProto.INT64, ["N", k]))
        else:
            classes = _class_array(path.classes)
            index = (g.op("Reshape", positive, g.const([-1], np.int64)) if path.two_class
                     else g.op("ArgMax", z, axis=1, keepdims=0))
            label = g.op("Gather", g.const(classes, classes.dtype), index, axis=0)
            outputs.insert(0, (label, "label", helper.np_dtype_to_tensor_dtype(classes.dtype)
                               if classes.dtype != object else TensorProto.STRING, ["N"]))
    for value, name, _, _ in outputs:  # the graph's outputs by their public names
        g.nodes.append(helper.make_node("Identity", [value], [name], name=f"output_{name}"))
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info(path.input, elem, ["N", path.n_inputs])],
        [helper.make_tensor_value_info(name, kind, shape) for _, name, kind, shape in outputs],
        g.constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION, producer_name="fastbp",
                             producer_version=__version__)


# ------------------------------------------------------------------------------------ scikit-learn
# fastbp activation -> scikit-learn's name, for the activations scikit-learn's MLPs have
_SKLEARN_ACTIVATIONS = {"identity": "identity", "sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}


def to_sklearn(estimator):
    """scikit-learn's ``MLPClassifier``/``MLPRegressor`` with ``estimator``'s weights; see
    :meth:`fastbp.MLPClassifier.to_sklearn`."""
    from sklearn import neural_network
    from sklearn.preprocessing import LabelBinarizer
    check_is_fitted(estimator)
    name = type(estimator).__name__
    activation = activation_name(estimator.activation)
    if activation not in _SKLEARN_ACTIVATIONS:
        raise ValueError(f"scikit-learn's {name} has no {activation!r} activation (it has "
                         f"{sorted(_SKLEARN_ACTIVATIONS.values())}): this model cannot be "
                         "represented")
    cls = getattr(neural_network, name)
    params = estimator.get_params()
    model = cls(**{key: params[key] for key in set(cls().get_params()) & set(params)})
    model.set_params(activation=_SKLEARN_ACTIVATIONS[activation])
    model.coefs_ = [W.copy() for W in estimator.coefs_]
    model.intercepts_ = [b.copy() for b in estimator.intercepts_]
    for attribute in ("n_features_in_", "feature_names_in_", "n_outputs_", "n_layers_",
                      "out_activation_", "n_iter_", "t_", "loss_curve_", "best_loss_",
                      "validation_scores_", "best_validation_score_"):
        if hasattr(estimator, attribute):
            setattr(model, attribute, getattr(estimator, attribute))
    model.loss_ = estimator.loss_curve_[-1]  # scikit-learn's loss_ is the last loss value
    if name == "MLPClassifier":
        classes = estimator.classes_
        labels = np.eye(len(classes), dtype=int) if estimator._kind == "multilabel" else classes
        model._label_binarizer = LabelBinarizer().fit(labels)
        model.classes_ = model._label_binarizer.classes_
    return model
