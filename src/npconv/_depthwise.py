r"""Depthwise convolution (``groups == C_in``, one input channel per group) without GEMM.

With one input channel per group the GEMM of ``conv`` degenerates into
``C_in`` tiny products (K = prod(k) rows), which BLAS runs at a few GFLOP/s.
Written per kernel offset ``m`` instead, each term of the seed sum is one
elementwise multiply-add over whole arrays (channel multiplier M = C_out/G)::

    Y[n, g, j, o]   = Σ_m W[g, j, m] · Xp[n, g, o·s + m·dil]            (forward)
    dXp[n, g, o·s + m·dil] += Σ_j W[g, j, m] · δ[n, g, j, o]             (input gradient)
    dW[g, j, m]     = Σ_{n, o} δ[n, g, j, o] · Xp[n, g, o·s + m·dil]     (weight gradient)

These passes are memory-bound and run on the flattened padded input of the
shifted kernel (``npconv._shifted``): for offset ``m`` the window ``Xp[o·s + m·dil]``
is one contiguous slice of a (phase) image's flat array, so every multiply-add is
one long contiguous loop per (sample, channel), not ``O_1·…·O_{d-1}`` loops of
``O_d`` elements (dw 3x3 32@112, N=16, float32 forward: 7.6 against 9-10 ms on
strided windows). Output columns in the padding of the inner dims are computed
and dropped (2% at 112x112), and δ is zero there. The batch is processed in
blocks of samples shared out between npconv's threads (NumPy releases the GIL).
The loop is over sample blocks and kernel offsets, never over pixels.
"""
from __future__ import annotations

import numpy as np

from . import _args
from ._config import parallel_for
from ._im2col import store
from ._shifted import extend, layout, phase_images, tap_starts, tap_windows, unphase, valid

BLOCK_BYTES = 512 * 2**10  # one block of padded input samples: about the L2 cache


