"""The Module contract: names, state dicts, gradient accumulation, modes, containers.

Compositions are compared with the same network built in PyTorch (float64,
weights copied through load_state_dict); tolerance rtol 1e-12 of the output
scale (the conftest ``assert_close``), as the sums differ only in order.
"""
from __future__ import annotations

import numpy as np
import pytest

from npconv import nn
from npconv.testing import gradcheck

RTOL = 1e-12


def _torch_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _torch_residual(torch):
    """The torch twin of npconv.nn.Residual (tests/torch_twins.py, on the path via conftest)."""
    from torch_twins import TorchResidual
    return TorchResidual


def _small_resnet(m, residual, dtype_kw):
    """A stem, one identity residual block, one projection residual block and a head."""
    return m.Sequential(
        m.Conv2d(2, 4, 3, padding=1, bias=False, **dtype_kw),
        m.BatchNorm2d(4, **dtype_kw),
        m.ReLU(),
        residual(m.Sequential(m.Conv2d(4, 4, 3, padding=1, bias=False, **dtype_kw),
                              m.BatchNorm2d(4, **dtype_kw), m.ReLU(),
                              m.Conv2d(4, 4, 3, padding=1, **dtype_kw))),
        residual(m.Sequential(m.Conv2d(4, 6, 3, stride=2, padding=1, **dtype_kw), m.Tanh()),
                 m.Sequential(m.Conv2d(4, 6, 1, stride=2, bias=False, **dtype_kw),
                              m.BatchNorm2d(6, **dtype_kw))),
        m.MaxPool2d(2),
        m.AdaptiveAvgPool2d(1),
        m.Flatten(),
        m.Linear(6, 3, **dtype_kw),
    )


def test_sequential_and_residual_match_torch(torch, assert_close, rng):
    ours = _small_resnet(nn, nn.Residual, {"dtype": np.float64})
    theirs = _small_resnet(torch.nn, _torch_residual(torch), {})
    their_state = _torch_state(theirs)
    assert list(ours.state_dict()) == list(their_state)
    assert [name for name, _ in ours.named_parameters()] == \
        [name for name, _ in theirs.named_parameters()]
    assert "4.shortcut.1.running_var" in their_state and "3.block.0.weight" in their_state
    ours.load_state_dict(their_state)
    loss, their_loss = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    target = rng.integers(0, 3, 4)
    for step in range(2):       # two training steps: running stats and accumulated grads
        x = rng.standard_normal((4, 2, 8, 8))
        x_t = torch.tensor(x, requires_grad=True)
        value_t = their_loss(theirs(x_t), torch.tensor(target))
        value_t.backward()
        value = loss(ours(x), target)
        dx = ours.backward(loss.backward())
        assert abs(value - value_t.item()) <= RTOL * abs(value_t.item())
        assert_close(dx, x_t.grad.numpy(), 1e-10)
    for name, param in theirs.named_parameters():
        assert_close(dict(ours.named_parameters())[name].grad, param.grad.numpy(), 1e-10,
                     err_msg=name)
    for name, value in _torch_state(theirs).items():
        assert_close(ours.state_dict()[name], value, RTOL, err_msg=name)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((3, 2, 8, 8))
    assert_close(ours(x), theirs(torch.tensor(x)).detach().numpy(), RTOL)


def test_residual_gradcheck_and_child_names():
    block = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, rng=0), nn.Tanh())
    shortcut = nn.Conv2d(2, 2, 1, rng=1)
    residual = nn.Residual(block, shortcut)
    assert [name for name, _ in residual.named_children()] == ["block", "shortcut"]
    assert list(residual.state_dict()) == ["block.0.weight", "block.0.bias", "shortcut.weight",
                                           "shortcut.bias"]
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    assert gradcheck(residual, x)
    identity = nn.Residual(nn.Sequential(nn.Linear(3, 3, rng=2), nn.Sigmoid()))
    assert [name for name, _ in identity.named_children()] == ["block"]
    assert gradcheck(identity, np.random.default_rng(1).standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"Residual: block output shape \(4, 2\) differs"):
        nn.Residual(nn.Linear(3, 2))(np.zeros((4, 3), np.float32))


