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
The loop is over sample blocks and kernel offsets, never over pixels. Where dx is the
depthwise forward of δ with the flipped kernel (stride 1, multiplier 1, zero padding),
``conv_grad`` computes dx, dW and db in one sweep (``depthwise_backward``).
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


def _taps_sum(images: np.ndarray, w: np.ndarray, taps, columns: int) -> np.ndarray:
    """``Σ_m W[g, j, m]·Xp[n, g, q + start_m]``: images ``(n, G, phases, flat)``, w ``(G, M, K, 1)``
    -> ``(n, G, M, L_q)``, one multiply and one add per offset over the whole block."""
    images = images[:, :, None]                                          # (n, G, 1, phases, flat)
    acc = np.empty(images.shape[:2] + (w.shape[1], columns), dtype=images.dtype)
    term = np.empty_like(acc)
    for index, (m, phase, begin) in enumerate(taps):
        x_m = images[:, :, :, phase, begin:begin + columns]              # (n, G, 1, L_q)
        if index == 0:
            np.multiply(x_m, w[:, :, m], out=acc)
        else:
            np.multiply(x_m, w[:, :, m], out=term)
            acc += term
    return acc


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
            acc = _taps_sum(phase_images(x[samples], geom, lay, mode), w, taps, columns)
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


def _weight_dots(images: np.ndarray, dy_ext: np.ndarray, lay, taps, columns: int) -> np.ndarray:
    """``Σ_{n,o} δ[n,g,j,o]·Xp[n,g,o·s+m·dil]`` of one block: images ``(n, G, phases, flat)``,
    dy_ext ``(n, G, M, L_q)`` (0 on garbage columns) -> ``(G, M, K)``."""
    n, groups, mult = dy_ext.shape[:3]
    kernel_len = len(taps)
    if all(len(dim) == 1 for dim in lay.taps):      # every offset reads one phase (stride 1)
        windows = tap_windows(images, lay, tuple(dim[0] for dim in lay.taps), taps[0][2], columns)
        # Σ_o δ[n,g,j,o]·Xp[n,g,o+m·dil] for every m of one channel in a row: the batch
        # axes of the stacked matmul run (n, g, m), so a channel's δ and image stay in
        # cache over its taps instead of being read again from memory for each tap
        # (dw 3x3 32@112, N=16: 9.5 -> 7.0 ms; 5x5 64@56, N=8: 5.2 -> 3.0; same bits)
        d = windows.ndim - 3
        dots = np.matmul(dy_ext.reshape((n, groups) + (1,) * d + (mult, columns)), windows[..., None])
        return dots[..., 0].sum(axis=0).reshape(groups, kernel_len, mult).swapaxes(1, 2)
    dw = np.zeros((groups, mult, kernel_len), dtype=dy_ext.dtype)
    for m, phase, begin in taps:
        # Σ_{n,o} δ[n,g,j,o]·Xp[n,g,o·s+m·dil]: one contiguous dot per (sample, channel)
        # (a stacked matmul: 34 against 53 µs for einsum on a 112x112 image)
        x_m = images[:, :, phase, begin:begin + columns, None]           # (n, G, L_q, 1)
        dw[:, :, m] = np.matmul(dy_ext, x_m)[..., 0].sum(axis=0)
    return dw


def depthwise_weight_grad(x: np.ndarray, dy: np.ndarray, geom, mode: str) -> np.ndarray:
    """x ``(N, G, *S)``, dy ``(N, G·M, *O)`` -> dweight ``(G·M, 1, *k)``."""
    batch, groups = x.shape[:2]
    mult = dy.shape[1] // groups
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
            partial_sums[first] = _weight_dots(images, dy_ext, lay, taps, columns)

    parallel_for(body, len(starts), x.nbytes)
    dw = np.zeros((groups, mult, len(taps)), dtype=x.dtype)
    for first in starts:
        dw += partial_sums[first]
    return dw.reshape((groups * mult, 1) + geom.kernel)


def depthwise_backward(dy: np.ndarray, x: np.ndarray, weight_flipped: np.ndarray, geom, same_geom,
                       mode: str, bias: bool):
    """``conv_grad`` of a depthwise layer (multiplier 1) whose dx is the depthwise forward of
    δ with the flipped kernel (``weight_flipped (G, 1, *k)`` on ``same_geom``, stride 1, zero
    padding), with dW and db, in one sweep over sample blocks: δ is padded once for dx's
    offsets, and its padded images are also dW's δ_ext (a view: a row of δ runs on into
    the padding, zero where δ_ext's garbage columns are) and db's input, while in cache
    (dw 3x3 32@112, N=16, ``npconv bench`` fwd+bwd in six A/B pairs: 20.1-21.7 -> 19.0-20.6
    ms, against dx, dW and db apart; the same dx and dW bits, db summed in another order).
    Returns ``(dx (N, G, *S), dweight (G, 1, *k), dbias (G,) or None)``.

    The view needs both layouts to have the same rows. An inner dim's row is
    ``max(O, S + lo, S + hi)`` for x (``_shared_row``, stride 1) and ``max(S, O + lo', O + hi')
    = max(S + hi, S + lo)`` for δ (its input O, padding ``lo' = D - lo, hi' = D - hi`` with
    ``D = dil·(k-1)``, and ``O + D = S + lo + hi``): equal, because ``O <= S + max(lo, hi)``
    when ``lo, hi <= D`` (``_same_conv_fits``)."""
    batch, groups = x.shape[:2]
    lay, lay_dy = layout(geom, mode), layout(same_geom, "zeros")
    columns = lay.columns(geom.out_size[0])                              # dW's L_q
    start = sum(lo * r for (lo, _), r in zip(same_geom.pads, lay_dy.row))   # δ[0] in its images
    assert lay.row == lay_dy.row and not (lay.lead or lay_dy.lead) and start + columns <= lay_dy.flat_size
    dx_columns = lay_dy.columns(same_geom.out_size[0])
    w_flipped = weight_flipped.reshape(groups, 1, -1)[..., None]         # (G, 1, K, 1)
    taps, dx_taps = tap_starts(lay, geom.kernel), tap_starts(lay_dy, same_geom.kernel)
    dx = np.empty((batch, groups) + geom.in_size, dtype=dy.dtype)
    block = _block(lay, groups, x.itemsize)                  # dW's blocks: the same partial sums
    starts = range(0, batch, block)
    partial_sums = {}

    def body(first_block, stop_block):
        for first in starts[first_block:stop_block]:
            samples = slice(first, min(first + block, batch))
            dy_images = phase_images(dy[samples], same_geom, lay_dy, "zeros")   # (n, G, 1, flat)
            acc = _taps_sum(dy_images, w_flipped, dx_taps, dx_columns)
            dx[samples] = valid(acc.reshape(acc.shape[0], groups, dx_columns), lay_dy, same_geom.out_size[0])
            dy_ext = dy_images[:, :, :, start:start + columns]                # (n, G, 1, L_q)
            images = phase_images(x[samples], geom, lay, mode)
            partial_sums[first] = (_weight_dots(images, dy_ext, lay, taps, columns),
                                   dy_ext[:, :, 0].sum(axis=-1).sum(axis=0) if bias else None)

    parallel_for(body, len(starts), x.nbytes)
    dw = np.zeros((groups, 1, len(taps)), dtype=x.dtype)
    db = np.zeros(groups, dtype=x.dtype) if bias else None
    for first in starts:
        dw += partial_sums[first][0]
        if bias:
            db += partial_sums[first][1]
    return dx, dw.reshape((groups, 1) + geom.kernel), db
