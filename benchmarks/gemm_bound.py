"""How much of npconv's time is GEMM, per layer of the `npconv bench` suite.

For every suite layer: npconv's forward+backward time (public API, as ``npconv bench``
calls it), the time spent inside ``np.matmul`` during it, and torch's forward+backward,
interleaved in one process with the bench's idle wait and lead-in call (medians of 7).
The geomean of (time in ``np.matmul`` / torch's time) bounds what faster non-GEMM code
could reach while keeping NumPy's BLAS (``docs/performance.md``, last section).

Usage (torch needed; the SkylakeX kernels and malloc settings of the bench)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE MALLOC_MMAP_THRESHOLD_=33554432 \\
        MALLOC_TRIM_THRESHOLD_=17179869184 PYTHONPATH=src python benchmarks/gemm_bound.py
"""
from __future__ import annotations

import time
import types

import numpy as np
import torch

import npconv._depthwise
import npconv._im2col
import npconv._im2row
import npconv._shifted
import npconv._winograd
import npconv.bench as bench
import npconv.convolution

REPEATS = 7
KERNEL_MODULES = (npconv.convolution, npconv._shifted, npconv._im2col, npconv._im2row,
                  npconv._winograd, npconv._depthwise)


class MatmulClock:
    """Seconds spent in ``np.matmul`` by npconv's kernel modules (each gets a copy of the
    ``numpy`` namespace whose ``matmul`` is timed; NumPy itself is untouched)."""

    def __init__(self):
        self.seconds = 0.0
        timed = types.ModuleType("numpy_timed_matmul")
        timed.__dict__.update(np.__dict__)
        timed.matmul = self._matmul
        for module in KERNEL_MODULES:
            module.np = timed

    def _matmul(self, *args, **kwargs):
        start = time.perf_counter()
        result = np.matmul(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return result


def geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def main() -> None:
    torch.set_num_threads(2)
    clock = MatmulClock()
    rows = []
    for layer in bench.SUITES["default"]:
        arrays = bench.make_arrays(layer, np.float32, 0)
        np_forward, np_gradients = bench._npconv_calls(layer, arrays)
        torch_forward, torch_gradients = bench._torch_calls(torch, layer, arrays)
        dy = np.random.default_rng(1).standard_normal(np_forward().shape).astype(np.float32)
        dy_torch = torch.from_numpy(dy)

        def npconv_step():
            np_forward()
            np_gradients(dy)

        def torch_step():
            torch_forward()
            torch_gradients(dy_torch)

        for call in (npconv_step, torch_step, npconv_step, torch_step):   # warm-up
            call()
        npconv_s, matmul_s, torch_s = [], [], []
        for _ in range(REPEATS):
            bench.wait_idle()
            npconv_step()                                  # lead-in call
            clock.seconds = 0.0
            start = time.perf_counter()
            npconv_step()
            npconv_s.append(time.perf_counter() - start)
            matmul_s.append(clock.seconds)
            bench.wait_idle()
            torch_step()
            start = time.perf_counter()
            torch_step()
            torch_s.append(time.perf_counter() - start)
        total, gemm, theirs = (float(np.median(v)) * 1e3 for v in (npconv_s, matmul_s, torch_s))
        rows.append((total, gemm, theirs))
        print(f"{layer.name:26s} npconv {total:7.2f} ms, in np.matmul {gemm:7.2f} ({gemm / total:4.0%}), "
              f"torch {theirs:7.2f}; ratio {total / theirs:5.2f}, np.matmul alone {gemm / theirs:5.2f}",
              flush=True)
    print(f"geomean ratio {geomean([t / o for t, _, o in rows]):.2f}, "
          f"np.matmul alone {geomean([max(g, 1e-9) / o for _, g, o in rows]):.2f}")


if __name__ == "__main__":
    main()
