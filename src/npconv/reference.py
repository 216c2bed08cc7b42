"""Slow, obviously correct loop reference for every convolution in npconv.

This module is an *oracle*: each function is written straight from the
summation formula it computes, with explicit Python loops over batch items,
channels and positions, in float64. It is meant for small sizes in tests and
for readers who want to see the definitions without any vectorisation trick.
It is deliberately self-contained: it imports nothing from npconv, so a bug in
the fast code (argument normalisation included) cannot hide in both.

Notation: N batch, C_in / C_out channels, G groups, C_in_g = C_in/G,
C_out_g = C_out/G, d spatial dims, S input size, k kernel, s stride,
dil dilation, (lo, hi) padding, O output size, m a kernel offset and o an
output position (multi-indices over the d spatial dims).

Convolution (cross-correlation, PyTorch convention), for output channel co in
group g = co // C_out_g::

    Y[n, co, o] = b[co] + sum_{ci < C_in_g} sum_m W[co, ci, m] * Xpad[n, g*C_in_g + ci, o*s + m*dil]
    O = floor((S + lo + hi - dil*(k-1) - 1) / s) + 1

Transposed convolution (the adjoint of the above in x), for input channel ci
in group g = ci // C_in_g::

    Yfull[n, g*C_out_g + co, i*s + m*dil] += X[n, ci, i] * W[ci, co, m]
    full = (S-1)*s + dil*(k-1) + output_padding + 1,   Y = Yfull[lo : full - hi] + b

Every function accepts batched ``(N, C, *S)`` input and unbatched
``(C, *S)`` input (the result is then unbatched too).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "pad", "pad_adjoint", "conv", "conv_grad", "conv_transpose", "conv_transpose_grad",
    "unfold", "fold", "same_pads",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# --------------------------------------------------------------------------
# argument helpers (deliberately independent of npconv._args)
# --------------------------------------------------------------------------
def _per_dim(value, d: int, name: str) -> tuple[int, ...]:
    """An int or ``d`` ints -> ``d``-tuple of ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    values = tuple(int(v) for v in value)
    if len(values) != d:
        raise ValueError(f"reference: '{name}' needs {d} values, got {value!r}")
    return values


