"""The channels-last unfold (``npconv._im2row``).

Its conformance against PyTorch runs over the groups=1 part of the grids of
``test_conv`` and ``test_conv_transpose`` and the hypothesis configurations
(``algorithm="im2row"``). Here: its row layout, row runs under the workspace limit,
finite differences and what "auto" picks (float32: ``test_conv``'s float32 tests run
every GEMM kernel).

Tolerances: float64 within 1e-12 of the expected array's scale (``assert_close``: the
same products as im2col, summed in another order).
"""
from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import _args
from npconv import _im2row as ir
from npconv.convolution import select_algorithm


def _geometry(x, w, stride=1, padding=0, dilation=1, mode="zeros"):
    return _args.conv_call(x, w, None, stride, padding, dilation, 1, mode).geom


def test_rows_are_the_transposed_unfold(rng):
    """X̃ᵀ[(n, o), (m, c)] is F.unfold's X̃[n, (c, m), o] with the column order (m, c)."""
    x = rng.standard_normal((2, 3, 9, 8))
    w = np.zeros((4, 3, 3, 2))
    geom = _geometry(x, w, stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2))
    rows = ir._rows(ir._channels_last(x, geom, "zeros"), geom, slice(0, geom.out_size[0]))
    assert rows.shape == (2,) + geom.out_size + (3, 2, 3)
    expected = npconv.unfold(np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1))), (3, 2), dilation=(1, 2),
                             stride=(2, 1))                          # (n, (c, m), L)
    expected = expected.reshape(2, 3, 6, -1).transpose(0, 3, 2, 1)   # (n, L, m, c)
    np.testing.assert_array_equal(rows.reshape(2, -1, 6, 3), expected)


@pytest.mark.parametrize("limit", [2**30, 3000, 64])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_workspace_limit_splits_rows(kernel_matches_torch, rng, limit, mode):
    x = rng.standard_normal((3, 4, 9, 7))
    w = rng.standard_normal((5, 4, 3, 3))
    kernel_matches_torch(x, w, "im2row", stride=(1, 2), padding=1, dilation=(2, 1), mode=mode,
                         limit=limit)


def test_finite_differences(rng, numerical_grad, assert_close):
    """Central differences of the linear map (no truncation error; rounding ~1e-10)."""
    x = rng.standard_normal((1, 2, 6, 5))
    w = rng.standard_normal((3, 2, 3, 2))
    kwargs = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), algorithm="im2row")
    dy = rng.standard_normal(npconv.conv(x, w, **kwargs).shape)
    dx, dw, _ = npconv.conv_grad(dy, x, w, **kwargs)
    assert_close(dx, numerical_grad(lambda v: np.sum(npconv.conv(v, w, **kwargs) * dy), x), rtol=1e-8)
    assert_close(dw, numerical_grad(lambda v: np.sum(npconv.conv(x, v, **kwargs) * dy), w), rtol=1e-8)


@pytest.mark.parametrize("shape, kernel, stride, padding, expected", [
    # the passes that take im2row: forward, weight, input
    ((32, 32, 16, 16), (32, 32, 3, 3), 1, 1, (True, True, False)),     # ResNet-20 stage 2
    ((32, 64, 8, 8), (64, 64, 3, 3), 1, 1, (True, True, True)),        # stage 3
    ((32, 16, 32, 32), (32, 16, 3, 3), 2, 1, (True, True, False)),     # 16 -> 32, stride 2
    ((32, 32, 16, 16), (64, 32, 3, 3), 2, 1, (True, True, True)),      # 32 -> 64, stride 2
    ((32, 128, 16, 16), (128, 128, 3, 3), 1, 1, (False, False, False)),  # > 64 channels
    ((8, 512, 7, 7), (512, 512, 3, 3), 1, 1, (False, False, False)),   # 49 positions < 512 channels
    ((8, 64, 16, 16), (64, 64, 1, 1), 1, 0, (False, False, False)),    # pointwise: im2col needs no unfold
    ((8, 16, 16, 16, 16), (32, 16, 3, 3, 3), 1, 1, (False, False, False)),  # 3-d
])
def test_what_auto_picks(shape, kernel, stride, padding, expected):
    x = np.zeros((1,) + shape[1:])
    w = np.zeros(kernel)
    geom = _args.conv_call(x, w, None, stride, padding, 1, 1, "zeros").geom
    picked = tuple(select_algorithm("auto", geom, w.shape, kernel_pass=p) == "im2row"
                   for p in ("forward", "weight", "input"))
    assert picked == expected
