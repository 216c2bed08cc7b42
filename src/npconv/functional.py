"""The functional API in one namespace: ``from npconv import functional as F``.

Pure functions on NumPy arrays (no state): convolution, transposed convolution,
unfold/fold, pooling, each with its gradient function beside it.
"""
from .convolution import ConvGrads, conv, conv1d, conv2d, conv3d, conv_grad, conv_output_size
from .transposed import (conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d,
                         conv_transpose_grad, conv_transpose_output_size)
from ._im2col import fold, unfold
from .pooling import *  # noqa: F401,F403
from .pooling import __all__ as _pooling_all

__all__ = ["ConvGrads", "conv", "conv1d", "conv2d", "conv3d", "conv_grad", "conv_output_size",
           "conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "conv_transpose_grad", "conv_transpose_output_size", "fold", "unfold"] + list(_pooling_all)
