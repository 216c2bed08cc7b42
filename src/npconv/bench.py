r"""``npconv bench``: time npconv's convolutions against PyTorch, fairly, in one run.

Every layer of a suite is run forward and forward+backward through the public
API only (``npconv.conv`` + ``npconv.conv_grad``, or ``npconv.conv_transpose``
+ ``npconv.conv_transpose_grad``) and, when PyTorch is installed, the same
computation in PyTorch on the same arrays (``torch.from_numpy``)::

    python -m npconv.bench                       # the 12-layer suite of issue 7
    python -m npconv.bench --suite quick --no-torch
    npconv bench --layers 3x3_64@56,dw3x3_32@112 --json out.json

Timing method (each point neutralises an effect measured on a 2-core machine,
see ``benchmarks/README.md``):

* same dtype and thread count for both libraries: ``torch.set_num_threads(T)``,
  NumPy's BLAS limited to ``T`` threads through threadpoolctl (when installed),
  ``npconv.set_num_threads(T)`` (when it exists);
* PyTorch's backward is ``torch.ops.aten.convolution_backward`` with
  ``output_mask=(True, True, True)``: exactly dx, dweight and dbias, the same
  kernel autograd's ``ConvolutionBackward0`` calls, without graph bookkeeping;
* 2 warm-up calls per library and measurement, then ``reps`` rounds; within a
  round the four timed calls (npconv fwd, torch fwd, npconv fwd+bwd, torch
  fwd+bwd) run in an order rotated from round to round; the median per
  library is reported, and ratio = median(npconv) / median(torch);
* before every timed call the process waits until it burns no CPU (4 ms
  windows, at most 300 ms): idle OpenBLAS threads spin ~110 ms after a call
  (OpenMP's ~10 ms) and would slow whichever library runs next; then the same
  function runs once untimed (the lead-in, as the previous iteration of a
  training loop), which wakes that library's threads and the idle vCPUs
  (``--no-lead-in`` to skip it);
* other processes: before each layer the bench waits (``--quiet-wait``, 2 s) for a quiet
  machine; a round is dropped and, after another wait for quiet, repeated (at
  most ``3·reps`` rounds per layer; if fewer than ``reps`` are clean, the least
  contended complete them, and the summary says so) if other processes used more than
  ``--max-busy`` of the CPUs (``/proc/stat``), or if some task waited for a CPU
  during more than ``--max-stall`` of torch's calls (Linux PSI,
  ``/proc/pressure/cpu``: µs resolution catches bursts that 10 ms ticks
  miss); the others' share ("busy") is reported per layer and for the run. With 2 threads a
  busy machine slows PyTorch most (an OpenMP barrier waits for a descheduled
  thread: a 0.3 ms convolution was measured at 5-50 ms), so ratios from a run
  with a high busy share are not meaningful;
* the machine's own state: a BLAS probe (``blas_probe``, a batch of small GEMMs) runs
  just before and after each layer's rounds and its lower figure is the ``blas`` column;
  a layer whose probe fell below 70% of the run's best is named in a warning. On the
  project's VM, OpenBLAS's two threads run that batch at one thread's speed in spells of
  minutes that no process accounts for (``busy`` stays near 0), and npconv's rows then
  slow by 1.2-2x while torch's do not;
* malloc: with glibc's adaptive mmap threshold, whether a large temporary is
  page-faulted afresh on every call depends on what the *other* library
  allocated before. The bench therefore runs in a child process with
  ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184`` set
  (glibc reads them only at start-up) unless they are set already or
  ``--no-malloc-env`` is given.

FLOPs: forward ``2·N·C_out·prod(out)·C_in/G·prod(k)`` (for a transposed
convolution the same count with input and output swapped:
``2·N·C_in·prod(in)·C_out/G·prod(k)``); forward+backward counts 3x that (dx
and dweight each cost one forward; the bias is ignored).

Workspace: the ``tracemalloc`` peak during one untimed npconv call (NumPy
reports its array allocations to tracemalloc) minus the bytes of the arrays
the call returns, i.e. the extra memory the call needed beyond its result;
reported for the forward call and for the gradient call separately.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib

import numpy as np

import npconv

#: glibc malloc settings that keep temporaries up to 32 MiB on a warm heap (see module docstring).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
#: Set in the child process the bench re-runs itself in, so it never re-runs twice.
_CHILD_MARK = "NPCONV_BENCH_CHILD"

IDLE_WINDOW_S = 0.004     # poll window for "the process burns no CPU"
IDLE_CAP_S = 0.300        # give up waiting for idle threads after this long
IDLE_CPU_SHARE = 0.1      # "idle": CPU time < 10% of one core over a window
QUIET_WINDOW_S = 0.100    # window for "other processes are quiet" before a layer
QUIET_CAP_S = 2.0         # give up waiting for a quiet machine after this long
LONG_CALL_S = 1.0         # calls longer than this get 3 reps instead of 5 (unless --reps)
# The BLAS probe, run before and after each layer's rounds: a batch of small float32 GEMMs,
# (batch, M, K, N), the shape whose speed on OpenBLAS's two threads halves in the slow
# spells of the project's VM (docs/performance.md, "Two modes of this VM") while torch's
# convolutions keep theirs; a layer whose probe fell below BLAS_SLOW_SHARE of the run's
# best is named in a warning.
BLAS_PROBE_SHAPE = (32, 128, 128, 210)
BLAS_SLOW_SHARE = 0.7


# ----------------------------------------------------------------------
# the suites
# ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layer:
    """One benchmark case: a convolution (``transposed=False``) or a transposed one.

    ``size`` is the input's spatial size; ``c_in``/``c_out`` the layer's
    input/output channels (for a transposed convolution ``weight`` is
    ``(c_in, c_out/groups, *kernel)``, PyTorch's layout).
    """
    name: str
    batch: int
    c_in: int
    c_out: int
    size: tuple
    kernel: tuple
    stride: int = 1
    padding: int = 0
    groups: int = 1
    transposed: bool = False
    output_padding: int = 0

    @property
    def dims(self) -> int:
        return len(self.size)

    def describe(self) -> str:
        kind = "conv_transpose" if self.transposed else "conv"
        text = (f"{kind}{self.dims}d N={self.batch} {self.c_in}->{self.c_out} "
                f"k={'x'.join(map(str, self.kernel))} s={self.stride} p={self.padding} "
                f"@{'x'.join(map(str, self.size))}")
        if self.groups != 1:
            text += f" groups={self.groups}"
        return text


def _layer(name, batch, c_in, c_out, size, k, dims=2, **kw) -> Layer:
    return Layer(name, batch, c_in, c_out, (size,) * dims, (k,) * dims, **kw)


SUITES = {
    # Issue 7 / PERFORMANCE-NOTES: N=8 unless noted.
    "default": (
        _layer("3x3_64@56", 8, 64, 64, 56, 3, padding=1),
        _layer("3x3_128@28", 8, 128, 128, 28, 3, padding=1),
        _layer("3x3_256@14", 8, 256, 256, 14, 3, padding=1),
        _layer("3x3_512@7", 8, 512, 512, 7, 3, padding=1),
        _layer("3x3s2_64-128@56", 8, 64, 128, 56, 3, stride=2, padding=1),
        _layer("1x1_256-64@56", 8, 256, 64, 56, 1),
        _layer("1x1s2_256-512@56", 8, 256, 512, 56, 1, stride=2),
        _layer("stem7x7s2_3-64@224", 8, 3, 64, 224, 7, stride=2, padding=3),
        _layer("alexnet11x11s4_3-96@227", 8, 3, 96, 227, 11, stride=4),
        _layer("dw3x3_32@112", 16, 32, 32, 112, 3, padding=1, groups=32),
        _layer("conv1d_64@4096", 16, 64, 64, 4096, 3, dims=1, padding=1),
        _layer("conv3d_16-32@16", 8, 16, 32, 16, 3, dims=3, padding=1),
    ),
    # Small and fast: tests and smoke runs.
    "quick": (
        _layer("q_3x3_16@16", 2, 16, 16, 16, 3, padding=1),
        _layer("q_dw3x3_8@16", 2, 8, 8, 16, 3, padding=1, groups=8),
        _layer("q_tr4x4s2_8-4@8", 2, 8, 4, 8, 4, stride=2, padding=1, transposed=True),
    ),
    # Issue 4: the 2x upsampling layer of a decoder.
    "transpose": (
        _layer("tr4x4s2_128-64@32", 8, 128, 64, 32, 4, stride=2, padding=1, transposed=True),
    ),
}
ALL_LAYERS = {layer.name.lower(): layer for suite in SUITES.values() for layer in suite}


# ----------------------------------------------------------------------
# machine state: idle threads, other processes
# ----------------------------------------------------------------------
def wait_idle(window: float = IDLE_WINDOW_S, cap: float = IDLE_CAP_S) -> bool:
    """Sleep until this process burns (almost) no CPU over one ``window``.

    After a call, idle BLAS/OpenMP worker threads keep spinning (OpenBLAS
    ~110 ms) and would steal a core from the next timed call. Returns False if
    they were still busy after ``cap`` seconds.
    """
    deadline = time.perf_counter() + cap
    while True:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        time.sleep(window)
        cpu_used, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
        if cpu_used <= IDLE_CPU_SHARE * wall:
            return True
        if time.perf_counter() >= deadline:
            return False


def _cpu_ticks():
    """(busy, total) clock ticks over all CPUs from /proc/stat, and this process's ticks; or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            # the command name (field 2) may contain spaces: fields after the last ')'
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal   # guest time is already in user
    own_ticks = int(own[11]) + int(own[12])                # utime + stime, all threads
    return busy, busy + idle + iowait, own_ticks


