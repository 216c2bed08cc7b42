"""npconv.unfold / npconv.fold against torch F.unfold / F.fold (2-d) and the loop
reference (1-d and 3-d, which torch lacks), plus the adjoint identity and errors.

unfold is a pure gather, so it must match exactly; fold sums at most prod(k)
values per element, compared at 1e-12 of the result's scale.
"""
from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import reference as ref

CASES_2D = [
    # kernel, dilation, padding, stride
    ((2, 3), 1, 0, 1),
    (3, 1, 1, 1),
    ((3, 2), (2, 1), (1, 2), (2, 1)),
    ((1, 1), 1, 0, 3),
    ((3, 3), 2, 2, 2),
    ((7, 6), 1, 0, 1),   # one window
]


@pytest.mark.parametrize("kernel, dilation, padding, stride", CASES_2D)
def test_unfold_fold_match_torch_2d(torch, rng, assert_close, kernel, dilation, padding, stride):
    x = rng.standard_normal((2, 3, 7, 6))
    kwargs = dict(dilation=dilation, padding=padding, stride=stride)
    cols_t = torch.nn.functional.unfold(torch.from_numpy(x), kernel, **kwargs).numpy()
    cols = npconv.unfold(x, kernel, **kwargs)
    np.testing.assert_array_equal(cols, cols_t)
    c = rng.standard_normal(cols.shape)
    folded_t = torch.nn.functional.fold(torch.from_numpy(c), (7, 6), kernel, **kwargs).numpy()
    assert_close(npconv.fold(c, (7, 6), kernel, **kwargs), folded_t)
    # unbatched: (C, H, W) -> (C*prod(k), L) and back, as torch
    np.testing.assert_array_equal(npconv.unfold(x[1], kernel, **kwargs), cols_t[1])
    folded_unbatched = npconv.fold(c[1], (7, 6), kernel, **kwargs)
    assert folded_unbatched.shape == (3, 7, 6)
    assert_close(folded_unbatched, folded_t[1])


ND_CASES = [
    # x shape, kernel, dilation, padding, stride
    ((2, 3, 10), (3,), (2,), (1,), (2,)),
    ((1, 2, 9), (2,), 1, ((2, 0),), 3),
    ((2, 2, 5, 4, 6), (2, 3, 2), (1, 1, 2), (1, 0, 1), (2, 1, 1)),
    ((1, 3, 4, 4, 4), (3, 1, 2), 1, ((0, 1), (1, 1), (2, 0)), (1, 2, 1)),
    ((2, 2, 6, 5), (2, 2), 1, ((1, 0), (0, 2)), 1),   # asymmetric 2-d (not in torch)
]


@pytest.mark.parametrize("shape, kernel, dilation, padding, stride", ND_CASES)
def test_unfold_fold_match_reference_any_d(rng, assert_close, shape, kernel, dilation, padding,
                                           stride):
    x = rng.standard_normal(shape)
    kwargs = dict(dilation=dilation, padding=padding, stride=stride)
    cols = npconv.unfold(x, kernel, **kwargs)
    np.testing.assert_array_equal(cols, ref.unfold(x, kernel, **kwargs))
    c = rng.standard_normal(cols.shape)
    out = npconv.fold(c, shape[2:], kernel, **kwargs)
    assert out.shape == shape
    assert_close(out, ref.fold(c, shape[2:], kernel, **kwargs))
    # unbatched
    np.testing.assert_array_equal(npconv.unfold(x[0], kernel, **kwargs), cols[0])
    assert_close(npconv.fold(c[0], shape[2:], kernel, **kwargs), out[0])


@pytest.mark.parametrize("shape, kernel, dilation, padding, stride",
                         ND_CASES + [((2, 3, 7, 6),) + case for case in CASES_2D])
def test_adjoint_identity(rng, shape, kernel, dilation, padding, stride):
    """<unfold(x), c> = <x, fold(c)>."""
    x = rng.standard_normal(shape)
    kwargs = dict(dilation=dilation, padding=padding, stride=stride)
    cols = npconv.unfold(x, kernel, **kwargs)
    c = rng.standard_normal(cols.shape)
    folded = npconv.fold(c, shape[2:], kernel, **kwargs)
    lhs, rhs = np.sum(cols * c), np.sum(x * folded)
    assert abs(lhs - rhs) <= 1e-12 * (np.sum(np.abs(cols * c)) + np.sum(np.abs(x * folded)))


def test_unfold_is_the_conv_matrix(rng, assert_close):
    """W̃ @ unfold(x) reshaped is the convolution (the seed equation Y = W̃ X̃)."""
    x = rng.standard_normal((2, 3, 6, 7, 5))
    w = rng.standard_normal((4, 3, 2, 3, 2))
    kwargs = dict(dilation=(1, 2, 1), padding=(1, 0, 1), stride=(2, 1, 1))
    cols = npconv.unfold(x, (2, 3, 2), **kwargs)
    y = npconv.conv(x, w, **kwargs)
    assert_close((w.reshape(4, -1) @ cols).reshape(y.shape), y)


def test_dtypes_and_layouts(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    cols = npconv.unfold(x, 3, padding=1)
    assert npconv.unfold(x.astype(np.float32), 3, padding=1).dtype == np.float32
    np.testing.assert_array_equal(npconv.unfold(np.asfortranarray(x), 3, padding=1), cols)
    flipped = np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    np.testing.assert_array_equal(npconv.unfold(flipped, 3, padding=1), cols)
    c = rng.standard_normal(cols.shape)
    c_copy = c.copy()
    folded = npconv.fold(c, (7, 6), 3, padding=1)
    np.testing.assert_array_equal(c, c_copy)   # input not modified
    np.testing.assert_array_equal(npconv.fold(np.asfortranarray(c), (7, 6), 3, padding=1), folded)
    assert npconv.fold(c.astype(np.float32), (7, 6), 3, padding=1).dtype == np.float32
    with pytest.raises(TypeError, match=r"\bx\b"):
        npconv.unfold(x.astype(np.int64), 3)
    with pytest.raises(TypeError, match=r"\bcols\b"):
        npconv.fold(c.astype(np.complex128), (7, 6), 3, padding=1)


X = np.zeros((2, 3, 5, 5))


@pytest.mark.parametrize("call, name", [
    (lambda: npconv.unfold(X, 6), "kernel"),
    (lambda: npconv.unfold(X, 3, stride=0), "stride"),
    (lambda: npconv.unfold(X, 3, dilation=0), "dilation"),
    (lambda: npconv.unfold(X, 3, padding=-1), "padding"),
    (lambda: npconv.unfold(np.zeros((5, 5)), 3), r"\bx\b"),
    (lambda: npconv.unfold(np.zeros((1, 2, 3, 5, 5)), (3, 3)), r"\bx\b"),
    (lambda: npconv.unfold(X, (3, 3), stride=(1, 1, 1)), "stride"),
    (lambda: npconv.fold(np.zeros((2, 27, 8)), (5, 5), 3), "cols"),    # L must be 9
    (lambda: npconv.fold(np.zeros((2, 26, 9)), (5, 5), 3), "cols"),    # rows not C*9
    (lambda: npconv.fold(np.zeros((27,)), (5, 5), 3), "cols"),
    (lambda: npconv.fold(np.zeros((2, 27, 9)), (2, 2), 3), "kernel"),
])
def test_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
