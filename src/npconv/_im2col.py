"""N-d unfold (im2col) and fold (col2im) on strided views.

Layout. For a padded input ``xp (N, C, *P)``, kernel ``k``, stride ``s``,
dilation ``dil`` and output size ``O``, the *window view* is::

    windows[n, c, m_1..m_d, i_1..i_d] = xp[n, c, i_1*s_1 + m_1*dil_1, ..., i_d*s_d + m_d*dil_d]

of shape ``(N, C, *k, *O)``. It is a zero-copy ``as_strided`` view (the
JAX ``lax_reference`` idea). Reshaped to ``(N, C*prod(k), L)`` with
``L = prod(O)`` it is exactly PyTorch's ``F.unfold`` layout and the matrix
``X̃`` of the seed equation ``Y = W̃ X̃``.

``fold`` is its adjoint (col2im): every column entry is added back onto the
input position it was read from. It runs as one strided ``+=`` per kernel
offset (``prod(k)`` whole-array adds), never a loop over pixels.
"""
from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _args
from ._config import parallel_for
from ._padding import pad, pad_adjoint


def window_view(xp: np.ndarray, kernel, stride, dilation, out_size) -> np.ndarray:
    """Read-only view ``(N, C, *k, *O)`` of the windows of ``xp (N, C, *P)``.

    ``out_size`` may be smaller than what fits (trailing windows are dropped).
    """
    d = len(kernel)
    spatial_strides = xp.strides[2:]
    strides = (xp.strides[:2]
               + tuple(st * dil for st, dil in zip(spatial_strides, dilation))
               + tuple(st * s for st, s in zip(spatial_strides, stride)))
    shape = xp.shape[:2] + tuple(kernel) + tuple(out_size)
    assert len(shape) == 2 + 2 * d
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


def kernel_windows(kernel, stride, dilation, out_size) -> list:
    """``(m, window)`` for every kernel offset ``m`` (row-major): ``window`` is the
    tuple of spatial slices ``o·s + m·dil`` for ``o < O``, the input positions
    that offset reads (the strided-slice form of ``window_view``'s axis ``m``)."""
    return [(offset, tuple(slice(m * dil, m * dil + (o - 1) * s + 1, s)
                           for m, dil, o, s in zip(offset, dilation, out_size, stride)))
            for offset in itertools.product(*(range(k) for k in kernel))]


