"""Every layer of npconv.nn against PyTorch (float64) and by finite differences.

For each layer: copy torch's state_dict in with load_state_dict, then compare
forward output, input gradient and every parameter gradient (torch's names
and ours are the same dotted keys), check state_dict keys/shapes, and run
gradcheck. Tolerance: rtol 1e-12 relative to the largest |expected| (the
conftest ``assert_close``): both sides compute the same sums in float64 in a
different order, so they differ by a few ulps of the terms' scale.
"""
from __future__ import annotations

import numpy as np
import pytest

from npconv import nn
from npconv.testing import gradcheck

RTOL = 1e-12


def _torch_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def compare_with_torch(ours, theirs, x, torch, assert_close, rng, forward_kwargs=None,
                       check_grad=True):
    """Load torch's weights into ``ours`` and compare y, dx and all parameter grads."""
    forward_kwargs = forward_kwargs or {}
    their_state = _torch_state(theirs)
    our_state = ours.state_dict()
    assert list(our_state) == list(their_state)
    assert {k: v.shape for k, v in our_state.items()} == {k: v.shape for k, v in their_state.items()}
    ours.load_state_dict(their_state)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t, **forward_kwargs)
    y = ours(x, **forward_kwargs)
    assert y.dtype == np.float64
    assert_close(y, y_t.detach().numpy(), RTOL, err_msg="forward")
    dy = rng.standard_normal(y.shape)
    y_t.backward(torch.tensor(dy))
    dx = ours.backward(dy)
    assert_close(dx, x_t.grad.numpy(), RTOL, err_msg="dx")
    their_grads = {name: p.grad.numpy() for name, p in theirs.named_parameters()}
    our_params = dict(ours.named_parameters())
    assert list(our_params) == list(their_grads)
    for name, grad in their_grads.items():
        assert_close(our_params[name].grad, grad, RTOL, err_msg=f"grad of {name}")
    for name, buffer in _torch_state(theirs).items():       # BatchNorm running stats
        assert_close(ours.state_dict()[name], buffer, RTOL, err_msg=name)
    if check_grad:
        assert gradcheck(ours, x)


# (name, our factory, torch factory (given torch.nn), input shape, forward kwargs)
CONV_CASES = [
    ("conv1d", lambda: nn.Conv1d(3, 4, 3, dtype=np.float64), lambda t: t.Conv1d(3, 4, 3), (2, 3, 9), {}),
    ("conv1d_s2_p2_d2", lambda: nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2, dtype=np.float64),
     lambda t: t.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2), (2, 2, 11), {}),
    ("conv2d", lambda: nn.Conv2d(3, 4, 3, dtype=np.float64), lambda t: t.Conv2d(3, 4, 3), (2, 3, 6, 7), {}),
    ("conv2d_stride_pad_groups", lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                                    groups=2, dtype=np.float64),
     lambda t: t.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2), (2, 4, 7, 6), {}),
    ("conv2d_nobias_dilation", lambda: nn.Conv2d(2, 3, 3, dilation=2, padding=2, bias=False,
                                                  dtype=np.float64),
     lambda t: t.Conv2d(2, 3, 3, dilation=2, padding=2, bias=False), (2, 2, 7, 7), {}),
    ("conv2d_same", lambda: nn.Conv2d(2, 3, 4, padding="same", dtype=np.float64),
     lambda t: t.Conv2d(2, 3, 4, padding="same"), (2, 2, 6, 5), {}),
    ("conv2d_reflect", lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", dtype=np.float64),
     lambda t: t.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 2, 5, 6), {}),
    ("conv2d_circular", lambda: nn.Conv2d(2, 3, 3, padding=2, padding_mode="circular",
                                           dtype=np.float64),
     lambda t: t.Conv2d(2, 3, 3, padding=2, padding_mode="circular"), (1, 2, 5, 6), {}),
    ("conv2d_replicate", lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="replicate",
                                            dtype=np.float64),
     lambda t: t.Conv2d(2, 2, 3, padding=1, padding_mode="replicate"), (2, 2, 4, 5), {}),
    ("conv2d_unbatched", lambda: nn.Conv2d(3, 2, 3, dtype=np.float64), lambda t: t.Conv2d(3, 2, 3),
     (3, 5, 5), {}),
    ("conv3d", lambda: nn.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=1, dtype=np.float64),
     lambda t: t.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=1), (1, 2, 3, 4, 3), {}),
    ("convT1d", lambda: nn.ConvTranspose1d(3, 2, 3, stride=2, dtype=np.float64),
     lambda t: t.ConvTranspose1d(3, 2, 3, stride=2), (2, 3, 5), {}),
    ("convT2d", lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                           dtype=np.float64),
     lambda t: t.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 3, 4), {}),
    ("convT2d_dilation_nobias", lambda: nn.ConvTranspose2d(2, 3, 2, stride=(1, 2), dilation=2,
                                                           bias=False, dtype=np.float64),
     lambda t: t.ConvTranspose2d(2, 3, 2, stride=(1, 2), dilation=2, bias=False), (2, 2, 3, 3), {}),
    ("convT2d_output_size", lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype=np.float64),
     lambda t: t.ConvTranspose2d(2, 3, 3, stride=2, padding=1), (2, 2, 3, 4),
     {"output_size": (6, 8)}),
    ("convT3d", lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, dtype=np.float64),
     lambda t: t.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 2, 3, 2), {}),
    ("linear", lambda: nn.Linear(5, 3, dtype=np.float64), lambda t: t.Linear(5, 3), (4, 5), {}),
    ("linear_3d_nobias", lambda: nn.Linear(4, 3, bias=False, dtype=np.float64),
     lambda t: t.Linear(4, 3, bias=False), (2, 3, 4), {}),
]

