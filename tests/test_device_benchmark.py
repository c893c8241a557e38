"""benchmarks/device.py, the prepared accelerator benchmark, cannot rot: its dry run (every part at
toy sizes on the CPU) runs here and must produce every part's rows, the picture and the table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The parts run in two test files (this one and test_device_benchmark_render.py), so that the two
# halves of the dry run (each a minute or more cold) go to different test workers.
FIRST = ("devices", "parity", "steps", "full", "lucent")


def dry_run(tmp_path, parts) -> tuple[dict, Path]:
    """benchmarks/device.py --dry-run for `parts` (Lite0 only); returns its report and folder."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("lucent") is None:
        pytest.skip("the lucent part needs torch and torch-lucent (./run-tests installs them)")
    out = tmp_path / "device"
    env = {**os.environ, "BENCH_THREADS": "1"}  # a test worker's share of the cores
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device.py"), "--dry-run", "--out", str(out),
                           "--models", "efficientnet_lite0", "--parts", *parts],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "device.json").read_text())
    assert report["dry_run"] and set(report["parts"]) == set(parts)
    assert not [p for p, r in report["parts"].items() if "error" in r or "skipped" in r]
    table = (out / "device.md").read_text()
    for part in parts:
        assert f"## {part}" in table
    return report, out


@pytest.mark.slow
def test_device_benchmark_dry_run_first_parts(tmp_path):
    report, _ = dry_run(tmp_path, FIRST)
    parts = report["parts"]
    assert parts["devices"]["backend"] == "cpu" and parts["devices"]["count"] >= 1
    # The committed CPU fixture is what this CPU computes (to float rounding: CPUs differ in the last bits).
    parity = {row["model"]: row for row in parts["parity"]["rows"]}
    assert set(parity) == {"inception_v1", "resnet50", "efficientnet_lite0"}
    for row in parity.values():
        assert row["fixture_weights_match"], row
        assert row["default_vs_fixture_max_rel"] < 1e-3 and row["default_vs_cpu_live_max_rel"] < 1e-3, row
    assert [r["seeds"] for r in parts["steps"]["rows"]] == [2]
    assert all(r["s_per_step"] > 0 and r["n"] >= 1 for r in parts["steps"]["rows"])
    full = parts["full"]["rows"]
    assert [r["model"] for r in full] == ["efficientnet_lite0"] and full[0]["attribution_s"] > 0
    assert {r["case"] for r in parts["lucent"]["rows"]} == {"lucent default", "lucent lean", "ours, no mask",
                                                            "ours, pyramid"}
