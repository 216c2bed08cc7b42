"""The ``npconv`` command line: ``train``, ``evaluate`` and ``bench``.

``npconv train`` with no arguments trains a small CNN on the 8x8 digits the
package ships (fixed split, see :mod:`npconv.data.digits`) and ends with the
line ``test accuracy: 0.9xxx``. It writes to ``--out`` (``checkpoint.npz``
and ``metrics.csv`` after every epoch, ``curves.png`` at the end and on
Ctrl-C):

``metrics.csv``
    one row per epoch: epoch, train_loss, train_acc, test_loss, test_acc,
    lr, seconds.
``curves.png``
    loss and accuracy per epoch, train and test (matplotlib, Agg).
``checkpoint.npz``
    plain arrays only (read with ``np.load(path, allow_pickle=False)``)::

        format        0-d str   "npconv-checkpoint/1"
        config        0-d str   JSON: data, model, optimizer, seeds, ...
        epoch         0-d int64 epochs completed
        rng_state     0-d str   JSON of the training Generator's
                                ``bit_generator.state`` after that epoch
        history       0-d str   JSON list of the metrics rows so far
        model/<key>       the model's ``state_dict()`` (PyTorch keys)
        optimizer/<key>   the optimizer's flat ``state_dict()``
        scheduler/<key>   the schedule's flat ``state_dict()`` (if any)

    It is written to a temporary file in the same folder and moved into place
    with ``os.replace``, so an interrupted or diverged run always leaves the
    previous complete checkpoint.

Reproducibility and resume
--------------------------
Two generators come from ``--seed`` through ``SeedSequence``: one
initialises the weights, the other (the *training* generator) draws every
epoch's shuffle and dropout masks. The checkpoint stores the training
generator's state after the epoch together with the model, optimizer and
schedule state, so ``--resume`` continues exactly where an uninterrupted run
would be and ends with identical weights (``np.array_equal``). ``--resume``
takes every setting from the checkpoint; only ``--epochs`` (the new total),
``--out`` and ``--data-dir`` may differ. This holds for resuming to a larger
``--epochs`` too with the ``none`` and ``step`` schedules (the defaults); a
cosine schedule's period is the first run's ``--epochs`` (kept on resume), so
there only a resume to the same ``--epochs`` - after Ctrl-C - matches.

Errors are one line on stderr, ``npconv: error: ...``, exit code 1 (2 for a
bad command line); Ctrl-C stops with exit code 130. No traceback is shown
unless the environment variable ``NPCONV_DEBUG`` is set.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .data import DATASETS, DataError, channel_stats, iterate_batches, load_dataset, normalize

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = "npconv-checkpoint/1"
METRICS_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
CONFUSION_NAME = "confusion.png"
METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
EVAL_BATCH_SIZE = 500  # fixed, so train's last line and `evaluate` compute identically
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Per data set: the model and training recipe a plain `npconv train --data X`
# uses. The digits recipe reaches >= 0.97 test accuracy in a few seconds.
# No default depends on --epochs (so no cosine): a run resumed to more epochs
# must follow the same path as one started with that many.
RECIPES = {
    "digits": dict(model="digits_cnn", epochs=15, batch_size=32, lr=3e-3, optimizer="adam",
                   schedule="none", normalize=False),
    "mnist": dict(model="lenet5", epochs=3, batch_size=64, lr=1e-3, optimizer="adam",
                  schedule="none", normalize=False),
    "cifar10": dict(model="resnet8", epochs=5, batch_size=128, lr=1e-3, optimizer="adamw",
                    schedule="none", normalize=True),
}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")

class CLIError(Exception):
    """A failure the command line reports as one line (exit code 1)."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not fit the model."""


class TrainingDiverged(CLIError):
    """The loss or the weights became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which checkpoint is left."""