def same_pads(in_size, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """(lo, hi) pairs giving O = ceil(S/s), an odd total padding puts the extra at the end.

    total = max((O-1)*s + dil*(k-1) + 1 - S, 0); lo = total // 2; hi = total - lo.
    """
    pads = []
    for size, k, s, dil in zip(in_size, kernel, stride, dilation):
        out = math.ceil(size / s)
        total = max((out - 1) * s + dil * (k - 1) + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _pad_pairs(padding, d: int) -> tuple[tuple[int, int], ...]:
    """int | d ints | d (lo, hi) pairs | "valid" -> d (lo, hi) pairs (no "same" here)."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * d
        raise ValueError(f"reference: unsupported 'padding' {padding!r}")
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * d
    pairs = []
    for p in padding:
        if isinstance(p, (int, np.integer)):
            pairs.append((int(p), int(p)))
        else:
            lo, hi = p
            pairs.append((int(lo), int(hi)))
    if len(pairs) != d:
        raise ValueError(f"reference: 'padding' needs {d} entries, got {padding!r}")
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"reference: 'padding' must be >= 0, got {padding!r}")
    return tuple(pairs)


def _batched(x: np.ndarray, d: int) -> tuple[np.ndarray, bool]:
    if x.ndim == d + 1:
        return x[None], True
    if x.ndim != d + 2:
        raise ValueError(f"reference: 'x' must be {d + 1}- or {d + 2}-d, got shape {x.shape}")
    return x, False


def _positions(shape):
    """Every multi-index of an array of spatial ``shape`` (row-major order)."""
    return itertools.product(*(range(n) for n in shape))


def _window(start, kernel, dilation):
    """Slices selecting ``start + m*dil`` for m = 0..k-1 in every dim."""
    return tuple(slice(b, b + dl * (k - 1) + 1, dl) for b, k, dl in zip(start, kernel, dilation))


# --------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------
def _source_index(j: int, size: int, lo: int, mode: str):
    """Index into the unpadded axis that padded position ``j`` reads, or None (a zero).

    With i = j - lo: zeros -> i if inside else nothing; replicate -> clamp(i);
    circular -> i mod S; reflect (edge not repeated, PyTorch/np 'reflect') ->
    i folded back with period 2(S-1).
    """
    i = j - lo
    if 0 <= i < size:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    if mode == "reflect":
        if size == 1:
            return 0
        period = 2 * (size - 1)
        i %= period
        return i if i < size else period - i
    raise ValueError(f"reference: unknown padding_mode {mode!r}")


def pad(x, pads, mode: str = "zeros") -> np.ndarray:
    """Pad the last ``len(pads)`` axes of ``x`` by (lo, hi) pairs, position by position.

    ``out[..., j] = x[..., src(j)]`` with ``src`` from :func:`_source_index`
    (0 where zeros padding reads nothing). Shape ``(..., *S) -> (..., *(S+lo+hi))``.
    """
    x = np.asarray(x, dtype=np.float64)
    d = len(pads)
    pads = _pad_pairs(pads, d)
    in_size = x.shape[x.ndim - d:]
    out_size = tuple(s + lo + hi for s, (lo, hi) in zip(in_size, pads))
    out = np.zeros(x.shape[:x.ndim - d] + out_size)
    for j in _positions(out_size):
        src = tuple(_source_index(jj, size, lo, mode)
                    for jj, size, (lo, _) in zip(j, in_size, pads))
        if None not in src:
            out[(Ellipsis,) + j] = x[(Ellipsis,) + src]
    return out


def pad_adjoint(dxp, pads, mode: str, in_size) -> np.ndarray:
    """Adjoint of :func:`pad`: every padded position's value is added to the position it read."""
    dxp = np.asarray(dxp, dtype=np.float64)
    d = len(pads)
    pads = _pad_pairs(pads, d)
    dx = np.zeros(dxp.shape[:dxp.ndim - d] + tuple(in_size))
    for j in _positions(dxp.shape[dxp.ndim - d:]):
        src = tuple(_source_index(jj, size, lo, mode)
                    for jj, size, (lo, _) in zip(j, in_size, pads))
        if None not in src:
            dx[(Ellipsis,) + src] += dxp[(Ellipsis,) + j]
    return dx


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
def _conv_setup(x, weight, stride, padding, dilation, groups):
    weight = np.asarray(weight, dtype=np.float64)
    d = weight.ndim - 2
    x, unbatched = _batched(np.asarray(x, dtype=np.float64), d)
    kernel = weight.shape[2:]
    stride = _per_dim(stride, d, "stride")
    dilation = _per_dim(dilation, d, "dilation")
    if isinstance(padding, str) and padding == "same":
        pads = same_pads(x.shape[2:], kernel, stride, dilation)
    else:
        pads = _pad_pairs(padding, d)
    if x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"reference: channels of x {x.shape} and weight {weight.shape} "
                         f"do not match groups={groups}")
    return x, weight, unbatched, kernel, stride, dilation, pads


def _conv_out_size(padded, kernel, stride, dilation):
    out = tuple((p - dl * (k - 1) - 1) // s + 1
                for p, k, s, dl in zip(padded, kernel, stride, dilation))
    if any(o < 1 for o in out):
        raise ValueError(f"reference: non-positive output size {out}")
    return out


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
         padding_mode: str = "zeros") -> np.ndarray:
    """Y[n, co, o] = b[co] + sum_{ci, m} W[co, ci, m] * Xpad[n, g*C_in_g + ci, o*s + m*dil].

    x ``(N, C_in, *S)`` or ``(C_in, *S)``; weight ``(C_out, C_in/G, *k)``;
    returns ``(N, C_out, *O)`` (unbatched if x was), float64.
    """
    x, weight, unbatched, kernel, stride, dilation, pads = _conv_setup(
        x, weight, stride, padding, dilation, groups)
    xp = pad(x, pads, padding_mode)
    n_batch = x.shape[0]
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    out_size = _conv_out_size(xp.shape[2:], kernel, stride, dilation)
    y = np.zeros((n_batch, c_out) + out_size)
    for n, co, o in itertools.product(range(n_batch), range(c_out), _positions(out_size)):
        g = co // c_out_g
        start = tuple(oo * s for oo, s in zip(o, stride))
        window = xp[(n, slice(g * c_in_g, (g + 1) * c_in_g)) + _window(start, kernel, dilation)]
        y[(n, co) + o] = np.sum(weight[co] * window)  # (C_in_g, *k) summed
        if bias is not None:
            y[(n, co) + o] += float(bias[co])
    return y[0] if unbatched else y


