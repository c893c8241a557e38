"""Pictures and report.html: PNGs are right, and the page renders in a real headless browser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from attrvis_jax.apps.report import contact_sheet, heatmap_overlay, save_png, to_uint8, write_report


def test_save_png_roundtrip(tmp_path):
    img = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    path = save_png(tmp_path / "x.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), to_uint8(img))
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp file left behind


def test_to_uint8_scales_floats_and_keeps_bytes():
    floats = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    np.testing.assert_array_equal(to_uint8(floats)[..., 0], [[0, 128, 255, 255, 0]])
    saved = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)  # a PNG as read
    np.testing.assert_array_equal(to_uint8(saved), saved)
    np.testing.assert_array_equal(to_uint8(saved[..., 0]), np.repeat(saved[..., :1], 3, -1))
    sheet = contact_sheet([saved, saved / 255.0], columns=2, pad=0)
    np.testing.assert_array_equal(sheet[:, :5], saved)
    np.testing.assert_array_equal(sheet[:, 5:], saved)


def test_overlay_colors_positive_red_negative_blue():
    image = np.full((40, 40, 3), 0.5, np.float32)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0], heat[3, 3] = 1.0, -1.0
    out = heatmap_overlay(image, heat)
    assert out.shape == (40, 40, 3)
    assert out[0, 0, 0] > out[0, 0, 2]  # red where positive
    assert out[-1, -1, 2] > out[-1, -1, 0]  # blue where negative


def test_contact_sheet_grid():
    tiles = [np.full((8, 8, 3), v, np.float32) for v in (0.0, 0.5, 1.0, 0.25, 0.75)]
    sheet = contact_sheet(tiles, columns=3, pad=2)
    assert sheet.shape == (2 * 10 + 2, 3 * 10 + 2, 3) and sheet.dtype == np.uint8


def _fake_run(out):
    rng = np.random.default_rng(1)
    seeds = []
    for i in range(4):
        save_png(out / f"seed{i:02d}.png", rng.random((32, 32, 3)))
        save_png(out / f"seed{i:02d}_mask.png", rng.random((32, 32)))
        seeds.append({"image": f"seed{i:02d}.png", "mask": f"seed{i:02d}_mask.png", "pcc": 0.1 * i + 0.123,
                      "top5_hit": i % 2 == 0, "mask_area": 0.2, "final_loss": -1.5})
    save_png(out / "input.png", rng.random((32, 32, 3)))
    save_png(out / "heatmap.png", rng.random((32, 32, 3)))
    results = {"model": "efficientnet_lite0", "layer": "blocks.10", "target": "tabby, tabby cat",
               "target_index": 281, "beta": 0.2138, "lambda0": 12.5, "method": "aumann_shapley",
               "completeness_error": 0.00123, "timings": {"total_s": 42.0},
               "versions": {"jax": "x"}, "config": {"render": {"steps": 64}}}
    return results, seeds


def test_report_renders_in_headless_chromium(tmp_path):
    from browser import open_page

    results, seeds = _fake_run(tmp_path)
    path = write_report(tmp_path, results, seeds, {"input": "input.png", "heatmap": "heatmap.png"})
    facts = open_page(path.as_uri(), screenshot=str(tmp_path / "screenshot.png"))
    assert len(facts["images"]) == 2 + 2 + 2 * 4  # input, heat map, best pair, every seed's pair
    broken = [im["src"] for im in facts["images"] if not (im["complete"] and im["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    for text in ("tabby, tabby cat", "blocks.10", "0.423", "0.214", "top-5"):
        assert text in facts["text"], text
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000


def test_report_escapes_html(tmp_path):
    results, seeds = _fake_run(tmp_path)
    results["target"] = "<script>alert(1)</script>"
    html = write_report(tmp_path, results, seeds, {}).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_progress_bar_reaches_total_and_quiet_is_silent(capsys):
    from attrvis_jax.apps import progress

    update = progress.bar("work")
    for done in (32, 64, 96):
        update(done, 96)
    err = capsys.readouterr().err
    assert "work" in err and "96/96" in err
    quiet = progress.bar("work", quiet=True)
    quiet(1, 2)
    assert capsys.readouterr().err == ""
