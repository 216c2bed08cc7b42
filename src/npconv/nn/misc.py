"""Shape and regularisation layers: ``Flatten``, ``Dropout``, ``Identity``."""
from __future__ import annotations

import numpy as np

from . import init
from .module import Module

__all__ = ["Flatten", "Dropout", "Identity"]


class Identity(Module):
    """``y = x``, ``dx = dy`` (a placeholder, as ``torch.nn.Identity``)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._ctx = None

    def forward(self, x):
        self._ctx = True
        return x

    def backward(self, dy):
        self._saved()
        return dy


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` into one, as ``torch.nn.Flatten`` (default: all but N).

    Shape: (N, *dims) -> (N, prod(dims)) with the defaults; backward reshapes back.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self._ctx = None

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        x = np.asarray(x)
        ndim = max(x.ndim, 1)
        start = self.start_dim + ndim if self.start_dim < 0 else self.start_dim
        end = self.end_dim + ndim if self.end_dim < 0 else self.end_dim
        if not (0 <= start < ndim and 0 <= end < ndim) or start > end:
            raise self._layer_error(f"start_dim={self.start_dim}, end_dim={self.end_dim} do not "
                                    f"fit input of shape {tuple(x.shape)} ({x.ndim}-d)")
        self._ctx = x.shape
        return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:]) if x.ndim else x.reshape(1)

    def backward(self, dy):
        shape = self._saved()
        return np.asarray(dy).reshape(shape)


class Dropout(Module):
    """Zero each element with probability ``p`` in training, scale the rest by ``1/(1-p)``.

    In eval mode (``.eval()``) it is the identity. The keep mask is drawn from
    ``rng`` (a ``np.random.Generator`` or a seed) if given, else from
    ``npconv.nn.init``'s module generator (``npconv.nn.init.manual_seed``);
    backward multiplies ``dy`` by the same scaled mask.

    Parameters
    ----------
    p : float in [0, 1]
    inplace : bool, accepted for PyTorch compatibility (the input is never modified)
    rng : np.random.Generator or int, optional
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, rng=None):
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Dropout: 'p' must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = bool(inplace)
        self.rng = None if rng is None else init.get_rng(rng)
        self._ctx = None

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def forward(self, x):
        x = self._check_float_input(x, range(0, 64), "array")
        if not self.training or self.p == 0.0:
            self._ctx = 1          # identity: backward passes dy through
            return x
        if self.p == 1.0:
            scaled_mask = np.zeros(x.shape, dtype=x.dtype)
        else:
            keep = init.get_rng(self.rng).random(x.shape) >= self.p      # P(keep) = 1 - p
            scaled_mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        self._ctx = scaled_mask
        return x * scaled_mask

    def backward(self, dy):
        scaled_mask = self._saved()
        return np.asarray(dy) * scaled_mask
