"""Post-processing of attributions (docs/method.md, 'Post-processing'): channel filter, heat map, Otsu, β, λ0."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from attrvis_jax.attribution import postprocess as pp
from attrvis_jax.config import AttributionConfig


def reference_cumsum_max(values: np.ndarray, tau: float) -> np.ndarray:
    """The code's filter written plainly: numpy sort, cumsum, left searchsorted."""
    score = np.abs(values).max(axis=(0, 1))
    order = np.argsort(-score, kind="stable")
    cum = np.cumsum(score[order])
    idx = np.searchsorted(cum, tau * cum[-1], side="left")
    out = values.copy()
    out[..., order[idx:]] = 0
    return out


@pytest.mark.parametrize("tau", [0.3, 0.6, 0.95, 1.0])
def test_channel_filter_matches_the_codes_algorithm(tau):
    rng = np.random.default_rng(int(tau * 100))
    for _ in range(5):
        values = (rng.standard_normal((6, 5, 40)) * rng.exponential(1.0, 40)).astype(np.float32)
        got = np.asarray(pp.channel_filter(jnp.asarray(values), tau))
        np.testing.assert_array_equal(got, reference_cumsum_max(values, tau))


def test_channel_filter_edge_cases():
    values = np.zeros((3, 3, 4), np.float32)
    values[..., 0] = 10.0  # one channel alone crosses τ·total: nothing is kept (as in the code)
    values[..., 1:] = 0.1
    assert not np.any(pp.channel_filter(jnp.asarray(values), 0.5))
    assert not np.any(pp.channel_filter(jnp.zeros((3, 3, 4)), 0.95))
    # Signs survive; dropped channels are exactly zero.
    values = np.random.default_rng(0).standard_normal((4, 4, 8)).astype(np.float32)
    out = np.asarray(pp.channel_filter(jnp.asarray(values), 0.9))
    kept = np.abs(out).max(axis=(0, 1)) > 0
    np.testing.assert_array_equal(out[..., kept], values[..., kept])
    assert 0 < kept.sum() < 8


def test_otsu_agrees_with_scikit_image_on_the_same_histogram():
    rng = np.random.default_rng(1)
    histogram = jax.jit(pp.histogram, static_argnums=1)
    otsu = jax.jit(pp.otsu_threshold)
    for trial in range(40):
        # Two-class mixtures of a fixed size (one compilation), class balance varying with the trial.
        labels = rng.uniform(size=4000) < 0.05 + 0.02 * trial
        if trial % 2:  # uint8 levels, as on the code path
            img = np.where(labels, rng.normal(170, 25, 4000), rng.normal(60, 15, 4000))
            counts = np.bincount(np.clip(img, 0, 255).astype(np.int64), minlength=256).astype(np.float32)
            centers = np.arange(256, dtype=np.float32)
        else:  # 200 bins over [min, max] of raw float values, as on the paper path
            img = np.where(labels, rng.normal(rng.uniform(1, 5), 0.5, 4000), rng.normal(0, 1, 4000))
            img = img.astype(np.float32)
            counts, centers = map(np.asarray, histogram(jnp.asarray(img), 200, img.min(), img.max()))
            np_counts, _ = np.histogram(img, bins=200, range=(img.min(), img.max()))
            assert np.abs(counts - np_counts).sum() <= 2  # bin-edge rounding only
        ours = float(otsu(jnp.asarray(counts), jnp.asarray(centers)))
        assert ours == pytest.approx(float(threshold_otsu(hist=(counts, centers))), abs=0, rel=1e-6), trial


