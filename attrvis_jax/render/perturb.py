"""The perturbations (docs/method.md, 'Perturbations'): how the mask M mixes the image X with what is "removed".

Each is a pure function `(X, M, key) -> Xc` on X (..., H, W, 3) and M (..., H, W, 1) in [0, 1],
returning the composed image (..., H, W, 3). Keys are used only by the random ones; a perturbation
that samples per step must get a fresh key every step (the optimizer folds the step in).

    constant   Xc = (1 − M)·0.55 + M·X                      (paper: 0.5)
    gaussian   Xc = (1 − M)·clip(N(0,1), 0, 1) + M·X         (one background per key; see `gaussian`)
    blur       Xc = blur pyramid of X itself at u = 5·M      (σ = 10, 8, 6, 4, 2 px, then X)
    fractal    Xc = (1 − M)·fractal noise + M·X              (sd 0.19, decay 1.5)
    pyramid    Xc = (1 − M)·N(M) + M·X                       (6 noise levels interpolated by M)
    none       Xc = X                                        (the no-mask ablation; M is not used)
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.config import CODE_GRAY
from attrvis_jax.render.param import normal, repeat_channels
from attrvis_jax.render.transforms import reflect_index
from attrvis_jax.render.noise import (
    FRACTAL_DECAY, FRACTAL_SD, PYRAMID_LEVELS, fractal_noise, noise_pyramid, select_levels,
)

Perturbation = Callable[..., jax.Array]
BLUR_SIGMAS = (10.0, 8.0, 6.0, 4.0, 2.0)  # levels 0..4; level 5 is X itself


def compose(x: jax.Array, m: jax.Array, background: jax.Array | float) -> jax.Array:
    """(1 − M)·background + M·X; M (…, 1) is repeated over X's channels (`repeat_channels`)."""
    m = repeat_channels(m, x.shape[-1])
    return (1.0 - m) * background + m * x


def constant(x, m, key=None, *, value: float = CODE_GRAY):
    return compose(x, m, value)


def gaussian_background(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The unclipped N(0, 1) draw behind the 'Normal' background (the code's tf.Variable)."""
    return normal(key, shape)


def gaussian(x, m, key=None, *, background: jax.Array | None = None):
    """Background clip(N(0, 1), 0, 1).

    The code samples it once and keeps it (the same key every step here); its tf.Variable was also
    trained by Adam — to emulate that, pass the trained unclipped variable as `background` (the clip
    is applied on every use, so gradient flows where 0 < v < 1).
    """
    raw = gaussian_background(key, x.shape) if background is None else background
    return compose(x, m, jnp.clip(raw, 0.0, 1.0))


def fractal(x, m, key, *, sd: float = FRACTAL_SD, decay_power: float = FRACTAL_DECAY):
    """One fresh fractal noise image per batch entry as the background."""
    h, w = x.shape[-3:-1]
    return compose(x, m, fractal_noise(key, x.shape[:-3], h, w, sd, decay_power))


def pyramid(x, m, key, *, index_scale: float = 7.0, levels: int = PYRAMID_LEVELS):
    """Fractal noise pyramid (fresh every call) selected per pixel by M, then composed with X.

    index_scale 7 is the code (u = 7M on 6 levels, zero past level 5), 5 the paper (u = 5M).
    """
    h, w = x.shape[-3:-1]
    levels_ = noise_pyramid(key, x.shape[:-3], h, w)
    return compose(x, m, select_levels(levels_, m, index_scale))


# ---- blur pyramid ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def blur_matrix(n: int, sigma: float, kernel: str = "symmetric") -> np.ndarray:
    """(n, n) matrix A such that A @ row blurs a length-n signal with a Gaussian of sd `sigma`.

    symmetric: taps −w..w (w = ⌈2σ⌉), reflect padding folded into the matrix.
    code: the authors' taps at −w−1..w (even length) applied as a TF 'SAME' correlation (pad w
    before, w + 1 after) with zero padding, normalized before padding, so borders darken.
    Applying A along H and then W is the separable 2-D blur; as a matmul it is fast on every backend.
    """
    w = int(math.ceil(2 * sigma))
    rows = np.arange(n)[:, None]
    if kernel == "symmetric":
        offsets = np.arange(-w, w + 1)
        taps = np.exp(-offsets**2 / (2 * sigma**2))
        taps /= taps.sum()
        cols = reflect_index(rows + offsets[None, :], n)
        valid = np.ones_like(cols, bool)
    elif kernel == "code":
        offsets = np.arange(-w - 1, w + 1)
        taps = np.exp(-offsets**2 / (2 * sigma**2))
        taps /= taps.sum()
        cols = rows + offsets[None, :] + 1  # tap j reads x[i − w + j] = x[i + offset + 1]
        valid = (cols >= 0) & (cols < n)
    else:
        raise ValueError(f"kernel must be 'symmetric' or 'code', got {kernel!r}")
    a = np.zeros((n, n), np.float64)
    np.add.at(a, (np.broadcast_to(rows, cols.shape)[valid], cols[valid]), np.broadcast_to(taps, cols.shape)[valid])
    return a.astype(np.float32)


def blur_levels(x: jax.Array, kernel: str = "symmetric", sigmas: tuple[float, ...] = BLUR_SIGMAS) -> jax.Array:
    """(..., L + 1, H, W, 3): X blurred with each σ (strongest first), then X itself."""
    h, w = x.shape[-3:-1]
    levels = []
    for sigma in sigmas:
        ah, aw = jnp.asarray(blur_matrix(h, sigma, kernel)), jnp.asarray(blur_matrix(w, sigma, kernel))
        y = jnp.einsum("ij,...jwc->...iwc", ah, x)
        levels.append(jnp.einsum("kw,...iwc->...ikc", aw, y))
    levels.append(x)
    return jnp.stack(levels, axis=-4)


def blur(x, m, key=None, *, kernel: str = "symmetric", sigmas: tuple[float, ...] = BLUR_SIGMAS):
    """The code's BlurImage: the blur pyramid of X interpolated at u = 5·M (M = 0: σ = 10; M = 1: X)."""
    return select_levels(blur_levels(x, kernel, sigmas), m, float(len(sigmas)))


def none(x, m=None, key=None):
    """The no-mask ablation: the image itself."""
    return x


def make_perturbation(config) -> Perturbation:
    """The configured perturbation as `fn(X, M, key, background=None) -> Xc` (background: only
    'gaussian' uses it)."""
    name = config.perturbation
    if name == "constant":
        fn = functools.partial(constant, value=config.background)
    elif name == "gaussian":
        return lambda x, m, key, background=None: gaussian(x, m, key, background=background)
    elif name == "blur":
        fn = functools.partial(blur, kernel=config.blur_kernel)
    elif name == "fractal":
        fn = fractal
    elif name == "pyramid":
        fn = functools.partial(pyramid, index_scale=config.pyramid_index_scale)
    elif name == "none":
        fn = none
    else:  # RenderConfig validates the name; this guards direct misuse
        raise ValueError(f"unknown perturbation {name!r}")
    return lambda x, m, key, background=None: fn(x, m, key)