class BusyMeter:
    """Share of all CPUs used by *other* processes between ``start()`` and ``share()``."""

    def __init__(self):
        self.start()

    def start(self) -> None:
        self._start = _cpu_ticks()

    def share(self):
        end = _cpu_ticks()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return None
        others = (end[0] - self._start[0]) - (end[2] - self._start[2])
        return min(1.0, max(0.0, others / (end[1] - self._start[1])))


@functools.lru_cache(maxsize=1)
def _probe_operands():
    batch, m, k, n = BLAS_PROBE_SHAPE
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, m, k), dtype=np.float32),
            rng.standard_normal((batch, k, n), dtype=np.float32),
            np.empty((batch, m, n), dtype=np.float32))


def _probe_text() -> str:
    batch, m, k, n = BLAS_PROBE_SHAPE
    return f"{batch} x ({m}x{k})@({k}x{n}) float32"


def blas_probe(reps: int = 3) -> float:
    """GFLOP/s of NumPy's BLAS, under the thread limit in force, on ``BLAS_PROBE_SHAPE``:
    the median of ``reps`` timed calls after an untimed one (~1 ms each on 2 cores).

    It tells a row measured while the machine ran BLAS's threads slowly from one measured
    at full speed; it is not part of either library's time.
    """
    a, b, out = _probe_operands()
    np.matmul(a, b, out=out)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    batch, m, k, n = BLAS_PROBE_SHAPE
    return 2 * batch * m * k * n / statistics.median(times) / 1e9


