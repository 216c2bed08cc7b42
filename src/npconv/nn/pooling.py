"""Pooling layers: ``MaxPool1d/2d/3d``, ``AvgPool1d/2d/3d``, ``AdaptiveAvgPool1d/2d/3d``.

Thin wrappers over ``npconv.pooling``: forward normalises the arguments once
and keeps that call (and, for max pooling, the argmax of every window) for
backward, so backward never searches the windows again.
"""
from __future__ import annotations

import numpy as np

from .. import pooling as P
from .module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"]


def _shape_only(call):
    """The call with ``x`` replaced by a zero-memory array of the same shape and dtype.

    Backward needs x's shape, not its values (the max pool keeps its argmax).
    """
    return call._replace(x=np.broadcast_to(np.zeros((), call.x.dtype), call.x.shape))


class _PoolNd(Module):
    _d = 0

    def __init__(self):
        super().__init__()
        self._ctx = None

    def _input(self, x):
        d = self._d
        return self._check_float_input(x, (d + 1, d + 2), "(N, C, *spatial) or (C, *spatial)")

    def _batched_dy(self, dy, call):
        return P._batched_dy(dy, call, f"{self._get_name()}.backward")


class _MaxPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        if return_indices:
            raise ValueError(f"{type(self).__name__}: return_indices=True is not supported")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride   # PyTorch stores it so
        self.padding = padding
        self.dilation = dilation
        self.return_indices = False
        self.ceil_mode = ceil_mode
        # Validate now (a dummy-free check: the arguments alone) so errors come at construction.
        P._args.int_tuple("kernel_size", kernel_size, self._d, type(self).__name__)
        P._args.int_tuple("stride", self.stride, self._d, type(self).__name__)
        P._args.int_tuple("dilation", dilation, self._d, type(self).__name__)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x):
        x = self._input(x)
        call = P._pool_call(x, self._d, self.kernel_size, self.stride, self.padding,
                            self.dilation, self.ceil_mode, self._short_repr())
        y, argmax = P._max_pool_forward(call)
        # Keep the argmax (window offset of each max), not x: backward needs only that.
        self._ctx = (_shape_only(call), argmax)
        return call.finish(y)

    def backward(self, dy):
        call, argmax = self._saved()
        dy = self._batched_dy(dy, call)
        return call.finish(P._max_pool_backward(dy, argmax, call))


class _AvgPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = P._check_divisor(divisor_override, name)
        P._args.int_tuple("kernel_size", kernel_size, self._d, name)
        P._args.int_tuple("stride", self.stride, self._d, name)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        x = self._input(x)
        call = P._pool_call(x, self._d, self.kernel_size, self.stride, self.padding, 1,
                            self.ceil_mode, self._short_repr())
        y = P._avg_pool_forward(call, bool(self.count_include_pad), self.divisor_override)
        self._ctx = _shape_only(call)   # backward needs only the geometry
        return call.finish(y)

    def backward(self, dy):
        call = self._saved()
        dy = self._batched_dy(dy, call)
        return call.finish(P._avg_pool_backward(dy, call, bool(self.count_include_pad),
                                                self.divisor_override))


class _AdaptiveAvgPoolNd(_PoolNd):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x):
        x = self._input(x)
        call = P._adaptive_call(x, self._d, self.output_size, self._short_repr())
        y = P._apply_per_dim(call.x, call.matrices, transpose=False)
        self._ctx = _shape_only(call)
        return call.finish(y)

    def backward(self, dy):
        call = self._saved()
        dy = self._batched_dy(dy, call)
        return call.finish(P._apply_per_dim(dy, call.matrices, transpose=True))


_MAX_DOC = """{d}-d max pooling, as ``torch.nn.MaxPool{d}d`` (see ``npconv.pooling.max_pool2d``).

    Parameters: kernel_size, stride=None (= kernel_size), padding=0 (<= k//2),
    dilation=1, return_indices=False (True is not supported), ceil_mode=False.
    Shape: (N, C, *S) or (C, *S) -> (N, C, *O). The gradient goes to each window's
    first maximum.
    """
_AVG_DOC = """{d}-d average pooling, as ``torch.nn.AvgPool{d}d`` (see ``npconv.pooling.avg_pool2d``).

    Parameters: kernel_size, stride=None (= kernel_size), padding=0 (<= k//2),
    ceil_mode=False, count_include_pad=True, divisor_override=None.
    """
_ADAPTIVE_DOC = """{d}-d adaptive average pooling, as ``torch.nn.AdaptiveAvgPool{d}d``.

    ``output_size``: int or {d} values (None keeps the input size). Output cell i
    averages input [floor(i*S/O), ceil((i+1)*S/O)) per dim.
    """


class MaxPool1d(_MaxPoolNd):
    __doc__ = _MAX_DOC.format(d=1)
    _d = 1


class MaxPool2d(_MaxPoolNd):
    __doc__ = _MAX_DOC.format(d=2)
    _d = 2


class MaxPool3d(_MaxPoolNd):
    __doc__ = _MAX_DOC.format(d=3)
    _d = 3


class AvgPool1d(_AvgPoolNd):
    __doc__ = _AVG_DOC.format(d=1)
    _d = 1


class AvgPool2d(_AvgPoolNd):
    __doc__ = _AVG_DOC.format(d=2)
    _d = 2


class AvgPool3d(_AvgPoolNd):
    __doc__ = _AVG_DOC.format(d=3)
    _d = 3


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    __doc__ = _ADAPTIVE_DOC.format(d=1)
    _d = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    __doc__ = _ADAPTIVE_DOC.format(d=2)
    _d = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    __doc__ = _ADAPTIVE_DOC.format(d=3)
    _d = 3
