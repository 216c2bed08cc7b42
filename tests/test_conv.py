"""Conformance of npconv.conv / conv1d-3d / conv_grad against PyTorch, the loop reference,
finite differences and the adjoint identity.

Tolerances (float64): 1e-12 of the result's largest magnitude. Each output is a
sum of at most a few hundred products, so two correct float64 implementations
differ by a few ulps (~1e-16) of that scale; 1e-12 leaves a 1000x margin while
any indexing error shows up at O(1) of the scale.

PyTorch has no asymmetric padding, no 'same' with stride > 1 and no padding
modes in F.conv*: all three are emulated as nn.Conv does it, F.pad(x, mode)
followed by a convolution with padding 0 -- which is exactly the semantic.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npconv
from npconv import reference as ref

TORCH_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
               "circular": "circular"}
MODES = tuple(TORCH_MODES)


# --------------------------------------------------------------------------
# the oracle side: explicit padding pairs and a PyTorch emulation
# --------------------------------------------------------------------------
def same_pairs(in_size, kernel, stride, dilation):
    """The contract's 'same': O = ceil(S/s), total padding split with the extra at the END."""
    pairs = []
    for size, k, s, dil in zip(in_size, kernel, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + dil * (k - 1) + 1 - size, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def explicit_pairs(padding, d, in_size, kernel, stride, dilation):
    """Any padding form -> d (lo, hi) pairs, written independently of npconv."""
    stride = (stride,) * d if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * d if isinstance(dilation, int) else tuple(dilation)
    if padding == "valid":
        return ((0, 0),) * d
    if padding == "same":
        return same_pairs(in_size, kernel, stride, dilation)
    if isinstance(padding, int):
        return ((padding, padding),) * d
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def torch_pad_arg(pairs):
    """(lo, hi) pairs in dim order -> F.pad's flat tuple, LAST dim first."""
    return tuple(v for lo, hi in reversed(pairs) for v in (lo, hi))


def torch_conv(torch, x, weight, bias, stride, pairs, dilation, groups, mode):
    """PyTorch conv with any (lo, hi) padding and mode: F.pad then conv with padding 0.

    Takes and returns torch tensors (batched), so autograd can run through it.
    """
    d = weight.dim() - 2
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
            3: torch.nn.functional.conv3d}[d]
    xp = torch.nn.functional.pad(x, torch_pad_arg(pairs), mode=TORCH_MODES[mode])
    return conv(xp, weight, bias, stride=stride, padding=0, dilation=dilation, groups=groups)


# --------------------------------------------------------------------------
# the configuration grid
# --------------------------------------------------------------------------
class Config(NamedTuple):
    d: int
    batch: int | None      # None: unbatched input
    c_in: int
    c_out: int
    groups: int
    size: tuple
    kernel: tuple
    stride: object
    dilation: object
    padding: object
    mode: str
    bias: bool

    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.mode)

    def pairs(self):
        return explicit_pairs(self.padding, self.d, self.size, self.kernel,
                              _tup(self.stride, self.d), _tup(self.dilation, self.d))

    def arrays(self, rng):
        x_shape = ((self.batch,) if self.batch else ()) + (self.c_in,) + self.size
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal((self.c_out, self.c_in // self.groups) + self.kernel)
        b = rng.standard_normal(self.c_out) if self.bias else None
        return x, w, b


def _tup(value, d):
    return (value,) * d if isinstance(value, int) else tuple(value)


SIZES = {1: (11,), 2: (7, 6), 3: (5, 6, 5)}
KERNELS = {1: (3,), 2: (3, 2), 3: (2, 3, 3)}
# (C_in, C_out, groups): plain, grouped, depthwise, depthwise with channel multiplier 3
CHANNELS = [(3, 4, 1), (4, 6, 2), (4, 4, 4), (2, 6, 2)]


def padding_forms(d):
    return [0, 1, (1, 0, 2)[:d], ((0, 2), (1, 0), (2, 1))[:d], "valid", "same"]


def stride_forms(d):
    return [1, 2, (2, 1, 3)[:d]]


def dilation_forms(d):
    return [1, 2, (1, 2, 1)[:d]]


def _grid():
    configs = []
    # (a) every padding form x every mode, cycling the other axes through their values
    for d in (1, 2, 3):
        for i, (padding, mode) in enumerate(itertools.product(padding_forms(d), MODES)):
            c_in, c_out, groups = CHANNELS[i % len(CHANNELS)]
            configs.append(Config(
                d, (2, None, 3)[i % 3], c_in, c_out, groups, SIZES[d], KERNELS[d],
                stride_forms(d)[i % 3], dilation_forms(d)[(i // 3) % 3], padding, mode,
                bias=i % 2 == 0))
    # (b) every stride x dilation x groups form, asymmetric or 'same' padding
    for d in (1, 2, 3):
        for i, (stride, dilation, channels) in enumerate(itertools.product(
                stride_forms(d), dilation_forms(d), CHANNELS)):
            padding = ("same", ((0, 2), (1, 0), (2, 1))[:d])[i % 2]
            configs.append(Config(
                d, (1, 2, None)[i % 3], *channels, SIZES[d], KERNELS[d], stride, dilation,
                padding, MODES[i % 4], bias=i % 3 != 0))
    # (c) kernel 1, kernel equal to the padded input, size-1 output
    configs += [
        Config(2, 2, 3, 2, 1, (5, 4), (1, 1), 1, 1, 0, "zeros", True),
        Config(2, 1, 2, 2, 1, (5, 4), (5, 4), 1, 1, 0, "zeros", True),
        Config(1, 2, 2, 3, 1, (4,), (3,), 1, 2, ((1, 0),), "reflect", False),
        Config(3, 1, 1, 1, 1, (3, 3, 3), (3, 3, 3), 3, 1, "same", "circular", True),
        Config(2, 2, 2, 2, 1, (6, 6), (2, 2), 4, 1, "same", "replicate", True),
        # 1x1 kernels without padding (the pointwise GEMM path), plain and grouped
        Config(1, 2, 4, 3, 1, (11,), (1,), 2, 1, 0, "zeros", True),
        Config(2, None, 4, 6, 2, (7, 6), (1, 1), (2, 3), 1, "valid", "reflect", False),
        Config(3, 2, 4, 2, 2, (5, 6, 5), (1, 1, 1), (1, 2, 3), 2, 0, "circular", True),
    ]
    return configs


CONFIGS = _grid()


def config_id(cfg):
    return (f"d{cfg.d}-N{cfg.batch}-c{cfg.c_in}x{cfg.c_out}g{cfg.groups}-k{cfg.kernel}"
            f"-s{cfg.stride}-dil{cfg.dilation}-p{cfg.padding}-{cfg.mode}-b{int(cfg.bias)}"
            ).replace(" ", "")


def torch_forward_and_grads(torch, cfg, x, w, b, dy):
    """PyTorch float64 forward and autograd of sum(y * dy), on batched tensors."""
    xb = x[None] if cfg.batch is None else x
    xt = torch.from_numpy(xb).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True) if b is not None else None
    yt = torch_conv(torch, xt, wt, bt, _tup(cfg.stride, cfg.d), cfg.pairs(),
                    _tup(cfg.dilation, cfg.d), cfg.groups, cfg.mode)
    y = yt.detach().numpy()
    if dy is None:
        return (y[0] if cfg.batch is None else y), None
    dyb = dy[None] if cfg.batch is None else dy
    (yt * torch.from_numpy(dyb)).sum().backward()
    dx = xt.grad.numpy()
    grads = (dx[0] if cfg.batch is None else dx, wt.grad.numpy(),
             bt.grad.numpy() if bt is not None else None)
    return (y[0] if cfg.batch is None else y), grads


# --------------------------------------------------------------------------
# forward and gradients over the grid
# --------------------------------------------------------------------------
# "auto" picks the pointwise / depthwise kernels where they apply; "im2col" is the
# general path and must be right for every configuration too.
ALGORITHMS = ("auto", "im2col")


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_forward_matches_torch_and_reference(torch, rng, assert_close, gemm_kernels, cfg):
    x, w, b = cfg.arrays(rng)
    y = npconv.conv(x, w, b, **cfg.kwargs())
    expected, _ = torch_forward_and_grads(torch, cfg, x, w, b, None)
    assert y.dtype == np.float64
    assert_close(y, expected)
    assert_close(y, ref.conv(x, w, b, **cfg.kwargs()))
    for algorithm in gemm_kernels(cfg.groups):
        assert_close(npconv.conv(x, w, b, **cfg.kwargs(), algorithm=algorithm), expected)
    # the d-specific entry point is the same function with a check on d
    conv_nd = getattr(npconv, f"conv{cfg.d}d")
    np.testing.assert_array_equal(conv_nd(x, w, b, **cfg.kwargs()), y)


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_grads_match_torch_autograd(torch, rng, assert_close, gemm_kernels, cfg):
    x, w, b = cfg.arrays(rng)
    y_shape = npconv.conv(x, w, b, **cfg.kwargs()).shape
    dy = rng.standard_normal(y_shape)
    _, (dx_t, dw_t, db_t) = torch_forward_and_grads(torch, cfg, x, w, b, dy)
    grads = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias)
    assert isinstance(grads, npconv.ConvGrads)
    assert_close(grads.dx, dx_t)
    assert_close(grads.dweight, dw_t)
    if cfg.bias:
        assert_close(grads.dbias, db_t)
    else:
        assert grads.dbias is None
    # both input-gradient algorithms, under both kernels, agree with torch and each other
    for algorithm in ALGORITHMS:
        fold = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias, dx_method="fold",
                                algorithm=algorithm)
        full = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias,
                                dx_method="full_conv", algorithm=algorithm)
        assert_close(fold.dx, dx_t)
        assert_close(full.dx, fold.dx)
        np.testing.assert_array_equal(full.dweight, fold.dweight)
        assert_close(fold.dweight, dw_t)
    # every GEMM kernel, every pass, for every configuration
    for algorithm in gemm_kernels(cfg.groups):
        forced = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias, algorithm=algorithm)
        assert_close(forced.dx, dx_t)
        assert_close(forced.dweight, dw_t)
    # the phase decomposition, where it applies (a stride > 1, dilation 1)
    strides = (cfg.stride,) * cfg.d if isinstance(cfg.stride, int) else cfg.stride
    dilations = (cfg.dilation,) * cfg.d if isinstance(cfg.dilation, int) else cfg.dilation
    if max(strides) > 1 and max(dilations) == 1:
        phases = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias, dx_method="phases",
                                  algorithm="im2col")
        assert_close(phases.dx, dx_t)
    else:
        with pytest.raises(ValueError, match="dx_method"):
            npconv.conv_grad(dy, x, w, **cfg.kwargs(), dx_method="phases")


