"""Learning-rate schedules: ``StepLR`` and ``CosineAnnealingLR``.

Use as in PyTorch: build the scheduler after the optimizer, call
``optimizer.step()`` for every batch and ``scheduler.step()`` once per epoch.
Construction counts as epoch 0 and records each group's starting learning
rate as ``group["initial_lr"]`` (the ``base_lr`` below).

Both schedules are computed *recursively* from the current ``group["lr"]``,
exactly as torch's ``get_lr()`` does, so the values agree with torch's to the
last bit (the closed forms below are equal in exact arithmetic only)::

    StepLR:            lr_e = base_lr * gamma ** (e // step_size)
    CosineAnnealingLR: lr_e = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2

State dict (flat, pickle-free, like the optimizers')::

    "last_epoch"  int64 0-d     "step_count" int64 0-d
    "base_lrs"    float64 (G,)  "last_lr"    float64 (G,)
    plus the schedule's hyperparameters as 0-d arrays
    (StepLR: "step_size", "gamma"; CosineAnnealingLR: "T_max", "eta_min").
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR"]


class LRScheduler:
    """Base class: epoch counter, ``step()``, ``get_last_lr()``, state dict.

    Parameters
    ----------
    optimizer : Optimizer
        Its groups' ``"lr"`` entries are overwritten on every ``step()``.
    last_epoch : int, default -1
        -1 starts a new schedule. Resuming is done with
        :meth:`load_state_dict` instead.
    """

    #: names of the subclass's hyperparameters stored in the state dict
    _hyper_keys: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: 'optimizer' must be an npconv.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        if last_epoch != -1:
            raise ValueError(f"{name}: 'last_epoch' must be -1 (a new schedule); resume "
                             f"with load_state_dict() instead, got last_epoch={last_epoch}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = -1
        self._step_count = 0
        self._is_initial = True
        self.step()  # epoch 0: sets the lrs to get_lr() at epoch 0 (= the current ones)
        self._is_initial = False

    def get_lr(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """Learning rates of the groups as set by the last ``step()``."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch and write the new learning rates into the groups."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = float(lr)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{name: np.ndarray}`` state (format in the module docstring)."""
        state = {
            "last_epoch": np.array(self.last_epoch, dtype=np.int64),
            "step_count": np.array(self._step_count, dtype=np.int64),
            "base_lrs": np.array(self.base_lrs, dtype=np.float64),
            "last_lr": np.array(self._last_lr, dtype=np.float64),
        }
        for key in self._hyper_keys:
            value = getattr(self, key)
            dtype = np.int64 if isinstance(value, numbers.Integral) else np.float64
            state[key] = np.array(value, dtype=dtype)
        return state

    def load_state_dict(self, state_dict) -> None:
        """Restore what :meth:`state_dict` returned (strict on keys and sizes).

        The optimizer's own ``"lr"`` values are restored by the optimizer's
        ``load_state_dict``; load both when resuming.
        """
        name = type(self).__name__
        expected = {"last_epoch", "step_count", "base_lrs", "last_lr", *self._hyper_keys}
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing key '{sorted(missing)[0]}'")
        if unexpected:
            raise ValueError(f"{name}.load_state_dict: unexpected key '{sorted(unexpected)[0]}'")
        n_groups = len(self.optimizer.param_groups)
        lrs = {}
        for key in ("base_lrs", "last_lr"):
            lrs[key] = [float(v) for v in np.asarray(state_dict[key]).reshape(-1)]
            if len(lrs[key]) != n_groups:
                raise ValueError(f"{name}.load_state_dict: '{key}' has {len(lrs[key])} "
                                 f"entries, expected {n_groups} (one per param group)")
        self.last_epoch = int(np.asarray(state_dict["last_epoch"]))
        self._step_count = int(np.asarray(state_dict["step_count"]))
        self.base_lrs, self._last_lr = lrs["base_lrs"], lrs["last_lr"]
        for key in self._hyper_keys:
            value = np.asarray(state_dict[key])
            setattr(self, key, int(value) if value.dtype.kind in "iu" else float(value))


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Period of the decay in epochs (>= 1).
    gamma : float, default 0.1
        Multiplicative factor.

    Examples
    --------
    >>> import numpy as np
    >>> from npconv.optim import SGD
    >>> class P:
    ...     data, grad = np.zeros(1), None
    >>> sched = StepLR(SGD([P()], lr=1.0), step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(sched.get_last_lr()[0]); sched.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    _hyper_keys = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1):
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) \
                or step_size < 1:
            raise ValueError(f"StepLR: 'step_size' must be an integer >= 1, got {step_size!r}")
        if not isinstance(gamma, numbers.Real):
            raise TypeError(f"StepLR: 'gamma' must be a real number, got {gamma!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs.

    Without restarts (SGDR's schedule within one period, Loshchilov & Hutter
    2017); past ``T_max`` the cosine continues, rising again, as in torch.

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Half-period in epochs (>= 1).
    eta_min : float, default 0
        Minimum learning rate.
    """

    _hyper_keys = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Integral) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: 'T_max' must be an integer >= 1, got {T_max!r}")
        if not isinstance(eta_min, numbers.Real):
            raise TypeError(f"CosineAnnealingLR: 'eta_min' must be a real number, got {eta_min!r}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # torch's recursive form: lr_e from lr_{e-1} via the ratio of the
        # (1 + cos) factors, with a special case where that ratio is 0/0
        # (the cosine's minimum, e - 1 - T_max a multiple of 2*T_max).
        groups = self.optimizer.param_groups
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return [group["lr"] for group in groups]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            return [group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * epoch / t_max))
                / (1 + math.cos(math.pi * (epoch - 1) / t_max))
                * (group["lr"] - eta_min) + eta_min
                for group in groups]
