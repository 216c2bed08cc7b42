"""Convolution layers ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``.

One base ``_ConvNd`` holds the arguments, the parameters and the checks; the
six public classes only fix ``d`` and whether the layer is transposed. The
computation is the functional core's (``npconv.conv`` / ``conv_grad`` /
``conv_transpose`` / ``conv_transpose_grad``); a layer only caches its input.

Weight layout (PyTorch's)::

    Conv:          weight (C_out, C_in / groups, *k)
    ConvTranspose: weight (C_in, C_out / groups, *k)
    bias           (C_out,)

Shape: ``x (N, C_in, *S)`` or unbatched ``(C_in, *S)`` gives ``y (N, C_out, *O)``::

    Conv:          O = floor((S + p_lo + p_hi - dil*(k-1) - 1) / s) + 1
    ConvTranspose: O = (S-1)*s - p_lo - p_hi + dil*(k-1) + output_padding + 1

Initialisation (PyTorch's ``reset_parameters``): ``weight ~ U(-b, b)``,
``bias ~ U(-b, b)``, ``b = 1/sqrt(fan_in)``, ``fan_in = weight.shape[1] * prod(k)``
(see ``npconv.nn.init``; draws come from ``rng=`` or the seedable module generator).
"""
from __future__ import annotations

import numpy as np

from .. import _args
from .. import functional as F
from . import init
from .module import Module, check_dtype

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


def _normalise_padding(padding, d, layer):
    """Padding as the layer stores it: a string, a d-tuple of ints, or a d-tuple of (lo, hi) pairs."""
    if isinstance(padding, str):
        return padding
    pairs = _args.padding_pairs(padding, d, layer)   # validates, raises naming 'padding'
    if all(lo == hi for lo, hi in pairs):
        return tuple(lo for lo, _ in pairs)
    return pairs


class _ConvNd(Module):
    _d = 0
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", output_padding=0, dtype=np.float32,
                 rng=None):
        super().__init__()
        name = type(self).__name__
        d = self._d
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):
            if not _args._is_int(value) or value < 1:
                raise ValueError(f"{name}: '{arg}' must be a positive int, got {value!r}")
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} must be divisible by "
                             f"groups={groups}")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels={out_channels} must be divisible by "
                             f"groups={groups}")
        valid_modes = ("zeros",) if self._transposed else _args.PADDING_MODES
        if padding_mode not in valid_modes:
            raise ValueError(f"{name}: 'padding_mode' must be one of {valid_modes}, "
                             f"got {padding_mode!r}")
        if isinstance(padding, str):
            if padding not in ("valid", "same") or (self._transposed and padding != "valid"):
                allowed = "'valid'" if self._transposed else "'valid' or 'same'"
                raise ValueError(f"{name}: string 'padding' must be {allowed}, got {padding!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _args.int_tuple("kernel_size", kernel_size, d, name)
        self.stride = _args.int_tuple("stride", stride, d, name)
        self.padding = _normalise_padding(padding, d, name)
        self.dilation = _args.int_tuple("dilation", dilation, d, name)
        self.output_padding = _args.int_tuple("output_padding", output_padding, d, name, minimum=0)
        if self._transposed:
            _args.check_output_padding(self.output_padding, self.stride, self.dilation, name)
        self.groups = int(groups)
        self.padding_mode = padding_mode
        dtype = check_dtype(dtype, name)
        if self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self._weight_and_bias(shape, self.out_channels, bias, dtype, rng)

    def reset_parameters(self, rng=None) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) weight, U(±1/sqrt(fan_in)) bias."""
        init.default_init_(self.weight, self.bias, rng=rng)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self._d:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self._d:
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._d:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text

    def _check_input(self, x) -> np.ndarray:
        d = self._d
        x = self._check_float_input(x, (d + 1, d + 2), "(N, C, *spatial) or (C, *spatial)")
        channels = x.shape[-d - 1]
        if channels != self.in_channels:
            raise self._layer_error(f"expected input with {self.in_channels} channels "
                                    f"(x.shape[{x.ndim - d - 1}]), got {channels} "
                                    f"(x.shape={tuple(x.shape)})")
        return x

    def _bias_data(self):
        return None if self.bias is None else self.bias.data

    def _accumulate(self, grads) -> None:
        self.weight.accumulate_grad(grads.dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(grads.dbias)


class _Conv(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, dtype, rng)

    def forward(self, x):
        """y = conv(x, weight, bias); caches x."""
        x = self._check_input(x)
        y = F.conv(x, self.weight.data, self._bias_data(), self.stride, self.padding,
                   self.dilation, self.groups, self.padding_mode)
        self._ctx = x
        return y

    def backward(self, dy):
        """dx; adds dweight (and dbias) to the parameters' grads."""
        x = self._saved()
        grads = F.conv_grad(dy, x, self.weight.data, self.stride, self.padding, self.dilation,
                            self.groups, self.padding_mode, bias=self.bias is not None)
        self._accumulate(grads)
        return grads.dx