# Finite differences on a subset (every 7th config), batch 1: cost is 2 forwards per element.
FD_CONFIGS = CONFIGS[::7]


@pytest.mark.parametrize("cfg", FD_CONFIGS, ids=config_id)
def test_grads_match_finite_differences(rng, numerical_grad, assert_close, cfg):
    cfg = cfg._replace(batch=None if cfg.batch is None else 1)
    x, w, b = cfg.arrays(rng)
    kwargs = cfg.kwargs()
    dy = rng.standard_normal(npconv.conv(x, w, b, **kwargs).shape)
    grads = npconv.conv_grad(dy, x, w, **kwargs, bias=True)
    # f is linear in each argument, so central differences have no truncation error;
    # rounding error ~ 1e-16 * |f| / eps ~ 1e-10 here, hence rtol 1e-8 of the gradient scale.
    num_dx = numerical_grad(lambda v: np.sum(npconv.conv(v, w, b, **kwargs) * dy), x)
    num_dw = numerical_grad(lambda v: np.sum(npconv.conv(x, v, b, **kwargs) * dy), w)
    b0 = np.zeros(cfg.c_out)
    num_db = numerical_grad(lambda v: np.sum(npconv.conv(x, w, v, **kwargs) * dy), b0)
    assert_close(grads.dx, num_dx, rtol=1e-8)
    assert_close(grads.dweight, num_dw, rtol=1e-8)
    assert_close(grads.dbias, num_db, rtol=1e-8)


@pytest.mark.parametrize("cfg", CONFIGS[::3], ids=config_id)
def test_grads_match_reference(rng, assert_close, cfg):
    x, w, b = cfg.arrays(rng)
    dy = rng.standard_normal(npconv.conv(x, w, b, **cfg.kwargs()).shape)
    got = npconv.conv_grad(dy, x, w, **cfg.kwargs())
    expected = ref.conv_grad(dy, x, w, **cfg.kwargs())
    for g, e in zip(got, expected):
        assert_close(g, e)


# --------------------------------------------------------------------------
# 'same' semantics
# --------------------------------------------------------------------------
@pytest.mark.parametrize("size, k, s, dil", [
    (7, 3, 1, 1), (6, 2, 1, 1), (7, 4, 1, 1), (7, 3, 2, 1), (8, 3, 2, 1), (8, 2, 3, 1),
    (9, 3, 2, 2), (5, 1, 3, 1), (4, 5, 1, 1), (10, 4, 4, 1), (6, 3, 6, 2),
])
def test_same_padding_size_and_extra_at_end(torch, rng, assert_close, size, k, s, dil):
    x = rng.standard_normal((1, 1, size))
    w = rng.standard_normal((1, 1, k))
    y = npconv.conv(x, w, stride=s, dilation=dil, padding="same")
    assert y.shape[-1] == math.ceil(size / s)
    total = max((math.ceil(size / s) - 1) * s + dil * (k - 1) + 1 - size, 0)
    lo, hi = total // 2, total - total // 2   # SAME_UPPER: hi >= lo
    expected = torch.nn.functional.conv1d(
        torch.nn.functional.pad(torch.from_numpy(x), (lo, hi)), torch.from_numpy(w),
        stride=s, dilation=dil).numpy()
    assert_close(y, expected)
    # it is also exactly the explicit (lo, hi) form
    np.testing.assert_array_equal(
        y, npconv.conv(x, w, stride=s, dilation=dil, padding=((lo, hi),)))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("d", [1, 2, 3])
