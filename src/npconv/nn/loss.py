"""Losses: ``CrossEntropyLoss`` and ``MSELoss``.

A loss is a ``Module`` whose ``forward(input, target)`` returns a Python float
and whose ``backward()`` (no ``dy``: the loss is the end of the chain; an
optional ``scale`` multiplies the result) returns the gradient with respect
to ``input``.

Cross entropy, as ``torch.nn.CrossEntropyLoss``. With
``log_p = log_softmax(z)`` along the class axis (computed stably as
``z - max(z) - log(Σ exp(z - max(z)))``), class weights ``w`` (ones by default),
``C`` classes and smoothing ``ε``, every loss is a weighted sum
``loss_i = -Σ_c coef[i, c] * log_p[i, c]`` with

* integer targets ``t_i``:  ``coef[i, c] = (1-ε) w_{t_i} [c = t_i] + (ε/C) w_c``,
  zero for samples whose target is ``ignore_index``; the mean divides
  ``Σ_i loss_i`` by ``Σ_i w_{t_i}`` over the non-ignored samples
  (PyTorch's label-smoothed formula);
* class probabilities ``p[i, c]`` (float target of the input's shape):
  ``coef[i, c] = w_c ((1-ε) p[i, c] + ε/C)``; the mean divides by the number of
  samples.

Since ``Σ_c softmax = 1``, the gradient is
``d loss / d z[i, c] = softmax[i, c] * Σ_c' coef[i, c'] - coef[i, c]`` (divided by the
mean's denominator).
"""
from __future__ import annotations

import numpy as np

from .. import _args
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum")


class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: 'reduction' must be one of {_REDUCTIONS}, "
                             f"got {reduction!r}")
        self.reduction = reduction
        self._ctx = None

    def __call__(self, input, target):
        return self.forward(input, target)


def _log_softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)          # largest exponent is 0
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class CrossEntropyLoss(_Loss):
    """Softmax cross entropy of logits against class indices (or class probabilities).

    Parameters
    ----------
    weight : array (C,) or None
        Per-class weights (a buffer named ``weight`` in ``state_dict``, as PyTorch).
    ignore_index : int
        Target value whose samples are left out of the loss and its mean.
    reduction : 'mean' (default) or 'sum'
    label_smoothing : float in [0, 1]

    Shapes: logits (N, C) with target (N,) integers; (N, C, *d) with (N, *d);
    unbatched (C,) with a 0-d target; or a float target of the logits' shape
    (class probabilities).

    Examples
    --------
    >>> import numpy as np
    >>> loss = CrossEntropyLoss()
    >>> round(loss(np.zeros((2, 4)), np.array([0, 3])), 6)   # log(4): uniform over 4 classes
    1.386294
    >>> loss.backward().shape
    (2, 4)
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(reduction)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"CrossEntropyLoss: 'label_smoothing' must be in [0, 1], "
                             f"got {label_smoothing!r}")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        if weight is not None:
            weight = _args.as_float_array("weight", weight, "CrossEntropyLoss")
            if weight.ndim != 1:
                raise ValueError(f"CrossEntropyLoss: 'weight' must be 1-d (one per class), "
                                 f"got shape {weight.shape}")
        self.register_buffer("weight", None if weight is None else np.array(weight))

    def extra_repr(self) -> str:
        return ""

    def _coefficients(self, logits, target, num_classes):
        """(coef like logits with classes last, denominator of the mean)."""
        name = "CrossEntropyLoss"
        eps = self.label_smoothing
        class_weight = (np.ones(num_classes, dtype=logits.dtype) if self.weight is None
                        else self.weight.astype(logits.dtype))
        if class_weight.shape != (num_classes,):
            raise ValueError(f"{name}: 'weight' has {class_weight.shape[0]} entries but the "
                             f"input has {num_classes} classes")
        if target.dtype.kind == "f":                                  # class probabilities
            if target.shape != logits.shape:
                raise ValueError(f"{name}: a float (probability) target must have the input's "
                                 f"shape {logits.shape}, got {target.shape}")
            coef = class_weight * ((1 - eps) * target + eps / num_classes)
            return coef, logits.size // num_classes
        if target.dtype.kind not in "iu":
            raise TypeError(f"{name}: 'target' must hold integer class indices (or float "
                            f"probabilities), got dtype {target.dtype}")
        if target.shape != logits.shape[:-1]:
            raise ValueError(f"{name}: 'target' must have shape {logits.shape[:-1]} (the input's "
                             f"shape without the class dim), got {target.shape}")
        kept = target != self.ignore_index
        bad = kept & ((target < 0) | (target >= num_classes))
        if bad.any():
            raise ValueError(f"{name}: target values must be in [0, {num_classes - 1}] (or "
                             f"ignore_index={self.ignore_index}), got {target[bad].flat[0]}")
        safe_target = np.where(kept, target, 0)
        onehot = safe_target[..., None] == np.arange(num_classes)     # (*, C)
        target_weight = class_weight[safe_target] * kept              # w_{t_i}, 0 if ignored
        coef = ((1 - eps) * target_weight[..., None] * onehot
                + (eps / num_classes) * class_weight * kept[..., None])
        return coef, target_weight.sum()

    def forward(self, input, target) -> float:
        """Loss value (a Python float); caches softmax and coefficients for ``backward``."""
        logits = _args.as_float_array("input", input, "CrossEntropyLoss")
        target = np.asarray(target)
        if logits.ndim == 0:
            raise ValueError("CrossEntropyLoss: 'input' must be (C,), (N, C) or (N, C, *d), "
                             "got a 0-d array")
        # Classes last: (N, C, *d) -> (N, *d, C); unbatched (C,) stays.
        class_axis = 0 if logits.ndim == 1 else 1
        logits_last = np.moveaxis(logits, class_axis, -1)
        if target.dtype.kind == "f":
            target = np.moveaxis(target, class_axis, -1) if target.ndim == logits.ndim else target
        num_classes = logits_last.shape[-1]
        coef, denominator = self._coefficients(logits_last, target, num_classes)
        log_p = _log_softmax(logits_last, axis=-1)
        total = -(coef * log_p).sum()
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):     # all ignored -> nan, as PyTorch
                scale = 1.0 / denominator if denominator != 0 else np.nan
        else:
            scale = 1.0
        self._ctx = (np.exp(log_p), coef, scale, class_axis, logits.dtype)
        return float(total * scale)

    def backward(self, scale: float = 1.0):
        """d loss / d input, shaped like the input (times ``scale``)."""
        softmax, coef, loss_scale, class_axis, dtype = self._saved()
        grad = softmax * coef.sum(axis=-1, keepdims=True) - coef
        grad = grad * (loss_scale * scale)
        return np.moveaxis(grad, -1, class_axis).astype(dtype, copy=False)


class MSELoss(_Loss):
    """Mean squared error ``mean((input - target)^2)`` (or the sum), as ``torch.nn.MSELoss``.

    ``backward()`` returns ``2 (input - target) / M`` (``M`` = number of elements; 1 for 'sum').
    """

    def forward(self, input, target) -> float:
        input = _args.as_float_array("input", input, "MSELoss")
        target = np.asarray(target)
        if target.shape != input.shape:
            raise ValueError(f"MSELoss: 'target' must have the input's shape {input.shape}, "
                             f"got {target.shape}")
        diff = input - target
        scale = 1.0 / diff.size if self.reduction == "mean" else 1.0
        self._ctx = (diff, scale)
        return float((diff * diff).sum() * scale)

    def backward(self, scale: float = 1.0):
        diff, loss_scale = self._saved()
        return (2 * loss_scale * scale) * diff