def conv_grad(dy, x, weight, stride=1, padding=0, dilation=1, groups=1,
              padding_mode: str = "zeros", bias: bool = True):
    """Gradients of sum(conv(x, weight, b) * dy) by the scatter formulas.

    dXpad[n, g*C_in_g + ci, o*s + m*dil] += W[co, ci, m] * dy[n, co, o];
    dX = adjoint of the padding applied to dXpad (padded positions fold back
    to the positions they copied); dW[co, ci, m] = sum_{n, o} dy[n, co, o] *
    Xpad[n, g*C_in_g + ci, o*s + m*dil]; db[co] = sum_{n, o} dy[n, co, o].

    Returns ``(dx, dweight, dbias)`` (``dbias`` None when ``bias`` is False).
    """
    x, weight, unbatched, kernel, stride, dilation, pads = _conv_setup(
        x, weight, stride, padding, dilation, groups)
    dy = np.asarray(dy, dtype=np.float64)
    if unbatched:
        dy = dy[None]
    xp = pad(x, pads, padding_mode)
    n_batch = x.shape[0]
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    out_size = _conv_out_size(xp.shape[2:], kernel, stride, dilation)
    if dy.shape != (n_batch, c_out) + out_size:
        raise ValueError(f"reference: dy shape {dy.shape} != output shape "
                         f"{(n_batch, c_out) + out_size}")
    dxp = np.zeros(xp.shape)
    dweight = np.zeros(weight.shape)
    for n, co, o in itertools.product(range(n_batch), range(c_out), _positions(out_size)):
        g = co // c_out_g
        start = tuple(oo * s for oo, s in zip(o, stride))
        index = (n, slice(g * c_in_g, (g + 1) * c_in_g)) + _window(start, kernel, dilation)
        grad = dy[(n, co) + o]
        dxp[index] += weight[co] * grad
        dweight[co] += xp[index] * grad
    dx = pad_adjoint(dxp, pads, padding_mode, x.shape[2:])
    dbias = dy.sum(axis=(0,) + tuple(range(2, dy.ndim))) if bias else None
    return (dx[0] if unbatched else dx), dweight, dbias


# --------------------------------------------------------------------------
# transposed convolution
# --------------------------------------------------------------------------
def _transpose_setup(x, weight, stride, padding, output_padding, groups, dilation):
    weight = np.asarray(weight, dtype=np.float64)
    d = weight.ndim - 2
    x, unbatched = _batched(np.asarray(x, dtype=np.float64), d)
    if isinstance(padding, str) and padding == "same":
        raise ValueError("reference: padding='same' is undefined for a transposed conv")
    kernel = weight.shape[2:]
    stride = _per_dim(stride, d, "stride")
    dilation = _per_dim(dilation, d, "dilation")
    output_padding = _per_dim(output_padding, d, "output_padding")
    pads = _pad_pairs(padding, d)
    if x.shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise ValueError(f"reference: channels of x {x.shape} and weight {weight.shape} "
                         f"do not match groups={groups}")
    full = tuple((size - 1) * s + dl * (k - 1) + op + 1
                 for size, k, s, dl, op in zip(x.shape[2:], kernel, stride, dilation,
                                               output_padding))
    crop = tuple(slice(lo, f - hi) for f, (lo, hi) in zip(full, pads))
    if any(f - lo - hi < 1 for f, (lo, hi) in zip(full, pads)):
        raise ValueError("reference: non-positive transposed-conv output size")
    return x, weight, unbatched, kernel, stride, dilation, full, crop


