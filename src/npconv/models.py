"""Reference CNNs built from :mod:`npconv.nn`: digits CNN, LeNet-5, ResNet-8/20, AlexNet.

Every model is a :class:`npconv.nn.Sequential`, so its ``state_dict()`` keys are
those of the same stack written with ``torch.nn.Sequential`` (children "0",
"1", ...; a :class:`~npconv.nn.Residual` has children ``block`` and
``shortcut``). Each builder's docstring spells out the stack, and the tests
build that PyTorch twin, copy the weights and compare outputs and gradients.

Every builder takes ``dtype=`` (``np.float32`` default, ``np.float64``) and
``rng=`` (a ``np.random.Generator`` or seed for the initial weights; default:
the generator of :mod:`npconv.nn.init`, reset by ``npconv.nn.init.manual_seed``).

=================  =============  ==========  ========================================
name               input          params      notes
=================  =============  ==========  ========================================
``digits_cnn``     1 x 8 x 8      9,930       default model of ``npconv train``
``lenet5``         1 x 32 x 32    61,706      LeCun et al. 1998; ``input_size=28`` pads
``resnet8``        3 x 32 x 32    78,042      He et al. 2016, CIFAR variant, n = 1
``resnet20``       3 x 32 x 32    272,474     n = 3 (the paper's 0.27M)
``alexnet``        3 x 227 x 227  60,965,224  Krizhevsky et al. 2012, two-GPU groups
``alexnet_small``  3 x 32 x 32    1,790,154   the same plan scaled to 32 x 32
=================  =============  ==========  ========================================

(Parameter counts for the default ``num_classes=10``, ``alexnet`` for 1000;
ResNets count BatchNorm's weight and bias, not its running statistics.)

Use :func:`get_model` (or the ``MODELS`` registry) to build one by name.
"""
from __future__ import annotations

import numpy as np

from . import nn
from .nn import init

__all__ = ["digits_cnn", "lenet5", "resnet8", "resnet20", "resnet", "alexnet",
           "alexnet_small", "LocalResponseNorm", "MODELS", "get_model"]


