"""Winograd F(2x2, 3x3) kernels (``npconv._winograd``) against the im2col path.

The three kernels are called directly with the Geometry of ``npconv._args.conv_call``
and compared with the public ``npconv.conv`` / ``npconv.conv_grad(algorithm="im2col")``.

Tolerances:
* float64: 1e-12 of the result's largest magnitude. Both sides sum a few hundred
  products whose rounding is ~1e-16 of that scale; the Winograd transforms add a
  handful of exact-scale adds (entries 0, ±1, ±1/2), so 1e-12 is a 1000x margin,
  while any tile/indexing error is O(1).
* float32: the error against float64 truth, relative to the problem scale
  max Σ|w||x| (what a correct float32 sum of those terms can be off by), must stay
  within 4x im2col's own float32 error on the same problem (measured: 0.6-2.1x,
  see the module docstring; 0.4-1.75x on this test's problem over 6 seeds) and below
  4e-7 of the scale (~3.4 float32 ulps; measured <= 8.2e-8).
"""
from __future__ import annotations

import numpy as np
import pytest

import npconv
from npconv import _args
from npconv import _winograd as wg

MODES = ("zeros", "reflect", "replicate", "circular")

# (N, C_in, C_out, groups, H, W, padding pairs)
CASES = [
    (2, 3, 4, 1, 5, 7, ((1, 1), (1, 1))),      # odd output, 'same'-like
    (1, 4, 6, 2, 6, 6, ((0, 2), (3, 1))),      # asymmetric pads, groups
    (3, 4, 4, 4, 9, 4, ((1, 0), (2, 2))),      # depthwise-shaped groups
    (2, 2, 3, 1, 4, 5, ((2, 1), (0, 1))),
    (2, 6, 3, 3, 7, 8, ((3, 3), (1, 4))),      # pads > 2: dx crops δ
    (2, 2, 2, 1, 3, 3, ((0, 0), (0, 0))),      # one output pixel, no padding
    (1, 5, 7, 1, 11, 13, ((1, 1), (1, 1))),
]


def _geometry(x, weight, pads, groups, mode):
    return _args.conv_call(x, weight, None, 1, pads, 1, groups, mode).geom


