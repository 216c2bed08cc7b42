"""The ONNX backend node test cases for Conv and ConvTranspose, through npconv's API.

Inputs, attributes and expected outputs are transcribed from ONNX's
``onnx/backend/test/case/node/conv.py`` and ``convtranspose.py`` (float32 data
with small integer values, so every sum is exact in float32 and the comparison
is exact). Translation of the attributes:

* ``pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` -> our per-dim
  ``(lo, hi)`` pairs ``((x1_begin, x1_end), (x2_begin, x2_end), ...)``;
* Conv ``auto_pad="SAME_UPPER"`` = our ``padding="same"``; ``SAME_LOWER`` puts
  the odd element at the start: we compute those pads here and pass them;
* ConvTranspose ``output_shape`` -> our ``output_size=`` (picks output_padding);
  ``auto_pad`` for ConvTranspose is not in the contract (``"same"`` is an error),
  so it is given as the explicit pads the ONNX data implies.

Where ONNX's data is too big to transcribe (the 3-d case) or is computed by a
reference (the group cases), parts are transcribed and the rest is derived in
closed form or compared to npconv.reference.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import npconv
from npconv import reference as ref


def onnx_pads(pads):
    """ONNX [x1_begin, x2_begin, ..., x1_end, x2_end, ...] -> ((x1_begin, x1_end), ...)."""
    d = len(pads) // 2
    return tuple((pads[i], pads[i + d]) for i in range(d))


def same_lower_pads(in_size, kernel, stride, dilation=None):
    """ONNX SAME_LOWER: O = ceil(S/s), the odd padding element goes at the START."""
    dilation = dilation or (1,) * len(in_size)
    pairs = []
    for size, k, s, dil in zip(in_size, kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + dil * (k - 1) + 1 - size, 0)
        pairs.append((total - total // 2, total // 2))
    return tuple(pairs)


def check(got, expected):
    """ONNX data is float32 with integer values: exact in float32 and float64."""
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------
X5 = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
X75 = np.arange(35, dtype=np.float32).reshape(1, 1, 7, 5)
ONES33 = np.ones((1, 1, 3, 3), dtype=np.float32)

CONV_CASES = {
    "test_basic_conv_with_padding": (X5, dict(pads=[1, 1, 1, 1]), [
        [12., 21., 27., 33., 24.],
        [33., 54., 63., 72., 51.],
        [63., 99., 108., 117., 81.],
        [93., 144., 153., 162., 111.],
        [72., 111., 117., 123., 84.]]),
    "test_basic_conv_without_padding": (X5, dict(pads=[0, 0, 0, 0]), [
        [54., 63., 72.],
        [99., 108., 117.],
        [144., 153., 162.]]),
    "test_conv_with_strides_padding": (X75, dict(pads=[1, 1, 1, 1], strides=[2, 2]), [
        [12., 27., 24.],
        [63., 108., 81.],
        [123., 198., 141.],
        [112., 177., 124.]]),
    "test_conv_with_strides_no_padding": (X75, dict(pads=[0, 0, 0, 0], strides=[2, 2]), [
        [54., 72.],
        [144., 162.],
        [234., 252.]]),
    "test_conv_with_strides_and_asymmetric_padding": (
        X75, dict(pads=[1, 0, 1, 0], strides=[2, 2]), [
            [21., 33.],
            [99., 117.],
            [189., 207.],
            [171., 183.]]),
    "test_conv_with_autopad_same": (X5, dict(auto_pad="SAME_LOWER", strides=[2, 2]), [
        [12., 27., 24.],
        [63., 108., 81.],
        [72., 117., 84.]]),
}


@pytest.mark.parametrize("name", list(CONV_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnx_conv(name, dtype):
    x, attrs, expected = CONV_CASES[name]
    x, w = x.astype(dtype), ONES33.astype(dtype)
    expected = np.array([[expected]], dtype=dtype)
    stride = tuple(attrs.get("strides", [1, 1]))
    if attrs.get("auto_pad") == "SAME_LOWER":
        padding = same_lower_pads(x.shape[2:], w.shape[2:], stride)
    else:
        padding = onnx_pads(attrs["pads"])
    check(npconv.conv(x, w, stride=stride, padding=padding), expected)
    check(npconv.conv2d(x, w, stride=stride, padding=padding), expected)


@pytest.mark.parametrize("size, k, s", [(5, 2, 1), (6, 3, 2), (7, 4, 3), (5, 3, 2), (8, 1, 3)])
def test_onnx_same_upper_and_same_lower(torch, size, k, s):
    """SAME_UPPER (extra pad at the end) is our "same"; SAME_LOWER mirrors it."""
    rng = np.random.default_rng(size * 100 + k * 10 + s)
    x = rng.standard_normal((1, 2, size, size + 1))
    w = rng.standard_normal((3, 2, k, k))
    out = (math.ceil(size / s), math.ceil((size + 1) / s))
    lower = same_lower_pads(x.shape[2:], (k, k), (s, s))
    upper = tuple((hi, lo) for lo, hi in lower)
    y_upper = npconv.conv(x, w, stride=s, padding="same")
    assert y_upper.shape[2:] == out
    np.testing.assert_array_equal(y_upper, npconv.conv(x, w, stride=s, padding=upper))
    y_lower = npconv.conv(x, w, stride=s, padding=lower)
    assert y_lower.shape[2:] == out
    for pairs, y in ((upper, y_upper), (lower, y_lower)):
        flat = tuple(v for lo, hi in reversed(pairs) for v in (lo, hi))   # F.pad order
        expected = torch.nn.functional.conv2d(
            torch.nn.functional.pad(torch.from_numpy(x), flat), torch.from_numpy(w),
            stride=s).numpy()
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12 * np.max(np.abs(expected)))


# ---------------------------------------------------------------------------
# ConvTranspose
# ---------------------------------------------------------------------------
X33 = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
ONES_1x2x33 = np.ones((1, 2, 3, 3), dtype=np.float32)

# test_convtranspose: one output channel (both channels are identical)
Y_CONVTRANSPOSE = np.array([
    [0., 1., 3., 3., 2.],
    [3., 8., 15., 12., 7.],
    [9., 21., 36., 27., 15.],
    [9., 20., 33., 24., 13.],
    [6., 13., 21., 15., 8.]], dtype=np.float32)

# test_convtranspose_pad / _output_shape / _kernel_shape (strides [3, 2]), one channel
Y_STRIDES_32 = np.array([
    [0., 0., 1., 1., 3., 2., 2., 0.],
    [0., 0., 1., 1., 3., 2., 2., 0.],
    [0., 0., 1., 1., 3., 2., 2., 0.],
    [3., 3., 7., 4., 9., 5., 5., 0.],
    [3., 3., 7., 4., 9., 5., 5., 0.],
    [3., 3., 7., 4., 9., 5., 5., 0.],
    [6., 6., 13., 7., 15., 8., 8., 0.],
    [6., 6., 13., 7., 15., 8., 8., 0.],
    [6., 6., 13., 7., 15., 8., 8., 0.],
    [0., 0., 0., 0., 0., 0., 0., 0.]], dtype=np.float32)

# test_convtranspose_pads (strides [3, 2], pads [1, 2, 1, 2]), one channel
Y_PADS = np.array([
    [1., 1., 3.],
    [1., 1., 3.],
    [7., 4., 9.],
    [7., 4., 9.],
    [7., 4., 9.],
    [13., 7., 15.],
    [13., 7., 15.]], dtype=np.float32)

# test_convtranspose_autopad_same (SAME_UPPER, strides [2, 2]), one channel
Y_AUTOPAD_SAME = np.array([
    [0., 0., 1., 1., 3., 2.],
    [0., 0., 1., 1., 3., 2.],
    [3., 3., 8., 5., 12., 7.],
    [3., 3., 7., 4., 9., 5.],
    [9., 9., 20., 11., 24., 13.],
    [6., 6., 13., 7., 15., 8.]], dtype=np.float32)


def two_channels(plane):
    return np.stack([plane, plane])[None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnx_convtranspose(dtype):
    check(npconv.conv_transpose(X33.astype(dtype), ONES_1x2x33.astype(dtype)),
          two_channels(Y_CONVTRANSPOSE).astype(dtype))


def test_onnx_convtranspose_1d():
    x = np.array([[[0., 1., 2.]]], dtype=np.float32)          # (1, 1, 3)
    w = np.ones((1, 2, 3), dtype=np.float32)                  # (1, 2, 3)
    expected = np.array([[[0., 1., 3., 3., 2.], [0., 1., 3., 3., 2.]]], dtype=np.float32)
    check(npconv.conv_transpose(x, w), expected)
    check(npconv.conv_transpose1d(x, w), expected)


def test_onnx_convtranspose_3d():
    x = np.arange(60, dtype=np.float32).reshape(1, 1, 3, 4, 5)
    w = np.ones((1, 2, 3, 3, 3), dtype=np.float32)
    y = npconv.conv_transpose3d(x, w)
    assert y.shape == (1, 2, 5, 6, 7) and y.dtype == np.float32
    # first and middle depth planes of channel 0, transcribed
    np.testing.assert_array_equal(y[0, 0, 0], [
        [0., 1., 3., 6., 9., 7., 4.],
        [5., 12., 21., 27., 33., 24., 13.],
        [15., 33., 54., 63., 72., 51., 27.],
        [30., 63., 99., 108., 117., 81., 42.],
        [25., 52., 81., 87., 93., 64., 33.],
        [15., 31., 48., 51., 54., 37., 19.]])
    np.testing.assert_array_equal(y[0, 0, 2], [
        [60., 123., 189., 198., 207., 141., 72.],
        [135., 276., 423., 441., 459., 312., 159.],
        [225., 459., 702., 729., 756., 513., 261.],
        [270., 549., 837., 864., 891., 603., 306.],
        [195., 396., 603., 621., 639., 432., 219.],
        [105., 213., 324., 333., 342., 231., 117.]])
    np.testing.assert_array_equal(y[0, 0, 4, 2], [135., 273., 414., 423., 432., 291., 147.])
    np.testing.assert_array_equal(y[0, 1], y[0, 0])
    np.testing.assert_array_equal(y, ref.conv_transpose(x, w).astype(np.float32))


def test_onnx_convtranspose_pad():
    """strides [3, 2], output_padding [1, 1]: the extra row/column is at the end."""
    y = npconv.conv_transpose(X33, ONES_1x2x33, stride=(3, 2), output_padding=(1, 1))
    check(y, two_channels(Y_STRIDES_32))


def test_onnx_convtranspose_output_shape():
    """strides [3, 2], output_shape [10, 8] -> output_size picks output_padding (1, 1)."""
    y = npconv.conv_transpose(X33, ONES_1x2x33, stride=(3, 2), output_size=(10, 8))
    check(y, two_channels(Y_STRIDES_32))
    check(npconv.conv_transpose2d(X33, ONES_1x2x33, stride=(3, 2), output_size=(1, 2, 10, 8)),
          two_channels(Y_STRIDES_32))


def test_onnx_convtranspose_kernel_shape():
    """kernel_shape [3, 3] (implied by W), output_shape [10, 8] and output_padding [1, 1]."""
    assert npconv.conv_transpose_output_size((3, 3), (3, 3), stride=(3, 2),
                                             output_padding=(1, 1)) == (10, 8)
    check(npconv.conv_transpose(X33, ONES_1x2x33, stride=(3, 2), output_padding=(1, 1)),
          two_channels(Y_STRIDES_32))


def test_onnx_convtranspose_pads():
    padding = onnx_pads([1, 2, 1, 2])
    assert padding == ((1, 1), (2, 2))
    check(npconv.conv_transpose(X33, ONES_1x2x33, stride=(3, 2), padding=padding),
          two_channels(Y_PADS))


def test_onnx_convtranspose_dilations():
    x = np.array([[[[3., 8., 1.], [9., 5., 7.], [3., 2., 6.]]]], dtype=np.float32)
    w = np.array([[[[7., 2.], [1., 9.]]]], dtype=np.float32)
    expected = np.array([[[
        [21., 56., 13., 16., 2.],
        [63., 35., 67., 10., 14.],
        [24., 22., 76., 76., 21.],
        [9., 5., 88., 45., 63.],
        [3., 2., 33., 18., 54.]]]], dtype=np.float32)
    check(npconv.conv_transpose(x, w, dilation=2), expected)


def test_onnx_convtranspose_autopad_same():
    """SAME_UPPER, strides [2, 2]: output = input * stride = 6; the full output is
    (3-1)*2 + 3 = 7, so the total crop is 1 and ONNX's data takes it from the END."""
    stride = 2
    out = 3 * stride
    total = (3 - 1) * stride + (3 - 1) + 1 - out
    pairs = ((total // 2, total - total // 2),) * 2
    assert pairs == ((0, 1), (0, 1))
    check(npconv.conv_transpose(X33, ONES_1x2x33, stride=stride, padding=pairs),
          two_channels(Y_AUTOPAD_SAME))


# Number of (input position, kernel offset) pairs landing on each output of a 3x3 input
# with a 3x3 kernel: the transposed conv of a ones input (exact, obvious by counting).
COVERAGE = np.array([
    [1., 2., 3., 2., 1.],
    [2., 4., 6., 4., 2.],
    [3., 6., 9., 6., 3.],
    [2., 4., 6., 4., 2.],
    [1., 2., 3., 2., 1.]], dtype=np.float32)


def test_onnx_convtranspose_group_2():
    """x = arange(18) as (1, 2, 3, 3), W ones (2, 1, 3, 3), group 2: channel c sees only
    input channel c = arange(9) + 9c, so by linearity y_c = Y_CONVTRANSPOSE + 9c * COVERAGE."""
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)
    w = np.ones((2, 1, 3, 3), dtype=np.float32)
    expected = np.stack([Y_CONVTRANSPOSE + 9 * c * COVERAGE for c in range(2)])[None]
    check(npconv.conv_transpose(x, w, groups=2), expected)
    check(npconv.conv_transpose(np.ones((1, 1, 3, 3), np.float32), ONES_1x2x33),
          two_channels(COVERAGE))


def test_onnx_convtranspose_group_2_image_3():
    """Same with a batch of 3 images (ONNX's shapes; values arange(54))."""
    x = np.arange(54, dtype=np.float32).reshape(3, 2, 3, 3)
    w = np.ones((2, 1, 3, 3), dtype=np.float32)
    expected = np.stack([np.stack([Y_CONVTRANSPOSE + 9 * (2 * n + c) * COVERAGE
                                   for c in range(2)]) for n in range(3)])
    check(npconv.conv_transpose(x, w, groups=2), expected)
    np.testing.assert_array_equal(expected, ref.conv_transpose(x, w, groups=2))


def test_onnx_conv_is_adjoint_of_convtranspose_on_onnx_data():
    """The ConvTranspose cases' gradients w.r.t. x are plain Convs of dy (float64)."""
    x = X33.astype(np.float64)
    w = ONES_1x2x33.astype(np.float64)
    dy = np.arange(2 * 7 * 3, dtype=np.float64).reshape(1, 2, 7, 3)
    grads = npconv.conv_transpose_grad(dy, x, w, stride=(3, 2), padding=((1, 1), (2, 2)))
    expected = ref.conv_transpose_grad(dy, x, w, stride=(3, 2), padding=((1, 1), (2, 2)))
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)   # integer-valued sums: exact
