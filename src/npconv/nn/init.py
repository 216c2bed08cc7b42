"""Weight initialisation, as ``torch.nn.init``, on NumPy arrays (or Parameters).

Randomness comes from a ``np.random.Generator``: every function takes
``rng=``; without it the module-level generator is used, which
``manual_seed(seed)`` resets (``npconv.nn.init.manual_seed(0)`` makes every
layer built afterwards reproducible, like ``torch.manual_seed``). The draws
are NumPy's, so the *values* differ from PyTorch's for the same seed; the
*distributions* are PyTorch's.

PyTorch's default for ``Conv*`` and ``Linear`` (``reset_parameters``) is
``kaiming_uniform_(weight, a=sqrt(5))``, i.e. ``weight ~ U(-b, b)`` with::

    gain = sqrt(2 / (1 + a^2)) = sqrt(1/3),  b = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)

and ``bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; ``fan_in = weight.shape[1] * prod(k)``
(for transposed convs this is ``C_out/groups * prod(k)``, PyTorch's quirk, kept).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["manual_seed", "get_rng", "calculate_gain", "calculate_fan_in_and_fan_out",
           "uniform_", "normal_", "constant_", "zeros_", "ones_", "kaiming_uniform_",
           "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "default_init_"]

_rng = np.random.default_rng()


def manual_seed(seed) -> np.random.Generator:
    """Reset the module-level generator to ``np.random.default_rng(seed)`` and return it."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng(rng=None) -> np.random.Generator:
    """``rng`` if given (a Generator, or a seed for one), else the module-level generator."""
    if rng is None:
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _array(tensor) -> np.ndarray:
    array = tensor if isinstance(tensor, np.ndarray) else getattr(tensor, "data", tensor)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"init: expected an ndarray or a Parameter, got {type(tensor).__name__}")
    return array


def calculate_fan_in_and_fan_out(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape: ``shape[1] * prod(k)``, ``shape[0] * prod(k)``."""
    shape = tuple(getattr(shape, "shape", shape))
    if len(shape) < 2:
        raise ValueError(f"init: fan in/out needs a weight with >= 2 dims, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param=None) -> float:
    """PyTorch's recommended gain for a nonlinearity."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"init: unsupported nonlinearity {nonlinearity!r}")


def uniform_(tensor, a: float = 0.0, b: float = 1.0, rng=None):
    """Fill in place with U(a, b) draws; returns the array."""
    array = _array(tensor)
    array[...] = get_rng(rng).uniform(a, b, size=array.shape)
    return array


def normal_(tensor, mean: float = 0.0, std: float = 1.0, rng=None):
    """Fill in place with N(mean, std^2) draws; returns the array."""
    array = _array(tensor)
    array[...] = get_rng(rng).normal(mean, std, size=array.shape)
    return array


def constant_(tensor, value: float):
    array = _array(tensor)
    array[...] = value
    return array


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def _fan(array, mode):
    fan_in, fan_out = calculate_fan_in_and_fan_out(array.shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: 'mode' must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", rng=None):
    """U(-b, b) with ``b = gain(nonlinearity, a) * sqrt(3 / fan)`` (He et al. 2015)."""
    array = _array(tensor)
    fan = _fan(array, mode)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan) if fan else 0.0
    return uniform_(array, -bound, bound, rng)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", rng=None):
    """N(0, std^2) with ``std = gain(nonlinearity, a) / sqrt(fan)``."""
    array = _array(tensor)
    fan = _fan(array, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0
    return normal_(array, 0.0, std, rng)


def xavier_uniform_(tensor, gain: float = 1.0, rng=None):
    """U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010)."""
    array = _array(tensor)
    fan_in, fan_out = calculate_fan_in_and_fan_out(array.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, rng)


def xavier_normal_(tensor, gain: float = 1.0, rng=None):
    """N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    array = _array(tensor)
    fan_in, fan_out = calculate_fan_in_and_fan_out(array.shape)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def default_init_(weight, bias=None, rng=None):
    """PyTorch's ``reset_parameters`` of Conv*/Linear: kaiming_uniform_(a=sqrt(5)) + bias U(±1/sqrt(fan_in))."""
    rng = get_rng(rng)
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(_array(weight).shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, rng)