PARAMETER_FREE_CASES = [
    ("relu", lambda: nn.ReLU(), lambda t: t.ReLU(), (2, 3, 4, 4)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), lambda t: t.LeakyReLU(0.2), (2, 3, 4, 4)),
    ("tanh", lambda: nn.Tanh(), lambda t: t.Tanh(), (2, 3, 4)),
    ("sigmoid", lambda: nn.Sigmoid(), lambda t: t.Sigmoid(), (2, 3, 4)),
    ("maxpool", lambda: nn.MaxPool2d(2), lambda t: t.MaxPool2d(2), (2, 3, 6, 6)),
    ("maxpool_ceil_pad_dil", lambda: nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
     lambda t: t.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), (2, 2, 8, 7)),
    ("maxpool_unbatched", lambda: nn.MaxPool2d(3, 1, 1), lambda t: t.MaxPool2d(3, 1, 1), (2, 5, 5)),
    ("avgpool", lambda: nn.AvgPool2d(2), lambda t: t.AvgPool2d(2), (2, 3, 6, 6)),
    ("avgpool_ceil_nopad", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
     lambda t: t.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 2, 6, 7)),
    ("avgpool_divisor", lambda: nn.AvgPool2d((2, 3), (1, 2), divisor_override=4),
     lambda t: t.AvgPool2d((2, 3), (1, 2), divisor_override=4), (1, 2, 5, 7)),
    ("adaptive_1", lambda: nn.AdaptiveAvgPool2d(1), lambda t: t.AdaptiveAvgPool2d(1), (2, 3, 5, 6)),
    ("adaptive_uneven", lambda: nn.AdaptiveAvgPool2d((3, 4)), lambda t: t.AdaptiveAvgPool2d((3, 4)),
     (2, 2, 7, 5)),
    ("adaptive_none", lambda: nn.AdaptiveAvgPool2d((None, 2)), lambda t: t.AdaptiveAvgPool2d((None, 2)),
     (2, 5, 5)),
    ("flatten", lambda: nn.Flatten(), lambda t: t.Flatten(), (2, 3, 4, 2)),
    ("flatten_range", lambda: nn.Flatten(0, 2), lambda t: t.Flatten(0, 2), (2, 3, 4, 2)),
    ("dropout_eval", lambda: nn.Dropout(0.5).eval(), lambda t: t.Dropout(0.5).eval(), (3, 4)),
]

