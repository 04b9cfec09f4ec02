#!/usr/bin/env python3
"""Run ``replikv`` with the experimental patches named in $REPLIKV_BENCH_PATCHES
(comma-separated, see bench/patches.py) applied first. Used by the profiling experiments
only; the product's own entry point is ``replikv`` / ``python -m replikv``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import patches  # noqa: E402

patches.apply(os.environ.get("REPLIKV_BENCH_PATCHES", ""))

from replikv.cluster.cli import main  # noqa: E402

main(prog_name="replikv")