# ----------------------------------------------------------------------
# argument parsing
# ----------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, minimum=None, strictly=False):
    """argparse ``type=`` for a finite int/float with a lower bound."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if minimum is not None and (value < minimum or (strictly and value == minimum)):
            raise argparse.ArgumentTypeError(f"expected {'>' if strictly else '>='} {minimum}, got {text!r}")
        return value

    return parse


def _describe_recipe(data: str) -> str:
    recipe = RECIPES[data]
    return (f"{data}: {recipe['model']}, {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
            f"{recipe['optimizer']} lr {recipe['lr']:g}" + (", normalized" if recipe["normalize"] else ""))


def build_parser() -> argparse.ArgumentParser:
    """The ``npconv`` argument parser (subcommands train, evaluate, bench)."""
    from . import __version__

    parser = _Parser(prog="npconv",
                     description="Train and evaluate CNNs built on npconv's NumPy convolution.")
    parser.add_argument("--version", action="version", version=f"npconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train a model (default: a small CNN on the shipped 8x8 digits)",
        description="Train a model. Without arguments: a small CNN on the 8x8 digits shipped with "
                    "npconv, ending with 'test accuracy: 0.9xxx'. Defaults marked * depend on --data: "
                    + "; ".join(_describe_recipe(name) for name in DATASETS) + ".")
    train.add_argument("--data", choices=DATASETS, help="data set (default: digits)")
    train.add_argument("--data-dir", metavar="DIR",
                       help="folder with the MNIST/Fashion-MNIST IDX files or CIFAR-10 binary batches")
    train.add_argument("--model", metavar="NAME", help="model from npconv.models (default*)")
    train.add_argument("--epochs", type=_number(int, 1), metavar="N", help="total epochs (default*)")
    train.add_argument("--batch-size", type=_number(int, 1), metavar="N", help="batch size (default*)")
    train.add_argument("--lr", type=_number(float, 0, strictly=True), metavar="X",
                       help="learning rate (default*)")
    train.add_argument("--seed", type=_number(int, 0), metavar="N", help="random seed (default: 0)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default*)")
    train.add_argument("--schedule", choices=SCHEDULES,
                       help="learning-rate schedule per epoch: none, step (x gamma every --step-size "
                            "epochs) or cosine (to 0 over --epochs; a resumed run keeps the first "
                            "run's --epochs as the cosine period) (default: none)")
    train.add_argument("--momentum", type=_number(float, 0), metavar="X", help="SGD momentum (default: 0.9)")
    train.add_argument("--weight-decay", type=_number(float, 0), metavar="X",
                       help="weight decay (default: 0; 0.01 for adamw)")
    train.add_argument("--step-size", type=_number(int, 1), metavar="N",
                       help="epochs between learning-rate drops for --schedule step (default: 5)")
    train.add_argument("--gamma", type=_number(float, 0, strictly=True), metavar="X",
                       help="learning-rate factor for --schedule step (default: 0.1)")
    train.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                       help="standardise each channel with the training set's mean and std (default*)")
    train.add_argument("--out", metavar="DIR", help="output folder (default: runs/<timestamp>, or the "
                                                    "checkpoint's folder with --resume)")
    train.add_argument("--resume", metavar="CKPT",
                       help="continue the run saved in CKPT to --epochs total epochs")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="a progress bar per epoch on stderr (default: only if stderr is a "
                            "terminal; the per-epoch summary lines on stdout are always printed)")

    evaluate = commands.add_parser(
        "evaluate", help="test accuracy and confusion matrix of a checkpoint",
        description="Print the test accuracy of a checkpoint (last line 'test accuracy: 0.xxxx') and "
                    "write the confusion matrix picture confusion.png.")
    evaluate.add_argument("checkpoint", metavar="CKPT", help="checkpoint.npz written by npconv train")
    evaluate.add_argument("--data", choices=DATASETS, help="data set (default: the checkpoint's)")
    evaluate.add_argument("--data-dir", metavar="DIR",
                          help="folder with the data files (default: the checkpoint's)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="folder for confusion.png (default: the checkpoint's folder)")

    bench = commands.add_parser("bench", help="benchmark the convolution (see npconv bench --help)",
                                add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


# ----------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------
def main(argv=None) -> int:
    """Run the command line; return the exit code (never raises, no traceback).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["bench"]:  # hand everything after "bench" over untouched
            return _run_bench(argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help, --version, or a usage error already printed
            return stop.code if isinstance(stop.code, int) else EXIT_USAGE
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        # Overflow in a diverging run is detected and reported by us; numpy's
        # RuntimeWarnings (and library warnings in general) would only add
        # multi-line noise to stderr, which holds progress bars and error lines.
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if not os.environ.get("NPCONV_DEBUG"):
                warnings.simplefilter("ignore")
            if args.command == "train":
                return _train_command(args)
            return _evaluate_command(args)
    except SystemExit as stop:  # e.g. a sub-tool's own argparse (npconv bench --help)
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        _error_line(_one_line(Exception(stop.code)))  # sys.exit("message")
        return EXIT_ERROR
    except KeyboardInterrupt as interrupt:
        # Start a fresh line: the terminal has just echoed "^C" after the progress bar.
        print(f"\nnpconv: interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, DataError, CheckpointError, ValueError, TypeError, OSError, KeyError) as error:
        if os.environ.get("NPCONV_DEBUG"):
            raise
        _error_line(_one_line(error))
        return EXIT_ERROR
    except Exception as error:  # a bug: still one line, with a way to see the traceback
        if os.environ.get("NPCONV_DEBUG"):
            raise
        _error_line(f"internal error: {type(error).__name__}: {_one_line(error)} "
                    f"(run with NPCONV_DEBUG=1 for the traceback)")
        return EXIT_ERROR


def _one_line(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = f"missing key {error.args[0]!r}"
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.strerror or text}: {error.filename!r}"
    return " ".join(text.split()) or type(error).__name__


def _error_line(message: str) -> None:
    print(f"npconv: error: {message}", file=sys.stderr)


def _run_bench(bench_args) -> int:
    try:
        from .bench import main as bench_main
    except ImportError as error:
        _error_line(f"'npconv bench' is not available in this install ({_one_line(error)})")
        return EXIT_ERROR
    result = bench_main(bench_args)
    return int(result or 0)


# ----------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------
def _fresh_config(args) -> dict:
    """The full training configuration from the command line and the data set's recipe."""
    data = args.data or "digits"
    recipe = RECIPES[data]
    config = {
        "data": data,
        "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
        "model": args.model or recipe["model"],
        "epochs": args.epochs or recipe["epochs"],
        "batch_size": args.batch_size or recipe["batch_size"],
        "lr": args.lr if args.lr is not None else recipe["lr"],
        "seed": args.seed if args.seed is not None else 0,
        "optimizer": args.optimizer or recipe["optimizer"],
        "schedule": args.schedule or recipe["schedule"],
        "normalize": args.normalize if args.normalize is not None else recipe["normalize"],
    }
    optimizer = config["optimizer"]
    config["momentum"] = args.momentum if args.momentum is not None else (0.9 if optimizer == "sgd" else 0.0)
    config["weight_decay"] = (args.weight_decay if args.weight_decay is not None
                              else (1e-2 if optimizer == "adamw" else 0.0))
    config["step_size"] = args.step_size or 5
    config["gamma"] = args.gamma if args.gamma is not None else 0.1
    _check_model_name(config["model"])
    if config["momentum"] and optimizer != "sgd":
        raise CLIError(f"--momentum applies to --optimizer sgd only, got --optimizer {optimizer}")
    return config


def _resume_config(args, saved: dict, checkpoint_path) -> dict:
    """The checkpoint's configuration, with --epochs / --data-dir updated; rejects changes."""
    config = dict(saved)
    given = {
        "data": args.data,
        "model": args.model, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "optimizer": args.optimizer, "schedule": args.schedule, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "step_size": args.step_size, "gamma": args.gamma,
        "normalize": args.normalize,
    }
    for key, value in given.items():
        if value is not None and value != saved.get(key):
            option = "--" + key.replace("_", "-")
            raise CLIError(
                f"{option} {value} differs from the value {saved.get(key)!r} stored in checkpoint "
                f"{str(checkpoint_path)!r}; a resumed run keeps its settings (drop {option})")
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.data_dir is not None:
        config["data_dir"] = os.path.abspath(args.data_dir)
    return config


def _default_out_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path("runs") / stamp
    suffix = 1
    while candidate.exists():
        candidate = Path("runs") / f"{stamp}-{suffix}"
        suffix += 1
    return candidate


# ----------------------------------------------------------------------
# data, model, optimizer
# ----------------------------------------------------------------------
def _load_data(config: dict):
    """Train/test arrays for ``config``; normalisation statistics stored in it."""
    if config["data"] != "digits" and not config.get("data_dir"):
        raise CLIError(f"--data {config['data']} needs --data-dir DIR (the folder with its files)")
    x_train, y_train, x_test, y_test = load_dataset(config["data"], config.get("data_dir"))
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataError(f"data set {config['data']!r} in {config.get('data_dir')!r} has an empty "
                        f"train or test split ({len(x_train)} / {len(x_test)} images)")
    if config["normalize"]:
        # Statistics of the training split only, stored so evaluate reuses them.
        if "norm_mean" not in config:
            mean, std = channel_stats(x_train)
            config["norm_mean"], config["norm_std"] = mean.tolist(), std.tolist()
        x_train = normalize(x_train, config["norm_mean"], config["norm_std"])
        x_test = normalize(x_test, config["norm_mean"], config["norm_std"])
    config.setdefault("input_shape", list(x_train.shape[1:]))
    config.setdefault("num_classes", 10)
    if list(x_train.shape[1:]) != list(config["input_shape"]):
        raise CLIError(f"data set {config['data']!r} has images of shape {tuple(x_train.shape[1:])}, "
                       f"but the model was built for {tuple(config['input_shape'])}")
    return x_train, y_train, x_test, y_test


def _seed_sequences(seed: int):
    """(weights init, training) SeedSequences derived from --seed."""
    root = np.random.SeedSequence(seed)
    init_seq, train_seq = root.spawn(2)
    return init_seq, train_seq


def _build_model(config: dict):
    """The model named in ``config``, initialised from the seed."""
    import inspect

    from . import models

    name = config["model"]
    _check_model_name(name)
    init_seq, _ = _seed_sequences(config["seed"])
    accepted = inspect.signature(models.MODELS[name]).parameters
    height, width = config["input_shape"][1:]
    kwargs = {"num_classes": config["num_classes"], "in_channels": config["input_shape"][0],
              "rng": np.random.Generator(np.random.PCG64(init_seq))}
    if "input_size" in accepted and height == width:
        kwargs["input_size"] = height  # e.g. lenet5 on 28x28 MNIST pads its first conv
    return models.get_model(name, **kwargs)


def _check_model_name(name) -> None:
    from . import models

    if name not in models.MODELS:
        raise CLIError(f"--model {name!r} is not a model; choose one of {', '.join(models.MODELS)}")


def _build_optimizer(config: dict, model):
    from . import optim

    params = model.parameters()
    name = config["optimizer"]
    if name == "sgd":
        optimizer = optim.SGD(params, lr=config["lr"], momentum=config["momentum"],
                              weight_decay=config["weight_decay"])
    elif name == "adam":
        optimizer = optim.Adam(params, lr=config["lr"], weight_decay=config["weight_decay"])
    else:
        optimizer = optim.AdamW(params, lr=config["lr"], weight_decay=config["weight_decay"])
    if config["schedule"] == "step":
        scheduler = optim.StepLR(optimizer, step_size=config["step_size"], gamma=config["gamma"])
    elif config["schedule"] == "cosine":
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=config["epochs"])
    else:
        scheduler = None
    return optimizer, scheduler


def _set_dropout_rng(model, rng) -> None:
    """Point every dropout layer at the training generator (deterministic masks)."""
    for module in model.modules():
        if type(module).__name__.startswith("Dropout") and hasattr(module, "rng"):
            module.rng = rng


# ----------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------
def save_checkpoint(path, *, config, epoch, rng, history, model, optimizer, scheduler) -> None:
    """Write a checkpoint atomically (temporary file + ``os.replace``); format in the module docstring."""
    arrays = {
        "format": np.array(CHECKPOINT_FORMAT),
        "config": np.array(json.dumps(config, sort_keys=True)),
        "epoch": np.array(epoch, dtype=np.int64),
        "rng_state": np.array(json.dumps(rng.bit_generator.state)),
        "history": np.array(json.dumps(history)),
    }
    for prefix, state in (("model", model.state_dict()), ("optimizer", optimizer.state_dict()),
                          ("scheduler", scheduler.state_dict() if scheduler is not None else {})):
        for key, value in state.items():
            arrays[f"{prefix}/{key}"] = np.asarray(value)
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def _atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_checkpoint(path) -> dict:
    """Read a checkpoint (``allow_pickle=False``) into a dict of arrays and parsed JSON.

    Returns
    -------
    dict with ``config`` (dict), ``epoch`` (int), ``rng_state`` (dict),
    ``history`` (list), and ``model`` / ``optimizer`` / ``scheduler`` (dicts
    of arrays).

    Raises
    ------
    CheckpointError
        Missing, unreadable, not an npconv checkpoint, or missing entries;
        the message names the file.
    """
    name = repr(str(path))
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {name} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # BadZipFile, pickled data refused, truncated members, ...
        raise CheckpointError(f"checkpoint {name} is corrupt or not an npconv checkpoint "
                              f"({type(error).__name__}: {_one_line(error)})") from None
    if arrays.get("format") is None or str(arrays["format"]) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {name} is not an npconv checkpoint "
                              f"(no 'format' entry {CHECKPOINT_FORMAT!r})")
    try:
        loaded = {
            "config": json.loads(str(arrays["config"])),
            "epoch": int(arrays["epoch"]),
            "rng_state": json.loads(str(arrays["rng_state"])),
            "history": json.loads(str(arrays["history"])),
        }
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {name} is damaged: entry {_one_line(error)} "
                              f"is missing or unreadable") from None
    for prefix in ("model", "optimizer", "scheduler"):
        loaded[prefix] = {key[len(prefix) + 1:]: value for key, value in arrays.items()
                          if key.startswith(prefix + "/")}
    if not loaded["model"]:
        raise CheckpointError(f"checkpoint {name} holds no model weights")
    required = ("data", "model", "seed", "optimizer", "schedule", "lr", "batch_size", "epochs",
                "input_shape", "num_classes")
    missing = [key for key in required if key not in loaded["config"]]
    if missing:
        raise CheckpointError(f"checkpoint {name} has an incomplete config (no {missing[0]!r})")
    return loaded


