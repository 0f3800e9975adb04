"""NumPy twins of the compiled kernels: the specification the compiled backend is held to.

Every function here has the same name and signature as its compiled counterpart in
``fastbp.kernels._compiled``.  Both trust their caller (``fastbp.kernels``) to have checked the input:
arrays are C-contiguous, share one float dtype (float32 or float64), have consistent shapes, and
every ``out`` buffer is given, writeable and of the right shape, and overlaps an input only as
``fastbp.kernels._checks.ALIASES`` allows (the very same buffer where a docstring says so; inputs that
an output would overlap otherwise have been copied).  Results go into the ``out`` buffers.

Elementwise work, losses and optimizer steps are computed in float64 (float32 data widened,
results rounded once), from forms that neither overflow nor cancel at any finite input: the
twins are at least as accurate as the compiled kernels.  Matrix products run in the data's
dtype, as the compiled kernels' BLAS calls do.

Notation (the lecture's): a dense layer maps h^(l-1) (n x d, one row per example) to
Z = h^(l-1) W + b (W is d x k, so column j of W is the lecture's weight vector w_j) and
h^l = A = f(Z).  dX, dW, db, dZ, dA are gradients of the loss with respect to X, W, b, Z, A.
"""
import numpy as np
from scipy import special

from fastbp.kernels.registry import STEPS

SQRT_HALF = np.sqrt(0.5)
INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


# ----------------------------------------------------------------------------------- dense layers
def linear_forward(X, W, b, out):
    """out = X @ W + b (b None: no bias)."""
    np.matmul(X, W, out=out)
    if b is not None:
        out += b
    return out


def linear_backward(X, W, dY, dX, dW, db):
    """Gradients of Y = X @ W + b: dX = dY W^T (skipped when dX is None), dW = X^T dY, db = sum_i dY_i."""
    np.matmul(X.T, dY, out=dW)
    np.sum(dY, axis=0, out=db)
    if dX is not None:
        np.matmul(dY, W.T, out=dX)
    return dX, dW, db


def dense_forward(name, X, W, b, Z, A, alpha):
    """Z = X @ W + b and A = f(Z) (A may alias Z when Z is not needed afterwards)."""
    linear_forward(X, W, b, Z)
    activation(name, Z, A, alpha)
    return Z, A


def dense_backward(name, X, W, Z, A, dA, dZ, dX, dW, db, alpha):
    """dZ = f'(Z) * dA (the Jacobian-vector product for softmax), then the linear backward.

    dZ is a workspace that may alias dA.
    """
    activation_grad(name, Z, A, dA, dZ, alpha)
    return linear_backward(X, W, dZ, dX, dW, db)


# ----------------------------------------------------------------------------------- activations
# Elementwise work is done in float64 (a float32 input is widened, the result rounded once into
# ``out``) with forms that neither overflow nor cancel at any finite input: the twin is the
# specification, so it is at least as accurate as the compiled kernels.  Each function returns
# its result, which ``activation``/``activation_grad`` round into ``out`` (so out may alias Z or
# dA: the inputs are read before out is written).
_HUGE = np.finfo(np.float64).max


def _wide(x):
    """``x`` as float64 (a float32 array is widened; a float64 array is returned as it is)."""
    return x.astype(np.float64, copy=False)


def _identity(z, alpha):
    return z


def _sigmoid(z, alpha):
    return special.expit(z)


def _tanh(z, alpha):
    return np.tanh(z)


def _relu(z, alpha):
    return np.maximum(z, 0)


def _leaky_relu(z, alpha):
    return np.where(z < 0, alpha * z, z)


def _softplus(z, alpha):
    """softplus(z) = max(z, 0) + log1p(exp(-|z|)): no overflow, no loss for large |z|."""
    return np.logaddexp(0, z)


def _elu(z, alpha):
    return np.where(z < 0, alpha * special.expm1(np.minimum(z, 0)), z)


