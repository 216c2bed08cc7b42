"""Data sets for the command line: shipped digits, MNIST IDX and CIFAR-10 binary.

All loaders return ``(x_train, y_train, x_test, y_test)``: images as float32
``(N, C, H, W)`` in [0, 1], labels as int64 ``(N,)``. Nothing here downloads
and nothing is unpickled; a missing or malformed file raises
:class:`DataError` (a ``ValueError``) naming the file.

=========  ============================================  ===============
name       files                                         image shape
=========  ============================================  ===============
digits     shipped ``optdigits.csv.gz`` (fixed split)    (1, 8, 8)
mnist      four IDX files of MNIST or Fashion-MNIST      (1, 28, 28)
cifar10    ``data_batch_*.bin``, ``test_batch.bin``      (3, 32, 32)
=========  ============================================  ===============
"""
from __future__ import annotations

import numpy as np

from ._files import DataError
from .cifar import load_cifar10, read_cifar_batch
from .digits import digits_test_mask, load_digits, load_digits_split
from .idx import load_mnist, read_idx

DATASETS = ("digits", "mnist", "cifar10")

__all__ = [
    "DATASETS",
    "DataError",
    "channel_stats",
    "iterate_batches",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_digits_split",
    "load_mnist",
    "normalize",
    "read_cifar_batch",
    "read_idx",
    "digits_test_mask",
]


def load_dataset(name, data_dir=None, normalized=False):
    """Load a data set by name.

    Parameters
    ----------
    name : {"digits", "mnist", "cifar10"}
    data_dir : str or os.PathLike, optional
        Folder with the files (required for ``mnist`` and ``cifar10``;
        ignored for ``digits``, which ships with the package).
    normalized : bool
        If True, standardise each channel of both splits with the mean and
        standard deviation of the *training* split (:func:`channel_stats`).

    Returns
    -------
    x_train, y_train, x_test, y_test
        float32 ``(N, C, H, W)`` (in [0, 1] unless ``normalized``) and
        int64 ``(N,)``.

    Raises
    ------
    ValueError
        Unknown ``name`` or missing ``data_dir``.
    DataError
        A file is missing or malformed (message names the file).
    """
    if name not in DATASETS:
        raise ValueError(f"load_dataset: 'name' must be one of {', '.join(DATASETS)}, got {name!r}")
    if name == "digits":
        x_train, y_train, x_test, y_test = load_digits_split()
    elif data_dir is None:
        raise ValueError(f"load_dataset: data set {name!r} needs 'data_dir' (the folder with its files)")
    elif name == "mnist":
        x_train, y_train, x_test, y_test = load_mnist(data_dir)
    else:
        x_train, y_train, x_test, y_test = load_cifar10(data_dir)
    if normalized:
        mean, std = channel_stats(x_train)
        x_train, x_test = normalize(x_train, mean, std), normalize(x_test, mean, std)
    return x_train, y_train, x_test, y_test


def channel_stats(x):
    """Per-channel mean and standard deviation of ``(N, C, H, W)`` images.

    Returns
    -------
    mean, std : (C,) float32
        ``std`` is floored at 1e-6 so a constant channel does not divide by 0.
    """
    x = np.asarray(x)
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalize(x, mean, std):
    """``(x - mean[c]) / std[c]`` per channel; ``x`` is ``(N, C, H, W)``."""
    mean = np.asarray(mean, dtype=x.dtype).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=x.dtype).reshape(1, -1, 1, 1)
    return (x - mean) / std


def iterate_batches(x, y, batch_size, rng=None, drop_last=False):
    """Yield ``(x_batch, y_batch)`` pairs covering the data once.

    Parameters
    ----------
    x : (N, ...) array
    y : (N,) array
    batch_size : int >= 1
    rng : numpy.random.Generator, optional
        If given, the order is ``rng.permutation(N)`` (one draw per call);
        otherwise the data's own order.
    drop_last : bool
        Drop a last batch smaller than ``batch_size`` (default keeps it).

    Yields
    ------
    x_batch : (B, ...) array, y_batch : (B,) array
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"iterate_batches: 'batch_size' must be an int >= 1, got {batch_size!r}")
    count = len(x)
    if len(y) != count:
        raise ValueError(f"iterate_batches: 'x' has {count} items but 'y' has {len(y)}")
    order = rng.permutation(count) if rng is not None else None
    stop = count - count % batch_size if drop_last else count
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield x[index], y[index]
