"""The perturbations and the fractal noise pyramid (docs/method.md, 'Perturbations')."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.config import RenderConfig
from attrvis_jax.render import noise, perturb

N = 32
KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def xm():
    kx, km = jax.random.split(jax.random.key(42))
    x = jax.random.uniform(kx, (2, N, N, 3))
    m = jax.random.uniform(km, (2, N, N, 1))
    return x, m


PERTURBATIONS = {
    "constant": perturb.constant,
    "gaussian": perturb.gaussian,
    "blur": perturb.blur,
    "fractal": perturb.fractal,
    "pyramid": perturb.pyramid,
    "pyramid_paper": lambda x, m, key: perturb.pyramid(x, m, key, index_scale=5.0),
}


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_shapes_ranges_and_gradient_to_the_mask(name, xm):
    x, m = xm
    fn = PERTURBATIONS[name]

    @jax.jit  # one compile per perturbation: value and both gradients
    def run(x, m, key):
        out = fn(x, m, key)
        grad_m = jax.grad(lambda m: jnp.sum(fn(x, m, key) ** 2))(m)
        grad_x = jax.grad(lambda x: jnp.sum(fn(x, m, key)))(x)
        return out, grad_m, grad_x

    out, grad_m, grad_x = run(x, m, KEY)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert np.array_equal(out, run(x, m, KEY)[0])  # a pure function of its key
    assert grad_m.shape == m.shape and np.all(np.isfinite(grad_m))
    assert float(jnp.abs(grad_m).mean()) > 1e-3  # the mask is trained through every perturbation
    assert float(jnp.abs(grad_x).mean()) > 1e-3


def test_no_mask_ablation_is_the_image(xm):
    x, m = xm
    assert perturb.none(x, m, KEY) is x
    cfg = RenderConfig(perturbation="none")
    assert cfg.has_mask is False
    assert perturb.make_perturbation(cfg)(x, m, KEY) is x


def test_mask_one_keeps_the_image_and_mask_zero_the_background(xm):
    x, _ = xm
    ones, zeros = jnp.ones((2, N, N, 1)), jnp.zeros((2, N, N, 1))
    names = ("constant", "gaussian", "fractal", "blur", "pyramid_paper")
    kept = jax.jit(lambda x: [PERTURBATIONS[n](x, ones, KEY) for n in names])(x)
    for name, out in zip(names, kept):
        np.testing.assert_allclose(out, x, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(perturb.constant(x, zeros), 0.55)
    np.testing.assert_allclose(perturb.constant(x, zeros, value=0.5), 0.5)
    bg, blurred, strongest = jax.jit(lambda x: (
        perturb.gaussian(x, zeros, KEY), perturb.blur(x, zeros), perturb.blur_levels(x)[..., 0, :, :, :]))(x)
    np.testing.assert_allclose(bg, jnp.clip(perturb.gaussian_background(KEY, x.shape), 0, 1))
    np.testing.assert_allclose(blurred, strongest, atol=1e-6)


def test_gaussian_background_is_fixed_per_key_and_trainable_where_unclipped(xm):
    x, m = xm
    a, b = perturb.gaussian(x, m, KEY), perturb.gaussian(x, m, jax.random.key(1))
    assert not np.allclose(a, b)
    raw = perturb.gaussian_background(KEY, x.shape)
    np.testing.assert_array_equal(perturb.gaussian(x, m, None, background=raw), a)
    g = jax.grad(lambda v: jnp.sum(perturb.gaussian(x, m, None, background=v)))(raw)
    inside = (raw > 0) & (raw < 1)
    assert float(jnp.abs(g[inside]).min()) > 0 and float(jnp.abs(g[~inside]).max()) == 0


def test_fractal_noise_is_fresh_per_key_and_per_batch_entry():
    a = noise.fractal_noise(KEY, (2,), N, N)
    b = noise.fractal_noise(jax.random.key(1), (2,), N, N)
    assert a.shape == (2, N, N, 3)
    assert float(a.min()) > 0 and float(a.max()) < 1 and abs(float(a.mean()) - 0.5) < 0.1
    assert not np.allclose(a, b) and not np.allclose(a[0], a[1])


def test_pyramid_levels_strong_smooth_to_weak_fine():
    assert noise.PYRAMID_SD == pytest.approx((0.20, 0.19, 0.18, 0.17, 0.16, 0.15))
    assert noise.PYRAMID_DECAY == pytest.approx((1.5, 1.4, 1.3, 1.2, 1.1, 1.0))
    levels = noise.noise_pyramid(KEY, (64,), N, N)  # many draws: compare statistics, not samples
    assert levels.shape == (64, 6, N, N, 3)
    spread = np.asarray(jnp.std(levels, axis=(2, 3, 4))).mean(axis=0)
    assert spread[0] > spread[5] * 1.5  # level 0 is the strongest
    # per-level keys: levels are independent draws, not rescalings of one another
    corr = np.corrcoef(np.asarray(levels[:, 0]).ravel(), np.asarray(levels[:, 1]).ravel())[0, 1]
    assert abs(corr) < 0.1
    other = noise.noise_pyramid(jax.random.key(1), (64,), N, N)
    assert not np.allclose(levels, other)


def _constant_pyramid():
    """Level d is the constant image (d + 1) / 10, so the selected value names the levels used."""
    return jnp.broadcast_to(jnp.arange(1, 7, dtype=jnp.float32)[:, None, None, None] / 10, (6, 4, 4, 3))


@pytest.mark.parametrize("scale, m, want", [
    # code: u = 7M, zero past level 5 (the GPU gather's fill), never JAX's clamping
    (7.0, 0.0, 0.1),                 # level 0
    (7.0, 0.5, 0.5 * 0.4 + 0.5 * 0.5),  # u = 3.5: levels 3 and 4
    (7.0, 1.0, 0.0),                 # u = 7: beyond the pyramid → 0 (clamping would give 0.6)
    (7.0, 5.5 / 7, 0.5 * 0.6),       # u = 5.5: level 5 fading to black
    (7.0, 0.9, 0.0),                 # u = 6.3: black
    # paper: u = 5M
    (5.0, 0.0, 0.1),
    (5.0, 0.5, 0.5 * 0.3 + 0.5 * 0.4),  # u = 2.5: levels 2 and 3
    (5.0, 1.0, 0.6),                 # u = 5: the last level
])
def test_pyramid_level_selection(scale, m, want):
    mask = jnp.full((4, 4, 1), m, jnp.float32)
    got = noise.select_levels(_constant_pyramid(), mask, scale)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_pyramid_composition_and_mask_gradient_through_the_interpolation(xm):
    x, m = xm

    @jax.jit
    def both(x, m):
        levels = noise.noise_pyramid(KEY, (2,), N, N)
        return [(perturb.pyramid(x, m, KEY, index_scale=s), noise.select_levels(levels, m, s)) for s in (7.0, 5.0)]

    for got, bg in both(x, m):
        np.testing.assert_allclose(got, (1 - m) * bg + m * x, atol=1e-6)
    # d/dM of the background term alone is the slope between adjacent levels (interpolation)
    pyr = _constant_pyramid()
    g = jax.grad(lambda v: jnp.sum(noise.select_levels(pyr, jnp.full((4, 4, 1), v), 5.0)))(0.3)
    assert float(g) == pytest.approx(4 * 4 * 3 * 5 * 0.1, rel=1e-5)


@pytest.mark.parametrize("name", ["constant", "blur", "fractal", "pyramid"])
def test_the_mask_gradient_needs_no_reduction_or_dot_over_channels(name, xm):
    """M (…, 1) meets the image's 3 channels (and the pyramid's 6 levels) only through
    `repeat_channels` and elementwise sums: its gradient must not be a `reduce` over a small minor
    axis nor a `dot` of tiny matrices, which XLA:CPU runs 5–20× slower (benchmarks/archive/README.md,
    small_ops.py). The blur pyramid's own blurs are matrix products (dots), so for blur
    only reductions are checked."""
    x, m = xm
    fn = PERTURBATIONS[name]
    pullback = lambda x, m, cot: jax.vjp(lambda x, m: fn(x, m, KEY), x, m)[1](cot)
    text = jax.jit(pullback).lower(x, m, x).as_text()
    assert "stablehlo.reduce" not in text
    if name != "blur":
        assert "dot_general" not in text


def test_make_perturbation_follows_the_config(xm):
    x, m = xm
    configs = [RenderConfig(perturbation=n) for n in ("constant", "gaussian", "blur", "fractal", "pyramid")]
    paper = RenderConfig(fidelity="paper", perturbation="pyramid")

    @jax.jit
    def run(x, m):
        outs = [perturb.make_perturbation(c)(x, m, KEY) for c in configs]
        return outs, perturb.make_perturbation(paper)(x, m, KEY), perturb.pyramid(x, m, KEY, index_scale=7.0), \
            perturb.pyramid(x, m, KEY, index_scale=5.0)

    outs, paper_out, code_ref, paper_ref = run(x, m)
    assert all(o.shape == x.shape for o in outs)
    np.testing.assert_array_equal(outs[-1], code_ref)  # default: the code's u = 7M
    np.testing.assert_array_equal(paper_out, paper_ref)
    const = perturb.make_perturbation(RenderConfig(perturbation="constant", fidelity="paper"))(x, 0 * m, KEY)
    np.testing.assert_allclose(const, 0.5)


def test_blur_pyramid_kernels():
    v = np.random.default_rng(0).normal(size=N)
    for sigma in perturb.BLUR_SIGMAS:
        w = int(np.ceil(2 * sigma))
        taps = np.exp(-np.arange(-w, w + 1) ** 2 / (2 * sigma**2))
        reference = np.convolve(np.pad(v, w, mode="reflect"), taps / taps.sum(), mode="valid")
        a = perturb.blur_matrix(N, sigma, "symmetric")
        np.testing.assert_allclose(a @ v, reference, atol=1e-5)
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)  # reflect padding keeps brightness
        code = perturb.blur_matrix(N, sigma, "code")
        assert code.sum(axis=1).min() < 0.9  # zero padding darkens the border (the authors' kernel)
    img = jax.random.uniform(KEY, (1, N, N, 3))
    flat, levels, mid = jax.jit(lambda img: (
        perturb.blur_levels(jnp.full((1, N, N, 3), 0.7)), perturb.blur_levels(img),
        perturb.blur(img, jnp.full((1, N, N, 1), 0.4))))(img)
    assert levels.shape == (1, 6, N, N, 3)
    np.testing.assert_allclose(flat, 0.7, rtol=1e-5)
    np.testing.assert_allclose(mid, levels[:, 2], atol=1e-5)  # u = 5·0.4 = 2: σ = 6
    np.testing.assert_array_equal(levels[:, 5], img)  # the top level is X itself
    assert float(jnp.std(levels[:, 0])) < float(jnp.std(levels[:, 4]))  # σ = 10 is the strongest blur
