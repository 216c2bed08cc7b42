"""Layers, containers and losses: ``npconv.nn`` (PyTorch's names, explicit backward).

    >>> import numpy as np
    >>> from npconv import nn
    >>> nn.init.manual_seed(0)  # doctest: +ELLIPSIS
    Generator(PCG64) at ...
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
    ...                       nn.Linear(4 * 8 * 8, 10))
    >>> x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    >>> loss = nn.CrossEntropyLoss()
    >>> value = loss(model(x), np.array([3, 7]))
    >>> dx = model.backward(loss.backward())
    >>> dx.shape, model[0].weight.grad.shape
    ((2, 1, 8, 8), (4, 1, 3, 3))

See ``npconv.nn.module`` for the Module contract (caching, gradient
accumulation, state dicts) and ``npconv.nn.init`` for initialisation and seeding.
"""
from . import init
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .misc import Dropout, Flatten, Identity
from .module import Module, Parameter, Residual, Sequential
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool1d,
                      AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d)

__all__ = [
    "init", "Module", "Parameter", "Sequential", "Residual",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "Flatten", "Dropout", "Identity", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "CrossEntropyLoss", "MSELoss",
]
