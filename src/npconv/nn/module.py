"""``Module``, ``Parameter`` and the containers ``Sequential`` and ``Residual``.

A layer is explicit about its two halves (no autograd tape):

* ``forward(x)`` (also ``layer(x)``) computes ``y`` and keeps what ``backward``
  needs, and only that (Chainer's ``retain_inputs``): a ReLU keeps its output
  mask, a convolution its input ``x``.
* ``backward(dy)`` returns ``dx`` for the *last* forward and **adds** the
  parameter gradients of ``sum(y * dy)`` to ``p.grad`` (micrograd's ``+=``).

Gradient lifecycle: ``p.grad`` is ``None`` until the first backward that
reaches ``p``, which allocates zeros and adds to them; later backwards keep
adding; ``zero_grad()`` resets it to ``None`` (PyTorch's default
``set_to_none=True``; ``zero_grad(set_to_none=False)`` fills the existing
arrays with zeros instead). Optimizers skip parameters whose grad is None,
as PyTorch does.

Names follow PyTorch: parameters, buffers and children are registered by
attribute assignment (``self.weight = Parameter(...)``, ``self.conv = Conv2d(...)``,
``self.register_buffer("running_mean", ...)``), in that order of assignment;
``named_parameters()`` and ``state_dict()`` use the dotted paths
(``"0.weight"``, ``"block.1.running_var"``), so a PyTorch model built the same
way has the same keys, shapes and layouts.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from .. import _args

__all__ = ["Parameter", "Module", "Sequential", "Residual", "check_dtype"]


def check_dtype(dtype, layer: str) -> np.dtype:
    """The parameter dtype of a layer: float32 (default) or float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{layer}: 'dtype' must be np.float32 or np.float64, got {dtype!r}") from None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{layer}: 'dtype' must be np.float32 or np.float64, got {dtype}")
    return dtype