def test_same_stride1_equals_torch_same(torch, rng, assert_close, d):
    x = rng.standard_normal((2, 2) + SIZES[d])
    w = rng.standard_normal((3, 2) + (4, 3, 2)[:d])
    conv = getattr(torch.nn.functional, f"conv{d}d")
    expected = conv(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                    dilation=(2, 1, 1)[:d]).numpy()
    assert_close(npconv.conv(x, w, padding="same", dilation=(2, 1, 1)[:d]), expected)


# --------------------------------------------------------------------------
# adjoint identity, bias flag, determinism, workspace limit
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.mode == "zeros"][::2], ids=config_id)
def test_adjoint_identity(rng, cfg):
    """<conv(x, w), dy> = <x, dx> = <w, dw> (no bias; the conv is bilinear in x and w)."""
    x, w, _ = cfg.arrays(rng)
    y = npconv.conv(x, w, **cfg.kwargs())
    dy = rng.standard_normal(y.shape)
    dx, dw, db = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=False)
    assert db is None
    inner = np.sum(y * dy)
    # rounding of each inner product is bounded by ~1e-16 * sum of |terms|
    scale = np.sum(np.abs(y * dy)) + np.sum(np.abs(x * dx)) + np.sum(np.abs(w * dw))
    assert abs(inner - np.sum(x * dx)) <= 1e-12 * scale
    assert abs(inner - np.sum(w * dw)) <= 1e-12 * scale


def test_bias_false_gives_none(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 4, 4))
    assert npconv.conv_grad(dy, x, w, bias=False).dbias is None
    assert npconv.conv_grad(dy, x, w, bias=False, dx_method="full_conv").dbias is None
    db = npconv.conv_grad(dy, x, w).dbias
    assert db.shape == (4,)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-14)


@pytest.mark.parametrize("cfg", CONFIGS[::11], ids=config_id)
def test_deterministic(rng, cfg):
    x, w, b = cfg.arrays(rng)
    y1 = npconv.conv(x, w, b, **cfg.kwargs())
    y2 = npconv.conv(x, w, b, **cfg.kwargs())
    np.testing.assert_array_equal(y1, y2)
    dy = rng.standard_normal(y1.shape)
    for method in ("auto", "fold", "full_conv"):
        g1 = npconv.conv_grad(dy, x, w, **cfg.kwargs(), dx_method=method)
        g2 = npconv.conv_grad(dy, x, w, **cfg.kwargs(), dx_method=method)
        for a, c in zip(g1, g2):
            np.testing.assert_array_equal(a, c)


def _sample_workspace_bound(cfg, x, w):
    """An upper bound (bytes) on one sample's unfolded buffer in any path: at most
    max(C_in, C_out)·prod(k) rows by (padded size) columns, every padding below
    being smaller than 3·k per side."""
    c_out, c_in_g = w.shape[:2]
    positions = 1
    for size, k in zip(x.shape[-cfg.d:], w.shape[2:]):
        positions *= size + 6 * k
    return x.itemsize * max(c_in_g * cfg.groups, c_out) * int(np.prod(w.shape[2:])) * positions


WORKSPACE_CONFIGS = [
    Config(2, 5, 3, 4, 1, (9, 8), (3, 3), 1, 1, 1, "zeros", True),
    Config(2, 3, 4, 6, 2, (9, 7), (3, 2), 2, (2, 1), "same", "reflect", True),
    Config(1, 4, 2, 4, 2, (13,), (3,), 2, 1, ((2, 1),), "circular", True),
    Config(3, 3, 2, 2, 1, (5, 6, 4), (2, 3, 2), 1, 1, 1, "replicate", True),
    Config(2, 3, 4, 8, 4, (9, 8), (3, 3), 1, 1, 1, "zeros", True),          # depthwise
    Config(2, 4, 6, 4, 2, (9, 8), (1, 1), 2, 1, 0, "zeros", True),          # 1x1, strided
    Config(2, 3, 2, 3, 1, (48, 48), (3, 3), 1, 1, 1, "zeros", True),        # one sample per tile
]


def _conv_and_grads(x, w, b, dy, cfg):
    y = npconv.conv(x, w, b, **cfg.kwargs())
    return y, {m: npconv.conv_grad(dy, x, w, **cfg.kwargs(), dx_method=m)
               for m in ("auto", "fold", "full_conv")}


@pytest.mark.parametrize("batches", [1, 2.5, None])
@pytest.mark.parametrize("cfg", WORKSPACE_CONFIGS, ids=config_id)
def test_workspace_limit_does_not_change_results(rng, cfg, batches):
    """No limit that holds a whole GEMM tile of samples may change a bit.

    The GEMMs work on tiles of samples fixed by the shapes alone
    (``convolution.tile_samples``) and sums over tiles run in tile order, so a
    limit can only matter by splitting the rows of a tile (tested below). The
    limits here hold ``batches`` whole batches, so every tile fits.
    """
    x, w, b = cfg.arrays(rng)
    default = npconv.get_workspace_limit()
    dy = rng.standard_normal(npconv.conv(x, w, **cfg.kwargs()).shape)
    y, grads = _conv_and_grads(x, w, b, dy, cfg)
    limit = default if batches is None else int(batches * len(x) * _sample_workspace_bound(cfg, x, w))
    with npconv.workspace_limit(limit):
        assert npconv.get_workspace_limit() == limit
        y_limited, grads_limited = _conv_and_grads(x, w, b, dy, cfg)
    np.testing.assert_array_equal(y_limited, y)
    for method, expected in grads.items():
        for name, g, e in zip(expected._fields, grads_limited[method], expected):
            np.testing.assert_array_equal(g, e, err_msg=f"{name}, dx_method={method!r}")
    assert npconv.get_workspace_limit() == default
    npconv.set_workspace_limit(limit)
    try:
        assert npconv.get_workspace_limit() == limit
        np.testing.assert_array_equal(npconv.conv(x, w, b, **cfg.kwargs()), y)
        got = npconv.conv_grad(dy, x, w, **cfg.kwargs())   # default dx_method="auto"
        for name, g, e in zip(got._fields, got, grads["auto"]):
            np.testing.assert_array_equal(g, e, err_msg=name)
    finally:
        npconv.set_workspace_limit(default)


