"""The 8x8 handwritten digits shipped with npconv, and their fixed split.

``optdigits.csv.gz`` is the UCI optdigits test set (1,797 images of 10
digits by 13 writers), the same file scikit-learn bundles; see
``LICENSE-optdigits.txt`` beside it for licence (CC BY 4.0) and attribution.

The train/test split uses no random numbers, so it is the same on every NumPy
version: within each class, in file order, every fifth image (positions
4, 9, 14, ... of that class) is a test image. This gives a stratified 80/20
split: 1,442 training and 355 test images.
"""
from __future__ import annotations

import gzip
import io
from importlib import resources

import numpy as np

from ._files import DataError

DIGITS_FILE = "optdigits.csv.gz"
DIGITS_COUNT = 1797
DIGITS_SHAPE = (1, 8, 8)
TEST_EVERY = 5  # every 5th image of each class is a test image (20 %)


def load_digits():
    """Load all 1,797 digits shipped in the package.

    Returns
    -------
    images : (1797, 1, 8, 8) float32
        Pixel counts 0..16 divided by 16, so in [0, 1].
    labels : (1797,) int64
        Digits 0..9.

    Raises
    ------
    DataError
        If the shipped file is missing or damaged (a broken install).
    """
    source = resources.files(__package__).joinpath(DIGITS_FILE)
    where = repr(str(source))
    try:
        compressed = source.read_bytes()
        text = gzip.decompress(compressed).decode("ascii")
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"missing data file {where} (the package install is incomplete)") from None
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"data file {where} is corrupt: {error}") from None
    if (table.shape != (DIGITS_COUNT, 65) or table.min() < 0 or table[:, :64].max() > 16
            or table[:, 64].max() > 9):
        raise DataError(
            f"data file {where} has shape {table.shape} or values outside 0..16 / labels outside 0..9, "
            f"expected ({DIGITS_COUNT}, 65)"
        )
    images = (table[:, :64].astype(np.float32) / np.float32(16.0)).reshape((-1,) + DIGITS_SHAPE)
    labels = table[:, 64].copy()
    return images, labels


def digits_test_mask(labels) -> np.ndarray:
    """Boolean mask of the fixed test split (True = test image).

    Within each class, in the given order, the images at positions
    ``4, 9, 14, ...`` (every ``TEST_EVERY``-th) are test images.

    Parameters
    ----------
    labels : (N,) integer array

    Returns
    -------
    (N,) bool
    """
    labels = np.asarray(labels)
    # Rank of each image within its class, in file order: a stable sort keeps
    # file order inside a class, so rank = position - start of that class.
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    class_start = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - class_start
    return rank % TEST_EVERY == TEST_EVERY - 1


def load_digits_split():
    """The digits with the fixed stratified 80/20 split.

    Returns
    -------
    x_train : (1442, 1, 8, 8) float32 in [0, 1]
    y_train : (1442,) int64
    x_test : (355, 1, 8, 8) float32 in [0, 1]
    y_test : (355,) int64
    """
    images, labels = load_digits()
    test = digits_test_mask(labels)
    return images[~test], labels[~test], images[test], labels[test]
