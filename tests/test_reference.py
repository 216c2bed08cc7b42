"""The loop reference (npconv.reference) checked against PyTorch, so it can serve as an oracle.

Everything here is float64 and compared at 1e-12 of the result's scale: the
reference sums a few hundred products at most, so both sides are within a few
ulps (~1e-16 relative) of the exact value.
"""
from __future__ import annotations

import numpy as np
import pytest

from npconv import reference as ref

TORCH_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
               "circular": "circular"}


def torch_pads(pairs):
    """(lo, hi) pairs in dim order -> F.pad's flat tuple, last dim first."""
    return tuple(v for lo, hi in reversed(pairs) for v in (lo, hi))


def conv_fn(torch, d):
    return {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
            3: torch.nn.functional.conv3d}[d]


def conv_transpose_fn(torch, d):
    return {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
            3: torch.nn.functional.conv_transpose3d}[d]


SIZES = {1: (9,), 2: (6, 7), 3: (4, 5, 4)}


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad_matches_torch(torch, rng, d, mode):
    x = rng.standard_normal((2, 3) + SIZES[d])
    pairs = ((2, 1), (0, 3), (1, 0))[:d]
    pairs = tuple((min(lo, s - 1), min(hi, s - 1)) for (lo, hi), s in zip(pairs, SIZES[d]))
    got = ref.pad(x, pairs, mode)
    expected = torch.nn.functional.pad(torch.from_numpy(x), torch_pads(pairs),
                                       mode=TORCH_MODES[mode]).numpy()
    np.testing.assert_array_equal(got, expected)  # pure copies: exact


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad_adjoint_matches_autograd(torch, rng, assert_close, d, mode):
    x = rng.standard_normal((1, 2) + SIZES[d])
    pairs = ((3, 2), (1, 3), (2, 0))[:d]
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.functional.pad(xt, torch_pads(pairs), mode=TORCH_MODES[mode])
    dy = rng.standard_normal(tuple(yt.shape))
    (yt * torch.from_numpy(dy)).sum().backward()
    assert_close(ref.pad_adjoint(dy, pairs, mode, SIZES[d]), xt.grad.numpy())


