"""NumPy twins of the compiled kernels: the specification the compiled backend is held to.

Every function here has the same name and signature as its compiled counterpart in
``fastbp._compiled``.  Both trust their caller (``fastbp.kernels``) to have checked the input:
arrays are C-contiguous, share one float dtype (float32 or float64), have consistent shapes, and
every ``out`` buffer is given, writeable and of the right shape.  Results go into the ``out``
buffers, which may alias an input where a docstring says so.

Notation (the lecture's): a dense layer maps h^(l-1) (n x d, one row per example) to
Z = h^(l-1) W + b (W is d x k, so column j of W is the lecture's weight vector w_j) and
h^l = A = f(Z).  dX, dW, db, dZ, dA are gradients of the loss with respect to X, W, b, Z, A.
"""
import numpy as np
from scipy import special

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
def _identity(Z, out, alpha):
    np.copyto(out, Z)


def _sigmoid(Z, out, alpha):
    special.expit(Z, out=out)


def _tanh(Z, out, alpha):
    np.tanh(Z, out=out)


def _relu(Z, out, alpha):
    np.maximum(Z, 0, out=out)


def _leaky_relu(Z, out, alpha):
    negative = Z < 0
    np.copyto(out, Z)
    np.multiply(out, alpha, out=out, where=negative)


def _softplus(Z, out, alpha):
    np.logaddexp(0, Z, out=out)


def _elu(Z, out, alpha):
    negative = Z < 0
    np.copyto(out, Z)
    np.expm1(out, out=out, where=negative)
    np.multiply(out, alpha, out=out, where=negative)


def _gelu(Z, out, alpha):
    """Exact GELU: z * Phi(z) with Phi the standard normal CDF."""
    cdf = special.erf(Z * SQRT_HALF)
    cdf += 1
    cdf *= 0.5
    np.multiply(Z, cdf, out=out)


def _softmax(Z, out, alpha):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    if Z.shape[1] == 0:
        return
    row_max = Z.max(axis=1, keepdims=True)
    np.subtract(Z, row_max, out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)


_FORWARD = {
    "identity": _identity, "sigmoid": _sigmoid, "tanh": _tanh, "relu": _relu,
    "leaky_relu": _leaky_relu, "softplus": _softplus, "elu": _elu, "gelu": _gelu,
    "softmax": _softmax,
}


def activation(name, Z, out, alpha):
    """out = f(Z) elementwise (row-wise for softmax); out may alias Z."""
    _FORWARD[name](Z, out, alpha)
    return out


# Each derivative gets Z (pre-activation), A = f(Z), dA, and returns f'(Z) * dA into out.
def _identity_grad(Z, A, dA, out, alpha):
    np.copyto(out, dA)


def _sigmoid_grad(Z, A, dA, out, alpha):
    slope = A * (1 - A)
    np.multiply(dA, slope, out=out)


def _tanh_grad(Z, A, dA, out, alpha):
    slope = 1 - A * A
    np.multiply(dA, slope, out=out)


def _relu_grad(Z, A, dA, out, alpha):
    np.multiply(dA, Z > 0, out=out)


def _leaky_relu_grad(Z, A, dA, out, alpha):
    slope = np.where(Z > 0, 1, alpha).astype(Z.dtype, copy=False)
    np.multiply(dA, slope, out=out)


def _softplus_grad(Z, A, dA, out, alpha):
    np.multiply(dA, special.expit(Z), out=out)


def _elu_grad(Z, A, dA, out, alpha):
    slope = np.where(Z > 0, 1, A + alpha).astype(Z.dtype, copy=False)
    np.multiply(dA, slope, out=out)


def _gelu_grad(Z, A, dA, out, alpha):
    """d/dz [z Phi(z)] = Phi(z) + z phi(z)."""
    slope = 0.5 * (1 + special.erf(Z * SQRT_HALF)) + Z * INV_SQRT_2PI * np.exp(-0.5 * Z * Z)
    np.multiply(dA, slope.astype(Z.dtype, copy=False), out=out)