class Parameter:
    """A trainable array: ``data`` (updated in place by optimizers) and ``grad``.

    Parameters
    ----------
    data : array_like, float
    requires_grad : bool
        If False, backward leaves ``grad`` untouched (the parameter is frozen).

    ``grad`` is None until the first backward reaches the parameter, then an
    array of ``data``'s shape and dtype that backward adds to (see module docstring).
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        self.data = np.asarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def accumulate_grad(self, grad) -> None:
        """``grad += g`` (zeros on first use), cast to ``data``'s dtype; no-op if frozen."""
        if not self.requires_grad:
            return
        grad = np.asarray(grad)
        if grad.shape != self.data.shape:
            raise ValueError(f"Parameter.accumulate_grad: gradient shape {grad.shape} "
                             f"differs from the parameter's shape {self.data.shape}")
        if self.grad is None:
            self.grad = np.zeros_like(self.data)
        self.grad += grad.astype(self.data.dtype, copy=False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class Module:
    """Base class of every layer (and of user-written layers).

    Subclasses call ``super().__init__()`` first, register parameters /
    buffers / children by attribute assignment or ``register_buffer``, and
    implement ``forward`` and ``backward``. ``self.training`` is True after
    construction and ``train()``, False after ``eval()``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------
    # registration (attribute assignment, as in PyTorch)
    # ------------------------------------------------------------------
    def _registries(self):
        registries = self.__dict__.get("_parameters"), self.__dict__.get("_buffers"), \
            self.__dict__.get("_modules")
        if registries[0] is None:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 "assigning parameters, buffers or submodules")
        return registries

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)) or any(
                name in registry for registry in (self.__dict__.get("_parameters", ()),
                                                  self.__dict__.get("_buffers", ()),
                                                  self.__dict__.get("_modules", ()))):
            parameters, buffers, modules = self._registries()
            if isinstance(value, Parameter):
                self._forget(name)
                parameters[name] = value
            elif isinstance(value, Module):
                self._forget(name)
                modules[name] = value
            elif name in parameters:
                if value is not None:
                    raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} "
                                    f"to parameter '{name}' (use a Parameter or None)")
                parameters[name] = None
            elif name in modules:
                if value is not None:
                    raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} "
                                    f"to submodule '{name}' (use a Module or None)")
                modules[name] = None
            else:
                buffers[name] = None if value is None else np.asarray(value)
            return
        object.__setattr__(self, name, value)

    def _forget(self, name):
        self.__dict__.pop(name, None)
        for registry in self._registries():
            registry.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                del entries[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}.register_parameter: '{name}' must be a "
                            f"Parameter or None, got {type(param).__name__}")
        self._forget(name)
        self._registries()[0][name] = param

    def _weight_and_bias(self, weight_shape, bias_size: int, bias: bool, dtype, rng) -> None:
        """Create ``weight`` (``weight_shape``) and, if ``bias``, ``bias`` (``(bias_size,)``)
        Parameters in ``dtype``, fill them with ``self.reset_parameters(rng)``, and
        start with nothing cached for backward. Shared by Linear and the conv layers."""
        self.weight = Parameter(np.empty(tuple(weight_shape), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty((bias_size,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(rng)
        self._ctx = None

    def register_buffer(self, name: str, array) -> None:
        """A non-trainable array saved in ``state_dict`` (e.g. BatchNorm's running stats)."""
        self._forget(name)
        self._registries()[1][name] = None if array is None else np.asarray(array)

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.add_module: '{name}' must be a Module or "
                            f"None, got {type(module).__name__}")
        self._forget(name)
        self._registries()[2][name] = module

    # ------------------------------------------------------------------
    # forward / backward
    # ------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} must implement backward()")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def _saved(self, attribute: str = "_ctx"):
        """What the last forward cached; RuntimeError naming the layer if there was none."""
        saved = self.__dict__.get(attribute)
        if saved is None:
            raise RuntimeError(f"{self._get_name()}.backward() called before forward(): "
                               f"there is no cached input to differentiate ({self._short_repr()})")
        return saved

    def _layer_error(self, message: str) -> ValueError:
        return ValueError(f"{self._short_repr()}: {message}")

    def _check_float_input(self, x, allowed_ndims, what: str) -> np.ndarray:
        """``x`` as a float ndarray with one of ``allowed_ndims`` dims, else a ValueError naming the layer."""
        x = _args.as_float_array("x", x, self._short_repr())
        if x.ndim not in allowed_ndims:
            expected = " or ".join(str(n) for n in allowed_ndims)
            raise self._layer_error(f"expected {expected}-d input {what}, got shape "
                                    f"{tuple(x.shape)} ({x.ndim}-d)")
        return x

    # ------------------------------------------------------------------
    # traversal
    # ------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module (name ``prefix``) and every descendant, depth first, each once."""
        seen = set()

        def walk(module, name):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs in registration order; shared ones once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        return [param for _, param in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    def buffers(self) -> list[np.ndarray]:
        return [buffer for _, buffer in self.named_buffers()]

    # ------------------------------------------------------------------
    # modes, gradients, dtype
    # ------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode on this module and all descendants; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """``train(False)``: BatchNorm uses running stats, Dropout is the identity."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient (to None by default, see module docstring)."""
        for param in self.parameters():
            param.zero_grad(set_to_none)

    def to(self, dtype) -> "Module":
        """Cast parameters, their grads and floating buffers to ``dtype`` (float32/float64); returns self."""
        dtype = check_dtype(dtype, f"{self._get_name()}.to")
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            if param.grad is not None:
                param.grad = param.grad.astype(dtype)
        for module in self.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype.kind == "f":
                    module._buffers[name] = buffer.astype(dtype)
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # ------------------------------------------------------------------
    # state dict
    # ------------------------------------------------------------------
    def _state_entries(self, prefix: str = ""):
        """(key, owner registry, name) of every state entry, in PyTorch's order:
        a module's parameters, then its buffers, then each child's entries."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, self._parameters, name
        for name, buffer in self._buffers.items():
            if buffer is not None:
                yield prefix + name, self._buffers, name
        for name, child in self.named_children():
            yield from child._state_entries(prefix + name + ".")

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of all parameters and buffers under PyTorch's dotted keys."""
        state = OrderedDict()
        for key, registry, name in self._state_entries():
            entry = registry[name]
            state[key] = np.array(entry.data if isinstance(entry, Parameter) else entry, copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy values into the parameters and buffers (cast to their dtypes).

        Everything is checked before anything is written. With ``strict``
        (the default) a missing or unexpected key raises ``KeyError``; a
        wrong shape always raises ``ValueError``; each message names the key.
        Values may be NumPy arrays or anything ``np.asarray`` accepts (e.g. CPU
        torch tensors).
        """
        entries = {key: (registry, name) for key, registry, name in self._state_entries()}
        given = dict(state_dict)
        if strict:
            missing = [key for key in entries if key not in given]
            unexpected = [key for key in given if key not in entries]
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append(f"missing key(s) {missing}")
                if unexpected:
                    parts.append(f"unexpected key(s) {unexpected}")
                raise KeyError(f"{self._get_name()}.load_state_dict: " + "; ".join(parts))
        updates = []
        for key, (registry, name) in entries.items():
            if key not in given:
                continue
            entry = registry[name]
            target = entry.data if isinstance(entry, Parameter) else entry
            value = np.asarray(given[key])
            if value.shape != target.shape:
                raise ValueError(f"{self._get_name()}.load_state_dict: wrong shape for key "
                                 f"'{key}': expected {target.shape}, got {value.shape}")
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{self._get_name()}.load_state_dict: key '{key}' must hold "
                                f"numbers, got dtype {value.dtype}")
            updates.append((target, value))
        for target, value in updates:
            target[...] = value

    # ------------------------------------------------------------------
    # printing
    # ------------------------------------------------------------------
    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        """The layer's arguments as shown inside ``Name(...)`` (non-default ones, as PyTorch)."""
        return ""

    def _short_repr(self) -> str:
        return f"{self._get_name()}({self.extra_repr()})"

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _addindent(repr(module), 2)
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... (or by an OrderedDict's keys).

    ``backward`` runs the children's backwards in reverse order.

    >>> from npconv import nn
    >>> model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU())
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight']
    """

    def __init__(self, *modules):
        super().__init__()
        self._ctx = None
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self._add_checked(str(name), module)
        else:
            for index, module in enumerate(modules):
                self._add_checked(str(index), module)

    def _add_checked(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: child {name} must be a Module, got {type(module).__name__}")
        self.add_module(name, module)

    def append(self, module) -> "Sequential":
        self._add_checked(str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(modules[index]))
        return modules[index][1]

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        self._ctx = True
        return x

    def backward(self, dy):
        self._saved()
        for module in reversed(self._modules.values()):
            dy = module.backward(dy)
        return dy


class Residual(Module):
    """``y = block(x) + (shortcut(x) if shortcut else x)``; no activation after the sum.

    Children are named ``block`` and ``shortcut`` (absent when None). The
    gradient of a sum is the sum of the branches' gradients:
    ``dx = block.backward(dy) + (shortcut.backward(dy) if shortcut else dy)``.
    """

    def __init__(self, block: Module, shortcut: Module | None = None):
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"Residual: 'block' must be a Module, got {type(block).__name__}")
        if shortcut is not None and not isinstance(shortcut, Module):
            raise TypeError(f"Residual: 'shortcut' must be a Module or None, "
                            f"got {type(shortcut).__name__}")
        self.block = block
        if shortcut is not None:
            self.shortcut = shortcut
        else:
            object.__setattr__(self, "shortcut", None)
        self._ctx = None

    def forward(self, x):
        block_out = self.block(x)
        skip = self.shortcut(x) if self.shortcut is not None else np.asarray(x)
        if block_out.shape != skip.shape:
            raise ValueError(f"Residual: block output shape {block_out.shape} differs from the "
                             f"{'shortcut output' if self.shortcut is not None else 'input'} "
                             f"shape {skip.shape}; use a shortcut that matches them")
        self._ctx = True
        return block_out + skip

    def backward(self, dy):
        self._saved()
        dx = self.block.backward(dy)
        skip_dx = self.shortcut.backward(dy) if self.shortcut is not None else dy
        return dx + skip_dx