def _restore(checkpoint, path, model, optimizer=None, scheduler=None) -> None:
    """Load the checkpoint's states into the objects; errors name the file."""
    name = repr(str(path))
    parts = [("model", model), ("optimizer", optimizer), ("scheduler", scheduler)]
    for part, target in parts:
        if target is None:
            continue
        try:
            target.load_state_dict(checkpoint[part])
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(f"checkpoint {name} does not fit the {part}: {_one_line(error)}") from None


# ----------------------------------------------------------------------
# training
# ----------------------------------------------------------------------
def _forward_loss(model, loss_fn, x_batch, y_batch):
    logits = model(x_batch)
    loss = float(loss_fn(logits, y_batch))
    return logits, loss


def evaluate_model(model, loss_fn, x, y):
    """Mean loss, accuracy and predictions of ``model`` (eval mode) on ``(x, y)``.

    Batches of ``EVAL_BATCH_SIZE`` in data order, so the result does not
    depend on the training batch size.
    """
    model.eval()
    total_loss = 0.0
    predictions = []
    for x_batch, y_batch in iterate_batches(x, y, EVAL_BATCH_SIZE):
        logits, loss = _forward_loss(model, loss_fn, x_batch, y_batch)
        total_loss += loss * len(y_batch)
        predictions.append(np.argmax(logits, axis=1))
    predicted = np.concatenate(predictions)
    return total_loss / len(y), float(np.mean(predicted == y)), predicted


