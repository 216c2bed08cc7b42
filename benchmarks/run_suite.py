#!/usr/bin/env python
"""Run the npconv benchmark suite: a thin wrapper around ``npconv.bench`` (same options).

    python benchmarks/run_suite.py                          # issue 7's 12-layer suite
    python benchmarks/run_suite.py --suite quick --no-torch
    python benchmarks/run_suite.py --json results.json

Works from a source checkout without installing npconv (it finds ``../src``).
See benchmarks/README.md for the timing method and the columns.
"""
import os
import sys

try:
    import npconv  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from npconv.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
