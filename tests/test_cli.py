"""The ``npconv`` command line: train, evaluate, checkpoints, resume and faults.

Runs are in-process through ``npconv.cli.main([...])`` (stdout/stderr via
capsys), plus a few subprocess runs of ``python -m npconv`` for exit codes.
Every run uses the shipped digits with few epochs so the file stays fast.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npconv import cli
from npconv.data.cifar import write_cifar_batch
from npconv.data.idx import MNIST_FILES, write_idx

ACCURACY_LINE = re.compile(r"^test accuracy: (\d\.\d{4})$")
SRC = Path(cli.__file__).resolve().parents[1]
# Small, fast setting for most runs: 2 epochs of 23 batches on the digits.
FAST = ["--batch-size", "64", "--no-progress"]


def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def assert_one_line_error(code, err, *fragments, exit_code=1):
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def load_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """One uninterrupted 2-epoch run, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("run2")
    # capsys is function-scoped, so a module-scoped run redirects by hand.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["train", "--epochs", "2", "--seed", "3", "--out", str(out), *FAST])
    return code, stdout.getvalue(), stderr.getvalue(), out


# ----------------------------------------------------------------------
# train and evaluate
# ----------------------------------------------------------------------
def test_train_writes_metrics_curves_and_checkpoint(two_epoch_run):
    code, out, err, directory = two_epoch_run
    assert code == 0, err
    assert err == ""  # --no-progress: nothing on stderr
    match = ACCURACY_LINE.match(last_line(out))
    assert match, last_line(out)
    accuracy = float(match.group(1))
    assert 0.5 < accuracy <= 1.0  # two epochs already learn the digits

    with open(directory / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]
    assert f"{float(rows[-1]['test_acc']):.4f}" == match.group(1)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])

    assert (directory / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = load_arrays(directory / "checkpoint.npz")
    assert str(arrays["format"]) == "npconv-checkpoint/1"
    assert int(arrays["epoch"]) == 2
    config = json.loads(str(arrays["config"]))
    assert config["model"] == "digits_cnn" and config["seed"] == 3 and config["epochs"] == 2
    assert json.loads(str(arrays["rng_state"]))["bit_generator"] == "PCG64"
    assert {"model/0.weight", "model/0.bias", "model/6.weight"} <= set(arrays)
    assert any(key.startswith("optimizer/state.") for key in arrays)
    assert not any(name.endswith(".tmp") for name in os.listdir(directory))


def test_evaluate_agrees_with_train(two_epoch_run, capsys, tmp_path):
    _, train_out, _, directory = two_epoch_run
    code, out, err = run(capsys, "evaluate", directory / "checkpoint.npz", "--out", tmp_path)
    assert code == 0, err
    assert last_line(out) == last_line(train_out)
    assert "confusion matrix" in out
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_bar_shows_loss_and_accuracy(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--epochs", "1", "--batch-size", "128", "--out", tmp_path,
                         "--progress")
    assert code == 0
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err  # tqdm bar on stderr
    assert ACCURACY_LINE.match(last_line(out))
    # Without --progress, stderr is not a terminal here: no bar, stderr stays empty.
    code, out, err = run(capsys, "train", "--epochs", "1", "--batch-size", "128", "--out", tmp_path)
    assert code == 0 and err == ""


def test_resume_gives_identical_weights(two_epoch_run, capsys, tmp_path):
    _, full_out, _, full_dir = two_epoch_run
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    code, _, err = run(capsys, "train", "--epochs", "1", "--seed", "3", "--out", first, *FAST)
    assert code == 0, err
    code, out, err = run(capsys, "train", "--resume", first / "checkpoint.npz", "--epochs", "2",
                         "--out", resumed, *FAST)
    assert code == 0, err
    assert "resuming" in out
    full, again = load_arrays(full_dir / "checkpoint.npz"), load_arrays(resumed / "checkpoint.npz")
    assert set(full) == set(again)
    for key in full:
        if key.startswith(("model/", "optimizer/")) or key in ("epoch", "rng_state"):
            assert np.array_equal(full[key], again[key]), key
    assert last_line(out) == last_line(full_out)
    # The resumed run's metrics.csv carries the first epoch's row too.
    assert (resumed / "metrics.csv").read_text().count("\n") == 3


def _assert_resume_identical(capsys, tmp_path, *options):
    """2 uninterrupted epochs == 1 epoch + --resume to 2, bit for bit."""
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    for argv in (["--epochs", "2", "--out", full], ["--epochs", "1", "--out", first],
                 ["--resume", first / "checkpoint.npz", "--epochs", "2", "--out", resumed]):
        code, out, err = run(capsys, "train", *(options if "--resume" not in argv else ()), *argv,
                             "--no-progress")
        assert code == 0, err
    a, b = load_arrays(full / "checkpoint.npz"), load_arrays(resumed / "checkpoint.npz")
    assert set(a) == set(b)
    for key in a:
        if key != "history":  # history holds wall times
            assert np.array_equal(a[key], b[key]), key
    return a


def test_resume_identical_with_sgd_momentum_and_step_schedule(capsys, tmp_path):
    arrays = _assert_resume_identical(capsys, tmp_path, "--optimizer", "sgd", "--lr", "0.05",
                                      "--schedule", "step", "--step-size", "1", "--gamma", "0.5",
                                      "--batch-size", "128", "--seed", "7")
    assert any(key.endswith("momentum_buffer") for key in arrays)
    assert int(arrays["scheduler/last_epoch"]) == 2


def test_resume_identical_with_dropout_and_batchnorm(capsys, tmp_path):
    # alexnet_small has dropout (masks from the training generator); resnet8 BatchNorm
    # running statistics. Tiny random CIFAR-10 files keep it fast.
    rng = np.random.default_rng(2)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name, count in (("data_batch_1.bin", 6), ("test_batch.bin", 2)):
        write_cifar_batch(cifar / name, rng.integers(0, 256, size=(count, 3, 32, 32)),
                          rng.integers(0, 10, size=count))
    for model in ("alexnet_small", "resnet8"):
        arrays = _assert_resume_identical(capsys, tmp_path / model, "--data", "cifar10", "--data-dir",
                                          cifar, "--model", model, "--batch-size", "3")
        assert model != "resnet8" or "model/1.running_mean" in arrays


def test_resume_rejects_changed_settings_and_finished_run(two_epoch_run, capsys):
    _, full_out, _, directory = two_epoch_run
    code, out, err = run(capsys, "train", "--resume", directory / "checkpoint.npz", "--lr", "0.5",
                         *FAST)
    assert_one_line_error(code, err, "--lr 0.5 differs", "checkpoint.npz")
    # Resuming a run that already has --epochs epochs trains nothing, reports the same accuracy.
    code, out, err = run(capsys, "train", "--resume", directory / "checkpoint.npz", "--epochs", "2",
                         "--out", directory / "again", *FAST)
    assert code == 0 and "nothing to train" in out
    assert last_line(out) == last_line(full_out)


# ----------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------
def test_non_finite_loss_stops_and_keeps_checkpoint(two_epoch_run, capsys, tmp_path):
    shutil.copy(two_epoch_run[3] / "checkpoint.npz", tmp_path / "checkpoint.npz")
    before = (tmp_path / "checkpoint.npz").read_bytes()
    code, out, err = run(capsys, "train", "--lr", "1e30", "--epochs", "1", "--out", tmp_path, *FAST)
    assert_one_line_error(code, err, "training diverged", "epoch 1", "unchanged", "--lr")
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert "test accuracy" not in out
    # Also without an earlier checkpoint: none is written.
    empty = tmp_path / "fresh"
    code, _, err = run(capsys, "train", "--lr", "1e30", "--epochs", "1", "--out", empty, *FAST)
    assert_one_line_error(code, err, "no checkpoint was written")
    assert not (empty / "checkpoint.npz").exists()


def test_ctrl_c_exits_130_and_leaves_a_loadable_checkpoint(monkeypatch, capsys, tmp_path):
    real_epoch = cli._train_epoch
    calls = []

    def interrupted_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(cli, "_train_epoch", interrupted_in_second_epoch)
    code, out, err = run(capsys, "train", "--epochs", "3", "--out", tmp_path, *FAST)
    assert code == 130
    assert "interrupted" in err and "Traceback" not in err
    checkpoint = cli.load_checkpoint(tmp_path / "checkpoint.npz")
    assert checkpoint["epoch"] == 1
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    monkeypatch.undo()
    # ... and the run can be resumed from it.
    code, out, err = run(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--epochs", "2", *FAST)
    assert code == 0, err
    assert ACCURACY_LINE.match(last_line(out))


def _corrupt_checkpoints(good: Path, directory: Path):
    """(path, expected fragment) pairs of broken checkpoints."""
    cases = []
    garbage = directory / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    cases.append((garbage, "corrupt or not an npconv checkpoint"))
    truncated = directory / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cases.append((truncated, "corrupt"))
    other = directory / "other.npz"
    np.savez(other, weights=np.zeros(3))
    cases.append((other, "not an npconv checkpoint"))
    pickled = directory / "pickled.npz"
    arrays = load_arrays(good)
    arrays["model/0.weight"] = np.array([{"a": 1}], dtype=object)
    np.savez(pickled, **arrays)
    cases.append((pickled, "corrupt"))
    wrong_shape = directory / "wrong_shape.npz"
    arrays = load_arrays(good)
    arrays["model/0.weight"] = np.zeros((3, 1, 3, 3), np.float32)
    np.savez(wrong_shape, **arrays)
    cases.append((wrong_shape, "0.weight"))
    missing_key = directory / "missing_key.npz"
    arrays = load_arrays(good)
    del arrays["model/6.bias"]
    np.savez(missing_key, **arrays)
    cases.append((missing_key, "6.bias"))
    cases.append((directory / "absent.npz", "does not exist"))
    return cases


def test_bad_checkpoints_give_one_line(two_epoch_run, capsys, tmp_path):
    good = two_epoch_run[3] / "checkpoint.npz"
    for path, fragment in _corrupt_checkpoints(good, tmp_path):
        code, out, err = run(capsys, "evaluate", path)
        assert_one_line_error(code, err, path.name, fragment)
        code, out, err = run(capsys, "train", "--resume", path, "--out", tmp_path / "r", *FAST)
        assert_one_line_error(code, err, path.name)


def test_bad_data_gives_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--data", "mnist", *FAST)
    assert_one_line_error(code, err, "--data-dir")
    code, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", tmp_path, *FAST)
    assert_one_line_error(code, err, "missing data file", "train-images-idx3-ubyte")
    rng = np.random.default_rng(0)
    for role, name in MNIST_FILES.items():
        count = 40 if role.startswith("train") else 20
        shape = (count, 28, 28) if role.endswith("images") else (count,)
        write_idx(tmp_path / name, rng.integers(0, 10, size=shape).astype(np.uint8))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    code, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", tmp_path, *FAST)
    assert_one_line_error(code, err, "t10k-images-idx3-ubyte", "truncated")
    code, _, err = run(capsys, "train", "--data", "cifar10", "--data-dir", tmp_path, *FAST)
    assert_one_line_error(code, err, "missing data file", "test_batch.bin")


def test_usage_errors_are_one_line(capsys):
    for argv, fragment in ((["train", "--epochs", "0"], "--epochs: expected >= 1"),
                           (["train", "--lr", "nan"], "--lr: expected a finite number"),
                           (["train", "--model", "nope"], "'nope' is not a model"),
                           (["train", "--data", "svhn"], "invalid choice: 'svhn'"),
                           (["fly"], "invalid choice: 'fly'")):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, fragment, exit_code=1 if "--model" in argv else 2)


def test_tiny_mnist_and_cifar_runs_and_evaluate(capsys, tmp_path):
    rng = np.random.default_rng(1)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for role, name in MNIST_FILES.items():
        count = 48 if role.startswith("train") else 16
        shape = (count, 28, 28) if role.endswith("images") else (count,)
        high = 256 if role.endswith("images") else 10
        write_idx(mnist / (name + ".gz"), rng.integers(0, high, size=shape).astype(np.uint8))
    code, out, err = run(capsys, "train", "--data", "mnist", "--data-dir", mnist, "--epochs", "1",
                         "--out", tmp_path / "m", *FAST)
    assert code == 0, err
    assert "lenet5" in out
    code, out_eval, err = run(capsys, "evaluate", tmp_path / "m" / "checkpoint.npz")
    assert code == 0, err
    assert last_line(out_eval) == last_line(out)

    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name, count in (("data_batch_1.bin", 24), ("test_batch.bin", 8)):
        write_cifar_batch(cifar / name, rng.integers(0, 256, size=(count, 3, 32, 32)),
                          rng.integers(0, 10, size=count))
    code, out, err = run(capsys, "train", "--data", "cifar10", "--data-dir", cifar, "--epochs", "1",
                         "--batch-size", "8", "--no-progress", "--out", tmp_path / "c")
    assert code == 0, err
    config = cli.load_checkpoint(tmp_path / "c" / "checkpoint.npz")["config"]
    assert config["normalize"] and len(config["norm_mean"]) == 3
    code, out_eval, err = run(capsys, "evaluate", tmp_path / "c" / "checkpoint.npz")
    assert code == 0, err
    assert last_line(out_eval) == last_line(out)


def test_bench_delegates_or_reports(monkeypatch, capsys):
    import types

    received = []
    fake = types.ModuleType("npconv.bench")
    fake.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(sys.modules, "npconv.bench", fake)
    assert cli.main(["bench", "--suite", "small", "--threads", "1"]) == 0
    assert received == [["--suite", "small", "--threads", "1"]]
    monkeypatch.setitem(sys.modules, "npconv.bench", None)  # import fails
    code, _, err = run(capsys, "bench")
    assert_one_line_error(code, err, "npconv bench")


# ----------------------------------------------------------------------
# the real entry point, in a subprocess
# ----------------------------------------------------------------------
def _python_m(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NPCONV_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "npconv", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_python_m_npconv_exit_codes(two_epoch_run, tmp_path):
    _, train_out, _, directory = two_epoch_run
    result = _python_m("evaluate", directory / "checkpoint.npz", "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == last_line(train_out)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 broken")
    result = _python_m("evaluate", broken, cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "broken.npz")
    result = _python_m("train", "--lr", "1e30", "--out", tmp_path / "diverged", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "training diverged")
    assert not (tmp_path / "diverged" / "checkpoint.npz").exists()
    result = _python_m("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("npconv ")


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_real_ctrl_c_in_subprocess(tmp_path):
    import signal

    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # A shell's background jobs ignore SIGINT; restore the default so Python installs its handler.
    process = subprocess.Popen(
        [sys.executable, "-m", "npconv", "train", "--epochs", "500", "--out", str(tmp_path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:  # wait until an epoch (and its checkpoint) is done
            if line.startswith("epoch 2/500"):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert cli.load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] >= 2
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "checkpoint.npz"
    cli._atomic_write(target, lambda f: f.write(b"old complete content"))

    def interrupted_writer(file):
        file.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli._atomic_write(target, interrupted_writer)
    assert target.read_bytes() == b"old complete content"
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the temporary file is gone
