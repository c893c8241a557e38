"""benchmarks/archive/small_ops.py keeps the render's old small-op forms as references: at a toy size its
op table must run, and every old form must agree with the library's current one (the rewrites are
the same functions, gradients included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_ops_benchmark_old_and_new_forms_agree(tmp_path):
    out = tmp_path / "small_ops.json"
    env = {**os.environ, "BENCH_THREADS": "1"}  # a test worker's share of the cores
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "archive" / "small_ops.py"), "--size", "32",
                           "--batches", "2", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = json.loads(out.read_text())["cases"]
    assert len(cases) == 5
    for case in cases:
        assert case["before"]["wall_s"] > 0 and case["after"]["wall_s"] > 0, case["case"]
        assert case["max_abs_diff"] < 1e-4, case
