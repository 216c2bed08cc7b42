"""CrossEntropyLoss and MSELoss against PyTorch (float64) and by finite differences.

Loss values and gradients: rtol 1e-12 relative to the scale of the expected
array (log-sum-exp evaluated in a different order differs by a few ulps).
"""
from __future__ import annotations

import numpy as np
import pytest

from npconv import nn
from npconv.testing import gradcheck

RTOL = 1e-12


def _compare(ours, theirs, logits, target, torch, assert_close, target_t=None):
    logits_t = torch.tensor(logits, requires_grad=True)
    target_t = torch.tensor(target) if target_t is None else target_t
    value_t = theirs(logits_t, target_t)
    value_t.backward()
    value = ours(logits, target)
    assert isinstance(value, float)
    assert abs(value - value_t.item()) <= RTOL * max(1.0, abs(value_t.item()))
    assert_close(ours.backward(), logits_t.grad.numpy(), RTOL)


CE_CASES = [
    ("plain", {}, (5, 4)),
    ("smoothing", {"label_smoothing": 0.1}, (6, 3)),
    ("smoothing_strong", {"label_smoothing": 0.7}, (4, 5)),
    ("weights", {"weight": [0.5, 2.0, 1.0, 3.0]}, (7, 4)),
    ("weights_smoothing", {"weight": [0.5, 2.0, 1.0], "label_smoothing": 0.2}, (5, 3)),
    ("ignore", {"ignore_index": 1}, (8, 3)),
    ("ignore_weights_smoothing", {"ignore_index": 0, "weight": [1.0, 2.0, 0.5, 1.5],
                                  "label_smoothing": 0.3}, (9, 4)),
    ("sum", {"reduction": "sum", "label_smoothing": 0.1}, (5, 4)),
    ("spatial", {"label_smoothing": 0.05}, (2, 4, 3, 2)),
    ("unbatched", {}, (5,)),
]


@pytest.mark.parametrize("name, kwargs, shape", CE_CASES, ids=[c[0] for c in CE_CASES])
def test_cross_entropy_matches_torch(name, kwargs, shape, torch, assert_close, rng):
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    target_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    target = rng.integers(0, num_classes, target_shape)
    logits = 3 * rng.standard_normal(shape)
    torch_kwargs = dict(kwargs)
    if "weight" in kwargs:
        torch_kwargs["weight"] = torch.tensor(kwargs["weight"])
    _compare(nn.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**torch_kwargs), logits,
             target, torch, assert_close)


@pytest.mark.parametrize("kwargs", [{}, {"label_smoothing": 0.2}, {"weight": [1.0, 0.5, 2.0]}])
def test_cross_entropy_with_probability_targets_matches_torch(kwargs, torch, assert_close, rng):
    logits = rng.standard_normal((4, 3, 2))
    target = rng.dirichlet(np.ones(3), size=(4, 2)).transpose(0, 2, 1)       # (N, C, d)
    torch_kwargs = dict(kwargs)
    if "weight" in kwargs:
        torch_kwargs["weight"] = torch.tensor(kwargs["weight"])
    _compare(nn.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**torch_kwargs), logits,
             target, torch, assert_close)


def test_cross_entropy_is_stable_for_huge_logits(torch, assert_close):
    logits = np.array([[1e4, -1e4, 0.0], [-5e3, 5e3, 5e3 - 1.0]])
    target = np.array([1, 2])
    _compare(nn.CrossEntropyLoss(label_smoothing=0.1),
             torch.nn.CrossEntropyLoss(label_smoothing=0.1), logits, target, torch, assert_close)
    loss = nn.CrossEntropyLoss()
    assert np.isfinite(loss(logits, target)) and np.all(np.isfinite(loss.backward()))


@pytest.mark.parametrize("kwargs", [{}, {"label_smoothing": 0.25, "weight": [1.0, 3.0, 0.5]}])
def test_cross_entropy_gradcheck(kwargs, rng):
    target = rng.integers(0, 3, 5)
    logits = rng.standard_normal((5, 3))

    def value(z):
        return nn.CrossEntropyLoss(**kwargs)(z, target)

    def grad(dy, z):
        loss = nn.CrossEntropyLoss(**kwargs)
        loss(z, target)
        return loss.backward(float(dy))

    assert gradcheck(value, logits, grad_fn=grad)


def test_cross_entropy_float32_stays_float32(rng):
    loss = nn.CrossEntropyLoss()
    loss(rng.standard_normal((3, 4)).astype(np.float32), np.array([0, 1, 3]))
    assert loss.backward().dtype == np.float32


def test_cross_entropy_errors():
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"target values must be in \[0, 2\].*got 3"):
        loss(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"'target' must have shape \(2,\)"):
        loss(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="'target' must hold integer class indices"):
        loss(np.zeros((2, 3)), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="'label_smoothing' must be in"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="'reduction' must be one of"):
        nn.CrossEntropyLoss(reduction="none")


def test_cross_entropy_weight_is_a_buffer_like_torch(torch):
    assert list(nn.CrossEntropyLoss(weight=[1.0, 2.0]).state_dict()) == \
        list(torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0])).state_dict()) == ["weight"]


@pytest.mark.parametrize("reduction, shape", [("mean", (4, 3)), ("sum", (2, 3, 2)), ("mean", (5,))])
def test_mse_matches_torch(reduction, shape, torch, assert_close, rng):
    prediction, target = rng.standard_normal(shape), rng.standard_normal(shape)
    _compare(nn.MSELoss(reduction), torch.nn.MSELoss(reduction=reduction), prediction, target, torch,
             assert_close)


def test_mse_gradcheck_and_scale(rng):
    target = rng.standard_normal((3, 2))

    def grad(dy, z):
        loss = nn.MSELoss()
        loss(z, target)
        return loss.backward(float(dy))

    assert gradcheck(lambda z: nn.MSELoss()(z, target), rng.standard_normal((3, 2)), grad_fn=grad)
    with pytest.raises(ValueError, match=r"MSELoss: 'target' must have the input's shape \(3, 2\)"):
        nn.MSELoss()(np.zeros((3, 2)), np.zeros(3))
