"""Reader for the IDX files of MNIST and Fashion-MNIST.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/), all integers
big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type code (0x08 ubyte, 0x09 byte, 0x0B int16,
                0x0C int32, 0x0D float32, 0x0E float64)
    byte  3     number of dimensions n
    then        n uint32 sizes, then prod(sizes) elements, row-major

MNIST and Fashion-MNIST ship four such files (images ``idx3``: (N, 28, 28)
ubyte; labels ``idx1``: (N,) ubyte), raw or gzipped; both are read here.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._files import DataError, find_file, read_bytes

# Element type code -> big-endian NumPy dtype (IDX specification).
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The four files of MNIST / Fashion-MNIST: (role, file name).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (raw or gzip, detected from the content).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray
        Array of the file's shape and element type, in native byte order.

    Raises
    ------
    DataError
        If the file is missing, the magic number or type code is wrong, or the
        size does not match the header (truncated or trailing bytes). The
        message names the file.
    """
    path = Path(path)
    data = read_bytes(path)
    name = repr(str(path))
    if len(data) < 4:
        raise DataError(f"IDX file {name} is truncated: {len(data)} bytes, shorter than the "
                        f"4-byte magic number")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(
            f"IDX file {name} has a bad magic number 0x{data[:4].hex()} "
            f"(expected 0x0000 then a type code in "
            f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)} and the number of dimensions)"
        )
    dtype = IDX_DTYPES[data[2]]
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"IDX file {name} is truncated inside its header "
                        f"({len(data)} of {header_size} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {name} is {what}: header gives shape {shape} of {dtype.name}, "
            f"{expected} bytes expected, {len(data)} found"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _check(array, path, ndim, dtype, what):
    if array.ndim != ndim or array.dtype != dtype:
        raise DataError(
            f"IDX file {str(path)!r} holds {array.dtype.name} of shape {array.shape}, "
            f"expected {what}"
        )


def load_mnist(data_dir):
    """Load MNIST or Fashion-MNIST from the four IDX files in ``data_dir``.

    Each file may be raw or gzipped (``name`` or ``name.gz``).

    Returns
    -------
    x_train : (N_train, 1, H, W) float32 in [0, 1]
    y_train : (N_train,) int64
    x_test : (N_test, 1, H, W) float32 in [0, 1]
    y_test : (N_test,) int64

    Raises
    ------
    DataError
        A file is missing, corrupt, of the wrong shape or type, or the image
        and label counts disagree.
    """
    arrays = {}
    paths = {}
    for role, name in MNIST_FILES.items():
        paths[role] = find_file(data_dir, [name, name + ".gz"])
        arrays[role] = read_idx(paths[role])
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check(images, paths[f"{split}_images"], 3, np.uint8, "uint8 images of shape (N, H, W)")
        _check(labels, paths[f"{split}_labels"], 1, np.uint8, "uint8 labels of shape (N,)")
        if len(images) != len(labels):
            raise DataError(
                f"IDX file {str(paths[f'{split}_labels'])!r} has {len(labels)} labels but "
                f"{str(paths[f'{split}_images'])!r} has {len(images)} images"
            )
        if labels.size and labels.max() > 9:
            raise DataError(
                f"IDX file {str(paths[f'{split}_labels'])!r} has label {int(labels.max())}, expected 0..9"
            )
        # Pixels are 0..255 (ubyte); scale to [0, 1] and add the channel axis.
        out.append((images[:, None].astype(np.float32) / np.float32(255.0)))
        out.append(labels.astype(np.int64))
    return tuple(out)


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file (raw, or gzip if the name ends in .gz).

    The inverse of :func:`read_idx`; used by the tests to make small files.
    """
    import gzip

    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"write_idx: 'array' dtype must be one of the IDX types, got {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(IDX_DTYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
