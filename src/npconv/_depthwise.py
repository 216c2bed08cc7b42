r"""Depthwise convolution (``groups == C_in``, one input channel per group) without GEMM.

With one input channel per group the GEMM of ``conv`` degenerates into
``C_in`` tiny products (K = prod(k) rows), which BLAS runs at a few GFLOP/s.
Written per kernel offset ``m`` instead, each term of the seed sum is one
elementwise multiply-add over whole arrays (channel multiplier M = C_out/G)::

    Y[n, g, j, o]   = Σ_m W[g, j, m] · Xp[n, g, o·s + m·dil]            (forward)
    dXp[n, g, o·s + m·dil] += Σ_j W[g, j, m] · δ[n, g, j, o]             (input gradient)
    dW[g, j, m]     = Σ_{n, o} δ[n, g, j, o] · Xp[n, g, o·s + m·dil]     (weight gradient)

These passes are memory-bound, so the batch is processed in blocks of samples
small enough to stay in cache while all ``prod(k)`` offsets go over them, and
the blocks are shared out between npconv's threads (NumPy releases the GIL).
The loop is over cache blocks and kernel offsets, never over pixels.
"""
from __future__ import annotations

import numpy as np

from . import _args
from ._config import parallel_for
from ._im2col import kernel_windows
from ._padding import pad, pad_adjoint

BLOCK_BYTES = 512 * 2**10  # one block of padded input samples: about the L2 cache


def _offsets(geom):
    """(flat index, window slices) for each kernel offset ``m``: reads ``o·s + m·dil``."""
    windows = kernel_windows(geom.kernel, geom.stride, geom.dilation, geom.out_size)
    return [(index, window) for index, (_, window) in enumerate(windows)]


def _block(geom, groups: int, itemsize: int) -> int:
    """Samples per cache block."""
    return max(1, BLOCK_BYTES // max(1, groups * _args.prod(geom.padded_size) * itemsize))


def depthwise_forward(x: np.ndarray, weight: np.ndarray, geom, mode: str) -> np.ndarray:
    """x ``(N, G, *S)``, weight ``(G·M, 1, *k)`` -> y ``(N, G·M, *O)`` (no bias)."""
    batch, groups = x.shape[:2]
    mult = weight.shape[0] // groups
    d = geom.d
    w = weight.reshape(groups, mult, -1)                                 # (G, M, K)
    w_bcast = w.reshape((groups, mult, -1) + (1,) * d)                    # broadcast over O
    y = np.empty((batch, groups, mult) + geom.out_size, dtype=x.dtype)
    block = _block(geom, groups, x.itemsize)

    def body(start, stop):
        for first in range(start, stop, block):
            samples = slice(first, min(first + block, stop))
            xp = pad(x[samples], geom.pads, mode)[:, :, None]            # (n, G, 1, *P)
            acc = y[samples]                                              # (n, G, M, *O)
            term = np.empty_like(acc)
            for index, window in _offsets(geom):
                x_m = xp[(slice(None),) * 3 + window]                     # (n, G, 1, *O)
                if index == 0:
                    np.multiply(x_m, w_bcast[:, :, index], out=acc)
                else:
                    np.multiply(x_m, w_bcast[:, :, index], out=term)
                    acc += term

    parallel_for(body, batch, x.nbytes)
    return y.reshape((batch, groups * mult) + geom.out_size)


def depthwise_input_grad(dy: np.ndarray, weight: np.ndarray, geom, mode: str) -> np.ndarray:
    """dy ``(N, G·M, *O)``, weight ``(G·M, 1, *k)`` -> dx ``(N, G, *S)``."""
    batch = dy.shape[0]
    groups = geom.groups
    mult = weight.shape[0] // groups
    d = geom.d
    w_bcast = weight.reshape((groups, mult, -1) + (1,) * d)
    dy = dy.reshape((batch, groups, mult) + geom.out_size)
    dx = np.empty((batch, groups) + geom.in_size, dtype=dy.dtype)
    block = _block(geom, groups, dy.itemsize)

    def body(start, stop):
        for first in range(start, stop, block):
            samples = slice(first, min(first + block, stop))
            dy_b = dy[samples]                                            # (n, G, M, *O)
            dxp = np.zeros((dy_b.shape[0], groups) + geom.padded_size, dtype=dy.dtype)
            term = np.empty((dy_b.shape[0], groups) + geom.out_size, dtype=dy.dtype)
            for index, window in _offsets(geom):
                if mult == 1:
                    np.multiply(dy_b[:, :, 0], w_bcast[:, 0, index], out=term)
                else:
                    np.sum(dy_b * w_bcast[:, :, index], axis=2, out=term)
                dxp[(slice(None), slice(None)) + window] += term
            dx[samples] = pad_adjoint(dxp, geom.pads, mode, geom.in_size)

    parallel_for(body, batch, dy.nbytes)
    return dx


def depthwise_weight_grad(x: np.ndarray, dy: np.ndarray, geom, mode: str) -> np.ndarray:
    """x ``(N, G, *S)``, dy ``(N, G·M, *O)`` -> dweight ``(G·M, 1, *k)``."""
    batch, groups = x.shape[:2]
    mult = dy.shape[1] // groups
    kernel_len = _args.prod(geom.kernel)
    dy = dy.reshape((batch, groups, mult) + geom.out_size)               # (N, G, M, *O)
    block = _block(geom, groups, x.itemsize)
    # One partial sum per cache block of samples (blocks are fixed by the shapes), added in
    # block order: the same bits whatever the number of threads.
    starts = range(0, batch, block)
    partial_sums = {}
    spatial = "xyz"[:geom.d]
    contraction = f"ngj{spatial},ng{spatial}->gj"

    def body(first_block, stop_block):
        for first in starts[first_block:stop_block]:
            samples = slice(first, min(first + block, batch))
            xp = pad(x[samples], geom.pads, mode)
            dy_b = dy[samples]
            dw = np.zeros((groups, mult, kernel_len), dtype=x.dtype)
            for index, window in _offsets(geom):
                # Σ_{n,o} δ[n,g,j,o]·Xp[n,g,o·s+m·dil]: one pass over the strided window, no copy
                dw[:, :, index] = np.einsum(contraction, dy_b, xp[(slice(None), slice(None)) + window])
            partial_sums[first] = dw

    parallel_for(body, len(starts), x.nbytes)
    dw = np.zeros((groups, mult, kernel_len), dtype=x.dtype)
    for first in starts:
        dw += partial_sums[first]
    return dw.reshape((groups * mult, 1) + geom.kernel)
