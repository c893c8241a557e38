"""`attrvis run` end to end on the real default model (short schedule): every output exists, the
results.json keys scripts rely on are there, and the report renders in headless Chromium."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from attrvis_jax.apps.cli import main

STABLE_KEYS = ("model", "layer", "target", "target_index", "beta", "lambda0", "method", "completeness_error",
               "pcc", "top5_hit", "mask_area", "final_loss", "timings", "versions", "config", "key")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["run", "chelsea", "--out", str(out), "--target", "tabby", "--steps", "8", "--seeds", "2",
                 "--path-steps", "16", "--baseline-steps", "64", "--quiet"])
    assert code == 0
    return out


def test_outputs_and_stable_keys(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    for key in STABLE_KEYS:
        assert key in results, key
    assert results["model"] == "efficientnet_lite0" and results["layer"] == "blocks.14"
    assert results["target_index"] == 281 and results["target"] == "tabby, tabby cat"
    assert len(results["pcc"]) == len(results["top5_hit"]) == len(results["mask_area"]) == 2
    assert results["config"]["render"]["steps"] == 8 and results["config"]["attribution"]["steps"] == 16
    for name in ("input.png", "heatmap.png", "seed00.png", "seed01_mask.png", "contact_sheet.png",
                 "attribution.npz", "report.html"):
        assert (run_dir / name).is_file(), name
    assert Image.open(run_dir / "seed00.png").size == (224, 224)


def test_report_renders(run_dir):
    from browser import open_page

    facts = open_page((run_dir / "report.html").as_uri())
    assert facts["images"] and all(im["complete"] and im["width"] > 0 for im in facts["images"])
    results = json.loads((run_dir / "results.json").read_text())
    assert "tabby, tabby cat" in facts["text"] and f"{results['beta']:.3f}"[:4] in facts["text"]


def test_run_usage_errors(tmp_path, capsys):
    assert main(["run", "chelsea", "--out", str(tmp_path), "--target", "tabbby", "--quiet"]) == 2
    assert "closest" in capsys.readouterr().err
    assert main(["run", "chelsea", "--out", str(tmp_path), "--layer", "blocks.99", "--quiet"]) == 2
    assert main(["run", str(tmp_path / "missing.jpg"), "--out", str(tmp_path), "--quiet"]) == 1


def test_overwrite_replaces_the_earlier_run_whole(run_dir, tmp_path, capsys):
    """A rerun into a folder holding a 2-seed run: refused without --overwrite (nothing touched);
    with it, a 1-seed run leaves no seed01 of the old one beside its results, and other files stay."""
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    (out / "notes.txt").write_text("mine")
    # the fixture's settings but one seed: the attribution's compiled functions are reused
    argv = ["run", "chelsea", "--out", str(out), "--target", "tabby", "--steps", "8", "--seeds", "1",
            "--path-steps", "16", "--baseline-steps", "64", "--quiet"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(argv) == 1 and "holds an earlier run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(argv + ["--overwrite"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0] and results["config"]["render"]["seeds"] == 1
    assert not (out / "seed01.png").exists() and not (out / "seed01_mask.png").exists()
    assert (out / "seed00.png").is_file() and (out / "notes.txt").read_text() == "mine"
