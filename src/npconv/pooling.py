"""Pooling (max, average, adaptive average) with gradients, for any number of spatial dims.

Every function works on channels-first input ``x (N, C, *S)`` or unbatched
``(C, *S)`` and is written once for ``d`` spatial dimensions; the named entry
points (``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d`` and their 1-d and
3-d siblings) fix ``d``. Argument normalisation is shared with convolution
(``npconv._args``) and the windows are the zero-copy strided view of
``npconv._im2col.window_view``: the only Python loops run over the ``prod(k)``
kernel offsets, never over pixels.

Notation: N batch, C channels, d spatial dims, S input size, k kernel,
s stride, dil dilation, p_lo / p_hi padding, O output size (per dim),
K = prod(k) kernel offsets.

Output size (PyTorch's ``pooling_output_shape``)::

    O = floor((S + p_lo + p_hi - dil*(k-1) - 1 + (s-1 if ceil_mode else 0)) / s) + 1

and with ``ceil_mode`` the last window is dropped if it would start in the
right padding, i.e. if ``(O-1)*s >= S + p_lo``. A window allowed by
``ceil_mode`` may reach past the right padding; that overhang is neither read
(max) nor counted (average), exactly as PyTorch.

Padding must be at most half the (undilated) kernel, ``p <= k // 2``, as
PyTorch requires. With dilation a window can still fall entirely on padding
(e.g. S = 1, k = 2, dil = 2, p = 1); its max is ``-inf`` and it passes no
gradient (PyTorch routes that gradient to an unrelated element).

Gradients are those of ``sum(y * dy)``:

* max: each ``dy`` goes to the position of its window's maximum; on ties to
  the *first* maximum in row-major kernel order (PyTorch's CPU rule), and a
  NaN in the window wins (NaN propagates, as in PyTorch).
* average: ``dx = fold(dy / divisor)`` broadcast over the window (col2im).
* adaptive average: per dim the bins are ``[floor(i*S/O), ceil((i+1)*S/O))``;
  pooling is the separable product of ``d`` averaging matrices ``A_j (O_j, S_j)``,
  ``y = x ×_1 A_1 ... ×_d A_d``, so ``dx = dy ×_1 A_1ᵀ ... ×_d A_dᵀ``.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from . import _args
from ._im2col import fold_padded, window_view

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_grad", "max_pool2d_grad", "max_pool3d_grad",
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "avg_pool1d_grad", "avg_pool2d_grad", "avg_pool3d_grad",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_avg_pool1d_grad", "adaptive_avg_pool2d_grad", "adaptive_avg_pool3d_grad",
]


# --------------------------------------------------------------------------
# argument normalisation
# --------------------------------------------------------------------------
class PoolCall(NamedTuple):
    """Canonical description of one windowed pooling call."""
    x: np.ndarray          # (N, C, *S), compute dtype
    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple            # (lo, hi) per dim, as given
    extra_hi: tuple        # extra right padding a ceil_mode window needs beyond p_hi
    in_size: tuple         # S
    out_size: tuple        # O
    unbatched: bool
    result_dtype: np.dtype

    @property
    def padded_size(self) -> tuple:
        return tuple(size + lo + hi + extra
                     for size, (lo, hi), extra in zip(self.in_size, self.pads, self.extra_hi))

    def crop(self, xp: np.ndarray) -> np.ndarray:
        """The input part ``(N, C, *S)`` of a padded array ``(N, C, *padded_size)``."""
        inner = tuple(slice(lo, lo + size) for (lo, _), size in zip(self.pads, self.in_size))
        return xp[(slice(None), slice(None)) + inner]

    def pad(self, x: np.ndarray, value: float) -> np.ndarray:
        """``x`` padded by ``pads`` plus the ceil-mode overhang, filled with ``value``."""
        widths = ((0, 0), (0, 0)) + tuple(
            (lo, hi + extra) for (lo, hi), extra in zip(self.pads, self.extra_hi))
        if not any(lo or hi for lo, hi in widths):
            return x
        return np.pad(x, widths, mode="constant", constant_values=value)

    def finish(self, y: np.ndarray) -> np.ndarray:
        """Undo the batching and the float16 promotion."""
        y = y.astype(self.result_dtype, copy=False)
        return y[0] if self.unbatched else y


def pool_out_size(in_size, pads, kernel, stride, dilation, ceil_mode, fn):
    """O per dim (PyTorch's ``pooling_output_shape``), checked positive."""
    floor_size = _args.conv_out_size(in_size, pads, kernel, stride, dilation, fn)
    if not ceil_mode:
        return floor_size
    out = []
    for size, (lo, hi), k, s, dil in zip(in_size, pads, kernel, stride, dilation):
        o = (size + lo + hi - dil * (k - 1) - 1 + (s - 1)) // s + 1
        # The last window must start inside the input or the left padding.
        if (o - 1) * s >= size + lo:
            o -= 1
        out.append(o)
    return tuple(out)


def _pool_call(x, d, kernel_size, stride, padding, dilation, ceil_mode, fn) -> PoolCall:
    x = _args.as_float_array("x", x, fn)
    _args.check_ndim("x", x, (d + 1, d + 2), fn, f"(N, C, *spatial) or (C, *spatial) for d={d}")
    unbatched = x.ndim == d + 1
    if unbatched:
        x = x[None]
    kernel = _args.int_tuple("kernel_size", kernel_size, d, fn)
    stride = kernel if stride is None else _args.int_tuple("stride", stride, d, fn)
    dilation = _args.int_tuple("dilation", dilation, d, fn)
    if isinstance(padding, str):
        raise ValueError(f"{fn}: 'padding' must be an int, {d} ints or {d} (lo, hi) pairs, "
                         f"got {padding!r}")
    pads = _args.padding_pairs(padding, d, fn)
    if any(max(lo, hi) > k // 2 for (lo, hi), k in zip(pads, kernel)):
        raise ValueError(
            f"{fn}: 'padding' must be at most half the kernel size (p <= k // 2) in every dim, "
            f"got padding {pads} for kernel_size {kernel}"
        )
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise ValueError(f"{fn}: 'ceil_mode' must be a bool, got {ceil_mode!r}")
    in_size = tuple(x.shape[2:])
    out_size = pool_out_size(in_size, pads, kernel, stride, dilation, bool(ceil_mode), fn)
    extra_hi = tuple(
        max(0, (o - 1) * s + dil * (k - 1) + 1 - (size + lo + hi))
        for o, s, dil, k, size, (lo, hi) in zip(out_size, stride, dilation, kernel, in_size, pads))
    compute, result = _args.result_dtypes(x)
    # One canonical C-contiguous layout, so every memory layout gives the same bits.
    return PoolCall(np.ascontiguousarray(x, dtype=compute), kernel, stride, dilation, pads, extra_hi,
                    in_size, out_size, unbatched, result)


def _batched_dy(dy, call, fn) -> np.ndarray:
    """``dy`` checked against the output shape, batched, in the compute dtype."""
    dy = _args.as_float_array("dy", dy, fn)
    expected = (call.x.shape[:2] + call.out_size)[1 if call.unbatched else 0:]
    _args.check_grad_shape(dy, expected, fn)
    dy = dy.astype(call.x.dtype, copy=False)
    return dy[None] if call.unbatched else dy


def _offsets(kernel):
    """Kernel offsets in row-major order (the order PyTorch scans a window)."""
    return itertools.product(*(range(k) for k in kernel))


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
def _max_pool_forward(call: PoolCall) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax), both (N, C, *O); argmax is the row-major kernel-offset index."""
    xp = call.pad(call.x, -np.inf)                                 # (N, C, *P)
    windows = window_view(xp, call.kernel, call.stride, call.dilation, call.out_size)
    everything = (slice(None), slice(None))
    check_nan = bool(np.isnan(call.x).any())      # one pass, saves one per kernel offset
    best = None
    argmax = np.zeros(call.x.shape[:2] + call.out_size, dtype=np.intp)
    for flat, offset in enumerate(_offsets(call.kernel)):
        candidate = windows[everything + offset]                   # (N, C, *O) view
        if best is None:
            best = candidate.copy()
            continue
        # PyTorch's CPU kernel: `if (val > maxval || isnan(val))` -- strict '>' keeps the
        # first maximum on ties, and a NaN always takes over (so NaN propagates).
        take = candidate > best
        if check_nan:
            take |= np.isnan(candidate)
        np.copyto(best, candidate, where=take)
        np.copyto(argmax, flat, where=take)
    return best, argmax


def _max_pool_backward(dy: np.ndarray, argmax: np.ndarray, call: PoolCall) -> np.ndarray:
    """dx (N, C, *S) from dy and argmax (both (N, C, *O)): route dy to each window's max."""
    n_offsets = math.prod(call.kernel)
    d = len(call.kernel)
    offset_ids = np.arange(n_offsets).reshape((1, 1, n_offsets) + (1,) * d)
    # cols[n, c, m, i] = dy[n, c, i] if window i's maximum sits at kernel offset m, else 0
    cols = np.where(argmax[:, :, None] == offset_ids, dy[:, :, None], 0).astype(dy.dtype)
    cols = cols.reshape(dy.shape[:2] + call.kernel + call.out_size)      # (N, C, *k, *O)
    dxp = fold_padded(cols, call.padded_size, call.kernel, call.stride, call.dilation)
    return call.crop(dxp)


def _max_pool(d, x, kernel_size, stride, padding, dilation, ceil_mode, fn):
    call = _pool_call(x, d, kernel_size, stride, padding, dilation, ceil_mode, fn)
    y, _ = _max_pool_forward(call)
    return call.finish(y)


def _max_pool_grad(d, dy, x, kernel_size, stride, padding, dilation, ceil_mode, fn):
    call = _pool_call(x, d, kernel_size, stride, padding, dilation, ceil_mode, fn)
    dy = _batched_dy(dy, call, fn)
    _, argmax = _max_pool_forward(call)
    return call.finish(_max_pool_backward(dy, argmax, call))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """2-d max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float
    kernel_size, stride, dilation : int or (int, int)
        ``stride`` defaults to ``kernel_size``.
    padding : int, (int, int) or ((lo, hi), (lo, hi))
        Implicit ``-inf`` padding; at most ``k // 2`` per side.
    ceil_mode : bool
        Use ceil instead of floor for the output size (see module docstring).

    Returns
    -------
    y : ndarray, (N, C, H_out, W_out) (unbatched if ``x`` was)
        ``H_out = floor((H + p_lo + p_hi - dil*(k-1) - 1) / s) + 1`` (floor mode).

    Raises
    ------
    ValueError
        Wrong ``x`` ndim, bad kernel/stride/dilation/padding, empty output.
    TypeError
        Non-float ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")


def max_pool2d_grad(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Gradient of ``sum(max_pool2d(x, ...) * dy)`` with respect to ``x``.

    Each ``dy`` element goes to its window's maximum (the first one on ties, as
    PyTorch); windows overlap when ``stride < kernel_size``, and then the
    contributions add up.

    Parameters
    ----------
    dy : ndarray, the output's shape (N, C, H_out, W_out) (or unbatched)
    x, kernel_size, stride, padding, dilation, ceil_mode : as ``max_pool2d``

    Returns
    -------
    dx : ndarray, ``x.shape``
    """
    return _max_pool_grad(2, dy, x, kernel_size, stride, padding, dilation, ceil_mode,
                          "max_pool2d_grad")


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """1-d max pooling, ``x (N, C, L)`` or ``(C, L)``; see ``max_pool2d``."""
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool1d")


def max_pool1d_grad(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Gradient of ``sum(max_pool1d(x, ...) * dy)`` w.r.t. ``x``; see ``max_pool2d_grad``."""
    return _max_pool_grad(1, dy, x, kernel_size, stride, padding, dilation, ceil_mode,
                          "max_pool1d_grad")


def max_pool3d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """3-d max pooling, ``x (N, C, D, H, W)`` or ``(C, D, H, W)``; see ``max_pool2d``."""
    return _max_pool(3, x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool3d")


def max_pool3d_grad(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Gradient of ``sum(max_pool3d(x, ...) * dy)`` w.r.t. ``x``; see ``max_pool2d_grad``."""
    return _max_pool_grad(3, dy, x, kernel_size, stride, padding, dilation, ceil_mode,
                          "max_pool3d_grad")


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------
def _check_divisor(divisor_override, fn):
    if divisor_override is None:
        return None
    if not _args._is_int(divisor_override) or divisor_override == 0:
        raise ValueError(f"{fn}: 'divisor_override' must be a nonzero int or None, "
                         f"got {divisor_override!r}")
    return int(divisor_override)


def _avg_divisor(call: PoolCall, count_include_pad: bool, divisor_override, dtype) -> np.ndarray:
    """Divisor of every window, shape (*O), broadcastable against (N, C, *O).

    PyTorch (per dim): start = i*s - p_lo, end = min(start + k, S + p_hi);
    with count_include_pad the count is end - start (padding counts, the ceil-mode
    overhang past the right padding does not), otherwise
    min(end, S) - max(start, 0) (input elements only). The divisor is the product over dims.
    """
    if divisor_override is not None:
        return np.asarray(divisor_override, dtype=dtype)
    divisor = np.ones((), dtype=dtype)
    for axis, (size, (lo, hi), k, s, o) in enumerate(
            zip(call.in_size, call.pads, call.kernel, call.stride, call.out_size)):
        start = np.arange(o) * s - lo
        end = np.minimum(start + k, size + hi)
        if count_include_pad:
            count = end - start
        else:
            count = np.minimum(end, size) - np.maximum(start, 0)
        shape = [1] * len(call.kernel)
        shape[axis] = o
        divisor = divisor * count.astype(dtype).reshape(shape)
    return divisor


def _avg_pool_forward(call: PoolCall, count_include_pad, divisor_override) -> np.ndarray:
    xp = call.pad(call.x, 0.0)
    windows = window_view(xp, call.kernel, call.stride, call.dilation, call.out_size)
    # Sum the window in row-major kernel order, as PyTorch's kernel does (one whole-array
    # add per kernel offset; the order is fixed, so the result does not depend on layout).
    window_sums = None
    for offset in _offsets(call.kernel):
        part = windows[(slice(None), slice(None)) + offset]          # (N, C, *O) view
        window_sums = part.copy() if window_sums is None else window_sums + part
    return window_sums / _avg_divisor(call, count_include_pad, divisor_override, call.x.dtype)


def _avg_pool_backward(dy, call: PoolCall, count_include_pad, divisor_override) -> np.ndarray:
    d = len(call.kernel)
    share = dy / _avg_divisor(call, count_include_pad, divisor_override, dy.dtype)  # (N, C, *O)
    # Every element of a window receives the same share: a broadcast (no copy) of
    # shape (N, C, *k, *O) that fold (col2im) adds back onto the padded input.
    cols = np.broadcast_to(share.reshape(share.shape[:2] + (1,) * d + share.shape[2:]),
                           share.shape[:2] + call.kernel + share.shape[2:])
    dxp = fold_padded(cols, call.padded_size, call.kernel, call.stride, call.dilation)
    return call.crop(dxp)


def _avg_pool(d, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, fn):
    call = _pool_call(x, d, kernel_size, stride, padding, 1, ceil_mode, fn)
    divisor_override = _check_divisor(divisor_override, fn)
    return call.finish(_avg_pool_forward(call, bool(count_include_pad), divisor_override))


def _avg_pool_grad(d, dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                   divisor_override, fn):
    call = _pool_call(x, d, kernel_size, stride, padding, 1, ceil_mode, fn)
    divisor_override = _check_divisor(divisor_override, fn)
    dy = _batched_dy(dy, call, fn)
    return call.finish(_avg_pool_backward(dy, call, bool(count_include_pad), divisor_override))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-d average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float
    kernel_size, stride : int or (int, int)
        ``stride`` defaults to ``kernel_size``.
    padding : int, (int, int) or ((lo, hi), (lo, hi))
        Implicit zero padding; at most ``k // 2`` per side.
    ceil_mode : bool
    count_include_pad : bool
        Whether padded zeros count in the divisor (see ``_avg_divisor``).
    divisor_override : int or None
        If given, every window sum is divided by it.

    Returns
    -------
    y : ndarray, (N, C, H_out, W_out) (unbatched if ``x`` was)

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, "avg_pool2d")


def avg_pool2d_grad(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None):
    """Gradient of ``sum(avg_pool2d(x, ...) * dy)`` w.r.t. ``x``: ``fold(dy / divisor)``.

    Parameters
    ----------
    dy : ndarray, the output's shape
    x : ndarray, the input (only its shape and dtype are used)
    others : as ``avg_pool2d``

    Returns
    -------
    dx : ndarray, ``x.shape``
    """
    return _avg_pool_grad(2, dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override, "avg_pool2d_grad")


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """1-d average pooling, ``x (N, C, L)`` or ``(C, L)``; see ``avg_pool2d``."""
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, "avg_pool1d")


