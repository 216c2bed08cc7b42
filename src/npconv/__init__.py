"""npconv: CNN convolution, forward and backward, in plain NumPy.

    >>> import numpy as np, npconv
    >>> y = npconv.conv(np.ones((8, 3, 32, 32)), np.ones((16, 3, 3, 3)), padding="same")
    >>> y.shape
    (8, 16, 32, 32)
"""
from importlib.metadata import PackageNotFoundError, version as _version

from ._config import (get_num_threads, get_workspace_limit, set_num_threads, set_workspace_limit,
                      workspace_limit)
from .functional import *  # noqa: F401,F403  (the contract's functional API)
from .functional import __all__ as _functional_all
from . import data, models, nn, optim, testing  # noqa: E402  (built on the functional core)
from .summary import summary  # noqa: E402

try:
    __version__ = _version("npconv")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = list(_functional_all) + ["get_workspace_limit", "set_workspace_limit", "workspace_limit",
                                   "get_num_threads", "set_num_threads", "summary", "__version__",
                                   "data", "models", "nn", "optim", "testing"]