def _gelu(z, alpha):
    """Exact GELU: z Phi(z) with Phi(z) = erfc(-z / sqrt 2) / 2, which keeps its relative accuracy
    far into the left tail (1 + erf(...) cancels to 0 there: gelu(-10) = -7.6e-23, not 0)."""
    return z * (0.5 * special.erfc(-SQRT_HALF * z))


def _silu(z, alpha):
    """SiLU (PyTorch's nn.SiLU): z sigmoid(z), with expit's stable sigmoid (no overflow at any z)."""
    return z * special.expit(z)


def _softmax(z, alpha):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    if z.shape[1] == 0:
        return z
    with np.errstate(over="ignore"):  # z - max below -DBL_MAX: exp of it is 0 either way
        e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


_FORWARD = {
    "identity": _identity, "sigmoid": _sigmoid, "tanh": _tanh, "relu": _relu,
    "leaky_relu": _leaky_relu, "softplus": _softplus, "elu": _elu, "gelu": _gelu,
    "silu": _silu, "softmax": _softmax,
}


def activation(name, Z, out, alpha):
    """out = f(Z) elementwise (row-wise for softmax); out may alias Z."""
    np.copyto(out, _FORWARD[name](_wide(Z), alpha), casting="same_kind")
    return out


# Each slope gets z (pre-activation) and a = f(z), both float64, and returns f'(z).  Sigmoid's and
# tanh's come from a (the layers keep only A, in Z's buffer); the others from z, in forms that do
# not cancel (elu's alpha exp(z), not a + alpha, which is 0 in float32 at z = -20).
def _identity_grad(z, a, alpha):
    return 1.0


def _sigmoid_grad(z, a, alpha):
    return a * (1 - a)


def _tanh_grad(z, a, alpha):
    return (1 - a) * (1 + a)


def _relu_grad(z, a, alpha):
    return (z > 0).astype(np.float64)


def _leaky_relu_grad(z, a, alpha):
    return np.where(z > 0, 1.0, alpha)


def _softplus_grad(z, a, alpha):
    return special.expit(z)


def _elu_grad(z, a, alpha):
    """1 for z > 0, else alpha exp(z)."""
    return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0)))


def _gelu_grad(z, a, alpha):
    """d/dz [z Phi(z)] = Phi(z) + z phi(z); phi is 0 (to double precision) beyond |z| = 40."""
    near = np.minimum(np.abs(z), 40.0)
    return 0.5 * special.erfc(-SQRT_HALF * z) + z * (INV_SQRT_2PI * np.exp(-0.5 * near * near))


def _silu_grad(z, a, alpha):
    """d/dz [z s(z)] = s (1 + z (1 - s)), with 1 - s as expit(-z) (1 - s cancels to 0 for large z)."""
    return special.expit(z) * (1 + z * special.expit(-z))


_SLOPES = {
    "identity": _identity_grad, "sigmoid": _sigmoid_grad, "tanh": _tanh_grad,
    "relu": _relu_grad, "leaky_relu": _leaky_relu_grad, "softplus": _softplus_grad,
    "elu": _elu_grad, "gelu": _gelu_grad, "silu": _silu_grad,
}


def _softmax_grad(A, dA):
    """Jacobian-vector product of the softmax: A * (dA - sum_j dA_j A_j), row by row."""
    return A * (dA - np.einsum("ij,ij->i", dA, A)[:, None])


def activation_grad(name, Z, A, dA, out, alpha):
    """out = dL/dZ = f'(Z) * dA given Z, A = f(Z) and dA (for softmax the Jacobian-vector product);
    out may alias dA."""
    if name == "softmax":
        result = _softmax_grad(_wide(A), _wide(dA))
    else:
        result = _wide(dA) * _SLOPES[name](_wide(Z), _wide(A), alpha)
    np.copyto(out, result, casting="same_kind")
    return out


# ----------------------------------------------------------------------------------------- losses
# Every loss is a mean over the n examples (rows) of a sum over the k outputs, so its gradient is
# the per-example gradient divided by n.  With n == 0 the value is 0.  Values and gradients are
# computed in float64 from stable forms (per-element terms that neither overflow nor cancel), the
# value summed in float64: a float32 output of +-1e38 gives the exact loss, not inf or 0.


