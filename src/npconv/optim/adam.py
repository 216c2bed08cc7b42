"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019).

Per parameter ``p`` with gradient ``g`` at step ``t`` (1-based), PyTorch's
``torch.optim.Adam`` / ``AdamW`` update (single-tensor path, amsgrad off)::

    Adam:  g <- g + lambda * p                 (L2 decay folded into the gradient)
    AdamW: p <- p * (1 - lr * lambda)          (decoupled decay, before the moments)
    m <- lerp(m, g, 1 - beta1)                 (= beta1*m + (1-beta1)*g)
    v <- beta2 * v + (1 - beta2) * g * g
    bias_correction1 = 1 - beta1**t
    bias_correction2 = 1 - beta2**t
    denom = sqrt(v) / sqrt(bias_correction2) + eps
    p <- p - (lr / bias_correction1) * m / denom

``eps`` is added *after* the bias correction of ``sqrt(v)``, exactly as torch
does (Algorithm 1 of the paper adds it to ``sqrt(v_hat)``, which is the same
thing); both moments start at zero, and the step count is per parameter.
"""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_grad_shape, _check_nonneg, _check_number

__all__ = ["Adam", "AdamW"]


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start <- start + weight * (end - start)`` in place, as torch's lerp.

    torch switches to the algebraically equal ``end - (end - start) * (1 - w)``
    for ``|w| >= 0.5`` so that ``w = 1`` gives ``end`` exactly; same here.
    """
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


class Adam(Optimizer):
    """Adam with PyTorch's keywords and update rule (L2 weight decay).

    Parameters
    ----------
    params : iterable of parameters or of param-group dicts
        Objects with ``.data`` (updated in place) and ``.grad`` (None = skip).
    lr : float, default 1e-3
        Learning rate (>= 0).
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment, each in [0, 1).
    eps : float, default 1e-8
        Added to the bias-corrected ``sqrt(v)`` (>= 0).
    weight_decay : float, default 0
        L2 penalty added to the gradient (Adam) or decoupled decay (AdamW).

    Notes
    -----
    Per-parameter state: ``"step"`` (int), ``"exp_avg"`` (m) and
    ``"exp_avg_sq"`` (v), arrays in the parameter's dtype, created at the
    parameter's first update.
    """

    _array_state_keys = ("exp_avg", "exp_avg_sq")
    _int_state_keys = ("step",)
    #: AdamW sets this: decay the weights directly instead of the gradient
    _decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        name = type(self).__name__
        defaults = dict(
            lr=_check_nonneg(name, "lr", lr),
            betas=_check_betas(name, betas),
            eps=_check_nonneg(name, "eps", eps),
            weight_decay=_check_nonneg(name, "weight_decay", weight_decay),
        )
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            group[key] = _check_nonneg(name, key, group[key])
        group["betas"] = _check_betas(name, group["betas"])

    def step(self) -> None:
        """Update every parameter whose ``.grad`` is not None, in place."""
        for group, pairs in self._indexed_groups():
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for index, param in pairs:
                if param.grad is None:
                    continue
                grad = np.asarray(param.grad, dtype=param.data.dtype)
                _check_grad_shape(type(self).__name__, index, param, grad)
                state = self.state.setdefault(index, {})
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(param.data)
                    state["exp_avg_sq"] = np.zeros_like(param.data)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                if weight_decay != 0:
                    if self._decoupled_weight_decay:
                        param.data *= 1 - lr * weight_decay
                    else:
                        grad = grad + weight_decay * param.data

                _lerp_(exp_avg, grad, 1 - beta1)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad

                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = lr / bias_correction1
                denom = np.sqrt(exp_avg_sq) / bias_correction2 ** 0.5 + eps
                param.data -= step_size * (exp_avg / denom)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay ``p <- p * (1 - lr*weight_decay)``.

    Same parameters as :class:`Adam`, except ``weight_decay`` defaults to 1e-2
    and is applied to the weights before the moment update, never to the
    gradient (so it does not enter ``m`` or ``v``).
    """

    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _check_betas(name: str, betas) -> tuple[float, float]:
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{name}: 'betas' must be a pair (beta1, beta2), got {betas!r}") from None
    beta1 = _check_number(name, "betas[0]", beta1)
    beta2 = _check_number(name, "betas[1]", beta2)
    for i, beta in enumerate((beta1, beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: 'betas[{i}]' must be in [0, 1), got {beta}")
    return beta1, beta2
