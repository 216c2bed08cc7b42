r"""Im2row: the unfold in channels-last order, for small images with many channels.

The im2col window copy (``npconv._im2col``) moves runs of ``O_d`` contiguous
elements: 7 for a 7x7 image, so a 512-channel layer spends most of its unfold in
NumPy's per-run overhead. Transposed, with the channels innermost, every run is
``C_in`` long. For ``Xp_cl (n, *P, C_in)``, the padded input channels-last::

    X̃ᵀ[(n, o), (m, c)] = Xp_cl[n, o·s + m·dil, c]          (n·L, prod(k)·C_in)

one strided copy with inner runs of ``C_in``; then, with ``W_r = W̃`` reordered to
``(prod(k)·C_in, C_out)`` (offset-major rows)::

    Yᵀ = X̃ᵀ W_r,      dW_r = (X̃ᵀ)ᵀ δ_rows,      dX̃ᵀ = δ_rows W_rᵀ

with ``δ_rows = δ (n·L, C_out)`` channels-last, and ``dX̃ᵀ`` folded back by one
add per kernel offset (inner runs ``C_in`` again). The transposes of ``x``, ``y``
and ``δ`` to and from channels-last are single passes over arrays ``prod(k)``
times smaller than ``X̃``. Groups = 1 only (the reference layout for groups is
im2col's).

Tiles and row runs are those of the im2col kernel (``convolution._chunks``), so
the workspace limit bounds ``X̃ᵀ`` the same way.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _args
from ._im2col import ProductSum, kernel_windows, store
from ._padding import pad, pad_adjoint


def _channels_last(x: np.ndarray, geom: _args.Geometry, mode: str) -> np.ndarray:
    """``x (n, C, *S) -> Xp_cl (n, *P, C)``: padded, channels innermost."""
    d = geom.d
    to_last = (0,) + tuple(range(2, 2 + d)) + (1,)
    if mode == "zeros":   # pad while transposing
        out = np.zeros((x.shape[0],) + geom.padded_size + (x.shape[1],), dtype=x.dtype)
        interior = tuple(slice(lo, lo + s) for (lo, _), s in zip(geom.pads, geom.in_size))
        out[(slice(None),) + interior] = x.transpose(to_last)
        return out
    return np.ascontiguousarray(pad(x, geom.pads, mode).transpose(to_last))


def _rows(xp_cl: np.ndarray, geom: _args.Geometry, out_rows: slice) -> np.ndarray:
    """``X̃ᵀ`` of output rows ``out_rows`` (first dim): ``(n, rows, *O_2.., *k, C) `` contiguous."""
    d = geom.d
    n, c = xp_cl.shape[0], xp_cl.shape[-1]
    out_size = (out_rows.stop - out_rows.start,) + tuple(geom.out_size[1:])
    spatial = xp_cl.strides[1:1 + d]
    first = xp_cl[:, out_rows.start * geom.stride[0]:]
    view = as_strided(first, shape=(n,) + out_size + tuple(geom.kernel) + (c,),
                      strides=(xp_cl.strides[0],)
                      + tuple(st * s for st, s in zip(spatial, geom.stride))
                      + tuple(st * dil for st, dil in zip(spatial, geom.dilation))
                      + (xp_cl.strides[-1],), writeable=False)
    return np.ascontiguousarray(view)


def _weight_rows(weight: np.ndarray) -> np.ndarray:
    """``W (C_out, C_in, *k) -> W_r (prod(k)·C_in, C_out)``, rows (offset, channel)."""
    d = weight.ndim - 2
    return weight.transpose(tuple(range(2, 2 + d)) + (1, 0)).reshape(-1, weight.shape[0])


def _output_rows(dy_part: np.ndarray) -> np.ndarray:
    """``δ (n, C_out, *O') -> (n·L', C_out)`` channels-last."""
    d = dy_part.ndim - 2
    return np.ascontiguousarray(dy_part.transpose((0,) + tuple(range(2, 2 + d)) + (1,))).reshape(
        -1, dy_part.shape[1])


def im2row_forward(x, weight, geom: _args.Geometry, mode: str, chunks, bias=None) -> np.ndarray:
    """``Yᵀ = X̃ᵀ W_r (+ b)``: x ``(N, C_in, *S)``, weight ``(C_out, C_in, *k)``, bias ``(C_out,)``
    or None -> ``(N, C_out, *O)``."""
    d = geom.d
    c_out = weight.shape[0]
    w_rows = _weight_rows(weight)
    y = np.empty((x.shape[0], c_out) + geom.out_size, dtype=x.dtype)
    xp_cl, tile = None, None
    for samples, out_rows in chunks:
        if tile != samples:
            xp_cl, tile = _channels_last(x[samples], geom, mode), samples
        rows = _rows(xp_cl, geom, out_rows)
        n = rows.shape[0]
        y_rows = rows.reshape(-1, w_rows.shape[0]) @ w_rows                  # (n·L', C_out)
        y_rows = y_rows.reshape((n,) + rows.shape[1:1 + d] + (c_out,))
        store(y[samples, :, out_rows], np.moveaxis(y_rows, -1, 1), bias)
    return y


def im2row_weight_grad(x, dy, geom: _args.Geometry, mode: str, chunks) -> np.ndarray:
    """``dW_r = Σ_tiles X̃ δ_rows``: -> ``(C_out, C_in, *k)``."""
    c_in, c_out = x.shape[1], dy.shape[1]
    dw_rows = ProductSum(np.empty((1, c_in * _args.prod(geom.kernel), c_out), dtype=x.dtype))
    xp_cl, tile = None, None
    for samples, out_rows in chunks:
        if tile != samples:
            xp_cl, tile = _channels_last(x[samples], geom, mode), samples
        rows = _rows(xp_cl, geom, out_rows).reshape(-1, dw_rows.out.shape[1])  # X̃ᵀ (n·L', K)
        dy_rows = _output_rows(dy[samples, :, out_rows])                     # (n·L', C_out)
        dw_rows.add(0, rows.T, dy_rows)
    # (*k, C_in, C_out) -> (C_out, C_in, *k)
    d = geom.d
    dw = dw_rows.result()[0].reshape(tuple(geom.kernel) + (c_in, c_out))
    return np.ascontiguousarray(dw.transpose((d + 1, d) + tuple(range(d))))


def im2row_input_grad(dy, weight, geom: _args.Geometry, mode: str, chunks) -> np.ndarray:
    """``dX̃ᵀ = δ_rows W_rᵀ``, folded: dy ``(N, C_out, *O)`` -> ``(N, C_in, *S)``."""
    d = geom.d
    batch = dy.shape[0]
    c_in = weight.shape[1]
    w_rows = _weight_rows(weight)
    dx = np.empty((batch, c_in) + geom.in_size, dtype=dy.dtype)
    from_last = (0, d + 1) + tuple(range(1, d + 1))
    dxp, tile = None, None

    def finish():
        dx[tile] = pad_adjoint(dxp.transpose(from_last), geom.pads, mode, geom.in_size)

    for samples, out_rows in chunks:
        if tile != samples:
            if dxp is not None:
                finish()
            dxp, tile = np.zeros((samples.stop - samples.start,) + geom.padded_size + (c_in,),
                                 dtype=dy.dtype), samples
        dy_part = dy[samples, :, out_rows]
        n = dy_part.shape[0]
        out_size = dy_part.shape[2:]
        d_rows = _output_rows(dy_part) @ w_rows.T                            # dX̃ᵀ (n·L', K)
        d_rows = d_rows.reshape((n,) + tuple(out_size) + (_args.prod(geom.kernel), c_in))
        first = out_rows.start * geom.stride[0]
        # dXp_cl[n, o·s + m·dil, c] += dX̃ᵀ[(n, o), (m, c)], one add per kernel offset m
        for index, (_, window) in enumerate(kernel_windows(geom.kernel, geom.stride, geom.dilation,
                                                           out_size)):
            shifted = (slice(None),) + (slice(window[0].start + first, window[0].stop + first,
                                              window[0].step),) + window[1:]
            dxp[shifted] += d_rows[(Ellipsis, index, slice(None))]
    if dxp is not None:
        finish()
    return dx