class _ConvTranspose(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, dtype, rng)

    def _output_padding(self, x, output_size):
        """``output_padding``, or the one that gives ``output_size`` (PyTorch's ``_output_padding``)."""
        if output_size is None:
            return self.output_padding
        d = self._d
        pads = _args.padding_pairs(self.padding, d, self._short_repr(), allow_same=False)
        return _args.output_padding_for(output_size, tuple(x.shape[-d:]), pads, self.kernel_size,
                                        self.stride, self.dilation, self._short_repr())

    def forward(self, x, output_size=None):
        """y = conv_transpose(x, weight, bias); ``output_size`` (spatial or full shape) picks output_padding."""
        x = self._check_input(x)
        output_padding = self._output_padding(x, output_size)
        y = F.conv_transpose(x, self.weight.data, self._bias_data(), self.stride, self.padding,
                             output_padding, self.groups, self.dilation)
        self._ctx = (x, output_padding)
        return y

    def backward(self, dy):
        """dx; adds dweight (and dbias) to the parameters' grads."""
        x, output_padding = self._saved()
        grads = F.conv_transpose_grad(dy, x, self.weight.data, self.stride, self.padding,
                                      output_padding, self.groups, self.dilation,
                                      bias=self.bias is not None)
        self._accumulate(grads)
        return grads.dx


_CONV_DOC = """{d}-d convolution layer, as ``torch.nn.Conv{d}d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or {d} ints
    padding : int, {d} ints, {d} (lo, hi) pairs, 'valid' or 'same'
    groups : int dividing both channel counts
    bias : bool
    padding_mode : 'zeros', 'reflect', 'replicate' or 'circular'
    dtype : np.float32 (default) or np.float64, of the parameters
    rng : np.random.Generator or seed, optional (default: ``npconv.nn.init``'s generator)

    Shape: x (N, C_in, *S) or (C_in, *S) -> y (N, C_out, *O),
    O = floor((S + p_lo + p_hi - dil*(k-1) - 1) / s) + 1.
    weight (C_out, C_in/groups, *k), bias (C_out,).
    """

_CONV_T_DOC = """{d}-d transposed convolution layer, as ``torch.nn.ConvTranspose{d}d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or {d} ints
    padding : int, {d} ints or {d} (lo, hi) pairs cropped from the full output
    output_padding : int or {d} ints, < max(stride, dilation): one conv output
        size comes from several input sizes, this picks the larger one
    groups : int ; bias : bool ; padding_mode : 'zeros' only
    dtype : np.float32 (default) or np.float64 ; rng : optional Generator or seed

    ``forward(x, output_size=None)``: ``output_size`` (spatial sizes or a full
    shape) selects ``output_padding`` instead, as PyTorch.

    Shape: x (N, C_in, *S) -> y (N, C_out, *O),
    O = (S-1)*s - p_lo - p_hi + dil*(k-1) + output_padding + 1.
    weight (C_in, C_out/groups, *k), bias (C_out,).
    """


class Conv1d(_Conv):
    __doc__ = _CONV_DOC.format(d=1)
    _d = 1


class Conv2d(_Conv):
    __doc__ = _CONV_DOC.format(d=2)
    _d = 2


class Conv3d(_Conv):
    __doc__ = _CONV_DOC.format(d=3)
    _d = 3


class ConvTranspose1d(_ConvTranspose):
    __doc__ = _CONV_T_DOC.format(d=1)
    _d = 1


class ConvTranspose2d(_ConvTranspose):
    __doc__ = _CONV_T_DOC.format(d=2)
    _d = 2


class ConvTranspose3d(_ConvTranspose):
    __doc__ = _CONV_T_DOC.format(d=3)
    _d = 3