@pytest.mark.parametrize("limit", [64, 1024, 4096 + 7])
@pytest.mark.parametrize("cfg", WORKSPACE_CONFIGS, ids=config_id)
def test_workspace_limit_below_one_sample(rng, cfg, limit, assert_close):
    """A limit smaller than one tile's workspace splits the output rows of each
    tile. The GEMMs then have other shapes (BLAS may pick other kernels) and
    overlapping input rows are summed in another order, so the results equal the
    unchunked ones to rounding: 1e-13 of the result's scale in float64 (a sum of
    at most a few hundred terms, each rounded to 2^-53)."""
    x, w, b = cfg.arrays(rng)
    y0 = npconv.conv(x, w, b, **cfg.kwargs())
    dy = rng.standard_normal(y0.shape)
    y, grads = _conv_and_grads(x, w, b, dy, cfg)
    with npconv.workspace_limit(limit):
        y_limited, grads_limited = _conv_and_grads(x, w, b, dy, cfg)
    assert_close(y_limited, y, rtol=1e-13)
    for method, expected in grads.items():
        for name, g, e in zip(expected._fields, grads_limited[method], expected):
            assert_close(g, e, rtol=1e-13, err_msg=f"{name}, dx_method={method!r}")


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1k", None, True])
def test_workspace_limit_rejects_bad_values(bad):
    default = npconv.get_workspace_limit()
    with pytest.raises((ValueError, TypeError)):
        npconv.set_workspace_limit(bad)
    with pytest.raises((ValueError, TypeError)):
        with npconv.workspace_limit(bad):
            pass
    assert npconv.get_workspace_limit() == default


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------
F32_CONFIGS = [
    Config(2, 2, 3, 4, 1, (9, 8), (3, 3), 1, 1, 1, "zeros", True),
    Config(2, 2, 4, 8, 4, (9, 8), (3, 3), 2, 1, "same", "reflect", True),
    Config(1, 3, 4, 6, 2, (20,), (5,), 2, 2, ((3, 1),), "circular", True),
    Config(3, 2, 3, 2, 1, (5, 6, 5), (3, 3, 3), 1, 1, 1, "replicate", True),
]


def _abs_scale(cfg, x, w, dy):
    """Per-element sums of |terms|: conv(|x|, |w|) and the same for the two gradients.

    Every result element is a dot product; its float32 rounding error is a few ulps
    of this sum (GEMM blocking + pairwise-ish summation), whatever cancellation
    the signed sum has.
    """
    ax, aw, ady = (np.abs(v).astype(np.float64) for v in (x, w, dy))
    kw = cfg.kwargs()
    y_scale = ref.conv(ax, aw, None, **kw)
    dx_scale, dw_scale, db_scale = ref.conv_grad(ady, ax, aw, **kw)
    return y_scale, dx_scale, dw_scale, db_scale


@pytest.mark.parametrize("cfg, algorithm", [
    (cfg, algorithm) for cfg in F32_CONFIGS for algorithm in ("auto", "im2col", "shifted", "im2row")
    if algorithm != "im2row" or cfg.groups == 1])   # im2row: groups=1 only
def test_float32_matches_torch_float32(torch, rng, cfg, algorithm):
    """Every GEMM kernel (auto's pick, and each forced) in float32 against torch's float32."""
    x, w, b = (None if v is None else v.astype(np.float32) for v in cfg.arrays(rng))
    y = npconv.conv(x, w, b, **cfg.kwargs(), algorithm=algorithm)
    assert y.dtype == np.float32
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = npconv.conv_grad(dy, x, w, **cfg.kwargs(), algorithm=algorithm)
    assert all(g.dtype == np.float32 for g in grads)
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    yt = torch_conv(torch, xt, wt, bt, _tup(cfg.stride, cfg.d), cfg.pairs(),
                    _tup(cfg.dilation, cfg.d), cfg.groups, cfg.mode)
    (yt * torch.from_numpy(dy)).sum().backward()
    y_scale, dx_scale, dw_scale, db_scale = _abs_scale(cfg, x, w, dy)
    y_scale = y_scale + np.abs(b).reshape((-1,) + (1,) * cfg.d)
    # 8 float32 ulps (eps = 1.19e-7) of the sum of |terms| per element: both sides are
    # within ~2-4 ulps of that (blocked sums of <= 300 terms), a wrong index is O(1).
    eps = np.finfo(np.float32).eps
    for got, expected, scale in ((y, yt, y_scale), (grads.dx, xt.grad, dx_scale),
                                 (grads.dweight, wt.grad, dw_scale),
                                 (grads.dbias, bt.grad, db_scale)):
        diff = np.abs(got.astype(np.float64) - expected.detach().numpy().astype(np.float64))
        assert np.all(diff <= 8 * eps * scale + 1e-30), float(np.max(diff / (eps * scale)))


@pytest.mark.parametrize("cfg", F32_CONFIGS[:2], ids=config_id)
def test_float16_computed_in_float32(rng, cfg):
    x, w, b = (None if v is None else v.astype(np.float16) for v in cfg.arrays(rng))
    y = npconv.conv(x, w, b, **cfg.kwargs())
    assert y.dtype == np.float16
    f32 = [v.astype(np.float32) for v in (x, w, b)]
    np.testing.assert_array_equal(y, npconv.conv(*f32, **cfg.kwargs()).astype(np.float16))
    dy = rng.standard_normal(y.shape).astype(np.float16)
    grads = npconv.conv_grad(dy, x, w, **cfg.kwargs())
    expected = npconv.conv_grad(dy.astype(np.float32), f32[0], f32[1], **cfg.kwargs())
    for g, e in zip(grads, expected):
        assert g.dtype == np.float16
        np.testing.assert_array_equal(g, e.astype(np.float16))


def test_mixed_float32_float64_gives_float64(rng):
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4).astype(np.float32)
    y = npconv.conv(x, w, b, padding=1)
    assert y.dtype == np.result_type(x, w) == np.float64
    np.testing.assert_array_equal(
        y, npconv.conv(x.astype(np.float64), w, b.astype(np.float64), padding=1))
    dy = rng.standard_normal(y.shape)
    grads = npconv.conv_grad(dy, x, w, padding=1)
    assert grads.dx.dtype == grads.dweight.dtype == grads.dbias.dtype == np.float64
    # float32 weight with float64 x
    assert npconv.conv(x.astype(np.float64), w.astype(np.float32)).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex128, object])
@pytest.mark.parametrize("which", ["x", "weight", "bias", "dy"])
def test_non_float_dtypes_raise_type_error(rng, dtype, which):
    arrays = {"x": rng.standard_normal((1, 2, 5, 5)), "weight": rng.standard_normal((3, 2, 3, 3)),
              "bias": rng.standard_normal(3), "dy": rng.standard_normal((1, 3, 3, 3))}
    arrays[which] = arrays[which].astype(dtype)
    if which == "dy":
        with pytest.raises(TypeError, match=r"\bdy\b"):
            npconv.conv_grad(arrays["dy"], arrays["x"], arrays["weight"])
        return
    with pytest.raises(TypeError, match=rf"\b{which}\b"):
        npconv.conv(arrays["x"], arrays["weight"], arrays["bias"])
    if which != "bias":
        with pytest.raises(TypeError, match=rf"\b{which}\b"):
            npconv.conv_grad(arrays["dy"], arrays["x"], arrays["weight"])


