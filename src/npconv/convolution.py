r"""Convolution (cross-correlation, as in every CNN library) and its gradients.

Notation: N batch, G groups, C_in = G·C_ig input and C_out = G·C_og output
channels, d spatial dims, kernel k, stride s, dilation dil, padding
(p_lo, p_hi), padded input size P = S + p_lo + p_hi, output size O (see
``npconv._args.conv_out_size``), K = C_ig·prod(k) the length of one unfolded
window, L = prod(O) the number of output positions.

Forward (the seed equation, with stride, dilation and groups)::

    Y[n, g·C_og+c, o] = b[c] + Σ_{ci < C_ig} Σ_m W[g·C_og+c, ci, m] · Xp[n, g·C_ig+ci, o·s + m·dil]

vectorised per group as one GEMM per tile of B samples (``tile_samples``)::

    Y_g = W̃_g · X̃_g          W̃_g (C_og, K),  X̃_g (K, B·L),  Y_g (C_og, B·L)

where ``X̃`` is the unfolded padded input (im2col) with the tile's samples
side by side as more columns — each sample's columns are exactly the seed's
``X̃ (C_in·k_h·k_w, H_out·W_out)``.

Backward (gradients of ``sum(Y * δ)``, with ``δ_g (C_og, B·L)``; dW̃ sums the tiles)::

    dW̃_g = Σ_tiles δ_g · X̃_gᵀ     (summing over a tile's samples is part of the product)
    db    = Σ_{n, o} δ
    dX̃_g = W̃_gᵀ · δ_g            then dXp = fold(dX̃)   (col2im)
    dX    = Pᵀ dXp                 (adjoint of the padding; see ``_padding``)

``dX`` can equally be computed as the full convolution of the stride-dilated
``δ`` with the flipped, group-transposed kernel (``dx_method="full_conv"``);
both are tested equal. The fold form is the transposed convolution, which is
how ``conv_transpose`` reuses this module.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from . import _args
from ._config import get_workspace_limit, work_chunks
from ._depthwise import depthwise_backward, depthwise_forward, depthwise_input_grad, depthwise_weight_grad
from ._im2col import ProductSum, copy_parallel, fold_padded, gemm_empty, window_view
from ._im2row import im2row_forward, im2row_input_grad, im2row_weight_grad
from ._shifted import overcompute as shifted_overcompute
from ._shifted import splits_first_dim
from ._shifted import shifted_backward, shifted_forward, shifted_input_grad, shifted_weight_grad
from ._winograd import applicable as winograd_applicable
from ._winograd import winograd_forward, winograd_input_grad, winograd_weight_grad
from ._padding import pad, pad_adjoint


class ConvGrads(NamedTuple):
    """Gradients of ``sum(y * dy)``: ``dx`` like x, ``dweight`` like weight, ``dbias (C_out,)`` or None."""
    dx: np.ndarray
    dweight: np.ndarray
    dbias: object


# --------------------------------------------------------------------------
# algorithm choice
# --------------------------------------------------------------------------
ALGORITHMS = ("auto", "im2col", "im2row", "shifted", "depthwise", "winograd")


def _depthwise_pays(geom: _args.Geometry, weight_shape, kernel_pass: str) -> bool:
    """Whether the depthwise kernel (one multiply-add pass per tap) beats the shifted kernel
    (its first-dim split: one batched GEMM per sample, ``k_1·M`` rows per channel) on a
    depthwise layer (N=16/8, float32, medians of interleaved runs, depthwise vs shifted ms).

    The shifted kernel wins where a channel's GEMM fuses enough taps and outputs, i.e. where
    M·prod(k) (channel multiplier times taps) is large enough for the pass:
    - input gradient from 18: M=2 3x3 32@56 6.2-6.6 vs 3.9-4.2, M=1 5x5 96@56 9.0 vs 5.9,
      7x7 17.8 vs 9.0, M=4 4.9-5.1 vs 2.3-2.4;
    - forward from 25: M=4 4.6-4.9 vs 3.0, 5x5 128@28 7.8-8.9 vs 4.7-4.9, 7x7 11.5 vs 10.5;
      5x5 96@56 6.1-6.2 vs 6.0-6.6 (up to 6% slower); but M=2 3x3 (18) 3.0 vs 3.0-3.5;
    - weight gradient from M >= 2: M=2 3.7-3.8 vs 3.2-3.3, M=4 2.6 vs 2.1-2.2 (5x5 ties).
    The depthwise kernel keeps 3x3 with M=1 (32@112: 6.9 vs 8.9, 7.3 vs 9.8, 7.4 vs 10.2),
    strided first dims (no split: 3x3 s2 64@112 9.3 vs 16.9) and small images."""
    mult = weight_shape[0] // geom.groups
    if not splits_first_dim(geom, weight_shape[1] * geom.groups, weight_shape[0]):
        return True
    if kernel_pass == "weight":
        return mult < 2
    return mult * _args.prod(geom.kernel) < (18 if kernel_pass == "input" else 25)


def _winograd_pays(geom: _args.Geometry, weight_shape, kernel_pass: str) -> bool:
    """Where Winograd F(2x2,3x3) measured faster than im2col (``_winograd`` docstring) and
    than the shifted kernel: enough channels for its 16 GEMMs and enough 2x2 tiles
    (L >= 196, L·min(C_og, C_ig) >= 50 000; for the weight gradient, whose per-sample
    GEMMs reduce over the tiles, 100 000 and C²·L >= 14e6). Not 512@7, the 3->64 stem,
    small groups.

    Against the shifted kernel's stacked GEMMs (N=8 float32, medians of interleaved runs,
    forward / dW / dx ms): at 64 channels Winograd wins forward and dx on small images
    (64@28: 2.2 vs 2.6, 2.1 vs 2.4) and loses on large ones (64@56: 6.7 vs 6.0, 6.8 vs
    6.4; 64@112: 37 vs 30), and loses dW (2.7 vs 2.4, 8.0 vs 7.7); from 80 channels it
    wins all three (80@40: 4.9 vs 5.7, 5.8 vs 6.2, 4.7 vs 5.6; 96@56: 11.8 vs 12.3,
    13.2 vs 14.2, 11.4 vs 12.4); at 48 channels it loses (48@40: 2.6 vs 2.5, 3.6 vs 2.8).
    """
    channels = min(weight_shape[0] // geom.groups, weight_shape[1])
    positions = _args.prod(geom.out_size)
    if kernel_pass == "weight":
        # its 16 GEMMs per sample, (C_og, T) @ (T, C_ig) over T = L/4 tiles, must be big
        # enough too: C²·L >= 14e6 (dW ms, Winograd vs shifted: 80@40 6.1 vs 5.4, 128@28
        # 6.0 vs 5.8, 160@20 5.0 vs 4.6 below it; 96@40 6.9 vs 7.1, 128@40 10.7 vs 11.1,
        # 256@28 16.1 vs 19.2 above it; in the VM's slow mode 128@28 11.9 vs 6.5)
        return (channels >= 80 and positions >= 196 and positions * channels >= 100_000
                and channels * channels * positions >= 14_000_000)
    enough = channels >= 80 or (channels >= 64 and positions <= 1600)
    return enough and positions >= 196 and positions * channels >= 50_000


def _shifted_pays(geom: _args.Geometry, weight_shape, kernel_pass: str) -> bool:
    """Where the shifted unfold (``_shifted``) measured faster than the strided window copy
    (N=8, float32, 2 threads, medians of interleaved runs).

    Not for a 1x1 stride-1 unpadded kernel (im2col's X̃ is x itself). The input gradient
    always gains (its col2im becomes prod(k) contiguous adds: conv3d 16->32@16 8.5 vs 17.8 ms,
    the 7x7 stem 13.7 vs 18.2 ms, 512@7 6.6 vs 8.2 ms), in 1-d too, where its stacked δ needs
    no fold at all (N=16: 64@4096 7.6 vs 8.0 ms, 64->128 s2 9.0 vs 11.7, 128@1024 4.3 vs 5.6).
    Forward and weight gradient only for d >= 2 (a 1-d window view's inner runs are already
    contiguous: conv1d lost 15%). They pay for
    ``L_q/L - 1`` extra GEMM columns against a cheaper copy and the stacked GEMMs of the
    first-dim split; with rows sharing their zero borders that waste is small, and they
    take it up to ``L_q/L <= 1.3``: 512@7 (1.14) forward 6.9 vs 7.4 ms, dW 6.4 vs 6.8;
    256@7 1.9 vs 2.3, 1.7 vs 1.8; 5x5 64@28 6.0 vs 8.3, 5.6 vs 7.5; ties at 512@4 (1.25)
    and 1024@7. Beyond that the waste grows fast (a 2x2 image with padding 1: 1.5).
    """
    if geom.pointwise:
        return False
    if kernel_pass == "input":
        return True
    if geom.d < 2:
        return False
    return shifted_overcompute(geom) <= 1.3


def _im2row_pays(geom: _args.Geometry, weight_shape, kernel_pass: str = "forward") -> bool:
    """Where the channels-last unfold (``_im2row``) measured faster (N=32, float32):
    small images (last output dim <= 16, where im2col's copy moves runs of O_d elements
    and the shifted kernel's tiles take several samples), groups = 1, d = 2 (conv3d 16->32@16
    lost: dx 24.5 vs 6.5 ms; 3-d's fold adds have short runs again), and at least
    as many positions per sample as output channels (its weight reorder, C_out·K elements,
    stays small next to X̃). ResNet-20's 32@16: forward 1.1 vs 1.5 ms, dx 2.1 vs 2.4;
    64@8: 0.7 vs 1.4, 1.0 vs 1.5; 16->32 s2 @32: 0.9 vs 1.8. Not 512@7 (49 positions,
    512 channels: 9.4 vs 6.1 ms, the weight reorder alone 4 ms) or 256@14.

    Against the shifted kernel on its wrapped layout (im2row vs auto without it, ms): the
    input gradient only on outputs of at most 8 per row (32->64 s2 @16: 0.85 vs 0.98;
    64->128 s2 @16, N=8: 2.3 vs 2.4), not above (32@16: 2.0 vs 1.9, 16->32 s2 @32: 1.8-2.3
    vs 1.5-1.6, 64@16: 4.1-4.4 vs 3.7); forward and weight gradient not with more than 64
    output channels at stride 1 (128@16: 10.1 vs 8.1, 10.9 vs 7.8; 128@14: 1.8 vs 1.6)."""
    if kernel_pass == "input":
        if geom.out_size[-1] > 8:
            return False
    elif weight_shape[0] > 64 and all(s == 1 for s in geom.stride):
        return False
    return (geom.groups == 1 and geom.d == 2 and geom.out_size[-1] <= 16
            and not geom.pointwise                                   # im2col: no unfold at all
            and _args.prod(geom.out_size) >= weight_shape[0])


def select_algorithm(algorithm: str, geom: _args.Geometry, weight_shape, fn: str = "conv",
                     kernel_pass: str = "forward", mode: str = "zeros") -> str:
    """The kernel that computes one pass (``"forward"``, ``"input"`` or ``"weight"``
    gradient) of a convolution of this geometry.

    ``"auto"`` picks ``"depthwise"`` for one input channel per group with
    groups > 1 (elementwise multiply-adds per kernel offset: as a GEMM,
    K = prod(k) is too short for BLAS to be fast), except where the shifted kernel's
    per-channel GEMMs fuse enough taps and outputs (``_depthwise_pays``); ``"winograd"`` F(2x2,3x3)
    for 2-d 3x3 stride-1 dilation-1 layers where it measured faster
    (``_winograd_pays``); ``"shifted"`` (im2col on the flattened padded input,
    ``npconv._shifted``) where its cheaper unfold outweighs its extra columns
    (``_shifted_pays``), except for an input gradient that the stride phases
    compute faster (``_phases_fit``) or, at stride 1 with zero padding (``mode``), as the
    correlation of δ with the flipped kernel (1-d, small 2-d and depthwise layers,
    ``_same_conv_pays``); ``"im2row"`` (the unfold channels-last,
    ``npconv._im2row``) for small images with few channels (``_im2row_pays``, checked
    before the shifted kernel); else ``"im2col"`` (unfold + GEMM; a 1x1
    kernel with stride 1 and no padding skips the unfold copy). Asking for a
    kernel that does not apply raises ValueError.
    """
    depthwise = weight_shape[1] == 1 and geom.groups > 1
    winograd = winograd_applicable(geom, weight_shape)
    if algorithm == "auto":
        if depthwise:
            if kernel_pass == "input" and _same_conv_pays(geom, weight_shape, mode):
                return "im2col"
            return "depthwise" if _depthwise_pays(geom, weight_shape, kernel_pass) else "shifted"
        if winograd and _winograd_pays(geom, weight_shape, kernel_pass):
            return "winograd"
        if _im2row_pays(geom, weight_shape, kernel_pass):
            return "im2row"
        if kernel_pass == "input" and (_phases_fit(geom, weight_shape)
                                       or _same_conv_pays(geom, weight_shape, mode)):
            return "im2col"
        if _shifted_pays(geom, weight_shape, kernel_pass):
            return "shifted"
        return "im2col"
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: 'algorithm' must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "depthwise" and not depthwise:
        raise ValueError(f"{fn}: algorithm='depthwise' needs one input channel per group "
                         f"(weight.shape[1] == 1) and groups > 1, got weight shape "
                         f"{tuple(weight_shape)} and groups={geom.groups}")
    if algorithm == "im2row" and geom.groups != 1:
        raise ValueError(f"{fn}: algorithm='im2row' needs groups=1, got groups={geom.groups}")
    if algorithm == "winograd" and not winograd:
        raise ValueError(f"{fn}: algorithm='winograd' needs a 2-d 3x3 kernel with stride 1 and "
                         f"dilation 1, got kernel {geom.kernel}, stride {geom.stride}, "
                         f"dilation {geom.dilation}")
    return algorithm


# --------------------------------------------------------------------------
# tiles and chunks: the workspace limit
# --------------------------------------------------------------------------
# The im2col GEMMs take the columns of whole tiles of samples, B = ceil(TILE_COLUMNS / L)
# samples per tile: enough columns for BLAS to run near peak even when L is small,
# and a tile size fixed by the shapes alone, so that results never depend on the
# workspace limit (a limit can only split a tile's rows, see ``_chunks``).
TILE_COLUMNS = 2048


def tile_samples(out_size) -> int:
    """Samples per GEMM tile for output size ``O``: ``ceil(TILE_COLUMNS / prod(O))``."""
    return max(1, -(-TILE_COLUMNS // _args.prod(out_size)))


def _chunks(batch: int, geom: _args.Geometry, channels: int, itemsize: int):
    """(batch slice, first-output-dim slice) pieces of the im2col kernels: tiles of
    ``tile_samples(O)`` samples, cut into row runs under the workspace limit
    (``_config.work_chunks``); X̃ has ``channels·prod(k)`` rows."""
    out_size = geom.out_size
    row_bytes = _args.unfolded_bytes(channels, geom.kernel, itemsize) * _args.prod(out_size[1:])
    return work_chunks(batch, out_size[0], tile_samples(out_size), row_bytes)


def _input_rows(rows: slice, stride, dilation, kernel) -> slice:
    """Padded-input rows (first spatial dim) read by output rows ``rows``."""
    return slice(rows.start * stride[0],
                 (rows.stop - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1)


def _unfold_grouped(xp: np.ndarray, geom: _args.Geometry, out_size) -> np.ndarray:
    """X̃ of the seed equation for a tile: ``xp (n, C_in, *P) -> (G, K, n·L)``.

    One strided copy of the window view (shared out over channels between
    threads), ordered so that (channel, kernel offset) are rows and
    (sample, output position) are columns: the samples of a tile side by side.
    """
    d = geom.d
    n = xp.shape[0]
    if n == 1 and xp.shape[2:] == tuple(out_size) and xp.flags.c_contiguous:
        return xp.reshape(geom.groups, -1, _args.prod(out_size))   # 1x1, stride 1: X̃ is x itself
    view = window_view(xp, geom.kernel, geom.stride, geom.dilation, out_size)  # (n, C_in, *k, *O)
    perm = tuple(range(1, 2 + d)) + (0,) + tuple(range(2 + d, 2 + 2 * d))     # (C_in, *k, n, *O)
    columns = n * _args.prod(out_size)
    cols = gemm_empty(view.shape[1:2 + d] + (columns,), xp.dtype)             # (C_in, *k, n·L)
    copy_parallel(cols.reshape(cols.shape[:-1] + (n,) + tuple(out_size)), view.transpose(perm))
    return cols.reshape(geom.groups, -1, columns)


def _input_cols(x: np.ndarray, geom: _args.Geometry, mode: str):
    """For each chunk of ``_chunks``: ``(samples, rows, out_size, X̃_g (G, K, n·L))``.

    The input is padded once per tile of samples (not per row run) and only the
    input rows that the chunk's output rows read are unfolded. Shared by the
    forward (``Y = W̃X̃``) and the weight gradient (``dW̃ = δX̃ᵀ``).
    """
    xp, padded = None, None
    for samples, rows in _chunks(x.shape[0], geom, x.shape[1], x.itemsize):
        if padded != samples:
            xp, padded = pad(x[samples], geom.pads, mode), samples
        out_size = (rows.stop - rows.start,) + geom.out_size[1:]
        x_rows = xp[:, :, _input_rows(rows, geom.stride, geom.dilation, geom.kernel)]
        yield samples, rows, out_size, _unfold_grouped(x_rows, geom, out_size)


def _group_rows(array: np.ndarray, groups: int) -> np.ndarray:
    """``(n, C, *O) -> (G, C/G, n·L)``: channels as rows, samples side by side."""
    n, c = array.shape[:2]
    if n == 1:
        return array.reshape(groups, c // groups, -1)
    rows = np.ascontiguousarray(np.moveaxis(array.reshape(n, c, -1), 0, 1))  # (C, n, L)
    return rows.reshape(groups, c // groups, -1)


def _ungroup_rows(rows: np.ndarray, n: int, out_shape) -> np.ndarray:
    """Inverse of ``_group_rows`` as a view: ``(G, C/G, n·L) -> (n, C, *O)``."""
    c = rows.shape[0] * rows.shape[1]
    return np.moveaxis(rows.reshape((c, n) + tuple(out_shape)), 1, 0)


# --------------------------------------------------------------------------
# the three kernels (shared with conv_transpose)
# --------------------------------------------------------------------------
def _conv_forward(x: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str,
                  algorithm: str = "auto", bias=None) -> np.ndarray:
    """``Y = W̃ X̃ + b``: x ``(N, C_in, *S)``, weight ``(C_out, C_ig, *k)``, bias ``(C_out,)`` or
    None -> ``(N, C_out, *O)``. Kernels that copy their result into ``y`` add the bias in
    that copy (``_im2col.store``); the others add it in place afterwards."""
    algorithm = select_algorithm(algorithm, geom, weight.shape)
    batch = x.shape[0]
    c_out = weight.shape[0]
    groups = geom.groups
    if algorithm == "depthwise":
        return depthwise_forward(x, weight, geom, mode, bias)
    if algorithm == "winograd":
        return _add_bias(winograd_forward(x, weight, geom, mode), bias)
    if algorithm == "shifted":
        return shifted_forward(x, weight, geom, mode, bias)
    if algorithm == "im2row":
        return im2row_forward(x, weight, geom, mode, _chunks(batch, geom, x.shape[1], x.itemsize), bias)
    w_mat = weight.reshape(groups, c_out // groups, -1)   # W̃_g (G, C_og, K)
    y = np.empty((batch, c_out) + geom.out_size, dtype=x.dtype)
    for batch_slice, rows, out_size, x_cols in _input_cols(x, geom, mode):  # X̃_g (G, K, n·L)
        _store_product(w_mat, x_cols, y, batch_slice, rows, out_size, bias)
    return y


def _store_product(w_mat: np.ndarray, cols: np.ndarray, y: np.ndarray, samples: slice, rows: slice,
                   out_size, bias=None) -> None:
    """``y[samples, :, rows] = W̃_g X̃_g (+ b)`` for one im2col tile: w_mat ``(G, C_og, K)``, cols
    ``(G, K, n·L)``. A whole one-sample tile's product lands in y in place."""
    n = samples.stop - samples.start
    groups, c_og = w_mat.shape[:2]
    if n == 1 and tuple(out_size) == y.shape[2:]:
        np.matmul(w_mat, cols, out=y[samples].reshape(groups, c_og, -1))
        _add_bias(y[samples], bias)
    else:
        y_rows = np.matmul(w_mat, cols)                                  # Y_g (G, C_og, n·L)
        copy_parallel(y[samples, :, rows], _ungroup_rows(y_rows, n, out_size), bias)


def _conv_weight_grad(x: np.ndarray, dy: np.ndarray, geom: _args.Geometry, mode: str,
                      algorithm: str = "auto") -> np.ndarray:
    """``dW̃ = δ X̃ᵀ``: x ``(N, C_in, *S)``, dy ``(N, C_out, *O)`` -> ``(C_out, C_ig, *k)``.

    Each tile's product is added in tile order, and tiles are fixed by the
    shapes, so the result does not depend on the workspace limit.
    """
    c_out = dy.shape[1]
    shape = geom.kernel
    algorithm = select_algorithm(algorithm, geom, (c_out, x.shape[1] // geom.groups) + shape,
                                 kernel_pass="weight")
    if algorithm == "depthwise":
        return depthwise_weight_grad(x, dy, geom, mode)
    if algorithm == "winograd":
        return winograd_weight_grad(x, dy, geom, mode)
    if algorithm == "shifted":
        return shifted_weight_grad(x, dy, geom, mode)
    if algorithm == "im2row":
        return im2row_weight_grad(x, dy, geom, mode, _chunks(x.shape[0], geom, x.shape[1], x.itemsize))
    batch, c_in = x.shape[:2]
    groups = geom.groups
    # dW̃_gᵀ = X̃_g δ_gᵀ (G, K, C_og): the same products, in the orientation OpenBLAS runs
    # fastest (conv3d 16->32: 326 against 164 GFLOP/s for δ X̃ᵀ; 64@56: 369 against 267)
    dw_mat_t = ProductSum(np.empty((1, groups, (c_in // groups) * _args.prod(geom.kernel), c_out // groups),
                                   dtype=x.dtype))
    for batch_slice, rows, _, x_cols in _input_cols(x, geom, mode):   # X̃_g (G, K, n·L)
        dy_rows = _group_rows(dy[batch_slice, :, rows], groups)       # δ_g (G, C_og, n·L)
        dw_mat_t.add(0, x_cols, dy_rows.swapaxes(1, 2))               # (δ_g X̃_gᵀ)ᵀ
    return dw_mat_t.result()[0].transpose(0, 2, 1).reshape((c_out, c_in // groups) + geom.kernel)


def _conv_input_grad(dy: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str,
                     algorithm: str = "auto") -> np.ndarray:
    """``dX = Pᵀ fold(W̃ᵀ δ)``: dy ``(N, C_out, *O)``, weight ``(C_out, C_ig, *k)`` -> ``(N, C_in, *S)``.

    This is also the transposed convolution of ``dy`` (``mode="zeros"``). The im2col
    kernel computes it by the fold, split by stride phase where that pays
    (``_phases_pay``), or as the correlation of δ with the flipped kernel where that pays
    (``_same_conv_pays``).
    """
    requested = algorithm
    algorithm = select_algorithm(algorithm, geom, weight.shape, kernel_pass="input", mode=mode)
    if algorithm == "depthwise":
        return depthwise_input_grad(dy, weight, geom, mode)
    if algorithm == "winograd":
        return winograd_input_grad(dy, weight, geom, mode)
    if algorithm == "shifted":
        return shifted_input_grad(dy, weight, geom, mode)
    if algorithm == "im2row":
        return im2row_input_grad(dy, weight, geom, mode,
                                 _chunks(dy.shape[0], geom, weight.shape[1] * geom.groups, dy.itemsize))
    if _phases_pay(geom, weight.shape, dy.itemsize):
        return _conv_input_grad_phases(dy, weight, geom, mode)
    if _same_conv_pays(geom, weight.shape, mode):   # a forward convolution, whose kernel
        return _conv_input_grad_full(dy, weight, geom, mode, requested)   # "auto" picks
    return _conv_input_grad_fold(dy, weight, geom, mode)


def _phases_fit(geom: _args.Geometry, weight_shape) -> bool:
    """The shapes where the phases pay (``_phases_pay`` without its workspace test)."""
    taps = _phase_taps(geom)
    if taps is None or any(k % s for k, s in zip(geom.kernel, geom.stride)):
        return False
    return _args.prod(geom.stride) * weight_shape[1] >= 64


def _phases_pay(geom: _args.Geometry, weight_shape, itemsize: int) -> bool:
    """Where the phase decomposition beat the fold: no zero-padded taps (k divisible by s),
    at least 64 GEMM rows (``prod(s)·C_ig``), and a tile's unfolded δ within the workspace
    limit. Measured (N=8, float32): transposed 4x4 s2 128->64@32 8.3 vs 14.4 ms; it loses
    with padded taps or thin rows (7x7 s2 with 3 input channels: 72 vs 18 ms)."""
    if not _phases_fit(geom, weight_shape):
        return False
    taps = _phase_taps(geom)
    positions = _phase_positions(geom)
    tile_bytes = (itemsize * weight_shape[0] * _args.prod(taps) * _args.prod(positions)
                  * tile_samples(positions))
    return tile_bytes <= get_workspace_limit()


def _conv_input_grad_fold(dy: np.ndarray, weight: np.ndarray, geom: _args.Geometry,
                          mode: str) -> np.ndarray:
    """``dX = Pᵀ fold(W̃ᵀ δ)`` by the im2col kernel: GEMM, then col2im adds."""
    batch, c_out = dy.shape[:2]
    groups = geom.groups
    c_in = weight.shape[1] * groups
    w_mat_t = weight.reshape(groups, c_out // groups, -1).swapaxes(1, 2)   # W̃_gᵀ (G, K, C_og)
    dx = np.empty((batch, c_in) + geom.in_size, dtype=dy.dtype)
    if geom.pointwise and tuple(geom.in_size) == tuple(geom.out_size):
        # 1x1, stride 1, no padding (and, for a transposed convolution, no output padding):
        # X̃ of a sample is x itself, so its fold is the identity and
        # dX_n = W̃ᵀ δ_n per sample and group, straight into dx (1x1 256->64@56, N=8: no padded
        # buffer, col2im adds or crop, 5.2 -> 3.0 ms)
        np.matmul(w_mat_t, dy.reshape(batch, groups, c_out // groups, -1),
                  out=dx.reshape(batch, groups, c_in // groups, -1))
        return dx
    dxp, padded_batch = None, None

    def unpad_into_dx():
        dx[padded_batch] = pad_adjoint(dxp, geom.pads, mode, geom.in_size)

    for batch_slice, rows in _chunks(batch, geom, c_in, dy.itemsize):
        if padded_batch != batch_slice:
            if dxp is not None:
                unpad_into_dx()
            padded_batch = batch_slice
            dxp = np.zeros((batch_slice.stop - batch_slice.start, c_in) + geom.padded_size, dtype=dy.dtype)
        n = dxp.shape[0]
        out_size = (rows.stop - rows.start,) + geom.out_size[1:]
        dy_rows = _group_rows(dy[batch_slice, :, rows], groups)           # δ_g (G, C_og, n·L)
        dx_cols = np.matmul(w_mat_t, dy_rows,                              # dX̃_g (G, K, n·L)
                            out=gemm_empty(w_mat_t.shape[:2] + dy_rows.shape[-1:], dy.dtype))
        # (G, K, n·L) = (C_in, *k, n, *O) -> view (C_in, n, *k, *O) for the strided col2im adds,
        # which run over cache-sized blocks of channels
        dx_cols = np.moveaxis(dx_cols.reshape((c_in,) + geom.kernel + (n,) + out_size), geom.d + 1, 1)
        fold_padded(dx_cols, None, geom.kernel, geom.stride, geom.dilation,
                    out=dxp[:, :, _input_rows(rows, geom.stride, geom.dilation, geom.kernel)].swapaxes(0, 1))
    if dxp is not None:  # (an empty batch has no chunk)
        unpad_into_dx()
    return dx


def _phase_taps(geom: _args.Geometry):
    """Taps per phase ``A = ceil(k/s)`` of the phase decomposition, or None where it does
    not apply (a dilation > 1, or stride 1 in every dim: then it is the full convolution)."""
    if any(dil != 1 for dil in geom.dilation) or all(s == 1 for s in geom.stride):
        return None
    return tuple(-(-k // s) for k, s in zip(geom.kernel, geom.stride))


def _phase_positions(geom: _args.Geometry) -> tuple:
    """Positions per phase ``T = ceil(P/s)``: padded-input index ``r + s·t``, ``t < T``."""
    return tuple(-(-p // s) for p, s in zip(geom.padded_size, geom.stride))


def _conv_input_grad_phases(dy: np.ndarray, weight: np.ndarray, geom: _args.Geometry,
                            mode: str) -> np.ndarray:
    """Input gradient of a strided convolution (dilation 1) split by output phase, without col2im.

    Write a padded-input position as ``q = r + s·t`` with phase ``0 <= r < s``. Only the
    taps ``m = r + s·a`` reach phase ``r`` (``q - m`` must be a multiple of ``s``), and
    then ``o = t - a``, so per phase the sum of section 4 is a small full correlation::

        dXp[n, ci, r + s·t] = Σ_co Σ_a W[co, ci, r + s·a] · δ[n, co, t - a]

    With the kernel zero-padded to ``A·s`` taps (``A = ceil(k/s)``), every phase reads
    the same ``A``-windows of ``δ`` padded by ``A-1`` in front: one unfold of ``δ`` and
    ONE GEMM whose rows stack the ``prod(s)`` phases' flipped sub-kernels; each phase's
    rows are then copied to the positions ``r + s·t`` (the sub-pixel / pixel-shuffle form
    of a transposed convolution). It does ``prod(A·s)/prod(k)`` times the multiplies of the
    fold (1 for k = 4, s = 2) but reads and writes every element once instead of ``prod(k)``
    strided adds. dy ``(N, C_out, *O)``, weight ``(C_out, C_ig, *k)`` -> ``(N, C_in, *S)``.
    """
    d, groups = geom.d, geom.groups
    taps, stride, kernel = _phase_taps(geom), geom.stride, geom.kernel
    batch, c_out = dy.shape[:2]
    c_ig = weight.shape[1]
    c_og, c_in = c_out // groups, c_ig * groups
    positions = _phase_positions(geom)                                           # T = ceil(P/s)
    # W zero-padded to A·s taps, split m = a·s + r, sub-kernels flipped in a (a correlation):
    w_pad = np.zeros((c_out, c_ig) + tuple(a * s for a, s in zip(taps, stride)), dtype=weight.dtype)
    w_pad[(slice(None), slice(None)) + tuple(slice(0, k) for k in kernel)] = weight
    w_split = w_pad.reshape((groups, c_og, c_ig) + tuple(v for a, s in zip(taps, stride) for v in (a, s)))
    w_split = w_split[(slice(None),) * 3 + tuple(v for _ in range(d) for v in (slice(None, None, -1), slice(None)))]
    # rows (phase r_1..r_d, ci), columns (co, b_1..b_d), per group
    a_axes = tuple(3 + 2 * i for i in range(d))
    r_axes = tuple(4 + 2 * i for i in range(d))
    w_stack = np.ascontiguousarray(w_split.transpose((0,) + r_axes + (2, 1) + a_axes))
    w_stack = w_stack.reshape(groups, _args.prod(stride) * c_ig, c_og * _args.prod(taps))
    # δ padded by A-1 in front and to T + A - 1 in all: window t reads δ[t - a], a < A
    dy_pads = tuple((a - 1, t - o) for a, t, o in zip(taps, positions, geom.out_size))
    window_geom = _args.Geometry(d, taps, (1,) * d, (1,) * d, ((0, 0),) * d, groups,
                                 tuple(t + a - 1 for t, a in zip(positions, taps)), positions)
    dxp = np.empty((batch, c_in) + geom.padded_size, dtype=dy.dtype)
    tile = tile_samples(positions)
    for start in range(0, batch, tile):
        samples = slice(start, min(start + tile, batch))
        n = samples.stop - samples.start
        dy_cols = _unfold_grouped(pad(dy[samples], dy_pads), window_geom, positions)  # (G, C_og·A^d, n·T)
        phases = np.matmul(w_stack, dy_cols).reshape(                              # (G, s.., C_ig, n, T..)
            (groups,) + stride + (c_ig, n) + positions)
        for phase in itertools.product(*(range(s) for s in stride)):
            read = tuple(slice(0, -(-(p - r) // s)) for p, r, s in zip(geom.padded_size, phase, stride))
            values = phases[(slice(None),) + phase + (slice(None), slice(None)) + read]  # (G, C_ig, n, ..)
            values = np.moveaxis(values.reshape((c_in, n) + values.shape[3:]), 1, 0)
            dxp[(samples, slice(None)) + tuple(slice(r, None, s) for r, s in zip(phase, stride))] = values
    return pad_adjoint(dxp, geom.pads, mode, geom.in_size)


def _same_conv_fits(geom: _args.Geometry, mode: str) -> bool:
    """Stride 1, zero padding no wider than the kernel's reach ``dil·(k-1)`` on either side:
    dx is then a correlation of δ that lands on dx itself (``_conv_input_grad_full``)."""
    return (mode == "zeros" and all(s == 1 for s in geom.stride)
            and all(lo <= dil * (k - 1) and hi <= dil * (k - 1)
                    for dil, k, (lo, hi) in zip(geom.dilation, geom.kernel, geom.pads)))


def _same_conv_pays(geom: _args.Geometry, weight_shape, mode: str) -> bool:
    """Where that correlation (a forward convolution of δ, written straight into dx, on the
    kernel "auto" picks for it) measured faster than the input gradient's own kernels
    (float32, medians of interleaved runs, ms):

    * 2-d depthwise layers with a channel multiplier of 1, whose flipped kernel is again
      depthwise: dx on the depthwise forward against the depthwise kernel's dx, N=8, 144@56
      5.1 vs 10.2, 64@56 3.2 vs 4.7, 128@28 2.8 vs 3.4, 256@14 1.5 vs 2.0; N=32 16@56 3.8
      vs 5.3, 32@8 0.34 vs 0.43; the suite's 32@112, N=16, 7.4 vs 7.5; with 5x5 and 7x7
      kernels against the shifted kernel's, 96@56 7.4-9.6 vs 8.1-12.1, 64@56 5.6 vs 6.6.
      Not with a multiplier of 2 or 4 (32@56: 1.7 vs 1.5, 3.1 vs 2.4).
    * groups = 1 and ``C_in >= C_out`` (the GEMM has C_in rows), 1-d: dx against the
      shifted kernel's stacked δ, N=16, 64@4096 5.9 vs 6.6, k=3 unpadded 5.9 vs 7.0,
      7-tap 16 channels 1.9 vs 2.4, 64->32 3.5 vs 4.1, 128@1024 5.8 vs 6.0, 5-tap 10.2 vs
      10.5. It loses at 32->64 (4.5 vs 4.0).
    * groups = 1 and ``C_in >= C_out``, 2-d with at most 64 input channels and 1024 output
      positions, where the shifted kernel's tiles hold several samples and its dx folds
      all ∏k taps: ``conv_grad``, N=32, 16@32 5.0 vs 5.8, 32@16 3.9 vs 4.2, 64@16 12.7 vs
      13.2, 64@8 2.6 vs 2.6; N=16 48@24 6.1 vs 7.1; N=8 32@32 8.1 vs 9.4. Not on large
      images, where the shifted kernel's two gradients share one sweep (64@56 12.7 vs
      12.1), nor with more channels (128@8, N=32: 4.4-6.0 vs 4.8-5.3), nor conv3d
      (C_in < C_out; 9.1 vs 7.7).
    """
    if geom.pointwise or not _same_conv_fits(geom, mode):
        return False
    if geom.groups > 1:   # depthwise: δ's correlation is the depthwise forward's own kernel
        return geom.d == 2 and weight_shape[1] == 1 and weight_shape[0] == geom.groups
    fits = geom.d == 1 or (geom.d == 2 and weight_shape[1] <= 64 and _args.prod(geom.out_size) <= 1024)
    return fits and weight_shape[1] >= weight_shape[0]


def _flipped_weight(weight: np.ndarray, geom: _args.Geometry) -> np.ndarray:
    """``W_flip[ci, co] = W[co, ci, ::-1, ...]`` per group: ``(C_out, C_ig, *k) -> (C_in, C_og, *k)``."""
    groups, c_out, c_ig = geom.groups, weight.shape[0], weight.shape[1]
    # (C_out, C_ig, *k) -> (G, C_og, C_ig, *k) -> (G, C_ig, C_og, *k) -> (C_in, C_og, *k), flipped
    w_flipped = weight.reshape((groups, c_out // groups, c_ig) + geom.kernel).swapaxes(1, 2)
    w_flipped = w_flipped.reshape((groups * c_ig, c_out // groups) + geom.kernel)
    return np.ascontiguousarray(w_flipped[(slice(None), slice(None)) + (slice(None, None, -1),) * geom.d])


def _same_conv_geometry(geom: _args.Geometry) -> _args.Geometry:
    """The correlation of δ with the flipped kernel that lands on dx (``_same_conv_fits``).

    Stride 1, zero padding p <= dil·(k-1): no zero-stuffing, and only the padding
    dil·(k-1) - p on each side that reaches the input, so the correlation lands on
    dx itself (output size O + 2·dil·(k-1) - (p_lo + p_hi) - dil·(k-1) = S). Input
    positions past the last window (a transposed conv's output_padding: P - dil·(k-1)
    - O of them) get outputs that read only padding, exact zeros."""
    pads = tuple((dil * (k - 1) - lo, dil * (k - 1) - hi + (p - dil * (k - 1) - o))
                 for dil, k, (lo, hi), p, o in zip(geom.dilation, geom.kernel, geom.pads,
                                                   geom.padded_size, geom.out_size))
    return _args.Geometry(geom.d, geom.kernel, (1,) * geom.d, geom.dilation, pads, geom.groups,
                          geom.out_size, geom.in_size)


def _same_conv_sweep(geom: _args.Geometry, weight: np.ndarray, mode: str, algorithm: str):
    """``(kernel, same_geom, w_flipped)`` where ``conv_grad`` computes dx as the correlation of
    δ with the flipped kernel (``_same_conv_pays``) and dW on the same kernel, ``"depthwise"``
    or ``"im2col"``, from one pass over δ (``depthwise_backward``, ``_same_conv_grads``);
    else None. Only for "auto": an explicit algorithm keeps its own passes."""
    if algorithm != "auto" or not _same_conv_pays(geom, weight.shape, mode):
        return None
    kernel = select_algorithm("auto", geom, weight.shape, kernel_pass="weight")
    if kernel not in ("depthwise", "im2col"):
        return None
    same_geom = _same_conv_geometry(geom)
    w_flipped = _flipped_weight(weight, geom)
    if select_algorithm("auto", same_geom, w_flipped.shape) != kernel:
        return None
    return kernel, same_geom, w_flipped


def _same_conv_grads(dy: np.ndarray, x: np.ndarray, w_flipped: np.ndarray, geom: _args.Geometry,
                     same_geom: _args.Geometry):
    """``(dx, dweight)`` from one im2col unfold of δ (``_same_conv_sweep``): dy ``(N, C_out, *O)``,
    x ``(N, C_in, *S)``, w_flipped ``(C_in, C_og, *k)``.

    That unfold, ``X̃_δ[(co, m'), i] = δ[co, i + p_lo - (k-1-m')·dil]`` over the input
    positions ``i``, gives ``dX = W̃_flip X̃_δ`` and also the weight gradient:
    ``dW[co, ci, m] = Σ_o δ[co, o] Xp[ci, o + m·dil] = Σ_i X̃_δ[(co, k-1-m), i] X[ci, i]``,
    so ``dW_flip = X̃_δ Xᵀ`` (per group, ``(C_og·K, n·S) @ (n·S, C_ig)``), and x is not
    unfolded at all (conv1d 64@4096, N=16: ``conv_grad`` 13.2 -> 11.9 ms; bench fwd+bwd 20.7
    -> 18.7 in the normal mode, 25.1 -> 23.9-24.1 in the slow one). The same products as
    ``δ X̃ᵀ``, summed over positions in the same order."""
    batch, c_in = x.shape[:2]
    groups, c_out = geom.groups, dy.shape[1]
    c_og, c_ig = c_out // groups, c_in // groups
    w_mat = w_flipped.reshape(groups, c_ig, -1)                      # W̃_flip,g (G, C_ig, C_og·K)
    dx = np.empty((batch, c_in) + geom.in_size, dtype=dy.dtype)
    dw_flip = ProductSum(np.empty((1, groups, w_mat.shape[2], c_ig), dtype=dy.dtype))
    for samples, rows, out_size, dy_cols in _input_cols(dy, same_geom, "zeros"):   # X̃_δ (G, C_og·K, n·L)
        _store_product(w_mat, dy_cols, dx, samples, rows, out_size)
        x_rows = _group_rows(x[samples, :, rows], groups)            # (G, C_ig, n·L)
        dw_flip.add(0, dy_cols, x_rows.swapaxes(1, 2))               # (G, C_og·K, C_ig)
    # dW_flip[g, (co, m'), ci] = dW[g·C_og + co, ci, k-1-m']
    dw = dw_flip.result()[0].reshape((groups, c_og) + geom.kernel + (c_ig,))
    dw = dw[(slice(None), slice(None)) + (slice(None, None, -1),) * geom.d]
    dw = np.moveaxis(dw, -1, 2).reshape((c_out, c_ig) + geom.kernel)
    return dx, np.ascontiguousarray(dw)


def _conv_input_grad_full(dy: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str,
                          algorithm: str = "auto") -> np.ndarray:
    """Input gradient as a *convolution*: the full convolution of the stride-dilated ``δ``
    with the flipped, group-transposed kernel (tinygrad's / the textbook form).

    ``dXp[n, ci, q] = Σ_{co, m} W[co, ci, m] δ[n, co, (q - m·dil)/s]`` (terms with a
    non-integer or out-of-range index vanish): insert ``s-1`` zeros between the
    elements of ``δ``, pad ``dil·(k-1)`` on both sides and correlate with ``W``
    flipped in space and with in/out channels swapped per group.
    """
    batch, c_out = dy.shape[:2]
    groups, d = geom.groups, geom.d
    w_flipped = _flipped_weight(weight, geom)
    forward_algorithm = algorithm if algorithm != "depthwise" else "auto"
    if _same_conv_fits(geom, mode):
        return _conv_forward(dy, w_flipped, _same_conv_geometry(geom), "zeros", forward_algorithm)
    dilated_size = tuple((o - 1) * s + 1 for o, s in zip(geom.out_size, geom.stride))
    dy_dilated = np.zeros((batch, c_out) + dilated_size, dtype=dy.dtype)
    dy_dilated[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geom.stride)] = dy
    full_pads = tuple((dil * (k - 1),) * 2 for dil, k in zip(geom.dilation, geom.kernel))
    reached = tuple(size + dil * (k - 1) for size, dil, k in zip(dilated_size, geom.dilation, geom.kernel))
    full_geom = _args.Geometry(d, geom.kernel, (1,) * d, geom.dilation, full_pads, groups,
                               dilated_size, reached)
    dx_reached = _conv_forward(dy_dilated, w_flipped, full_geom, "zeros", forward_algorithm)
    # Padded positions past the last window (floor in the output size) get no gradient.
    dxp = np.zeros((batch, w_flipped.shape[0]) + geom.padded_size, dtype=dy.dtype)
    dxp[(slice(None), slice(None)) + tuple(slice(0, r) for r in reached)] = dx_reached
    return pad_adjoint(dxp, geom.pads, mode, geom.in_size)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def _finish(y: np.ndarray, unbatched: bool, dtype) -> np.ndarray:
    y = y.astype(dtype, copy=False)
    return y[0] if unbatched else y


def _add_bias(y: np.ndarray, bias) -> np.ndarray:
    if bias is not None:
        y += bias.reshape((-1,) + (1,) * (y.ndim - 2))  # in place: no second output-sized array
    return y


def conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
         algorithm="auto"):
    """N-d convolution (cross-correlation), d = ``weight.ndim - 2`` in {1, 2, 3}.

    Parameters
    ----------
    x : array ``(N, C_in, *S)`` or unbatched ``(C_in, *S)``
    weight : array ``(C_out, C_in/groups, *k)``
    bias : array ``(C_out,)`` or None
    stride, dilation : int or d ints (>= 1)
    padding : int, d ints, d ``(lo, hi)`` pairs, ``"valid"`` or ``"same"``
        (``"same"``: ``O = ceil(S/stride)``; odd total padding puts the extra at the end)
    groups : int dividing C_in and C_out
    padding_mode : ``"zeros" | "reflect" | "replicate" | "circular"``
    algorithm : ``"auto" | "im2col" | "im2row" | "shifted" | "depthwise" | "winograd"`` (see ``select_algorithm``;
        results agree to rounding whichever applies)

    Returns
    -------
    y : ``(N, C_out, *O)`` (unbatched in, unbatched out), ``O = floor((S + p_lo + p_hi - dil(k-1) - 1)/s) + 1``,
        dtype ``np.result_type(x, weight)`` (float16 computed in float32).

    Raises
    ------
    TypeError  non-float dtypes.  ValueError  any inconsistent argument (the message names it).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 2, 5, 5)); w = np.ones((3, 2, 3, 3))
    >>> npconv.conv(x, w, padding=1).shape
    (1, 3, 5, 5)
    >>> float(npconv.conv(x, w)[0, 0, 0, 0])   # 2 channels x 3x3 ones
    18.0
    """
    call = _args.conv_call(x, weight, bias, stride, padding, dilation, groups, padding_mode, "conv")
    return _conv_public(call, algorithm, "conv")


def _conv_public(call: _args.ConvCall, algorithm: str, fn: str):
    select_algorithm(algorithm, call.geom, call.weight.shape, fn)  # validate before any work
    y = _conv_forward(call.x, call.weight, call.geom, call.padding_mode, algorithm, call.bias)
    return _finish(y, call.unbatched, call.result_dtype)


def _conv_d(d: int):
    name = f"conv{d}d"

    def conv_nd(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
                algorithm="auto"):
        call = _args.conv_call(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                               name, expect_d=d)
        return _conv_public(call, algorithm, name)

    conv_nd.__name__ = conv_nd.__qualname__ = name
    conv_nd.__doc__ = f"{d}-d convolution: ``conv`` with a check that ``weight.ndim == {d + 2}``. See ``npconv.conv``."
    return conv_nd


conv1d, conv2d, conv3d = _conv_d(1), _conv_d(2), _conv_d(3)

DX_METHODS = ("auto", "fold", "full_conv", "phases")


def conv_grad(dy, x, weight, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              bias=True, *, dx_method="auto", algorithm="auto"):
    """Gradients of ``sum(conv(x, weight, b, ...) * dy)`` with respect to x, weight and bias.

    Parameters
    ----------
    dy : array ``(N, C_out, *O)`` (or unbatched ``(C_out, *O)`` with unbatched x)
    x, weight, stride, padding, dilation, groups, padding_mode : as in ``conv``
    bias : bool, whether to return ``dbias`` (else it is None)
    dx_method : how the im2col kernel computes dx: ``"fold"`` (``Pᵀ fold(W̃ᵀ δ)``),
        ``"full_conv"`` (full convolution of the stride-dilated ``δ`` with the flipped kernel,
        the textbook form; zero-stuffing wastes ``prod(s)`` of its work and its GEMM has only
        C_in rows; at stride 1 with zero padding ``p <= dil·(k-1)`` no stuffing, and the
        padding cut to ``dil·(k-1) - p`` so that it lands on dx) or ``"phases"`` (stride > 1,
        dilation 1: one small full correlation per stride phase, ``_conv_input_grad_phases``).
        ``"auto"`` (default): the kernel ``algorithm`` picks for the input gradient; its
        im2col form is the fold (faster than the full convolution on the strided suite
        layers, e.g. the 7x7 stem 29 vs 680 ms), the phases where they pay
        (``_phases_pay``), or the stride-1 full convolution where it pays
        (``_same_conv_pays``: 1-d, small 2-d and depthwise layers)
    algorithm : as in ``conv``

    Returns
    -------
    ConvGrads(dx ``like x``, dweight ``like weight``, dbias ``(C_out,)`` or None),
    in dtype ``np.result_type(x, weight)``.
    """
    fn = "conv_grad"
    call = _args.conv_call(x, weight, None, stride, padding, dilation, groups, padding_mode, fn)
    if dx_method not in DX_METHODS:
        raise ValueError(f"{fn}: 'dx_method' must be one of {DX_METHODS}, got {dx_method!r}")
    geom = call.geom
    select_algorithm(algorithm, geom, call.weight.shape, fn)  # validate before any work
    if dx_method != "auto" and algorithm in ("winograd", "shifted", "im2row"):
        raise ValueError(f"{fn}: dx_method={dx_method!r} is an im2col formulation; with "
                         f"algorithm={algorithm!r} use dx_method='auto'")
    dy = _batched_grad(dy, call.unbatched, (call.x.shape[0], call.weight.shape[0]) + geom.out_size,
                       call.x.dtype, fn)
    weight_shape = call.weight.shape
    dweight = None
    sweep = _same_conv_sweep(geom, call.weight, call.padding_mode, algorithm) if dx_method == "auto" else None
    if sweep is not None:   # dx as δ's correlation, and dW (and db) from the same pass over δ
        kernel, same_geom, w_flipped = sweep
        if kernel == "depthwise":
            dx, dweight, dbias = depthwise_backward(dy, call.x, w_flipped, geom, same_geom,
                                                    call.padding_mode, bias)
        else:
            dx, dweight = _same_conv_grads(dy, call.x, w_flipped, geom, same_geom)
            dbias = bias_grad(dy) if bias else None
        return _grads(dx, dweight, dbias, call.unbatched, call.result_dtype)
    if dx_method == "auto" and (select_algorithm(algorithm, geom, weight_shape, fn, "input",
                                                 call.padding_mode)
                                == select_algorithm(algorithm, geom, weight_shape, fn, "weight")
                                == "shifted"):
        # both passes in one sweep over the tiles (δ on the flat layout built once)
        dx, dweight = shifted_backward(dy, geom, call.padding_mode, x=call.x, weight=call.weight)
    elif dx_method == "auto":   # the kernel the pass picks; its im2col form is the fold
        dx = _conv_input_grad(dy, call.weight, geom, call.padding_mode, algorithm)
    elif dx_method == "fold":
        dx_algorithm = select_algorithm(algorithm, geom, call.weight.shape, fn, "input")
        dx = (_conv_input_grad_fold(dy, call.weight, geom, call.padding_mode)
              if dx_algorithm != "depthwise"
              else _conv_input_grad(dy, call.weight, geom, call.padding_mode, "depthwise"))
    elif dx_method == "phases":
        if _phase_taps(geom) is None:
            raise ValueError(f"{fn}: dx_method='phases' needs a stride > 1 and dilation 1, got "
                             f"stride {geom.stride} and dilation {geom.dilation}")
        dx = _conv_input_grad_phases(dy, call.weight, geom, call.padding_mode)
    else:
        dx = _conv_input_grad_full(dy, call.weight, geom, call.padding_mode, algorithm)
    if dweight is None:
        dweight = _conv_weight_grad(call.x, dy, geom, call.padding_mode, algorithm)
    dbias = bias_grad(dy) if bias else None
    return _grads(dx, dweight, dbias, call.unbatched, call.result_dtype)


def bias_grad(dy: np.ndarray) -> np.ndarray:
    """``db = Σ_{n,o} δ``: dy ``(N, C, *O)`` -> ``(C,)`` (``channel_sums``)."""
    return channel_sums(dy)


def channel_sums(a: np.ndarray, b=None) -> np.ndarray:
    """``Σ_{n,o} a[n, c, o]`` (or of ``a·b``, b like a) per channel: ``(N, C, *S) -> (C,)``.

    Per sample one BLAS matrix-vector product with a ones vector (or one dot product per
    channel), then the sum over samples: 64@56 N=8 float32 0.07 against 0.21 ms for
    ``dy.sum`` over the axes, the depthwise 32@112 N=16 0.48 against 0.94 ms; ``Σ a·b``
    on 32x16x32x32 0.15 against 0.30 ms for ``(a * b).sum``. Float32 error within a few
    ulps of ``Σ|a·b|`` (BLAS accumulates in vector lanes instead of NumPy's pairwise sum).
    """
    rows = a.reshape(a.shape[:2] + (_args.prod(a.shape[2:]),))              # (N, C, L)
    if b is None:
        return np.matmul(rows, np.ones(rows.shape[-1], dtype=a.dtype)).sum(axis=0)
    dots = np.matmul(rows[:, :, None, :], b.reshape(rows.shape)[:, :, :, None])   # (N, C, 1, 1)
    return dots.reshape(rows.shape[:2]).sum(axis=0)


def _batched_grad(dy, unbatched: bool, expected_shape, dtype, fn: str) -> np.ndarray:
    """Validate ``dy`` against the output shape and return it batched in the compute dtype."""
    dy = _args.as_float_array("dy", dy, fn)
    _args.check_grad_shape(dy, expected_shape[1:] if unbatched else expected_shape, fn)
    dy = dy[None] if unbatched else dy
    return _args.as_compute(dy, dtype)


def _grads(dx, dweight, dbias, unbatched: bool, dtype) -> ConvGrads:
    return ConvGrads(_finish(dx, unbatched, dtype), dweight.astype(dtype, copy=False),
                     None if dbias is None else dbias.astype(dtype, copy=False))


def conv_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """Spatial output size of a convolution (``"same"`` and ``(lo, hi)`` pairs accepted).

    ``O = floor((S + p_lo + p_hi - dil·(k-1) - 1)/s) + 1`` per dim.

    >>> conv_output_size((56, 56), 3, stride=2, padding="same")
    (28, 28)
    """
    fn = "conv_output_size"
    d, in_size, kernel, stride, dilation = _args.size_args(input_size, kernel_size, stride, dilation, fn)
    pads = _args.padding_pairs(padding, d, fn, in_size=in_size, kernel=kernel, stride=stride,
                               dilation=dilation)
    return _args.conv_out_size(in_size, pads, kernel, stride, dilation, fn)
