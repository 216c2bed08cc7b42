r"""Im2col on the flattened padded input: every row of X̃ is one contiguous slice.

Flatten the padded input ``Xp`` of one sample and channel row-major over its
spatial size ``P``: position ``t`` has flat index ``q(t) = Σ_i t_i R_i`` with
``R_d = 1, R_i = R_{i+1} P_{i+1}``. With stride 1, output position ``o`` reads
``Xp[o + m·dil]`` for kernel offset ``m``, and ``q(o + m·dil) = q(o) + q(m·dil)``.
So if the output is indexed by ``q(o)`` too, the row ``(c, m)`` of the seed's
``X̃`` is a *shifted slice* of the flat input::

    X̃[(c, m), q] = Xp_flat[c, q + q(m·dil)]         for q < L_q = O_1·R_1

``Y = W̃ X̃`` is then evaluated at every ``q < L_q``, not only at the
``L = prod(O)`` positions with ``o_i < O_i`` in every inner dim: the extra
("garbage") columns are the padded width of the inner dims, ``L_q / L =
(R_1/prod(O_2..O_d))`` (1.27 for a 3x3x3 kernel with padding 1 on a 16^3
volume), and are dropped when ``Y`` is copied out. In exchange the unfold is
``prod(k)`` contiguous copies of ``L_q`` elements per channel instead of one
strided window copy whose inner runs are ``O_d`` long (16 elements for that
volume), and the col2im of the input gradient is ``prod(k)`` contiguous adds.

Stride ``s``: split ``Xp`` into phase images ``Xph[r][t] = Xp[r + s·t]``
(``T_i = ceil(P_i/s_i)`` positions each). Offset ``m·dil = r + s·u`` reads
``Xp[o·s + m·dil] = Xph[r][o + u]``: the same shifted slices, of phase ``r``'s
flat image, with ``R`` taken over ``T``. Offsets of one dim with the same phase
form an arithmetic progression (``m ≡ m_0 mod s/gcd(s, dil)``, ``u`` growing
by ``dil/gcd(s, dil)``), so the unfold is one strided copy per phase
combination, not per offset.

Wrapped inner dims (zero padding, stride 1 in every inner dim; the GEMM kernels'
``layout(..., wrap=True)``): an inner dim keeps no padding of its own, only
``T_i = max(O_i, S_i)`` positions, so a "same" convolution has ``L_q = L`` and its
output, δ and X̃ rows are whole images, not runs of ``O_d``. The data grid starts
``lead = Σ p_lo,i R_i`` into the flat image and ``q(o + m·dil)`` still reads data index
``o + m·dil - p_lo``; a read before or after a row lands in the neighbouring row,
which is zero there (padding) unless it reaches that row's data. The reads that do
(the first or last ``p_lo`` outputs of a row for the outermost offsets, see
``_wrapped_dim``) are zeroed in X̃ after the copy and in dX̃ before the fold: a
strided fill of one column in ``T_i`` per such offset.

The phase images get one spare row in the first dim: the garbage columns of
the last output row read up to ``R_1 - 1`` elements past the last real row.

Backward, with ``δ_ext`` the output gradient scattered onto the ``L_q``
columns and zero on the garbage ones (so they add nothing)::

    dW̃ = δ_ext X̃ᵀ          dX̃ = W̃ᵀ δ_ext, added back slice by slice (col2im)

Tiles, row runs under the workspace limit and the summation order follow the
im2col kernel (``npconv.convolution``), with tiles of ``_tile_samples`` samples
per GEMM (fixed by the shapes and dtype).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import numpy as np

from . import _args
from ._config import get_num_threads, parallel_for, work_chunks
from ._im2col import ProductSum, gemm_empty, store
from ._padding import pad, pad_adjoint

# Samples per GEMM tile: at least B = ceil(TILE_COLUMNS / L_q), one sample unless the
# image is small. Smaller tiles than im2col's keep X̃ nearer the cache (N=8, float32,
# 3x3 s2 64->128@56, 512 against 2048 columns: forward 4.6 vs 5.3 ms, dW 4.9 vs 5.9,
# dx 6.1 vs 6.8; 1x1 s2 forward 5.8 vs 6.2; neutral on the stem, conv3d, 512@7, 256@14).
TILE_COLUMNS = 512
# ... and more samples while a tile's unfold stays under TILE_BYTES: few channels make small
# per-sample GEMMs (ResNet-20's 16@32, N=32: 5 samples per tile instead of the first-dim
# split's one, forward 2.6 -> 1.7-2.1 ms, dW 2.0 -> 1.6-1.8; dx of 32@16 2.0-2.5 -> 1.6-2.0,
# 16->32 s2 1.6-2.1 -> 1.2-1.6). 4 MiB lost on 3x3 s2 64->128@56 (two samples: forward
# 4.5 -> 4.8 ms), whose one sample is 1.9 MiB. The output counts too: with the unfold alone
# the 1x1 s2 256->512@56 layer took 3 samples per tile, its 512-row output left the cache
# (forward+backward 17.8 -> 20.6 ms).
TILE_BYTES = 3 * 2**20


def _tile_samples(lay: "Layout", column_bytes: int) -> int:
    """Samples per GEMM tile: at least TILE_COLUMNS columns, and more while the tile's unfold
    and output (``column_bytes`` per column, ``_column_bytes``) stay under TILE_BYTES."""
    per_sample = lay.columns(lay.out_size[0])
    return max(1, -(-TILE_COLUMNS // per_sample), TILE_BYTES // max(1, column_bytes * per_sample))


def _column_bytes(c_in: int, c_out: int, kernel, itemsize: int) -> int:
    """Bytes of one GEMM column of a tile: its X̃ column (``C_in·prod(k)``) and its Y column."""
    return _args.unfolded_bytes(c_in, kernel, itemsize) + c_out * itemsize


class _Taps(NamedTuple):
    """Kernel offsets ``m = m0 + j·m_step`` (``j < count``) of one dim, all reading phase
    ``phases[phase]`` at shifts ``u = u0 + j·u_step``."""
    m0: int
    count: int
    m_step: int
    phase: int
    u0: int
    u_step: int

    @property
    def last_shift(self) -> int:
        """``u`` of the last offset minus ``u`` of the first: ``(count - 1)·u_step``."""
        return (self.count - 1) * self.u_step


class Layout(NamedTuple):
    """Shapes of the flat phase images of one geometry (see the module docstring)."""
    phases: tuple     # per dim: the residues r that some offset reads
    taps: tuple       # per dim: the _Taps groups, one per phase
    size: tuple       # T: positions per phase image (first dim with its spare row)
    row: tuple        # R: flat stride of each dim
    out_size: tuple   # O
    lead: int = 0     # flat offset of the data grid: Σ p_lo·R over wrapped inner dims, else 0
    wrap: tuple = ()  # wrapped inner dims (non-empty iff wrapped): per dim, (m, a, b) for each
                      # offset m that reads across a row edge at o < a and b <= o < O (``_wrapped_dim``)

    @property
    def flat_size(self) -> int:
        return self.size[0] * self.row[0] + self.lead

    @property
    def dense(self) -> bool:
        """Whether every column is a real output (no garbage columns): ``L_q = rows·prod(O')``."""
        return self.size[1:] == self.out_size[1:]

    def columns(self, rows: int) -> int:
        """``L_q`` for ``rows`` output rows of the first dim."""
        return rows * self.row[0]


def _dim_taps(kernel: int, stride: int, dilation: int) -> list:
    step = stride // math.gcd(stride, dilation)
    taps = []
    for m0 in range(min(step, kernel)):
        u0, r = divmod(m0 * dilation, stride)
        taps.append((r, m0, len(range(m0, kernel, step)), step, u0, dilation // math.gcd(stride, dilation)))
    return taps


def _shared_row(taps, stride: int, pads, in_size: int, out_size: int) -> int:
    """Positions per row of an inner dim's phase images when consecutive rows share their
    zero borders (zero padding only). Phase ``r`` holds data at ``t0 <= t < t1``; output
    ``o < O`` reads ``o + u``, and a read at or past the row length ``T`` lands on the next
    row at ``o + u - T``, which is one of its leading zeros while ``T >= O + u_max - t0``
    (the value there is padding, i.e. zero, too: ``o + u >= T >= t1``). So
    ``T = max(O, t1, O + u_max - t0)`` over the phases, against ``ceil(P/s)``: 17 against
    18 for a 3-tap kernel with padding 1 on 16, 8 against 9 on 7."""
    lo = pads[0]
    row = out_size
    for r, u_max in taps:
        t0 = max(0, -(-(lo - r) // stride))
        t1 = -(-(in_size + lo - r) // stride)
        row = max(row, t1, out_size + u_max - t0) if t1 > t0 else row
    return row


def _wrapped_dim(geom: _args.Geometry, i: int) -> tuple:
    """``(T, wrap)`` of inner dim ``i`` laid out without its padding (zero padding, stride 1):
    ``T = max(O, S)`` positions, the data at ``[0, S)`` of the grid that starts ``p_lo`` flat
    rows of dim i in (``Layout.lead``), so the data of one row of dim i runs into the next
    row's first ``p_lo``. Output ``o`` and offset ``m`` read data index ``t = o + u``,
    ``u = m·dil - p_lo``, at the right flat place while ``0 <= t < T``; ``S <= t < T`` holds
    no data (zero, as the padding there). Past either end the read lands in a neighbouring
    row: on its data for ``t >= T`` or ``t < S - T``, on its zeros otherwise. Those columns are
    zeroed in X̃ and dX̃ (``_mask_wraps``); ``wrap`` lists them per offset for the real
    outputs ``o < O``: zero ``o < a`` and ``b <= o < O``, as ``(m, a, b)``."""
    k, dil, (lo, _) = geom.kernel[i], geom.dilation[i], geom.pads[i]
    size, out = geom.in_size[i], geom.out_size[i]
    row = max(out, size)
    wrap = []
    for m in range(k):
        u = m * dil - lo
        a, b = min(out, max(0, size - row - u)), max(0, min(out, row - u))
        if a > 0 or b < out:
            wrap.append((m, a, b))
    return row, tuple(wrap)


@functools.lru_cache(maxsize=256)
def layout(geom: _args.Geometry, mode: str, wrap: bool = False) -> Layout:
    """The phase-image layout of ``geom`` with padding ``mode``: rows of the inner dims share
    their zero borders when ``mode == "zeros"`` (``_shared_row``). With ``wrap`` (the GEMM
    kernels), zero padding and stride 1 in every inner dim, the inner dims drop their padding
    instead (``_wrapped_dim``): ``max(O, S)`` positions each, so a "same" convolution has no
    garbage columns at all and its output is one contiguous run per channel (conv3d
    16->32@16: 4096 elements, against runs of 16 in rows of 17)."""
    phases, taps = [], []
    for k, s, dil in zip(geom.kernel, geom.stride, geom.dilation):
        dim = _dim_taps(k, s, dil)
        residues = sorted({r for r, *_ in dim})
        phases.append(tuple(residues))
        taps.append(tuple(_Taps(m0, count, m_step, residues.index(r), u0, u_step)
                          for r, m0, count, m_step, u0, u_step in dim))
    size = [-(-p // s) for p, s in zip(geom.padded_size, geom.stride)]
    u_max = [max(t.u0 + t.last_shift for t in dim) for dim in taps]
    wrapped = wrap and mode == "zeros" and all(s == 1 for s in geom.stride[1:])
    wraps = [()] * geom.d
    if mode == "zeros":
        for i in range(1, geom.d):
            if wrapped:
                size[i], wraps[i] = _wrapped_dim(geom, i)
            else:
                size[i] = _shared_row([(phases[i][t.phase], t.u0 + t.last_shift) for t in taps[i]],
                                      geom.stride[i], geom.pads[i], geom.in_size[i], geom.out_size[i])
    row = [1] * geom.d
    for i in range(geom.d - 2, -1, -1):
        row[i] = row[i + 1] * size[i + 1]
    lead = sum(lo * r for (lo, _), r in zip(geom.pads[1:], row[1:])) if wrapped else 0
    # first dim: enough rows for the last column's farthest read (the garbage columns of the
    # last output row read up to one row past O_1 + u_max)
    shift = sum(u * r for u, r in zip(u_max, row))
    size[0] = max(size[0], geom.out_size[0] + -(-shift // row[0]))
    return Layout(tuple(phases), tuple(taps), tuple(size), tuple(row), tuple(geom.out_size), lead,
                  tuple(wraps) if wrapped else ())


def overcompute(geom: _args.Geometry, mode: str = "zeros") -> float:
    """``L_q / L``: columns computed per output position."""
    lay = layout(geom, mode, wrap=True)
    return lay.columns(geom.out_size[0]) / max(1, _args.prod(geom.out_size))


def _chunks(batch: int, lay: Layout, bytes_per_column: int, column_bytes: int):
    """(samples, output rows of the first dim) pieces (``_config.work_chunks``): tiles of
    ``_tile_samples`` samples, a row being ``R_1`` columns."""
    tile = _tile_samples(lay, column_bytes)
    return work_chunks(batch, lay.out_size[0], tile, bytes_per_column * lay.row[0])


@functools.lru_cache(maxsize=256)
def _zero_padded_phases(geom: _args.Geometry, lay: Layout) -> tuple:
    """For zero padding: ``(phase index, phase-image slices, input slices)`` of every used
    phase that holds input elements. Phase ``r`` position ``t`` is padded index ``r + s·t``,
    input index ``r + s·t - lo``; each input element is in exactly one phase."""
    pieces = []
    for index, residues in enumerate(itertools.product(*lay.phases)):
        dst, src = [], []
        for r, s, (lo, _), size in zip(residues, geom.stride, geom.pads, geom.in_size):
            t0 = max(0, -(-(lo - r) // s))               # first t whose input index is >= 0
            first = r + s * t0 - lo
            count = len(range(first, size, s))
            dst.append(slice(t0, t0 + count))
            src.append(slice(first, first + s * (count - 1) + 1 if count else first, s))
        if lay.wrap:          # wrapped inner dims: their grid starts at the data (``_grid``)
            dst[1:] = [slice(0, d.stop - d.start) for d in dst[1:]]
        if all(d.stop > d.start for d in dst):
            pieces.append((index, tuple(dst), tuple(src)))
    return tuple(pieces)


def _grid(images: np.ndarray, lay: Layout) -> np.ndarray:
    """``(n, C, phases, flat) -> (n, C, phases, *T)`` view, starting ``lay.lead`` in."""
    body = images[..., lay.lead:lay.lead + lay.size[0] * lay.row[0]]
    return body.reshape(images.shape[:3] + lay.size)


def phase_images(x: np.ndarray, geom: _args.Geometry, lay: Layout, mode: str) -> np.ndarray:
    """``x (n, C, *S) -> (n, C, phases, flat_size)``: the padded input split by phase and flattened."""
    n, c = x.shape[:2]
    count = _args.prod(len(p) for p in lay.phases)
    images = np.zeros((n, c, count, lay.flat_size), dtype=x.dtype)
    grid = _grid(images, lay)
    if mode == "zeros":  # pad while copying: one strided copy per phase, straight from x
        for index, dst, src in _zero_padded_phases(geom, lay):
            grid[(slice(None), slice(None), index) + dst] = x[(slice(None), slice(None)) + src]
    else:
        xp = pad(x, geom.pads, mode)
        for index, residues in enumerate(itertools.product(*lay.phases)):
            phase = xp[(Ellipsis,) + tuple(slice(r, None, s) for r, s in zip(residues, geom.stride))]
            grid[(slice(None), slice(None), index) + tuple(slice(0, t) for t in phase.shape[2:])] = phase
    return images


def _phase_index(lay: Layout, taps) -> int:
    index = 0
    for phases, tap in zip(lay.phases, taps):
        index = index * len(phases) + tap.phase
    return index


def tap_starts(lay: Layout, kernel, first_row: int = 0) -> list:
    """``(m, phase, start)`` for every kernel offset ``m`` (row-major flat index): output
    column ``q`` (from output row ``first_row``) reads ``images[..., phase, start + q]``."""
    shift = first_row * lay.row[0]
    return [(m, phase, start + shift) for m, phase, start in _tap_starts(lay, tuple(kernel))]


@functools.lru_cache(maxsize=256)
def _tap_starts(lay: Layout, kernel: tuple) -> tuple:
    # cached: called per tile, and 27 offsets cost ~50 µs of Python (conv3d conv_grad: 0.4 ms)
    starts = []
    for taps in itertools.product(*lay.taps):
        phase = _phase_index(lay, taps)
        for js in itertools.product(*(range(t.count) for t in taps)):
            offset = tuple(t.m0 + j * t.m_step for t, j in zip(taps, js))
            start = sum((t.u0 + j * t.u_step) * r for t, j, r in zip(taps, js, lay.row))
            starts.append((int(np.ravel_multi_index(offset, kernel)), phase, start))
    return tuple(sorted(starts))


def tap_windows(images: np.ndarray, lay: Layout, taps, start: int, columns: int) -> np.ndarray:
    """Read-only view ``(n, C, *counts, L_q)`` of the windows of one phase group per dim
    (``taps``, a ``_Taps`` per dim): ``[n, c, j_1.., q] = images[n, c, phase, start +
    Σ_i j_i·u_step_i·R_i + q]``, ``start`` the flat position of the group's first offset."""
    item = images.itemsize
    shape = images.shape[:2] + tuple(t.count for t in taps) + (columns,)
    strides = images.strides[:2] + tuple(t.u_step * r * item for t, r in zip(taps, lay.row)) + (item,)
    offset = _phase_index(lay, taps) * images.strides[2] + start * item
    # a view on the images' buffer (``phase_images`` allocates them contiguous), as
    # ``as_strided`` would build it, in 0.5 instead of 3 µs (a call per phase group and
    # tile: 32 per forward of 3x3 s2 64->128@56)
    view = np.ndarray(shape, images.dtype, images, offset, strides)
    view.flags.writeable = False
    return view


def unfold(images: np.ndarray, geom: _args.Geometry, lay: Layout, rows: slice) -> np.ndarray:
    """X̃ of output rows ``rows``: images ``(n, C, phases, flat)`` -> ``(C, *k, n, L_q)``.

    One strided copy per phase combination, every inner run a contiguous slice of ``L_q``.
    """
    n, c = images.shape[:2]
    columns = lay.columns(rows.stop - rows.start)
    cols = gemm_empty((c,) + tuple(geom.kernel) + (n * columns,), images.dtype)
    cols = cols.reshape(cols.shape[:-1] + (n, columns))
    sources = []
    for taps in itertools.product(*lay.taps):
        start = rows.start * lay.row[0] + sum(t.u0 * r for t, r in zip(taps, lay.row))
        windows = tap_windows(images, lay, taps, start, columns)                   # (n, C, *counts, L_q)
        src = windows.transpose(tuple(range(1, windows.ndim - 1)) + (0, windows.ndim - 1))  # (C, *counts, n, L_q)
        dst_index = tuple(slice(t.m0, None, t.m_step) for t in taps)
        sources.append((dst_index, src))

    def copy_channels(c0, c1):
        for dst_index, src in sources:
            np.copyto(cols[(slice(c0, c1),) + dst_index], src[c0:c1])
        _mask_wraps(cols[c0:c1], lay)

    parallel_for(copy_channels, c, cols.nbytes)
    return cols


def _columns(images: np.ndarray, geom: _args.Geometry, lay: Layout, rows: slice) -> np.ndarray:
    """``unfold``, or where the kernel has one tap and the tile one sample, the slice of the
    images that is its X̃, ``(C, L_q)``, without a copy (a 1x1 stride-2 kernel: 1x1 s2
    256->512@56, N=8: forward 5.86 -> 5.69 ms, conv_grad 12.0 -> 11.7; the first-dim
    split's X̃_0 of a 1-d or k x 1 kernel: 3x1 64@56 forward 2.9 -> 2.6)."""
    if images.shape[0] == 1 and _args.prod(geom.kernel) == 1 and not any(lay.wrap):
        ((_, phase, start),) = tap_starts(lay, geom.kernel, rows.start)
        return images[0, :, phase, start:start + lay.columns(rows.stop - rows.start)]
    return unfold(images, geom, lay, rows)


def _mask_wraps(cols: np.ndarray, lay: Layout) -> None:
    """Zero the columns of X̃ (or dX̃) ``(C, *k, n, L_q)`` whose last-dim offset reads across
    a row edge of a wrapped inner dim (``_wrapped_dim``): one strided fill per output position
    (an integer index, so that the fill's inner loop runs along a real axis; a length-1 slice
    measured 1-2% slower on conv3d)."""
    if not lay.wrap:
        return
    by_pos = cols.reshape(cols.shape[:-1] + (cols.shape[-1] // lay.row[0],) + lay.size[1:])  # (C, *k, n, rows, *T')
    for index in _wrap_indices(lay, by_pos.ndim):
        by_pos[index] = 0


@functools.lru_cache(maxsize=256)
def _wrap_indices(lay: Layout, ndim: int) -> tuple:
    """The index of each strided fill of ``_mask_wraps`` into ``(C, *k, n, rows, *T')`` (cached:
    built per tile, they cost as much Python as the fills' own calls)."""
    d = len(lay.size)
    indices = []
    for i in range(1, d):
        for m, a, b in lay.wrap[i]:
            for o in itertools.chain(range(a), range(b, lay.out_size[i])):
                index = [slice(None)] * ndim
                index[1 + i] = m                             # the offset's rows of X̃
                index[d + 2 + i] = o                         # its output position in dim i
                indices.append(tuple(index))
    return tuple(indices)


@functools.lru_cache(maxsize=256)
def _phase_aligned_taps(lay: Layout, kernel: tuple):
    """The fold's adds with the phase groups side by side, or None where they do not line up.

    With dilation 1 (and any stride), offset ``m = r + s·j`` of a dim reads phase ``r`` at
    shift ``j`` (``u0 = 0``), for every ``r < R(j)``, the phases that have a j-th offset. So
    the offsets with the same ``j = (j_1..j_d)`` in every dim read the same shift of
    consecutive phase images from consecutive rows of X̃: one strided add for them all.
    Per ``j``: ``(kernel slices m ∈ [s·j, s·j + R(j)), phase slices [0, R(j)), flat shift)``."""
    per_dim = []
    for taps, row in zip(lay.taps, lay.row):
        if (len({(t.m_step, t.u_step) for t in taps}) != 1 or [t.m0 for t in taps] != list(range(len(taps)))
                or any(t.phase != t.m0 or t.u0 != 0 for t in taps)):
            return None
        m_step, shift = taps[0].m_step, taps[0].u_step * row
        phases = [sum(t.count > j for t in taps) for j in range(taps[0].count)]   # R(j), a prefix
        per_dim.append([(slice(j * m_step, j * m_step + r), slice(0, r), j * shift)
                        for j, r in enumerate(phases)])
    plan = []
    for combo in itertools.product(*per_dim):
        plan.append((tuple(m for m, _, _ in combo), tuple(p for _, p, _ in combo),
                     sum(shift for _, _, shift in combo)))
    return tuple(plan)


def fold(cols: np.ndarray, geom: _args.Geometry, lay: Layout, rows: slice, images: np.ndarray) -> None:
    """Adjoint of ``unfold``: ``images[n, c, phase, q + shift_m] += cols[c, m, n, q]``, one
    contiguous add per kernel offset (offsets overlap, so they cannot share one strided add),
    or per offset index ``j`` of every phase at once where the phases line up
    (``_phase_aligned_taps``: the 11x11 s4 AlexNet layer 9 adds instead of 121, the 7x7 s2
    stem 16 instead of 49; the same additions in the same order, so the same bits)."""
    n, c = images.shape[:2]
    columns = cols.shape[-1]
    d = len(geom.kernel)
    plan = _phase_aligned_taps(lay, tuple(geom.kernel))
    if plan is not None and len(plan) < _args.prod(geom.kernel):
        cols_k = cols.reshape((c,) + tuple(geom.kernel) + (n, columns))    # (C, *k, n, L_q)
        by_phase = images.reshape((n, c) + tuple(len(p) for p in lay.phases) + images.shape[-1:])
        first = rows.start * lay.row[0]
        order = (1,) + tuple(range(2, 2 + d)) + (0, 2 + d)                  # -> (C, *R, n, L_q)
        adds = [(by_phase[(slice(None), slice(None)) + phases
                          + (slice(first + shift, first + shift + columns),)].transpose(order),
                 cols_k[(slice(None),) + offsets])
                for offsets, phases, shift in plan]
    else:
        cols_m = cols.reshape(c, -1, n, columns)                          # (C, prod(k), n, L_q)
        adds = [(images[:, :, phase, start:start + columns].swapaxes(0, 1), cols_m[:, m])  # (C, n, L_q)
                for m, phase, start in tap_starts(lay, geom.kernel, rows.start)]

    def add_channels(c0, c1):
        _mask_wraps(cols[c0:c1].reshape((c1 - c0,) + tuple(geom.kernel) + (n, columns)), lay)
        for dst, src in adds:
            dst_c = dst[c0:c1]
            np.add(dst_c, src[c0:c1], out=dst_c)

    if c < 2 * get_num_threads():
        # under two channels per thread the split is lopsided (1 against 2 of 3 channels)
        # and its hand-offs cost more than they save (AlexNet's 11x11 s4, 3 channels, N=8:
        # dx 10.0 -> 8.9 ms; the 7x7 s2 stem unchanged)
        add_channels(0, c)
    else:
        parallel_for(add_channels, c, cols.nbytes)


def valid(ext: np.ndarray, lay: Layout, rows: int) -> np.ndarray:
    """View of the real outputs: ``(A, B, L_q) -> (A, B, rows, *O_2..O_d)`` (A, B: (C, n) or (n, C))."""
    shaped = ext.reshape(ext.shape[:2] + (rows,) + lay.size[1:])
    return shaped[(Ellipsis,) + tuple(slice(0, o) for o in lay.out_size[1:])]


def extend(dy_rows: np.ndarray, lay: Layout) -> np.ndarray:
    """δ on the ``L_q`` columns, zero on the garbage ones: ``(n, C, rows, *O') -> (n, C, L_q)``."""
    n, c, rows = dy_rows.shape[:3]
    ext = np.zeros((n, c, lay.columns(rows)), dtype=dy_rows.dtype)
    valid(ext, lay, rows)[...] = dy_rows
    return ext


def _extended(dy_rows: np.ndarray, lay: Layout) -> np.ndarray:
    """δ on the ``L_q`` columns, zero on the garbage ones: ``(n, C, rows, *O') -> (C, n·L_q)``."""
    n, c, rows = dy_rows.shape[:3]
    if n == 1 and lay.dense:                   # no garbage columns: δ_ext is δ itself
        return dy_rows[0].reshape(c, -1)
    ext = np.zeros((c, n, lay.columns(rows)), dtype=dy_rows.dtype)
    valid(ext, lay, rows)[...] = dy_rows.swapaxes(0, 1)
    return ext.reshape(c, -1)


# --------------------------------------------------------------------------
# split by first-dim kernel offset
# --------------------------------------------------------------------------
# The rows of X̃ for first-dim offset a = m0 + j·m_step of one phase group (``_Taps``)
# are those of its first offset m0 shifted by j·u_step·R_1 columns. So X̃ need only hold,
# per phase group of the first dim, the rows of one offset (``X̃_0``: the inner
# offsets, k_1/groups times fewer rows in all) over L_q + (its last shift)·R_1 columns,
# and each offset reads a column window of it, which BLAS takes as it is (leading
# dimension = its row length):
#     Y = Σ_a W̃_a X̃_0[:, u_a·R_1 :][:, :L_q],    dW̃_aᵀ = X̃_0[...] δ_extᵀ
# k_1 GEMMs with K/k_1 rows against writing (and reading) a k_1/groups times larger
# unfold: 64@56 forward 6.1 vs 7.3 ms, conv3d 16->32@16 5.5 vs 8.1 ms (N=8, float32).
def _row_split(geom: _args.Geometry, lay: Layout, column_bytes: int, any_stride: bool = False):
    """The geometry of ``X̃_0`` (first kernel dim 1), or None where the split does not apply
    or did not pay: a first kernel dim of 1, tiles of several samples (small images or few
    channels, ``_tile_samples``), or,
    unless ``any_stride`` (the input gradient), a first-dim stride > 1 (its phase groups save
    only k_1/s_1 of the unfold, and the thin GEMMs lost: 3x3 s2 64->128@56 forward 4.9 vs
    4.7 ms, the 7x7 s2 stem 13.6 vs 11.6; with the offsets of a phase group stacked into
    one GEMM still 4.6 vs 4.2 and 17.6 vs 9.3)."""
    if (geom.kernel[0] == 1 or (geom.stride[0] != 1 and not any_stride)
            or _tile_samples(lay, column_bytes) > 1):
        return None
    return geom._replace(kernel=(1,) + tuple(geom.kernel[1:]))


def splits_first_dim(geom: _args.Geometry, c_in: int, c_out: int, itemsize: int = 4) -> bool:
    """Whether the forward and dW run split by first-dim kernel offset (``_row_split``)."""
    column_bytes = _column_bytes(c_in, c_out, geom.kernel, itemsize)
    return _row_split(geom, layout(geom, "zeros", wrap=True), column_bytes) is not None


def _first_dim_offset(lay: Layout, group: _Taps, j: int = 0) -> Layout:
    """``lay`` with the first dim reduced to offset ``j`` of the phase ``group``: the layout
    of ``X̃_0`` (``j = 0``) or of one offset's rows of the split."""
    return lay._replace(taps=((_Taps(0, 1, 1, group.phase, group.u0 + j * group.u_step, 1),),) + lay.taps[1:])


def _reach(rows: slice, group: _Taps) -> slice:
    """The rows of a phase group's first offset that its offsets read for output ``rows``."""
    return slice(rows.start, rows.stop + group.last_shift)


def _data_rows(geom: _args.Geometry, group: _Taps, reach: slice, mode: str) -> slice:
    """The rows of ``reach`` (of a phase group's first offset, as ``_reach``) that the fold
    adds onto input rows, for zero padding and a first-dim stride of 1; the others land on
    the padding, which the gradient drops (conv3d 16->32@16: 16 of 18 planes, dx 4.1 -> 3.8
    ms). Column row ``r`` reaches image row ``r + u0``; its inner offsets stay in that row
    (a read past a row's end lands on zeros in the forward: wrapped columns are masked,
    shared borders are padding), so nothing else is lost."""
    if mode != "zeros" or geom.stride[0] != 1:
        return reach
    lo = geom.pads[0][0] - group.u0
    start = max(reach.start, lo)
    return slice(start, max(start, min(reach.stop, lo + geom.in_size[0])))


def _inner_cols(images, geom: _args.Geometry, inner_geom, lay: Layout, rows: slice, mode: str) -> list:
    """``(group, reach, X̃_0)`` for every phase group (``_Taps``) of the first dim: ``X̃_0 (G,
    K_g/k_1, (reach rows)·R_1)``, the rows of the group's first offset over the columns of the
    rows ``reach`` of it that its offsets read, less those on zero padding (``_data_rows``:
    they hold zeros and add nothing), or None where that leaves no rows."""
    parts = []
    for group in lay.taps[0]:
        reach, inner = _data_rows(geom, group, _reach(rows, group), mode), _first_dim_offset(lay, group)
        if reach.stop <= reach.start:                   # every read is padding
            parts.append((group, reach, None))
            continue
        x0 = _columns(images, inner_geom, inner, reach)   # a slice for a 1-d or k x 1 x 1 kernel
        parts.append((group, reach, x0.reshape(geom.groups, -1, x0.shape[-1])))
    return parts


def _offset_windows(rows: slice, reach: slice, group: _Taps, row_len: int) -> tuple:
    """``(j, src, dst, whole)`` for each first-dim offset ``j`` of ``group`` that reads a row of
    ``reach`` (the rows of its ``X̃_0``; output row ``r`` reads row ``r + j·u_step``): the
    columns ``src`` of ``X̃_0`` (or of ``Z_a``) it reads for the output columns ``dst`` of
    ``rows``, and whether those are all of them. Widest first."""
    # cached by value (slices do not hash before Python 3.12): the same for every tile
    return _windows(rows.start, rows.stop, reach.start, reach.stop, group, row_len)


@functools.lru_cache(maxsize=256)
def _windows(rows_start: int, rows_stop: int, reach_start: int, reach_stop: int, group: _Taps,
             row_len: int) -> tuple:
    rows, reach = slice(rows_start, rows_stop), slice(reach_start, reach_stop)
    windows = []
    for j in range(group.count):
        shift = j * group.u_step
        start = max(rows.start, reach.start - shift)
        stop = min(rows.stop, reach.stop - shift)
        if stop > start:
            first = start + shift - reach.start
            windows.append((j, slice(first * row_len, (first + stop - start) * row_len),
                            slice((start - rows.start) * row_len, (stop - rows.start) * row_len),
                            (start, stop) == (rows.start, rows.stop)))
    return tuple(sorted(windows, key=lambda w: w[2].start - w[2].stop))


def _stacked_weight(weight: np.ndarray, groups: int, group: _Taps) -> np.ndarray:
    """``W̃_a (G, C_og, K/k_1)`` of the first-dim offsets ``a`` of one phase group, stacked
    along the rows: ``(G, count·C_og, K/k_1)``."""
    c_og = weight.shape[0] // groups
    per_group = weight.reshape((groups, c_og) + weight.shape[1:])[:, :, :, group.m0::group.m_step]
    return np.moveaxis(per_group, 3, 1).reshape(groups, group.count * c_og, -1)


def shifted_forward(x: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str,
                    bias=None) -> np.ndarray:
    """``Y = W̃ X̃ + b``: x ``(N, C_in, *S)``, weight ``(C_out, C_ig, *k)``, bias ``(C_out,)`` or
    None -> ``(N, C_out, *O)``."""
    batch, c_in = x.shape[:2]
    c_out, groups = weight.shape[0], geom.groups
    lay = layout(geom, mode, wrap=True)
    bytes_per_column = _args.unfolded_bytes(c_in, geom.kernel, x.itemsize)
    column_bytes = _column_bytes(c_in, c_out, geom.kernel, x.itemsize)
    inner_geom = _row_split(geom, lay, column_bytes)
    w_mat = weight.reshape(groups, c_out // groups, -1)                   # W̃_g (G, C_og, K)
    # per phase group of the first dim, its offsets' W̃_a (G, C_og, K/k_1) stacked:
    # (G, count·C_og, K/k_1)
    w_stacks = ([_stacked_weight(weight, groups, group) for group in lay.taps[0]]
                if inner_geom else None)
    y = np.empty((batch, c_out) + geom.out_size, dtype=x.dtype)
    images, tile = None, None
    for samples, rows in _chunks(batch, lay, bytes_per_column, column_bytes):
        if tile != samples:
            images, tile = phase_images(x[samples], geom, lay, mode), samples
        n = samples.stop - samples.start
        if inner_geom:                                                    # one sample per tile
            # Z = [W̃_a; ...] X̃_0 per phase group, then Y = Σ_a Z_a shifted left by u_a·R_1 columns,
            # each Z_a over the output rows whose reads are not all zero padding
            columns, y_ext = lay.columns(rows.stop - rows.start), None
            for (group, reach, x0), w_stack in zip(_inner_cols(images, geom, inner_geom, lay, rows, mode),
                                                   w_stacks):
                if reach.stop <= reach.start:
                    continue
                z = np.matmul(w_stack, x0, out=gemm_empty(w_stack.shape[:2] + x0.shape[-1:], x.dtype))
                z = z.reshape(groups, group.count, c_out // groups, -1)
                # the widest first: where it spans every row, Y is written into its Z_a
                for j, src, dst, whole in _offset_windows(rows, reach, group, lay.row[0]):
                    if y_ext is None:
                        if whole:
                            y_ext = z[:, j, :, src]
                            continue
                        y_ext = np.zeros((groups, c_out // groups, columns), dtype=x.dtype)
                    y_ext[:, :, dst] += z[:, j, :, src]
            if y_ext is None:
                y_ext = np.zeros((groups, c_out // groups, columns), dtype=x.dtype)
        else:
            cols = _columns(images, geom, lay, rows).reshape(groups, -1, n * lay.columns(rows.stop - rows.start))
            y_ext = np.matmul(w_mat, cols, out=gemm_empty(w_mat.shape[:2] + cols.shape[-1:], x.dtype))
        y_ext = y_ext.reshape(c_out, n, -1)
        store(y[samples, :, rows], valid(y_ext, lay, rows.stop - rows.start).swapaxes(0, 1), bias)
    return y


def unphase(images: np.ndarray, geom: _args.Geometry, lay: Layout, mode: str) -> np.ndarray:
    """Adjoint of ``phase_images``: ``(n, C, phases, flat) -> (n, C, *S)``."""
    n, c = images.shape[:2]
    images = _grid(images, lay)
    if mode == "zeros":  # each input element is in one phase: copies, no adds, no crop
        pieces = _zero_padded_phases(geom, lay)
        if len(pieces) == 1 and all(s == 1 for s in geom.stride):
            index, dst, _ = pieces[0]
            return images[(slice(None), slice(None), index) + dst]
        dx = np.zeros((n, c) + geom.in_size, dtype=images.dtype)   # inputs no offset reads: 0
        for index, dst, src in pieces:
            dx[(slice(None), slice(None)) + src] = images[(slice(None), slice(None), index) + dst]
        return dx
    dxp = np.zeros((n, c) + geom.padded_size, dtype=images.dtype)
    for index, residues in enumerate(itertools.product(*lay.phases)):
        phase = dxp[(Ellipsis,) + tuple(slice(r, None, s) for r, s in zip(residues, geom.stride))]
        phase += images[(slice(None), slice(None), index) + tuple(slice(0, t) for t in phase.shape[2:])]
    return pad_adjoint(dxp, geom.pads, mode, geom.in_size)


def _shifted_stack(dy_ext: np.ndarray, group: _Taps, lay: Layout, first: int, width: int) -> np.ndarray:
    """``[δ_ext shifted right by u_j·R_1; ...]`` for the offsets ``j`` of a phase group of the
    first dim, over the columns ``first .. first + width`` of its ``X̃_0``, zero where no δ
    column lands: ``(G, C_og, L_q) -> (G, count·C_og, width)``."""
    groups, c_og, columns = dy_ext.shape
    dy_stack = gemm_empty((groups, group.count * c_og, width), dy_ext.dtype)
    by_offset = dy_stack.reshape(groups, group.count, c_og, width)
    for j in range(group.count):        # δ_ext column q lands on column q + shift
        shift = j * group.u_step * lay.row[0] - first
        lo, hi = max(0, -shift), min(columns, width - shift)
        if hi <= lo:
            by_offset[:, j] = 0
            continue
        by_offset[:, j, :, :lo + shift] = 0
        by_offset[:, j, :, lo + shift:hi + shift] = dy_ext[:, :, lo:hi]
        by_offset[:, j, :, hi + shift:] = 0
    return dy_stack


# dX̃ = W̃ᵀ δ_ext is written and read back once; above this size the input gradient
# computes it one first-dim offset at a time (``_row_split``, any stride), k_1 times
# smaller, before each part is folded (conv3d 16->32@16, 9 MiB per sample: 6.6 vs 16 ms;
# 64@112, 29 MiB: 31 vs 65 ms; the 7x7 s2 stem, 7.6 MiB: 17.5 vs 20.6 ms); below it the
# thinner GEMMs and extra calls lose (32@56, 3.7 MiB: 3.2 vs 2.9 ms; AlexNet's 11x11 s4,
# 4.5 MiB: 12.7 vs 11.4 ms).
SPLIT_DX_BYTES = 6 * 2**20


def shifted_backward(dy: np.ndarray, geom: _args.Geometry, mode: str, *, x=None, weight=None):
    """``(dX, dW)`` of a convolution, either or both: dy ``(N, C_out, *O)``; with x
    ``(N, C_in, *S)`` given, ``dW̃ = Σ_tiles δ_ext X̃ᵀ -> (C_out, C_ig, *k)``; with weight
    ``(C_out, C_ig, *k)`` given, ``dX = Pᵀ fold(W̃ᵀ δ_ext) -> (N, C_in, *S)``. The other is None.

    Both in one pass over the tiles build ``δ_ext`` once (the 7x7 stem: 1.7 ms of 27).
    """
    batch, c_out = dy.shape[:2]
    groups = geom.groups
    c_in = x.shape[1] if x is not None else weight.shape[1] * groups
    c_og, c_ig = c_out // groups, c_in // groups
    lay = layout(geom, mode, wrap=True)
    bytes_per_column = _args.unfolded_bytes(c_in, geom.kernel, dy.itemsize)
    column_bytes = _column_bytes(c_in, c_out, geom.kernel, dy.itemsize)
    inner_geom = _row_split(geom, lay, column_bytes)
    dx_inner_geom = _row_split(geom, lay, column_bytes, any_stride=True)
    if x is not None:
        # dW̃_gᵀ = X̃_g δ_extᵀ (G, K, C_og), the faster orientation (``convolution._conv_weight_grad``);
        # split by first-dim offset (stride 1: one phase group), the blocks of rows dW̃_aᵀ
        # (G, K/k_1, C_og) of every offset a side by side: (G, K/k_1, k_1·C_og)
        offsets = geom.kernel[0] if inner_geom else 1
        dw_mat_t = np.empty((groups, c_ig * _args.prod(geom.kernel) // offsets, offsets * c_og), dtype=dy.dtype)
    if weight is not None:
        w_mat_t = weight.reshape(groups, c_og, -1).swapaxes(1, 2)         # W̃_gᵀ (G, K, C_og)
        # per phase group of the first dim, its offsets' W̃_aᵀ (G, K/k_1, C_og) side by side
        w_stack_t = ([_stacked_weight(weight, groups, group).swapaxes(1, 2) for group in lay.taps[0]]
                     if dx_inner_geom else None)
        stack_dx = dx_inner_geom and c_og <= c_ig * _args.prod(geom.kernel[1:])
        dx = np.empty((batch, c_in) + geom.in_size, dtype=dy.dtype)
        phases = _args.prod(len(p) for p in lay.phases)
    split_dw = x is not None and inner_geom
    # with dX's stack of shifted δ built anyway, all dW̃_aᵀ come from one GEMM on it, k_1 times
    # wider (conv3d 16->32@16 conv_grad 8.7 -> 8.3 ms, 64@56 13.6 -> 12.8); alone, building
    # the stack costs more than the wider GEMM gains (64@56 dW 7.7 vs 8.2 ms)
    stack_dw = split_dw and weight is not None and stack_dx
    if x is not None:
        dw_sum = ProductSum(dw_mat_t[None] if stack_dw or not split_dw else
                            dw_mat_t.reshape(dw_mat_t.shape[:2] + (-1, c_og)).transpose(2, 0, 1, 3))
    images, grad_images, tile = None, None, None
    for samples, rows in _chunks(batch, lay, bytes_per_column, column_bytes):
        n = samples.stop - samples.start
        if tile != samples:
            if grad_images is not None:
                dx[tile] = unphase(grad_images, geom, lay, mode)
            if x is not None:
                images = phase_images(x[samples], geom, lay, mode)
            if weight is not None:
                grad_images = np.zeros((n, c_in, phases, lay.flat_size), dtype=dy.dtype)
            tile = samples
        dy_ext = _extended(dy[samples, :, rows], lay).reshape(groups, c_og, -1)
        if x is not None and not split_dw:
            dw_sum.add(0, _columns(images, geom, lay, rows).reshape(groups, -1, dy_ext.shape[-1]),
                         dy_ext.swapaxes(1, 2))                           # (δ_g X̃_gᵀ)ᵀ
        split_dx = weight is not None and dx_inner_geom and (
            stack_dx or bytes_per_column * lay.columns(rows.stop - rows.start) > SPLIT_DX_BYTES)
        if split_dw or split_dx:
            x_zero = _inner_cols(images, geom, inner_geom, lay, rows, mode) if split_dw else None
            for index, group in enumerate(lay.taps[0]):
                if split_dw and not stack_dw:
                    _, reach, x0 = x_zero[index]
                    # dW̃_aᵀ = X̃_0[:, u_a·R_1 :][:, :L_q] δ_extᵀ, on the columns off the padding
                    for j, src, dst, _ in _offset_windows(rows, reach, group, lay.row[0]):
                        dw_sum.add(group.m0 + j * group.m_step, x0[:, :, src], dy_ext[:, :, dst].swapaxes(1, 2))
                if split_dx and not stack_dx:
                    cols = gemm_empty((groups, w_stack_t[index].shape[1]) + dy_ext.shape[-1:], dy.dtype)
                    for j in range(group.count):  # dX̃_a one offset at a time
                        cols = np.matmul(w_stack_t[index][:, :, j * c_og:(j + 1) * c_og], dy_ext, out=cols)
                        fold(cols.reshape((c_in,) + dx_inner_geom.kernel + (n, -1)), dx_inner_geom,
                             _first_dim_offset(lay, group, j), rows, grad_images)
                if not (stack_dw or (split_dx and stack_dx)):
                    continue
                # only the columns whose first-dim row lands on the input, not its padding
                # (the rows of X̃_0 where dW uses it)
                reach = x_zero[index][1] if split_dw else _data_rows(geom, group, _reach(rows, group), mode)
                if reach.stop <= reach.start:
                    continue
                first = (reach.start - rows.start) * lay.row[0]
                dy_stack = _shifted_stack(dy_ext, group, lay, first, (reach.stop - reach.start) * lay.row[0])
                if stack_dw:
                    # [dW̃_aᵀ ...] = X̃_0 [δ_ext shifted right by u_a·R_1; ...]ᵀ: Σ_q X̃_0[q + u_a·R_1] δ_ext[q]
                    dw_sum.add(0, x_zero[index][2], dy_stack.swapaxes(1, 2))   # X̃_0 over ``reach``
                if split_dx and stack_dx:
                    # Σ_a dX̃_a shifted right by u_a·R_1 = [W̃_aᵀ ...] [δ_ext shifted by u_a·R_1; ...]
                    w_t = w_stack_t[index]
                    cols = np.matmul(w_t, dy_stack, out=gemm_empty(w_t.shape[:2] + dy_stack.shape[-1:], dy.dtype))
                    fold(cols.reshape((c_in,) + dx_inner_geom.kernel + (n, -1)), dx_inner_geom,
                         _first_dim_offset(lay, group), reach, grad_images)
        if weight is not None and not split_dx:
            cols = np.matmul(w_mat_t, dy_ext,                             # dX̃_g (G, K, n·L_q)
                             out=gemm_empty(w_mat_t.shape[:2] + dy_ext.shape[-1:], dy.dtype))
            fold(cols.reshape((c_in,) + geom.kernel + (n, -1)), geom, lay, rows, grad_images)
    dweight = None
    if x is not None:
        # (G, C_ig, inner, a, C_og) -> (G, C_og, C_ig, a, inner) = (C_out, C_ig, *k)
        dw_sum.result()
        dweight = dw_mat_t.reshape(groups, c_ig, -1, offsets, c_og)
        dweight = dweight.transpose(0, 4, 1, 3, 2)
        dweight = dweight.reshape((c_out, c_ig) + geom.kernel)
    if weight is None:
        return None, dweight
    if grad_images is not None:
        dx[tile] = unphase(grad_images, geom, lay, mode)
    return dx, dweight


def shifted_weight_grad(x: np.ndarray, dy: np.ndarray, geom: _args.Geometry, mode: str) -> np.ndarray:
    """``dW̃ = Σ_tiles δ_ext X̃ᵀ``: x ``(N, C_in, *S)``, dy ``(N, C_out, *O)`` -> ``(C_out, C_ig, *k)``."""
    return shifted_backward(dy, geom, mode, x=x)[1]


def shifted_input_grad(dy: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str) -> np.ndarray:
    """``dX = Pᵀ fold(W̃ᵀ δ_ext)``: dy ``(N, C_out, *O)``, weight ``(C_out, C_ig, *k)`` -> ``(N, C_in, *S)``."""
    return shifted_backward(dy, geom, mode, weight=weight)[0]