BATCHNORM_CASES = [
    ("bn_train", lambda: nn.BatchNorm2d(3, dtype=np.float64), lambda t: t.BatchNorm2d(3), False),
    ("bn_eval", lambda: nn.BatchNorm2d(3, dtype=np.float64), lambda t: t.BatchNorm2d(3), True),
    ("bn_no_bias", lambda: nn.BatchNorm2d(3, bias=False, dtype=np.float64),
     lambda t: t.BatchNorm2d(3, bias=False), False),
    ("bn_no_affine", lambda: nn.BatchNorm2d(3, affine=False, dtype=np.float64),
     lambda t: t.BatchNorm2d(3, affine=False), False),
    ("bn_no_tracking", lambda: nn.BatchNorm2d(3, track_running_stats=False, dtype=np.float64),
     lambda t: t.BatchNorm2d(3, track_running_stats=False), False),
    ("bn_no_tracking_eval", lambda: nn.BatchNorm2d(3, track_running_stats=False, dtype=np.float64),
     lambda t: t.BatchNorm2d(3, track_running_stats=False), True),
    ("bn_momentum_none", lambda: nn.BatchNorm2d(3, momentum=None, eps=1e-3, dtype=np.float64),
     lambda t: t.BatchNorm2d(3, momentum=None, eps=1e-3), False),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name, ours, theirs, shape, kwargs", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_parametrised_layer_matches_torch(name, ours, theirs, shape, kwargs, torch, assert_close, rng):
    compare_with_torch(ours(), theirs(torch.nn), rng.standard_normal(shape), torch, assert_close,
                       rng, kwargs)


@pytest.mark.parametrize("name, ours, theirs, shape", PARAMETER_FREE_CASES,
                         ids=[c[0] for c in PARAMETER_FREE_CASES])
def test_parameter_free_layer_matches_torch(name, ours, theirs, shape, torch, assert_close, rng):
    compare_with_torch(ours(), theirs(torch.nn), rng.standard_normal(shape), torch, assert_close, rng)


@pytest.mark.parametrize("name, ours, theirs, eval_mode", BATCHNORM_CASES,
                         ids=[c[0] for c in BATCHNORM_CASES])
def test_batchnorm_matches_torch(name, ours, theirs, eval_mode, torch, assert_close, rng):
    ours, theirs = ours(), theirs(torch.nn)
    if eval_mode:
        # Non-trivial running statistics and affine parameters to evaluate with.
        with torch.no_grad():
            if theirs.track_running_stats:
                theirs.running_mean.copy_(torch.tensor(rng.standard_normal(3)))
                theirs.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, 3)))
            theirs.weight.copy_(torch.tensor(rng.standard_normal(3)))
        ours.eval()
        theirs.eval()
    x = 3.0 + 2.0 * rng.standard_normal((4, 3, 3, 5))
    compare_with_torch(ours, theirs, x, torch, assert_close, rng)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm_running_stats_after_several_steps(momentum, torch, assert_close, rng):
    ours = nn.BatchNorm2d(4, momentum=momentum, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(4, momentum=momentum)
    for step in range(5):
        x = rng.uniform(-1, 3, (3, 4, 5, 2)) * (step + 1)
        ours(x)
        theirs(torch.tensor(x))
    ours_state, their_state = ours.state_dict(), _torch_state(theirs)
    assert list(ours_state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    for key in ("running_mean", "running_var"):
        assert_close(ours_state[key], their_state[key], RTOL, err_msg=key)
    assert ours_state["num_batches_tracked"].dtype == np.int64
    assert ours_state["num_batches_tracked"].shape == ()
    assert int(ours_state["num_batches_tracked"]) == 5 == int(their_state["num_batches_tracked"])
    # eval mode then uses exactly these statistics
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 4, 3, 3))
    assert_close(ours(x), theirs(torch.tensor(x)).detach().numpy(), RTOL)


def test_batchnorm_eval_does_not_update_running_stats(rng):
    layer = nn.BatchNorm2d(2).eval()
    layer(rng.standard_normal((3, 2, 4, 4)).astype(np.float32))
    np.testing.assert_array_equal(layer.running_mean, np.zeros(2))
    np.testing.assert_array_equal(layer.running_var, np.ones(2))
    assert int(layer.num_batches_tracked) == 0


def test_batchnorm_errors():
    layer = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3.*expected input with 3 channels.*got 2"):
        layer(np.zeros((2, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*expected 4-d input.*3-d"):
        layer(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(np.zeros((1, 3, 1, 1), np.float32))


# --------------------------------------------------------------------------
# float32 default and float32 results
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6)),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), (2, 3, 4, 4)),
    (lambda: nn.Conv1d(3, 4, 3), (2, 3, 8)),
    (lambda: nn.Conv3d(2, 3, 2), (1, 2, 3, 3, 3)),
    (lambda: nn.Linear(6, 4), (3, 6)),
    (lambda: nn.BatchNorm2d(3), (4, 3, 2, 2)),
])
def test_float32_is_the_default_dtype(make, shape, rng):
    layer = make()
    assert all(p.data.dtype == np.float32 for p in layer.parameters())
    assert all(b.dtype in (np.float32, np.int64) for b in layer.buffers())
    y = layer(rng.standard_normal(shape).astype(np.float32))
    assert y.dtype == np.float32
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())