def gemm_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` for a GEMM operand or result, as a view whose rows (the last
    axis) are not a multiple of 4 KiB apart: such rows share one L1 set (4K aliasing), and
    OpenBLAS packs and stores them up to 30% slower (conv1d 64@4096, per sample: W̃X̃ 330 vs
    240 µs, W̃ᵀδ 290 vs 235 µs with rows 16 elements longer). Other lengths are unpadded."""
    length = shape[-1]
    itemsize = np.dtype(dtype).itemsize
    if length == 0 or (length * itemsize) % 4096:
        return np.empty(shape, dtype=dtype)
    return np.empty(tuple(shape[:-1]) + (length + 64 // itemsize,), dtype=dtype)[..., :length]


def store(dst: np.ndarray, src: np.ndarray, bias=None) -> np.ndarray:
    """``dst[...] = src``, plus ``bias (C,)`` along axis 1 when given: the bias of
    ``Y = W̃ X̃ + b`` added while the output is written anyway (one pass, not two)."""
    if bias is None:
        np.copyto(dst, src)
    else:
        np.add(src, bias.reshape((-1,) + (1,) * (dst.ndim - 2)), out=dst)
    return dst


class ProductSum:
    """``out[i] = Σ_tiles A_t B_t`` (matmul) for each part ``i``, in tile order, as the weight
    gradients accumulate it.

    A part's first product is written straight into ``out[i]``, the later ones go through
    one scratch buffer shared by the parts: the same bits as adding every product to zeros,
    without the zeros pass, and with no scratch buffer at all for a single tile (3x3 512@7:
    a weight-sized 9.4 MiB buffer and one pass over it).
    """

    def __init__(self, out: np.ndarray):
        self.out, self.started, self.scratch = out, [False] * len(out), None

    def add(self, part: int, a: np.ndarray, b: np.ndarray) -> None:
        if not self.started[part]:
            np.matmul(a, b, out=self.out[part])
            self.started[part] = True
        else:
            self.scratch = np.matmul(a, b, out=self.scratch)
            self.out[part] += self.scratch

    def result(self) -> np.ndarray:
        """``out``, with 0 in the parts no product reached (e.g. an empty batch)."""
        for part, started in enumerate(self.started):
            if not started:
                self.out[part] = 0
        return self.out


def copy_parallel(dst: np.ndarray, src: np.ndarray, bias=None) -> np.ndarray:
    """``store(dst, src, bias)``, split over the first axis between npconv's threads."""
    parallel_for(lambda start, stop: store(dst[start:stop], src[start:stop], bias), dst.shape[0],
                 dst.nbytes)
    return dst


def unfold_padded(xp: np.ndarray, kernel, stride, dilation, out_size) -> np.ndarray:
    """Contiguous columns ``(N, C, *k, *O)`` of the padded input ``xp (N, C, *P)``.

    One strided copy of the window view: the output positions stay innermost,
    as in the input, which makes it far cheaper than a 6-d transpose.
    """
    view = window_view(xp, kernel, stride, dilation, out_size)
    return copy_parallel(np.empty(view.shape, dtype=xp.dtype), view)


# col2im adds stay within a block of this many bytes of the output, so that the
# prod(k) strided adds of one block hit the (512 KiB) L2 cache, not memory.
FOLD_BLOCK_BYTES = 256 * 2**10


def fold_padded(cols: np.ndarray, padded_size, kernel, stride, dilation, out=None) -> np.ndarray:
    """Adjoint of ``unfold_padded``: ``cols (A, B, *k, *O)`` summed into ``(A, B, *P)``.

    ``out[a, b, i*s + m*dil] += cols[a, b, m, i]`` for every kernel offset ``m``: one
    strided slice add per offset, over cache-sized blocks of the first axis that
    npconv's threads share out (blocks write disjoint rows). Positions no window
    reads are left as they were (0 for a fresh ``out``). The first two axes are
    any two batch-like axes: (N, C) or, channel-major, (C, N).
    """
    d = len(kernel)
    if out is None:
        out = np.zeros(cols.shape[:2] + tuple(padded_size), dtype=cols.dtype)
    windows = kernel_windows(kernel, stride, dilation, cols.shape[2 + d:])
    block = max(1, FOLD_BLOCK_BYTES // max(1, out[:1].nbytes))
    both = (slice(None), slice(None))

    def add_rows(start, stop):
        for first in range(start, stop, block):
            rows = slice(first, min(first + block, stop))
            out_rows, cols_rows = out[rows], cols[rows]
            for offset, window in windows:
                out_rows[both + window] += cols_rows[both + offset]

    parallel_for(add_rows, out.shape[0], cols.nbytes)
    return out


# --------------------------------------------------------------------------
# public unfold / fold (PyTorch's F.unfold / F.fold layout, any d)
# --------------------------------------------------------------------------
def _spatial_dims_of(args, default: int) -> int:
    """d from the first per-dim (sequence) argument, else ``default``."""
    for value in args:
        if isinstance(value, (tuple, list)):
            return len(value)
    return default


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding windows (im2col), as ``torch.nn.functional.unfold`` but for any d.

    Parameters
    ----------
    x : array ``(N, C, *S)`` or unbatched ``(C, *S)``
    kernel_size, dilation, stride : int or d ints
    padding : int, d ints or d ``(lo, hi)`` pairs (zeros)

    d is the length of the first sequence argument; with ints only it is 2 for a
    3-d or 4-d ``x`` (PyTorch's convention: unbatched or batched images) and
    ``x.ndim - 2`` otherwise.

    Returns
    -------
    cols : ``(N, C·prod(k), L)`` (unbatched: ``(C·prod(k), L)``), ``L = prod(O)``;
        row ``c·prod(k) + flat kernel offset``, column the flat output position.
    """
    fn = "unfold"
    x = _args.as_float_array("x", x, fn)
    d = _spatial_dims_of((kernel_size, dilation, padding, stride), 2 if x.ndim in (3, 4) else x.ndim - 2)
    if d < 1:
        raise ValueError(f"{fn}: 'x' must have at least one spatial dim, got shape {x.shape}")
    _args.check_ndim("x", x, (d + 1, d + 2), fn, f"(N, C, *spatial) or (C, *spatial) for d={d}")
    unbatched = x.ndim == d + 1
    xb = x[None] if unbatched else x
    kernel = _args.int_tuple("kernel_size", kernel_size, d, fn)
    dilation = _args.int_tuple("dilation", dilation, d, fn)
    stride = _args.int_tuple("stride", stride, d, fn)
    pads = _args.padding_pairs(padding, d, fn, allow_same=False)
    out_size = _args.conv_out_size(xb.shape[2:], pads, kernel, stride, dilation, fn)
    cols = unfold_padded(pad(xb, pads), kernel, stride, dilation, out_size)
    cols = cols.reshape(xb.shape[0], xb.shape[1] * _args.prod(kernel), _args.prod(out_size))
    return cols[0] if unbatched else cols


def fold(cols, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding windows back into an array (col2im), as ``torch.nn.functional.fold`` for any d.

    Parameters
    ----------
    cols : array ``(N, C·prod(k), L)`` or unbatched ``(C·prod(k), L)``
    output_size : int or d ints, the spatial size S of the result
    kernel_size, dilation, stride, padding : as in ``unfold``

    d is the length of the first sequence among output_size, kernel_size, dilation,
    padding, stride (2 if all are ints, as in PyTorch).

    Returns
    -------
    x : ``(N, C, *S)`` (unbatched: ``(C, *S)``), the adjoint of ``unfold``:
        ``⟨unfold(x), cols⟩ = ⟨x, fold(cols)⟩``.
    """
    fn = "fold"
    cols = _args.as_float_array("cols", cols, fn)
    d = _spatial_dims_of((output_size, kernel_size, dilation, padding, stride), 2)
    _args.check_ndim("cols", cols, (2, 3), fn, "(N, C*prod(kernel_size), L) or (C*prod(kernel_size), L)")
    unbatched = cols.ndim == 2
    cb = cols[None] if unbatched else cols
    in_size = _args.int_tuple("output_size", output_size, d, fn)
    kernel = _args.int_tuple("kernel_size", kernel_size, d, fn)
    dilation = _args.int_tuple("dilation", dilation, d, fn)
    stride = _args.int_tuple("stride", stride, d, fn)
    pads = _args.padding_pairs(padding, d, fn, allow_same=False)
    out_size = _args.conv_out_size(in_size, pads, kernel, stride, dilation, fn)
    window = _args.prod(kernel)
    if cb.shape[1] % window:
        raise ValueError(
            f"{fn}: cols.shape[-2]={cb.shape[1]} must be divisible by prod(kernel_size)={window}"
        )
    if cb.shape[2] != _args.prod(out_size):
        raise ValueError(
            f"{fn}: cols.shape[-1] must be the number of windows L={_args.prod(out_size)} "
            f"(output_size {in_size}, kernel {kernel}, padding {pads}, stride {stride}, "
            f"dilation {dilation} give {out_size}), got {cb.shape[2]}"
        )
    channels = cb.shape[1] // window
    padded_size = tuple(s + lo + hi for s, (lo, hi) in zip(in_size, pads))
    dxp = fold_padded(cb.reshape((cb.shape[0], channels) + kernel + out_size), padded_size,
                      kernel, stride, dilation)
    x = pad_adjoint(dxp, pads, "zeros", in_size)
    return x[0] if unbatched else x