# ---------------------------------------------------------------------------
# small CNNs
# ---------------------------------------------------------------------------
def digits_cnn(num_classes: int = 10, in_channels: int = 1, dtype=np.float32, rng=None):
    """Small CNN for the 8 x 8 handwritten digits (the default of ``npconv train``).

    Two 3x3 'same' convolutions keep the 8x8 grid (the digits are too small
    to pool early), one 2x2 max-pool halves it, a linear layer classifies::

        0 Conv2d(in_channels, 16, 3, padding=1)   (N, 16, 8, 8)
        1 ReLU
        2 Conv2d(16, 32, 3, padding=1)            (N, 32, 8, 8)
        3 ReLU
        4 MaxPool2d(2)                            (N, 32, 4, 4)
        5 Flatten                                 (N, 512)
        6 Linear(512, num_classes)                (N, num_classes)

    Parameters
    ----------
    num_classes, in_channels : int
    dtype : np.float32 or np.float64
    rng : np.random.Generator or int, optional

    Returns
    -------
    nn.Sequential mapping ``(N, in_channels, 8, 8)`` to logits ``(N, num_classes)``.
    """
    rng = init.get_rng(rng)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, num_classes, dtype=dtype, rng=rng),
    )


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 32,
           activation: str = "tanh", dtype=np.float32, rng=None):
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998) for 32 x 32 input.

    The paper's layer plan C1-S2-C3-S4-C5-F6-output, with C5 a 5x5 convolution
    over the 5x5 maps (so a 1x1 output), as in the paper::

        0  Conv2d(in_channels, 6, 5, padding=p)   C1  (N, 6, 28, 28)
        1  Tanh (or ReLU)
        2  AvgPool2d(2)                           S2  (N, 6, 14, 14)
        3  Conv2d(6, 16, 5)                       C3  (N, 16, 10, 10)
        4  Tanh
        5  AvgPool2d(2)                           S4  (N, 16, 5, 5)
        6  Conv2d(16, 120, 5)                     C5  (N, 120, 1, 1)
        7  Tanh
        8  Flatten                                    (N, 120)
        9  Linear(120, 84)                        F6  (N, 84)
        10 Tanh
        11 Linear(84, num_classes)                    (N, num_classes)

    ``p = 0`` for ``input_size=32`` (the paper's 32x32 input, MNIST's 28x28
    digits centred in it) and ``p = 2`` for ``input_size=28`` (MNIST as
    stored); everything after C1 is the same. Simplifications, as in most
    modern re-implementations: S2/S4 are plain 2x2 averages (the paper's
    have a trainable coefficient and bias each), C3 connects every S2 map
    (the paper's partial connection table is omitted), the activation is a
    plain ``tanh`` (not ``1.7159 tanh(2x/3)``), and the output is a linear
    layer for a softmax cross-entropy loss (not Euclidean RBF units).

    Parameters
    ----------
    num_classes, in_channels : int
    input_size : {32, 28}
        Spatial size of the (square) input.
    activation : {"tanh", "relu"}
    dtype : np.float32 or np.float64
    rng : np.random.Generator or int, optional
    """
    if input_size not in (28, 32):
        raise ValueError(f"lenet5: 'input_size' must be 32 or 28, got {input_size!r}")
    act = _activation("lenet5", activation)
    rng = init.get_rng(rng)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=(32 - input_size) // 2, dtype=dtype, rng=rng),
        act(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, dtype=dtype, rng=rng),
        act(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5, dtype=dtype, rng=rng),
        act(),
        nn.Flatten(),
        nn.Linear(120, 84, dtype=dtype, rng=rng),
        act(),
        nn.Linear(84, num_classes, dtype=dtype, rng=rng),
    )


def _activation(fn: str, name: str):
    table = {"tanh": nn.Tanh, "relu": nn.ReLU}
    if name not in table:
        raise ValueError(f"{fn}: 'activation' must be one of {sorted(table)}, got {name!r}")
    return table[name]


# ---------------------------------------------------------------------------
# ResNet for CIFAR (He, Zhang, Ren & Sun 2016, section 4.2)
# ---------------------------------------------------------------------------
def _basic_block(in_channels: int, out_channels: int, stride: int, dtype, rng):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` as ``Sequential(Residual, ReLU)``.

    Keys: ``0.block.{0,1,3,4}.*`` (conv3x3, BN, -, conv3x3, BN) and, when
    the shape changes, ``0.shortcut.{0,1}.*`` (1x1 conv with the stride, BN:
    the paper's projection shortcut, "option B").
    """
    block = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                  dtype=dtype, rng=rng),
        nn.BatchNorm2d(out_channels, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, dtype=dtype, rng=rng),
        nn.BatchNorm2d(out_channels, dtype=dtype),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                      dtype=dtype, rng=rng),
            nn.BatchNorm2d(out_channels, dtype=dtype),
        )
    # Residual adds without an activation; the block's ReLU follows the sum.
    return nn.Sequential(nn.Residual(block, shortcut), nn.ReLU())


