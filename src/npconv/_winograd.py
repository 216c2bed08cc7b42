r"""Winograd F(2x2, 3x3): 3x3, stride-1, dilation-1 2-d convolution with 2.25x fewer multiplies.

Notation as in ``convolution``: N batch, G groups, C_in = G·C_ig, C_out = G·C_og,
Xp the padded input, O = (O_h, O_w) the output size; tiles: the output is cut
into T = ceil(O_h/2)·ceil(O_w/2) tiles of 2x2 (the bottom/right edge padded to
a multiple of 2 with zeros and cropped afterwards).

One dimension, F(2, 3) (Lavin & Gray 2016): two outputs of a 3-tap correlation,
``y_i = Σ_u d_{i+u} g_u`` for the input tile ``d = Xp[2t .. 2t+3]``, are::

    y = Aᵀ [(G g) ⊙ (Bᵀ d)]       Bᵀ = [[1, 0,-1, 0],   G = [[ 1,   0,  0 ],   Aᵀ = [[1, 1, 1, 0],
                                        [0, 1, 1, 0],        [1/2, 1/2, 1/2],         [0, 1,-1,-1]]
                                        [0,-1, 1, 0],        [1/2,-1/2, 1/2],
                                        [0, 1, 0,-1]]        [ 0,   0,  1 ]]

Two dimensions are the tensor product: per tile, ``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A``
with the 4x4 transforms indexed by (ξ, ν). The sum over input channels moves
inside the transform, so the convolution becomes 16 independent GEMMs::

    U[ξν] = (G W Gᵀ)[ξν]     (C_og, C_ig) per group  — the weight transform (one GEMM
                                                        by G ⊗ G, in the compute dtype)
    V[ξν] = (Bᵀ Xp B)[ξν]    (C_ig, T) per sample     — the input transform (4x the input)
    M[ξν] = U[ξν] · V[ξν]    (C_og, T)                — 16 GEMMs, 16 multiplies per tile
                                                        instead of 36 (= 2x2 outputs x 9 taps)
    Y     = Aᵀ M A           (C_out, O)               — the output transform

Input gradient (stride 1): the full correlation of δ with the flipped, channel-
transposed kernel ``W_flip[ci, co] = W[co, ci, ::-1, ::-1]``, i.e. the same
F(2x2, 3x3) on δ padded by 2; ``dX = Pᵀ dXp``. The flip needs no second weight
transform: reversing g reverses G g (rows 0 <-> 3 swap, rows 1 and 2 stay), so
``U_flip[ξν] = U[p(ξ) p(ν)]ᵀ`` with ``p = (3, 1, 2, 0)``. With zero
padding the adjoint of the pad is a crop, done by correlating δ padded by
``2 - p_lo`` / ``2 - p_hi`` instead (a negative pad crops δ).

Weight gradient: ``dW[co, ci, u, v] = Σ_{n,i,j} δ[n, co, i, j] Xp[n, ci, i+u, j+v]`` is a
correlation whose *output* is the 3x3 kernel and whose "filter" is δ. Cut δ into
2x2 tiles: each reads exactly the 4x4 input tile of the forward, so this is
F(3x3, 2x2), the transpose of the same trilinear form
``Σ_ξ (A a)_ξ (G g)_ξ (Bᵀ d)_ξ``::

    dW = Gᵀ [ Σ_{n, tiles} (A δ_tile Aᵀ) ⊙ (Bᵀ d B) ] G
    E[ξν] = (A δ Aᵀ)[ξν]    (C_og, T) per sample, A = Aᵀᵀ has entries 0, ±1
    dŴ[ξν] = Σ_n E_n[ξν] · V_n[ξν]ᵀ     16 GEMMs (C_og, T) @ (T, C_ig), long K = T

The input transform is the forward's, the δ transform costs adds only and the
GEMMs reduce over the long tile axis, so this beats "F(2x2, 3x3) with roles
swapped" (tiling the 3x3 output in 2x2 wastes 7/16 of a 4x4 tile and gives
(C_og, C_ig)-sized outputs per tile). The last row of A is negated (``(a0,
a0+a1, a0-a1, a1)``) and the sign moved into Gᵀ, which saves a pass.

Groups are one more batch axis of the GEMMs (no loop). Determinism and the
workspace limit: V and M (or E) take ``16·(C_in + C_out)·(T_h + 1)·(T_w + 1)``
elements per sample (T_h, T_w tile rows and columns, plus one spare of each; see
the layout note below): about 4x the input plus 4x the output. The batch is
processed in chunks under ``npconv.get_workspace_limit()`` (runs of tile rows of
one sample if a sample does not fit), at most CACHE_BYTES at a time so that V
and M stay in the L3 cache between the passes. The forward GEMMs take the
chunk's samples side by side, ``(C_og, C_ig) @ (C_ig, n·T')`` per (ξν, group) —
each output column is still one dot product over C_ig in BLAS's fixed order, so
the samples in a chunk do not change its bits — and the weight gradient sums the
samples one at a time in order: results do not depend on the chunking as long as
one sample fits (nor on the batch size). The input transform is elementwise adds
over flat (channel-block, sample) arrays of about BLOCK_BYTES, run on the calling
thread (``_run_units``). The output transform is one GEMM per chunk and the weight
gradient's δ transform one GEMM per sample by the Kronecker transform matrix
(``(Aᵀ ⊗ Aᵀ)`` 4x16, ``(A' ⊗ A')`` 16x4), which BLAS runs on both cores in one
stream over M or δ; as adds they took 1.3-2x longer. The input transform as a
GEMM lost (128@28: 2.2 vs 1.1 ms), because its 16 tile elements are 16 strided copies.
Workspace not counted: U (16/9 of the weight) and one block per thread.

Accuracy. float32 against float64 truth, error = max |y32 - y64| / max Σ|w||x| (the
problem scale: the largest sum of |terms| of one output; for dW, Σ|δ||x|), x, W, δ
uniform in [-1, 1), N=2, three seeds; one float32 ulp at 1.0 is 1.19e-7::

                      Winograd F(2x2,3x3)    im2col           ratio
    64->64 @56   fwd  6.9e-8 .. 8.5e-8       1.1e-7 .. 1.4e-7  0.52 .. 0.78
                 dx   7.6e-8 .. 8.1e-8       1.2e-7 .. 1.4e-7  0.56 .. 0.69
                 dW   3.9e-8 .. 4.3e-8       2.2e-8 .. 2.6e-8  1.47 .. 1.96
    256->256 @14 fwd  6.6e-8 .. 7.2e-8       4.2e-8 .. 4.7e-8  1.49 .. 1.58
                 dx   6.1e-8 .. 7.5e-8       4.5e-8 .. 4.6e-8  1.33 .. 1.66
                 dW   8.0e-8 .. 9.3e-8       1.1e-7 .. 1.3e-7  0.69 .. 0.82

The transforms only add, subtract and halve (exact scalings), so F(2x2, 3x3) stays
within 2x of im2col. F(4x4, 3x3) (points 0, ±1, ±2, ∞; prototyped, not shipped)
measured 1.9e-6 at 64@56 and 1.3e-6 at 256@14: 13x and 28x im2col's error, beyond the
conformance tolerance. Non-finite inputs propagate differently from im2col (a
transform mixes the 4x4 neighbourhood: inf - inf gives NaN).

Speed (float32, N=8, 3x3 s1 p1, 2 cores, time / im2col time in the same process,
medians of 7 interleaved reps, three runs; dx against the faster of im2col's
full-convolution and fold forms)::

    64->64 @56    fwd 0.85-0.91   dx 0.63-0.77   dW 0.75-0.89
    128->128 @28  fwd 0.79-0.81   dx 0.60-0.71   dW 0.79-0.89
    256->256 @14  fwd 0.86-0.92   dx 0.65-0.75   dW 0.89-0.93
    512->512 @7   fwd 1.58-1.68   dx 1.37-1.39   dW 1.88-2.04

It loses where per-sample GEMMs get thin (few tiles: 512@7 has 16 per sample, so
(512x512)@(512x20) products, and the per-sample dŴ sum adds a 16·C_out·C_ig array
per sample) and where the transforms outweigh the saved multiplies (3->64 @56:
3.6x; 16->16 @56: 1.6x; 128 channels in 32 groups @28: 1.3x).
"""
from __future__ import annotations

