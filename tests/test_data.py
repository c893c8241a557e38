"""Image input: every PIL mode is converted sensibly; bad files give one clear ImageError."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attrvis_jax.data import load_image, preprocess, read_image
from attrvis_jax.errors import ImageError
from attrvis_jax.data import Preprocess

PRE = Preprocess(size=32, mode="resize_crop", resize=36)


def _save(tmp_path, img, name):
    path = tmp_path / name
    img.save(path)
    return path


def test_rgb_png_roundtrip_exact(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    got = read_image(_save(tmp_path, Image.fromarray(arr), "x.png"))
    assert got.dtype == np.float32 and got.shape == (20, 30, 3)
    np.testing.assert_array_equal(got, arr / np.float32(255))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(40 * 40, dtype=np.uint8).reshape(40, 40)
    got = read_image(_save(tmp_path, Image.fromarray(gray, "L"), "g.png"))
    assert got.shape == (40, 40, 3)
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    np.testing.assert_allclose(got[..., 1], gray / 255.0, atol=1e-6)


def test_16bit_uses_full_range(tmp_path):
    arr = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    got = read_image(_save(tmp_path, Image.fromarray(arr), "d.png"))
    assert got.max() == pytest.approx(1.0) and got.min() == 0.0
    assert got[0, 8, 0] == pytest.approx(32768 / 65535, abs=1e-6)


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255  # red, fully transparent on the left half
    arr[:, 5:, 3] = 255
    got = read_image(_save(tmp_path, Image.fromarray(arr, "RGBA"), "a.png"))
    np.testing.assert_allclose(got[0, 0], [1, 1, 1])  # transparent -> white
    np.testing.assert_allclose(got[0, 9], [1, 0, 0])


def test_palette_image(tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P")
    got = read_image(_save(tmp_path, img, "p.png"))
    np.testing.assert_allclose(got, np.asarray(img.convert("RGB")) / 255.0, atol=1e-6)


def test_arrays_uint8_float_gray_rgba():
    np.testing.assert_allclose(read_image(np.full((4, 4), 255, np.uint8)), np.ones((4, 4, 3)))
    np.testing.assert_allclose(read_image(np.full((4, 4, 3), 0.5, np.float32)), 0.5)
    assert read_image(np.zeros((4, 4, 4), np.float32)).max() == 1.0  # transparent -> white
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        read_image(np.full((4, 4, 3), 255.0))
    with pytest.raises(ImageError, match="NaN"):
        read_image(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="shape"):
        read_image(np.zeros((4, 4, 2), np.uint8))


def test_missing_directory_and_non_image(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    with pytest.raises(ImageError, match="not an image"):
        read_image(text)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_file(tmp_path, fmt):
    arr = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path, Image.fromarray(arr), f"t.{fmt}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|cannot decode"):
        read_image(path)


def test_resize_crop_and_stretch_shapes():
    wide = np.random.default_rng(3).random((50, 100, 3), dtype=np.float32)
    assert preprocess(wide, PRE).shape == (32, 32, 3)
    out = preprocess(wide, Preprocess(size=32, mode="stretch", resize=None, resample="bicubic", clip=False))
    assert out.shape == (32, 32, 3)
    # A constant image stays constant whatever the resampling.
    flat = preprocess(np.full((50, 100, 3), 0.25, np.float32), PRE)
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)


def test_center_crop_keeps_the_center():
    img = np.zeros((40, 120, 3), np.float32)
    img[:, 50:70] = 1.0  # a bright vertical band in the middle
    out = preprocess(img, Preprocess(size=40, mode="resize_crop", resize=40, resample="bilinear"))
    assert out[:, 20].mean() > 0.9 and out[:, 0].mean() < 0.1


def test_small_images_are_upscaled_and_tiny_ones_refused():
    small = np.random.default_rng(4).random((20, 24, 3), dtype=np.float32)
    assert preprocess(small, PRE).shape == (32, 32, 3)  # smaller than the input: upsampled
    with pytest.raises(ImageError, match="too small"):
        preprocess(np.zeros((4, 4, 3), np.float32), PRE)


def test_sample_names(lite0):
    img = load_image("coffee", lite0.spec.preprocess)
    assert img.shape == (224, 224, 3) and 0 <= img.min() and img.max() <= 1
    with pytest.raises(Exception, match="closest: 'coffee'"):
        load_image("cofee", lite0.spec.preprocess)