def test_otsu_jits_and_vmaps():
    rng = np.random.default_rng(2)
    counts = np.stack([np.bincount(rng.integers(0, 256, 500) // (1 + i), minlength=256) for i in range(4)])
    counts = counts.astype(np.float32)
    centers = np.arange(256, dtype=np.float32)
    batched = jax.jit(jax.vmap(pp.otsu_threshold, in_axes=(0, None)))(counts, centers)
    expected = [threshold_otsu(hist=(c, centers)) for c in counts]
    np.testing.assert_array_equal(np.asarray(batched), expected)


def test_otsu_of_a_single_level_is_finite():
    counts = jnp.zeros(256).at[17].set(100.0)
    assert float(pp.otsu_threshold(counts, jnp.arange(256.0))) == 0.0  # nothing lies above it


def test_blur_is_opencvs_3x3_binomial_with_round_half_up():
    img = np.random.default_rng(3).integers(0, 256, (30, 31))
    kernel = np.outer([1, 2, 1], [1, 2, 1])
    expected = (ndimage.correlate(img, kernel, mode="mirror") + 8) // 16  # scipy "mirror" = REFLECT_101
    np.testing.assert_array_equal(np.asarray(pp._blur_uint8(jnp.asarray(img))), expected)


def square_map(size=14, lo=3, hi=10, channels=2):
    values = np.zeros((size, size, channels), np.float32)
    values[lo:hi, lo:hi] = 1.0
    return values, ((hi - lo) / size) ** 2


def test_beta_finds_the_hot_square():
    values, area = square_map()
    code = float(pp.area_ratio(jnp.asarray(values), 224, "code"))
    paper = float(pp.area_ratio(jnp.asarray(values), 224, "paper"))
    assert paper == pytest.approx(area)
    # Bilinear resizing and the blur widen the square a little; the code halves the fraction.
    assert code == pytest.approx(area / 2, rel=0.15)


def test_beta_of_constant_and_zero_maps_is_the_documented_fallback():
    for values in (np.zeros((7, 7, 3)), np.full((7, 7, 3), 2.5)):
        assert float(pp.area_ratio(jnp.asarray(values, jnp.float32), 224, "code")) == 0.5
        assert float(pp.area_ratio(jnp.asarray(values, jnp.float32), 224, "paper")) == 1.0
    out = pp.postprocess(jnp.zeros((7, 7, 3)), AttributionConfig(), 224)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in out)
    assert float(out.lambda0) == 0.0


def test_beta_code_path_matches_opencv_if_available():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(4)
    for _ in range(20):
        h = np.cumsum(np.cumsum(rng.standard_normal((14, 14)), 0), 1).astype(np.float32)
        scaled = np.array(cv2.resize((h - h.min()) / (h.max() - h.min()), (224, 224)), dtype=np.float32)
        blurred = cv2.GaussianBlur((255 * scaled).astype(np.uint8), (3, 3), 0)
        _, fg = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        expected = np.count_nonzero(fg) / fg.size / 2
        got = float(pp.area_ratio(jnp.asarray(h)[..., None], 224, "code"))
        assert got == pytest.approx(expected, abs=1e-3)  # float rounding before uint8 truncation


def test_lambda0_code_and_paper_and_clamp():
    values = np.random.default_rng(5).standard_normal((5, 5, 6)).astype(np.float32)
    filtered = np.asarray(pp.channel_filter(jnp.asarray(values), 0.95))
    code = float(pp.lambda0(jnp.asarray(values), jnp.asarray(filtered), "code"))
    paper = float(pp.lambda0(jnp.asarray(values), jnp.asarray(filtered), "paper"))
    if filtered.sum() > 0:
        assert code == pytest.approx(20 * filtered.sum(), rel=1e-5)
    if values.sum() > 0:
        assert paper == pytest.approx(values.sum(), rel=1e-5)
    negative = -np.abs(values)
    negative[0, 0, 0] = 1.0  # ΣR_f < 0 but R⁺ is not all zero: λ0 = 20·ΣR⁺ > 0
    assert float(pp.lambda0(jnp.asarray(negative), jnp.asarray(negative), "code")) == pytest.approx(20.0)


def test_heatmap_zeroes_the_low_percentiles():
    positive = np.random.default_rng(6).uniform(0, 1, (14, 14, 8)).astype(np.float32)
    h = np.asarray(pp.heatmap(jnp.asarray(positive), 65.0))
    mean = positive.mean(-1)
    np.testing.assert_allclose(h[h > 0], mean[h > 0], rtol=1e-6)
    assert np.mean(h > 0) == pytest.approx(0.35, abs=1 / 196)
    assert pp.upsample(jnp.asarray(h), 224).shape == (224, 224)


def test_postprocess_batch_equals_single_maps():
    values = jnp.asarray(np.random.default_rng(7).standard_normal((3, 7, 7, 10)), jnp.float32)
    config = AttributionConfig(channel_threshold=0.8)
    batched = pp.postprocess_batch(values, config, 64)
    for i in range(3):
        single = pp.postprocess(values[i], config, 64)
        for a, b in zip(single, batched):
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(batched.positive) >= 0)
    np.testing.assert_array_equal(np.asarray(batched.positive), np.maximum(np.asarray(batched.filtered), 0))