def _softmax_grad(Z, A, dA, out, alpha):
    """Jacobian-vector product of the softmax: A * (dA - sum_j dA_j A_j), row by row."""
    row_dot = np.einsum("ij,ij->i", dA, A)[:, None]
    np.subtract(dA, row_dot, out=out)
    out *= A


_BACKWARD = {
    "identity": _identity_grad, "sigmoid": _sigmoid_grad, "tanh": _tanh_grad, "relu": _relu_grad,
    "leaky_relu": _leaky_relu_grad, "softplus": _softplus_grad, "elu": _elu_grad,
    "gelu": _gelu_grad, "softmax": _softmax_grad,
}


def activation_grad(name, Z, A, dA, out, alpha):
    """out = dL/dZ given dL/dA; out may alias dA."""
    _BACKWARD[name](Z, A, dA, out, alpha)
    return out


# ----------------------------------------------------------------------------------------- losses
# Every loss is a mean over the n examples (rows) of a sum over the k outputs, so its gradient is
# the per-example gradient divided by n.  With n == 0 the value is 0.


def _squared_error(output, target, grad):
    """L = 1/(2n) sum_i ||o_i - t_i||^2; dL/do = (o - t) / n."""
    n = output.shape[0]
    np.subtract(output, target, out=grad)
    value = 0.5 * float(np.vdot(grad, grad)) / n
    grad /= n
    return value


def _log_softmax(output):
    row_max = output.max(axis=1, keepdims=True)
    shifted = output - row_max
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _softmax_cross_entropy(output, target, grad):
    """L = -1/n sum_i sum_j t_ij log softmax(o_i)_j, from logits; t is one-hot/probabilities or labels.

    dL/do = (softmax(o) - t) / n.
    """
    n = output.shape[0]
    log_p = _log_softmax(output)
    np.exp(log_p, out=grad)
    if target.ndim == 1:  # integer class labels
        rows = np.arange(n)
        value = -float(log_p[rows, target].sum()) / n
        grad[rows, target] -= 1
    else:
        value = -float(np.vdot(target, log_p)) / n
        grad -= target
    grad /= n
    return value


def _sigmoid_cross_entropy(output, target, grad):
    """L = 1/n sum_ij [softplus(o_ij) - t_ij o_ij] (binary cross-entropy from logits); dL/do = (sigmoid(o) - t) / n."""
    n = output.shape[0]
    value = float(np.logaddexp(0, output).sum() - np.vdot(target, output)) / n
    special.expit(output, out=grad)
    grad -= target
    grad /= n
    return value


_LOSSES = {
    "squared_error": _squared_error,
    "softmax_cross_entropy": _softmax_cross_entropy,
    "sigmoid_cross_entropy": _sigmoid_cross_entropy,
}


def loss(name, output, target, grad):
    """Return (value, grad) with grad = dL/d(output) written into ``grad``.

    ``target`` has the output's shape and dtype, or for softmax_cross_entropy may be a 1-D intp
    array of class labels in [0, k).
    """
    if output.shape[0] == 0:
        return 0.0, grad
    return _LOSSES[name](output, target, grad), grad


# ------------------------------------------------------------------------------------- optimizers
def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """In place: g = grad + weight_decay * param; v = momentum v - lr g;
    param += v, or with Nesterov param += momentum v - lr g.  velocity is None when momentum == 0.
    """
    g = grad + weight_decay * param if weight_decay else grad
    if velocity is None:
        param -= lr * g
        return
    velocity *= momentum
    velocity -= lr * g
    if nesterov:
        param += momentum * velocity - lr * g
    else:
        param += velocity


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """In place Adam (Kingma & Ba) with bias correction; step is t >= 1, counting this update.

    g = grad + weight_decay * param; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    param -= lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1-b1^t), v_hat = v / (1-b2^t).
    """
    g = grad + weight_decay * param if weight_decay else grad
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)
