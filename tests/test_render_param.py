"""The image parameterization, RenderConfig, and the objective's formulas and schedules
(docs/method.md, 'Parameterization' and 'The loss')."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.config import RenderConfig, RunOptions
from attrvis_jax.errors import AttrvisError
from attrvis_jax.render import loss as objective
from attrvis_jax.render import param


# ---- parameterization --------------------------------------------------------------------------
def test_frequencies_and_scale_follow_the_rfft_layout():
    f = param.rfft2d_freqs(6, 8)
    assert f.shape == (6, 5)
    fy, fx = np.fft.fftfreq(6)[:, None], np.fft.fftfreq(8)[:5]
    np.testing.assert_allclose(f, np.sqrt(fx**2 + fy**2))
    scale = param.spectrum_scale(6, 8, 1.0)
    # DC is clamped at 1/max(H, W); every entry carries the sqrt(H·W) unitary factor.
    assert scale[0, 0] == pytest.approx(np.sqrt(48) * 8)
    np.testing.assert_allclose(scale[1, 1], np.sqrt(48) / f[1, 1], rtol=1e-6)


def test_color_matrix_is_lucids_normalized_correlation_sqrt():
    norms = np.linalg.norm(param.COLOR_CORRELATION_SVD_SQRT, axis=0)
    assert norms.max() == pytest.approx(0.461952, abs=1e-6)
    assert np.linalg.norm(param.COLOR_MATRIX, axis=0).max() == pytest.approx(1.0)
    rgb = np.array([[1.0, 0.0, 0.0]], np.float32)  # rgb_out = t · Cnᵀ
    np.testing.assert_allclose(param.decorrelate(rgb), rgb @ param.COLOR_MATRIX.T, rtol=1e-6)


def test_decorrelate_is_the_matrix_product_in_value_and_gradient():
    """decorrelate is written as scaled planes (no `dot`); it must still be rgb @ Cnᵀ, with Cn as
    the adjoint in the backward pass."""
    rng = np.random.default_rng(1)
    rgb = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    cot = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(param.decorrelate(jnp.asarray(rgb)), rgb @ param.COLOR_MATRIX.T, rtol=1e-5, atol=1e-6)
    _, pull = jax.vjp(param.decorrelate, jnp.asarray(rgb))
    np.testing.assert_allclose(pull(jnp.asarray(cot))[0], cot @ param.COLOR_MATRIX, rtol=1e-5, atol=1e-6)


def test_repeat_channels_is_a_broadcast_whose_gradient_sums_the_channels():
    m = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 4, 4, 1)), jnp.float32)
    wide = param.repeat_channels(m, 3)
    assert wide.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(wide, jnp.broadcast_to(m, (2, 4, 4, 3)))
    assert param.repeat_channels(wide, 3) is wide  # already wide: unchanged
    cot = jnp.asarray(np.random.default_rng(3).normal(size=(2, 4, 4, 3)), jnp.float32)
    _, pull = jax.vjp(lambda m: param.repeat_channels(m, 3), m)
    # atol: a sum of three normals can be near 0, where the summation order (which another CPU's
    # program may pick differently) decides the last bits
    np.testing.assert_allclose(pull(cot)[0], jnp.sum(cot, axis=-1, keepdims=True), rtol=1e-6, atol=1e-6)


def test_spectrum_to_image_inverts_a_scaled_rfft():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 12, 10, 4)).astype(np.float32)  # (B, H, W, C)
    coeffs = np.fft.rfft2(np.moveaxis(img, -1, -3) * 4.0) / param.spectrum_scale(12, 10, 1.0)
    spectrum = np.stack([coeffs.real, coeffs.imag], axis=-1).astype(np.float32)
    assert spectrum.shape == (2,) + param.spectrum_shape(4, 12, 10)
    np.testing.assert_allclose(param.spectrum_to_image(jnp.asarray(spectrum), 12, 10), img, atol=1e-5)


def test_init_is_a_gray_half_transparent_image_and_keyed():
    s = param.init_spectrum(jax.random.key(0), 4, 32, 32, sd=0.01)
    assert s.shape == (4, 32, 17, 2)
    assert float(jnp.std(s)) == pytest.approx(0.01, rel=0.1)
    x, m = param.image_and_mask(s, 32, 32)
    assert x.shape == (32, 32, 3) and m.shape == (32, 32, 1)
    assert float(jnp.abs(x - 0.5).max()) < 0.2 and float(jnp.abs(m - 0.5).max()) < 0.2
    assert np.array_equal(s, param.init_spectrum(jax.random.key(0), 4, 32, 32))
    assert not np.array_equal(s, param.init_spectrum(jax.random.key(1), 4, 32, 32))


def test_mask_is_the_fourth_channel_only_and_three_channels_mean_no_mask():
    s = param.init_spectrum(jax.random.key(0), 4, 16, 16)
    grad = jax.grad(lambda s: param.image_and_mask(s, 16, 16)[1].sum())(s)
    assert float(jnp.abs(grad[:3]).max()) == 0.0 and float(jnp.abs(grad[3]).max()) > 0.0
    grad_x = jax.grad(lambda s: param.image_and_mask(s, 16, 16)[0].sum())(s)
    assert float(jnp.abs(grad_x[3]).max()) == 0.0 and float(jnp.abs(grad_x[:3]).max()) > 0.0
    _, m = param.image_and_mask(s[:3], 16, 16)
    assert np.all(np.asarray(m) == 1.0)


# ---- config ------------------------------------------------------------------------------------
def test_render_config_is_hashable_validated_and_follows_fidelity():
    code, paper = RenderConfig(), RenderConfig(fidelity="paper")
    assert hash(code) != hash(paper) and code == RenderConfig()
    assert (code.background, paper.background) == (0.55, 0.5)
    assert (code.growth, paper.growth) == (1.23, 1.2)
    assert (code.pyramid_index_scale, paper.pyramid_index_scale) == (7.0, 5.0)
    assert RenderConfig(fidelity="paper", pyramid_index="code").pyramid_index_scale == 7.0
    assert (code.transform_set, paper.transform_set, RenderConfig(transforms="none").transform_set) == ("code", "paper", "none")
    assert code.schedule_steps == 204 and RenderConfig(steps=64).schedule_steps == 6
    assert RenderConfig(perturbation="NoisePyramid").perturbation == "pyramid"
    assert RenderConfig(perturbation="ConstBack").perturbation == "constant"
    assert RunOptions(snapshot_steps=[256, 128, 128]).snapshot_steps == (128, 256)
    assert RenderConfig.from_dict(dataclasses.asdict(paper)) == paper
    for bad in ({"perturbation": "sparkles"}, {"fidelity": "tf"}, {"steps": 0},
                {"transforms": "tf"}, {"lr": 0.0}, {"blur_kernel": "box"}):
        with pytest.raises(AttrvisError):
            RenderConfig(**bad)
    for bad in ({"engine": "gpu"}, {"seeds": 0}, {"chunk_size": 0}, {"snapshot_steps": ["x"]}):
        with pytest.raises(AttrvisError):
            RunOptions(**bad)
    with pytest.raises(AttrvisError, match="unknown RenderConfig field"):
        code.replace(step=3)


# ---- objective ---------------------------------------------------------------------------------
def test_schedules_are_the_codes_continuous_exponentials():
    cfg = RenderConfig()
    lam, lr = objective.lambda_schedule(cfg), objective.lr_schedule(cfg)
    assert float(lam(0)) == 1.0 and float(lam(204)) == pytest.approx(1.23, rel=1e-6)
    assert float(lam(2048)) == pytest.approx(1.23 ** (2048 / 204), rel=1e-5)  # ≈ 8·λ0 at the end
    assert float(lam(102)) == pytest.approx(1.23**0.5, rel=1e-6)  # continuous, not staircase
    assert float(lr(0)) == pytest.approx(0.02) and float(lr(2048)) == pytest.approx(0.02 * 0.8 ** (2048 / 204), rel=1e-5)
    paper = objective.lambda_schedule(RenderConfig(fidelity="paper"))
    assert float(paper(203)) == 1.0 and float(paper(204)) == pytest.approx(1.2)  # ×1.2 per tenth


def test_loss_formulas_code_paper_and_no_mask():
    rng = np.random.default_rng(0)
    acts = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    r = jnp.asarray(rng.uniform(size=(2, 3, 3, 4)), jnp.float32)
    m_crop, m_full = jnp.array([0.3, 0.4]), jnp.array([0.35, 0.2])
    beta, lambda0 = jnp.array([0.2, 0.25]), jnp.array([10.0, 5.0])
    L_mean = np.sum(np.asarray(acts * r), axis=-1).mean(axis=(1, 2))
    L_sum = np.sum(np.asarray(acts * r), axis=(1, 2, 3))
    t = 204
    code = RenderConfig()
    value, parts = objective.loss(acts, r, m_crop, m_full, beta, lambda0, t, code)
    lam = np.asarray(lambda0) * 1.23
    want = np.sum(-2 * L_mean + lam * ((np.asarray(m_crop) - beta) ** 2 + (np.asarray(m_full) - beta) ** 2))
    assert float(value) == pytest.approx(float(want), rel=1e-5)
    np.testing.assert_allclose(parts["score"], L_mean, rtol=1e-5)
    # the default objective is the code's formula (its generalizations live in the weights, λ0, the
    # mask's area weighting and parameterization), and fidelity="code" is the same formula
    value_code, _ = objective.loss(acts, r, m_crop, m_full, beta, lambda0, t, code.replace(fidelity="code"))
    assert float(value_code) == float(value)
    with pytest.raises(Exception, match="area_weight"):
        RenderConfig(area_weight=0)
    value, _ = objective.loss(acts, r, m_crop, m_full, beta, lambda0, t, RenderConfig(fidelity="paper"))
    want = np.sum(-L_sum + np.asarray(lambda0) * 1.2 * (np.asarray(m_full) - beta) ** 2)
    assert float(value) == pytest.approx(float(want), rel=1e-5, abs=1e-5)
    value, _ = objective.loss(acts, r, None, m_full, beta, lambda0, t, RenderConfig(perturbation="none"))
    assert float(value) == pytest.approx(float(-L_mean.sum()), rel=1e-5)
