"""Conformance of npconv.conv_transpose / conv_transpose1d-3d / conv_transpose_grad against
PyTorch, the loop reference, finite differences and the adjoint identity with conv.

Tolerance (float64): 1e-12 of the result's largest magnitude; each output sums at
most a few hundred products, so correct implementations agree to a few ulps.

PyTorch has no (lo, hi) padding for a transposed conv: it is emulated by torch's
conv_transpose at padding 0 (same output_padding) and cropping lo / hi from the
two ends -- the definition (ONNX ``pads``).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npconv
from npconv import reference as ref


def _tup(value, d):
    return (value,) * d if isinstance(value, int) else tuple(value)


def pad_pairs(padding, d):
    if padding == "valid":
        return ((0, 0),) * d
    if isinstance(padding, int):
        return ((padding, padding),) * d
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def torch_conv_transpose(torch, x, weight, bias, stride, pairs, output_padding, groups, dilation):
    """torch tensors in/out (batched). Symmetric pads natively, else padding 0 + crop."""
    d = weight.dim() - 2
    fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
          3: torch.nn.functional.conv_transpose3d}[d]
    if all(lo == hi for lo, hi in pairs):
        return fn(x, weight, bias, stride=stride, padding=tuple(lo for lo, _ in pairs),
                  output_padding=output_padding, groups=groups, dilation=dilation)
    full = fn(x, weight, bias, stride=stride, padding=0, output_padding=output_padding,
              groups=groups, dilation=dilation)
    crop = tuple(slice(lo, size - hi) for (lo, hi), size in zip(pairs, full.shape[2:]))
    return full[(slice(None), slice(None)) + crop]


class TConfig(NamedTuple):
    d: int
    batch: int | None
    c_in: int
    c_out: int
    groups: int
    size: tuple
    kernel: tuple
    stride: object
    padding: object
    output_padding: object
    dilation: object
    bias: bool

    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def arrays(self, rng):
        x = rng.standard_normal(((self.batch,) if self.batch else ()) + (self.c_in,) + self.size)
        w = rng.standard_normal((self.c_in, self.c_out // self.groups) + self.kernel)
        b = rng.standard_normal(self.c_out) if self.bias else None
        return x, w, b


def tconfig_id(cfg):
    return (f"d{cfg.d}-N{cfg.batch}-c{cfg.c_in}x{cfg.c_out}g{cfg.groups}-k{cfg.kernel}"
            f"-s{cfg.stride}-p{cfg.padding}-op{cfg.output_padding}-dil{cfg.dilation}"
            f"-b{int(cfg.bias)}").replace(" ", "")


SIZES = {1: (6,), 2: (4, 5), 3: (3, 4, 4)}
KERNELS = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
# (C_in, C_out, groups): plain, grouped, depthwise, depthwise with multiplier 2
CHANNELS = [(3, 2, 1), (4, 6, 2), (3, 3, 3), (2, 4, 2)]


def _grid():
    configs = []
    for d in (1, 2, 3):
        strides = [1, 2, (2, 1, 3)[:d]]
        dilations = [1, 2, (1, 3, 1)[:d]]
        paddings = [0, 1, (1, 0, 2)[:d], ((0, 2), (1, 0), (2, 1))[:d], "valid"]
        for i, (stride, dilation, padding) in enumerate(
                itertools.product(strides, dilations, paddings)):
            s, dl = _tup(stride, d), _tup(dilation, d)
            # output_padding: 0, or the largest legal value max(s, dil) - 1 per dim
            op = 0 if i % 2 else tuple(max(a, b) - 1 for a, b in zip(s, dl))
            configs.append(TConfig(d, (2, None, 1)[i % 3], *CHANNELS[i % 4], SIZES[d],
                                   KERNELS[d], stride, padding, op, dilation, i % 3 != 1))
    # output_padding >= stride but < dilation; kernel 1; big crop
    configs += [
        TConfig(1, 2, 2, 2, 1, (5,), (3,), 1, 0, 2, 3, True),
        TConfig(2, 1, 2, 4, 2, (3, 4), (2, 2), (1, 2), ((1, 0), (0, 0)), (1, 1), 2, True),
        TConfig(2, 2, 3, 2, 1, (3, 3), (1, 1), 3, 0, 2, 1, True),
        TConfig(3, 1, 2, 2, 1, (2, 2, 2), (3, 3, 3), 2, ((3, 2), (0, 4), (2, 2)), 1, 1, False),
    ]
    return configs


CONFIGS = _grid()


def torch_forward_and_grads(torch, cfg, x, w, b, dy):
    xb = x[None] if cfg.batch is None else x
    xt = torch.from_numpy(xb).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True) if b is not None else None
    yt = torch_conv_transpose(torch, xt, wt, bt, _tup(cfg.stride, cfg.d),
                              pad_pairs(cfg.padding, cfg.d), _tup(cfg.output_padding, cfg.d),
                              cfg.groups, _tup(cfg.dilation, cfg.d))
    y = yt.detach().numpy()
    y = y[0] if cfg.batch is None else y
    if dy is None:
        return y, None
    (yt * torch.from_numpy(dy[None] if cfg.batch is None else dy)).sum().backward()
    dx = xt.grad.numpy()
    return y, (dx[0] if cfg.batch is None else dx, wt.grad.numpy(),
               None if bt is None else bt.grad.numpy())


@pytest.mark.parametrize("cfg", CONFIGS, ids=tconfig_id)
def test_forward_matches_torch_and_reference(torch, rng, assert_close, gemm_kernels, cfg):
    x, w, b = cfg.arrays(rng)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    expected, _ = torch_forward_and_grads(torch, cfg, x, w, b, None)
    assert y.dtype == np.float64
    assert_close(y, expected)
    assert_close(y, ref.conv_transpose(x, w, b, **cfg.kwargs()))
    # "auto" may pick the depthwise or Winograd kernels; every GEMM kernel must agree
    for algorithm in gemm_kernels(cfg.groups):
        assert_close(npconv.conv_transpose(x, w, b, **cfg.kwargs(), algorithm=algorithm), expected)
    fn = getattr(npconv, f"conv_transpose{cfg.d}d")
    np.testing.assert_array_equal(fn(x, w, b, **cfg.kwargs()), y)
    # the size helper agrees with the actual output
    assert npconv.conv_transpose_output_size(
        cfg.size, cfg.kernel, stride=cfg.stride, padding=cfg.padding,
        output_padding=cfg.output_padding, dilation=cfg.dilation) == y.shape[-cfg.d:]


@pytest.mark.parametrize("cfg", CONFIGS, ids=tconfig_id)
def test_grads_match_torch_autograd_and_reference(torch, rng, assert_close, gemm_kernels, cfg):
    x, w, b = cfg.arrays(rng)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    dy = rng.standard_normal(y.shape)
    _, (dx_t, dw_t, db_t) = torch_forward_and_grads(torch, cfg, x, w, b, dy)
    grads = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias)
    assert isinstance(grads, npconv.ConvGrads)
    assert_close(grads.dx, dx_t)
    assert_close(grads.dweight, dw_t)
    if cfg.bias:
        assert_close(grads.dbias, db_t)
    else:
        assert grads.dbias is None
    expected = ref.conv_transpose_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias)
    assert_close(grads.dx, expected[0])
    assert_close(grads.dweight, expected[1])
    for algorithm in gemm_kernels(cfg.groups):
        forced = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias,
                                            algorithm=algorithm)
        assert_close(forced.dx, dx_t)
        assert_close(forced.dweight, dw_t)


@pytest.mark.parametrize("cfg", CONFIGS[::6], ids=tconfig_id)
def test_grads_match_finite_differences(rng, numerical_grad, assert_close, cfg):
    cfg = cfg._replace(batch=None if cfg.batch is None else 1)
    x, w, b = cfg.arrays(rng)
    kwargs = cfg.kwargs()
    dy = rng.standard_normal(npconv.conv_transpose(x, w, b, **kwargs).shape)
    grads = npconv.conv_transpose_grad(dy, x, w, **kwargs)
    # linear in each argument: central differences are exact up to rounding (~1e-10 here)
    num_dx = numerical_grad(lambda v: np.sum(npconv.conv_transpose(v, w, b, **kwargs) * dy), x)
    num_dw = numerical_grad(lambda v: np.sum(npconv.conv_transpose(x, v, b, **kwargs) * dy), w)
    num_db = numerical_grad(
        lambda v: np.sum(npconv.conv_transpose(x, w, v, **kwargs) * dy), np.zeros(cfg.c_out))
    assert_close(grads.dx, num_dx, rtol=1e-8)
    assert_close(grads.dweight, num_dw, rtol=1e-8)
    assert_close(grads.dbias, num_db, rtol=1e-8)


# --------------------------------------------------------------------------
# adjoint of conv, output_padding, output_size
# --------------------------------------------------------------------------
ADJOINT_CASES = [
    # d, conv-input size, kernel, stride, padding, dilation, groups
    (1, (9,), (3,), 2, 1, 1, 1),
    (1, (10,), (2,), 3, ((2, 0),), 2, 2),
    (2, (7, 6), (3, 2), (2, 1), (1, 0), (1, 2), 1),
    (2, (8, 7), (3, 3), 2, ((0, 2), (1, 1)), 1, 2),
    (2, (6, 6), (2, 2), 1, "valid", 3, 1),
    (2, (5, 7), (1, 3), (3, 2), 2, 1, 2),
    (3, (5, 4, 6), (2, 3, 2), (2, 1, 3), ((1, 0), (0, 1), (2, 2)), (1, 1, 2), 2),
    (3, (4, 5, 4), (3, 2, 2), 1, 1, (2, 1, 1), 1),
]


@pytest.mark.parametrize("case", ADJOINT_CASES)
def test_adjoint_of_conv(rng, case):
    """<conv(x, w), y> = <x, conv_transpose(y, w)> with output_padding making shapes line up."""
    d, size, kernel, stride, padding, dilation, groups = case
    c_in, c_out = 2 * groups, 3 * groups
    x = rng.standard_normal((2, c_in) + size)
    w = rng.standard_normal((c_out, c_in // groups) + kernel)
    conv_kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    cx = npconv.conv(x, w, **conv_kwargs)
    y = rng.standard_normal(cx.shape)
    # output_padding = the rows conv's floor division dropped: (P - span) mod s
    pairs = pad_pairs(padding, d)
    op = tuple((s_in + lo + hi - dl * (k - 1) - 1) % s
               for s_in, (lo, hi), k, s, dl in zip(size, pairs, kernel, _tup(stride, d),
                                                   _tup(dilation, d)))
    ty = npconv.conv_transpose(y, w, stride=stride, padding=padding, output_padding=op,
                               groups=groups, dilation=dilation)
    assert ty.shape == x.shape
    lhs, rhs = np.sum(cx * y), np.sum(x * ty)
    assert abs(lhs - rhs) <= 1e-12 * (np.sum(np.abs(cx * y)) + np.sum(np.abs(x * ty)))
    # conv_transpose(y) is exactly conv_grad's dx, and output_size= picks the same padding
    np.testing.assert_allclose(ty, npconv.conv_grad(y, x, w, **conv_kwargs).dx,
                               rtol=0, atol=1e-12 * np.max(np.abs(ty)))
    np.testing.assert_array_equal(
        npconv.conv_transpose(y, w, stride=stride, padding=padding, output_size=size,
                              groups=groups, dilation=dilation), ty)


@pytest.mark.parametrize("stride, dilation, op", [(1, 3, 2), (1, 2, 1), (2, 3, 2), (3, 1, 2)])
def test_output_padding_up_to_max_stride_dilation(torch, rng, assert_close, stride, dilation, op):
    x = rng.standard_normal((2, 2, 5))
    w = rng.standard_normal((2, 3, 3))
    y = npconv.conv_transpose1d(x, w, stride=stride, dilation=dilation, output_padding=op)
    expected = torch.nn.functional.conv_transpose1d(
        torch.from_numpy(x), torch.from_numpy(w), stride=stride, dilation=dilation,
        output_padding=op).numpy()
    assert_close(y, expected)
    # the extra output_padding positions are at the end and hold no contribution
    y0 = npconv.conv_transpose1d(x, w, stride=stride, dilation=dilation)
    np.testing.assert_array_equal(y[..., :y0.shape[-1]], y0)
    np.testing.assert_array_equal(y[..., y0.shape[-1]:], 0)


@pytest.mark.parametrize("shape, kernel, kwargs", [
    ((1, 1, 3), (1,), dict(stride=1, dilation=2, output_padding=1)),
    ((2, 2, 3, 2), (1, 1), dict(stride=(1, 2), dilation=(3, 3), output_padding=(2, 2))),
    ((1, 2, 2, 2, 2), (1, 1, 1), dict(stride=1, dilation=(1, 2, 1), output_padding=(0, 1, 0))),
])
def test_1x1_kernel_with_output_padding_beyond_stride(torch, rng, assert_close, shape, kernel,
                                                      kwargs):
    """A 1x1 kernel with output_padding >= stride (allowed because dilation > stride): the
    output still grows by output_padding (zeros at the end), as in torch."""
    x = rng.standard_normal(shape)
    w = rng.standard_normal((shape[1], 2) + kernel)
    fn = getattr(torch.nn.functional, f"conv_transpose{len(kernel)}d")
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    yt = fn(xt, wt, **kwargs)
    dy = rng.standard_normal(tuple(yt.shape))
    (yt * torch.from_numpy(dy)).sum().backward()
    for algorithm in ("auto", "im2col", "shifted"):
        assert_close(npconv.conv_transpose(x, w, **kwargs, algorithm=algorithm),
                     yt.detach().numpy())
        grads = npconv.conv_transpose_grad(dy, x, w, **kwargs, algorithm=algorithm)
        assert_close(grads.dx, xt.grad.numpy())
        assert_close(grads.dweight, wt.grad.numpy())


def test_output_size_argument(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    kwargs = dict(stride=(3, 2), padding=((1, 0), (1, 1)), dilation=1)
    smallest = npconv.conv_transpose_output_size((4, 5), (3, 3), **kwargs)
    # (S-1)s - lo - hi + dil(k-1) + 1 per dim
    assert smallest == ((4 - 1) * 3 - 1 - 0 + 2 + 1, (5 - 1) * 2 - 1 - 1 + 2 + 1)
    for op in itertools.product(range(3), range(2)):
        want = tuple(s + o for s, o in zip(smallest, op))
        expected = npconv.conv_transpose(x, w, output_padding=op, **kwargs)
        assert expected.shape[2:] == want
        np.testing.assert_array_equal(npconv.conv_transpose(x, w, output_size=want, **kwargs),
                                      expected)
        # a full shape (N, C, *S) is accepted as well, as torch's ConvTranspose.forward
        np.testing.assert_array_equal(
            npconv.conv_transpose2d(x, w, output_size=(2, 2) + want, **kwargs), expected)
        grads = npconv.conv_transpose_grad(np.ones(expected.shape), x, w, output_size=want,
                                           **kwargs)
        assert grads.dx.shape == x.shape
    for bad in [(smallest[0] + 3, smallest[1]), (smallest[0], smallest[1] - 1),
                (smallest[0] - 1, smallest[1] + 2)]:
        with pytest.raises(ValueError, match="output_size"):
            npconv.conv_transpose(x, w, output_size=bad, **kwargs)


@pytest.mark.parametrize("args, kwargs, expected", [
    ((32, 4), dict(stride=2, padding=1), (64,)),
    ((5, 3), {}, (7,)),
    (((32, 32), 4), dict(stride=2, padding=1), (64, 64)),
    # (S-1)s - lo - hi + dil(k-1) + output_padding + 1 per dim
    (((4, 5), (3, 2)), dict(stride=(2, 3), padding=((1, 0), (0, 2)), output_padding=(1, 2),
                            dilation=(1, 2)),
     ((4 - 1) * 2 - 1 + 1 * 2 + 1 + 1, (5 - 1) * 3 - 2 + 2 * 1 + 2 + 1)),
    (((3, 3, 3), 2), dict(stride=1, dilation=3, output_padding=2), (8, 8, 8)),
    (((7, 2, 4), (1, 2, 3)), dict(padding="valid"), (7, 3, 6)),
])
def test_conv_transpose_output_size_helper(args, kwargs, expected):
    assert npconv.conv_transpose_output_size(*args, **kwargs) == expected


@pytest.mark.parametrize("kwargs, name", [
    (dict(input_size=(4, 4), kernel_size=3, stride=2, output_padding=2), "output_padding"),
    (dict(input_size=(4, 4), kernel_size=3, padding="same"), "same"),
    (dict(input_size=(2, 2), kernel_size=1, padding=1), "output size"),
    (dict(input_size=(4, 4), kernel_size=3, stride=0), "stride"),
    (dict(input_size=(4, 4), kernel_size=3, padding=-1), "padding"),
])
def test_conv_transpose_output_size_helper_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        npconv.conv_transpose_output_size(**kwargs)


# --------------------------------------------------------------------------
# dtypes, layouts, determinism, workspace
# --------------------------------------------------------------------------
F32_CASE = TConfig(2, 2, 4, 6, 2, (6, 5), (4, 4), 2, 1, 0, 1, True)


def test_float32_matches_torch_float32(torch, rng):
    cfg = F32_CASE
    x, w, b = (v.astype(np.float32) for v in cfg.arrays(rng))
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    assert y.dtype == np.float32
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs())
    xt, wt, bt = (torch.from_numpy(v).requires_grad_(True) for v in (x, w, b))
    yt = torch.nn.functional.conv_transpose2d(xt, wt, bt, stride=2, padding=1, groups=2)
    (yt * torch.from_numpy(dy)).sum().backward()
    # per-element scale = sum of |terms| (same op on |x|, |w|, |dy| in float64); both
    # sides are within a few float32 ulps of it, a wrong index is O(1) of it: 8 ulps.
    ax, aw, ady = (np.abs(v).astype(np.float64) for v in (x, w, dy))
    y_scale = ref.conv_transpose(ax, aw, np.abs(b), **cfg.kwargs())
    dx_s, dw_s, db_s = ref.conv_transpose_grad(ady, ax, aw, **cfg.kwargs())
    eps = np.finfo(np.float32).eps
    for got, exp, scale in ((y, yt, y_scale), (grads.dx, xt.grad, dx_s),
                            (grads.dweight, wt.grad, dw_s), (grads.dbias, bt.grad, db_s)):
        assert got.dtype == np.float32
        diff = np.abs(got.astype(np.float64) - exp.detach().numpy().astype(np.float64))
        assert np.all(diff <= 8 * eps * scale + 1e-30), float(np.max(diff / (eps * scale)))


def test_float16_and_mixed_dtypes(rng):
    cfg = F32_CASE
    x, w, b = cfg.arrays(rng)
    h = [v.astype(np.float16) for v in (x, w, b)]
    y = npconv.conv_transpose(*h, **cfg.kwargs())
    assert y.dtype == np.float16
    f32 = [v.astype(np.float32) for v in h]
    np.testing.assert_array_equal(y, npconv.conv_transpose(*f32, **cfg.kwargs()).astype(np.float16))
    dy = rng.standard_normal(y.shape).astype(np.float16)
    for g, e in zip(npconv.conv_transpose_grad(dy, h[0], h[1], **cfg.kwargs()),
                    npconv.conv_transpose_grad(dy.astype(np.float32), f32[0], f32[1],
                                               **cfg.kwargs())):
        assert g.dtype == np.float16
        np.testing.assert_array_equal(g, e.astype(np.float16))
    mixed = npconv.conv_transpose(x.astype(np.float32), w, b, **cfg.kwargs())
    assert mixed.dtype == np.float64
    np.testing.assert_array_equal(mixed, npconv.conv_transpose(x.astype(np.float32).astype(
        np.float64), w, b, **cfg.kwargs()))


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex64, object])
@pytest.mark.parametrize("which", ["x", "weight", "bias", "dy"])
def test_non_float_dtypes_raise_type_error(rng, dtype, which):
    arrays = {"x": rng.standard_normal((1, 2, 4, 4)), "weight": rng.standard_normal((2, 3, 3, 3)),
              "bias": rng.standard_normal(3), "dy": rng.standard_normal((1, 3, 6, 6))}
    arrays[which] = arrays[which].astype(dtype)
    if which == "dy":
        with pytest.raises(TypeError, match=r"\bdy\b"):
            npconv.conv_transpose_grad(arrays["dy"], arrays["x"], arrays["weight"])
        return
    with pytest.raises(TypeError, match=rf"\b{which}\b"):
        npconv.conv_transpose(arrays["x"], arrays["weight"], arrays["bias"])


def _layouts(a):
    yield "fortran", np.asfortranarray(a)
    flipped = np.ascontiguousarray(a[..., ::-1])
    yield "negative-stride", flipped[..., ::-1]
    big = np.zeros(tuple(2 * s for s in a.shape))
    every_other = tuple(slice(None, None, 2) for _ in a.shape)
    big[every_other] = a
    yield "strided", big[every_other]


@pytest.mark.parametrize("cfg", [CONFIGS[7], CONFIGS[50], CONFIGS[-2]], ids=tconfig_id)
def test_layouts_no_mutation_determinism(rng, cfg):
    x, w, b = cfg.arrays(rng)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    np.testing.assert_array_equal(npconv.conv_transpose(x, w, b, **cfg.kwargs()), y)
    dy = rng.standard_normal(y.shape)
    grads = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs())
    for g, e in zip(npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs()), grads):
        np.testing.assert_array_equal(g, e)   # deterministic
    for (name, xl), (_, wl), (_, dyl) in zip(_layouts(x), _layouts(w), _layouts(dy)):
        copies = [v.copy() for v in (xl, wl, dyl)]
        np.testing.assert_array_equal(npconv.conv_transpose(xl, wl, b, **cfg.kwargs()), y,
                                      err_msg=name)
        for g, e in zip(npconv.conv_transpose_grad(dyl, xl, wl, **cfg.kwargs()), grads):
            np.testing.assert_array_equal(g, e, err_msg=name)
        for v, c in zip((xl, wl, dyl), copies):
            np.testing.assert_array_equal(v, c)


@pytest.mark.parametrize("batches", [1, 2.5])
def test_workspace_limit_does_not_change_results(rng, batches):
    """No limit that holds a whole GEMM tile may change a bit (tiles are fixed by
    the shapes; see test_conv.py). The limits hold ``batches`` whole batches."""
    cfg = TConfig(2, 4, 4, 6, 2, (6, 5), (4, 3), 2, ((1, 0), (2, 1)), (1, 0), 1, True)
    x, w, b = cfg.arrays(rng)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    dy = rng.standard_normal(y.shape)
    grads = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs())
    # one sample: at most max(C_in, C_out)·prod(k) rows by (output size + 2k) columns
    positions = int(np.prod([n + 2 * k for n, k in zip(y.shape[2:], w.shape[2:])]))
    bound = x.itemsize * max(w.shape[0], y.shape[1]) * int(np.prod(w.shape[2:])) * positions
    with npconv.workspace_limit(int(batches * len(x) * bound)):
        np.testing.assert_array_equal(npconv.conv_transpose(x, w, b, **cfg.kwargs()), y)
        got = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs())
        for name, g, e in zip(got._fields, got, grads):
            np.testing.assert_array_equal(g, e, err_msg=name)


@pytest.mark.parametrize("limit", [64, 2048])
def test_workspace_limit_below_one_sample(rng, limit, assert_close):
    """Below one sample the output rows are chunked too: the GEMM shapes and the
    order of overlapping sums change, so results agree to rounding (1e-13 of the
    scale in float64, sums of at most a few hundred terms)."""
    cfg = TConfig(2, 4, 4, 6, 2, (6, 5), (4, 3), 2, ((1, 0), (2, 1)), (1, 0), 1, True)
    x, w, b = cfg.arrays(rng)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    dy = rng.standard_normal(y.shape)
    grads = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs())
    with npconv.workspace_limit(limit):
        assert_close(npconv.conv_transpose(x, w, b, **cfg.kwargs()), y, rtol=1e-13)
        got = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs())
        for name, g, e in zip(got._fields, got, grads):
            assert_close(g, e, rtol=1e-13, err_msg=name)


# --------------------------------------------------------------------------
# hypothesis
# --------------------------------------------------------------------------
@st.composite
def tconfigs(draw):
    d = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    stride = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    dilation = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    size = tuple(draw(st.lists(st.integers(1, {1: 6, 2: 4, 3: 3}[d]), min_size=d, max_size=d)))
    output_padding = tuple(draw(st.integers(0, max(s, dl) - 1)) for s, dl in zip(stride, dilation))
    full = [(n - 1) * s + dl * (k - 1) + op + 1
            for n, s, dl, k, op in zip(size, stride, dilation, kernel, output_padding)]
    # crop at most full - 1 so the output keeps >= 1 element
    pairs = []
    for f in full:
        lo = draw(st.integers(0, min(2, f - 1)))
        pairs.append((lo, draw(st.integers(0, min(2, f - 1 - lo)))))
    form = draw(st.sampled_from(["pairs", "per-dim", "int"]))
    if form == "per-dim" and all(2 * lo < f for (lo, _), f in zip(pairs, full)):
        padding = tuple(lo for lo, _ in pairs)
    elif form == "int" and all(2 * pairs[0][0] < f for f in full):
        padding = pairs[0][0]
    else:
        padding = tuple(pairs)
    return TConfig(d, draw(st.sampled_from([None, 1, 2])), groups * draw(st.integers(1, 2)),
                   groups * draw(st.integers(1, 2)), groups, size, kernel, stride, padding,
                   output_padding, dilation, draw(st.booleans()))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(cfg=tconfigs(), seed=st.integers(0, 2**16))
def test_hypothesis_random_configs(torch, assert_close, cfg, seed):
    rng = np.random.default_rng(seed)
    x, w, b = cfg.arrays(rng)
    y = npconv.conv_transpose(x, w, b, **cfg.kwargs())
    assert_close(y, ref.conv_transpose(x, w, b, **cfg.kwargs()))
    dy = rng.standard_normal(y.shape)
    y_t, (dx_t, dw_t, db_t) = torch_forward_and_grads(torch, cfg, x, w, b, dy)
    assert_close(y, y_t)
    grads = npconv.conv_transpose_grad(dy, x, w, **cfg.kwargs(), bias=cfg.bias)
    assert_close(grads.dx, dx_t)
    assert_close(grads.dweight, dw_t)
    if cfg.bias:
        assert_close(grads.dbias, db_t)
    else:
        assert grads.dbias is None


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
X = np.zeros((2, 4, 5, 5))
W = np.zeros((4, 3, 3, 3))   # C_out = 3 * groups


@pytest.mark.parametrize("call, name", [
    (lambda: npconv.conv_transpose(X, W, stride=2, output_padding=2), "output_padding"),
    (lambda: npconv.conv_transpose(X, W, stride=1, dilation=2, output_padding=(0, 2)),
     "output_padding"),
    (lambda: npconv.conv_transpose(X, W, output_padding=1), "output_padding"),  # s = dil = 1
    (lambda: npconv.conv_transpose(X, W, output_padding=-1), "output_padding"),
    (lambda: npconv.conv_transpose(X, W, padding="same"), "same"),
    (lambda: npconv.conv_transpose(X, W, padding="full"), "padding"),
    (lambda: npconv.conv_transpose(X, W, padding=-1), "padding"),
    (lambda: npconv.conv_transpose(X, np.zeros((3, 3, 3, 3))), "weight"),     # channel mismatch
    (lambda: npconv.conv_transpose(X, W, groups=3), "groups"),
    (lambda: npconv.conv_transpose(X, W, groups=0), "groups"),
    (lambda: npconv.conv_transpose(X, W, padding=4), "output size"),           # 7 - 8 < 1
    (lambda: npconv.conv_transpose(X, W, padding=((0, 7), (0, 0))), "output size"),
    (lambda: npconv.conv_transpose(X, W, stride=0), "stride"),
    (lambda: npconv.conv_transpose(X, W, dilation=0), "dilation"),
    (lambda: npconv.conv_transpose(X, W, np.zeros(4)), "bias"),
    (lambda: npconv.conv_transpose(np.zeros((5, 5)), W), r"\bx\b"),
    (lambda: npconv.conv_transpose1d(X, W), "weight"),
    (lambda: npconv.conv_transpose3d(X, W), "weight"),
    (lambda: npconv.conv_transpose2d(X, W, output_size=(20, 20)), "output_size"),
    (lambda: npconv.conv_transpose_grad(np.zeros((2, 3, 6, 6)), X, W), r"\bdy\b"),
    (lambda: npconv.conv_transpose_grad(np.zeros((2, 3, 7, 7)), X, W, output_padding=1,
                                        stride=2), r"\bdy\b"),
])
def test_bad_input_raises_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