def test_float32_conv_matches_torch_float32(torch, rng):
    # float32 within a few ulps of the problem scale: 27 products summed per output.
    ours = nn.Conv2d(3, 5, 3, padding=1)
    theirs = torch.nn.Conv2d(3, 5, 3, padding=1, dtype=torch.float32)
    ours.load_state_dict(_torch_state(theirs))
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = theirs(torch.tensor(x)).detach().numpy()
    y = ours(x)
    scale = np.abs(x).max() * np.abs(ours.weight.data).sum(axis=(1, 2, 3)).max()
    np.testing.assert_allclose(y, expected, rtol=0, atol=8 * np.finfo(np.float32).eps * scale)


def test_dtype_argument_is_checked():
    with pytest.raises(TypeError, match=r"Conv2d: 'dtype' must be np.float32 or np.float64"):
        nn.Conv2d(1, 1, 1, dtype=np.int32)
    with pytest.raises(TypeError, match="Linear: 'dtype'"):
        nn.Linear(1, 1, dtype=np.float16)


# --------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make, fan_in", [
    (lambda **kw: nn.Conv2d(8, 16, 3, **kw), 8 * 9),
    (lambda **kw: nn.Conv2d(8, 16, 3, groups=4, **kw), 2 * 9),
    (lambda **kw: nn.ConvTranspose2d(8, 6, 3, **kw), 6 * 9),   # PyTorch's fan_in of the (C_in, C_out/G, k) layout
    (lambda **kw: nn.Conv1d(4, 32, 5, **kw), 4 * 5),
    (lambda **kw: nn.Linear(50, 40, **kw), 50),
])
def test_default_init_is_pytorchs_uniform(make, fan_in):
    layer = make(rng=np.random.default_rng(1))
    bound = 1 / np.sqrt(fan_in)
    for param in (layer.weight.data, layer.bias.data):
        assert np.abs(param).max() <= bound
    weight = layer.weight.data
    # U(-b, b): std b/sqrt(3); with >= 1000 draws the sample std is within 10%.
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.1 * bound / np.sqrt(3)
    assert np.abs(weight).max() > 0.9 * bound


def test_init_is_reproducible_with_manual_seed_and_rng():
    nn.init.manual_seed(123)
    first = nn.Conv2d(3, 4, 3).weight.data.copy()
    nn.init.manual_seed(123)
    second = nn.Conv2d(3, 4, 3).weight.data.copy()
    np.testing.assert_array_equal(first, second)
    third = nn.Conv2d(3, 4, 3).weight.data
    assert not np.array_equal(first, third)
    a = nn.Linear(3, 4, rng=7)
    b = nn.Linear(3, 4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)


# --------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------
def test_dropout_train_scales_kept_elements_and_masks_the_gradient():
    layer = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = np.ones((200, 100))
    y = layer(x)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], np.full(kept.sum(), 1 / 0.75))
    # 20000 Bernoulli(0.75) draws: kept fraction within 5 standard deviations (~0.015).
    assert abs(kept.mean() - 0.75) < 0.015
    dy = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    np.testing.assert_array_equal(layer.backward(dy), np.where(kept, dy * (1 / 0.75), 0))  # PyTorch: dy * mask/(1-p)


def test_dropout_eval_is_identity_and_p_edge_cases():
    x = np.arange(12.0).reshape(3, 4)
    layer = nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), np.zeros_like(x))
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    with pytest.raises(ValueError, match=r"Dropout: 'p' must be a probability in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)


def test_dropout_mask_is_seedable():
    x = np.ones((10, 10))
    first = nn.Dropout(0.5, rng=3)(x)
    second = nn.Dropout(0.5, rng=3)(x)
    np.testing.assert_array_equal(first, second)
    nn.init.manual_seed(5)
    third = nn.Dropout(0.5)(x)
    nn.init.manual_seed(5)
    np.testing.assert_array_equal(third, nn.Dropout(0.5)(x))


# --------------------------------------------------------------------------
# repr, errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda m: m.Conv2d(3, 16, 3),
    lambda m: m.Conv2d(3, 16, (3, 5), stride=2, padding=(1, 2), dilation=2, groups=1, bias=False),
    lambda m: m.Conv2d(4, 4, 3, padding="same", groups=2, padding_mode="reflect"),
    lambda m: m.Conv1d(2, 3, 4),
    lambda m: m.ConvTranspose2d(3, 6, 4, stride=2, padding=1, output_padding=1, groups=3),
    lambda m: m.Linear(5, 2),
    lambda m: m.Linear(5, 2, bias=False),
    lambda m: m.ReLU(),
    lambda m: m.LeakyReLU(0.2),
    lambda m: m.Tanh(),
    lambda m: m.Sigmoid(),
    lambda m: m.MaxPool2d(3, 2, 1),
    lambda m: m.AvgPool2d(2),
    lambda m: m.AdaptiveAvgPool2d((1, 1)),
    lambda m: m.Flatten(),
    lambda m: m.Dropout(0.3),
    lambda m: m.BatchNorm2d(8, momentum=None),
    lambda m: m.BatchNorm2d(8, affine=False),
])
def test_repr_matches_torch(make, torch):
    assert repr(make(nn)) == repr(make(torch.nn))


