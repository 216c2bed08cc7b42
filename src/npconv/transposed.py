r"""Transposed convolution ("fractionally strided", "deconvolution") and its gradients.

A transposed convolution is the adjoint of a convolution with respect to its
input. For the convolution ``c(u) = conv(u, W)`` that maps a ``(C_out_t, *Y)``
array to a ``(C_in_t, *S)`` one (its weight ``W (C_in_t, C_out_t/G, *k)`` is
exactly the transposed weight, in PyTorch's layout),

    conv_transpose(x, W) = cᵀ(x) = Pᵀ fold(W̃ᵀ X)           ⟨c(u), x⟩ = ⟨u, cᵀ(x)⟩

which is the input gradient of ``conv`` (``npconv.convolution._conv_input_grad``):
every input element scatters ``x · W`` onto the output window it would have
been read from. The "full" output, before any cropping, has size

    F = (S - 1)·s + dil·(k - 1) + 1 + output_padding

and ``padding`` ``(lo, hi)`` crops ``lo`` elements at the start and ``hi`` at the
end (ONNX ``pads``): ``O = F - lo - hi``. ``output_padding`` exists because a
strided convolution maps several input sizes to the same output size (floor
division); it picks which of them the transposed convolution produces, adding
up to ``max(s, dil) - 1`` elements at the end that the windows of the adjoint
convolution never read.

Gradients of ``sum(y * dy)`` follow from bilinearity, with the same pieces:

    dx = c(dy)        = conv(dy, W, stride, padding, dilation, groups)   (first S outputs)
    dW = conv weight gradient with the roles of input and output swapped:
         input = dy, output gradient = x
    db = Σ_{n, o} dy
"""
from __future__ import annotations

from . import _args
from .convolution import (ConvGrads, _add_bias, _batched_grad, _conv_forward, _conv_input_grad,
                   _conv_weight_grad, _finish, _grads, bias_grad, select_algorithm)


def conv_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1, output_size=None, *, algorithm="auto"):
    """N-d transposed convolution, d = ``weight.ndim - 2`` in {1, 2, 3}.

    Parameters
    ----------
    x : array ``(N, C_in, *S)`` or unbatched ``(C_in, *S)``
    weight : array ``(C_in, C_out/groups, *k)`` (PyTorch's transposed layout)
    bias : array ``(C_out,)`` or None
    stride, dilation : int or d ints (>= 1)
    padding : int, d ints or d ``(lo, hi)`` pairs cropped from the full output; ``"valid"`` = 0
    output_padding : int or d ints, ``0 <= output_padding < max(stride, dilation)``
    groups : int dividing C_in and C_out
    output_size : optional spatial output size (or full shape); picks ``output_padding``
    algorithm : ``"auto" | "im2col" | "im2row" | "shifted" | "depthwise" | "winograd"`` (``npconv.convolution.select_algorithm``)

    Returns
    -------
    y : ``(N, C_out, *O)``, ``O = (S-1)·s - p_lo - p_hi + dil·(k-1) + output_padding + 1``

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 3, 3))
    >>> npconv.conv_transpose(x, w, stride=2).shape
    (1, 1, 5, 5)
    >>> npconv.conv_transpose(x, w, stride=2, padding=1, output_size=(4, 4)).shape
    (1, 1, 4, 4)
    """
    call = _args.conv_transpose_call(x, weight, bias, stride, padding, output_padding, groups,
                                     dilation, "conv_transpose", output_size=output_size)
    return _conv_transpose_public(call, algorithm, "conv_transpose")


def _conv_transpose_public(call: _args.ConvTransposeCall, algorithm: str, fn: str):
    # Adjoint of the convolution whose geometry ``call.geom`` describes: fold(W̃ᵀ X), cropped.
    select_algorithm(algorithm, call.geom, call.weight.shape, fn)  # validate before any work
    y = _conv_input_grad(call.x, call.weight, call.geom, "zeros", algorithm)
    return _finish(_add_bias(y, call.bias), call.unbatched, call.result_dtype)


def _conv_transpose_d(d: int):
    name = f"conv_transpose{d}d"

    def conv_transpose_nd(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                          dilation=1, output_size=None, *, algorithm="auto"):
        call = _args.conv_transpose_call(x, weight, bias, stride, padding, output_padding, groups,
                                         dilation, name, expect_d=d, output_size=output_size)
        return _conv_transpose_public(call, algorithm, name)

    conv_transpose_nd.__name__ = conv_transpose_nd.__qualname__ = name
    conv_transpose_nd.__doc__ = (f"{d}-d transposed convolution: ``conv_transpose`` with a check that "
                                 f"``weight.ndim == {d + 2}``. See ``npconv.conv_transpose``.")
    return conv_transpose_nd


conv_transpose1d, conv_transpose2d, conv_transpose3d = (_conv_transpose_d(1), _conv_transpose_d(2),
                                                        _conv_transpose_d(3))


def conv_transpose_grad(dy, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                        bias=True, output_size=None, *, algorithm="auto"):
    """Gradients of ``sum(conv_transpose(x, weight, b, ...) * dy)``.

    Parameters
    ----------
    dy : array ``(N, C_out, *O)`` (or unbatched with unbatched x)
    x, weight, stride, padding, output_padding, groups, dilation, output_size : as in ``conv_transpose``
    bias : bool, whether to return ``dbias`` (else None)
    algorithm : as in ``conv_transpose``

    Returns
    -------
    ConvGrads(dx ``like x``, dweight ``like weight``, dbias ``(C_out,)`` or None)
    """
    fn = "conv_transpose_grad"
    call = _args.conv_transpose_call(x, weight, None, stride, padding, output_padding, groups,
                                     dilation, fn, output_size=output_size)
    geom = call.geom
    c_out = call.weight.shape[1] * geom.groups
    dy = _batched_grad(dy, call.unbatched, (call.x.shape[0], c_out) + geom.in_size, call.x.dtype, fn)
    select_algorithm(algorithm, geom, call.weight.shape, fn)  # validate before any work
    dx = _conv_forward(dy, call.weight, geom, "zeros", algorithm)           # c(dy)
    dweight = _conv_weight_grad(dy, call.x, geom, "zeros", algorithm)       # input dy, output gradient x
    dbias = bias_grad(dy) if bias else None
    return _grads(dx, dweight, dbias, call.unbatched, call.result_dtype)


def conv_transpose_output_size(input_size, kernel_size, stride=1, padding=0, output_padding=0,
                               dilation=1):
    """Spatial output size of a transposed convolution.

    ``O = (S-1)·s - p_lo - p_hi + dil·(k-1) + output_padding + 1`` per dim; d is
    ``len(input_size)`` (an int ``input_size`` means d = 1).

    >>> conv_transpose_output_size((32, 32), 4, stride=2, padding=1)
    (64, 64)
    """
    fn = "conv_transpose_output_size"
    d, in_size, kernel, stride, dilation = _args.size_args(input_size, kernel_size, stride, dilation, fn)
    output_padding = _args.int_tuple("output_padding", output_padding, d, fn, minimum=0)
    _args.check_output_padding(output_padding, stride, dilation, fn)
    pads = _args.padding_pairs(padding, d, fn, allow_same=False)
    return _args.conv_transpose_out_size(in_size, pads, kernel, stride, dilation, output_padding, fn)


__all__ = ["ConvGrads", "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "conv_transpose_grad", "conv_transpose_output_size"]