def _train_epoch(model, loss_fn, optimizer, x, y, batch_size, rng, bar):
    """One pass over the shuffled training data; returns (mean loss, accuracy)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for step, (x_batch, y_batch) in enumerate(iterate_batches(x, y, batch_size, rng=rng), start=1):
        optimizer.zero_grad()
        logits, loss = _forward_loss(model, loss_fn, x_batch, y_batch)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at batch {step}")
        model.backward(loss_fn.backward())
        optimizer.step()
        total_loss += loss * len(y_batch)
        correct += int(np.sum(np.argmax(logits, axis=1) == y_batch))
        seen += len(y_batch)
        if bar is not None:
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.refresh()  # the epoch's final loss and accuracy, even when it took < tqdm's mininterval
    return total_loss / seen, correct / seen


def _all_finite(model) -> bool:
    return all(np.isfinite(p.data).all() for p in model.parameters())


def _progress_bar(enabled, total, description):
    """A tqdm bar on stderr, or None (disabled, or tqdm missing).

    ``enabled=None`` shows it only on a terminal, so logs and captured stderr
    hold nothing but error lines.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True)


def _train_command(args) -> int:
    from .nn import CrossEntropyLoss

    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        config = _resume_config(args, checkpoint["config"], args.resume)
        out_dir = Path(args.out) if args.out else Path(args.resume).parent
    else:
        config = _fresh_config(args)
        out_dir = Path(args.out) if args.out else _default_out_dir()

    x_train, y_train, x_test, y_test = _load_data(config)
    model = _build_model(config)
    optimizer, scheduler = _build_optimizer(config, model)
    loss_fn = CrossEntropyLoss()
    _, train_seq = _seed_sequences(config["seed"])
    rng = np.random.Generator(np.random.PCG64(train_seq))
    history, start_epoch = [], 0
    if checkpoint is not None:
        _restore(checkpoint, args.resume, model, optimizer, scheduler)
        try:
            rng.bit_generator.state = checkpoint["rng_state"]
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(f"checkpoint {str(args.resume)!r} has an unusable rng_state: "
                                  f"{_one_line(error)}") from None
        history, start_epoch = checkpoint["history"], checkpoint["epoch"]
    _set_dropout_rng(model, rng)

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    epochs = config["epochs"]
    print(f"npconv train: {config['model']} on {config['data']} ({len(x_train)} train / {len(x_test)} "
          f"test images), {config['optimizer']} lr {config['lr']:g}, batch {config['batch_size']}, "
          f"seed {config['seed']}, output {out_dir}", flush=True)
    if start_epoch:
        print(f"resuming from {args.resume} at epoch {start_epoch}/{epochs}", flush=True)

    try:
        test_acc = _epochs(config, args, model, loss_fn, optimizer, scheduler, rng, history,
                           start_epoch, out_dir, (x_train, y_train, x_test, y_test))
    except KeyboardInterrupt:
        saved_epoch = history[-1]["epoch"] if history else 0
        if checkpoint_path.exists() and saved_epoch > start_epoch:
            kept = (f"checkpoint {str(checkpoint_path)!r} (epoch {saved_epoch}) is complete; continue "
                    f"with: npconv train --resume {checkpoint_path} --epochs {epochs}")
        elif checkpoint_path.exists():
            kept = f"the earlier checkpoint {str(checkpoint_path)!r} is unchanged"
        else:
            kept = "no checkpoint was written"
        with contextlib.suppress(Exception):  # best effort: a picture of the epochs done
            _plot_curves(out_dir / CURVES_NAME, history, _run_title(config))
        raise TrainingInterrupted(kept) from None
    print(f"wrote {out_dir / CHECKPOINT_NAME}, {out_dir / METRICS_NAME}, {out_dir / CURVES_NAME}", flush=True)
    print(f"test accuracy: {test_acc:.4f}", flush=True)
    return 0


