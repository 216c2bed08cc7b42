"""Reader for the CIFAR-10 *binary* version (never the pickled python one).

Each batch file (``data_batch_1.bin`` .. ``data_batch_5.bin``,
``test_batch.bin``; https://www.cs.toronto.edu/~kriz/cifar.html) is a plain
sequence of 3,073-byte records::

    1 byte     label 0..9
    3072 bytes image: 1024 red, then 1024 green, then 1024 blue, each a
               32x32 plane in row-major order (so already C, H, W)

The files may sit in ``data_dir`` itself or in the ``cifar-10-batches-bin``
folder the official archive unpacks to; raw or gzipped.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ._files import DataError, find_file, read_bytes

CIFAR_SHAPE = (3, 32, 32)
RECORD_SIZE = 1 + 3 * 32 * 32  # 3073: label byte + image bytes
ARCHIVE_FOLDER = "cifar-10-batches-bin"


def read_cifar_batch(path):
    """Read one CIFAR-10 binary batch file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    images : (N, 3, 32, 32) uint8
    labels : (N,) uint8

    Raises
    ------
    DataError
        If the file is missing or empty, its size is not a multiple of 3073
        bytes (truncated or not a CIFAR-10 binary batch), or a label is not
        in 0..9. The message names the file.
    """
    path = Path(path)
    data = read_bytes(path)
    if len(data) == 0 or len(data) % RECORD_SIZE:
        raise DataError(
            f"CIFAR-10 file {str(path)!r} has {len(data)} bytes, expected a non-zero multiple of "
            f"{RECORD_SIZE} (1 label byte + 3072 pixel bytes per image): truncated, or not the "
            f"binary version"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_SIZE)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(
            f"CIFAR-10 file {str(path)!r} has label {int(labels[bad])} in record {bad}, expected 0..9"
        )
    images = records[:, 1:].reshape((-1,) + CIFAR_SHAPE).copy()
    return images, labels


def _batch_dir(data_dir) -> Path:
    """``data_dir`` or its ``cifar-10-batches-bin`` subfolder, whichever has the test batch."""
    directory = Path(data_dir)
    nested = directory / ARCHIVE_FOLDER
    has_test_batch = any((directory / n).is_file() for n in ("test_batch.bin", "test_batch.bin.gz"))
    if not has_test_batch and nested.is_dir():
        return nested
    return directory


def _train_batch_names(directory: Path):
    """Names of data_batch_1..k present (k >= 1, numbered without gaps)."""
    pattern = re.compile(r"data_batch_(\d+)\.bin(\.gz)?$")
    numbers = sorted({int(m.group(1)) for p in directory.iterdir() if (m := pattern.match(p.name))}) \
        if directory.is_dir() else []
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        # A missing batch in the middle is a broken download, not a smaller data set.
        missing = min(set(range(1, max(numbers, default=1) + 1)) - set(numbers), default=1)
        raise DataError(f"missing data file {str(directory / f'data_batch_{missing}.bin')!r}")
    return [f"data_batch_{n}.bin" for n in numbers]


def load_cifar10(data_dir):
    """Load CIFAR-10 from its binary batches in ``data_dir``.

    Returns
    -------
    x_train : (N_train, 3, 32, 32) float32 in [0, 1]
    y_train : (N_train,) int64
    x_test : (N_test, 3, 32, 32) float32 in [0, 1]
    y_test : (N_test,) int64

    Raises
    ------
    DataError
        A file is missing, truncated or corrupt.
    """
    directory = _batch_dir(data_dir)
    find_file(directory, ["test_batch.bin", "test_batch.bin.gz"])  # clear message if absent
    train_parts = [read_cifar_batch(find_file(directory, [name, name + ".gz"]))
                   for name in _train_batch_names(directory)]
    test_images, test_labels = read_cifar_batch(find_file(directory, ["test_batch.bin", "test_batch.bin.gz"]))
    train_images = np.concatenate([images for images, _ in train_parts])
    train_labels = np.concatenate([labels for _, labels in train_parts])
    scale = np.float32(255.0)
    return (
        train_images.astype(np.float32) / scale,
        train_labels.astype(np.int64),
        test_images.astype(np.float32) / scale,
        test_labels.astype(np.int64),
    )


def write_cifar_batch(path, images, labels) -> None:
    """Write a CIFAR-10 binary batch (gzip if the name ends in .gz); for tests."""
    import gzip

    images = np.asarray(images, dtype=np.uint8).reshape(len(labels), -1)
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], images], axis=1)
    payload = records.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
