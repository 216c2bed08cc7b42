"""Twins of ``npconv.models`` built from ``torch.nn``, written from the stacks the
npconv builders document (not derived from the npconv objects): the oracle of
``test_models.py`` and of ``benchmarks/train_step.py``. Imports torch.
"""
from __future__ import annotations

import torch

tnn = torch.nn


# ---------------------------------------------------------------------------
# torch twins, written from the documented stacks
# ---------------------------------------------------------------------------
class TorchResidual(tnn.Module):
    """``block(x) + (shortcut(x) or x)``, children named block / shortcut."""

    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x):
        return self.block(x) + (self.shortcut(x) if self.shortcut is not None else x)


def torch_digits_cnn(num_classes=10, in_channels=1):
    return tnn.Sequential(
        tnn.Conv2d(in_channels, 16, 3, padding=1), tnn.ReLU(),
        tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(),
        tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(512, num_classes))


def torch_lenet5(num_classes=10, in_channels=1, input_size=32, activation="tanh"):
    act = {"tanh": tnn.Tanh, "relu": tnn.ReLU}[activation]
    return tnn.Sequential(
        tnn.Conv2d(in_channels, 6, 5, padding=2 if input_size == 28 else 0), act(),
        tnn.AvgPool2d(2),
        tnn.Conv2d(6, 16, 5), act(), tnn.AvgPool2d(2),
        tnn.Conv2d(16, 120, 5), act(), tnn.Flatten(),
        tnn.Linear(120, 84), act(), tnn.Linear(84, num_classes))


def torch_resnet(depth, num_classes=10, in_channels=3):
    n = (depth - 2) // 6

    def block(cin, cout, stride):
        body = tnn.Sequential(
            tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU(),
            tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout))
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                      tnn.BatchNorm2d(cout))
        return tnn.Sequential(TorchResidual(body, shortcut), tnn.ReLU())

    stages, cin = [], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        stages.append(tnn.Sequential(*[block(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                       for i in range(n)]))
        cin = cout
    return tnn.Sequential(
        tnn.Conv2d(in_channels, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(),
        *stages, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, num_classes))


def torch_alexnet(num_classes=1000, in_channels=3, groups=True, device=None):
    g = 2 if groups else 1
    kw = dict(device=device)
    return tnn.Sequential(
        tnn.Conv2d(in_channels, 96, 11, stride=4, **kw), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(96, 256, 5, padding=2, groups=g, **kw), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(256, 384, 3, padding=1, **kw), tnn.ReLU(),
        tnn.Conv2d(384, 384, 3, padding=1, groups=g, **kw), tnn.ReLU(),
        tnn.Conv2d(384, 256, 3, padding=1, groups=g, **kw), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        tnn.Flatten(),
        tnn.Linear(9216, 4096, **kw), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(4096, 4096, **kw), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(4096, num_classes, **kw))


def torch_alexnet_small(num_classes=10, in_channels=3, lrn=False):
    # the paper's LRN (k + alpha*sum with alpha = 1e-4) in torch's alpha/n convention
    norm = [tnn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)] if lrn else []
    return tnn.Sequential(
        tnn.Conv2d(in_channels, 48, 5, padding=2), tnn.ReLU(), *norm, tnn.MaxPool2d(3, 2),
        tnn.Conv2d(48, 128, 5, padding=2), tnn.ReLU(), *norm, tnn.MaxPool2d(3, 2),
        tnn.Conv2d(128, 192, 3, padding=1), tnn.ReLU(),
        tnn.Conv2d(192, 192, 3, padding=1), tnn.ReLU(),
        tnn.Conv2d(192, 128, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        tnn.Flatten(),
        tnn.Linear(1152, 512), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(512, 512), tnn.ReLU(), tnn.Dropout(0.5),
        tnn.Linear(512, num_classes))