def _epochs(config, args, model, loss_fn, optimizer, scheduler, rng, history, start_epoch, out_dir,
            data) -> float:
    """Train epochs ``start_epoch + 1 .. config["epochs"]``; return the final test accuracy.

    After each epoch: checkpoint (atomic), metrics.csv, one summary line.
    At the end: curves.png.
    """
    x_train, y_train, x_test, y_test = data
    epochs = config["epochs"]
    checkpoint_path = out_dir / CHECKPOINT_NAME
    batches_per_epoch = -(-len(x_train) // config["batch_size"])
    for epoch in range(start_epoch + 1, epochs + 1):
        lr = float(optimizer.param_groups[0]["lr"])
        started = time.perf_counter()
        bar = _progress_bar(args.progress, batches_per_epoch, f"epoch {epoch}/{epochs}")
        try:
            train_loss, train_acc = _train_epoch(model, loss_fn, optimizer, x_train, y_train,
                                                 config["batch_size"], rng, bar)
            test_loss, test_acc, _ = evaluate_model(model, loss_fn, x_test, y_test)
        except TrainingDiverged as error:
            raise TrainingDiverged(_diverged_message(error, epoch, lr, checkpoint_path)) from None
        finally:
            if bar is not None:
                bar.close()
        if not (math.isfinite(test_loss) and _all_finite(model)):
            raise TrainingDiverged(_diverged_message("the weights or the test loss became non-finite",
                                                     epoch, lr, checkpoint_path))
        if scheduler is not None:
            scheduler.step()
        row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                   test_acc=test_acc, lr=lr, seconds=round(time.perf_counter() - started, 3))
        history.append(row)
        save_checkpoint(checkpoint_path, config=config, epoch=epoch, rng=rng, history=history,
                        model=model, optimizer=optimizer, scheduler=scheduler)
        _write_metrics(out_dir / METRICS_NAME, history)
        print(f"epoch {epoch}/{epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
              f"test loss {test_loss:.4f} acc {test_acc:.4f}  lr {lr:.3g}  {row['seconds']:.1f}s",
              flush=True)

    if start_epoch >= epochs:
        print(f"checkpoint {args.resume} already has {start_epoch} epochs (--epochs {epochs}); "
              f"nothing to train", flush=True)
        test_loss, test_acc, _ = evaluate_model(model, loss_fn, x_test, y_test)
        if not checkpoint_path.exists():  # resumed into a new --out: copy the state there
            save_checkpoint(checkpoint_path, config=config, epoch=start_epoch, rng=rng, history=history,
                            model=model, optimizer=optimizer, scheduler=scheduler)
    _write_metrics(out_dir / METRICS_NAME, history)
    _plot_curves(out_dir / CURVES_NAME, history, _run_title(config))
    return test_acc