def _fits(mode, pads, h, w):
    """reflect needs pad < size, circular pad <= size (PyTorch's rule, checked by conv_call)."""
    limit = (lambda p, s: p < s) if mode == "reflect" else (lambda p, s: p <= s)
    return mode in ("zeros", "replicate") or all(limit(p, s) for pair, s in zip(pads, (h, w)) for p in pair)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_float64_matches_im2col(case, mode, rng, assert_close):
    batch, c_in, c_out, groups, h, w, pads = case
    if not _fits(mode, pads, h, w):
        pytest.skip("padding too large for this mode")
    x = rng.standard_normal((batch, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in // groups, 3, 3))
    geom = _geometry(x, weight, pads, groups, mode)
    assert wg.applicable(geom, weight.shape)
    y = npconv.conv(x, weight, padding=pads, groups=groups, padding_mode=mode, algorithm="im2col")
    dy = rng.standard_normal(y.shape)
    grads = npconv.conv_grad(dy, x, weight, padding=pads, groups=groups, padding_mode=mode,
                             bias=False, algorithm="im2col")
    assert_close(wg.winograd_forward(x, weight, geom, mode), y, err_msg="forward")
    assert_close(wg.winograd_input_grad(dy, weight, geom, mode), grads.dx, err_msg="dx")
    assert_close(wg.winograd_weight_grad(x, dy, geom, mode), grads.dweight, err_msg="dweight")


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_gradients_by_finite_differences(mode, rng, numerical_grad, assert_close):
    # L = sum(y * dy) is bilinear, so central differences are exact up to rounding
    # (~1e-16 |L| / eps = 1e-12 of the scale); 1e-8 leaves a wide margin.
    x = rng.standard_normal((2, 2, 4, 5))
    weight = rng.standard_normal((3, 2, 3, 3))
    pads = ((1, 2), (2, 0))
    geom = _geometry(x, weight, pads, 1, mode)
    dy = rng.standard_normal((2, 3) + geom.out_size)

    def loss_x(x_):
        return float(np.sum(wg.winograd_forward(x_, weight, geom, mode) * dy))

    def loss_w(w_):
        return float(np.sum(wg.winograd_forward(x, w_, geom, mode) * dy))

    assert_close(wg.winograd_input_grad(dy, weight, geom, mode), numerical_grad(loss_x, x), rtol=1e-8)
    assert_close(wg.winograd_weight_grad(x, dy, geom, mode), numerical_grad(loss_w, weight), rtol=1e-8)


def test_float32_error_within_multiple_of_im2col(rng):
    x64 = rng.uniform(-1, 1, (2, 32, 24, 24))
    w64 = rng.uniform(-1, 1, (32, 32, 3, 3))
    geom = _geometry(x64, w64, 1, 1, "zeros")
    dy64 = rng.uniform(-1, 1, (2, 32) + geom.out_size)
    x32, w32, dy32 = (a.astype(np.float32) for a in (x64, w64, dy64))
    truth = npconv.conv_grad(dy64, x64, w64, padding=1, bias=False, algorithm="im2col")
    y64 = npconv.conv(x64, w64, padding=1, algorithm="im2col")
    # problem scales: the largest sum of |terms| of an output / input-grad / weight-grad element
    scales = (npconv.conv(abs(x64), abs(w64), padding=1).max(),
              npconv.conv_grad(abs(dy64), abs(x64), abs(w64), padding=1, bias=False).dx.max(),
              npconv.conv_grad(abs(dy64), abs(x64), abs(w64), padding=1, bias=False).dweight.max())
    im2col = npconv.conv_grad(dy32, x32, w32, padding=1, bias=False, algorithm="im2col")
    im2col_results = (npconv.conv(x32, w32, padding=1, algorithm="im2col"), im2col.dx, im2col.dweight)
    winograd_results = (wg.winograd_forward(x32, w32, geom, "zeros"),
                        wg.winograd_input_grad(dy32, w32, geom, "zeros"),
                        wg.winograd_weight_grad(x32, dy32, geom, "zeros"))
    for name, wino, ref, true, scale in zip(("forward", "dx", "dweight"), winograd_results,
                                            im2col_results, (y64, truth.dx, truth.dweight), scales):
        assert wino.dtype == np.float32, name
        wino_err = np.abs(wino - true).max() / scale
        ref_err = np.abs(ref - true).max() / scale
        assert wino_err <= 4 * ref_err, f"{name}: winograd {wino_err:.2e} vs im2col {ref_err:.2e}"
        assert wino_err <= 4e-7, f"{name}: winograd float32 error {wino_err:.2e} of the scale"


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_results_do_not_depend_on_chunking(mode, rng, assert_close):
    x = rng.standard_normal((5, 4, 10, 9))
    weight = rng.standard_normal((6, 2, 3, 3))
    pads = ((1, 2), (1, 1))
    geom = _geometry(x, weight, pads, 2, mode)
    dy = rng.standard_normal((5, 6) + geom.out_size)

    def run():
        return (wg.winograd_forward(x, weight, geom, mode), wg.winograd_input_grad(dy, weight, geom, mode),
                wg.winograd_weight_grad(x, dy, geom, mode))

    whole = run()
    # Workspace per sample (module docstring): 16·(C_in + C_out)·8 bytes per tile slot,
    # (T_h + 1)·(T_w + 1) slots (a spare tile row and column): forward / dweight (11x9
    # output) 16·10·8·7·6 = 53 760, dx (10x9) 46 080; one tile row 16·10·8·6 = 7 680.
    for limit in (60_000, 120_000, 170_000):   # 1, 2, 3 samples per chunk: bit-identical
        with npconv.workspace_limit(limit):
            for got, want in zip(run(), whole):
                np.testing.assert_array_equal(got, want)
    with npconv.workspace_limit(5_000):   # under one tile row (7 680): one-row pieces, equal to rounding
        for got, want in zip(run(), whole):
            assert_close(got, want)


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    geom = _geometry(x, weight, 1, 1, "zeros")
    dy = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    threads = npconv.get_num_threads()

    def run():
        return (wg.winograd_forward(x, weight, geom, "zeros"), wg.winograd_input_grad(dy, weight, geom, "zeros"),
                wg.winograd_weight_grad(x, dy, geom, "zeros"))

    try:
        npconv.set_num_threads(1)
        single = run()
        npconv.set_num_threads(2)
        for got, want in zip(run(), single):
            np.testing.assert_array_equal(got, want)
    finally:
        npconv.set_num_threads(threads)


def test_applicable():
    x = np.zeros((1, 4, 8, 8))

    def geom(weight_shape, **kw):
        return _args.conv_call(x, np.zeros(weight_shape), None, kw.get("stride", 1), kw.get("padding", 1),
                               kw.get("dilation", 1), kw.get("groups", 1), "zeros").geom

    assert wg.applicable(geom((4, 4, 3, 3)), (4, 4, 3, 3))
    assert wg.applicable(geom((4, 2, 3, 3), groups=2, padding=((0, 2), (1, 0))), (4, 2, 3, 3))
    assert not wg.applicable(geom((4, 4, 3, 3), stride=2), (4, 4, 3, 3))
    assert not wg.applicable(geom((4, 4, 3, 3), dilation=2), (4, 4, 3, 3))
    assert not wg.applicable(geom((4, 4, 5, 5)), (4, 4, 5, 5))
    assert not wg.applicable(geom((4, 4, 3, 1)), (4, 4, 3, 1))
    x1 = np.zeros((1, 4, 8))
    g1 = _args.conv_call(x1, np.zeros((4, 4, 3)), None, 1, 1, 1, 1, "zeros").geom
    assert not wg.applicable(g1, (4, 4, 3))


# --------------------------------------------------------------------------
# through the public API, against PyTorch
# --------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["winograd", "auto"])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_public_api_matches_torch(torch, assert_close, algorithm, mode):
    """conv, conv_grad, conv_transpose and conv_transpose_grad with the Winograd kernel,
    float64, 1e-12 of the scale (see the module docstring). 96 channels at 40x40 is
    where "auto" picks Winograd for every pass (>= 80 channels, L·C >= 100 000,
    C²·L >= 14e6)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 96, 40, 40))
    w = rng.standard_normal((96, 96, 3, 3))
    b = rng.standard_normal(96)
    call = _args.conv_call(x, w, b, 1, 1, 1, 1, mode)
    from npconv.convolution import select_algorithm
    for kernel_pass in ("forward", "input", "weight"):
        assert select_algorithm("auto", call.geom, w.shape, kernel_pass=kernel_pass) == "winograd"
    F = torch.nn.functional
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(F.pad(tx, (1, 1, 1, 1), mode="constant" if mode == "zeros" else mode), tw, tb)
    y = npconv.conv(x, w, b, padding=1, padding_mode=mode, algorithm=algorithm)
    assert_close(y, ty.detach().numpy())
    dy = rng.standard_normal(y.shape)
    (ty * torch.tensor(dy)).sum().backward()
    grads = npconv.conv_grad(dy, x, w, padding=1, padding_mode=mode, algorithm=algorithm)
    for got, expected in zip(grads, (tx.grad, tw.grad, tb.grad)):
        assert_close(got, expected.numpy())
    if mode != "zeros":
        return
    # transposed: weight (C_in, C_out, 3, 3), stride 1 - the adjoint runs the same kernels
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    ty = F.conv_transpose2d(tx, tw, padding=1)
    y = npconv.conv_transpose(x, w, padding=1, algorithm=algorithm)
    assert_close(y, ty.detach().numpy())
    (ty * torch.tensor(dy)).sum().backward()
    grads = npconv.conv_transpose_grad(dy, x, w, padding=1, algorithm=algorithm, bias=False)
    assert_close(grads.dx, tx.grad.numpy())
    assert_close(grads.dweight, tw.grad.numpy())


def test_winograd_rejects_other_geometries():
    x = np.zeros((1, 4, 8, 8))
    for kwargs in ({"stride": 2}, {"dilation": 2}):
        with pytest.raises(ValueError, match="algorithm"):
            npconv.conv(x, np.zeros((4, 4, 3, 3)), algorithm="winograd", **kwargs)
    with pytest.raises(ValueError, match="algorithm"):
        npconv.conv(x, np.zeros((4, 4, 5, 5)), algorithm="winograd")
    with pytest.raises(ValueError, match="dx_method"):
        npconv.conv_grad(np.zeros((1, 4, 6, 6)), x, np.zeros((4, 4, 3, 3)), algorithm="winograd",
                         dx_method="fold")