def cpu_stall_us():
    """Linux PSI: total µs during which some runnable task waited for a CPU (None if unavailable).

    /proc/stat counts CPU time in 10 ms ticks, too coarse to see a burst of
    another process during one 5 ms call; PSI has µs resolution. PyTorch with as
    many threads as CPUs does not oversubscribe, so a stall during its call
    means another process took a CPU (an OpenMP barrier then waits for the
    descheduled thread: 4.8 ms became 9-16 ms, measured).
    """
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_quiet(max_busy: float, window: float = QUIET_WINDOW_S, cap: float = QUIET_CAP_S):
    """Wait (at most ``cap`` s) for a ``window`` in which others used < ``max_busy`` of the CPUs.

    Returns the others' share in the last window (None without /proc/stat).
    """
    deadline = time.perf_counter() + cap
    while True:
        meter = BusyMeter()
        time.sleep(window)
        share = meter.share()
        if share is None or share <= max_busy or time.perf_counter() >= deadline:
            return share


# ----------------------------------------------------------------------
# one layer
# ----------------------------------------------------------------------
def _seed(name: str, seed: int) -> int:
    # Per-layer seed: a layer's data does not depend on which other layers ran.
    return (zlib.crc32(name.encode()) + seed) % 2**32


def make_arrays(layer: Layer, dtype, seed: int = 0) -> dict:
    """Random inputs of ``layer``: x, weight, bias (dy is made once the output shape is known)."""
    rng = np.random.default_rng(_seed(layer.name, seed))
    k = math.prod(layer.kernel)
    if layer.transposed:
        w_shape = (layer.c_in, layer.c_out // layer.groups, *layer.kernel)
    else:
        w_shape = (layer.c_out, layer.c_in // layer.groups, *layer.kernel)
    fan_in = layer.c_in // layer.groups * k
    # Unit-variance input, weights scaled by 1/sqrt(fan_in): outputs of order 1 (no
    # overflow, no denormals that would time the FPU's slow path).
    return {
        "x": rng.standard_normal((layer.batch, layer.c_in, *layer.size), dtype=np.float64).astype(dtype),
        "weight": (rng.standard_normal(w_shape) / math.sqrt(fan_in)).astype(dtype),
        "bias": rng.standard_normal(layer.c_out).astype(dtype),
        "rng": rng,
    }


def forward_flops(layer: Layer, out_size) -> int:
    """Multiply-adds x 2 of the forward pass (PERFORMANCE-NOTES); bias ignored."""
    if layer.transposed:  # every input pixel meets C_out/G·prod(k) weights
        return 2 * layer.batch * layer.c_in * math.prod(layer.size) * \
            (layer.c_out // layer.groups) * math.prod(layer.kernel)
    return 2 * layer.batch * layer.c_out * math.prod(out_size) * \
        (layer.c_in // layer.groups) * math.prod(layer.kernel)


def _npconv_calls(layer: Layer, arrays: dict):
    """(forward(), gradients(dy)) closures over npconv's public API."""
    x, weight, bias = arrays["x"], arrays["weight"], arrays["bias"]
    common = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
    if layer.transposed:
        common["output_padding"] = layer.output_padding

        def forward():
            return npconv.conv_transpose(x, weight, bias, **common)

        def gradients(dy):
            return npconv.conv_transpose_grad(dy, x, weight, bias=True, **common)
    else:
        def forward():
            return npconv.conv(x, weight, bias, **common)

        def gradients(dy):
            return npconv.conv_grad(dy, x, weight, bias=True, **common)
    return forward, gradients


def _torch_calls(torch, layer: Layer, arrays: dict):
    """(forward(), gradients(dy)) closures over torch, on the same memory as npconv's arrays."""
    import torch.nn.functional as F

    x = torch.from_numpy(arrays["x"])
    weight = torch.from_numpy(arrays["weight"])
    bias = torch.from_numpy(arrays["bias"])
    d = layer.dims
    stride, padding, dilation = [layer.stride] * d, [layer.padding] * d, [1] * d
    output_padding = [layer.output_padding] * d if layer.transposed else [0] * d
    if layer.transposed:
        conv_fn = getattr(F, f"conv_transpose{d}d")

        def forward():
            return conv_fn(x, weight, bias, stride, padding, output_padding, layer.groups)
    else:
        conv_fn = getattr(F, f"conv{d}d")

        def forward():
            return conv_fn(x, weight, bias, stride, padding, dilation, layer.groups)

    backward = torch.ops.aten.convolution_backward

    def gradients(dy):
        return backward(dy, x, weight, [layer.c_out], stride, padding, dilation, layer.transposed,
                        output_padding, layer.groups, [True, True, True])
    return forward, gradients


def _nbytes(result) -> int:
    if isinstance(result, np.ndarray):
        return result.nbytes
    if isinstance(result, (tuple, list)):
        return sum(_nbytes(item) for item in result)
    return 0


def workspace_bytes(call) -> int:
    """tracemalloc peak during ``call()`` minus what was allocated before and the result's bytes."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - before - _nbytes(result))


def _rel_err(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    diff = float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - expected))) if expected.size else 0.0
    return diff / scale if scale > 0 else diff


def _timed(call, lead_in: bool = True):
    """Wait for idle threads, run ``call()`` once untimed (``lead_in``), then time ``call()``.

    The lead-in call is the previous iteration of a training loop: it wakes the
    library's own worker threads and both CPUs. On this project's VM a vCPU that
    went idle during the wait can take 10-30 ms to run a woken thread again; a
    2-thread 4.5 ms convolution then took 20 ms (measured: median 19.9 ms after
    a 150 ms sleep, 9.0 ms after a lead-in call), a penalty that hits the
    faster library hardest.

    Returns (seconds, whether the wait found the process idle, seconds some task
    spent waiting for a CPU during the call per PSI, or None without PSI).
    """
    idle = wait_idle()
    if lead_in:
        call()
    stall_start = cpu_stall_us()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    stall_end = cpu_stall_us()
    stall = None if stall_start is None or stall_end is None else (stall_end - stall_start) * 1e-6
    return seconds, idle, stall


def run_layer(layer: Layer, options, torch=None) -> dict:
    """Time one layer; returns its JSON record (times in ms)."""
    dtype = np.dtype(options.dtype)
    arrays = make_arrays(layer, dtype, options.seed)
    np_forward, np_gradients = _npconv_calls(layer, arrays)
    y = np_forward()
    dy = arrays["rng"].standard_normal(y.shape).astype(dtype)
    flops = forward_flops(layer, y.shape[2:])

    calls = {("npconv", "fwd"): np_forward,
             ("npconv", "fwdbwd"): lambda: (np_forward(), np_gradients(dy))}
    errors = None
    if torch is not None:
        t_forward, t_gradients = _torch_calls(torch, layer, arrays)
        dy_t = torch.from_numpy(dy)
        calls[("torch", "fwd")] = t_forward
        calls[("torch", "fwdbwd")] = lambda: (t_forward(), t_gradients(dy_t))
        # Sanity check that both libraries compute the same thing (not a conformance test).
        y_t = t_forward()
        if tuple(y_t.shape) != y.shape:
            raise RuntimeError(f"layer {layer.name}: npconv output {y.shape} != torch {tuple(y_t.shape)}")
        grads, grads_t = np_gradients(dy), t_gradients(dy_t)
        errors = {"y": _rel_err(y, y_t.numpy()),
                  "dx": _rel_err(grads[0], grads_t[0].numpy()),
                  "dweight": _rel_err(grads[1], grads_t[1].numpy()),
                  "dbias": _rel_err(grads[2], grads_t[2].numpy())}
        del y_t, grads, grads_t
    del y

    # Interleaved order: libraries alternate, and the order is rotated every round.
    order = [key for key in (("npconv", "fwd"), ("torch", "fwd"), ("npconv", "fwdbwd"),
                             ("torch", "fwdbwd")) if key in calls]
    idle_misses = 0
    warm_times = []
    for _ in range(options.warmup):
        for key in order:
            seconds, idle, _ = _timed(calls[key], lead_in=False)
            warm_times.append(seconds)
            idle_misses += not idle
    reps = options.reps
    if reps is None:
        reps = 3 if warm_times and max(warm_times) > LONG_CALL_S else 5

    workspace = {"fwd": workspace_bytes(np_forward) / 2**20,
                 "bwd": workspace_bytes(lambda: np_gradients(dy)) / 2**20}

    quiet_share = wait_quiet(options.max_busy, cap=options.quiet_wait)
    # A torch call that stalled is only a sign of other processes when torch does
    # not oversubscribe the CPUs itself.
    check_torch_stall = torch is not None and options.threads <= (os.cpu_count() or 1)
    # Rounds run until `reps` uncontended ones are in, or 3·reps rounds in all;
    # each contended round is followed by another wait for quiet.
    rounds = []
    probe_before = blas_probe()
    layer_meter = BusyMeter()
    while sum(not r["contended"] for r in rounds) < reps and len(rounds) < 3 * reps:
        meter = BusyMeter()
        rotation = len(rounds) % len(order)
        times, stalls = {}, {}
        for key in order[rotation:] + order[:rotation]:
            times[key], idle, stalls[key] = _timed(calls[key], lead_in=options.lead_in)
            idle_misses += not idle
        share = meter.share()
        torch_wall = sum(t for (library, _), t in times.items() if library == "torch")
        torch_stall = None
        if check_torch_stall and None not in stalls.values():
            torch_stall = sum(s for (library, _), s in stalls.items() if library == "torch") / torch_wall
        # contention score: > 1 means over a limit
        score = max(0.0 if share is None else share / options.max_busy,
                    0.0 if torch_stall is None else torch_stall / options.max_stall)
        rounds.append({"times": times, "stalls": stalls, "share": share, "score": score,
                       "contended": score > 1.0})
        if score > 1.0:
            wait_quiet(options.max_busy, cap=options.quiet_wait)
    # Keep the uncontended rounds; if too few, complete them with the least contended.
    probe_after = blas_probe()
    kept = sorted(rounds, key=lambda r: (r["contended"], r["score"]))[:reps]
    kept.sort(key=rounds.index)
    busy_rounds = [r["share"] for r in kept]
    times = {key: [r["times"][key] for r in kept] for key in order}
    stall_known = all(None not in r["stalls"].values() for r in kept)
    stall_sums = {}
    for library in {library for library, _ in order}:
        stall = sum(r["stalls"][key] or 0.0 for r in kept for key in order if key[0] == library)
        wall = sum(r["times"][key] for r in kept for key in order if key[0] == library)
        stall_sums[library] = (stall, wall)
    dropped = len(rounds) - len(kept)
    contended_kept = sum(r["contended"] for r in kept)

    record = {"name": layer.name, "description": layer.describe(),
              "layer": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in dataclasses.asdict(layer).items()},
              "out_shape": list(dy.shape), "flops_fwd": flops, "flops_fwdbwd": 3 * flops,
              "reps": reps, "dropped_rounds": dropped, "contended_rounds_kept": contended_kept,
              "idle_cap_hits": idle_misses,
              # busy: others' CPU share while the kept rounds ran (the row's figure);
              # busy_layer: over the whole timed phase, dropped rounds and waits included
              "busy": (None if None in busy_rounds else statistics.fmean(busy_rounds)),
              "busy_rounds": busy_rounds, "busy_layer": layer_meter.share(),
              "busy_before": quiet_share,
              # share of each library's timed calls during which some task waited for a CPU (PSI)
              "cpu_stall_share": ({library: stall / wall for library, (stall, wall) in stall_sums.items()}
                                  if stall_known else None),
              "workspace_mib": workspace, "max_rel_err_vs_torch": errors,
              # GFLOP/s of the BLAS probe just before and just after the timed rounds
              "blas_probe_gflops": [probe_before, probe_after]}
    for library in ("npconv", "torch"):
        if (library, "fwd") not in times:
            record[library] = None
            continue
        entry = {}
        for kind, kind_flops in (("fwd", flops), ("fwdbwd", 3 * flops)):
            samples = times[(library, kind)]
            median = statistics.median(samples)
            entry[f"{kind}_ms"] = median * 1e3
            entry[f"{kind}_gflops"] = kind_flops / median / 1e9
            entry[f"{kind}_times_ms"] = [t * 1e3 for t in samples]
        record[library] = entry
    if record["torch"] is not None:
        record["ratio_fwd"] = record["npconv"]["fwd_ms"] / record["torch"]["fwd_ms"]
        record["ratio_fwdbwd"] = record["npconv"]["fwdbwd_ms"] / record["torch"]["fwdbwd_ms"]
    else:
        record["ratio_fwd"] = record["ratio_fwdbwd"] = None
    return record


# ----------------------------------------------------------------------
# environment and report
# ----------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(torch, threads_info) -> dict:
    env = {"timestamp_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
           "cpu": _cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "numpy": np.__version__, "npconv": getattr(npconv, "__version__", "?"),
           "torch": None, "torch_backends": None,
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
           "malloc_env": {name: os.environ.get(name) for name in MALLOC_ENV},
           "workspace_limit_mib": None, "threadpools": threads_info}
    get_limit = getattr(npconv, "get_workspace_limit", None)
    if get_limit is not None:
        env["workspace_limit_mib"] = get_limit() / 2**20
    if torch is not None:
        env["torch"] = torch.__version__
        config = torch.__config__.show()
        found = re.findall(r"MKL-DNN v[\d.]+|Math Kernel Library Version [\w.\-]+", config)
        env["torch_backends"] = ", ".join(found) or "?"
    return env


def _threadpool_info() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture",
            "threading_layer")
    return [{k: info.get(k) for k in keys if info.get(k) is not None} for info in threadpool_info()]


def _header(config: dict, env: dict) -> list:
    pools = "; ".join(
        f"{p.get('internal_api')} {p.get('version', '')} ({p.get('prefix')}"
        + (f", {p['architecture']} kernels" if "architecture" in p else "")
        + f", {p.get('num_threads')} thr)" for p in env["threadpools"]) or "threadpoolctl not installed"
    malloc = env["malloc_env"]
    malloc_set = all(malloc[name] == value for name, value in MALLOC_ENV.items())
    lines = [
        f"npconv bench: suite {config['suite']}, {len(config['layers'])} layer(s), {config['dtype']}, "
        f"{config['threads']} thread(s) per library, {env['timestamp_utc']} UTC",
        f"machine: {env['cpu']}, {env['cpus']} CPUs; Python {env['python']}, NumPy {env['numpy']}, "
        f"npconv {env['npconv']}, torch {env['torch'] or '- (not timed)'}"
        + (f" [{env['torch_backends']}]" if env["torch_backends"] else ""),
        f"thread pools: {pools}; OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE'] or '(unset)'}",
        f"threads ({config['threads']}): "
        + ", ".join([f"torch.set_num_threads({config['threads']})"] if config["torch"] else [])
        + (", " if config["torch"] else "")
        + ("NumPy's BLAS via threadpoolctl" if config["blas_limited"]
           else "NumPy's BLAS at its default (threadpoolctl not installed)")
        + (f", npconv.set_num_threads({config['threads']})" if config["npconv_threads"]
           else ", npconv.set_num_threads not available"),
        "malloc: " + (" ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()) + " (warm heap below 32 MiB)"
                      if malloc_set else
                      "glibc defaults - recommended: " + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())),
        "timing: same arrays for both (torch.from_numpy); torch backward = aten.convolution_backward "
        "(dx, dw, db); npconv fwd+bwd = conv + conv_grad (public API)",
        f"        {config['warmup']} warm-ups, interleaved reps in rotating order, medians; before each "
        f"call wait until idle BLAS/OpenMP threads stop spinning (<= {IDLE_CAP_S * 1e3:.0f} ms),",
        "        then " + ("one untimed lead-in call of the same function (wakes its threads and the "
                          "CPUs, as in a training loop)," if config["lead_in"] else
                          "no lead-in call (--no-lead-in: idle vCPUs may wake late),"),
        f"        a round is contended (dropped, repeated after a wait; at most 3x reps rounds) if others "
        f"used > {config['max_busy']:.0%} of the CPUs (/proc/stat)",
        f"        or a task waited for a CPU during > {config['max_stall']:.0%} of torch's calls "
        "(PSI); busy = other processes' share of all CPUs in the kept rounds",
        "GFLOP/s: fwd 2*N*C_out*prod(out)*C_in/G*prod(k), fwd+bwd 3x; ratio = npconv ms / torch ms "
        "(< 1: npconv faster)",
        "ws MiB: tracemalloc peak during one npconv call minus its result arrays (fwd call / grad call)"
        + (f"; workspace limit {env['workspace_limit_mib']:g} MiB" if env["workspace_limit_mib"] else ""),
        f"blas: GFLOP/s of a probe, NumPy's BLAS on {_probe_text()}, the lower of its runs just before "
        "and after the layer's rounds (a machine-state check, in neither library's time)",
    ]
    return lines


_COLUMNS = ("{:<24} {:>9} {:>6} {:>9} {:>6} | {:>9} {:>6} {:>9} {:>6} | {:>13} {:>5} {:>5}")
_RULE = "-" * len(_COLUMNS.format(*[""] * 12))


def _table_head() -> list:
    return [_COLUMNS.format("layer", "np fwd ms", "GF/s", "torch ms", "ratio",
                            "np f+b ms", "GF/s", "torch ms", "ratio", "ws MiB f/b", "busy", "blas"),
            _RULE]


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(record: dict) -> str:
    np_rec, t_rec = record["npconv"], record["torch"] or {}
    ws = record["workspace_mib"]
    busy = record["busy"]
    return _COLUMNS.format(
        record["name"][:24],
        _fmt(np_rec["fwd_ms"], ".2f"), _fmt(np_rec["fwd_gflops"], ".1f"),
        _fmt(t_rec.get("fwd_ms"), ".2f"), _fmt(record["ratio_fwd"], ".2f"),
        _fmt(np_rec["fwdbwd_ms"], ".2f"), _fmt(np_rec["fwdbwd_gflops"], ".1f"),
        _fmt(t_rec.get("fwdbwd_ms"), ".2f"), _fmt(record["ratio_fwdbwd"], ".2f"),
        f"{ws['fwd']:.1f}/{ws['bwd']:.1f}", "-" if busy is None else f"{busy:.0%}",
        f"{min(record['blas_probe_gflops']):.0f}")


def _geomean(values):
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarise(records: list, busy_run, elapsed: float) -> dict:
    """Geomeans of the ratios, the worst layer, and the others' CPU share.

    ``busy`` is the mean over all kept (timed) rounds: what the reported times
    saw. ``busy_run`` covers the whole run, waits and dropped rounds included.
    """
    kept = [share for r in records for share in r["busy_rounds"]]
    busy = None if not kept or None in kept else statistics.fmean(kept)
    probes = [g for r in records for g in r["blas_probe_gflops"]]
    best = max(probes) if probes else None
    slow = [r["name"] for r in records if min(r["blas_probe_gflops"]) < BLAS_SLOW_SHARE * best]
    timed = [r for r in records if r["ratio_fwdbwd"] is not None]
    worst = max(timed, key=lambda r: r["ratio_fwdbwd"]) if timed else None
    return {"geomean_ratio_fwd": _geomean([r["ratio_fwd"] for r in records]),
            "geomean_ratio_fwdbwd": _geomean([r["ratio_fwdbwd"] for r in records]),
            "worst_layer": None if worst is None else
            {"name": worst["name"], "ratio_fwd": worst["ratio_fwd"], "ratio_fwdbwd": worst["ratio_fwdbwd"]},
            "layers_compared": len(timed),
            "geomean_npconv_gflops_fwdbwd": _geomean([r["npconv"]["fwdbwd_gflops"] for r in records]),
            "busy": busy, "busy_run": busy_run, "elapsed_s": elapsed,
            "blas_probe_gflops": {"min": min(probes), "max": best} if probes else None,
            "blas_slow_layers": slow}


def _summary_lines(summary: dict, records: list, max_busy: float) -> list:
    lines = [_RULE]
    if summary["layers_compared"]:
        worst = summary["worst_layer"]
        lines.append(f"geomean ratio npconv/torch over {summary['layers_compared']} layer(s): "
                     f"fwd {summary['geomean_ratio_fwd']:.2f}x, fwd+bwd {summary['geomean_ratio_fwdbwd']:.2f}x; "
                     f"worst fwd+bwd: {worst['name']} {worst['ratio_fwdbwd']:.2f}x")
    else:
        lines.append("no torch timings: ratios not available")
    busy = summary["busy"]
    dropped = sum(r["dropped_rounds"] for r in records)
    contended = sum(r["contended_rounds_kept"] for r in records)
    misses = sum(r["idle_cap_hits"] for r in records)
    busy_run = summary["busy_run"]
    lines.append(f"other processes' CPU share (busy) in the timed rounds: "
                 f"{'-' if busy is None else f'{busy:.1%}'}, over the whole run: "
                 f"{'-' if busy_run is None else f'{busy_run:.0%}'}; rounds dropped: {dropped}; "
                 f"idle waits that hit the cap: {misses}; elapsed {summary['elapsed_s']:.0f} s")
    probe = summary["blas_probe_gflops"]
    if probe is not None:
        lines.append(f"BLAS probe ({_probe_text()}) around the layers: "
                     f"{probe['min']:.0f}-{probe['max']:.0f} GFLOP/s")
    if summary["blas_slow_layers"]:
        lines.append(f"WARNING: the BLAS probe ran below {BLAS_SLOW_SHARE:.0%} of its best around "
                     f"{', '.join(summary['blas_slow_layers'])}: NumPy's BLAS threads ran slower than in "
                     "the rest of the run (the project's VM has such spells, docs/performance.md), so "
                     "those rows do not show npconv's usual speed")
    if contended:
        lines.append(f"WARNING: {contended} contended round(s) had to be kept (too few quiet ones); "
                     "see contended_rounds_kept per layer in --json")
    if busy is not None and busy > max_busy:
        lines.append(f"WARNING: other processes used {busy:.0%} of the CPUs during the timed rounds "
                     f"(> {max_busy:.0%}): the times, torch's most of all, are not reliable")
    for record in records:
        errors = record["max_rel_err_vs_torch"]
        if errors and max(errors.values()) > 1e-3:
            lines.append(f"WARNING: {record['name']}: npconv differs from torch by "
                         f"{max(errors.values()):.1e} (relative to the result's scale)")
    return lines


# ----------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------
class UsageError(Exception):
    """A bad command line: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message + sys.exit
        raise UsageError(message)


def _argument_type(convert, valid, expected: str):
    """An argparse ``type=``: ``convert(text)`` when it parses and ``valid`` holds, else a
    one-line error ``expected <expected>, got <text>``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive_int = _argument_type(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _argument_type(int, lambda v: v >= 0, "an integer >= 0")
_seconds = _argument_type(float, lambda v: 0.0 <= v < math.inf, "a number of seconds >= 0")
_share = _argument_type(float, lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npconv bench", description=(
        "Time npconv's convolution forward and forward+backward against PyTorch in one process, "
        "interleaved, after warm-ups, with medians; see benchmarks/README.md."))
    parser.add_argument("--suite", default="default",
                        help=f"layer suite: {', '.join(SUITES)} (default: default, the 12 layers of issue 7)")
    parser.add_argument("--layers", default=None,
                        help="comma-separated layer names (from any suite; see --list) instead of a suite")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=_positive_int, default=2,
                        help="threads per library: torch, NumPy's BLAS and npconv (default 2)")
    parser.add_argument("--reps", type=_positive_int, default=None,
                        help="timed rounds per layer (default 5; 3 when a call takes over 1 s)")
    parser.add_argument("--warmup", type=_non_negative_int, default=2,
                        help="untimed warm-up calls per library and measurement (default 2)")
    parser.add_argument("--max-busy", type=_share, default=0.15,
                        help="drop and repeat a round in which other processes used more than "
                             "this share of the CPUs (default 0.15; 1 never drops)")
    parser.add_argument("--max-stall", type=_share, default=0.2,
                        help="also drop and repeat a round if, per Linux PSI, some task waited for a "
                             "CPU during more than this share of torch's calls (default 0.2)")
    parser.add_argument("--quiet-wait", type=_seconds, default=QUIET_CAP_S, metavar="SECONDS",
                        help="before each layer and after a dropped round, wait at most this long "
                             f"for other processes to go quiet (default {QUIET_CAP_S:g})")
    parser.add_argument("--no-lead-in", dest="lead_in", action="store_false",
                        help="time each call right after the idle wait, without the untimed lead-in "
                             "call of the same function")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed of the inputs")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--no-malloc-env", action="store_true",
                        help="do not re-run in a child process with the recommended glibc malloc "
                             "settings " + " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()))
    parser.add_argument("--list", action="store_true", help="list the suites and their layers, then exit")
    return parser


def _select_layers(options) -> list:
    if options.layers is not None:
        names = [name.strip() for name in options.layers.split(",") if name.strip()]
        if not names:
            raise UsageError("--layers: expected comma-separated layer names, got an empty list")
        unknown = [name for name in names if name.lower() not in ALL_LAYERS]
        if unknown:
            raise UsageError(f"--layers: unknown layer {unknown[0]!r} (run with --list to see the names)")
        return [ALL_LAYERS[name.lower()] for name in names]
    if options.suite not in SUITES:
        raise UsageError(f"--suite: unknown suite {options.suite!r}, expected one of {', '.join(SUITES)}")
    return list(SUITES[options.suite])


def _rerun_with_malloc_env(argv) -> int:
    """Run the same benchmark in a child process whose glibc reads the malloc settings at start-up."""
    env = dict(os.environ)
    env.update(MALLOC_ENV)
    env[_CHILD_MARK] = "1"
    # The child must import this same npconv, even if it was found through sys.path
    # manipulation (pytest, a script) rather than PYTHONPATH.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(npconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, "-m", "npconv.bench", *argv]
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130


def _write_json(path: str, data: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".bench-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def _set_threads(threads: int, torch):
    """Apply the thread count; returns (restore(), blas_limited, npconv_threads)."""
    restores = []
    if torch is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        restores.append(lambda: torch.set_num_threads(old))
    blas_limited = False
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        limiter = threadpool_limits(limits=threads, user_api="blas")
        restores.append(limiter.restore_original_limits)
        blas_limited = True
    setter = getattr(npconv, "set_num_threads", None)
    getter = getattr(npconv, "get_num_threads", None)
    if setter is not None:
        old_npconv = getter() if getter is not None else None
        setter(threads)
        if old_npconv is not None:
            restores.append(lambda: setter(old_npconv))

    def restore():
        for undo in reversed(restores):
            undo()
    return restore, blas_limited, setter is not None


def main(argv=None) -> int:
    """Run the benchmark; returns the exit code (0 ok, 2 bad command line, 1 failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            options = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help
            return int(stop.code or 0)
        layers = _select_layers(options)
        if options.json is not None:
            directory = os.path.dirname(os.path.abspath(options.json))
            if not os.path.isdir(directory):
                raise UsageError(f"--json: directory {directory!r} does not exist")
    except UsageError as error:
        print(f"npconv bench: error: {error}", file=sys.stderr)
        return 2

    if options.list:
        for suite, suite_layers in SUITES.items():
            print(f"suite {suite}:")
            for layer in suite_layers:
                print(f"  {layer.name:<26} {layer.describe()}")
        return 0

    malloc_set = all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())
    if not options.no_malloc_env and not malloc_set and not os.environ.get(_CHILD_MARK):
        return _rerun_with_malloc_env(argv)

    try:
        return _run(options, layers)
    except KeyboardInterrupt:
        print("npconv bench: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a failing kernel: one line, no traceback (NPCONV_DEBUG=1 shows it)
        if os.environ.get("NPCONV_DEBUG"):
            raise
        message = " ".join(str(error).split())
        print(f"npconv bench: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 1


def _run(options, layers) -> int:
    torch = None
    torch_note = None
    if not options.no_torch:
        try:
            import torch
        except ImportError:
            torch_note = "torch is not installed: torch columns show '-'"
    restore_threads, blas_limited, npconv_threads = _set_threads(options.threads, torch)
    try:
        config = {"suite": options.suite if options.layers is None else "custom",
                  "layers": [layer.name for layer in layers], "dtype": options.dtype,
                  "threads": options.threads, "reps": options.reps, "warmup": options.warmup,
                  "max_busy": options.max_busy, "max_stall": options.max_stall, "seed": options.seed,
                  "torch": torch is not None, "lead_in": options.lead_in,
                  "blas_limited": blas_limited, "npconv_threads": npconv_threads}
        env = environment(torch, _threadpool_info())
        header = _header(config, env) + ([torch_note] if torch_note else [])
        for line in header:
            print("# " + line)
        for line in _table_head():
            print(line)
        sys.stdout.flush()

        start, run_meter, records = time.perf_counter(), BusyMeter(), []
        for layer in layers:
            record = run_layer(layer, options, torch)
            records.append(record)
            print(_row(record), flush=True)
        summary = summarise(records, run_meter.share(), time.perf_counter() - start)
        for line in _summary_lines(summary, records, options.max_busy):
            print(line)
        sys.stdout.flush()
        if options.json is not None:
            _write_json(options.json, {"format": "npconv-bench/1", "config": config,
                                       "environment": env, "header": header,
                                       "layers": records, "summary": summary})
    finally:
        restore_threads()
    return 0


if __name__ == "__main__":
    sys.exit(main())