def _run_title(config) -> str:
    return f"npconv train: {config['model']} on {config['data']}, {config['optimizer']} lr {config['lr']:g}"


def _diverged_message(reason, epoch, lr, checkpoint_path) -> str:
    kept = (f"the last good checkpoint {str(checkpoint_path)!r} is unchanged"
            if checkpoint_path.exists() else "no checkpoint was written")
    return (f"training diverged: {reason} in epoch {epoch} (lr {lr:g}); stopped, {kept}; "
            f"try a smaller --lr")


# ----------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------
def _evaluate_command(args) -> int:
    from .nn import CrossEntropyLoss

    checkpoint = load_checkpoint(args.checkpoint)
    config = dict(checkpoint["config"])
    if args.data is not None and args.data != config["data"]:
        config["data"] = args.data
        for key in ("data_dir", "norm_mean", "norm_std"):
            config.pop(key, None)
        if args.data_dir is None:
            raise CLIError(f"--data {args.data} needs --data-dir DIR")
    if args.data_dir is not None:
        config["data_dir"] = os.path.abspath(args.data_dir)
    x_train, y_train, x_test, y_test = _load_data(config)
    model = _build_model(config)
    _restore(checkpoint, args.checkpoint, model)
    loss_fn = CrossEntropyLoss()
    test_loss, test_acc, predicted = evaluate_model(model, loss_fn, x_test, y_test)
    num_classes = int(config["num_classes"])
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y_test, predicted), 1)
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent
    picture = out_dir / CONFUSION_NAME
    _plot_confusion(picture, confusion, test_acc)
    print(f"npconv evaluate: {config['model']} on {config['data']} ({len(y_test)} test images), "
          f"checkpoint {args.checkpoint} (epoch {checkpoint['epoch']})")
    print("confusion matrix (rows: true class, columns: predicted):")
    width = max(3, len(str(confusion.max())) + 1)
    print("     " + "".join(f"{c:>{width}}" for c in range(num_classes)))
    for true_class, row in enumerate(confusion):
        print(f"{true_class:>4} " + "".join(f"{v:>{width}}" for v in row))
    print(f"test loss: {test_loss:.4f}")
    print(f"wrote {picture}")
    print(f"test accuracy: {test_acc:.4f}", flush=True)
    return 0