import numpy as np

from . import _args
from ._config import get_num_threads, get_workspace_limit, parallel_for
from ._padding import pad, pad_adjoint

# Bytes of one transform work unit (its input planes and temporaries). The adds are
# NumPy calls on flat arrays: units this large keep the per-call overhead (which holds
# the GIL, so threads would only queue on it) small next to the work; measured
# best at 2-4 MiB, although that is more than the (1 MiB) L2 cache.
BLOCK_BYTES = 4 * 2**20
# Workspace (V and M) of the samples processed together, when the workspace limit
# allows more: small enough to stay in the (32 MiB) L3 between the passes.
CACHE_BYTES = 8 * 2**20
FLIP = (3, 1, 2, 0)          # U of the spatially flipped kernel: rows and columns reordered by FLIP


def _run_units(body, count: int) -> None:
    """Run the transform units on the calling thread.

    Sharing them with npconv's second thread measured slower: the transforms run
    between GEMMs, while BLAS's worker still spins on the other core (64@56, N=8:
    dx 7.4 vs 9.1 ms, dW 7.9 vs 9.4 ms with one vs two npconv threads).
    """
    body(0, count)


def applicable(geom: _args.Geometry, weight_shape) -> bool:
    """Whether this module computes the convolution: 2-d, 3x3 kernel, stride 1, dilation 1.

    Any padding (pairs, modes), groups and batch size; float32 and float64.
    """
    return (geom.d == 2 and tuple(geom.kernel) == (3, 3) and tuple(weight_shape[2:]) == (3, 3)
            and all(s == 1 for s in geom.stride) and all(dil == 1 for dil in geom.dilation))


