"""npconv.testing.gradcheck: passes correct gradients, names the worst wrong one."""
from __future__ import annotations

import numpy as np
import pytest

from npconv import nn
from npconv.testing import gradcheck


class BrokenWeightGrad(nn.Linear):
    """Linear whose weight gradient is off by 1% (a typical scaling bug)."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.weight.grad *= 1.01
        return dx


class BrokenInputGrad(nn.Linear):
    """Linear that forgets the transpose-free matmul and returns a wrong dx."""

    def backward(self, dy):
        return 0.5 * super().backward(dy)


def test_gradcheck_passes_for_correct_layers(rng):
    x = rng.standard_normal((3, 4))
    assert gradcheck(nn.Linear(4, 2, rng=0), x) is True
    assert gradcheck(nn.Sequential(nn.Linear(4, 3, rng=1), nn.Tanh(), nn.Linear(3, 2, rng=2)), x)


def test_gradcheck_names_the_wrong_parameter(rng):
    layer = BrokenWeightGrad(4, 3, rng=0, dtype=np.float64)
    with pytest.raises(AssertionError, match=r"worst in parameter 'weight' at index \(\d+, \d+\)"):
        gradcheck(layer, rng.standard_normal((5, 4)), atol=1e-8, rtol=1e-6)
    model = nn.Sequential(nn.ReLU(), BrokenWeightGrad(4, 3, rng=0, dtype=np.float64))
    with pytest.raises(AssertionError, match=r"parameter '1.weight'"):
        gradcheck(model, rng.standard_normal((5, 4)), atol=1e-8, rtol=1e-6)


def test_gradcheck_names_the_wrong_input(rng):
    with pytest.raises(AssertionError, match=r"worst in input 0 .*analytic .* numerical"):
        gradcheck(BrokenInputGrad(4, 3, rng=0), rng.standard_normal((2, 4)))


def test_gradcheck_on_functions(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    assert gradcheck(np.matmul, (a, b), grad_fn=lambda dy, a, b: (dy @ b.T, a.T @ dy))
    with pytest.raises(AssertionError, match="worst in input 1"):
        gradcheck(np.matmul, (a, b), grad_fn=lambda dy, a, b: (dy @ b.T, a.T @ dy * 1.1))
    # None skips an input
    assert gradcheck(np.matmul, (a, b), grad_fn=lambda dy, a, b: (None, a.T @ dy))
    with pytest.raises(TypeError, match="grad_fn"):
        gradcheck(np.sin, a)


def test_gradcheck_checks_conv_grad_of_the_core(rng):
    import npconv
    x, w = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))

    def grads(dy, x, w):
        g = npconv.conv_grad(dy, x, w, stride=2, padding=1, bias=False)
        return g.dx, g.dweight

    assert gradcheck(lambda x, w: npconv.conv(x, w, stride=2, padding=1), (x, w), grad_fn=grads)


def test_gradcheck_leaves_the_module_and_inputs_untouched(rng):
    layer = nn.Linear(3, 2)                              # float32; checked on a float64 copy
    before = layer.weight.data.copy()
    x = rng.standard_normal((2, 3))
    x_before = x.copy()
    assert gradcheck(layer, x)
    np.testing.assert_array_equal(layer.weight.data, before)
    assert layer.weight.data.dtype == np.float32 and layer.weight.grad is None
    np.testing.assert_array_equal(x, x_before)


def test_gradcheck_covers_batchnorm_in_both_modes(rng):
    x = rng.standard_normal((3, 2, 2, 2))
    bn = nn.BatchNorm2d(2)
    bn.weight.data[...] = [0.5, 2.0]
    assert gradcheck(bn, x)
    assert gradcheck(bn.eval(), x)


def test_gradcheck_dy_argument_and_shape_check(rng):
    x = rng.standard_normal((2, 3))
    assert gradcheck(nn.Tanh(), x, dy=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"'dy' must have the output's shape \(2, 3\)"):
        gradcheck(nn.Tanh(), x, dy=np.ones(3))
