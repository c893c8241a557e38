"""The other half of benchmarks/device.py's dry run (see test_device_benchmark.py): the kernels
and dtype parts, with the float32/bfloat16 picture."""

from __future__ import annotations

import pytest

from test_device_benchmark import dry_run


@pytest.mark.slow
def test_device_benchmark_dry_run_kernels_and_dtype(tmp_path):
    report, out = dry_run(tmp_path, ("kernels", "dtype"))
    parts = report["parts"]
    kernels = {r["kernels"]: r for r in parts["kernels"]["rows"]}
    assert set(kernels) == {"lax", "depthwise", "all"}
    for row in kernels.values():  # the rewrites compute the same function as lax (6 steps: rounding only)
        assert row["mean_abs_image_diff_vs_lax"] < 1e-3, row
    assert {r["dtype"] for r in parts["dtype"]["rows"]} == {"float32", "bfloat16"}
    visual = parts["dtype"]["visual"]
    assert set(visual["float32"]) == {"pcc_directed_median", "top5", "mask_area"}
    assert 0 < visual["mean_abs_diff"] < 0.2  # same seeds, another dtype: close, not equal
    assert (out / "dtype_chelsea.png").stat().st_size > 1000