CONV_CASES = [
    # d, C_in, C_out, k, stride, padding, dilation, groups, bias
    (1, 2, 3, (3,), 1, 0, 1, 1, True),
    (1, 4, 4, (2,), 2, 1, 3, 2, False),
    (2, 3, 4, (3, 2), (2, 1), (1, 0), (1, 2), 1, True),
    (2, 4, 8, (3, 3), 1, 1, 1, 4, True),   # depthwise, channel multiplier 2
    (3, 2, 2, (2, 3, 2), (1, 2, 1), (1, 1, 0), 1, 2, True),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_and_grad_match_torch(torch, rng, assert_close, case):
    d, c_in, c_out, k, stride, padding, dilation, groups, with_bias = case
    x = rng.standard_normal((2, c_in) + SIZES[d])
    w = rng.standard_normal((c_out, c_in // groups) + k)
    b = rng.standard_normal(c_out) if with_bias else None
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True) if with_bias else None
    yt = conv_fn(torch, d)(xt, wt, bt, stride=stride, padding=padding, dilation=dilation,
                           groups=groups)
    y = ref.conv(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert_close(y, yt.detach().numpy())

    dy = rng.standard_normal(y.shape)
    (yt * torch.from_numpy(dy)).sum().backward()
    dx, dw, db = ref.conv_grad(dy, x, w, stride=stride, padding=padding, dilation=dilation,
                               groups=groups, bias=with_bias)
    assert_close(dx, xt.grad.numpy())
    assert_close(dw, wt.grad.numpy())
    if with_bias:
        assert_close(db, bt.grad.numpy())
    else:
        assert db is None


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_match_torch(torch, rng, assert_close, d, mode):
    """nn.Conv's semantics: F.pad(x, mode) then a conv with padding 0 (asymmetric pads here)."""
    x = rng.standard_normal((2, 2) + SIZES[d])
    w = rng.standard_normal((3, 2) + (3,) * d)
    pairs = ((2, 1), (1, 2), (0, 1))[:d]
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = conv_fn(torch, d)(torch.nn.functional.pad(xt, torch_pads(pairs), mode=TORCH_MODES[mode]),
                           torch.from_numpy(w), stride=2)
    y = ref.conv(x, w, stride=2, padding=pairs, padding_mode=mode)
    assert_close(y, yt.detach().numpy())
    dy = rng.standard_normal(y.shape)
    (yt * torch.from_numpy(dy)).sum().backward()
    dx, _, _ = ref.conv_grad(dy, x, w, stride=2, padding=pairs, padding_mode=mode)
    assert_close(dx, xt.grad.numpy())


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("d", [1, 2, 3])
def test_conv_same_stride1_matches_torch(torch, rng, assert_close, d):
    x = rng.standard_normal((1, 2) + SIZES[d])
    w = rng.standard_normal((2, 2) + (4, 3, 2)[:d])  # even kernels: odd total padding
    yt = conv_fn(torch, d)(torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=1)
    assert_close(ref.conv(x, w, padding="same"), yt.numpy())


def test_same_pads_formula():
    # O = ceil(S/s); total = max((O-1)s + dil(k-1) + 1 - S, 0); extra element at the end.
    assert ref.same_pads((7,), (4,), (1,), (1,)) == ((1, 2),)
    assert ref.same_pads((7,), (3,), (2,), (1,)) == ((1, 1),)
    assert ref.same_pads((8,), (3,), (2,), (1,)) == ((0, 1),)
    assert ref.same_pads((5,), (1,), (3,), (1,)) == ((0, 0),)
    assert ref.same_pads((6,), (3,), (2,), (2,)) == ((1, 2),)


TRANSPOSE_CASES = [
    # d, C_in, C_out, k, stride, padding, output_padding, dilation, groups, bias
    (1, 2, 3, (3,), 2, 1, 1, 1, 1, True),
    (1, 4, 2, (2,), 1, 0, 1, 2, 2, False),   # output_padding >= stride but < dilation
    (2, 3, 2, (3, 2), (2, 3), (1, 0), (1, 2), 1, 1, True),
    (2, 4, 6, (2, 3), 2, (0, 1), 0, (2, 1), 2, True),
    (3, 2, 2, (2, 2, 3), (2, 1, 1), 1, (1, 0, 0), 1, 2, True),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose_and_grad_match_torch(torch, rng, assert_close, case):
    d, c_in, c_out, k, stride, padding, output_padding, dilation, groups, with_bias = case
    x = rng.standard_normal((2, c_in) + tuple(s - 1 for s in SIZES[d]))
    w = rng.standard_normal((c_in, c_out // groups) + k)
    b = rng.standard_normal(c_out) if with_bias else None
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True) if with_bias else None
    yt = conv_transpose_fn(torch, d)(xt, wt, bt, stride=stride, padding=padding,
                                     output_padding=output_padding, groups=groups,
                                     dilation=dilation)
    y = ref.conv_transpose(x, w, b, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation)
    assert_close(y, yt.detach().numpy())
    dy = rng.standard_normal(y.shape)
    (yt * torch.from_numpy(dy)).sum().backward()
    dx, dw, db = ref.conv_transpose_grad(dy, x, w, stride=stride, padding=padding,
                                         output_padding=output_padding, groups=groups,
                                         dilation=dilation, bias=with_bias)
    assert_close(dx, xt.grad.numpy())
    assert_close(dw, wt.grad.numpy())
    if with_bias:
        assert_close(db, bt.grad.numpy())
    else:
        assert db is None


def test_conv_transpose_asymmetric_crop_matches_torch(torch, rng, assert_close):
    """(lo, hi) padding = crop lo and hi off torch's padding-0 output."""
    x = rng.standard_normal((1, 2, 4, 3))
    w = rng.standard_normal((2, 3, 3, 2))
    full = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w),
                                                stride=2, output_padding=1).numpy()
    got = ref.conv_transpose(x, w, stride=2, padding=((2, 0), (1, 3)), output_padding=1)
    assert_close(got, full[:, :, 2:, 1:full.shape[3] - 3])


@pytest.mark.parametrize("kernel, dilation, padding, stride", [
    ((2, 3), 1, 0, 1), ((3, 2), (2, 1), (1, 2), (2, 1)), ((1, 1), 1, 0, 3), ((3, 3), 2, 2, 2),
])
def test_unfold_fold_match_torch(torch, rng, assert_close, kernel, dilation, padding, stride):
    x = rng.standard_normal((2, 3, 7, 6))
    cols_t = torch.nn.functional.unfold(torch.from_numpy(x), kernel, dilation=dilation,
                                        padding=padding, stride=stride).numpy()
    cols = ref.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    np.testing.assert_array_equal(cols, cols_t)  # a gather: exact
    c = rng.standard_normal(cols.shape)
    folded_t = torch.nn.functional.fold(torch.from_numpy(c), (7, 6), kernel, dilation=dilation,
                                        padding=padding, stride=stride).numpy()
    assert_close(ref.fold(c, (7, 6), kernel, dilation=dilation, padding=padding, stride=stride),
                 folded_t)
    # unbatched forms
    np.testing.assert_array_equal(
        ref.unfold(x[0], kernel, dilation=dilation, padding=padding, stride=stride), cols_t[0])
    assert_close(ref.fold(c[0], (7, 6), kernel, dilation=dilation, padding=padding,
                          stride=stride), folded_t[0])


@pytest.mark.parametrize("d", [1, 3])
def test_unfold_matches_conv_in_other_dims(rng, assert_close, d):
    """For d != 2 torch has no unfold: check W̃ @ unfold(x) = conv(x, W) and fold = unfold^T."""
    x = rng.standard_normal((2, 2) + SIZES[d])
    kernel = (3, 2, 2)[:d]
    w = rng.standard_normal((3, 2) + kernel)
    kwargs = dict(dilation=(2, 1, 1)[:d], padding=((1, 2), (0, 1), (1, 1))[:d],
                  stride=(2, 1, 2)[:d])
    cols = ref.unfold(x, kernel, **kwargs)
    y = ref.conv(x, w, **kwargs)
    assert_close((w.reshape(3, -1) @ cols).reshape(y.shape), y)
    c = rng.standard_normal(cols.shape)
    # <unfold(x), c> = <x, fold(c)>
    lhs = np.sum(cols * c)
    rhs = np.sum(x * ref.fold(c, SIZES[d], kernel, **kwargs))
    assert abs(lhs - rhs) <= 1e-12 * np.sum(np.abs(cols * c))


def test_unbatched_forms(rng):
    x = rng.standard_normal((2, 5, 6))
    w = rng.standard_normal((3, 2, 2, 2))
    np.testing.assert_array_equal(ref.conv(x, w, padding=1), ref.conv(x[None], w, padding=1)[0])
    wt = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_array_equal(ref.conv_transpose(x, wt, stride=2),
                                  ref.conv_transpose(x[None], wt, stride=2)[0])
