"""``Linear``: ``y = x Wᵀ + b``, as ``torch.nn.Linear``."""
from __future__ import annotations

import numpy as np

from . import init
from .module import Module, check_dtype

__all__ = ["Linear"]


class Linear(Module):
    """Fully connected layer ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype : np.float32 (default) or np.float64
    rng : np.random.Generator or seed, optional (default: ``npconv.nn.init``'s generator)

    Shape: x (*, in_features) -> y (*, out_features); weight (out_features, in_features),
    bias (out_features,). Init as PyTorch: U(±1/sqrt(in_features)) for both.

    Gradients of sum(y*dy): dx = dy @ W, dW = Σ dyᵀ x, db = Σ dy (sums over all leading dims).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Linear: '{arg}' must be a positive int, got {value!r}")
        dtype = check_dtype(dtype, "Linear")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._weight_and_bias((self.out_features, self.in_features), self.out_features, bias,
                              dtype, rng)

    def reset_parameters(self, rng=None) -> None:
        init.default_init_(self.weight, self.bias, rng=rng)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x):
        x = self._check_float_input(x, range(1, 64), "(*, in_features)")
        if x.shape[-1] != self.in_features:
            raise self._layer_error(f"expected input with {self.in_features} features in its "
                                    f"last dim, got x.shape={tuple(x.shape)}")
        y = x @ self.weight.data.T                                   # (*, out)
        if self.bias is not None:
            y = y + self.bias.data
        self._ctx = x
        return y

    def backward(self, dy):
        x = self._saved()
        dy = np.asarray(dy)
        expected = x.shape[:-1] + (self.out_features,)
        if dy.shape != expected:
            raise self._layer_error(f"'dy' must have the output's shape {expected}, got {dy.shape}")
        dy_rows = dy.reshape(-1, self.out_features)                  # (M, out)
        x_rows = x.reshape(-1, self.in_features)                     # (M, in)
        self.weight.accumulate_grad(dy_rows.T @ x_rows)              # (out, in)
        if self.bias is not None:
            self.bias.accumulate_grad(dy_rows.sum(axis=0))
        return dy @ self.weight.data                                 # (*, in)