def _squared_error(o, t):
    """L = 1/(2n) sum_i ||o_i - t_i||^2; dL/do = (o - t) / n."""
    d = o - t
    return 0.5 * float(np.sum(d * d)), d


def _log_softmax(o):
    """log softmax row by row: s - log sum exp(s) with s = o - max o, clamped at -DBL_MAX where
    it overflows (so that a zero target times it is 0, not NaN)."""
    with np.errstate(over="ignore"):
        s = np.maximum(o - o.max(axis=1, keepdims=True), -_HUGE)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _softmax_cross_entropy(o, target):
    """L = -1/n sum_i sum_j t_ij log softmax(o_i)_j, from logits; t is one-hot/probabilities or labels.

    dL/do = (softmax(o) - t) / n.
    """
    log_p = _log_softmax(o)
    grad = np.exp(log_p)
    if target.ndim == 1:  # integer class labels
        rows = np.arange(o.shape[0])
        value = -float(log_p[rows, target].sum())
        grad[rows, target] -= 1
    else:
        t = _wide(target)
        value = -float(np.vdot(t, log_p))
        grad -= t
    return value, grad


def _sigmoid_cross_entropy(o, target):
    """L = 1/n sum_ij [softplus(o_ij) - t_ij o_ij] (binary cross-entropy from logits), each term
    as log1p(exp(-|o|)) + o ([o > 0] - t), which does not cancel at large |o|;
    dL/do = (sigmoid(o) - t) / n."""
    t = _wide(target)
    terms = np.log1p(np.exp(-np.abs(o))) + o * ((o > 0) - t)
    return float(np.sum(terms)), special.expit(o) - t


_LOSSES = {
    "squared_error": _squared_error,
    "softmax_cross_entropy": _softmax_cross_entropy,
    "sigmoid_cross_entropy": _sigmoid_cross_entropy,
}


def loss(name, output, target, grad):
    """Return (value, grad) with grad = dL/d(output) written into ``grad``.

    ``target`` has the output's shape and dtype, or for softmax_cross_entropy may be a 1-D intp
    array of class labels in [0, k).  ``grad`` may be ``output`` itself.
    """
    n = output.shape[0]
    if n == 0:
        return 0.0, grad
    target = target if target.ndim == 1 else _wide(target)
    with np.errstate(over="ignore", invalid="ignore"):  # inf / NaN are the value, as compiled
        value, per_row = _LOSSES[name](_wide(output), target)
    np.divide(per_row, n, out=grad, casting="same_kind")
    return value / n, grad


