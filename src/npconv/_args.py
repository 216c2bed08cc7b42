"""Argument normalisation and shape arithmetic.

This is the one place that turns user arguments into the canonical form every
kernel works on, and the one place that computes output sizes:

* ints become one int per spatial dimension,
* padding becomes one ``(lo, hi)`` pair per spatial dimension, in dimension
  order (never the last-dim-first order of ``F.pad``),
* unbatched input ``(C, *spatial)`` becomes batched ``(1, C, *spatial)``,
* the dtype is settled: float32/float64 computed natively, float16 computed
  in float32 and returned as float16.

Notation (used across the package): N batch, C_in / C_out channels, G groups,
d spatial dims, S input size, k kernel, s stride, dil dilation,
p_lo / p_hi padding, O output size (per dimension).

Output size of a convolution (floor division)::

    O = floor((S + p_lo + p_hi - dil*(k-1) - 1) / s) + 1

Output size of a transposed convolution::

    O = (S-1)*s - p_lo - p_hi + dil*(k-1) + output_padding + 1

Every validation error is raised here, before any compute, as ``ValueError``
(``TypeError`` for dtypes) naming the argument, the expected and the given value.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
Pads = tuple  # tuple of (lo, hi) pairs, one per spatial dim


# --------------------------------------------------------------------------
# dtypes and arrays
# --------------------------------------------------------------------------
def as_float_array(name: str, value, fn: str) -> np.ndarray:
    """Return ``value`` as an ndarray with a float dtype (no copy if possible).

    Raises TypeError for integer, bool, complex, object and other non-float data.
    """
    array = np.asarray(value)
    if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
        raise TypeError(
            f"{fn}: '{name}' must have dtype float16, float32 or float64, "
            f"got dtype {array.dtype}"
        )
    return array


def result_dtypes(*arrays) -> tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) of a call on these float arrays.

    The result follows ``np.result_type``; float16 is computed in float32 so
    that sums over long windows do not lose half their digits.
    """
    result = np.result_type(*[a for a in arrays if a is not None])
    compute = np.dtype(np.float32) if result == np.float16 else result
    return compute, result


def as_compute(array: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous array in the compute dtype (no copy when it already is one).

    BLAS picks its kernel by operand layout, and kernels round differently;
    one canonical layout makes every memory layout give the same bits.
    """
    return np.ascontiguousarray(array, dtype=dtype)


def check_ndim(name: str, array: np.ndarray, allowed: Sequence[int], fn: str, what: str):
    if array.ndim not in allowed:
        expected = " or ".join(str(a) for a in allowed)
        raise ValueError(
            f"{fn}: '{name}' must be {expected}-dimensional {what}, "
            f"got shape {tuple(array.shape)} ({array.ndim}-d)"
        )


# --------------------------------------------------------------------------
# scalar / per-dimension arguments
# --------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_tuple(name: str, value, d: int, fn: str, minimum: int = 1) -> tuple[int, ...]:
    """Normalise an int or a sequence of ``d`` ints to a ``d``-tuple of ints >= minimum."""
    if _is_int(value):
        values = (int(value),) * d
    elif isinstance(value, (tuple, list, np.ndarray)) and all(_is_int(v) for v in value):
        values = tuple(int(v) for v in value)
        if len(values) != d:
            raise ValueError(
                f"{fn}: '{name}' must be an int or {d} ints (one per spatial dim), "
                f"got {tuple(value)!r} ({len(values)} values)"
            )
    else:
        raise ValueError(
            f"{fn}: '{name}' must be an int or {d} ints (one per spatial dim), got {value!r}"
        )
    if any(v < minimum for v in values):
        raise ValueError(f"{fn}: '{name}' must be >= {minimum} in every dim, got {value!r}")
    return values


def same_padding(in_size, kernel, stride, dilation) -> Pads:
    """Padding that gives ``O = ceil(S / s)``; an odd total puts the extra element at the end.

    total = max((O - 1)*s + dil*(k-1) + 1 - S, 0), lo = total // 2, hi = total - lo.
    For s = 1 this is PyTorch's 'same'; otherwise it is SAME_UPPER of ONNX/TF/JAX.
    """
    pads = []
    for size, k, s, dil in zip(in_size, kernel, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + dil * (k - 1) + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def padding_pairs(padding, d: int, fn: str, *, in_size=None, kernel=None, stride=None,
                  dilation=None, allow_same: bool = True) -> Pads:
    """Normalise every padding form to ``d`` ``(lo, hi)`` pairs in dimension order.

    Accepted: an int; ``d`` ints; ``d`` pairs ``(lo, hi)``; ``"valid"``; ``"same"``
    (needs ``in_size``, ``kernel``, ``stride``, ``dilation``; see ``same_padding``).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * d
        if padding == "same":
            if not allow_same:
                raise ValueError(
                    f"{fn}: padding='same' is not defined for a transposed convolution; "
                    "give an int, one int per dim or (lo, hi) pairs"
                )
            return same_padding(in_size, kernel, stride, dilation)
        raise ValueError(
            f"{fn}: 'padding' must be an int, {d} ints, {d} (lo, hi) pairs, "
            f"'valid' or 'same', got {padding!r}"
        )
    if _is_int(padding):
        pairs = ((int(padding), int(padding)),) * d
    elif isinstance(padding, (tuple, list)) and len(padding) == d and all(_is_int(p) for p in padding):
        pairs = tuple((int(p), int(p)) for p in padding)
    elif (isinstance(padding, (tuple, list)) and len(padding) == d
          and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(v) for v in p)
                  for p in padding)):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise ValueError(
            f"{fn}: 'padding' must be an int, {d} ints, {d} (lo, hi) pairs, "
            f"'valid' or 'same', got {padding!r}"
        )
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"{fn}: 'padding' must be >= 0, got {padding!r}")
    return pairs


