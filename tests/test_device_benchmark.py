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


@pytest.mark.slow
def test_device_benchmark_dry_run(tmp_path):
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("lucent") is None:
        pytest.skip("the lucent part needs torch and torch-lucent (./run-tests installs them)")
    out = tmp_path / "device"
    env = {**os.environ, "BENCH_THREADS": "1"}  # a test worker's share of the cores
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device.py"), "--dry-run", "--out", str(out),
                           "--models", "efficientnet_lite0"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "device.json").read_text())
    parts = report["parts"]
    assert report["dry_run"] and set(parts) == {"devices", "parity", "steps", "full", "lucent", "kernels", "dtype"}
    assert not [p for p, r in parts.items() if "error" in r or "skipped" in r]
    assert parts["devices"]["backend"] == "cpu" and parts["devices"]["count"] >= 1
    # The committed CPU fixture is what this CPU computes (to float rounding: CPUs differ in the last bits).
    parity = {row["model"]: row for row in parts["parity"]["rows"]}
    assert set(parity) == {"inception_v1", "resnet50", "efficientnet_lite0"}
    for row in parity.values():
        assert row["fixture_weights_match"], row
        assert row["default_vs_fixture_max_rel"] < 1e-3, row  # (not top-5: random weights' near-ties)
        assert "default_vs_cpu_live_max_rel" not in row  # the default device is this CPU: nothing to compare
    assert [r["seeds"] for r in parts["steps"]["rows"]] == [2]
    assert all(r["s_per_step"] > 0 and r["n"] >= 1 for r in parts["steps"]["rows"])
    full = parts["full"]["rows"]
    assert [r["model"] for r in full] == ["efficientnet_lite0"] and full[0]["attribution_s"] > 0
    assert {r["case"] for r in parts["lucent"]["rows"]} == {"lucent default", "lucent lean", "ours, no mask",
                                                            "ours, pyramid"}
    kernels = {r["kernels"]: r for r in parts["kernels"]["rows"]}
    assert set(kernels) == {"lax", "depthwise", "all"}
    for row in kernels.values():  # the rewrites compute the same function as lax (6 steps: rounding only)
        assert row["mean_abs_image_diff_vs_lax"] < 1e-3, row
    dtypes = {r["dtype"] for r in parts["dtype"]["rows"]}
    assert dtypes == {"float32", "bfloat16"}
    visual = parts["dtype"]["visual"]
    assert set(visual["float32"]) == {"pcc_directed_median", "top5", "mask_area"}
    assert 0 < visual["mean_abs_diff"] < 0.2  # same seeds, another dtype: close, not equal
    assert (out / "dtype_chelsea.png").stat().st_size > 1000
    table = (out / "device.md").read_text()
    for heading in ("## devices", "## parity", "## steps", "## full", "## lucent", "## kernels", "## dtype"):
        assert heading in table
