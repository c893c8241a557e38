"""`attrvis catalog` / apps.catalog: every channel of a layer as a tile, a sprite sheet and a page;
a tile does not depend on its batch, a stopped catalog resumes with what it had, other settings
are refused. Tiny random network and a few steps: seconds."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from attrvis_jax.apps.catalog import TILE, parse_channels, run_catalog
from attrvis_jax.config import CatalogConfig
from attrvis_jax.apps.sweepdir import FolderLock
from attrvis_jax.config import RenderConfig
from attrvis_jax.errors import AttrvisError
from tiny import tiny_model

RENDER = RenderConfig(perturbation="none", steps=6, lr=0.1, relu_redirect_steps=2)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _config(**changes):
    return CatalogConfig(**{"layer": "conv2", "channels": tuple(range(6)), "batch": 4, "render": RENDER, **changes})


def test_a_catalog_of_six_channels(tiny, tmp_path):
    result = run_catalog(tiny, _config(), tmp_path / "cat")
    out = tmp_path / "cat"
    assert result.ran == 6 and sorted(result.tiles) == list(range(6))
    for c in range(6):
        with Image.open(out / result.tiles[c][0]) as img:
            assert img.size == (32, 32)
    with Image.open(out / "sprite.png") as sprite:
        assert sprite.size == (6 * TILE, TILE)
    page = (out / "index.html").read_text()
    links = re.findall(r'<a class="tile" href="([^"]+)"', page)
    assert links == [f"tiles/ch{c:04d}_s0.png" for c in range(6)] and all((out / link).exists() for link in links)
    record = json.loads((out / "catalog.json").read_text())
    assert record["settings"]["layer"] == "conv2" and set(record["tiles"]) == {str(c) for c in range(6)}
    assert not (out / "sweep.lock").exists()
    # the score is the channel's mean activation on its own picture
    picture = np.asarray(Image.open(out / result.tiles[2][0]), np.float32) / 255
    mean = float(np.asarray(tiny.features(picture, "conv2"))[..., 2].mean())
    assert result.scores[2][0] == pytest.approx(mean, abs=0.02)
    # a record written when the background gray was `constant` (before background_gray): resumed as it is
    record["settings"]["render"]["constant"] = record["settings"]["render"].pop("background_gray")
    (out / "catalog.json").write_text(json.dumps(record))
    assert run_catalog(tiny, _config(), out).ran == 0


def test_a_tile_does_not_depend_on_its_batch(tiny, tmp_path):
    together = run_catalog(tiny, _config(), tmp_path / "a")
    alone = run_catalog(tiny, _config(channels=(3,), batch=1), tmp_path / "b")
    a = np.asarray(Image.open(tmp_path / "a" / together.tiles[3][0]), np.float32)
    b = np.asarray(Image.open(tmp_path / "b" / alone.tiles[3][0]), np.float32)
    assert np.abs(a - b).mean() < 1.0  # 8-bit levels: the same picture to rounding


def test_a_stopped_catalog_resumes_with_what_it_had(tiny, tmp_path):
    out = tmp_path / "cat"

    def stop_after_first_batch(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_catalog(tiny, _config(), out, progress=stop_after_first_batch)
    first = {p.name: p.read_bytes() for p in (out / "tiles").iterdir()}
    assert len(first) == 4 and not (out / "index.html").exists() and not (out / "sweep.lock").exists()
    resumed = run_catalog(tiny, _config(), out)
    assert resumed.ran == 2 and sorted(resumed.tiles) == list(range(6))
    assert all((out / "tiles" / name).read_bytes() == data for name, data in first.items())
    with pytest.raises(AttrvisError, match="holds a catalog with other settings"):
        run_catalog(tiny, _config(render=RENDER.replace(steps=7)), out)
    lock = FolderLock(out, "catalog")
    try:
        with pytest.raises(AttrvisError, match="is in use by another catalog"):
            run_catalog(tiny, _config(), out)
    finally:
        lock.release()


def test_channel_lists_and_bad_settings(tiny, tmp_path):
    assert parse_channels("0-3,7, 9-10,2") == (0, 1, 2, 3, 7, 9, 10)
    for text, fragment in (("3-1", "runs backwards"), ("a-b", "expected channel indices"), ("", "expected channel")):
        with pytest.raises(AttrvisError, match=fragment):
            parse_channels(text)
    with pytest.raises(AttrvisError, match="out of range for conv2"):
        run_catalog(tiny, _config(channels=(2, 16)), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(AttrvisError, match="perturbation must be 'none'"):
        CatalogConfig(render=RenderConfig())
    with pytest.raises(AttrvisError, match="channels repeat"):
        CatalogConfig(channels=(1, 1))


def test_the_command_runs_and_resumes(tmp_path, capsys):
    """`attrvis catalog` on Lite0 (random weights, a shallow layer, 8 channels, 2 steps): the page,
    and the same command again resumes with nothing left to render."""
    from attrvis_jax.apps.cli import main

    argv = ["catalog", "--weights", "random", "--layer", "blocks.1", "--channels", "0-7", "--steps", "2",
            "--batch", "4", "--out", str(tmp_path / "cat")]
    assert main(argv) == 0
    assert "8 channels of efficientnet_lite0:blocks.1 (8 rendered now" in capsys.readouterr().out
    assert len(list((tmp_path / "cat" / "tiles").iterdir())) == 8 and (tmp_path / "cat" / "index.html").exists()
    assert main(argv) == 0
    assert "(0 rendered now" in capsys.readouterr().out
