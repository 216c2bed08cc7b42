"""The shifted kernel (``npconv._shifted``): im2col on the flattened padded input.

Its conformance against PyTorch runs over the whole grid of ``test_conv`` and
``test_conv_transpose`` (``algorithm="shifted"``) and the hypothesis configurations.
Here: the layout arithmetic it rests on, the row runs under a workspace limit, the
splits by first-dim offset, finite differences and the adjoint identity of its
unfold/fold pair, and what "auto" picks (float32: ``test_conv``'s float32 tests run
every GEMM kernel).

Tolerances: float64 results within 1e-12 of the expected array's scale (``assert_close``;
the same products as im2col summed in another order, ~1e-16 of the scale each).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import npconv
from npconv import _args
from npconv import _shifted as sh
from npconv.convolution import select_algorithm


def _geometry(x, w, stride=1, padding=0, dilation=1, groups=1, mode="zeros"):
    return _args.conv_call(x, w, None, stride, padding, dilation, groups, mode).geom


def test_layout_of_a_3x3x3_volume():
    """16^3 with padding 1. Zero padding: rows share their zero borders, so rows of 17 and
    planes of 17 rows (R = 289, 17, 1), L_q = 16·289 columns for 16^3 = 4096 outputs, and
    19 planes: the last column's farthest read is 2·289 + 2·17 + 2 = 614 past row 15, so
    into plane 18. Other modes pad every row on both sides: 18^3 plus the spare plane."""
    x = np.zeros((1, 2, 16, 16, 16))
    w = np.zeros((4, 2, 3, 3, 3))
    geom = _geometry(x, w, padding=1)
    lay = sh.layout(geom, "zeros")
    assert (lay.size, lay.row, lay.columns(16)) == ((19, 17, 17), (289, 17, 1), 16 * 289)
    lay = sh.layout(geom, "reflect")
    assert (lay.size, lay.row, lay.columns(16)) == ((19, 18, 18), (324, 18, 1), 16 * 324)


def test_wrapped_layout_of_a_3x3x3_volume():
    """The GEMM kernels' layout: the inner dims drop their padding (16, not 17, per row), the
    data grid starts p_lo rows and columns in (lead 1·16 + 1), and L_q = L = 4096: every
    column is an output. Offsets 0 and 2 of each inner dim wrap at o = 0 and o = 15; the
    first dim keeps its zero planes (16 + 2 + the spare). Other modes keep their layout."""
    x = np.zeros((1, 2, 16, 16, 16))
    geom = _geometry(x, np.zeros((4, 2, 3, 3, 3)), padding=1)
    lay = sh.layout(geom, "zeros", wrap=True)
    assert (lay.size, lay.row, lay.columns(16), lay.lead) == ((19, 16, 16), (256, 16, 1), 4096, 17)
    assert lay.wrap == ((), ((0, 1, 16), (2, 0, 15)), ((0, 1, 16), (2, 0, 15)))
    assert lay.dense and sh.overcompute(geom) == 1.0
    assert sh.layout(geom, "reflect", wrap=True) == sh.layout(geom, "reflect")
    # an inner stride keeps the shared borders
    strided = _geometry(x, np.zeros((4, 2, 3, 3, 3)), (1, 1, 2), 1)
    assert sh.layout(strided, "zeros", wrap=True) == sh.layout(strided, "zeros")


@pytest.mark.parametrize("size, kernel, dilation, pads, expected", [
    # (T, wrapped (m, a, b)): zero X̃'s columns o < a and b <= o < O of offset m
    (16, 3, 1, (1, 1), (16, ((0, 1, 16), (2, 0, 15)))),
    (16, 3, 1, (0, 0), (16, ())),                   # valid: O = 14, reads past 15 only from o >= 14
    (16, 3, 1, (2, 0), (16, ((0, 2, 16), (1, 1, 16)))),
    (16, 3, 2, (2, 2), (16, ((0, 2, 16), (2, 0, 14)))),
    (10, 1, 1, (5, 5), (20, ())),                   # O = T = 20: 10 zeros between rows' data
    (4, 3, 1, (3, 3), (8, ())),                     # O = T = 8: 4 zeros between rows' data
    (4, 3, 1, (3, 0), (5, ((0, 2, 5), (1, 1, 5)))),  # O = T = 5: one zero, i = -3, -2 wrap
])
def test_wrapped_dim(size, kernel, dilation, pads, expected):
    """Offset m reads data index o + m·dil - p_lo; with T = max(O, S) it lands in the row
    before for i < S - T and in the row after for i >= T (``_wrapped_dim``)."""
    x = np.zeros((1, 1, 4, size))
    geom = _geometry(x, np.zeros((1, 1, 1, kernel)), 1, ((0, 0), pads), (1, dilation))
    assert sh._wrapped_dim(geom, 1) == expected


@pytest.mark.parametrize("size, kernel, stride, dilation, pads, expected", [
    (16, 3, 1, 1, (1, 1), 17), (7, 3, 1, 1, (1, 1), 8), (16, 5, 1, 1, (2, 2), 18),
    (16, 3, 1, 1, (2, 0), 18),                      # a row's hi zeros cover only lo - hi reads
    (16, 3, 1, 1, (0, 0), 16),                      # valid: the row is the input row
    (16, 3, 1, 2, (2, 2), 18), (10, 1, 1, 1, (5, 5), 20),   # O = 20: the row holds O outputs
    (56, 3, 2, 1, (1, 1), 29)])                     # phases: O 28 + u_max 1 - t0 0 (phase 1)
def test_shared_row_length(size, kernel, stride, dilation, pads, expected):
    x = np.zeros((1, 1, 4, size))
    geom = _geometry(x, np.zeros((1, 1, 1, kernel)), (1, stride), ((0, 0), pads), (1, dilation))
    assert sh.layout(geom, "zeros").size[1] == expected
    assert sh.layout(geom, "circular").size[1] == -(-(size + sum(pads)) // stride)


@pytest.mark.parametrize("kernel, stride, dilation, expected", [
    # (m0, count, m_step, phase residue, u0, u_step) per phase
    (3, 1, 1, [(0, 3, 1, 0, 0, 1)]),
    (7, 2, 1, [(0, 4, 2, 0, 0, 1), (1, 3, 2, 1, 0, 1)]),
    (3, 2, 2, [(0, 3, 1, 0, 0, 1)]),                       # m·2 always even: one phase
    (3, 2, 3, [(0, 2, 2, 0, 0, 3), (1, 1, 2, 1, 1, 3)]),   # m·3 = 0, 3, 6 -> r 0, 1, 0
    (4, 3, 2, [(0, 2, 3, 0, 0, 2), (1, 1, 3, 2, 0, 2), (2, 1, 3, 1, 1, 2)]),
])
def test_taps_grouped_by_phase(kernel, stride, dilation, expected):
    """Every offset m appears once, reading phase (m·dil) mod s at shift (m·dil) div s."""
    groups = sh._dim_taps(kernel, stride, dilation)
    assert [(m0, count, step, r, u0, u_step) for r, m0, count, step, u0, u_step in groups] == expected
    seen = []
    for r, m0, count, step, u0, u_step in groups:
        for j in range(count):
            m = m0 + j * step
            assert divmod(m * dilation, stride) == (u0 + j * u_step, r)
            seen.append(m)
    assert sorted(seen) == list(range(kernel))


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("stride, dilation, pads", [
    (1, 1, ((1, 1), (1, 1))), (2, 1, ((3, 2), (0, 1))), (3, 2, ((2, 2), (1, 0))), ((2, 1), (1, 3), ((0, 0), (3, 3))),
    ((2, 1), (1, 2), ((1, 0), (4, 0))), (1, 1, ((0, 0), (3, 0)))])
def test_unfold_fold_are_adjoint(rng, stride, dilation, pads, wrap):
    """<unfold(x), c> = <x, fold(c)> on the phase images, and the unfold rows are the
    window view's rows (with garbage columns where o_i >= O_i); with the wrapped layout too,
    whose reads across a row edge are zeroed on both sides."""
    x = rng.standard_normal((2, 3, 9, 8))
    w = np.zeros((2, 3, 3, 3))
    geom = _geometry(x, w, stride, tuple(pads), dilation)
    lay = sh.layout(geom, "zeros", wrap=wrap)
    images = sh.phase_images(x, geom, lay, "zeros")
    rows = slice(0, geom.out_size[0])
    cols = sh.unfold(images, geom, lay, rows)                         # (C, *k, n, L_q)
    c = rng.standard_normal(cols.shape)
    back = np.zeros_like(images)
    sh.fold(c, geom, lay, rows, back)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(images, back), rtol=1e-12)
    # the real columns are im2col's X̃
    ext = cols.reshape(3 * 9, 2, -1)
    real = sh.valid(ext, lay, geom.out_size[0])                      # (K, n, *O)
    expected = npconv.unfold(np.pad(x, ((0, 0), (0, 0)) + tuple(pads)), 3, dilation=dilation,
                             stride=stride)                           # (n, K, L)
    np.testing.assert_array_equal(real.reshape(27, 2, -1).swapaxes(0, 1), expected)


@pytest.mark.parametrize("shape, kernel, stride, dilation, pads, adds", [
    ((2, 3, 31, 31), (11, 11), 4, 1, ((0, 0), (0, 0)), 9),          # AlexNet conv1: 121 offsets
    ((2, 3, 20, 20), (7, 7), 2, 1, ((3, 3), (3, 3)), 16),           # the stem: 49
    ((2, 3, 9, 10, 11), (3, 2, 3), (2, 1, 3), 1, ((1, 0), (0, 1), (2, 2)), 4),   # 18
    ((2, 3, 23), (5,), 3, 1, ((2, 1),), 2),                          # 5
    ((2, 3, 9, 9), (2, 2), 4, 1, ((1, 1), (0, 0)), 1),              # kernel below the stride: 4
    ((2, 3, 12, 11), (3, 3), (2, 1), 1, ((1, 1), (1, 1)), 6),       # wrapped inner dim: 9
])
def test_fold_adds_the_phases_side_by_side(rng, monkeypatch, shape, kernel, stride, dilation, pads, adds):
    """With dilation 1 the offsets m = r + s·j of every phase r read shift j: the fold adds
    them in one strided add per j (``_phase_aligned_taps``), the same additions in the same
    order per element as one add per offset, so the same bits."""
    x = rng.standard_normal(shape)
    w = np.zeros((2, shape[1]) + kernel)
    geom = _geometry(x, w, stride, tuple(pads), dilation)
    lay = sh.layout(geom, "zeros", wrap=True)
    plan = sh._phase_aligned_taps(lay, kernel)
    assert plan is not None and len(plan) == adds
    rows = slice(0, geom.out_size[0])
    images = sh.phase_images(x, geom, lay, "zeros")
    cols = rng.standard_normal(sh.unfold(images, geom, lay, rows).shape)
    merged = np.zeros_like(images)
    sh.fold(cols.copy(), geom, lay, rows, merged)
    monkeypatch.setattr(sh, "_phase_aligned_taps", lambda lay, kernel: None)
    per_offset = np.zeros_like(images)
    sh.fold(cols.copy(), geom, lay, rows, per_offset)
    np.testing.assert_array_equal(merged, per_offset)
    assert np.any(merged != 0)


def test_fold_keeps_one_add_per_offset_where_phases_do_not_line_up():
    """A dilation that is not 1 with a stride mixes phases and shifts (3 taps, stride 2,
    dilation 3: offsets 0 and 2 read phase 0, offset 1 phase 1 at shift 1): no plan."""
    geom = _geometry(np.zeros((1, 2, 20, 20)), np.zeros((2, 2, 3, 3)), 2, 1, 3)
    assert sh._phase_aligned_taps(sh.layout(geom, "zeros", wrap=True), (3, 3)) is None


@pytest.mark.parametrize("limit", [2**30, 20_000, 64])
@pytest.mark.parametrize("d", [2, 3])
def test_workspace_limit_splits_rows(kernel_matches_torch, rng, limit, d):
    """Under a small limit the output rows are processed in runs (down to one row)."""
    x = rng.standard_normal((3, 4) + (7,) * d)
    w = rng.standard_normal((6, 2) + (3,) * d)
    kernel_matches_torch(x, w, "shifted", stride=2, padding=1, groups=2, limit=limit)


@pytest.mark.parametrize("d, size", [(2, 26), (3, 9)])
@pytest.mark.parametrize("groups, c_in, c_out, kernel, dilation, padding, mode", [
    (1, 3, 4, 3, 1, 1, "zeros"), (2, 4, 6, 3, 2, 2, "reflect"), (1, 2, 3, 2, 1, 0, "zeros"),
    (2, 4, 4, (3, 1, 2), 1, 1, "circular"), (1, 3, 2, (1, 3, 3), 1, 1, "replicate")])
@pytest.mark.parametrize("limit", [2**30, 5000])
@pytest.mark.parametrize("inner_stride", [1, 2])
@pytest.mark.parametrize("split_dx", [False, True])
def test_split_by_first_kernel_dim(kernel_matches_torch, rng, monkeypatch, d, size, groups, c_in,
                                   c_out, kernel, dilation, padding, mode, limit, inner_stride,
                                   split_dx):
    """Images of >= TILE_COLUMNS columns, first-dim stride 1: the forward runs one GEMM of the
    stacked W̃_a on X̃_0 (``_row_split``), dW one GEMM per first-dim offset on column windows
    of X̃_0 (alone) or one GEMM on dx's stacked δ (in ``conv_grad``), also in row runs; dx by
    the stacked δ (C_og <= C_ig·prod(inner k) here) whatever SPLIT_DX_BYTES, or unsplit when
    it is forced off for the other cases."""
    monkeypatch.setattr(sh, "SPLIT_DX_BYTES", 0 if split_dx else 2**62)
    monkeypatch.setattr(sh, "TILE_BYTES", 0)            # one sample per tile: the split
    kernel = (kernel,) * d if isinstance(kernel, int) else kernel[:d]
    stride = (1,) + (inner_stride,) * (d - 1)
    size = (size,) + (size * inner_stride,) * (d - 1)     # (>= 512 columns either way)
    x = rng.standard_normal((3, c_in) + size)
    w = rng.standard_normal((c_out, c_in // groups) + kernel)
    geom = _geometry(x, w, stride, padding, dilation, groups, mode)
    column_bytes = sh._column_bytes(c_in, c_out, kernel, x.itemsize)
    assert (sh._row_split(geom, sh.layout(geom, "zeros"), column_bytes) is not None) == (kernel[0] > 1)
    kernel_matches_torch(x, w, "shifted", stride=stride, padding=padding, dilation=dilation,
                         groups=groups, mode=mode, limit=limit)


@pytest.mark.parametrize("d, size, kernel, stride, dilation, padding, mode", [
    (2, 52, 3, 2, 1, 1, "zeros"), (2, 70, 5, 3, 1, 2, "reflect"), (2, 52, 7, 2, 1, 3, "zeros"),
    (3, 17, 3, 2, 2, 2, "zeros"), (3, 17, (3, 1, 2), (2, 1, 3), 1, 1, "circular")])
@pytest.mark.parametrize("c_out", [6, 30])
def test_input_grad_split_with_strides(kernel_matches_torch, rng, monkeypatch, d, size, kernel,
                                       stride, dilation, padding, mode, c_out):
    """The input gradient splits dX̃ by first-dim offset at any stride (phase groups of the
    first dim, ``_row_split(any_stride=True)``): one GEMM per phase group on the stacked δ
    where C_og <= C_ig·prod(inner k) (c_out 6), else one per offset (c_out 30: C_og = 15 >
    2·7), forced on here with SPLIT_DX_BYTES = 0."""
    monkeypatch.setattr(sh, "SPLIT_DX_BYTES", 0)
    monkeypatch.setattr(sh, "TILE_BYTES", 0)
    kernel = (kernel,) * d if isinstance(kernel, int) else kernel
    x = rng.standard_normal((2, 4) + (size,) * d)
    w = rng.standard_normal((c_out, 2) + kernel)
    geom = _geometry(x, w, stride, padding, dilation, 2, mode)
    assert sh._row_split(geom, sh.layout(geom, "zeros"), sh._column_bytes(4, c_out, kernel, 8),
                         any_stride=True) is not None
    kernel_matches_torch(x, w, "shifted", stride=stride, padding=padding, dilation=dilation,
                         groups=2, mode=mode, dx_only=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_split_random_configs(kernel_matches_torch, monkeypatch, data):
    """Random geometries on images large enough for the first-dim split (>= TILE_COLUMNS
    columns per sample): asymmetric pads (shared zero borders), inner strides and
    dilations, groups, both dx forms (stacked δ where C_og <= C_ig·prod(inner k), else one
    GEMM per offset; or unsplit when SPLIT_DX_BYTES is not forced to 0)."""
    d = data.draw(st.sampled_from([2, 3]))
    kernel = (data.draw(st.integers(2, 3)),) + tuple(data.draw(st.integers(1, 3)) for _ in range(d - 1))
    stride = (data.draw(st.integers(1, 2)),) + tuple(data.draw(st.integers(1, 3)) for _ in range(d - 1))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(d))
    pads = tuple(tuple(data.draw(st.integers(0, 3)) for _ in range(2)) for _ in range(d))
    mode = data.draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    groups = data.draw(st.integers(1, 2))
    c_out = groups * data.draw(st.sampled_from([1, 3, 9]))
    base = (14, 48) if d == 2 else (6, 12, 12)          # per unit of stride: >= 512 columns mostly
    size = tuple(b * s + data.draw(st.integers(0, 3)) for b, s in zip(base, stride))
    monkeypatch.setattr(sh, "SPLIT_DX_BYTES", data.draw(st.sampled_from([0, 2**62])))
    monkeypatch.setattr(sh, "TILE_BYTES", 0)            # one sample per tile: the split
    x = np.random.default_rng(1).standard_normal((2, 2 * groups) + size)
    w = np.random.default_rng(2).standard_normal((c_out, 2) + kernel)
    geom = _geometry(x, w, stride, pads, dilation, groups, mode)
    lay = sh.layout(geom, mode)
    assume(lay.columns(geom.out_size[0]) >= sh.TILE_COLUMNS)
    kernel_matches_torch(x, w, "shifted", stride=stride, padding=pads, dilation=dilation,
                         groups=groups, mode=mode)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_wrapped_random_configs(kernel_matches_torch, monkeypatch, data):
    """The wrapped layout (zero padding, inner strides 1): kernels up to 4 taps, dilations up
    to 3, pads up to 4 on either side (wider than the kernel: rows with O > S), images from
    smaller than the kernel's reach to large enough for the first-dim split, a first-dim
    stride, groups, both dx forms, and row runs under a small workspace limit."""
    d = data.draw(st.sampled_from([2, 3]))
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(d))
    stride = (data.draw(st.integers(1, 2)),) + (1,) * (d - 1)
    dilation = tuple(data.draw(st.integers(1, 3)) for _ in range(d))
    pads = tuple(tuple(data.draw(st.integers(0, 4)) for _ in range(2)) for _ in range(d))
    large = data.draw(st.booleans())
    size = tuple(data.draw(st.integers(8, 40) if large and d == 2 else st.integers(1, 12)) for _ in range(d))
    groups = data.draw(st.integers(1, 2))
    x = np.random.default_rng(1).standard_normal((2, 2 * groups) + size)
    w = np.random.default_rng(2).standard_normal((groups * data.draw(st.sampled_from([1, 3])), 2) + kernel)
    assume(all(n + lo + hi >= dil * (k - 1) + 1 for n, (lo, hi), dil, k in zip(size, pads, dilation, kernel)))
    geom = _geometry(x, w, stride, pads, dilation, groups)
    assert sh.layout(geom, "zeros", wrap=True).size[1:] == tuple(max(o, i) for o, i in
                                                                 zip(geom.out_size[1:], size[1:]))
    monkeypatch.setattr(sh, "SPLIT_DX_BYTES", data.draw(st.sampled_from([0, 2**62])))
    monkeypatch.setattr(sh, "TILE_BYTES", data.draw(st.sampled_from([0, sh.TILE_BYTES])))
    kernel_matches_torch(x, w, "shifted", stride=stride, padding=pads, dilation=dilation, groups=groups,
                         limit=data.draw(st.sampled_from([None, 64])))


def test_no_split_with_a_first_dim_stride(monkeypatch):
    monkeypatch.setattr(sh, "TILE_BYTES", 0)
    x = np.zeros((1, 3, 64, 64))
    geom = _geometry(x, np.zeros((4, 3, 3, 3)), 2, 1)
    assert sh.layout(geom, "zeros").columns(geom.out_size[0]) >= sh.TILE_COLUMNS
    assert sh._row_split(geom, sh.layout(geom, "zeros"), sh._column_bytes(3, 4, (3, 3), 8)) is None


@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, dtype, samples", [
    (16, 16, 32, 3, 1, np.float32, 4),     # ResNet-20's 16@32: (576 + 64) B x 1024 columns
    (16, 16, 32, 3, 1, np.float64, 2),
    (64, 64, 56, 3, 1, np.float32, 1),     # (2304 + 256) B x 3136: one sample, split by offset
    (512, 512, 7, 3, 1, np.float32, 11),   # at least TILE_COLUMNS = 512 columns: ceil(512 / 49)
    (256, 512, 56, 1, 2, np.float32, 1),   # 1x1 s2: (1024 + 2048) B x 784, its output counts
])
def test_samples_per_tile(c_in, c_out, size, kernel, stride, dtype, samples):
    """Tiles take at least TILE_COLUMNS columns, and more samples while their unfold and
    output stay under TILE_BYTES; the first-dim split runs where a tile is one sample."""
    itemsize = np.dtype(dtype).itemsize
    x = np.zeros((1, c_in, size, size), dtype=dtype)
    geom = _geometry(x, np.zeros((c_out, c_in, kernel, kernel), dtype=dtype), stride, kernel // 2)
    lay = sh.layout(geom, "zeros", wrap=True)
    column_bytes = sh._column_bytes(c_in, c_out, (kernel, kernel), itemsize)
    assert sh._tile_samples(lay, column_bytes) == samples
    split = samples == 1 and kernel > 1 and stride == 1
    assert (sh._row_split(geom, lay, column_bytes) is not None) == split
    assert sh.splits_first_dim(geom, c_in, c_out, itemsize) == split


def test_finite_differences(rng, numerical_grad, assert_close):
    """Central differences of the linear map (no truncation error; rounding ~1e-10)."""
    x = rng.standard_normal((1, 2, 6, 5, 4))
    w = rng.standard_normal((3, 2, 3, 2, 3))
    kwargs = dict(stride=(2, 1, 1), padding=((1, 0), (1, 1), (2, 1)), dilation=(1, 2, 1),
                  padding_mode="zeros", algorithm="shifted")
    dy = rng.standard_normal(npconv.conv(x, w, **kwargs).shape)
    dx, dw, _ = npconv.conv_grad(dy, x, w, **kwargs)
    assert_close(dx, numerical_grad(lambda v: np.sum(npconv.conv(v, w, **kwargs) * dy), x), rtol=1e-8)
    assert_close(dw, numerical_grad(lambda v: np.sum(npconv.conv(x, v, **kwargs) * dy), w), rtol=1e-8)


@pytest.mark.parametrize("shape, kernel, stride, expected", [
    ((8, 16, 16, 16, 16), (32, 16, 3, 3, 3), 1, {"forward": "shifted", "weight": "shifted", "input": "shifted"}),
    ((8, 3, 224, 224), (64, 3, 7, 7), 2, {"forward": "shifted", "weight": "shifted", "input": "shifted"}),
    ((8, 512, 7, 7), (512, 512, 3, 3), 1, {"forward": "shifted", "weight": "shifted", "input": "shifted"}),
    ((8, 256, 14, 14), (256, 256, 3, 3), 1, {"forward": "winograd", "weight": "shifted", "input": "winograd"}),
    # small 2-d images with <= 64 channels: dx as the full convolution of δ (_same_conv_pays)
    ((8, 64, 2, 2), (64, 64, 3, 3), 1, {"forward": "shifted", "weight": "shifted", "input": "im2col"}),
    ((32, 16, 32, 32), (16, 16, 3, 3), 1, {"forward": "shifted", "weight": "shifted", "input": "im2col"}),
    ((32, 16, 32, 32), (32, 16, 3, 3), 1, {"forward": "shifted", "weight": "shifted", "input": "shifted"}),
    ((8, 64, 56, 56), (64, 64, 3, 3), 1, {"forward": "shifted", "weight": "shifted", "input": "shifted"}),
    ((8, 64, 28, 28), (64, 64, 3, 3), 1, {"forward": "winograd", "weight": "shifted", "input": "winograd"}),
    ((8, 96, 40, 40), (96, 96, 3, 3), 1, {"forward": "winograd", "weight": "winograd", "input": "winograd"}),
    ((8, 128, 28, 28), (128, 128, 3, 3), 1, {"forward": "winograd", "weight": "shifted", "input": "winograd"}),
    ((8, 80, 40, 40), (80, 80, 3, 3), 1, {"forward": "winograd", "weight": "shifted", "input": "winograd"}),
    ((8, 128, 40, 40), (128, 128, 3, 3), 1, {"forward": "winograd", "weight": "winograd", "input": "winograd"}),
    # 1-d: dx is the stride-1 correlation of δ with the flipped kernel (im2col's forward on
    # δ, _same_conv_pays) where C_in >= C_out, else the shifted kernel's stacked δ
    ((16, 64, 4096), (64, 64, 3), 1, {"forward": "im2col", "weight": "im2col", "input": "im2col"}),
    ((16, 32, 4096), (64, 32, 3), 1, {"forward": "im2col", "weight": "im2col", "input": "shifted"}),
    ((16, 64, 4096), (128, 64, 3), 2, {"forward": "im2col", "weight": "im2col", "input": "shifted"}),
    ((8, 256, 56, 56), (64, 256, 1, 1), 1, {"forward": "im2col", "weight": "im2col", "input": "im2col"}),
    # k divisible by s with enough rows: the stride phases compute dx
    ((8, 64, 64, 64), (128, 64, 4, 4), 2, {"forward": "shifted", "weight": "shifted", "input": "im2col"}),
])
def test_what_auto_picks(shape, kernel, stride, expected):
    """The rule of ``_shifted_pays`` on the suite's layers (docs/performance.md)."""
    x = np.zeros((1,) + shape[1:])
    w = np.zeros(kernel)
    geom = _args.conv_call(x, w, None, stride, (kernel[-1] - 1) // 2, 1, 1, "zeros").geom
    got = {p: select_algorithm("auto", geom, w.shape, kernel_pass=p) for p in expected}
    assert got == expected


@pytest.mark.parametrize("channels, mult, size, kernel, stride, expected", [
    # stride 1, multiplier 1: dx is the depthwise forward of δ (im2col's full convolution)
    (32, 1, 112, 3, 1, ("depthwise", "depthwise", "im2col")),       # the suite's layer
    (32, 2, 56, 3, 1, ("depthwise", "shifted", "shifted")),         # channel multiplier 2
    (32, 4, 56, 3, 1, ("shifted", "shifted", "shifted")),           # channel multiplier 4
    (96, 1, 56, 5, 1, ("shifted", "depthwise", "im2col")),          # 25 taps
    (64, 1, 112, 3, 2, ("depthwise", "depthwise", "depthwise")),    # strided: no split
    (32, 2, 8, 3, 1, ("depthwise", "depthwise", "depthwise")),      # small image: no split
])
def test_what_auto_picks_for_depthwise_layers(channels, mult, size, kernel, stride, expected):
    """``_depthwise_pays`` (and ``_same_conv_pays`` for dx): forward, weight and input
    gradient of a groups = C_in layer."""
    x = np.zeros((1, channels, size, size))
    w = np.zeros((channels * mult, 1, kernel, kernel))
    geom = _args.conv_call(x, w, None, stride, kernel // 2, 1, channels, "zeros").geom
    got = tuple(select_algorithm("auto", geom, w.shape, kernel_pass=p) for p in ("forward", "weight", "input"))
    assert got == expected


@pytest.mark.parametrize("kernel, padding, dilation", [
    (3, 1, 1), (5, 2, 1), (3, ((2, 0), (1, 1)), 1), (3, 2, 2), (3, 0, 1)])
def test_depthwise_input_gradient_is_the_depthwise_forward_of_delta(kernel_matches_torch, rng,
                                                                    kernel, padding, dilation):
    """"auto" computes the dx of a stride-1 depthwise layer (multiplier 1) as the depthwise
    forward of δ with the flipped kernel (``_same_conv_pays``): against torch autograd,
    float64, 1e-12 of the scale, through conv_grad and the input gradient alone."""
    x = rng.standard_normal((2, 6, 11, 9))
    w = rng.standard_normal((6, 1, kernel, kernel))
    geom = _args.conv_call(x, w, None, 1, padding, dilation, 6, "zeros").geom
    assert select_algorithm("auto", geom, w.shape, kernel_pass="input") == "im2col"
    kernel_matches_torch(x, w, "auto", padding=padding, dilation=dilation, groups=6)


@pytest.mark.parametrize("kernel, padding, dilation", [
    (3, 1, 1), (5, 2, 1), (3, ((2, 0), (1, 1)), 1), (3, 2, 2), (3, 0, 1), ((1, 3), ((0, 0), (2, 1)), 1)])
def test_depthwise_gradients_in_one_sweep(torch, rng, monkeypatch, kernel, padding, dilation):
    """``conv_grad`` of a stride-1 depthwise layer (multiplier 1) computes dx, dW and db in
    one sweep over the samples (``depthwise_backward``, δ's padded images also dW's δ_ext):
    float64 against torch autograd within 1e-12 of each result's scale; dx and dW the same
    bits as computed apart (the same operations), db within 1e-14 of Σ|δ| (another order
    of the same sum); float32 db within 8 ulps of Σ|δ| per channel, as ``bias_grad``."""
    from npconv import _depthwise, convolution

    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal((3, 5, 13, 10))
    w = rng.standard_normal((5, 1) + kernel)
    pairs = ((padding, padding),) * 2 if isinstance(padding, int) else padding
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    xp = torch.nn.functional.pad(xt, tuple(p for pair in reversed(pairs) for p in pair))
    yt = torch.nn.functional.conv2d(xp, wt, bt, dilation=dilation, groups=5)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    calls = []
    monkeypatch.setattr(convolution, "depthwise_backward",
                        lambda *args: calls.append(1) or _depthwise.depthwise_backward(*args))
    grads = npconv.conv_grad(dy, x, w, padding=padding, dilation=dilation, groups=5)
    assert calls == [1]
    for got, want in ((grads.dx, xt.grad), (grads.dweight, wt.grad), (grads.dbias, bt.grad)):
        want = want.numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    scale = np.abs(dy).sum(axis=(0, 2, 3))
    monkeypatch.setattr(convolution, "_same_conv_sweep", lambda *args: None)
    apart = npconv.conv_grad(dy, x, w, padding=padding, dilation=dilation, groups=5)
    np.testing.assert_array_equal(grads.dx, apart.dx)
    np.testing.assert_array_equal(grads.dweight, apart.dweight)
    assert np.all(np.abs(grads.dbias - apart.dbias) <= 1e-14 * scale)
    monkeypatch.undo()
    db32 = npconv.conv_grad(dy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                            padding=padding, dilation=dilation, groups=5).dbias
    assert db32.dtype == np.float32
    assert np.all(np.abs(db32 - dy.sum(axis=(0, 2, 3))) <= 8 * np.finfo(np.float32).eps * scale)


def test_depthwise_gradients_apart_where_dx_is_not_a_forward(rng, monkeypatch):
    """The sweep needs dx as the depthwise forward of δ: not for a multiplier of 2, a stride,
    a 1x1 kernel, reflect padding or an explicit algorithm."""
    from npconv import convolution

    monkeypatch.setattr(convolution, "depthwise_backward", lambda *args: pytest.fail("swept"))
    x = rng.standard_normal((2, 4, 9, 9))
    for w, kwargs in [(rng.standard_normal((8, 1, 3, 3)), dict(padding=1)),
                      (rng.standard_normal((4, 1, 3, 3)), dict(padding=1, stride=2)),
                      (rng.standard_normal((4, 1, 1, 1)), dict()),
                      (rng.standard_normal((4, 1, 3, 3)), dict(padding=1, padding_mode="reflect")),
                      (rng.standard_normal((4, 1, 3, 3)), dict(padding=1, algorithm="depthwise"))]:
        y = npconv.conv(x, w, groups=4, **kwargs)
        grads = npconv.conv_grad(np.ones_like(y), x, w, groups=4, **kwargs)
        assert grads.dbias.shape == (w.shape[0],)


@pytest.mark.parametrize("mult, kernel, dilation", [(2, 3, 1), (3, (3, 1), 1), (1, 5, 1), (2, 3, 2)])
def test_depthwise_layers_on_the_split(kernel_matches_torch, rng, monkeypatch, mult, kernel, dilation):
    """Depthwise layers that "auto" gives to the shifted kernel's first-dim split (a GEMM per
    channel with k_1·M rows) match torch, forward and gradients."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal((2, 3, 24, 30))
    w = rng.standard_normal((3 * mult, 1) + kernel)
    geom = _geometry(x, w, 1, 2, dilation, 3)
    monkeypatch.setattr(sh, "TILE_BYTES", 0)            # one sample per tile: the split
    assert sh.splits_first_dim(geom, 3, 3 * mult)
    kernel_matches_torch(x, w, "auto", padding=2, dilation=dilation, groups=3)


@pytest.mark.parametrize("algorithm", ["shifted", "im2row"])
def test_dx_method_is_an_im2col_option(algorithm):
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match="dx_method"):
        npconv.conv_grad(np.zeros((1, 2, 6, 6)), x, np.zeros((2, 2, 3, 3)), padding=1,
                         algorithm=algorithm, dx_method="fold")


def test_k_by_1_kernel_reads_the_images(monkeypatch):
    """A k x 1 kernel's X̃_0 (one inner tap) is a slice of the phase images, not a copy, on
    the wrapped layout too (no offset of the last dim wraps), over the input's rows only."""
    monkeypatch.setattr(sh, "TILE_BYTES", 0)
    x = np.random.default_rng(0).standard_normal((1, 4, 40, 40))
    geom = _geometry(x, np.zeros((4, 4, 3, 1)), 1, ((1, 1), (0, 0)))
    lay = sh.layout(geom, "zeros", wrap=True)
    assert lay.wrap == ((), ()) and lay.dense
    inner = sh._row_split(geom, lay, sh._column_bytes(4, 4, (3, 1), 8))
    images = sh.phase_images(x, geom, lay, "zeros")
    ((_, reach, x0),) = sh._inner_cols(images, geom, inner, lay, slice(0, geom.out_size[0]), "zeros")
    assert np.shares_memory(x0, images)
    # the rows of X̃_0 that offsets 0..2 read for output rows 0..39 are 0..41; 0 and 41 are
    # the zero padding, left out
    assert reach == slice(1, 41) and x0.shape[-1] == 40 * lay.row[0]


def test_one_tap_kernel_reads_the_images():
    """A 1x1 stride-2 kernel's X̃ of a one-sample tile is a slice of the phase images, not a
    copy (``_columns``); with two samples it is the unfold's copy."""
    x = np.random.default_rng(0).standard_normal((1, 4, 12, 12))
    geom = _geometry(x, np.zeros((6, 4, 1, 1)), 2, 0)
    lay = sh.layout(geom, "zeros", wrap=True)
    rows = slice(0, geom.out_size[0])
    images = sh.phase_images(x, geom, lay, "zeros")
    cols = sh._columns(images, geom, lay, rows)
    assert np.shares_memory(cols, images)
    np.testing.assert_array_equal(cols.reshape(4, 6, -1)[:, :, :6], x[0, :, ::2, ::2])
    two = sh.phase_images(np.concatenate([x, x]), geom, lay, "zeros")
    assert not np.shares_memory(sh._columns(two, geom, lay, rows), two)