def conv_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1) -> np.ndarray:
    """Yfull[n, g*C_out_g + co, i*s + m*dil] += X[n, ci, i] * W[ci, co, m], then crop.

    x ``(N, C_in, *S)``; weight ``(C_in, C_out/G, *k)``; full size
    ``(S-1)*s + dil*(k-1) + output_padding + 1``; padding ``(lo, hi)`` is cropped
    from each end. Returns ``(N, C_out, *O)`` (unbatched if x was), float64.
    """
    x, weight, unbatched, kernel, stride, dilation, full, crop = _transpose_setup(
        x, weight, stride, padding, output_padding, groups, dilation)
    n_batch, c_in = x.shape[:2]
    c_in_g, c_out_g = c_in // groups, weight.shape[1]
    y_full = np.zeros((n_batch, c_out_g * groups) + full)
    for n, ci, i in itertools.product(range(n_batch), range(c_in), _positions(x.shape[2:])):
        g = ci // c_in_g
        start = tuple(ii * s for ii, s in zip(i, stride))
        index = (n, slice(g * c_out_g, (g + 1) * c_out_g)) + _window(start, kernel, dilation)
        y_full[index] += x[(n, ci) + i] * weight[ci]  # (C_out_g, *k)
    y = y_full[(slice(None), slice(None)) + crop].copy()
    if bias is not None:
        for co in range(y.shape[1]):
            y[:, co] += float(bias[co])
    return y[0] if unbatched else y


def conv_transpose_grad(dy, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                        dilation=1, bias: bool = True):
    """Gradients of sum(conv_transpose(x, weight, b) * dy), read off the scatter definition.

    With dYfull = dy placed at [lo : full-hi] in zeros of the full size:
    dX[n, ci, i] = sum_{co, m} W[ci, co, m] * dYfull[n, g*C_out_g + co, i*s + m*dil];
    dW[ci, co, m] = sum_{n, i} X[n, ci, i] * dYfull[n, g*C_out_g + co, i*s + m*dil];
    db = sum of dy over batch and positions. Returns ``(dx, dweight, dbias)``.
    """
    x, weight, unbatched, kernel, stride, dilation, full, crop = _transpose_setup(
        x, weight, stride, padding, output_padding, groups, dilation)
    dy = np.asarray(dy, dtype=np.float64)
    if unbatched:
        dy = dy[None]
    n_batch, c_in = x.shape[:2]
    c_in_g, c_out_g = c_in // groups, weight.shape[1]
    dy_full = np.zeros((n_batch, c_out_g * groups) + full)
    if dy.shape != dy_full[(slice(None), slice(None)) + crop].shape:
        raise ValueError(f"reference: dy shape {dy.shape} does not match the output")
    dy_full[(slice(None), slice(None)) + crop] = dy
    dx = np.zeros(x.shape)
    dweight = np.zeros(weight.shape)
    for n, ci, i in itertools.product(range(n_batch), range(c_in), _positions(x.shape[2:])):
        g = ci // c_in_g
        start = tuple(ii * s for ii, s in zip(i, stride))
        window = dy_full[(n, slice(g * c_out_g, (g + 1) * c_out_g))
                         + _window(start, kernel, dilation)]
        dx[(n, ci) + i] = np.sum(weight[ci] * window)
        dweight[ci] += x[(n, ci) + i] * window
    dbias = dy.sum(axis=(0,) + tuple(range(2, dy.ndim))) if bias else None
    return (dx[0] if unbatched else dx), dweight, dbias


# --------------------------------------------------------------------------
# unfold / fold (PyTorch F.unfold / F.fold layout, any d)
# --------------------------------------------------------------------------
def _spatial_dims_of(args, default: int) -> int:
    """d = length of the first per-dim argument; with ints only, ``default``.

    (PyTorch's convention for F.unfold/F.fold: ints only means 2-d images.)
    """
    for value in args:
        if isinstance(value, (tuple, list)):
            return len(value)
    return default