def resnet(depth: int, num_classes: int = 10, in_channels: int = 3, dtype=np.float32,
           rng=None):
    """CIFAR ResNet of ``depth = 6n + 2`` layers (He et al. 2016, section 4.2).

    A 3x3 conv with 16 filters, then three stages of ``n`` basic blocks with
    16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps (the first block of
    stages 2 and 3 has stride 2 and a projection shortcut), global average
    pooling and a linear classifier::

        0 Conv2d(in_channels, 16, 3, padding=1, bias=False)   (N, 16, 32, 32)
        1 BatchNorm2d(16)
        2 ReLU
        3 Sequential(n blocks, 16 -> 16)                     (N, 16, 32, 32)
        4 Sequential(n blocks, 16 -> 32, first stride 2)     (N, 32, 16, 16)
        5 Sequential(n blocks, 32 -> 64, first stride 2)     (N, 64, 8, 8)
        6 AdaptiveAvgPool2d(1)                               (N, 64, 1, 1)
        7 Flatten                                            (N, 64)
        8 Linear(64, num_classes)

    A block is ``Sequential(Residual(block, shortcut), ReLU())`` where
    ``block = Sequential(conv3x3, BN, ReLU, conv3x3, BN)``; the shortcut is
    the identity, or ``Sequential(conv1x1 stride 2, BN)`` where the shape
    changes (the paper's option B; its CIFAR experiments used option A,
    zero-padding, which has no parameters).

    Initialisation follows He et al. (2015): convolutions
    ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, BatchNorm
    weight 1 and bias 0, the linear layer PyTorch's default.
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"resnet: 'depth' must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), "
                         f"got {depth!r}")
    n = (depth - 2) // 6
    rng = init.get_rng(rng)
    layers = [
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False, dtype=dtype, rng=rng),
        nn.BatchNorm2d(16, dtype=dtype),
        nn.ReLU(),
    ]
    in_planes = 16
    for planes, first_stride in ((16, 1), (32, 2), (64, 2)):
        blocks = []
        for i in range(n):
            blocks.append(_basic_block(in_planes, planes, first_stride if i == 0 else 1,
                                       dtype, rng))
            in_planes = planes
        layers.append(nn.Sequential(*blocks))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(64, num_classes, dtype=dtype, rng=rng)]
    model = nn.Sequential(*layers)
    for param in model.parameters():
        if param.data.ndim == 4:  # conv weights (BN and Linear are 1-d / 2-d)
            init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu", rng=rng)
    return model


def resnet8(num_classes: int = 10, in_channels: int = 3, dtype=np.float32, rng=None):
    """ResNet-8 for 32x32 input: :func:`resnet` with one block per stage (n = 1)."""
    return resnet(8, num_classes, in_channels, dtype, rng)


def resnet20(num_classes: int = 10, in_channels: int = 3, dtype=np.float32, rng=None):
    """ResNet-20 for 32x32 input: :func:`resnet` with three blocks per stage (n = 3)."""
    return resnet(20, num_classes, in_channels, dtype, rng)


# ---------------------------------------------------------------------------
# AlexNet (Krizhevsky, Sutskever & Hinton 2012)
# ---------------------------------------------------------------------------
class LocalResponseNorm(nn.Module):
    """Local response normalisation across channels (AlexNet's, section 3.3).

    As ``torch.nn.LocalResponseNorm``, for input ``(N, C, *spatial)``::

        D_c = k + (alpha / n) * sum_{c' in W(c)} x_{c'}^2,   W(c) = [c - n//2, c + (n-1)//2]
        y_c = x_c / D_c ** beta

    (channels outside ``0..C-1`` count as zero). The paper writes
    ``k + alpha * sum``: its ``alpha = 1e-4`` is torch's ``alpha = 5e-4``
    for ``n = 5``. Gradient of ``sum(y * dy)``::

        dx_j = dy_j / D_j**beta - (2 alpha beta / n) x_j sum_{c : j in W(c)} dy_c y_c / D_c

    where ``j in W(c)`` iff ``c in [j - (n-1)//2, j + n//2]`` - the mirrored
    window. Loops run over the ``n`` window offsets only.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"LocalResponseNorm: 'size' must be an int >= 1, got {size!r}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)
        self._ctx = None

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def _window_sum(self, values: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``out_c = sum_{o=0}^{n-1} padded_{c+o}``, channels zero-padded by (lo, hi)."""
        pad = [(0, 0)] * values.ndim
        pad[1] = (lo, hi)
        padded = np.pad(values, pad)
        channels = values.shape[1]
        total = padded[:, 0:channels].copy()
        for offset in range(1, self.size):
            total += padded[:, offset:offset + channels]
        return total

    def forward(self, x):
        x = self._check_float_input(x, range(3, 64), "(N, C, *spatial)")
        n = self.size
        denom = self.k + self.alpha * (self._window_sum(x * x, n // 2, (n - 1) // 2) / n)
        y = x / denom ** self.beta
        self._ctx = (x, y, denom)
        return y

    def backward(self, dy):
        x, y, denom = self._saved()
        dy = np.asarray(dy)
        if dy.shape != y.shape:
            raise self._layer_error(f"'dy' must have the output's shape {y.shape}, got {dy.shape}")
        n = self.size
        mirrored = self._window_sum(dy * y / denom, (n - 1) // 2, n // 2)
        return dy / denom ** self.beta - (2 * self.alpha * self.beta / n) * x * mirrored


def _paper_lrn():
    """The paper's LRN: n = 5, k = 2, beta = 0.75, alpha = 1e-4 in the paper's
    ``k + alpha * sum`` convention, i.e. ``5e-4`` in torch's ``alpha / n``."""
    return LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)


def _alexnet_stack(in_channels, widths, first_conv, second_kernel, groups, hidden,
                   pooled_size, num_classes, lrn, dtype, rng):
    """Conv-ReLU-[LRN]-pool, conv-ReLU-[LRN]-pool, 3 x conv-ReLU, pool, FC-ReLU-dropout x 2, FC."""
    c1, c2, c3, c4, c5 = widths
    kernel1, stride1, padding1 = first_conv
    layers = [nn.Conv2d(in_channels, c1, kernel1, stride=stride1, padding=padding1,
                        dtype=dtype, rng=rng), nn.ReLU()]
    layers += [_paper_lrn()] if lrn else []
    layers += [nn.MaxPool2d(3, stride=2),
               nn.Conv2d(c1, c2, second_kernel, padding=second_kernel // 2, groups=groups,
                         dtype=dtype, rng=rng), nn.ReLU()]
    layers += [_paper_lrn()] if lrn else []
    layers += [
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(c2, c3, 3, padding=1, dtype=dtype, rng=rng), nn.ReLU(),
        nn.Conv2d(c3, c4, 3, padding=1, groups=groups, dtype=dtype, rng=rng), nn.ReLU(),
        nn.Conv2d(c4, c5, 3, padding=1, groups=groups, dtype=dtype, rng=rng), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Flatten(),
        nn.Linear(c5 * pooled_size ** 2, hidden, dtype=dtype, rng=rng), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, hidden, dtype=dtype, rng=rng), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes, dtype=dtype, rng=rng),
    ]
    return nn.Sequential(*layers)


def alexnet(num_classes: int = 1000, in_channels: int = 3, groups: bool = True,
            lrn: bool = False, dtype=np.float32, rng=None):
    """AlexNet as in the paper, for 227 x 227 input.

    Five convolutions (96, 256, 384, 384, 256 filters), three overlapping
    3x3 stride-2 max-pools, three fully connected layers with dropout 0.5
    on the outputs of the first two, ReLU everywhere::

        0  Conv2d(in_channels, 96, 11, stride=4)            (N, 96, 55, 55)
        1  ReLU
        2  MaxPool2d(3, stride=2)                           (N, 96, 27, 27)
        3  Conv2d(96, 256, 5, padding=2, groups=g)          (N, 256, 27, 27)
        4  ReLU
        5  MaxPool2d(3, stride=2)                           (N, 256, 13, 13)
        6  Conv2d(256, 384, 3, padding=1)                   (N, 384, 13, 13)
        7  ReLU
        8  Conv2d(384, 384, 3, padding=1, groups=g)         (N, 384, 13, 13)
        9  ReLU
        10 Conv2d(384, 256, 3, padding=1, groups=g)         (N, 256, 13, 13)
        11 ReLU
        12 MaxPool2d(3, stride=2)                           (N, 256, 6, 6)
        13 Flatten                                          (N, 9216)
        14 Linear(9216, 4096)
        15 ReLU
        16 Dropout(0.5)
        17 Linear(4096, 4096)
        18 ReLU
        19 Dropout(0.5)
        20 Linear(4096, num_classes)

    ``g = 2`` with ``groups=True``: the paper split conv2, conv4 and conv5
    across two GPUs, each half seeing only its own GPU's maps (conv3 and
    the FC layers cross over) - exactly a grouped convolution; 60,965,224
    parameters for 1000 classes. ``groups=False`` uses full connections
    (62,378,344 parameters). The paper's 224 x 224 is a known misprint:
    11x11 stride 4 needs 227.

    Local response normalisation (section 3.3) is omitted by default, as in
    most re-implementations (it has no parameters and later work found it of
    little use). ``lrn=True`` puts the paper's :class:`LocalResponseNorm`
    after the first two ReLUs, as indices 2 and 6 (later indices shift by
    one and two). Weight initialisation is PyTorch's default, not the
    paper's N(0, 0.01) with biases of 1.
    """
    return _alexnet_stack(in_channels, (96, 256, 384, 384, 256), (11, 4, 0), 5,
                          2 if groups else 1, 4096, 6, num_classes, lrn, dtype,
                          init.get_rng(rng))


def alexnet_small(num_classes: int = 10, in_channels: int = 3, lrn: bool = False,
                  dtype=np.float32, rng=None):
    """AlexNet's plan scaled to 32 x 32 input (CIFAR-10).

    Same sequence as :func:`alexnet` - five convolutions, overlapping 3x3
    stride-2 max-pools after conv1, conv2 and conv5, three FC layers with
    dropout, optional LRN - with a stride-1 5x5 first conv, fewer filters,
    512-wide FC layers and no groups (1.79 M parameters)::

        0  Conv2d(in_channels, 48, 5, padding=2)            (N, 48, 32, 32)
        1  ReLU
        2  MaxPool2d(3, stride=2)                           (N, 48, 15, 15)
        3  Conv2d(48, 128, 5, padding=2)                    (N, 128, 15, 15)
        4  ReLU
        5  MaxPool2d(3, stride=2)                           (N, 128, 7, 7)
        6  Conv2d(128, 192, 3, padding=1)                   (N, 192, 7, 7)
        7  ReLU
        8  Conv2d(192, 192, 3, padding=1)
        9  ReLU
        10 Conv2d(192, 128, 3, padding=1)                   (N, 128, 7, 7)
        11 ReLU
        12 MaxPool2d(3, stride=2)                           (N, 128, 3, 3)
        13 Flatten                                          (N, 1152)
        14 Linear(1152, 512)
        15 ReLU
        16 Dropout(0.5)
        17 Linear(512, 512)
        18 ReLU
        19 Dropout(0.5)
        20 Linear(512, num_classes)
    """
    return _alexnet_stack(in_channels, (48, 128, 192, 192, 128), (5, 1, 2), 5, 1, 512, 3,
                          num_classes, lrn, dtype, init.get_rng(rng))


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------
MODELS = {
    "digits_cnn": digits_cnn,
    "lenet5": lenet5,
    "resnet8": resnet8,
    "resnet20": resnet20,
    "alexnet": alexnet,
    "alexnet_small": alexnet_small,
}


def get_model(name: str, **kwargs):
    """Build the model registered as ``name`` in :data:`MODELS` with ``kwargs``.

    Raises
    ------
    ValueError
        ``name`` is not registered; the message lists the valid names.

    Examples
    --------
    >>> import numpy as np
    >>> model = get_model("resnet8", num_classes=10, rng=0)
    >>> model(np.zeros((2, 3, 32, 32), dtype=np.float32)).shape
    (2, 10)
    >>> list(model.state_dict())[:3]
    ['0.weight', '1.weight', '1.bias']
    """
    if name not in MODELS:
        raise ValueError(f"get_model: unknown model name {name!r}; "
                         f"expected one of {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