# --------------------------------------------------------------------------
# memory layouts and no mutation
# --------------------------------------------------------------------------
def _layouts(a, rng):
    """The same values as ``a`` in several memory layouts."""
    big = np.zeros(tuple(2 * s for s in a.shape))
    big[tuple(slice(None, None, 2) for _ in a.shape)] = a
    yield "strided", big[tuple(slice(None, None, 2) for _ in a.shape)]
    yield "fortran", np.asfortranarray(a)
    flipped = np.ascontiguousarray(a[(Ellipsis, slice(None, None, -1))])
    yield "negative-stride", flipped[(Ellipsis, slice(None, None, -1))]
    yield "transposed", np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)


@pytest.mark.parametrize("cfg", [
    Config(2, 2, 4, 6, 2, (7, 6), (3, 2), (2, 1), 1, ((1, 0), (0, 2)), "reflect", True),
    Config(1, 3, 2, 2, 1, (9,), (3,), 1, 2, "same", "circular", True),
    Config(3, 2, 2, 4, 2, (4, 5, 4), (2, 2, 3), 1, 1, 1, "zeros", True),
], ids=config_id)
def test_any_memory_layout_same_result_and_inputs_untouched(rng, cfg):
    x, w, b = cfg.arrays(rng)
    y = npconv.conv(x, w, b, **cfg.kwargs())
    dy = rng.standard_normal(y.shape)
    grads = npconv.conv_grad(dy, x, w, **cfg.kwargs())
    for (name_x, xl), (name_w, wl), (name_dy, dyl) in zip(
            _layouts(x, rng), _layouts(w, rng), _layouts(dy, rng)):
        copies = [v.copy() for v in (xl, wl, dyl, b)]
        np.testing.assert_array_equal(npconv.conv(xl, wl, b, **cfg.kwargs()), y,
                                      err_msg=name_x)
        for method in ("auto", "fold", "full_conv"):
            got = npconv.conv_grad(dyl, xl, wl, **cfg.kwargs(), dx_method=method)
            expected = (grads if method == "auto"
                        else npconv.conv_grad(dy, x, w, **cfg.kwargs(), dx_method=method))
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e, err_msg=f"{name_x} {method}")
        for v, c in zip((xl, wl, dyl, b), copies):
            np.testing.assert_array_equal(v, c)  # inputs never modified


