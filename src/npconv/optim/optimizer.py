"""Optimizer base class: parameter groups, per-parameter state, flat state dicts.

An optimizer holds ``param_groups`` (a list of dicts, as in PyTorch): each group
has ``"params"`` (a list of parameters) and its own hyperparameters (``"lr"``,
``"momentum"``, ...); hyperparameters not given in a group come from the
constructor's ``defaults``. A parameter is any object with ``.data`` (a float
ndarray, updated **in place** so the layer that owns it sees the new values)
and ``.grad`` (an ndarray of the same shape, or None before the first backward).

Per-parameter state (momentum buffers, Adam moments, step counts) lives in
``self.state[i]``, a dict keyed by the parameter's *flat index* ``i`` — its
position when the groups' parameter lists are concatenated in order, which is
also how PyTorch numbers parameters in ``Optimizer.state_dict()``.

Flat state-dict format
----------------------
``state_dict()`` returns ``{name: np.ndarray}`` with no nesting and no objects,
so that ``np.savez(path, **sd)`` stores it and
``np.load(path, allow_pickle=False)`` reads it back::

    "param_groups.{g}.params"   int64 (n_g,)  flat indices of group g's params
    "param_groups.{g}.{key}"    0-d float64 / int64 / bool, or float64 (k,) for
                                tuples such as "betas", one per hyperparameter
                                (including "initial_lr" once a scheduler set it)
    "state.{i}.{key}"           per-parameter state of flat index i:
                                arrays in the parameter's dtype
                                ("momentum_buffer", "exp_avg", "exp_avg_sq"),
                                0-d int64 for "step"

``load_state_dict(sd)`` accepts exactly that (values may be 0-d arrays, NumPy
scalars or Python numbers) and is strict: a missing or unexpected key, a group
whose size differs, or a state array whose shape differs from its parameter's
raises ``ValueError`` naming the key. Loaded arrays are copied.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: groups, ``zero_grad``, ``state_dict`` / ``load_state_dict``.

    Parameters
    ----------
    params : iterable of parameters, or iterable of dicts
        Parameters to optimise (objects with ``.data`` and ``.grad``), or
        parameter groups: dicts with a ``"params"`` entry and optional
        per-group hyperparameters overriding ``defaults``.
    defaults : dict
        Hyperparameters (name -> value) every group starts from.

    Subclasses implement ``step()`` and list their per-parameter state names
    in ``_array_state_keys`` / ``_int_state_keys`` (checked when loading).
    """

    #: names of per-parameter state entries a subclass keeps (array-valued)
    _array_state_keys: tuple[str, ...] = ()
    #: names of per-parameter integer state entries (e.g. Adam's "step")
    _int_state_keys: tuple[str, ...] = ()

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        if isinstance(params, dict):
            raise TypeError(
                f"{type(self).__name__}: 'params' must be an iterable of parameters or of "
                f"param-group dicts, got a single dict (wrap it in a list)"
            )
        try:
            param_list = list(params)
        except TypeError:
            raise TypeError(
                f"{type(self).__name__}: 'params' must be an iterable of parameters, "
                f"got {type(params).__name__}"
            ) from None
        if len(param_list) == 0:
            raise ValueError(f"{type(self).__name__}: 'params' is an empty list; "
                             f"expected at least one parameter")
        if not isinstance(param_list[0], dict):
            param_list = [{"params": param_list}]
        for group in param_list:
            self.add_param_group(group)

    # ------------------------------------------------------------------
    # groups
    # ------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group; missing hyperparameters are taken from ``defaults``."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a param group must be a dict, "
                            f"got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}: param group is missing the key 'params'")
        group = dict(param_group)
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        for param in params:
            _check_parameter(param, name)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError(f"{name}: some parameters appear more than once; "
                             f"each parameter may be in only one group, once")
        group["params"] = params
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{name}: unknown hyperparameter(s) {sorted(unknown)} in param "
                             f"group; expected a subset of {sorted(self.defaults)}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """Validate one group's hyperparameters (overridden by subclasses)."""

    def _flat_params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def _indexed_groups(self):
        """Yield ``(group, [(flat_index, param), ...])`` for every group."""
        index = 0
        for group in self.param_groups:
            pairs = []
            for param in group["params"]:
                pairs.append((index, param))
                index += 1
            yield group, pairs

    # ------------------------------------------------------------------
    # gradients
    # ------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient.

        ``set_to_none=True`` (PyTorch's default) drops the array, so the next
        backward allocates a fresh one; ``False`` fills the existing array
        with zeros in place.
        """
        for param in self._flat_params():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad[...] = 0

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------
    # state dict (flat, pickle-free; format in the module docstring)
    # ------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Return all optimizer state as a flat ``{name: np.ndarray}`` dict (copies)."""
        flat: dict[str, np.ndarray] = {}
        for g, (group, pairs) in enumerate(self._indexed_groups()):
            flat[f"param_groups.{g}.params"] = np.array([i for i, _ in pairs], dtype=np.int64)
            for key, value in group.items():
                if key != "params":
                    flat[f"param_groups.{g}.{key}"] = _hyper_to_array(value)
        for index in sorted(self.state):
            for key, value in self.state[index].items():
                flat[f"state.{index}.{key}"] = (
                    np.array(value, dtype=np.int64) if key in self._int_state_keys
                    else np.array(value, copy=True)
                )
        return flat

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore state written by :meth:`state_dict` (strict; see module docstring).

        Raises
        ------
        ValueError
            Missing or unexpected key, group size or parameter indices that do
            not match this optimizer's groups, or a state array of the wrong shape.
        """
        name = type(self).__name__
        given = dict(state_dict)
        used: set[str] = set()

        def take(key: str):
            if key not in given:
                raise ValueError(f"{name}.load_state_dict: missing key '{key}'")
            used.add(key)
            return given[key]

        new_groups = []
        params_by_index = {}
        for g, (group, pairs) in enumerate(self._indexed_groups()):
            key = f"param_groups.{g}.params"
            indices = np.asarray(take(key)).reshape(-1)
            expected = [i for i, _ in pairs]
            if indices.tolist() != expected:
                raise ValueError(
                    f"{name}.load_state_dict: '{key}' must list parameter indices {expected} "
                    f"(group {g} has {len(expected)} parameters), got {indices.tolist()}"
                )
            new_group = {"params": group["params"]}
            hyper_keys = [k for k in group if k != "params"]
            prefix = f"param_groups.{g}."
            # "initial_lr" is added by a scheduler; accept it whether or not this
            # optimizer has seen a scheduler yet (as torch does).
            if prefix + "initial_lr" in given and "initial_lr" not in hyper_keys:
                hyper_keys.append("initial_lr")
            for hk in hyper_keys:
                template = group.get(hk, group["lr"])
                new_group[hk] = _array_to_hyper(take(prefix + hk), template, prefix + hk, name)
            new_groups.append(new_group)
            params_by_index.update(pairs)

        new_state: dict[int, dict[str, Any]] = {}
        state_keys = [k for k in given if k.startswith("state.")]
        for key in state_keys:
            parts = key.split(".")
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) not in params_by_index:
                raise ValueError(f"{name}.load_state_dict: unexpected key '{key}' "
                                 f"(no parameter with that index)")
            index, entry = int(parts[1]), parts[2]
            param = params_by_index[index]
            value = np.asarray(take(key))
            if entry in self._int_state_keys:
                if value.shape != () or value.dtype.kind not in "iuf" or value != int(value):
                    raise ValueError(f"{name}.load_state_dict: '{key}' must be a "
                                     f"non-negative integer scalar, got {value!r}")
                new_state.setdefault(index, {})[entry] = int(value)
            elif entry in self._array_state_keys:
                if value.shape != param.data.shape:
                    raise ValueError(
                        f"{name}.load_state_dict: '{key}' has shape {value.shape}, "
                        f"expected {param.data.shape} (the parameter's shape)")
                new_state.setdefault(index, {})[entry] = value.astype(param.data.dtype, copy=True)
            else:
                raise ValueError(
                    f"{name}.load_state_dict: unexpected key '{key}'; {name} keeps "
                    f"{sorted(self._array_state_keys + self._int_state_keys)} per parameter")
        unexpected = sorted(set(given) - used)
        if unexpected:
            raise ValueError(f"{name}.load_state_dict: unexpected key '{unexpected[0]}'"
                             + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        # Commit only after everything validated, so a failed load changes nothing.
        for group, new_group in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new_group)
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------
def _check_parameter(param, optimizer_name: str) -> None:
    data = getattr(param, "data", None)
    if not isinstance(data, np.ndarray) or not hasattr(param, "grad"):
        hint = " (pass model.parameters(), not the model)" if hasattr(param, "parameters") else ""
        raise TypeError(f"{optimizer_name}: every parameter needs a '.data' ndarray and a "
                        f"'.grad' attribute, got {type(param).__name__}{hint}")
    if data.dtype.kind != "f":
        raise TypeError(f"{optimizer_name}: parameter '.data' must have a float dtype, "
                        f"got dtype {data.dtype}")


def _hyper_to_array(value) -> np.ndarray:
    """One hyperparameter as a pickle-free array (bool, int64 or float64)."""
    if isinstance(value, (bool, np.bool_)):
        return np.array(bool(value))
    if isinstance(value, numbers.Integral):
        return np.array(int(value), dtype=np.int64)
    if isinstance(value, numbers.Real):
        return np.array(float(value), dtype=np.float64)
    if isinstance(value, (tuple, list)):
        return np.array([float(v) for v in value], dtype=np.float64)
    raise TypeError(f"cannot store hyperparameter value {value!r} of type "
                    f"{type(value).__name__} in a flat state dict")


def _array_to_hyper(value, template, key: str, name: str):
    """Convert a stored array back to a Python value shaped like ``template``.

    Python scalars matter: ``lr * float32_array`` stays float32 under NumPy's
    promotion rules only if ``lr`` is a Python float, not a float64 scalar.
    """
    array = np.asarray(value)
    if isinstance(template, (tuple, list)):
        if array.shape != (len(template),):
            raise ValueError(f"{name}.load_state_dict: '{key}' must have shape "
                             f"({len(template)},), got {array.shape}")
        return tuple(float(v) for v in array)
    if array.shape != ():
        raise ValueError(f"{name}.load_state_dict: '{key}' must be a scalar, "
                         f"got shape {array.shape}")
    if isinstance(template, (bool, np.bool_)):
        return bool(array)
    if isinstance(template, numbers.Integral) and array.dtype.kind in "iub":
        return int(array)
    return float(array)


def _check_number(optimizer_name: str, arg: str, value) -> float:
    """``value`` as a Python float, or TypeError naming ``arg``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{optimizer_name}: '{arg}' must be a real number, "
                        f"got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{optimizer_name}: '{arg}' must be finite, got {value}")
    return value


def _check_nonneg(optimizer_name: str, arg: str, value) -> float:
    """``value`` as a Python float >= 0, or ValueError naming ``arg``."""
    value = _check_number(optimizer_name, arg, value)
    if value < 0:
        raise ValueError(f"{optimizer_name}: '{arg}' must be >= 0, got {value}")
    return value


def _check_grad_shape(optimizer_name: str, index: int, param, grad: np.ndarray) -> None:
    """A gradient of another shape would broadcast silently into the update."""
    if grad.shape != param.data.shape:
        raise ValueError(f"{optimizer_name}.step: parameter {index} has shape "
                         f"{param.data.shape} but its '.grad' has shape {grad.shape}")
