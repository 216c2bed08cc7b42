"""Functional pooling (npconv.pooling) against PyTorch and by finite differences.

Max pooling selects input values, so y and dx equal PyTorch's exactly (dx
sums at most prod(k) routed values, in a possibly different order: compared
with rtol 1e-12 of the scale). Average pooling divides window sums whose
summation order differs: rtol 1e-12 relative to the output scale.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from npconv import pooling as P
from npconv.testing import gradcheck

RTOL = 1e-12


def _torch_pool(torch, name, x, dy, *args, **kwargs):
    x_t = torch.tensor(x, requires_grad=True)
    y_t = getattr(torch.nn.functional, name)(x_t, *args, **kwargs)
    y_t.backward(torch.tensor(dy) if dy is not None else torch.ones_like(y_t))
    return y_t.detach().numpy(), x_t.grad.numpy()


MAX_CASES = [  # d, shape, kernel, stride, padding, dilation, ceil_mode
    (2, (2, 3, 7, 8), 2, None, 0, 1, False),
    (2, (2, 3, 7, 8), 3, 2, 1, 1, True),
    (2, (1, 2, 9, 9), 3, 2, 1, 2, True),
    (2, (2, 2, 8, 7), (3, 2), (2, 1), (1, 0), 1, True),
    (2, (1, 2, 5, 5), 2, 2, 1, 1, True),
    (2, (2, 2, 6, 6), 3, 1, 1, 1, False),
    (2, (3, 6, 6), 2, 1, 0, 2, False),           # unbatched
    (1, (2, 3, 11), 3, 2, 1, 1, True),
    (3, (1, 2, 5, 4, 6), 2, (1, 2, 2), (1, 0, 1), 1, True),
]


@pytest.mark.parametrize("d, shape, k, s, p, dil, ceil", MAX_CASES)
def test_max_pool_matches_torch(d, shape, k, s, p, dil, ceil, torch, assert_close, rng):
    x = rng.standard_normal(shape)
    y = getattr(P, f"max_pool{d}d")(x, k, s, p, dil, ceil)
    dy = rng.standard_normal(y.shape)
    y_t, dx_t = _torch_pool(torch, f"max_pool{d}d", x, dy, k, s, p, dil, ceil)
    np.testing.assert_array_equal(y, y_t)
    assert_close(getattr(P, f"max_pool{d}d_grad")(dy, x, k, s, p, dil, ceil), dx_t, RTOL)


AVG_CASES = [  # d, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    (2, (2, 3, 7, 8), 2, None, 0, False, True, None),
    (2, (2, 3, 7, 8), 3, 2, 1, True, True, None),
    (2, (2, 3, 7, 8), 3, 2, 1, True, False, None),
    (2, (1, 2, 5, 5), 2, 2, 1, True, True, None),
    (2, (1, 2, 5, 5), 2, 2, 1, True, False, None),
    (2, (2, 2, 6, 7), (3, 2), (1, 2), (1, 1), False, True, 5),
    (2, (3, 6, 6), 3, 3, 1, True, False, None),  # unbatched
    (1, (2, 3, 10), 4, 3, 2, True, False, None),
    (3, (1, 2, 5, 4, 6), 2, (1, 2, 2), (1, 0, 1), True, True, None),
]


@pytest.mark.parametrize("d, shape, k, s, p, ceil, include, divisor", AVG_CASES)
def test_avg_pool_matches_torch(d, shape, k, s, p, ceil, include, divisor, torch, assert_close, rng):
    x = rng.standard_normal(shape)
    args = (k, s, p, ceil, include, divisor)
    y = getattr(P, f"avg_pool{d}d")(x, *args)
    dy = rng.standard_normal(y.shape)
    torch_args = args if d != 1 else args[:5]          # avg_pool1d has no divisor_override
    y_t, dx_t = _torch_pool(torch, f"avg_pool{d}d", x, dy, *torch_args)
    assert_close(y, y_t, RTOL)
    assert_close(getattr(P, f"avg_pool{d}d_grad")(dy, x, *args), dx_t, RTOL)


@pytest.mark.parametrize("d, shape, output_size", [
    (2, (2, 3, 7, 8), 1), (2, (2, 3, 7, 8), (3, 5)), (2, (2, 3, 7, 8), (None, 3)),
    (2, (1, 2, 4, 5), (6, 11)),                    # output larger than input: repeated bins
    (2, (3, 7, 5), (2, 2)),                        # unbatched
    (1, (2, 3, 10), 4), (3, (1, 2, 5, 4, 6), (2, 3, 4)),
])
def test_adaptive_avg_pool_matches_torch(d, shape, output_size, torch, assert_close, rng):
    x = rng.standard_normal(shape)
    y = getattr(P, f"adaptive_avg_pool{d}d")(x, output_size)
    dy = rng.standard_normal(y.shape)
    y_t, dx_t = _torch_pool(torch, f"adaptive_avg_pool{d}d", x, dy, output_size)
    assert_close(y, y_t, RTOL)
    assert_close(getattr(P, f"adaptive_avg_pool{d}d_grad")(dy, x, output_size), dx_t, RTOL)


def _every_window_reads_input(size, k, s, p, dil, ceil):
    out = P.pool_out_size((size,), ((p, p),), (k,), (s,), (dil,), ceil, "test")[0]
    return all(any(0 <= i * s - p + m * dil < size for m in range(k)) for i in range(out))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_pool2d_random_geometries_match_torch(data):
    torch = pytest.importorskip("torch")
    k = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    dil = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    ceil = data.draw(st.booleans())
    include = data.draw(st.booleans())
    size = tuple(data.draw(st.integers(dl * (kk - 1) + 1 - 2 * pp if dl * (kk - 1) + 1 - 2 * pp > 0 else 1, 9))
                 for kk, pp, dl in zip(k, p, dil))
    # A window made only of padding (possible with dilation) outputs -inf; PyTorch then routes
    # its gradient to an unrelated element (its start index wraps into the next row), npconv
    # to none. Such geometries are excluded here.
    assume(all(_every_window_reads_input(*dim, ceil) for dim in zip(size, k, s, p, dil)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # Integer-valued input: many ties, so the first-maximum rule is exercised.
    x = rng.integers(-3, 4, (2, 2) + size).astype(np.float64)
    y = P.max_pool2d(x, k, s, p, dil, ceil)
    dy = rng.standard_normal(y.shape)
    y_t, dx_t = _torch_pool(torch, "max_pool2d", x, dy, k, s, p, dil, ceil)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_allclose(P.max_pool2d_grad(dy, x, k, s, p, dil, ceil), dx_t,
                               rtol=0, atol=1e-12 * max(1.0, np.abs(dx_t).max()))
    if size[0] + 2 * p[0] >= k[0] and size[1] + 2 * p[1] >= k[1]:
        y = P.avg_pool2d(x, k, s, p, ceil, include)
        dy = rng.standard_normal(y.shape)
        y_t, dx_t = _torch_pool(torch, "avg_pool2d", x, dy, k, s, p, ceil, include)
        np.testing.assert_allclose(y, y_t, rtol=0, atol=1e-12 * max(1.0, np.abs(y_t).max()))
        np.testing.assert_allclose(P.avg_pool2d_grad(dy, x, k, s, p, ceil, include), dx_t,
                                   rtol=0, atol=1e-12 * max(1.0, np.abs(dx_t).max()))


def test_max_pool_ties_route_the_gradient_to_the_first_maximum(torch):
    x = np.zeros((1, 1, 4, 4))
    dx = P.max_pool2d_grad(np.ones((1, 1, 4, 4)), x, 3, 1, 1)
    _, dx_t = _torch_pool(torch, "max_pool2d", x, None, 3, 1, 1)
    np.testing.assert_array_equal(dx, dx_t)
    # by hand: window (0, 0) reads rows/cols -1..1; its first real maximum is x[0, 0]
    assert dx[0, 0, 0, 0] == 4 and dx[0, 0, 3, 3] == 0


def test_max_pool_propagates_nan_like_torch(torch):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    x[0, 0, 0, 3] = np.nan
    dy = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    y_t, dx_t = _torch_pool(torch, "max_pool2d", x, dy, 2)
    np.testing.assert_array_equal(P.max_pool2d(x, 2), y_t)
    np.testing.assert_array_equal(P.max_pool2d_grad(dy, x, 2), dx_t)


@pytest.mark.parametrize("name, grad_name, args", [
    ("max_pool2d", "max_pool2d_grad", (3, 2, 1, 1, True)),
    ("max_pool2d", "max_pool2d_grad", (2, 1, 0, 2, False)),
    ("avg_pool2d", "avg_pool2d_grad", (3, 2, 1, True, False)),
    ("avg_pool2d", "avg_pool2d_grad", (2, 1, 1, False, True, 3)),
    ("adaptive_avg_pool2d", "adaptive_avg_pool2d_grad", ((3, 2),)),
    ("max_pool1d", "max_pool1d_grad", (3, 2, 1)),
    ("avg_pool3d", "avg_pool3d_grad", (2, 1, 1)),
])
def test_pool_gradients_by_finite_differences(name, grad_name, args, rng):
    shape = {"1d": (2, 2, 7), "2d": (2, 2, 5, 6), "3d": (1, 2, 3, 4, 3)}[name[-2:]]
    x = rng.standard_normal(shape)
    fn, grad = getattr(P, name), getattr(P, grad_name)
    assert gradcheck(lambda v: fn(v, *args), x, grad_fn=lambda dy, v: grad(dy, v, *args))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_pool_dtypes(dtype, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    for y in (P.max_pool2d(x, 2), P.avg_pool2d(x, 3, 1, 1), P.adaptive_avg_pool2d(x, 2)):
        assert y.dtype == dtype
    np.testing.assert_array_equal(P.max_pool2d(x, 2),
                                  P.max_pool2d(x.astype(np.float64), 2).astype(dtype))
    assert P.max_pool2d_grad(np.ones((2, 3, 3, 3), dtype), x, 2).dtype == dtype


def test_pool_accepts_any_memory_layout(rng):
    x = rng.standard_normal((2, 3, 8, 10))
    for view in (x[:, :, ::-1], np.asfortranarray(x), x[..., ::2]):
        for fn in (lambda v: P.max_pool2d(v, 3, 2, 1), lambda v: P.avg_pool2d(v, 2),
                   lambda v: P.adaptive_avg_pool2d(v, 3)):
            np.testing.assert_array_equal(fn(view), fn(np.ascontiguousarray(view)))
    before = x.copy()
    P.max_pool2d_grad(np.ones((2, 3, 4, 5)), x, 2)
    np.testing.assert_array_equal(x, before)       # input not modified


def test_pool_errors_name_the_argument():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"max_pool2d: 'padding' must be at most half the kernel"):
        P.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel larger than the padded input"):
        P.max_pool2d(x, 5)
    with pytest.raises(ValueError, match=r"avg_pool2d: 'x' must be 3 or 4-dimensional"):
        P.avg_pool2d(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match=r"avg_pool2d: 'stride' must be >= 1"):
        P.avg_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match=r"'divisor_override' must be a nonzero int"):
        P.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match=r"max_pool2d_grad: 'dy' must have the output's shape "
                                         r"\(1, 1, 2, 2\), got \(1, 1, 3, 3\)"):
        P.max_pool2d_grad(np.zeros((1, 1, 3, 3)), x, 2)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: 'output_size' must be >= 1"):
        P.adaptive_avg_pool2d(x, 0)
    with pytest.raises(TypeError, match="'x' must have dtype float16, float32 or float64"):
        P.max_pool2d(np.zeros((1, 1, 4, 4), dtype=np.int64), 2)
    with pytest.raises(ValueError, match="'padding' must be an int"):
        P.max_pool2d(x, 2, padding="same")
