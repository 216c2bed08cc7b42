"""Elementwise activations: ``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``.

Each keeps the one array its backward needs (Chainer style): ReLU and
LeakyReLU the sign mask of the input, Tanh and Sigmoid their output (their
derivatives are functions of y: ``1 - y^2`` and ``y (1 - y)``). Inputs are
never modified (``inplace=True`` is accepted for PyTorch compatibility and
only shown in the repr).
"""
from __future__ import annotations

import numpy as np

from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid"]


class _Elementwise(Module):
    def __init__(self):
        super().__init__()
        self._ctx = None

    def _input(self, x):
        return self._check_float_input(x, range(0, 64), "array")

    def _check_dy(self, dy, saved):
        dy = np.asarray(dy)
        if dy.shape != saved.shape:
            raise self._layer_error(f"'dy' must have the output's shape {saved.shape}, got {dy.shape}")
        return dy


class ReLU(_Elementwise):
    """``y = max(x, 0)``; ``dx = dy * (x > 0)`` (0 at x = 0, as PyTorch; NaN propagates)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def forward(self, x):
        x = self._input(x)
        # PyTorch: relu(NaN) = NaN, and threshold_backward zeroes dy only where x <= 0,
        # so a NaN input passes its gradient; `~(x <= 0)` keeps both rules.
        passes = ~(x <= 0)
        self._ctx = passes
        return np.maximum(x, np.zeros((), x.dtype))

    def backward(self, dy):
        passes = self._saved()
        dy = self._check_dy(dy, passes)
        if np.isfinite(dy.sum()):
            # every dy finite: dy * passes is dy where x passes and (±)0 elsewhere, exactly
            # (20x faster than np.where on a random mask: 0.09 vs 1.9 ms for 32x16x32x32)
            return np.multiply(dy, passes, dtype=dy.dtype)
        return np.where(passes, dy, np.zeros((), dy.dtype))  # inf * 0 would give NaN


class LeakyReLU(_Elementwise):
    """``y = x if x > 0 else negative_slope * x``; ``dx = dy`` or ``negative_slope * dy``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")

    def forward(self, x):
        x = self._input(x)
        positive = x > 0
        self._ctx = positive
        return np.where(positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy):
        positive = self._saved()
        dy = self._check_dy(dy, positive)
        return np.where(positive, dy, dy * dy.dtype.type(self.negative_slope))


class Tanh(_Elementwise):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x):
        y = np.tanh(self._input(x))
        self._ctx = y
        return y

    def backward(self, dy):
        y = self._saved()
        dy = self._check_dy(dy, y)
        return dy * (1 - y * y)


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))`` (computed without overflow); ``dx = dy * y * (1 - y)``."""

    def forward(self, x):
        x = self._input(x)
        # exp(-|x|) never overflows: y = 1/(1+e) for x >= 0, e/(1+e) for x < 0, e = exp(-|x|).
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        self._ctx = y
        return y

    def backward(self, dy):
        y = self._saved()
        dy = self._check_dy(dy, y)
        return dy * (1 - y) * y