def test_sequential_repr_matches_torch(torch):
    def build(m):
        return m.Sequential(m.Conv2d(1, 6, 5, padding=2), m.ReLU(), m.MaxPool2d(2),
                            m.Sequential(m.Flatten(), m.Linear(6 * 14 * 14, 10)))
    assert repr(build(nn)) == repr(build(torch.nn))


def test_residual_repr():
    text = repr(nn.Residual(nn.Sequential(nn.ReLU()), nn.Identity()))
    assert text == "Residual(\n  (block): Sequential(\n    (0): ReLU()\n  )\n  (shortcut): Identity()\n)"


def test_sequential_indexing_and_append():
    model = nn.Sequential(nn.ReLU(), nn.Tanh())
    assert isinstance(model[1], nn.Tanh) and len(model) == 2
    model.append(nn.Sigmoid())
    assert [name for name, _ in model.named_children()] == ["0", "1", "2"]
    assert isinstance(model[-1], nn.Sigmoid)
    assert [type(m).__name__ for m in model[1:]] == ["Tanh", "Sigmoid"]
    with pytest.raises(TypeError, match="Sequential: child 0 must be a Module, got int"):
        nn.Sequential(3)


# --------------------------------------------------------------------------
# gradient accumulation
# --------------------------------------------------------------------------
def test_gradients_accumulate_until_zero_grad(rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, dtype=np.float64), nn.BatchNorm2d(3, dtype=np.float64),
                          nn.ReLU(), nn.Flatten(), nn.Linear(12, 2, dtype=np.float64))
    assert all(p.grad is None for p in model.parameters())     # None until the first backward
    x = rng.standard_normal((3, 2, 4, 4))
    y = model(x)
    dy = rng.standard_normal(y.shape)
    model.backward(dy)
    once = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.backward(dy)                  # second backward of the same forward
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-14, atol=0, err_msg=name)
    model(x)                            # a new forward, then backward: adds a third time
    model.backward(dy)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 3 * once[name], rtol=1e-14, atol=1e-300, err_msg=name)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model(x)
    model.backward(dy)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, once[name], rtol=1e-14, atol=1e-300, err_msg=name)
    model.zero_grad(set_to_none=False)
    assert all(np.array_equal(p.grad, np.zeros_like(p.data)) for p in model.parameters())


def test_frozen_parameter_gets_no_gradient(rng):
    layer = nn.Linear(3, 2, dtype=np.float64)
    layer.weight.requires_grad = False
    layer(rng.standard_normal((4, 3)))
    layer.backward(np.ones((4, 2)))
    assert layer.weight.grad is None and layer.bias.grad is not None


# --------------------------------------------------------------------------
# state dicts
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda m: m.Conv1d(2, 4, 3), lambda m: m.Conv2d(2, 4, 3, groups=2, bias=False),
    lambda m: m.Conv3d(2, 4, 3), lambda m: m.ConvTranspose2d(4, 6, 3, groups=2),
    lambda m: m.ConvTranspose1d(2, 3, 2), lambda m: m.ConvTranspose3d(2, 3, 2),
    lambda m: m.Linear(3, 5), lambda m: m.BatchNorm2d(7), lambda m: m.BatchNorm2d(7, affine=False),
    lambda m: m.BatchNorm2d(7, track_running_stats=False), lambda m: m.ReLU(),
    lambda m: m.MaxPool2d(2), lambda m: m.Dropout(), lambda m: m.Flatten(),
])
def test_state_dict_keys_and_shapes_equal_torchs(make, torch):
    ours, theirs = make(nn).state_dict(), make(torch.nn).state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].shape == tuple(theirs[key].shape), key
    if "num_batches_tracked" in ours:
        assert ours["num_batches_tracked"].dtype == np.int64