def test_broadcast_views(rng):
    """Zero-stride (broadcast, read-only) inputs give the materialised result."""
    x_row = rng.standard_normal((1, 3, 6, 6))
    x = np.broadcast_to(x_row, (4, 3, 6, 6))
    w = np.broadcast_to(rng.standard_normal((4, 1, 3, 3)), (4, 3, 3, 3))
    b = np.broadcast_to(np.float64(0.5), (4,))
    y = npconv.conv(x, w, b, padding=1, padding_mode="reflect")
    np.testing.assert_array_equal(
        y, npconv.conv(x.copy(), w.copy(), b.copy(), padding=1, padding_mode="reflect"))
    dy = np.broadcast_to(rng.standard_normal((1, 4, 6, 6)), (4, 4, 6, 6))
    got = npconv.conv_grad(dy, x, w, padding=1, padding_mode="reflect")
    expected = npconv.conv_grad(dy.copy(), x.copy(), w.copy(), padding=1, padding_mode="reflect")
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_read_only_inputs_and_outputs_writeable(rng):
    x = rng.standard_normal((2, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    x.flags.writeable = False
    w.flags.writeable = False
    y = npconv.conv(x, w, padding=1)
    assert y.flags.writeable
    grads = npconv.conv_grad(np.ones_like(y), x, w, padding=1)
    assert grads.dx.flags.writeable and grads.dweight.flags.writeable
    # a padding-free conv must not hand back a view of its input either
    y1 = npconv.conv(x, np.ones((2, 2, 1, 1)))
    assert not np.shares_memory(y1, x)


# --------------------------------------------------------------------------
# hypothesis: random configurations against the reference and PyTorch
# --------------------------------------------------------------------------
@st.composite
def conv_configs(draw):
    d = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    stride = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    dilation = tuple(draw(st.lists(st.integers(1, 2), min_size=d, max_size=d)))
    max_size = {1: 12, 2: 7, 3: 5}[d]
    # every size covers the dilated kernel, so any padding >= 0 gives output >= 1,
    # and every size >= 3 > pad allows reflect (pad < size) and circular (pad <= size)
    size = tuple(draw(st.integers(max(3, dl * (k - 1) + 1), max(max_size, dl * (k - 1) + 1)))
                 for k, dl in zip(kernel, dilation))
    form = draw(st.sampled_from(["int", "per-dim", "pairs", "valid", "same"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "per-dim":
        padding = tuple(draw(st.lists(st.integers(0, 2), min_size=d, max_size=d)))
    elif form == "pairs":
        padding = tuple(tuple(draw(st.lists(st.integers(0, 2), min_size=2, max_size=2)))
                        for _ in range(d))
    else:
        padding = form
    mode = draw(st.sampled_from(MODES))
    if padding == "same" and mode == "reflect":
        # 'same' can ask for pads >= size with large dilation; keep reflect legal
        pairs = same_pairs(size, kernel, stride, dilation)
        if any(max(p) >= s for p, s in zip(pairs, size)):
            mode = "zeros"
    batch = draw(st.sampled_from([None, 1, 2]))
    return Config(d, batch, c_in, c_out, groups, size, kernel, stride, dilation, padding,
                  mode, draw(st.booleans()))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(cfg=conv_configs(), seed=st.integers(0, 2**16))
def test_hypothesis_random_configs(torch, assert_close, gemm_kernels, cfg, seed):
    rng = np.random.default_rng(seed)
    x, w, b = cfg.arrays(rng)
    y = npconv.conv(x, w, b, **cfg.kwargs())
    assert_close(y, ref.conv(x, w, b, **cfg.kwargs()))
    dy = rng.standard_normal(y.shape)
    y_t, (dx_t, dw_t, db_t) = torch_forward_and_grads(torch, cfg, x, w, b, dy)
    assert_close(y, y_t)
    grads = npconv.conv_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias)
    assert_close(grads.dx, dx_t)
    assert_close(grads.dweight, dw_t)
    if cfg.bias:
        assert_close(grads.dbias, db_t)
    assert_close(npconv.conv_grad(dy, x, w, **cfg.kwargs(), dx_method="full_conv").dx,
                 grads.dx)
    # each GEMM kernel on its own (auto mixes them per pass)
    for algorithm in gemm_kernels(cfg.groups):
        assert_close(npconv.conv(x, w, b, **cfg.kwargs(), algorithm=algorithm), y_t)
        grads = npconv.conv_grad(dy, x, w, **cfg.kwargs(), algorithm=algorithm)
        assert_close(grads.dx, dx_t)
        assert_close(grads.dweight, dw_t)


# --------------------------------------------------------------------------
# errors: each names the offending argument
# --------------------------------------------------------------------------
X4 = np.zeros((2, 4, 6, 6))
W4 = np.zeros((6, 2, 3, 3))   # groups=2 fits X4


@pytest.mark.parametrize("call, exc, name", [
    (lambda: npconv.conv(np.zeros((6, 6)), W4, groups=2), ValueError, r"\bx\b"),             # ndim
    (lambda: npconv.conv(np.zeros((1, 2, 4, 6, 6)), W4, groups=2), ValueError, r"\bx\b"),
    (lambda: npconv.conv(X4, W4), ValueError, "weight.shape"),                           # C_in
    (lambda: npconv.conv(X4, np.zeros((6, 4, 3, 3)), groups=4), ValueError, "groups"),
    (lambda: npconv.conv(X4, np.zeros((5, 2, 3, 3)), groups=2), ValueError, "groups"),  # C_out
    (lambda: npconv.conv(X4, W4, groups=0), ValueError, "groups"),
    (lambda: npconv.conv(X4, W4, groups=2.0), ValueError, "groups"),
    (lambda: npconv.conv(X4, np.zeros((6, 2, 7, 3)), groups=2), ValueError, "kernel"),
    (lambda: npconv.conv(X4, W4, groups=2, dilation=4), ValueError, "kernel"),
    (lambda: npconv.conv(X4, W4, groups=2, stride=0), ValueError, "stride"),
    (lambda: npconv.conv(X4, W4, groups=2, stride=(1, -1)), ValueError, "stride"),
    (lambda: npconv.conv(X4, W4, groups=2, stride=(1, 1, 1)), ValueError, "stride"),
    (lambda: npconv.conv(X4, W4, groups=2, dilation=0), ValueError, "dilation"),
    (lambda: npconv.conv(X4, W4, groups=2, padding=-1), ValueError, "padding"),
    (lambda: npconv.conv(X4, W4, groups=2, padding=((0, -1), (0, 0))), ValueError, "padding"),
    (lambda: npconv.conv(X4, W4, groups=2, padding=(1, 1, 1)), ValueError, "padding"),
    (lambda: npconv.conv(X4, W4, groups=2, padding="full"), ValueError, "padding"),
    (lambda: npconv.conv(X4, W4, groups=2, padding_mode="symmetric"), ValueError,
     "padding_mode"),
    (lambda: npconv.conv(X4, W4, groups=2, padding=6, padding_mode="reflect"), ValueError,
     "reflect"),
    (lambda: npconv.conv(X4, W4, groups=2, padding=7, padding_mode="circular"), ValueError,
     "circular"),
    (lambda: npconv.conv(X4, W4, np.zeros(5), groups=2), ValueError, "bias"),
    (lambda: npconv.conv(X4, W4, np.zeros((6, 1)), groups=2), ValueError, "bias"),
    (lambda: npconv.conv2d(np.zeros((2, 4, 6)), np.zeros((6, 2, 3)), groups=2), ValueError,
     "weight"),
    (lambda: npconv.conv1d(X4, W4, groups=2), ValueError, "weight"),
    (lambda: npconv.conv3d(X4, W4, groups=2), ValueError, "weight"),
    (lambda: npconv.conv(X4, np.zeros((6, 2)), groups=2), ValueError, "weight"),
    (lambda: npconv.conv_grad(np.zeros((2, 6, 4, 3)), X4, W4, groups=2), ValueError, r"\bdy\b"),
    (lambda: npconv.conv_grad(np.zeros((6, 4, 4)), X4, W4, groups=2), ValueError, r"\bdy\b"),
    (lambda: npconv.conv_grad(np.zeros((2, 6, 4, 4)), X4, W4, groups=2, dx_method="magic"),
     ValueError, "dx_method"),
    (lambda: npconv.conv_grad(np.zeros((2, 6, 4, 4)), X4, W4, groups=2, padding_mode="wrap"),
     ValueError, "padding_mode"),
    (lambda: npconv.conv_grad(np.zeros((2, 6, 4, 4)), X4, np.zeros((6, 4, 3, 3)), groups=2),
     ValueError, "weight.shape"),
    (lambda: npconv.conv(X4, W4, groups=2, stride=2, algorithm="winograd"), ValueError, "algorithm"),
    (lambda: npconv.conv(X4, W4, groups=2, algorithm="pointwise"), ValueError, "algorithm"),
    (lambda: npconv.conv(X4, W4, groups=2, algorithm="im2row"), ValueError, "groups"),
    (lambda: npconv.conv(X4, np.zeros((6, 4, 1, 1)), algorithm="depthwise"), ValueError,
     "algorithm"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_error_message_gives_expected_and_given_values():
    with pytest.raises(ValueError) as info:
        npconv.conv(X4, W4)
    message = str(info.value)
    assert "4" in message and "2" in message  # given C_in=4, weight.shape[1]=2
    with pytest.raises(ValueError) as info:
        npconv.conv(X4, W4, np.zeros(5), groups=2)
    assert "(6,)" in str(info.value) and "(5,)" in str(info.value)


@pytest.mark.parametrize("algorithm, groups, c_in, c_out", [
    ("im2col", 1, 3, 4), ("shifted", 1, 3, 4), ("im2row", 1, 3, 4), ("depthwise", 8, 8, 16),
    ("winograd", 2, 4, 6)])
def test_thread_count_does_not_change_results(rng, algorithm, groups, c_in, c_out):
    """npconv's own threads split work into pieces fixed by the shapes and sum them in
    a fixed order: 1 or 2 threads give the same bits. Large enough (16 MiB of float64
    input) that the threads are really used."""
    x = rng.standard_normal((16, c_in, 128, 128))
    w = rng.standard_normal((c_out, c_in // groups, 3, 3))
    dy = rng.standard_normal((16, c_out, 128, 128))
    results = {}
    default = npconv.get_num_threads()
    try:
        for threads in (1, 2):
            npconv.set_num_threads(threads)
            results[threads] = (npconv.conv(x, w, padding=1, groups=groups, algorithm=algorithm),
                                *npconv.conv_grad(dy, x, w, padding=1, groups=groups,
                                                  algorithm=algorithm, bias=False)[:2])
    finally:
        npconv.set_num_threads(default)
    for one, two in zip(results[1], results[2]):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("algorithm, groups", [("im2col", 1), ("shifted", 2), ("im2row", 1),
                                               ("depthwise", 4), ("winograd", 1)])
def test_empty_batch(algorithm, groups):
    """N = 0 works as in PyTorch: empty outputs and gradients, zero dweight and dbias."""
    x = np.zeros((0, 4, 8, 8))
    w = np.ones((4, 4 // groups, 3, 3))
    y = npconv.conv(x, w, padding=1, groups=groups, algorithm=algorithm)
    assert y.shape == (0, 4, 8, 8)
    dx, dw, db = npconv.conv_grad(np.zeros(y.shape), x, w, padding=1, groups=groups,
                                  algorithm=algorithm)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros(4))
    t = npconv.conv_transpose(x, w, padding=1, groups=groups)
    assert t.shape == (0, 4 // groups * groups, 8, 8)
    assert npconv.unfold(x, 3).shape == (0, 36, 36)
    assert npconv.fold(np.zeros((0, 36, 36)), (8, 8), 3).shape == (0, 4, 8, 8)


@pytest.mark.parametrize("kernel, stride, padding", [(4, 2, 1), (2, 2, 0), (6, 3, (2, 1)), (4, (2, 1), 1)])
def test_phase_decomposition_where_auto_picks_it(torch, rng, assert_close, kernel, stride, padding):
    """k divisible by s and >= 64 GEMM rows: "auto" computes dx (and so conv_transpose) by
    stride phases; compare conv_grad's dx and conv_transpose with torch (float64)."""
    from npconv.convolution import _phases_pay
    x = rng.standard_normal((2, 32, 12, 10))
    w = rng.standard_normal((24, 32, kernel, kernel))
    call = npconv._args.conv_call(x, w, None, stride, padding, 1, 1, "zeros")
    assert _phases_pay(call.geom, w.shape, x.itemsize)
    y = npconv.conv(x, w, stride=stride, padding=padding)
    dy = rng.standard_normal(y.shape)
    tx = torch.tensor(x, requires_grad=True)
    pad = call.geom.pads
    tx_p = torch.nn.functional.pad(tx, (pad[1][0], pad[1][1], pad[0][0], pad[0][1]))
    ty = torch.nn.functional.conv2d(tx_p, torch.tensor(w), stride=stride)
    (ty * torch.tensor(dy)).sum().backward()
    assert_close(npconv.conv_grad(dy, x, w, stride=stride, padding=padding).dx, tx.grad.numpy())
    # the same gradient is the transposed convolution of dy with the same weight
    out = npconv.conv_transpose(dy, w, stride=stride, padding=padding,
                                output_size=x.shape[2:])
    assert_close(out, tx.grad.numpy())


@pytest.mark.parametrize("shape", [(8, 16, 56, 56), (3, 5, 7), (2, 4, 3, 5, 6), (1, 1, 1, 1)])
def test_bias_grad(rng, shape):
    """db = Σ_{n,o} δ by BLAS matrix-vector products: float64 within 1e-13 of Σ|δ| (n·L
    terms of ~1e-16 error each, summed in lanes), float32 within 8 ulps of Σ|δ| per channel;
    non-finite δ propagate as in a plain sum."""
    from npconv.convolution import bias_grad

    dy = rng.standard_normal(shape)
    truth = dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
    scale = np.abs(dy).sum(axis=(0,) + tuple(range(2, dy.ndim)))
    assert np.all(np.abs(bias_grad(dy) - truth) <= 1e-13 * scale)
    db32 = bias_grad(dy.astype(np.float32))
    assert db32.dtype == np.float32
    assert np.all(np.abs(db32 - truth) <= 8 * np.finfo(np.float32).eps * scale)
    dy[(0, 0) + (0,) * (dy.ndim - 2)] = np.inf
    dy[(0, shape[1] - 1) + (0,) * (dy.ndim - 2)] = np.nan
    db = bias_grad(dy)
    assert np.isnan(db[-1]) and (shape[1] == 1 or db[0] == np.inf)


@pytest.mark.parametrize("shape, dtype, padded", [
    ((3, 1024), np.float32, True), ((2, 5, 512), np.float64, True), ((2, 2048), np.float32, True),
    ((4, 1000), np.float32, False), ((3, 256), np.float32, False)])
def test_gemm_buffers_avoid_rows_4k_apart(shape, dtype, padded):
    """GEMM operands whose rows would be a multiple of 4 KiB apart get 64 bytes more per row
    (4K aliasing in OpenBLAS's packing); other shapes stay contiguous."""
    from npconv._im2col import gemm_empty

    buffer = gemm_empty(shape, dtype)
    assert buffer.shape == shape and buffer.dtype == dtype
    assert buffer.strides[-1] == np.dtype(dtype).itemsize
    assert buffer.flags.c_contiguous != padded
    if padded:
        assert buffer.strides[-2] % 4096 == 64


@pytest.mark.parametrize("algorithm", ["im2col", "shifted"])
@pytest.mark.parametrize("shape, kernel, padding", [
    ((2, 3, 512), (4, 3, 3), 1),             # float64 rows of 512: 4 KiB
    ((2, 3, 16, 32), (4, 3, 3, 3), 1),       # a 16x32 image: 512 positions
    ((3, 2, 8, 8, 8), (4, 2, 3, 3, 3), 1),   # 8^3
    ((2, 3, 16, 32), (4, 3, 1, 1), 0),       # pointwise: X̃ is x itself
])
def test_kernels_on_rows_4k_apart(kernel_matches_torch, rng, algorithm, shape, kernel, padding):
    """Forward and gradients through the padded GEMM buffers, against torch in float64."""
    x = rng.standard_normal(shape)
    w = rng.standard_normal(kernel)
    kernel_matches_torch(x, w, algorithm, padding=padding)


@pytest.mark.parametrize("shape", [(8, 16, 32, 32), (3, 5), (2, 4, 3, 5, 6)])
def test_channel_sums_of_products(rng, shape):
    """Σ_{n,o} a·b per channel (batch norm's reductions) by one dot product per (sample,
    channel): float64 within 1e-13 and float32 within 8 ulps of Σ|a·b|."""
    from npconv.convolution import channel_sums

    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    axes = (0,) + tuple(range(2, len(shape)))
    truth, scale = (a * b).sum(axis=axes), np.abs(a * b).sum(axis=axes)
    assert np.all(np.abs(channel_sums(a, b) - truth) <= 1e-13 * scale)
    got32 = channel_sums(a.astype(np.float32), b.astype(np.float32))
    assert got32.dtype == np.float32
    assert np.all(np.abs(got32 - truth) <= 8 * np.finfo(np.float32).eps * scale)


@pytest.mark.parametrize("groups, dtype", [(1, np.float64), (2, np.float64), (4, np.float32)])
def test_pointwise_input_grad_is_one_product(torch, rng, assert_close, groups, dtype):
    """A 1x1 stride-1 unpadded kernel's dx is W̃ᵀ δ per sample and group written straight
    into dx (``_conv_input_grad_fold``: its fold is the identity), also for a δ that is a
    non-contiguous view; against torch autograd. float64 within 1e-12 of the scale; float32
    within 1e-6 of it (K = 8 products per output: a few ulps)."""
    x = rng.standard_normal((3, 8, 5, 7)).astype(dtype)
    w = rng.standard_normal((12, 8 // groups, 1, 1)).astype(dtype)
    dy = rng.standard_normal((3, 12, 7, 5)).astype(dtype).swapaxes(2, 3)   # (3, 12, 5, 7) view
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    (torch.nn.functional.conv2d(xt, wt, groups=groups) * torch.tensor(np.ascontiguousarray(dy))).sum().backward()
    for algorithm in ("auto", "im2col"):
        grads = npconv.conv_grad(dy, x, w, groups=groups, bias=False, algorithm=algorithm)
        assert grads.dx.dtype == dtype
        if dtype == np.float64:
            assert_close(grads.dx, xt.grad.numpy())
            assert_close(grads.dweight, wt.grad.numpy())
        else:
            scale = np.abs(xt.grad.numpy()).max()
            np.testing.assert_allclose(grads.dx, xt.grad.numpy(), rtol=0, atol=1e-6 * scale)


# --------------------------------------------------------------------------
# the stride-1 full convolution: δ correlated with the flipped kernel, landing on dx
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape, kernel, padding, dilation, groups", [
    ((2, 4, 17), (3, 4, 3), 1, 1, 1),             # "same"
    ((2, 4, 17), (3, 4, 3), 0, 1, 1),             # valid: the full reach dil·(k-1) on δ
    ((2, 4, 17), (3, 4, 4), ((3, 1),), 1, 1),     # asymmetric, one side at the full reach
    ((2, 4, 17), (4, 2, 3), 3, 2, 2),             # dilated, grouped, p = dil·(k-1) - 1
    ((2, 3, 9, 8), (5, 3, 3, 2), ((1, 2), (0, 1)), 1, 1),
    ((1, 2, 5, 4, 6), (3, 2, 2, 3, 3), 1, (1, 2, 1), 1),
])
def test_stride1_full_conv_lands_on_dx(torch, rng, assert_close, shape, kernel, padding,
                                       dilation, groups):
    """dx_method="full_conv" at stride 1 with zero padding p <= dil·(k-1) correlates δ,
    padded by dil·(k-1) - p, with the flipped kernel straight onto dx. Float64, 1e-12 of
    the scale (one GEMM per tile, as the other im2col paths), against torch autograd."""
    from npconv import _args
    from npconv.convolution import _same_conv_fits
    x = rng.standard_normal(shape)
    w = rng.standard_normal(kernel)
    kwargs = dict(padding=padding, dilation=dilation, groups=groups)
    call = _args.conv_call(x, w, None, 1, padding, dilation, groups, "zeros")
    assert _same_conv_fits(call.geom, "zeros")
    dy = rng.standard_normal(npconv.conv(x, w, **kwargs).shape)
    d = len(shape) - 2
    pads = [p for pair in reversed(call.geom.pads) for p in pair]       # F.pad's order
    tx = torch.tensor(x, requires_grad=True)
    conv_t = (None, torch.nn.functional.conv1d, torch.nn.functional.conv2d,
              torch.nn.functional.conv3d)[d]
    ty = conv_t(torch.nn.functional.pad(tx, pads), torch.tensor(w), dilation=dilation, groups=groups)
    (ty * torch.tensor(dy)).sum().backward()
    for algorithm in ("auto", "im2col"):
        dx = npconv.conv_grad(dy, x, w, **kwargs, dx_method="full_conv", algorithm=algorithm).dx
        assert_close(dx, tx.grad.numpy())
    # float32: a sum of K = C_og·prod(k) terms, within 2·K ulps of its scale Σ|W||δ|
    dx32 = npconv.conv_grad(dy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                            **kwargs, dx_method="full_conv").dx
    assert dx32.dtype == np.float32
    terms = kernel[0] // groups * math.prod(kernel[2:])
    scale = np.max(npconv.conv_grad(np.abs(dy), x, np.abs(w), **kwargs).dx)
    assert_close(dx32, tx.grad.numpy(), rtol=2 * terms * np.finfo(np.float32).eps, scale=scale)


@pytest.mark.parametrize("shape, kernel, padding, dilation", [
    ((3, 6, 40), (4, 6, 3), 1, 1), ((2, 5, 33), (5, 5, 5), 0, 1), ((2, 8, 30), (3, 8, 3), (2, 1), 2),
    ((3, 4, 25), (4, 4, 7), (3, 3), 1)])
def test_weight_gradient_from_the_unfold_of_delta(torch, rng, monkeypatch, assert_close, shape, kernel,
                                                  padding, dilation):
    """Where dx is the correlation of δ with the flipped kernel on im2col (1-d, C_in >= C_out),
    ``conv_grad`` takes dW from the same unfold of δ (``_same_conv_grads``):
    ``dW_flip = X̃_δ Xᵀ``. Float64 against torch autograd within 1e-12 of each scale; dx the
    same bits as computed apart; dW the same products in the same order (within 1e-14 of
    Σ|δ||x|); float32 dW within 2·L ulps of that scale (an L-term dot, L = N·S)."""
    from npconv import convolution

    x = rng.standard_normal(shape)
    w = rng.standard_normal(kernel)
    pads = (padding, padding) if isinstance(padding, int) else padding
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv1d(torch.nn.functional.pad(tx, pads), tw, dilation=dilation)
    dy = rng.standard_normal(tuple(ty.shape))
    (ty * torch.tensor(dy)).sum().backward()
    calls = []
    real = convolution._same_conv_grads
    monkeypatch.setattr(convolution, "_same_conv_grads", lambda *a: calls.append(1) or real(*a))
    kwargs = dict(padding=(pads,), dilation=dilation)
    grads = npconv.conv_grad(dy, x, w, **kwargs)
    assert calls == [1]
    assert_close(grads.dx, tx.grad.numpy())
    assert_close(grads.dweight, tw.grad.numpy())
    assert_close(grads.dbias, dy.sum(axis=(0, 2)))
    monkeypatch.setattr(convolution, "_same_conv_sweep", lambda *a: None)
    apart = npconv.conv_grad(dy, x, w, **kwargs)
    np.testing.assert_array_equal(grads.dx, apart.dx)
    scale = np.max(npconv.conv_grad(np.abs(dy), np.abs(x), w, **kwargs).dweight)
    assert_close(grads.dweight, apart.dweight, rtol=1e-14, scale=scale)
    monkeypatch.undo()
    dw32 = npconv.conv_grad(dy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                            **kwargs).dweight
    assert dw32.dtype == np.float32
    terms = shape[0] * shape[2]
    assert_close(dw32, tw.grad.numpy(), rtol=2 * terms * np.finfo(np.float32).eps, scale=scale)


@pytest.mark.parametrize("x_shape, w_shape", [((3, 6, 40), (4, 6, 3)), ((4, 16, 12, 12), (16, 16, 3, 3))])
def test_auto_takes_the_stride1_full_conv_for_input_gradients(rng, x_shape, w_shape):
    """"auto" gives a stride-1 zero-padded input gradient with C_in >= C_out, 1-d or a small
    2-d image, to the full convolution of δ (``_same_conv_pays``): the same bits as asking
    for it, through conv_grad and the transposed convolution."""
    from npconv import _args
    from npconv.convolution import _conv_input_grad_full, select_algorithm
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    dy = rng.standard_normal((x_shape[0], w_shape[0]) + x_shape[2:]).astype(np.float32)
    geom = _args.conv_call(x, w, None, 1, 1, 1, 1, "zeros").geom
    assert select_algorithm("auto", geom, w.shape, kernel_pass="input") == "im2col"
    # a reflect-padded layer keeps its kernel: the shortcut needs zero padding
    assert select_algorithm("auto", geom, w.shape, kernel_pass="input", mode="reflect") != "im2col"
    expected = _conv_input_grad_full(dy, w, geom, "zeros", "auto")
    np.testing.assert_array_equal(npconv.conv_grad(dy, x, w, padding=1).dx, expected)
    transpose = (None, npconv.conv_transpose1d, npconv.conv_transpose2d)[len(x_shape) - 2]
    np.testing.assert_array_equal(transpose(dy, w, padding=1), expected)