@pytest.mark.parametrize("layer", [
    nn.Conv2d(1, 1, 1), nn.ConvTranspose1d(1, 1, 1), nn.Linear(1, 1), nn.ReLU(), nn.LeakyReLU(),
    nn.Tanh(), nn.Sigmoid(), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1),
    nn.Flatten(), nn.Dropout(), nn.BatchNorm2d(1), nn.Sequential(nn.ReLU()),
    nn.Residual(nn.ReLU()), nn.CrossEntropyLoss(), nn.MSELoss(),
], ids=lambda layer: type(layer).__name__)
def test_backward_before_forward_names_the_layer(layer):
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}.backward\(\) called before forward"):
        layer.backward(np.ones((1, 1, 2, 2)))


def test_wrong_input_channels_and_dims_name_the_layer():
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*expected input with 3 channels.*got 4"):
        nn.Conv2d(3, 8, 3)(np.zeros((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*expected 3 or 4-d input.*got shape \(5, 5\)"):
        nn.Conv2d(3, 8, 3)(np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 3.*expected input with 2 channels"):
        nn.ConvTranspose2d(2, 3, 3)(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"Linear\(in_features=4.*expected input with 4 features"):
        nn.Linear(4, 2)(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=2.*expected 3 or 4-d input"):
        nn.MaxPool2d(2)(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="'x' must have dtype float16, float32 or float64, got dtype int64"):
        nn.ReLU()(np.zeros(3, dtype=np.int64))


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="in_channels=3 must be divisible by groups=2"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels=3 must be divisible by groups=2"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="'padding_mode' must be one of"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="'padding_mode' must be one of"):
        nn.ConvTranspose2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="string 'padding' must be 'valid'"):
        nn.ConvTranspose2d(1, 1, 3, padding="same")
    with pytest.raises(ValueError, match="'output_padding' must be smaller"):
        nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="'kernel_size'"):
        nn.Conv2d(1, 1, (3, 3, 3))


def test_conv_transpose_output_size_selects_output_padding(torch, rng):
    ours = nn.ConvTranspose2d(2, 2, 3, stride=3, dtype=np.float64)
    x = rng.standard_normal((1, 2, 3, 3))
    for size in [(9, 9), (10, 11), (1, 2, 11, 9)]:
        assert ours(x, output_size=size).shape[-2:] == tuple(size[-2:])
    with pytest.raises(ValueError, match="output_size"):
        ours(x, output_size=(12, 12))


@pytest.mark.parametrize("dy", [np.ones(4), np.array([1.0, np.inf, np.nan, 3.0])])
def test_activations_propagate_nan_like_torch(torch, dy):
    """NaN inputs pass their gradient; a non-finite dy where the input is cut off gives 0
    (ReLU's fast path, dy * mask, would turn inf * 0 into NaN there)."""
    x = np.array([np.nan, -1.0, 0.0, 2.0])
    for ours, theirs in [(nn.ReLU(), torch.nn.ReLU()), (nn.LeakyReLU(0.1), torch.nn.LeakyReLU(0.1))]:
        x_t = torch.tensor(x, requires_grad=True)
        y_t = theirs(x_t)
        y_t.backward(torch.tensor(dy))
        np.testing.assert_array_equal(ours(x), y_t.detach().numpy())
        np.testing.assert_array_equal(ours.backward(dy), x_t.grad.numpy())


def test_load_state_dict_accepts_torch_tensors_directly(torch):
    theirs = torch.nn.Conv2d(2, 3, 3)
    ours = nn.Conv2d(2, 3, 3, dtype=np.float64)
    ours.load_state_dict(theirs.state_dict())
    np.testing.assert_array_equal(ours.weight.data, theirs.weight.detach().numpy())
