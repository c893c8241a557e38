"""Results show themselves in a notebook (`_repr_html_`, `.show()`): checked on content — the pictures
in the HTML decode to the very pixels of the result, the numbers are the result's."""

from __future__ import annotations

import base64
import html
import io
import re
import sys
import types

import numpy as np
import pytest
from PIL import Image

import attrvis_jax as av
from attrvis_jax import pictures
from tiny import tiny_model

FAST = dict(layer="conv2", target=3, spatial_steps=2, channel_steps=2, steps=4)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def attribution(tiny):
    photo = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    return av.attribute(tiny, photo, **FAST)


def _images(html_text: str) -> list[np.ndarray]:
    """The pictures of an HTML fragment's data-URI <img> tags, decoded."""
    out = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html_text):
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            out.append(np.asarray(img.convert("RGB")))
    return out


def test_an_attribution_shows_its_heat_map_over_the_photo(attribution, tmp_path):
    html_text = attribution._repr_html_()
    heat, channel_sum = _images(html_text)
    photo = attribution.image.astype(np.float32) / 255
    np.testing.assert_array_equal(heat, pictures.to_uint8(pictures.heatmap_overlay(photo, attribution.heatmap_image())))
    assert channel_sum.shape == heat.shape
    assert html.escape(f"3 {attribution.target_name!r}") in html_text and f"{attribution.beta:.4g}" in html_text
    loaded = av.Attribution.load(attribution.save(tmp_path / "a.npz"))  # files keep no photo: the map alone
    assert loaded.image is None
    np.testing.assert_array_equal(_images(loaded._repr_html_())[0],
                                  pictures.to_uint8(pictures.colorize(attribution.heatmap_image())))


@pytest.mark.parametrize("perturbation", ["pyramid", "none"])
def test_a_render_shows_every_seed_with_its_numbers(tiny, attribution, perturbation):
    if perturbation == "none":
        result = av.visualize(tiny, av.objectives.channel(tiny, "conv2", 3), perturbation="none", steps=2, seeds=3)
    else:
        result = av.visualize(tiny, attribution, steps=2, seeds=3)
    html_text = result._repr_html_()
    images = _images(html_text)
    per_seed = 2 if perturbation != "none" else 1
    assert len(images) == 3 * per_seed
    for i in range(3):
        np.testing.assert_array_equal(images[i * per_seed], pictures.to_uint8(result.composed[i]))
        if per_seed == 2:
            np.testing.assert_array_equal(images[i * per_seed + 1], pictures.to_uint8(result.masks[i]))
        assert f"seed {i} · loss {float(result.loss[i]):.4g}" in html_text
    assert result.summary() in html_text


def test_a_sweep_result_shows_its_table_and_pictures(tmp_path):
    from attrvis_jax.apps.sweep import SweepResult, summarize

    picture = np.zeros((8, 8, 3), np.uint8)
    picture[:, :4] = 200
    (tmp_path / "images").mkdir()
    Image.fromarray(picture).save(tmp_path / "images" / "a.png")
    rows = [{"id": f"x|{s}", "image": "x", "target": "top1", "layer": "blocks.1", "perturbation": "pyramid",
             "pcc": 0.5 + s / 10, "pcc_raw": 0.1, "pcc_directed": 0.4, "top5_hit": True, "mask_area": 0.2,
             "beta": 0.2, "finite": True, "picture": "images/a.png" if s == 0 else ""} for s in range(2)]
    result = SweepResult(rows=rows, summary=summarize(rows), out_dir=tmp_path, ran=2, timings={})
    html_text = result._repr_html_()
    assert "<td style='padding-right:10px'>blocks.1</td>" in html_text and "0.550" in html_text  # pcc_mean
    (shown,) = _images(html_text)
    np.testing.assert_array_equal(shown, picture)


def test_a_sweep_summary_shows_full_size_pictures_as_thumbnails_in_one_row(tmp_path):
    """A 224² picture is embedded at twice the 72 px it is shown at (a docs page shows 24 of them),
    the same picture scaled down; the pictures of a row stay side by side."""
    from attrvis_jax.apps.sweep import THUMBNAIL, SweepResult, summarize

    picture = np.zeros((224, 224, 3), np.uint8)
    picture[:, :112] = (200, 40, 10)
    (tmp_path / "images").mkdir()
    Image.fromarray(picture).save(tmp_path / "images" / "a.png")
    rows = [{"id": f"x|{s}", "image": "x", "target": "top1", "layer": "blocks.1", "perturbation": "pyramid",
             "pcc": 0.5, "pcc_raw": 0.1, "pcc_directed": 0.4, "top5_hit": True, "mask_area": 0.2,
             "beta": 0.2, "finite": True, "picture": "images/a.png"} for s in range(2)]
    html_text = SweepResult(rows=rows, summary=summarize(rows), out_dir=tmp_path, ran=2, timings={})._repr_html_()
    shown = _images(html_text)
    assert len(shown) == 2 and shown[0].shape == (2 * THUMBNAIL, 2 * THUMBNAIL, 3)
    half = THUMBNAIL
    np.testing.assert_array_equal(shown[0][:, : half - 2], np.broadcast_to((200, 40, 10), (2 * half, half - 2, 3)))
    assert not shown[0][:, half + 2 :].any()
    assert f'width="{THUMBNAIL}"' in html_text and "<td style='white-space:nowrap'><img" in html_text


def test_show_displays_in_a_notebook_and_says_what_it_needs_elsewhere(attribution, monkeypatch):
    shown = []
    display = types.ModuleType("IPython.display")
    display.HTML = lambda text: ("HTML", text)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    attribution.show()
    assert shown == [("HTML", attribution._repr_html_())]
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # not installed
    with pytest.raises(ImportError, match="needs IPython"):
        attribution.show()