# ------------------------------------------------------------------------------------- optimizers
# The steps of fastbp.kernels.registry.STEPS: <name>_update(param, grad, *state, *hyper[, t]),
# each state array or None where the settings leave it out (registry order), run by step_update.
# One step is computed in float64 (a float32 parameter and its state are widened) and rounded once
# into the arrays: g^2 of a float32 gradient of 1e20 overflows float32 but not the state v.


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """In place: g = grad + weight_decay * param; v = momentum v - lr g;
    param += v, or with Nesterov param += momentum v - lr g.  velocity is None when momentum == 0.

    Sources: gradient descent w <- w - lr dF/dw ("CS771 Deep Learning III", slide 14); momentum,
    Polyak (1964), "Some methods of speeding up the convergence of iteration methods"; Nesterov's,
    in the form of Sutskever, Martens, Dahl & Hinton (2013), "On the importance of initialization
    and momentum in deep learning", eqs. (3)-(4) -- scikit-learn's velocity form
    (sklearn.neural_network._stochastic_optimizers.SGDOptimizer).
    """
    p = _wide(param)
    g = _wide(grad) + weight_decay * p if weight_decay else _wide(grad)
    if velocity is None:
        step = -lr * g
    else:
        v = momentum * _wide(velocity) - lr * g
        np.copyto(velocity, v, casting="same_kind")
        step = momentum * v - lr * g if nesterov else v
    np.copyto(param, p + step, casting="same_kind")


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """In place Adam (Kingma & Ba) with bias correction; step is t >= 1, counting this update.

    g = grad + weight_decay * param; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    param -= lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1-b1^t), v_hat = v / (1-b2^t).

    Source: Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR, Algorithm 1;
    weight_decay as an L2 term in the gradient, as torch.optim.Adam's (not AdamW's decoupled
    decay).
    """
    # the formula above, operation for operation, in three float64 work arrays (the arrays of
    # the plain expressions cost the NumPy backend more than the rest of its training step)
    p = _wide(param)
    g = _wide(grad) + weight_decay * p if weight_decay else _wide(grad)
    m_new = np.multiply(m, beta1, dtype=np.float64)
    term = np.multiply(g, 1 - beta1)
    m_new += term
    np.multiply(g, g, out=term)
    term *= 1 - beta2
    v_new = np.multiply(v, beta2, dtype=np.float64)
    v_new += term
    np.copyto(m, m_new, casting="same_kind")
    np.copyto(v, v_new, casting="same_kind")
    m_new /= 1 - beta1 ** step  # m_hat
    v_new /= 1 - beta2 ** step  # v_hat
    np.sqrt(v_new, out=v_new)
    v_new += eps
    m_new *= lr
    m_new /= v_new
    np.subtract(p, m_new, out=m_new)
    np.copyto(param, m_new, casting="same_kind")


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum, centered):
    """In place RMSprop as torch.optim.RMSprop: g = grad + weight_decay * param;
    v = alpha v + (1-alpha) g^2; centered (and grad_avg given): ga = alpha ga + (1-alpha) g and
    d = sqrt(v - ga^2) + eps, computed as sqrt(max(s - |ga|, 0)) sqrt(s + |ga|) + eps with
    s = sqrt(v) (the max only catches rounding, v >= ga^2; a negative v, never a valid state,
    gives NaN as uncentered), else d = sqrt(v) + eps; with momentum_buffer b: b = momentum b + g / d, param -= lr b; without:
    param -= lr g / d.

    Sources: Tieleman & Hinton (2012), "Lecture 6.5 - rmsprop: divide the gradient by a running
    average of its recent magnitude", COURSERA: Neural Networks for Machine Learning; the
    centered variant after Graves (2013), "Generating Sequences With Recurrent Neural Networks",
    eqs. (38)-(45); names, defaults and the exact form (eps outside the root, momentum on the
    divided step): torch.optim.RMSprop.
    """
    p = _wide(param)
    g = _wide(grad) + weight_decay * p if weight_decay else _wide(grad)
    v = alpha * _wide(square_avg) + (1 - alpha) * (g * g)
    np.copyto(square_avg, v, casting="same_kind")
    if centered and grad_avg is not None:
        ga = alpha * _wide(grad_avg) + (1 - alpha) * g
        np.copyto(grad_avg, ga, casting="same_kind")
        s, m = np.sqrt(v), np.abs(ga)
        d = np.sqrt(np.maximum(s - m, 0.0)) * np.sqrt(s + m)
    else:
        d = np.sqrt(v)
    step = g / (d + eps)
    if momentum_buffer is not None:
        step = momentum * _wide(momentum_buffer) + step
        np.copyto(momentum_buffer, step, casting="same_kind")
    if lr:  # lr = 0 leaves param as it is, even beside an infinite step
        np.copyto(param, p - lr * step, casting="same_kind")


def step_update(name, param, grad, states, hyper, t):
    """In place: the optimizer step ``name`` of fastbp.kernels.registry.STEPS (its twin
    <name>_update above) with the ``states`` arrays and the ``hyper`` values in the registry's
    order; t >= 1 counts this update (passed to the steps that count it)."""
    entry = STEPS[name]
    globals()[name + "_update"](param, grad, *states, *hyper, *((t,) if entry.counts_steps else ()))
