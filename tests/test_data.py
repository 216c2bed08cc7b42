"""Data readers: shipped digits, MNIST IDX files, CIFAR-10 binary batches.

The IDX and CIFAR files are small ones the tests write into tmp_path (raw and
gzip), then damage in the ways a real download goes wrong: missing, truncated,
bad magic number, wrong shape or type, trailing bytes, corrupt gzip.
"""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from npconv.data import (
    DataError,
    channel_stats,
    digits_test_mask,
    iterate_batches,
    load_dataset,
    load_digits,
    load_digits_split,
    normalize,
    read_cifar_batch,
    read_idx,
)
from npconv.data.cifar import RECORD_SIZE, write_cifar_batch
from npconv.data.idx import MNIST_FILES, write_idx


# ----------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------
def test_load_digits_shapes_values_and_content():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    # Pixels are counts 0..16 scaled by 1/16: every value is an exact multiple.
    np.testing.assert_array_equal(images * 16, np.round(images * 16))
    np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    # The first image is the well-known "0" of the UCI / scikit-learn file.
    np.testing.assert_array_equal(images[0, 0, 0] * 16, [0, 0, 5, 13, 9, 1, 0, 0])
    assert labels[:10].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    # Content fingerprint of the shipped file (guards against a re-encoded copy).
    pixels = np.round(images.reshape(1797, 64) * 16).astype(np.int64)
    table = np.concatenate([pixels, labels[:, None]], axis=1)
    assert hashlib.sha256(table.tobytes()).hexdigest() == (
        "e10b10289c0d9d8a1b3e6b7dfe998949029a89056e0e06dfb989924a36d75a3c")


def test_digits_split_is_fixed_stratified_and_disjoint():
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1442, 1, 8, 8) and x_test.shape == (355, 1, 8, 8)
    # Stratified: each class gives floor(count / 5) test images.
    images, labels = load_digits()
    np.testing.assert_array_equal(np.bincount(y_test), np.bincount(labels) // 5)
    np.testing.assert_array_equal(np.bincount(y_train) + np.bincount(y_test), np.bincount(labels))
    # Stable across versions: the split is a rule, pinned here by its indices.
    test_index = np.flatnonzero(digits_test_mask(labels))
    assert test_index[:8].tolist() == [33, 36, 37, 40, 44, 47, 51, 58]
    assert int(test_index.sum()) == 322086
    np.testing.assert_array_equal(x_test, images[test_index])
    # Train and test are complementary parts of the file.
    assert len(set(test_index.tolist())) == 355


def test_digits_test_mask_rule_on_small_labels():
    labels = np.array([1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    mask = digits_test_mask(labels)
    # class 1 positions in order: 0,2,3,4,5,10,11,12,13,14 -> 5th and 10th: 5, 14
    # class 0 positions: 1,6,7,8,9 -> 5th: 9
    assert np.flatnonzero(mask).tolist() == [5, 9, 14]


def test_load_dataset_digits_and_errors(tmp_path):
    x_train, y_train, x_test, y_test = load_dataset("digits")
    assert len(x_train) == 1442 and len(y_test) == 355
    z_train, _, z_test, _ = load_dataset("digits", normalized=True)
    mean, std = channel_stats(x_train)
    np.testing.assert_array_equal(z_test, normalize(x_test, mean, std))
    # float32 mean of 92k values; tolerance a few hundred ulps of the unit scale.
    assert abs(float(z_train.mean(dtype=np.float64))) < 1e-5
    with pytest.raises(ValueError, match="'name' must be one of digits, mnist, cifar10, got 'svhn'"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(ValueError, match="needs 'data_dir'"):
        load_dataset("mnist")


# ----------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# ----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path, rng, suffix, dtype):
    array = (rng.integers(-100, 100, size=(3, 4, 5)) if dtype != "u1"
             else rng.integers(0, 256, size=(3, 4, 5))).astype(dtype)
    path = tmp_path / f"x-idx3{suffix}"
    write_idx(path, array)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    result = read_idx(path)
    assert result.shape == (3, 4, 5) and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_read_idx_header_layout(tmp_path):
    # Hand-written file: magic 0x00000801 (ubyte, 1 dim), size 3 big-endian, data.
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    np.testing.assert_array_equal(read_idx(path), [7, 8, 9])
    # gzip content is detected by its magic, whatever the name says.
    path_gz_named_raw = tmp_path / "labels-no-suffix"
    path_gz_named_raw.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_idx(path_gz_named_raw), [7, 8, 9])


@pytest.mark.parametrize("content, message", [
    (b"", "truncated: 0 bytes"),
    (bytes([0, 0, 8]), "truncated: 3 bytes"),
    (bytes([1, 2, 8, 1, 0, 0, 0, 1, 5]), "bad magic number 0x01020801"),
    (bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]), "bad magic number 0x00000701"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 2]), "truncated inside its header"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2]), r"is truncated: header gives shape \(4,\)"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "longer than its header says"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt or truncated gzip"),
])
def test_read_idx_rejects_bad_files_naming_them(tmp_path, content, message):
    path = tmp_path / "bad-file-idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert "bad-file-idx" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_read_idx_truncated_gzip(tmp_path, rng):
    path = tmp_path / "images.gz"
    write_idx(path, rng.integers(0, 256, size=(20, 28, 28)).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"images\.gz.*corrupt or truncated gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"missing data file .*nothing-here"):
        read_idx(tmp_path / "nothing-here")


def _write_mnist(directory, rng, n_train=12, n_test=7, gz=(False, True, True, False)):
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28)).astype(np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    for (role, name), zipped in zip(MNIST_FILES.items(), gz):
        write_idx(directory / (name + (".gz" if zipped else "")), arrays[role])
    return arrays


def test_load_mnist_from_mixed_raw_and_gz(tmp_path, rng):
    arrays = _write_mnist(tmp_path, rng)
    x_train, y_train, x_test, y_test = load_dataset("mnist", tmp_path)
    assert x_train.shape == (12, 1, 28, 28) and x_train.dtype == np.float32
    assert x_test.shape == (7, 1, 28, 28) and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train[:, 0], arrays["train_images"] / np.float32(255))
    np.testing.assert_array_equal(y_train, arrays["train_labels"])
    np.testing.assert_array_equal(y_test, arrays["test_labels"])
    assert x_train.min() >= 0 and x_train.max() <= 1