# --------------------------------------------------------------------------
# output sizes
# --------------------------------------------------------------------------
def conv_out_size(in_size, pads, kernel, stride, dilation, fn: str = "conv") -> tuple[int, ...]:
    """O = floor((S + p_lo + p_hi - dil*(k-1) - 1) / s) + 1, checked positive."""
    out = []
    for size, (lo, hi), k, s, dil in zip(in_size, pads, kernel, stride, dilation):
        span = dil * (k - 1) + 1  # extent of the dilated kernel
        padded = size + lo + hi
        if padded < span:
            raise ValueError(
                f"{fn}: kernel larger than the padded input: input size {tuple(in_size)}, "
                f"padding {tuple(pads)}, kernel {tuple(kernel)}, dilation {tuple(dilation)} "
                f"give padded size {padded} < dilated kernel extent {span} in one dim "
                "(the output size would be non-positive)"
            )
        out.append((padded - span) // s + 1)
    return tuple(out)


def conv_transpose_out_size(in_size, pads, kernel, stride, dilation, output_padding,
                            fn: str = "conv_transpose") -> tuple[int, ...]:
    """O = (S-1)*s - p_lo - p_hi + dil*(k-1) + output_padding + 1, checked positive."""
    out = []
    for size, (lo, hi), k, s, dil, op in zip(in_size, pads, kernel, stride, dilation, output_padding):
        full = (size - 1) * s + dil * (k - 1) + op + 1
        if full - lo - hi < 1:
            raise ValueError(
                f"{fn}: non-positive output size: input size {tuple(in_size)}, stride "
                f"{tuple(stride)}, kernel {tuple(kernel)}, dilation {tuple(dilation)}, "
                f"output_padding {tuple(output_padding)} and padding {tuple(pads)} give "
                f"{full} - {lo} - {hi} = {full - lo - hi} in one dim"
            )
        out.append(full - lo - hi)
    return tuple(out)


def size_args(input_size, kernel_size, stride, dilation, fn: str):
    """Normalise the arguments of the output-size helpers: ``(d, S, k, s, dil)``.

    ``d`` is ``len(input_size)``; an int ``input_size`` means d = 1.
    """
    in_size = (input_size,) if _is_int(input_size) else tuple(input_size)
    d = len(in_size)
    return (d, int_tuple("input_size", in_size, d, fn), int_tuple("kernel_size", kernel_size, d, fn),
            int_tuple("stride", stride, d, fn), int_tuple("dilation", dilation, d, fn))


def check_output_padding(output_padding, stride, dilation, fn: str):
    for op, s, dil in zip(output_padding, stride, dilation):
        if op >= max(s, dil):
            raise ValueError(
                f"{fn}: 'output_padding' must be smaller than max(stride, dilation) in every "
                f"dim, got output_padding={tuple(output_padding)}, stride={tuple(stride)}, "
                f"dilation={tuple(dilation)}"
            )


# --------------------------------------------------------------------------
# whole-call normalisation
# --------------------------------------------------------------------------
class Geometry(NamedTuple):
    """Canonical description of one convolution (or its transpose).

    ``in_size`` is the spatial size of the conv input, ``out_size`` of its output
    (for a transposed conv these are swapped relative to the user's x / y).
    ``pads`` are ``(lo, hi)`` pairs on the conv input.
    """
    d: int
    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple
    groups: int
    in_size: tuple
    out_size: tuple

    @property
    def padded_size(self) -> tuple:
        return tuple(s + lo + hi for s, (lo, hi) in zip(self.in_size, self.pads))

    @property
    def pointwise(self) -> bool:
        """1x1 kernel, stride 1, no padding: X̃ of one sample is the input itself."""
        return (all(k == 1 for k in self.kernel) and all(s == 1 for s in self.stride)
                and not any(lo or hi for lo, hi in self.pads))


def _batch(x: np.ndarray, d: int, name: str, fn: str) -> tuple[np.ndarray, bool]:
    """(N, C, *spatial) view of x and whether x was unbatched."""
    check_ndim(name, x, (d + 1, d + 2), fn, f"(N, C, *spatial) or (C, *spatial) for d={d}")
    if x.ndim == d + 1:
        return x[None], True
    return x, False


def _check_groups(groups, fn):
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"{fn}: 'groups' must be a positive int, got {groups!r}")
    return int(groups)


