"""Time one training step of ResNet-20 in npconv and in PyTorch, same process.

One step = zero_grad + forward + cross-entropy loss + backward + SGD step
(momentum 0.9, weight decay 5e-4) on a batch of CIFAR-sized images
(default 32 x 3 x 32 x 32, float32). Both models start from the same weights
and see the same batch. After warm-up the two are timed *interleaved*
(npconv, torch, npconv, torch, ...) so that drifting machine load hits both
alike; the medians and their ratio are printed.

Usage::

    PYTHONPATH=src python benchmarks/train_step.py [--batch-size 32] [--repeats 7]
                                                  [--threads 2] [--dtype float32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per library")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per library")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads and the BLAS pool of NumPy")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    return parser.parse_args()


def main():
    args = parse_args()
    # Thread pools must be sized before NumPy's BLAS starts.
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from torch_twins import torch_resnet  # the torch twin the model tests use

    from npconv import models, nn
    from npconv.optim import SGD

    torch.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 3, 32, 32)).astype(dtype)
    target = rng.integers(0, 10, size=args.batch_size)

    model = models.resnet20(dtype=dtype, rng=0)
    twin = torch_resnet(20).to(getattr(torch, args.dtype))
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt, topt = SGD(model.parameters(), **sgd), torch.optim.SGD(twin.parameters(), **sgd)
    loss_fn, tloss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    tx, ttarget = torch.from_numpy(x), torch.from_numpy(target)

    def npconv_step():
        opt.zero_grad()
        loss = loss_fn(model(x), target)
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    def torch_step():
        topt.zero_grad()
        loss = tloss_fn(twin(tx), ttarget)
        loss.backward()
        topt.step()
        return loss.item()

    def timed(step):
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        npconv_step()
        torch_step()
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(timed(npconv_step))
        theirs.append(timed(torch_step))
    ours_ms, theirs_ms = 1e3 * statistics.median(ours), 1e3 * statistics.median(theirs)
    print(f"ResNet-20 training step, batch {args.batch_size} x 3 x 32 x 32 {args.dtype}, "
          f"{args.threads} threads, median of {args.repeats} (after {args.warmup} warm-up)")
    print(f"  npconv : {ours_ms:8.1f} ms   (min {1e3 * min(ours):.1f})")
    print(f"  torch  : {theirs_ms:8.1f} ms   (min {1e3 * min(theirs):.1f})  "
          f"torch {torch.__version__}")
    print(f"  ratio npconv / torch: {ours_ms / theirs_ms:.2f}")


if __name__ == "__main__":
    main()