# --------------------------------------------------------------------------
# weight transform U = G g Gᵀ and the inverse-side dW = G'ᵀ dŴ G'
# --------------------------------------------------------------------------
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_G_OUT = np.array([[1, 0.5, 0.5, 0], [0, 0.5, -0.5, 0], [0, 0.5, 0.5, -1]])   # G'ᵀ: last column negated
# Both 2-d maps as one matrix on the flattened 3x3 / 4x4 tile: (G ⊗ G)[ξ·4+ν, a·3+b] =
# G[ξ,a]·G[ν,b]. Entries 0, ±1/4, ±1/2, 1 are exact in any float dtype.
_G_KRON = np.kron(_G, _G)             # (16, 9)
_G_OUT_KRON = np.kron(_G_OUT, _G_OUT)  # (9, 16)
# Aᵀ ⊗ Aᵀ on the flattened 4x4 tile: output parity (a, b) of a 2x2 tile from M[ξ·4+ν]
_A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
_A_KRON = np.kron(_A_T, _A_T)          # (4, 16)
# A' ⊗ A' for the weight gradient's δ transform (A' = A with its last row negated, the sign
# moved into G'ᵀ): E[ξ·4+ν] from the 2x2 tile δ[a·2+b]
_A_GRAD = np.array([[1, 0], [1, 1], [1, -1], [0, 1]])
_A_GRAD_KRON = np.kron(_A_GRAD, _A_GRAD)  # (16, 4)