def _check_bias(bias, channels, fn):
    if bias is None:
        return None
    bias = as_float_array("bias", bias, fn)
    if bias.shape != (channels,):
        raise ValueError(
            f"{fn}: 'bias' must have shape ({channels},) (one per output channel), "
            f"got shape {tuple(bias.shape)}"
        )
    return bias


def _spatial_dims(weight: np.ndarray, expect_d, fn: str) -> int:
    if weight.ndim not in (3, 4, 5):
        raise ValueError(
            f"{fn}: 'weight' must be 3-, 4- or 5-dimensional (channels, channels, *kernel), "
            f"got shape {tuple(weight.shape)}"
        )
    d = weight.ndim - 2
    if expect_d is not None and d != expect_d:
        raise ValueError(
            f"{fn}: 'weight' must be {expect_d + 2}-dimensional for a {expect_d}-d "
            f"convolution, got shape {tuple(weight.shape)} ({weight.ndim}-d)"
        )
    if any(k < 1 for k in weight.shape):
        raise ValueError(f"{fn}: 'weight' must have no zero-sized dim, got shape {tuple(weight.shape)}")
    return d


class ConvCall(NamedTuple):
    x: np.ndarray          # (N, C_in, *S), compute dtype
    weight: np.ndarray     # (C_out, C_in/G, *k), compute dtype
    bias: object           # (C_out,) or None, compute dtype
    geom: Geometry
    padding_mode: str
    unbatched: bool
    result_dtype: np.dtype