def test_load_mnist_missing_file_is_named(tmp_path, rng):
    _write_mnist(tmp_path, rng)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing data file .*t10k-labels-idx1-ubyte.*\.gz"):
        load_dataset("mnist", tmp_path)


def test_load_mnist_wrong_shape_and_count(tmp_path, rng):
    _write_mnist(tmp_path, rng)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(6, np.uint8))  # 6 labels, 7 images
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.* has 6 labels but .* has 7 images"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((7, 2), np.uint8))  # labels with 2 dims
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.* shape \(7, 2\), expected uint8 labels"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(7, 12, np.uint8))
    with pytest.raises(DataError, match="has label 12, expected 0..9"):
        load_dataset("mnist", tmp_path)


def test_load_mnist_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        load_dataset("mnist", tmp_path / "absent")


# ----------------------------------------------------------------------
# CIFAR-10 binary
# ----------------------------------------------------------------------
def _write_cifar(directory, rng, counts=(4, 3), n_test=5, gz_test=False):
    batches = []
    for number, count in enumerate(counts, start=1):
        images = rng.integers(0, 256, size=(count, 3, 32, 32)).astype(np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        write_cifar_batch(directory / f"data_batch_{number}.bin", images, labels)
        batches.append((images, labels))
    test_images = rng.integers(0, 256, size=(n_test, 3, 32, 32)).astype(np.uint8)
    test_labels = rng.integers(0, 10, size=n_test).astype(np.uint8)
    write_cifar_batch(directory / ("test_batch.bin" + (".gz" if gz_test else "")), test_images, test_labels)
    return batches, (test_images, test_labels)


def test_read_cifar_batch_record_layout(tmp_path):
    # One hand-made record: label 3, then red plane 0..., green, blue.
    pixels = np.arange(3072, dtype=np.int64) % 251
    path = tmp_path / "one.bin"
    path.write_bytes(bytes([3]) + pixels.astype(np.uint8).tobytes())
    images, labels = read_cifar_batch(path)
    assert labels.tolist() == [3] and images.shape == (1, 3, 32, 32)
    # Channel-major: record byte 1 + c*1024 + h*32 + w is pixel (c, h, w).
    assert images[0, 1, 2, 5] == pixels[1024 + 2 * 32 + 5]
    assert images[0, 2, 31, 31] == pixels[3071]


@pytest.mark.parametrize("gz_test", [False, True])
def test_load_cifar10(tmp_path, rng, gz_test):
    batches, (test_images, test_labels) = _write_cifar(tmp_path, rng, gz_test=gz_test)
    x_train, y_train, x_test, y_test = load_dataset("cifar10", tmp_path)
    assert x_train.shape == (7, 3, 32, 32) and x_test.shape == (5, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_array_equal(x_train[4:], batches[1][0] / np.float32(255))
    np.testing.assert_array_equal(y_train, np.concatenate([batches[0][1], batches[1][1]]))
    np.testing.assert_array_equal(x_test, test_images / np.float32(255))
    np.testing.assert_array_equal(y_test, test_labels)


def test_load_cifar10_from_archive_folder(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    _write_cifar(folder, rng)
    assert len(load_dataset("cifar10", tmp_path)[0]) == 7


def test_cifar_truncated_and_bad_labels(tmp_path, rng):
    _write_cifar(tmp_path, rng)
    path = tmp_path / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=rf"data_batch_2\.bin.* has {3 * RECORD_SIZE - 1} bytes, "
                                        rf"expected a non-zero multiple of 3073"):
        load_dataset("cifar10", tmp_path)
    write_cifar_batch(path, np.zeros((2, 3, 32, 32), np.uint8), np.array([1, 10]))
    with pytest.raises(DataError, match=r"data_batch_2\.bin.* label 10 in record 1"):
        load_dataset("cifar10", tmp_path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"data_batch_2\.bin.* has 0 bytes"):
        load_dataset("cifar10", tmp_path)


def test_cifar_missing_files(tmp_path, rng):
    _write_cifar(tmp_path, rng, counts=(2, 2, 2))
    (tmp_path / "data_batch_2.bin").unlink()
    with pytest.raises(DataError, match=r"missing data file .*data_batch_2\.bin"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"missing data file .*test_batch\.bin"):
        load_dataset("cifar10", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "test_batch.bin").write_bytes(bytes(RECORD_SIZE))
    with pytest.raises(DataError, match=r"missing data file .*data_batch_1\.bin"):
        load_dataset("cifar10", empty)


def test_cifar_pickled_python_version_is_rejected(tmp_path):
    # The python version's batches are pickles; their size is no multiple of 3073.
    import pickle

    (tmp_path / "data_batch_1.bin").write_bytes(pickle.dumps({"data": [1, 2, 3]}))
    (tmp_path / "test_batch.bin").write_bytes(bytes(RECORD_SIZE))
    with pytest.raises(DataError, match="not the binary version"):
        load_dataset("cifar10", tmp_path)


# ----------------------------------------------------------------------
# normalisation and batches
# ----------------------------------------------------------------------
def test_channel_stats_and_normalize(rng):
    x = rng.random((6, 3, 4, 4)).astype(np.float32) * np.array([1, 2, 3], np.float32)[:, None, None]
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    z = normalize(x, mean, std)
    assert z.dtype == np.float32
    # float32 mean of 96 values: a few ulps of the data's scale (~1).
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-5)


def test_iterate_batches_order_shuffle_and_last_batch():
    x = np.arange(10)[:, None] * np.ones((1, 2))
    y = np.arange(10)
    batches = list(iterate_batches(x, y, 4))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(list(iterate_batches(x, y, 4, drop_last=True))) == 2
    order = np.random.Generator(np.random.PCG64(5)).permutation(10)
    shuffled = list(iterate_batches(x, y, 3, rng=np.random.Generator(np.random.PCG64(5))))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in shuffled]), order)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in shuffled])[:, 0], order)
    with pytest.raises(ValueError, match="'batch_size' must be an int >= 1, got 0"):
        list(iterate_batches(x, y, 0))
    with pytest.raises(ValueError, match="'x' has 10 items but 'y' has 9"):
        list(iterate_batches(x, y[:9], 2))


def test_broken_install_of_the_digits_file(monkeypatch):
    import npconv.data.digits as digits

    monkeypatch.setattr(digits, "DIGITS_FILE", "not-shipped.csv.gz")
    with pytest.raises(DataError, match=r"missing data file .*not-shipped\.csv\.gz"):
        load_digits()
    monkeypatch.setattr(digits, "DIGITS_FILE", "LICENSE-optdigits.txt")  # not gzip
    with pytest.raises(DataError, match=r"LICENSE-optdigits\.txt.* is corrupt"):
        load_digits()