def weight_transform(weight: np.ndarray, groups: int) -> np.ndarray:
    """U = G g Gᵀ: weight ``(C_out, C_ig, 3, 3)`` -> ``(16, G, C_og, C_ig)``, in weight's dtype.

    One GEMM ``(G ⊗ G) (16, 9) @ W̃ᵀ (9, C_out·C_ig)`` in the compute dtype (float32
    stays float32): BLAS reads the 3x3 taps with a stride instead of a transposing copy.
    """
    c_out, c_ig = weight.shape[:2]
    u = np.matmul(_G_KRON.astype(weight.dtype), weight.reshape(-1, 9).T)      # (16, C_out·C_ig)
    return u.reshape(16, groups, c_out // groups, c_ig)


def _weight_grad_output(dw_hat: np.ndarray) -> np.ndarray:
    """dW = G'ᵀ dŴ G': ``(16, G, C_og, C_ig)`` -> ``(C_out, C_ig, 3, 3)``, one GEMM
    ``dŴᵀ (C_out·C_ig, 16) @ (G' ⊗ G')ᵀ (16, 9)`` that lands in dW's own layout."""
    _, groups, c_og, c_ig = dw_hat.shape
    dw = np.matmul(dw_hat.reshape(16, -1).T, _G_OUT_KRON.T.astype(dw_hat.dtype))
    return dw.reshape(groups * c_og, c_ig, 3, 3)


# --------------------------------------------------------------------------
# input, gradient and output transforms (cache blocks over (sample, channels))
# --------------------------------------------------------------------------
def _blocks(batch: int, channels: int, bytes_per_channel: int):
    """(sample, first channel, last channel) work units of about BLOCK_BYTES, at least
    one per thread when the batch is small."""
    step = max(1, min(channels, BLOCK_BYTES // max(1, bytes_per_channel)))
    per_sample = -(-get_num_threads() // batch)                  # units wanted per sample
    step = max(1, min(step, -(-channels // per_sample)))
    return [(n, first, min(first + step, channels))
            for n in range(batch) for first in range(0, channels, step)]


def _place_parity(src: np.ndarray, lo_h: int, lo_w: int, first: int, planes: np.ndarray):
    """``planes[rp, cp, :, i, j] = Z[:, first + 2i + rp, 2j + cp]`` where Z is ``src (c, H, W)``
    placed at offset (lo_h, lo_w) in zeros. ``planes (2, 2, c, R, C_w)`` is zeroed first."""
    planes.fill(0)
    height, width = src.shape[1:]
    rows, cols = planes.shape[3:]
    for rp in range(2):
        # i with 0 <= first + 2i + rp - lo_h < H, i < R
        i0 = max(0, -(-(lo_h - first - rp) // 2))
        i1 = min(rows, (height - 1 + lo_h - first - rp) // 2 + 1)
        if i1 <= i0:
            continue
        h0 = first + 2 * i0 + rp - lo_h
        for cp in range(2):
            j0 = max(0, -(-(lo_w - cp) // 2))
            j1 = min(cols, (width - 1 + lo_w - cp) // 2 + 1)
            if j1 <= j0:
                continue
            w0 = 2 * j0 + cp - lo_w
            planes[rp, cp, :, i0:i1, j0:j1] = src[:, h0:h0 + 2 * (i1 - i0) - 1:2, w0:w0 + 2 * (j1 - j0) - 1:2]


def _bt_rows(d, out):
    """``out[0..3] = Bᵀ (d0, d1, d2, d3)``: d0-d2, d1+d2, d2-d1, d1-d3."""
    np.subtract(d[0], d[2], out=out[0])
    np.add(d[1], d[2], out=out[1])
    np.subtract(d[2], d[1], out=out[2])
    np.subtract(d[1], d[3], out=out[3])


# Layout of the transformed tiles. Per (ξν, channel, sample) the tiles of a piece
# are stored row-major as (t_r + 1, C_w) with C_w = T_w + 1: a spare tile column
# per row and a spare tile row per (channel, sample). The transforms work on the input
# split by row and column parity, ``Z[2i + rp, 2j + cp]`` as four (t_r + 1, C_w) planes
# per (channel, sample), back to back, so that "the next tile" is the next element (+1)
# or the next row (+C_w) of one flat array: each add runs over the flat arrays of a
# whole block of channels (NumPy's fast contiguous loop, one call per term) instead of
# stride-2 views or short rows. The spares hold wrapped-around (finite) values that
# never reach a result: the forward GEMMs and the output transform carry them along
# in their own columns, which are then dropped; the weight gradient's GEMMs take the
# first t_r rows as a strided view (BLAS's leading dimension), where the δ transform
# is exactly 0 in the spare column. (The output and δ transforms read these planes
# with GEMMs; only the input transform still runs as adds.)
def _input_transform(x: np.ndarray, pads, mode: str, tile_rows: slice, tiles_w: int, v: np.ndarray):
    """V = Bᵀ d B for the 4x4 input tiles of tile rows ``tile_rows``.

    x ``(n, C, H, W)`` (unpadded); v ``(16, C, n, (t_r+1)·C_w)`` filled (index ξ·4+ν)
    but the last spare tile row, the samples side by side so that one GEMM per ξν takes
    them all. Tile (r, j) reads
    Xp rows 2r..2r+3, columns 2j..2j+3 (Xp zero-extended at the bottom/right).
    """
    batch, chans = x.shape[:2]
    t_r = tile_rows.stop - tile_rows.start
    first, width = 2 * tile_rows.start, tiles_w + 1
    size = (t_r + 1) * width                     # one parity plane of one channel
    units = _blocks(1, chans, 12 * batch * size * x.itemsize)
    (lo_h, _), (lo_w, _) = pads

    def body(start, end):
        for _, c0, c1 in units[start:end]:
            planes = np.empty((2, 2, c1 - c0, batch, t_r + 1, width), dtype=x.dtype)
            for n in range(batch):
                if mode == "zeros":
                    _place_parity(x[n, c0:c1], lo_h, lo_w, first, planes[:, :, :, n])
                else:
                    _place_parity(pad(x[n:n + 1, c0:c1], pads, mode)[0], 0, 0, first, planes[:, :, :, n])
            flat = planes.reshape(2, 2, -1)                               # (rp, cp, c·n·size)
            length = flat.shape[-1]
            cols = np.empty((2, 4, length), dtype=x.dtype)                # Bᵀ over columns, per rp
            for rp in range(2):
                even, odd = flat[rp, 0], flat[rp, 1]
                _bt_rows((even[:-1], odd[:-1], even[1:], odd[1:]), cols[rp, :, :-1])
            cols[:, :, -1] = 0                                            # (a spare column: no source)
            stop = length - width                                         # rows i+1 exist
            for nu in range(4):
                even, odd = cols[0, nu], cols[1, nu]
                _bt_rows((even[:stop], odd[:stop], even[width:], odd[width:]),
                         [v[4 * xi + nu, c0:c1].reshape(-1)[:stop] for xi in range(4)])

    _run_units(body, len(units))


def _grad_transform(dy: np.ndarray, tile_rows: slice, tiles_w: int, e: np.ndarray):
    """E = A' δ A'ᵀ for the 2x2 tiles of δ: dy ``(n, C, O_h, O_w)`` -> e ``(n, 16, C, t_r·C_w)``.

    Per sample: δ split by row and column parity (``_place_parity``, four planes), then one
    GEMM ``(A' ⊗ A') (16, 4) @ planes (4, C·t_r·C_w)`` instead of 24 two-operand adds (N=8,
    float32: 128@28 0.9 -> 0.6 ms, 64@56 1.9 -> 1.4). Missing outputs of edge tiles and the
    spare column are zeros in the planes, so exact zeros in E.
    """
    batch, chans = dy.shape[:2]
    t_r = tile_rows.stop - tile_rows.start
    a_kron = _A_GRAD_KRON.astype(dy.dtype)
    planes = np.empty((2, 2, chans, t_r, tiles_w + 1), dtype=dy.dtype)
    for n in range(batch):
        _place_parity(dy[n], 0, 0, 2 * tile_rows.start, planes)
        np.matmul(a_kron, planes.reshape(4, -1), out=e[n].reshape(16, -1))


def _output_transform(m: np.ndarray, y: np.ndarray, tile_rows: slice, tiles_w: int):
    """Y = Aᵀ M A into rows ``2·tile_rows`` of y ``(n, C, O_h, O_w)`` (edge tiles cropped).

    m ``(16, C, n, (t_r+1)·C_w)``, spare tile rows finite. One GEMM
    ``(Aᵀ ⊗ Aᵀ) (4, 16) @ M (16, C·n·(t_r+1)·C_w)`` gives the four output parities
    ``Y[2i + a, 2j + b]``, then one strided copy per parity. BLAS streams M once on both
    cores, where 24 two-operand adds streamed it 3 times on one (N=8, float32: 128@28
    1.3 -> 0.9 ms, 256@14 1.0 -> 0.5 ms, 64@56 2.4 -> 1.9 ms).
    """
    batch, chans, out_h, out_w = y.shape
    t_r = tile_rows.stop - tile_rows.start
    r0 = tile_rows.start
    width = tiles_w + 1
    # valid tile rows / columns for output parity a / b (the last tile may stick out)
    rows_a = [min(t_r, (out_h - a - 2 * r0 + 1) // 2) for a in range(2)]
    cols_b = [min(tiles_w, (out_w - b + 1) // 2) for b in range(2)]
    parities = np.matmul(_A_KRON.astype(y.dtype), m.reshape(16, -1)).reshape(4, chans, batch, t_r + 1, width)
    y_cn = y.swapaxes(0, 1)                                               # (C, n, O_h, O_w)
    for a in range(2):
        for b in range(2):
            ra, cb = rows_a[a], cols_b[b]
            if ra > 0 and cb > 0:
                y_cn[:, :, 2 * r0 + a:2 * r0 + a + 2 * ra - 1:2, b:b + 2 * cb - 1:2] = \
                    parities[2 * a + b, :, :, :ra, :cb]


# --------------------------------------------------------------------------
# chunking under the workspace limit
# --------------------------------------------------------------------------
def _pieces(batch: int, tiles_h: int, tiles_w: int, bytes_per_tile: int):
    """(batch slice, tile-row slice) pieces whose workspace fits the limit.

    Whole samples when one fits (then results do not depend on the split),
    else runs of tile rows of one sample (at least one row).
    """
    limit = get_workspace_limit()
    per_sample = bytes_per_tile * (tiles_h + 1) * tiles_w      # + the spare tile row
    if per_sample <= limit:
        # at most CACHE_BYTES of samples at a time: V and M then stay in the L3 cache
        # between the transforms and the GEMMs (per-sample GEMMs: same bits either way)
        step = max(1, min(batch, limit // per_sample, CACHE_BYTES // per_sample))
        for start in range(0, batch, step):
            yield slice(start, min(start + step, batch)), slice(0, tiles_h)
        return
    rows = max(1, limit // (bytes_per_tile * tiles_w) - 1)
    for n in range(batch):
        for start in range(0, tiles_h, rows):
            yield slice(n, n + 1), slice(start, min(start + rows, tiles_h))


class _Workspace:
    """Flat buffers reused across pieces (warm pages: the first piece is the largest)."""

    def __init__(self, dtype):
        self.dtype, self.buffers = dtype, {}

    def get(self, name: str, shape) -> np.ndarray:
        size = _args.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.size < size:
            buf = self.buffers[name] = np.empty(size, dtype=self.dtype)
        return buf[:size].reshape(shape)


def _correlate(x: np.ndarray, u: np.ndarray, pads, mode: str, out_size) -> np.ndarray:
    """Valid 3x3 correlation of ``pad(x, pads, mode)`` with the transformed kernel ``u``.

    x ``(N, G·C_ig, H, W)``, u ``(16, G, C_og, C_ig)`` (may be a transposed view)
    -> y ``(N, G·C_og, *out_size)``.
    """
    batch, c_in = x.shape[:2]
    _, groups, c_og, c_ig = u.shape
    c_out = groups * c_og
    out_h, out_w = out_size
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    y = np.empty((batch, c_out, out_h, out_w), dtype=x.dtype)
    work = _Workspace(x.dtype)
    for samples, tile_rows in _pieces(batch, tiles_h, tiles_w + 1, 16 * (c_in + c_out) * x.itemsize):
        n = samples.stop - samples.start
        t_r = tile_rows.stop - tile_rows.start
        size = (t_r + 1) * (tiles_w + 1)                 # per (channel, sample), with the spare row
        v = work.get("v", (16, groups, c_ig, n * size))
        _input_transform(x[samples], pads, mode, tile_rows, tiles_w, v.reshape(16, c_in, n, size))
        m = work.get("m", (16, groups, c_og, n * size))
        # M[ξν] = U[ξν] V[ξν]: one GEMM per (ξν, group) over the chunk's samples side by side,
        # (C_og, C_ig) @ (C_ig, n·T'), spare tile rows included but the last (finite, then
        # dropped): up to 1/t_r more columns, but n times fewer and wider GEMMs (N=8, float32,
        # the 16 GEMMs of 8 samples: 128@28 3.7 -> 2.6 ms, 256@14 4.2 -> 2.4)
        columns = n * size - (tiles_w + 1)
        m[..., columns:] = 0
        np.matmul(u, v[..., :columns], out=m[..., :columns])
        _output_transform(m.reshape(16, c_out, n, size), y[samples], tile_rows, tiles_w)
    return y


# --------------------------------------------------------------------------
# the three kernels (signatures as in _depthwise)
# --------------------------------------------------------------------------
def winograd_forward(x: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str) -> np.ndarray:
    """x ``(N, C_in, H, W)``, weight ``(C_out, C_ig, 3, 3)`` -> y ``(N, C_out, *O)`` (no bias)."""
    u = weight_transform(weight, geom.groups)
    return _correlate(x, u, geom.pads, mode, geom.out_size)


def winograd_input_grad(dy: np.ndarray, weight: np.ndarray, geom: _args.Geometry, mode: str) -> np.ndarray:
    """dy ``(N, C_out, *O)``, weight ``(C_out, C_ig, 3, 3)`` -> dx ``(N, C_in, H, W)``.

    dXp = full correlation of δ with W_flip (δ padded by 2), dX = Pᵀ dXp; for
    zero padding Pᵀ is a crop, folded into the padding of δ (``2 - p``).
    """
    u = weight_transform(weight, geom.groups)
    u_flip = u.reshape(4, 4, *u.shape[1:])[np.ix_(FLIP, FLIP)].reshape(u.shape).swapaxes(-1, -2)
    if mode == "zeros":
        # δ padded by 2 - p (cropped by p - 2 where p > 2): output exactly the unpadded input.
        crop = tuple(slice(max(0, lo - 2), o - max(0, hi - 2)) for (lo, hi), o in zip(geom.pads, geom.out_size))
        dy_in = dy[(slice(None), slice(None)) + crop]
        dy_pads = tuple((max(0, 2 - lo), max(0, 2 - hi)) for lo, hi in geom.pads)
        return _correlate(dy_in, u_flip, dy_pads, "zeros", geom.in_size)
    dxp = _correlate(dy, u_flip, ((2, 2), (2, 2)), "zeros", geom.padded_size)
    return pad_adjoint(dxp, geom.pads, mode, geom.in_size)


def winograd_weight_grad(x: np.ndarray, dy: np.ndarray, geom: _args.Geometry, mode: str) -> np.ndarray:
    """x ``(N, C_in, H, W)``, dy ``(N, C_out, *O)`` -> dweight ``(C_out, C_ig, 3, 3)``.

    F(3x3, 2x2): dŴ[ξν] = Σ_n E_n[ξν] V_n[ξν]ᵀ, samples summed one at a time
    in order (independent of the chunking), then dW = G'ᵀ dŴ G'.
    """
    batch, c_in = x.shape[:2]
    c_out = dy.shape[1]
    groups = geom.groups
    c_og, c_ig = c_out // groups, c_in // groups
    tiles_h, tiles_w = -(-geom.out_size[0] // 2), -(-geom.out_size[1] // 2)
    dw_hat = np.zeros((16, groups, c_og, c_ig), dtype=x.dtype)
    sample_dw = np.empty_like(dw_hat)
    work = _Workspace(x.dtype)

    def accumulate(start, stop):   # dŴ += this sample's term, 16·G planes shared between threads
        np.add(dw_hat[start:stop], sample_dw[start:stop], out=dw_hat[start:stop])

    for samples, tile_rows in _pieces(batch, tiles_h, tiles_w + 1, 16 * (c_in + c_out) * x.itemsize):
        n = samples.stop - samples.start
        t_r = tile_rows.stop - tile_rows.start
        size, tiles = (t_r + 1) * (tiles_w + 1), t_r * (tiles_w + 1)
        v = work.get("v", (16, groups, c_ig, n, size))
        _input_transform(x[samples], geom.pads, mode, tile_rows, tiles_w, v.reshape(16, c_in, n, size))
        e = work.get("e", (n, 16, groups, c_og, tiles))
        _grad_transform(dy[samples], tile_rows, tiles_w, e.reshape(n, 16, c_out, tiles))
        for i in range(n):  # fixed order over samples (see docstring)
            np.matmul(e[i], v[..., i, :tiles].swapaxes(-1, -2), out=sample_dw)   # (16, G, C_og, C_ig)
            parallel_for(accumulate, 16)
    return _weight_grad_output(dw_hat)