def _unfold_args(kernel_size, dilation, padding, stride, d):
    kernel = _per_dim(kernel_size, d, "kernel_size")
    return (kernel, _per_dim(dilation, d, "dilation"), _pad_pairs(padding, d),
            _per_dim(stride, d, "stride"))


def unfold(x, kernel_size, dilation=1, padding=0, stride=1) -> np.ndarray:
    """cols[n, c*prod(k) + flat(m), flat(o)] = Xpad[n, c, o*s + m*dil] (zero padding).

    x ``(N, C, *S)`` or ``(C, *S)``; d is the length of the first sequence among
    the arguments, or 2 for a 3-/4-d ``x`` when all are ints (as F.unfold).
    Returns ``(N, C*prod(k), L)`` with ``L = prod(O)``, both flattenings row-major.
    """
    x = np.asarray(x, dtype=np.float64)
    d = _spatial_dims_of((kernel_size, dilation, padding, stride),
                         2 if x.ndim in (3, 4) else x.ndim - 2)
    x, unbatched = _batched(x, d)
    kernel, dilation, pads, stride = _unfold_args(kernel_size, dilation, padding, stride, d)
    xp = pad(x, pads, "zeros")
    out_size = _conv_out_size(xp.shape[2:], kernel, stride, dilation)
    n_batch, channels = x.shape[:2]
    k_total = math.prod(kernel)
    cols = np.zeros((n_batch, channels * k_total, math.prod(out_size)))
    for n, c in itertools.product(range(n_batch), range(channels)):
        for k_flat, m in enumerate(_positions(kernel)):
            for l_flat, o in enumerate(_positions(out_size)):
                source = tuple(oo * s + mm * dl for oo, s, mm, dl in zip(o, stride, m, dilation))
                cols[n, c * k_total + k_flat, l_flat] = xp[(n, c) + source]
    return cols[0] if unbatched else cols


def fold(cols, output_size, kernel_size, dilation=1, padding=0, stride=1) -> np.ndarray:
    """Adjoint of :func:`unfold`: Xpad[n, c, o*s + m*dil] += cols[n, c*prod(k) + flat(m), flat(o)].

    cols ``(N, C*prod(k), L)`` or ``(C*prod(k), L)``; returns ``(N, C, *output_size)``
    (the padding is cropped off after summing).
    """
    cols = np.asarray(cols, dtype=np.float64)
    d = _spatial_dims_of((output_size, kernel_size, dilation, padding, stride), 2)
    output_size = _per_dim(output_size, d, "output_size")
    kernel, dilation, pads, stride = _unfold_args(kernel_size, dilation, padding, stride, d)
    unbatched = cols.ndim == 2
    if unbatched:
        cols = cols[None]
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(output_size, pads))
    out_size = _conv_out_size(padded, kernel, stride, dilation)
    k_total = math.prod(kernel)
    n_batch = cols.shape[0]
    if cols.shape[1] % k_total or cols.shape[2] != math.prod(out_size):
        raise ValueError(f"reference: cols shape {cols.shape} does not fit kernel {kernel} "
                         f"and {math.prod(out_size)} windows")
    channels = cols.shape[1] // k_total
    xp = np.zeros((n_batch, channels) + padded)
    for n, c in itertools.product(range(n_batch), range(channels)):
        for k_flat, m in enumerate(_positions(kernel)):
            for l_flat, o in enumerate(_positions(out_size)):
                target = tuple(oo * s + mm * dl for oo, s, mm, dl in zip(o, stride, m, dilation))
                xp[(n, c) + target] += cols[n, c * k_total + k_flat, l_flat]
    crop = tuple(slice(lo, lo + s) for s, (lo, _) in zip(output_size, pads))
    x = xp[(slice(None), slice(None)) + crop]
    return x[0] if unbatched else x
