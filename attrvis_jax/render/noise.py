"""Fractal noise and the noise pyramid (docs/method.md, 'The noise pyramid').

A fractal noise image is the image parameterization (docs/method.md, 'Parameterization') applied
to a *random* spectrum: N(0, sd²) coefficients scaled by 1/f^decay, irfft2, ÷4, color-decorrelated,
σ. Values lie in (0, 1) around 0.5. A larger decay gives smoother noise; a larger sd gives stronger contrast.

The pyramid has 6 levels; level 0 (used where M ≈ 0) is the strongest and smoothest, level 5 the
weakest and finest: sd 0.20 → 0.15 and decay 1.5 → 1.0 (the code's reversed linspaces, equal to the
paper's sd = 0.2 − d/(20D), p = 3 − d/D with decay = p/2, D = 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.render.param import decorrelate, normal, repeat_channels, spectrum_to_image

PYRAMID_LEVELS = 6
PYRAMID_SD = tuple(float(v) for v in np.linspace(0.15, 0.2, PYRAMID_LEVELS)[::-1])
PYRAMID_DECAY = tuple(float(v) for v in np.linspace(1.0, 1.5, PYRAMID_LEVELS)[::-1])
FRACTAL_SD = 0.19  # the code's single-noise ('Noise') background
FRACTAL_DECAY = 1.5


def fractal_noise(
    key: jax.Array,
    batch_shape: tuple[int, ...],
    height: int,
    width: int,
    sd: float = FRACTAL_SD,
    decay_power: float = FRACTAL_DECAY,
    decorrelated: bool = True,
) -> jax.Array:
    """Fresh noise images (*batch_shape, height, width, 3) in (0, 1); each batch entry independent."""
    shape = (*batch_shape, 3, height, width // 2 + 1, 2)
    spectrum = sd * normal(key, shape)
    img = spectrum_to_image(spectrum, height, width, decay_power)
    return jax.nn.sigmoid(decorrelate(img) if decorrelated else img)


def noise_pyramid(
    key: jax.Array,
    batch_shape: tuple[int, ...],
    height: int,
    width: int,
    sds: tuple[float, ...] = PYRAMID_SD,
    decays: tuple[float, ...] = PYRAMID_DECAY,
) -> jax.Array:
    """All levels, (*batch_shape, L, height, width, 3), each from its own key (split from `key`).

    The draws are vmapped over the level keys (one random-number site: each site costs compile time);
    each level then gets its own sd and spectral decay.
    """
    levels = len(sds)
    shape = (*batch_shape, 3, height, width // 2 + 1, 2)
    raw = jax.vmap(lambda k: normal(k, shape))(jax.random.split(key, levels))
    out = []
    for d in range(levels):
        img = spectrum_to_image(sds[d] * raw[d], height, width, decays[d])
        out.append(jax.nn.sigmoid(decorrelate(img)))
    return jnp.stack(out, axis=len(batch_shape))


def select_levels(pyramid: jax.Array, mask: jax.Array, index_scale: float) -> jax.Array:
    """The background N(M) per pixel: pyramid (..., L, H, W, 3), mask (..., H, W, 1) → (..., H, W, 3).

    u = index_scale·M, k = ⌊u⌋, t = u − k: level k gets weight 1 − t and level k + 1 gets t. A level
    index past the last level gets weight 0 — the zero fill of the code's out-of-range GPU gather
    (u = 7M on 6 levels: fading to black for M ≥ 5/7, black for M ≥ 6/7). Written as explicit
    one-hot weights, so nothing depends on how an indexing primitive treats out-of-range indices
    (JAX would clamp). The gradient reaches M through t.

    Elementwise, one level at a time, with M repeated over the colour channels first: the weights
    never broadcast against a channel or level axis, so the gradient to M is a sum of planes, not
    a reduction over a small minor axis or a batch of tiny `dot`s (both several times slower on
    XLA:CPU; benchmarks/archive/README.md, small_ops.py).
    """
    u = index_scale * repeat_channels(mask, pyramid.shape[-1])
    k = jax.lax.stop_gradient(jnp.floor(u))
    t = u - k
    out = None
    for d in range(pyramid.shape[-4]):
        weight = jnp.where(k == d, 1.0 - t, 0.0) + jnp.where(k + 1 == d, t, 0.0)
        term = weight * pyramid[..., d, :, :, :]
        out = term if out is None else out + term
    return out
