"""The compiled backend: the Cython kernels under the names of their NumPy twins
(fastbp/_reference.py), with the same signatures, semantics and aliasing rules."""
from ._c_activation import activation, activation_grad
from ._c_linear import dense_backward, dense_forward, linear_backward, linear_forward
from ._c_step import adam_update, loss, sgd_update

__all__ = ["linear_forward", "linear_backward", "dense_forward", "dense_backward", "activation",
           "activation_grad", "loss", "sgd_update", "adam_update"]