def conv_call(x, weight, bias, stride, padding, dilation, groups, padding_mode,
              fn: str = "conv", expect_d=None) -> ConvCall:
    """Validate and normalise the arguments of a (forward) convolution."""
    x = as_float_array("x", x, fn)
    weight = as_float_array("weight", weight, fn)
    d = _spatial_dims(weight, expect_d, fn)
    x, unbatched = _batch(x, d, "x", fn)
    groups = _check_groups(groups, fn)
    c_out, c_in_g = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    c_in = x.shape[1]
    if c_out % groups:
        raise ValueError(
            f"{fn}: 'groups'={groups} must divide the output channels "
            f"(weight.shape[0]={c_out})"
        )
    if c_in != c_in_g * groups:
        raise ValueError(
            f"{fn}: input channels x.shape[1]={c_in} must equal weight.shape[1] * groups "
            f"= {c_in_g} * {groups} = {c_in_g * groups}"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{fn}: 'padding_mode' must be one of {PADDING_MODES}, got {padding_mode!r}")
    bias = _check_bias(bias, c_out, fn)
    stride = int_tuple("stride", stride, d, fn)
    dilation = int_tuple("dilation", dilation, d, fn)
    in_size = tuple(x.shape[2:])
    pads = padding_pairs(padding, d, fn, in_size=in_size, kernel=kernel, stride=stride,
                         dilation=dilation)
    check_mode_padding(padding_mode, pads, in_size, fn)
    out_size = conv_out_size(in_size, pads, kernel, stride, dilation, fn)
    compute, result = result_dtypes(x, weight, bias)
    geom = Geometry(d, kernel, stride, dilation, pads, groups, in_size, out_size)
    return ConvCall(as_compute(x, compute), as_compute(weight, compute),
                    None if bias is None else bias.astype(compute, copy=False),
                    geom, padding_mode, unbatched, result)


def check_mode_padding(mode: str, pads, in_size, fn: str):
    """reflect needs pad < size, circular pad <= size (as PyTorch)."""
    for (lo, hi), size in zip(pads, in_size):
        if mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(
                f"{fn}: padding_mode='reflect' needs padding < input size in every dim, "
                f"got padding {tuple(pads)} for input size {tuple(in_size)}"
            )
        if mode == "circular" and max(lo, hi) > size:
            raise ValueError(
                f"{fn}: padding_mode='circular' needs padding <= input size in every dim, "
                f"got padding {tuple(pads)} for input size {tuple(in_size)}"
            )


def check_grad_shape(dy: np.ndarray, expected: tuple, fn: str, name: str = "dy"):
    if tuple(dy.shape) != tuple(expected):
        raise ValueError(
            f"{fn}: '{name}' must have the output's shape {tuple(expected)}, got {tuple(dy.shape)}"
        )


def prod(values) -> int:
    return math.prod(values)


def unfolded_bytes(channels: int, kernel, itemsize: int) -> int:
    """Bytes of one column of X̃ (one output position): ``channels·prod(k)`` elements."""
    return channels * prod(kernel) * itemsize


class ConvTransposeCall(NamedTuple):
    x: np.ndarray          # (N, C_in, *S), compute dtype
    weight: np.ndarray     # (C_in, C_out/G, *k), compute dtype
    bias: object           # (C_out,) or None
    geom: Geometry         # of the conv whose adjoint this is: in_size = y size, out_size = S
    output_padding: tuple
    unbatched: bool
    result_dtype: np.dtype


def conv_transpose_call(x, weight, bias, stride, padding, output_padding, groups, dilation,
                        fn: str = "conv_transpose", expect_d=None,
                        output_size=None) -> ConvTransposeCall:
    """Validate and normalise the arguments of a transposed convolution.

    ``output_size`` (optional, spatial sizes or the full shape) picks
    ``output_padding``; it must be reachable with 0 <= output_padding < max(s, dil).
    """
    x = as_float_array("x", x, fn)
    weight = as_float_array("weight", weight, fn)
    d = _spatial_dims(weight, expect_d, fn)
    x, unbatched = _batch(x, d, "x", fn)
    groups = _check_groups(groups, fn)
    c_in, c_out_g = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    if c_in % groups:
        raise ValueError(
            f"{fn}: 'groups'={groups} must divide the input channels (weight.shape[0]={c_in})"
        )
    if x.shape[1] != c_in:
        raise ValueError(
            f"{fn}: input channels x.shape[1]={x.shape[1]} must equal weight.shape[0]={c_in} "
            "(transposed-conv weight layout is (C_in, C_out/groups, *k))"
        )
    bias = _check_bias(bias, c_out_g * groups, fn)
    stride = int_tuple("stride", stride, d, fn)
    dilation = int_tuple("dilation", dilation, d, fn)
    pads = padding_pairs(padding, d, fn, allow_same=False)
    in_size = tuple(x.shape[2:])
    if output_size is not None:
        output_padding = output_padding_for(output_size, in_size, pads, kernel, stride,
                                            dilation, fn)
    else:
        output_padding = int_tuple("output_padding", output_padding, d, fn, minimum=0)
    check_output_padding(output_padding, stride, dilation, fn)
    y_size = conv_transpose_out_size(in_size, pads, kernel, stride, dilation, output_padding, fn)
    compute, result = result_dtypes(x, weight, bias)
    geom = Geometry(d, kernel, stride, dilation, pads, groups, y_size, in_size)
    return ConvTransposeCall(as_compute(x, compute), as_compute(weight, compute),
                             None if bias is None else bias.astype(compute, copy=False),
                             geom, output_padding, unbatched, result)


def output_padding_for(output_size, in_size, pads, kernel, stride, dilation,
                       fn: str = "conv_transpose") -> tuple[int, ...]:
    """The output_padding that makes a transposed conv produce ``output_size``.

    ``output_size`` may be the spatial sizes or end with them (a full shape, as
    PyTorch's ``ConvTranspose*.forward(input, output_size)`` accepts).
    """
    d = len(in_size)
    size = tuple(int(v) for v in output_size)[-d:] if not _is_int(output_size) else (int(output_size),) * d
    if len(size) != d:
        raise ValueError(f"{fn}: 'output_size' must give {d} spatial sizes, got {output_size!r}")
    smallest = conv_transpose_out_size(in_size, pads, kernel, stride, dilation, (0,) * d, fn)
    padding = []
    for want, low, s, dil in zip(size, smallest, stride, dilation):
        op = want - low
        if not 0 <= op < max(s, dil):
            raise ValueError(
                f"{fn}: requested output_size {size} is unreachable: sizes from {smallest} to "
                f"{tuple(lo + max(s_, dl) - 1 for lo, s_, dl in zip(smallest, stride, dilation))} "
                f"are possible for input size {tuple(in_size)}"
            )
        padding.append(op)
    return tuple(padding)
