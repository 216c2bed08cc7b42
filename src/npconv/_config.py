"""Explicit run-time settings: the workspace limit and npconv's own thread count.

No hidden global state beyond these, and each has a setter, a getter and a
context manager. The values live in ``contextvars`` so a ``with`` block in one
thread does not leak into another.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import numbers
import os
import threading

DEFAULT_WORKSPACE_LIMIT = 256 * 2**20  # bytes

_workspace_limit = contextvars.ContextVar("npconv_workspace_limit", default=DEFAULT_WORKSPACE_LIMIT)


def _check_bytes(nbytes) -> int:
    if not isinstance(nbytes, numbers.Integral) or isinstance(nbytes, bool) or nbytes < 1:
        raise ValueError(f"workspace limit must be a positive int number of bytes, got {nbytes!r}")
    return int(nbytes)


def set_workspace_limit(nbytes: int) -> None:
    """Cap the im2col/col2im workspace of one call at ``nbytes`` (default 256 MiB).

    The GEMMs of the im2col kernel work on tiles of samples whose size is
    fixed by the shapes alone (about 2048 output columns per tile), so results
    are bitwise the same for every limit that holds one tile's unfolded buffer.
    A smaller limit also splits each tile's first output dimension into runs of
    rows; results then agree to rounding (other GEMM shapes and summation
    order), ~1e-13 relative in float64.
    """
    _workspace_limit.set(_check_bytes(nbytes))


def get_workspace_limit() -> int:
    """The current workspace limit in bytes."""
    return _workspace_limit.get()


@contextlib.contextmanager
def workspace_limit(nbytes: int):
    """Context manager: ``with npconv.workspace_limit(64 * 2**20): ...``."""
    token = _workspace_limit.set(_check_bytes(nbytes))
    try:
        yield
    finally:
        _workspace_limit.reset(token)


def work_chunks(batch: int, rows: int, tile: int, row_bytes: int):
    """Split a convolution's work into ``(samples, output rows)`` pieces.

    The batch is cut into tiles of ``tile`` samples (fixed by the shapes, so results
    do not depend on the limit). A tile whose unfolded buffer (``row_bytes`` per first-dim
    output row and sample) exceeds the workspace limit is further cut into runs of its
    ``rows`` output rows (at least one).
    """
    limit = get_workspace_limit()
    for start in range(0, batch, tile):
        samples = slice(start, min(start + tile, batch))
        tile_row_bytes = row_bytes * (samples.stop - samples.start)
        run = max(1, min(rows, limit // max(tile_row_bytes, 1)))
        for first in range(0, rows, run):
            yield samples, slice(first, min(first + run, rows))


# --------------------------------------------------------------------------
# threads outside BLAS
# --------------------------------------------------------------------------
def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()
_pool = None
_pool_lock = threading.Lock()


def set_num_threads(n: int) -> None:
    """Number of threads npconv uses for its own (non-BLAS) work: im2col copies,
    col2im adds and the depthwise kernels, split over channels or samples
    (NumPy releases the GIL inside these). Default: the CPUs this process may use.

    BLAS keeps its own thread count; to cap it too, use threadpoolctl
    (``threadpool_limits(n)``) or ``OPENBLAS_NUM_THREADS`` before start-up.
    """
    global _num_threads, _pool
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: 'n' must be a positive int, got {n!r}")
    with _pool_lock:
        if _pool is not None and n != _num_threads:
            _pool.shutdown(wait=True)
            _pool = None
        _num_threads = n


def get_num_threads() -> int:
    """Threads npconv uses outside BLAS."""
    return _num_threads


# Handing work to a thread costs ~0.1 ms (and a core that BLAS's idle worker may
# still be spinning on); below this much data a single thread is faster.
PARALLEL_MIN_BYTES = 4 * 2**20


def parallel_for(body, total: int, nbytes: int | None = None) -> None:
    """Run ``body(start, stop)`` over ``[0, total)`` split into ``get_num_threads()`` ranges.

    ``body`` must write disjoint outputs for disjoint ranges. Runs inline for one
    thread, one item, or less than ``PARALLEL_MIN_BYTES`` of data (``nbytes``).
    """
    threads = min(_num_threads, total)
    if threads <= 1 or (nbytes is not None and nbytes < PARALLEL_MIN_BYTES):
        body(0, total)
        return
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(_num_threads, thread_name_prefix="npconv")
        pool = _pool
    bounds = [total * i // threads for i in range(threads + 1)]
    futures = [pool.submit(body, bounds[i], bounds[i + 1]) for i in range(threads)]
    for future in futures:
        future.result()  # re-raise any error
