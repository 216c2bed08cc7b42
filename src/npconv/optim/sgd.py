"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 decay.

The update is PyTorch's ``torch.optim.SGD`` (single-tensor path), per
parameter ``p`` with gradient ``g``, momentum ``mu``, dampening ``tau``,
weight decay ``lambda`` and learning rate ``lr``::

    g <- g + lambda * p                          (if lambda != 0; L2 decay)
    b <- g                                       (first step: no dampening)
    b <- mu * b + (1 - tau) * g                  (later steps)
    g <- g + mu * b   if nesterov  else  g <- b  (if mu != 0)
    p <- p - lr * g

This is Sutskever et al.'s momentum with the learning rate applied outside
the buffer (so changing ``lr`` mid-run does not rescale the buffer), which
differs from the ``v <- mu*v - lr*g`` form in some papers.
"""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_grad_shape, _check_nonneg, _check_number

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with PyTorch's keywords and update rule.

    Parameters
    ----------
    params : iterable of parameters or of param-group dicts
        Objects with ``.data`` (updated in place) and ``.grad`` (None = skip).
    lr : float
        Learning rate (required, >= 0).
    momentum : float, default 0
        Momentum factor ``mu`` (>= 0); 0 disables the buffer.
    dampening : float, default 0
        Dampening ``tau`` of the gradient added to the buffer after step 1.
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float, default 0
        L2 penalty ``lambda`` added to the gradient.

    Raises
    ------
    ValueError
        Negative ``lr``/``momentum``/``weight_decay``, or ``nesterov`` with
        zero momentum or non-zero dampening.

    Examples
    --------
    >>> import numpy as np
    >>> class P:  # anything with .data and .grad works
    ...     def __init__(self, data): self.data, self.grad = data, None
    >>> p = P(np.array([1.0, 2.0]))
    >>> opt = SGD([p], lr=0.1, momentum=0.9)
    >>> p.grad = np.array([1.0, -1.0]); opt.step()
    >>> p.data
    array([0.9, 2.1])
    """

    _array_state_keys = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        defaults = dict(
            lr=_check_nonneg("SGD", "lr", lr),
            momentum=_check_nonneg("SGD", "momentum", momentum),
            dampening=_check_number("SGD", "dampening", dampening),
            nesterov=bool(nesterov),
            weight_decay=_check_nonneg("SGD", "weight_decay", weight_decay),
        )
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        for key in ("lr", "momentum", "weight_decay"):
            group[key] = _check_nonneg("SGD", key, group[key])
        group["dampening"] = _check_number("SGD", "dampening", group["dampening"])
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={group['momentum']}, dampening={group['dampening']}")

    def step(self) -> None:
        """Update every parameter whose ``.grad`` is not None, in place."""
        for group, pairs in self._indexed_groups():
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            for index, param in pairs:
                if param.grad is None:
                    continue
                # Cast to the parameter's dtype: the update is computed in it,
                # as torch does (hyperparameters are Python floats, so NumPy
                # keeps float32 float32).
                grad = np.asarray(param.grad, dtype=param.data.dtype)
                _check_grad_shape(type(self).__name__, index, param, grad)
                if weight_decay != 0:
                    grad = grad + weight_decay * param.data
                if momentum != 0:
                    state = self.state.setdefault(index, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        # First step: the buffer is the gradient itself, undampened.
                        buf = state["momentum_buffer"] = np.array(grad, copy=True)
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * grad
                    grad = grad + momentum * buf if group["nesterov"] else buf
                param.data -= lr * grad
