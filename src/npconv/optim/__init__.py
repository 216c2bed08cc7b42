"""Optimizers and learning-rate schedules with PyTorch's names and update rules.

``SGD``, ``Adam`` and ``AdamW`` update each parameter's ``.data`` in place
from its ``.grad`` (parameters whose ``.grad`` is None are skipped), in the
parameter's dtype. ``state_dict()`` returns a flat ``{name: np.ndarray}`` dict
that ``np.savez`` stores without pickle; see :mod:`npconv.optim.optimizer`
for the key format. Schedules: ``StepLR``, ``CosineAnnealingLR`` in
:mod:`npconv.optim.lr_scheduler`.

Typical loop::

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            opt.step()
        sched.step()
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "StepLR",
           "CosineAnnealingLR", "lr_scheduler"]