def _block(lay, channels: int, itemsize: int) -> int:
    """Samples per block (at least one)."""
    return max(1, BLOCK_BYTES // max(1, channels * lay.flat_size * itemsize))


def depthwise_forward(x: np.ndarray, weight: np.ndarray, geom, mode: str, bias=None) -> np.ndarray:
    """x ``(N, G, *S)``, weight ``(G·M, 1, *k)``, bias ``(G·M,)`` or None -> y ``(N, G·M, *O)``."""
    batch, groups = x.shape[:2]
    mult = weight.shape[0] // groups
    lay = layout(geom, mode)
    columns = lay.columns(geom.out_size[0])
    w = weight.reshape(groups, mult, -1)[..., None]                       # (G, M, K, 1)
    taps = tap_starts(lay, geom.kernel)
    y = np.empty((batch, groups * mult) + geom.out_size, dtype=x.dtype)
    block = _block(lay, groups, x.itemsize)

    def body(start, stop):
        for first in range(start, stop, block):
            samples = slice(first, min(first + block, stop))
            images = phase_images(x[samples], geom, lay, mode)[:, :, None]  # (n, G, 1, phases, flat)
            acc = np.empty((images.shape[0], groups, mult, columns), dtype=x.dtype)
            term = np.empty_like(acc)
            for index, (m, phase, begin) in enumerate(taps):
                x_m = images[:, :, :, phase, begin:begin + columns]      # (n, G, 1, L_q)
                if index == 0:
                    np.multiply(x_m, w[:, :, m], out=acc)
                else:
                    np.multiply(x_m, w[:, :, m], out=term)
                    acc += term
            store(y[samples], valid(acc.reshape(acc.shape[0], groups * mult, columns), lay,
                                    geom.out_size[0]), bias)

    parallel_for(body, batch, x.nbytes)
    return y


def depthwise_input_grad(dy: np.ndarray, weight: np.ndarray, geom, mode: str) -> np.ndarray:
    """dy ``(N, G·M, *O)``, weight ``(G·M, 1, *k)`` -> dx ``(N, G, *S)``."""
    batch = dy.shape[0]
    groups = geom.groups
    mult = weight.shape[0] // groups
    lay = layout(geom, mode)
    columns = lay.columns(geom.out_size[0])
    phases = _args.prod(len(p) for p in lay.phases)
    w = weight.reshape(groups, mult, -1)[..., None]                       # (G, M, K, 1)
    taps = tap_starts(lay, geom.kernel)
    dx = np.empty((batch, groups) + geom.in_size, dtype=dy.dtype)
    block = _block(lay, groups, dy.itemsize)

    def body(start, stop):
        for first in range(start, stop, block):
            samples = slice(first, min(first + block, stop))
            n = samples.stop - samples.start
            dy_ext = extend(dy[samples], lay).reshape(n, groups, mult, columns)
            images = np.zeros((n, groups, phases, lay.flat_size), dtype=dy.dtype)
            term = np.empty((n, groups, columns), dtype=dy.dtype)
            for m, phase, begin in taps:
                # dXp[o·s + m·dil] += Σ_j W[g, j, m] δ[g, j, o]
                if mult == 1:
                    np.multiply(dy_ext[:, :, 0], w[:, 0, m], out=term)
                else:
                    np.sum(dy_ext * w[:, :, m], axis=2, out=term)
                target = images[:, :, phase, begin:begin + columns]
                target += term
            dx[samples] = unphase(images, geom, lay, mode)

    parallel_for(body, batch, dy.nbytes)
    return dx


def depthwise_weight_grad(x: np.ndarray, dy: np.ndarray, geom, mode: str) -> np.ndarray:
    """x ``(N, G, *S)``, dy ``(N, G·M, *O)`` -> dweight ``(G·M, 1, *k)``."""
    batch, groups = x.shape[:2]
    mult = dy.shape[1] // groups
    kernel_len = _args.prod(geom.kernel)
    lay = layout(geom, mode)
    columns = lay.columns(geom.out_size[0])
    taps = tap_starts(lay, geom.kernel)
    block = _block(lay, groups, x.itemsize)
    # One partial sum per block of samples (blocks are fixed by the shapes), added in
    # block order: the same bits whatever the number of threads.
    starts = range(0, batch, block)
    partial_sums = {}

    def body(first_block, stop_block):
        for first in starts[first_block:stop_block]:
            samples = slice(first, min(first + block, batch))
            n = samples.stop - samples.start
            images = phase_images(x[samples], geom, lay, mode)              # (n, G, phases, flat)
            dy_ext = extend(dy[samples], lay).reshape(n, groups, mult, columns)   # 0 on garbage columns
            if all(len(dim) == 1 for dim in lay.taps):      # every offset reads one phase (stride 1)
                windows = tap_windows(images, lay, tuple(dim[0] for dim in lay.taps), taps[0][2], columns)
                # Σ_o δ[n,g,j,o]·Xp[n,g,o+m·dil] for every m of one channel in a row: the batch
                # axes of the stacked matmul run (n, g, m), so a channel's δ and image stay in
                # cache over its taps instead of being read again from memory for each tap
                # (dw 3x3 32@112, N=16: 9.5 -> 7.0 ms; 5x5 64@56, N=8: 5.2 -> 3.0; same bits)
                d = windows.ndim - 3
                dots = np.matmul(dy_ext.reshape((n, groups) + (1,) * d + (mult, columns)), windows[..., None])
                partial_sums[first] = dots[..., 0].sum(axis=0).reshape(groups, kernel_len, mult).swapaxes(1, 2)
                continue
            dw = np.zeros((groups, mult, kernel_len), dtype=x.dtype)
            for m, phase, begin in taps:
                # Σ_{n,o} δ[n,g,j,o]·Xp[n,g,o·s+m·dil]: one contiguous dot per (sample, channel)
                # (a stacked matmul: 34 against 53 µs for einsum on a 112x112 image)
                x_m = images[:, :, phase, begin:begin + columns, None]           # (n, G, L_q, 1)
                dw[:, :, m] = np.matmul(dy_ext, x_m)[..., 0].sum(axis=0)
            partial_sums[first] = dw

    parallel_for(body, len(starts), x.nbytes)
    dw = np.zeros((groups, mult, kernel_len), dtype=x.dtype)
    for first in starts:
        dw += partial_sums[first]
    return dw.reshape((groups * mult, 1) + geom.kernel)