def test_state_dict_is_a_copy_and_load_copies_values():
    layer = nn.Linear(3, 2)
    state = layer.state_dict()
    state["weight"][...] = 7
    assert not np.any(layer.weight.data == 7)
    source = {"weight": np.full((2, 3), 1.5), "bias": np.array([1.0, 2.0])}
    weight_array = layer.weight.data
    layer.load_state_dict(source)
    assert layer.weight.data is weight_array          # copied into, not rebound
    assert layer.weight.data.dtype == np.float32      # cast to the layer's dtype
    source["weight"][...] = 0
    np.testing.assert_array_equal(layer.weight.data, np.full((2, 3), 1.5, np.float32))


def test_load_state_dict_round_trip_between_models(rng):
    first = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    first(rng.standard_normal((2, 1, 5, 5)).astype(np.float32))
    second = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    second.load_state_dict(first.state_dict())
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert int(second[1].num_batches_tracked) == 1


def test_load_state_dict_errors_name_the_key():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    good = model.state_dict()
    missing = dict(good)
    del missing["1.running_var"]
    with pytest.raises(KeyError, match=r"missing key\(s\) \['1.running_var'\]"):
        model.load_state_dict(missing)
    unexpected = dict(good, **{"2.weight": np.zeros(3)})
    with pytest.raises(KeyError, match=r"unexpected key\(s\) \['2.weight'\]"):
        model.load_state_dict(unexpected)
    wrong_shape = dict(good, **{"0.weight": np.zeros((2, 1, 3, 2))})
    with pytest.raises(ValueError, match=r"wrong shape for key '0.weight': expected \(2, 1, 3, 3\), "
                                         r"got \(2, 1, 3, 2\)"):
        model.load_state_dict(wrong_shape)
    # nothing was written by the failed loads
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, good[key], err_msg=key)
    # non-strict ignores missing / unexpected keys but still checks shapes
    model.load_state_dict({"0.bias": np.ones(2), "extra": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(model[0].bias.data, np.ones(2))


# --------------------------------------------------------------------------
# modes, traversal, dtype, user modules
# --------------------------------------------------------------------------
def test_train_eval_propagate_and_return_self():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Residual(nn.Sequential(nn.Dropout())))
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    names = [name for name, _ in model.named_modules()]
    assert names == ["", "0", "1", "1.block", "1.block.0"]


def test_to_double_casts_parameters_and_buffers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to(np.float64)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    state = model.state_dict()
    assert state["1.running_mean"].dtype == np.float64
    assert state["1.num_batches_tracked"].dtype == np.int64


def test_parameters_are_shared_objects_for_optimizers():
    layer = nn.Linear(2, 2)
    params = layer.parameters()
    assert params[0] is layer.weight and params[1] is layer.bias
    assert isinstance(params[0], nn.Parameter)
    shared = nn.Sequential(layer, layer)
    assert [name for name, _ in shared.named_parameters()] == ["0.weight", "0.bias"]


class Scale(nn.Module):
    """A user-written layer: y = x * gain (one parameter per feature)."""

    def __init__(self, features):
        super().__init__()
        self.gain = nn.Parameter(np.linspace(0.5, 1.5, features))
        self.register_buffer("calls", np.array(0, dtype=np.int64))
        self._ctx = None

    def forward(self, x):
        self._ctx = x
        self.calls += 1
        return x * self.gain.data

    def backward(self, dy):
        x = self._saved()
        self.gain.accumulate_grad((dy * x).sum(axis=0))
        return dy * self.gain.data


def test_user_module_registration_and_gradcheck():
    model = nn.Sequential(Scale(3), nn.Linear(3, 2, rng=0, dtype=np.float64))
    assert list(model.state_dict()) == ["0.gain", "0.calls", "1.weight", "1.bias"]
    assert [name for name, _ in model.named_parameters()] == ["0.gain", "1.weight", "1.bias"]
    assert gradcheck(model, np.random.default_rng(0).standard_normal((4, 3)))
    with pytest.raises(RuntimeError, match=r"Scale.backward\(\) called before forward"):
        Scale(2).backward(np.ones((1, 2)))