# ----------------------------------------------------------------------
# outputs: metrics.csv, curves.png, confusion.png
# ----------------------------------------------------------------------
def _write_metrics(path, history) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: (f"{row[key]:.6g}" if isinstance(row[key], float) else row[key])
                         for key in METRIC_FIELDS})
    data = text.getvalue().encode()
    _atomic_write(path, lambda f: f.write(data))


def _figure(width, height):
    """A matplotlib Figure on the Agg canvas, or None if matplotlib is missing."""
    import logging

    # A fresh install logs "building the font cache" once; keep stderr for errors.
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("npconv: note: matplotlib is not installed; no picture written", file=sys.stderr)
        return None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # no pyplot: no global state, no GUI backend
    return figure


def _save_figure(figure, path) -> None:
    _atomic_write(path, lambda f: figure.savefig(f, format="png"))


def _plot_curves(path, history, title="npconv train") -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
    if not history:
        return
    figure = _figure(10, 4)
    if figure is None:
        return
    epochs = [row["epoch"] for row in history]
    loss_axes, acc_axes = figure.subplots(1, 2)
    panels = ((loss_axes, "loss", "cross-entropy loss"), (acc_axes, "acc", "accuracy"))
    for axes, metric, panel_title in panels:
        axes.plot(epochs, [row[f"train_{metric}"] for row in history], "o-", label="train", markersize=3)
        axes.plot(epochs, [row[f"test_{metric}"] for row in history], "s-", label="test", markersize=3)
        axes.set_xlabel("epoch")
        axes.set_title(panel_title)
        axes.grid(alpha=0.3)
        axes.legend()
    final = history[-1]["test_acc"]
    figure.suptitle(f"{title} - final test accuracy {final:.4f}")
    figure.tight_layout()
    _save_figure(figure, path)


def _plot_confusion(path, confusion, accuracy) -> None:
    figure = _figure(5.5, 5)
    if figure is None:
        return
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    classes = range(len(confusion))
    axes.set_xticks(list(classes))
    axes.set_yticks(list(classes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"confusion matrix - test accuracy {accuracy:.4f}")
    threshold = confusion.max() / 2
    for i in classes:
        for j in classes:
            if confusion[i, j]:
                axes.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if confusion[i, j] > threshold else "black")
    figure.tight_layout()
    _save_figure(figure, path)
