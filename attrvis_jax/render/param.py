"""The image parameterization (docs/method.md, 'Parameterization'): a Fourier spectrum per channel, RGB + mask.

    img = irfft2(P · scale(f)) / 4            (per channel; P real and imaginary parts)
    X   = σ(img[..., :3] @ Cnᵀ)               (lucid's ImageNet color decorrelation)
    M   = σ(img[..., 3:4])                    (the α channel: same basis, no color mixing)

scale(f) = sqrt(H·W) / max(f, 1/max(H, W))^decay boosts low frequencies, so Adam's per-coefficient
steps move coarse structure first; with irfft2's 1/(H·W) normalization the transform is close to
unitary and a pixel-space learning rate carries over.

Spectra are stored channels-first, (..., C, H, W//2+1, 2): the last axis is (real, imaginary).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# lucid's square root of the ImageNet color correlation (its SVD), normalized so that its largest
# column has unit L2 norm (0.461952): decorrelated channels map to plausible colors.
COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
COLOR_MATRIX = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))


def rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """|f| on the rfft2 grid (height, width//2 + 1): fy is the full fftfreq, fx its first half."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[: width // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


@functools.lru_cache(maxsize=32)
def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """sqrt(H·W) / max(f, 1/max(H, W))^decay, (height, width//2 + 1) float32."""
    freqs = rfft2d_freqs(height, width)
    scale = np.sqrt(height * width) / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    return scale.astype(np.float32)


def spectrum_shape(channels: int, height: int, width: int) -> tuple[int, ...]:
    return (channels, height, width // 2 + 1, 2)


def normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """N(0, 1) of `shape`, drawn flat and reshaped.

    Same distribution as jax.random.normal(key, shape); drawing flat compiles ~4× faster on XLA:CPU
    (partitionable threefry's compile cost grows with the rank), and every render step draws noise.
    """
    return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


def init_spectrum(key: jax.Array, channels: int, height: int, width: int, sd: float = 0.01) -> jax.Array:
    """Initial coefficients N(0, sd²), (channels, height, width//2 + 1, 2)."""
    return sd * normal(key, spectrum_shape(channels, height, width))


def spectrum_to_image(spectrum: jax.Array, height: int, width: int, decay_power: float = 1.0,
                      mask_decay_power: float | None = None) -> jax.Array:
    """(..., C, H, W//2+1, 2) coefficients → (..., H, W, C) image, before any squashing (÷4 as lucid).
    mask_decay_power: another 1/f^p for the 4th (mask) channel (None: the same as the image)."""
    scale = spectrum_scale(height, width, decay_power)
    if mask_decay_power is not None and mask_decay_power != decay_power and spectrum.shape[-4] == 4:
        scale = np.stack([scale] * 3 + [spectrum_scale(height, width, mask_decay_power)])
    coeffs = jax.lax.complex(spectrum[..., 0], spectrum[..., 1]) * scale
    img = jnp.fft.irfft2(coeffs, s=(height, width), axes=(-2, -1))
    return jnp.moveaxis(img, -3, -1) / 4.0


def decorrelate(rgb: jax.Array) -> jax.Array:
    """Map decorrelated color channels to RGB: rgb @ Cnᵀ (last axis).

    Written as nine scaled planes, not a `dot`: a (…, 3) × (3, 3) product is a batch of tiny
    matrices, which XLA:CPU runs as a YNNPACK dot 3–10× slower than the elementwise form, forward and
    backward (benchmarks/archive/README.md, small_ops.py); the planes fuse with what surrounds them.
    """
    planes = [rgb[..., j] for j in range(3)]
    return jnp.stack([(COLOR_MATRIX[c, 0] * planes[0] + COLOR_MATRIX[c, 1] * planes[1])
                      + COLOR_MATRIX[c, 2] * planes[2] for c in range(3)], axis=-1)


def repeat_channels(m: jax.Array, channels: int) -> jax.Array:
    """m (…, 1) repeated along its last axis to (…, channels).

    The same values as broadcasting, but the gradient comes back as a sum of `channels` slices (an
    elementwise fusion) instead of a reduction over a minor axis of size `channels`, which XLA:CPU's
    YNNPACK reduce runs about 20× slower (a mask composed with an RGB image: 4.4 ms against 0.2 ms
    for 224², forward + backward; benchmarks/archive/README.md, small_ops.py).
    """
    return m if m.shape[-1] == channels else jnp.concatenate([m] * channels, axis=-1)


def to_rgb(img: jax.Array) -> jax.Array:
    """σ(decorrelate(img[..., :3])): the RGB image X in (0, 1)."""
    return jax.nn.sigmoid(decorrelate(img[..., :3]))


def to_mask(img: jax.Array, bias=0.0, channel: int = 3) -> jax.Array:
    """σ(img[..., channel] + bias): the mask M in (0, 1), (..., H, W, 1); bias broadcasts over the
    leading axes (one value per group)."""
    bias = jnp.asarray(bias, img.dtype)
    return jax.nn.sigmoid(img[..., channel : channel + 1] + bias.reshape(bias.shape + (1, 1, 1)))


def mask_bias(beta) -> jax.Array:
    """logit(β): the offset that starts a mask σ(≈0 + bias) at its target area β."""
    beta = jnp.asarray(beta, jnp.float32)
    return jnp.log(beta) - jnp.log1p(-jnp.minimum(beta, 1.0 - 1e-6))


def image_and_mask(spectrum: jax.Array, height: int, width: int, decay_power: float = 1.0, bias=0.0,
                   mask_decay_power: float | None = None):
    """X (..., H, W, 3) and M (..., H, W, 1) from a spectrum; with 3 channels (no mask) M is all ones.
    bias: added before the mask's sigmoid (0: M starts at 0.5, the code; `mask_bias(β)`: at β).
    mask_decay_power: the mask channel's own spectral decay (None: decay_power)."""
    img = spectrum_to_image(spectrum, height, width, decay_power, mask_decay_power)
    x = to_rgb(img)
    m = to_mask(img, bias) if img.shape[-1] > 3 else jnp.ones(img.shape[:-1] + (1,), img.dtype)
    return x, m


# ---- other parameterizations of the RGB image (RenderConfig.parameterization) --------------------
# "fft" is the above (the image and the mask one spectrum of 3 + 1 channels). "pixel" and
# "laplacian" parameterize the RGB image otherwise, as lucid's `pixel_image` / `laplacian_pyramid`
# do, with the same colour decorrelation and sigmoid; a render with a mask keeps the mask its own
# 1-channel spectrum (the method's mask is part of the method, not of the image's parameterization).
LAPLACIAN_LEVELS = 4  # scales 1, 1/2, 1/4, 1/8 (lucid's default n_levels)


def init_params(key: jax.Array, parameterization: str, size: int, mask: bool, sd: float = 0.01) -> dict:
    """One picture's initial parameters: {"spectrum"} for fft (3 or 4 channels), else {"image"} (a
    pixel array, or the pyramid's levels, N(0, sd²)) and, with a mask, its own 1-channel "spectrum"."""
    if parameterization == "fft":
        return {"spectrum": init_spectrum(key, 4 if mask else 3, size, size, sd)}
    k_image, k_mask = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    if parameterization == "pixel":
        image = sd * normal(k_image, (size, size, 3))
    else:
        image = [sd * normal(jax.random.fold_in(k_image, level), (_level_size(size, level),) * 2 + (3,))
                 for level in range(LAPLACIAN_LEVELS)]
    params = {"image": image}
    if mask:
        params["spectrum"] = init_spectrum(k_mask, 1, size, size, sd)
    return params


def _level_size(size: int, level: int) -> int:
    return -(-size // 2**level)


def laplacian_image(levels, size: int) -> jax.Array:
    """Σ_level upsample(level, size) (bilinear): coarse levels move large regions in one step."""
    return sum(jax.image.resize(level, level.shape[:-3] + (size, size, level.shape[-1]), "bilinear")
               for level in levels)


def picture(params: dict, size: int, decay_power: float = 1.0, bias=0.0, mask_decay_power: float | None = None):
    """X (..., H, W, 3) and M (..., H, W, 1) from `init_params`' parameters (M all ones without a mask)."""
    if "image" not in params:
        return image_and_mask(params["spectrum"], size, size, decay_power, bias, mask_decay_power)
    image = params["image"]
    x = to_rgb(laplacian_image(image, size) if isinstance(image, (list, tuple)) else image)
    if "spectrum" not in params:
        return x, jnp.ones(x.shape[:-1] + (1,), x.dtype)
    power = decay_power if mask_decay_power is None else mask_decay_power
    alpha = spectrum_to_image(params["spectrum"], size, size, power)
    return x, to_mask(alpha, bias, channel=0)
