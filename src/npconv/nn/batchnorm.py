"""Batch normalisation: ``BatchNorm1d``, ``BatchNorm2d``, ``BatchNorm3d`` (Ioffe & Szegedy 2015).

Per channel c, over the M = N * prod(spatial) values of the batch::

    mean = (1/M) Σ x,   var = (1/M) Σ (x - mean)^2          (biased, used to normalise)
    x_hat = (x - mean) / sqrt(var + eps),   y = weight * x_hat + bias

Running statistics (training with ``track_running_stats``), as PyTorch::

    running_mean = (1 - m) * running_mean + m * mean
    running_var  = (1 - m) * running_var  + m * var * M / (M - 1)   (unbiased)
    num_batches_tracked += 1,   m = momentum, or 1 / num_batches_tracked if momentum is None

In eval mode with running statistics, ``mean``/``var`` are the running ones
(a fixed affine map). Backward in training (batch statistics depend on x)::

    dx = weight / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat))
    dweight = Σ dy * x_hat,   dbias = Σ dy

and in eval ``dx = weight / sqrt(running_var + eps) * dy``.
"""
from __future__ import annotations

import numpy as np

from ..convolution import channel_sums
from .module import Module, Parameter, check_dtype

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _BatchNorm(Module):
    _allowed_ndims: tuple = ()
    _shape_text = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, bias=True):
        super().__init__()
        name = type(self).__name__
        if not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{name}: 'num_features' must be a positive int, got {num_features!r}")
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{name}: 'momentum' must be in [0, 1] or None, got {momentum!r}")
        if float(eps) < 0:
            raise ValueError(f"{name}: 'eps' must be >= 0, got {eps!r}")
        dtype = check_dtype(dtype, name)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.num_features, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._ctx = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def _check_input(self, x):
        x = self._check_float_input(x, self._allowed_ndims, self._shape_text)
        if x.shape[1] != self.num_features:
            raise self._layer_error(f"expected input with {self.num_features} channels "
                                    f"(x.shape[1]), got {x.shape[1]} (x.shape={tuple(x.shape)})")
        return x

    def forward(self, x):
        x = self._check_input(x)
        stat_shape = (1, -1) + (1,) * (x.ndim - 2)             # broadcast (C,) over x
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            count = x.size // x.shape[1]                       # M = N * prod(spatial)
            if count <= 1:
                raise self._layer_error(f"expected more than 1 value per channel when "
                                        f"training, got input shape {tuple(x.shape)}")
            mean = channel_sums(x) / x.dtype.type(count)
            centred = x - mean.reshape(stat_shape)
            var = channel_sums(centred, centred) / x.dtype.type(count)   # biased
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
        else:
            mean = self.running_mean.astype(x.dtype, copy=False)
            var = self.running_var.astype(x.dtype, copy=False)
            centred = x - mean.reshape(stat_shape)
        inv_std = 1.0 / np.sqrt(var + x.dtype.type(self.eps))  # (C,)
        x_hat = np.multiply(centred, inv_std.reshape(stat_shape), out=centred)   # its own array
        if self.affine:
            y = x_hat * self.weight.data.reshape(stat_shape)
            if self.bias is not None:
                y += self.bias.data.reshape(stat_shape)
        else:
            y = x_hat
        self._ctx = (x_hat, inv_std, use_batch_stats)
        return y.astype(np.result_type(x, y), copy=False)

    def _update_running_stats(self, mean, var, count) -> None:
        self.num_batches_tracked += 1
        if self.momentum is None:                              # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased_var = var * (count / (count - 1))
        dtype = self.running_mean.dtype
        self.running_mean[...] = ((1 - factor) * self.running_mean + factor * mean).astype(dtype)
        self.running_var[...] = ((1 - factor) * self.running_var + factor * unbiased_var).astype(dtype)

    def backward(self, dy):
        x_hat, inv_std, used_batch_stats = self._saved()
        dy = np.asarray(dy)
        if dy.shape != x_hat.shape:
            raise self._layer_error(f"'dy' must have the output's shape {x_hat.shape}, "
                                    f"got {dy.shape}")
        stat_shape = (1, -1) + (1,) * (dy.ndim - 2)
        dbias = channel_sums(dy)
        dweight = channel_sums(dy, x_hat)
        if self.affine:
            self.weight.accumulate_grad(dweight)
            if self.bias is not None:
                self.bias.accumulate_grad(dbias)
            scale = self.weight.data * inv_std                 # (C,)
        else:
            scale = inv_std
        if not used_batch_stats:
            return dy * scale.reshape(stat_shape)
        count = dy.size // dy.shape[1]
        mean_dy = (dbias / count).reshape(stat_shape)
        mean_dy_xhat = (dweight / count).reshape(stat_shape)
        return scale.reshape(stat_shape) * (dy - mean_dy - x_hat * mean_dy_xhat)


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input, as ``torch.nn.BatchNorm1d``; see module docstring."""
    _allowed_ndims = (2, 3)
    _shape_text = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input, as ``torch.nn.BatchNorm2d``.

    Parameters
    ----------
    num_features : int (C)
    eps : float, added to the variance
    momentum : float or None (None: cumulative average of all batches)
    affine : bool, learn ``weight`` (ones) and ``bias`` (zeros)
    bias : bool, keyword-only (PyTorch >= 2.11): with ``affine``, whether to learn ``bias``
    track_running_stats : bool, keep ``running_mean``, ``running_var``, ``num_batches_tracked``
    dtype : np.float32 (default) or np.float64

    state_dict keys: weight, bias, running_mean, running_var (C,), num_batches_tracked
    (0-d int64). See the module docstring for the equations.
    """
    _allowed_ndims = (4,)
    _shape_text = "(N, C, H, W)"


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W) input, as ``torch.nn.BatchNorm3d``."""
    _allowed_ndims = (5,)
    _shape_text = "(N, C, D, H, W)"