def avg_pool1d_grad(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None):
    """Gradient of ``sum(avg_pool1d(x, ...) * dy)`` w.r.t. ``x``."""
    return _avg_pool_grad(1, dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override, "avg_pool1d_grad")


def avg_pool3d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """3-d average pooling, ``x (N, C, D, H, W)`` or ``(C, D, H, W)``; see ``avg_pool2d``."""
    return _avg_pool(3, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, "avg_pool3d")


def avg_pool3d_grad(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None):
    """Gradient of ``sum(avg_pool3d(x, ...) * dy)`` w.r.t. ``x``."""
    return _avg_pool_grad(3, dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override, "avg_pool3d_grad")


# --------------------------------------------------------------------------
# adaptive average pooling
# --------------------------------------------------------------------------
class AdaptiveCall(NamedTuple):
    x: np.ndarray            # (N, C, *S), compute dtype
    matrices: tuple          # per dim A_j (O_j, S_j): A[i, start_i:end_i] = 1 / (end_i - start_i)
    out_size: tuple
    unbatched: bool
    result_dtype: np.dtype

    def finish(self, y):
        y = y.astype(self.result_dtype, copy=False)
        return y[0] if self.unbatched else y


def _adaptive_call(x, d, output_size, fn) -> AdaptiveCall:
    x = _args.as_float_array("x", x, fn)
    _args.check_ndim("x", x, (d + 1, d + 2), fn, f"(N, C, *spatial) or (C, *spatial) for d={d}")
    unbatched = x.ndim == d + 1
    if unbatched:
        x = x[None]
    in_size = tuple(x.shape[2:])
    # None keeps that dim's input size (PyTorch).
    if isinstance(output_size, (tuple, list)) and len(output_size) == d:
        output_size = tuple(size if o is None else o for o, size in zip(output_size, in_size))
    out_size = _args.int_tuple("output_size", output_size, d, fn)
    if any(s < 1 for s in in_size):
        raise ValueError(f"{fn}: 'x' must have non-empty spatial dims, got shape {tuple(x.shape)}")
    compute, result = _args.result_dtypes(x)
    matrices = []
    for size, o in zip(in_size, out_size):
        i = np.arange(o)
        start = (i * size) // o                      # floor(i*S/O)
        end = -((-(i + 1) * size) // o)              # ceil((i+1)*S/O)
        columns = np.arange(size)
        inside = (columns >= start[:, None]) & (columns < end[:, None])   # (O, S)
        matrices.append((inside / (end - start)[:, None]).astype(compute))
    return AdaptiveCall(np.ascontiguousarray(x, dtype=compute), tuple(matrices), out_size, unbatched, result)


def _apply_per_dim(array: np.ndarray, matrices, transpose: bool) -> np.ndarray:
    """Contract spatial axis j of ``array (N, C, *)`` with ``A_j`` (or ``A_jᵀ``), j = 1..d."""
    for axis, matrix in enumerate(matrices, start=2):
        moved = np.moveaxis(array, axis, -1)
        moved = moved @ (matrix if transpose else matrix.T)
        array = np.moveaxis(moved, -1, axis)
    return np.ascontiguousarray(array)


def _adaptive(d, x, output_size, fn):
    call = _adaptive_call(x, d, output_size, fn)
    return call.finish(_apply_per_dim(call.x, call.matrices, transpose=False))


def _adaptive_grad(d, dy, x, output_size, fn):
    call = _adaptive_call(x, d, output_size, fn)
    dy = _batched_dy(dy, call, fn)
    return call.finish(_apply_per_dim(dy, call.matrices, transpose=True))


def adaptive_avg_pool2d(x, output_size):
    """2-d adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output cell ``i`` of a dim averages input ``[floor(i*S/O), ceil((i+1)*S/O))``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float
    output_size : int or (int or None, int or None)
        None keeps that dim's input size.

    Returns
    -------
    y : ndarray, (N, C, *output_size) (unbatched if ``x`` was)

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_avg_pool2d(np.arange(6.0).reshape(1, 1, 2, 3), 1)[0, 0]
    array([[2.5]])
    """
    return _adaptive(2, x, output_size, "adaptive_avg_pool2d")


def adaptive_avg_pool2d_grad(dy, x, output_size):
    """Gradient of ``sum(adaptive_avg_pool2d(x, output_size) * dy)`` w.r.t. ``x``.

    Returns
    -------
    dx : ndarray, ``x.shape``
    """
    return _adaptive_grad(2, dy, x, output_size, "adaptive_avg_pool2d_grad")


def adaptive_avg_pool1d(x, output_size):
    """1-d adaptive average pooling, ``x (N, C, L)`` or ``(C, L)``."""
    return _adaptive(1, x, output_size, "adaptive_avg_pool1d")


def adaptive_avg_pool1d_grad(dy, x, output_size):
    """Gradient of ``sum(adaptive_avg_pool1d(x, output_size) * dy)`` w.r.t. ``x``."""
    return _adaptive_grad(1, dy, x, output_size, "adaptive_avg_pool1d_grad")


def adaptive_avg_pool3d(x, output_size):
    """3-d adaptive average pooling, ``x (N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return _adaptive(3, x, output_size, "adaptive_avg_pool3d")


def adaptive_avg_pool3d_grad(dy, x, output_size):
    """Gradient of ``sum(adaptive_avg_pool3d(x, output_size) * dy)`` w.r.t. ``x``."""
    return _adaptive_grad(3, dy, x, output_size, "adaptive_avg_pool3d_grad")
