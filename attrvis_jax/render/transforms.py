"""Transformation robustness (docs/method.md, 'Transforms') as one fixed-shape resampling, so the step jits once.

The authors' chain (lucid transforms on the 4-channel concat(Xc, M), one random draw per step shared
by the attribution groups):

    pad(12, reflect) → jitter(8) → random_scale(.90…1.19) → random_rotate(angle list, zero fill)
    → jitter(2) → crop_or_pad_to(N)

changes the tensor's size at every stage (the scaled size int(s·240) is random), which in JAX would
recompile every step. Every stage is an affine map of pixel coordinates plus a validity region, so we
walk each output pixel of the fixed N×N result back through the chain to a point in the source image
and sample it once, bilinearly (TF rotated with NEAREST; bilinear is the accepted deviation, and it
also makes the image and mask gradients smooth in the sample position):

    output (y, x) ─ crop_or_pad ─► (y − pad_off + crop_off) + jitter2      [zero outside the crop/pad]
                  ─ rotate (and shear, paper) about the scaled canvas center [zero outside the canvas]
                  ─ scale: · n1/n2 (TF1 resize_bilinear, align_corners=False)
                  ─ + jitter1 − pad  ─► source, reflected at the border (the reflect pad)

The integer sizes (n1 = N + 2·pad − jitter1, n2 = int(s·n1), n3 = n2 − jitter2) and offsets are
traced scalars: only values change from step to step, never shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """The random transform family. Angles and shears are in degrees; `pi` converts them (the code
    uses 3.14)."""

    pad: int = 12
    jitter1: int = 8
    scales: tuple[float, ...] = tuple(n / 100 for n in range(90, 120))
    angles: tuple[float, ...] = (
        tuple(range(-12, 12)) + tuple(range(-6, 6)) + 5 * tuple(range(-2, 2))
    )
    shears: tuple[float, ...] = (0.0,)
    jitter2: int = 2
    pi: float = 3.14


CODE_TRANSFORMS = TransformSpec()
PAPER_TRANSFORMS = TransformSpec(
    pad=12, jitter1=9, scales=tuple(n / 100 for n in range(90, 131)), angles=tuple(range(-12, 13)),
    shears=tuple(range(-4, 5)), jitter2=4, pi=math.pi,
)
NO_TRANSFORMS = TransformSpec(pad=0, jitter1=0, scales=(1.0,), angles=(0.0,), shears=(0.0,), jitter2=0)
TRANSFORMS = {"code": CODE_TRANSFORMS, "paper": PAPER_TRANSFORMS, "none": NO_TRANSFORMS}


class TransformParams(NamedTuple):
    """One draw: jitter offsets (y, x) in {0..jitter}, scale factor, rotation and shear in radians."""

    offset1: jax.Array  # (2,) int32
    scale: jax.Array  # () float32
    angle: jax.Array  # () float32, radians
    shear: jax.Array  # () float32, radians
    offset2: jax.Array  # (2,) int32


def sample_params(key: jax.Array, spec: TransformSpec = CODE_TRANSFORMS) -> TransformParams:
    """Draw one parameter set, each choice uniform over the spec's lists (as lucid's _rand_select).

    All seven choices come from one uniform draw: each random-number site costs compile time.
    """
    u = jax.random.uniform(key, (7,), jnp.float32)
    pick = lambda v, values: jnp.asarray(values, jnp.float32)[
        jnp.minimum(jnp.floor(v * len(values)).astype(jnp.int32), len(values) - 1)]
    offset = lambda v, jitter: jnp.minimum(jnp.floor(v * (jitter + 1)).astype(jnp.int32), jitter)
    return TransformParams(
        offset1=offset(u[0:2], spec.jitter1),
        scale=pick(u[2], spec.scales),
        angle=pick(u[3], spec.angles) * (spec.pi / 180.0),
        shear=pick(u[4], spec.shears) * (spec.pi / 180.0),
        offset2=offset(u[5:7], spec.jitter2),
    )


def identity_params(spec: TransformSpec, size: int) -> TransformParams:
    """Parameters for which the chain is the identity (possible whenever the jitters allow it):
    scale 1, no rotation, and jitter offsets that cancel the pad and the center crop."""
    n3 = size + 2 * spec.pad - spec.jitter1 - spec.jitter2
    shift = spec.pad - max(n3 - size, 0) // 2  # offset1 + offset2 must equal this
    o1 = min(max(shift, 0), spec.jitter1)
    o2 = shift - o1
    if not 0 <= o2 <= spec.jitter2:
        raise ValueError(f"no identity in {spec} at size {size}")
    zero = jnp.float32(0.0)
    return TransformParams(jnp.array([o1, o1], jnp.int32), jnp.float32(1.0), zero, zero, jnp.array([o2, o2], jnp.int32))


def source_coordinates(params: TransformParams, spec: TransformSpec, size: int):
    """For each pixel of the size×size output: its (y, x) in the untransformed image and whether it
    is inside the valid region (else zero fill). Returns (yy, xx, valid), each (size, size)."""
    f32 = jnp.float32
    n1 = size + 2 * spec.pad - spec.jitter1
    n2 = jnp.floor(params.scale * f32(n1)).astype(jnp.int32)  # int(s·n1), as TF's cast
    n3 = n2 - spec.jitter2
    crop_off = jnp.maximum(n3 - size, 0) // 2
    pad_off = jnp.maximum(size - n3, 0) // 2
    out = jnp.arange(size, dtype=jnp.int32)
    # crop_or_pad_to: output index − pad offset must fall inside the (cropped) image.
    inside = (out - pad_off >= 0) & (out - pad_off < jnp.minimum(size, n3))
    valid = inside[:, None] & inside[None, :]
    # Undo crop_or_pad and jitter2: coordinates on the rotated n2×n2 canvas.
    y4 = (out - pad_off + crop_off + params.offset2[0]).astype(f32)[:, None]
    x4 = (out - pad_off + crop_off + params.offset2[1]).astype(f32)[None, :]
    c = (n2.astype(f32) - 1.0) / 2.0
    # Shear (paper only; 0 for the code) then rotation, both about the canvas center: TF's projective
    # transform maps output (x, y) to input (cos·x − sin·y, sin·x + cos·y) about the center.
    ys, xs = y4 - c, x4 - c + jnp.tan(params.shear) * (y4 - c)
    cos, sin = jnp.cos(params.angle), jnp.sin(params.angle)
    x3 = cos * xs - sin * ys + c
    y3 = sin * xs + cos * ys + c
    n2f = n2.astype(f32)
    # TF rotates with NEAREST: a pixel is filled when its rounded source lies on the canvas.
    valid = valid & (y3 >= -0.5) & (y3 < n2f - 0.5) & (x3 >= -0.5) & (x3 < n2f - 0.5)
    # Undo the scale (TF1 resize_bilinear without half-pixel centers: src = dst·in/out), jitter1, pad.
    ratio = f32(n1) / n2f
    yy = y3 * ratio + params.offset1[0].astype(f32) - spec.pad
    xx = x3 * ratio + params.offset1[1].astype(f32) - spec.pad
    return jnp.broadcast_to(yy, (size, size)), jnp.broadcast_to(xx, (size, size)), valid


def reflect_index(i, n: int):
    """Whole-sample symmetric index (TF/numpy 'REFLECT': the edge pixel is not repeated).

    Works on numpy arrays (blur matrices built once) and jax arrays (traced sampling) alike.
    """
    xp = np if isinstance(i, np.ndarray) else jnp
    if n == 1:
        return xp.zeros_like(i)
    period = 2 * (n - 1)
    i = xp.mod(i, period)
    return xp.where(i >= n, period - i, i)


def bilinear_sample(images: jax.Array, yy: jax.Array, xx: jax.Array) -> jax.Array:
    """Sample images (..., H, W, C) at real coordinates yy, xx (h, w) with reflection at the border.

    All channels of a pixel are gathered together (one gather per corner on the flattened H·W axis),
    so the image and its mask move identically. Integer coordinates give the pixels exactly.
    """
    h, w = images.shape[-3:-1]
    flat = images.reshape(*images.shape[:-3], h * w, images.shape[-1])
    y0, x0 = jnp.floor(yy), jnp.floor(xx)
    fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    rows = (reflect_index(y0, h), reflect_index(y0 + 1, h))
    cols = (reflect_index(x0, w), reflect_index(x0 + 1, w))
    # Reflected indices are always in bounds: "clip" skips the out-of-bounds fill (its gradient
    # scatter was 3.5x slower at 224²).
    corner = lambda r, c: jnp.take(flat, (r * w + c).reshape(-1), axis=-2, mode="clip").reshape(
        *images.shape[:-3], *yy.shape, -1)
    top = corner(rows[0], cols[0]) * (1 - fx) + corner(rows[0], cols[1]) * fx
    bottom = corner(rows[1], cols[0]) * (1 - fx) + corner(rows[1], cols[1]) * fx
    return top * (1 - fy) + bottom * fy


def apply_transform(images: jax.Array, params: TransformParams, spec: TransformSpec = CODE_TRANSFORMS) -> jax.Array:
    """Transform images (..., N, N, C) — image and mask channels together — with one parameter set."""
    size = images.shape[-2]
    if images.shape[-3] != size:
        raise ValueError(f"transforms need square images, got {images.shape[-3]}x{size}")
    if spec == NO_TRANSFORMS:
        return images
    yy, xx, valid = source_coordinates(params, spec, size)
    return bilinear_sample(images, yy, xx) * valid[..., None].astype(images.dtype)


def random_transform(images: jax.Array, key: jax.Array, spec: TransformSpec = CODE_TRANSFORMS) -> jax.Array:
    """Draw a parameter set with `key` and apply it to every image of the batch."""
    return apply_transform(images, sample_params(key, spec), spec)


@functools.lru_cache(maxsize=16)
def visibility(spec: TransformSpec, size: int, draws: int = 512, seed: int = 0) -> np.ndarray:
    """v(p): how much source pixel p counts, in expectation over the random transforms, in the
    sum of the transformed image, (size, size) float32 with mean ≈ 1 where the canvas is all seen.

    Σ_o T(M)(o) = Σ_p w_T(p)·M(p) for each draw T (bilinear weights, reflected pad, zero fill), so
    E[mean_o T(M)] = mean_p v(p)·M(p) with v = E[w_T]. Under the code's transforms v is ≈ 1.09 in the
    middle and 0.35–0.8 along the border: a mean of the transformed mask sees border pixels less.
    Estimated from `draws` transform draws (fixed seed: deterministic); computed once per
    (spec, size) and cached.
    """
    if spec == NO_TRANSFORMS:
        return np.ones((size, size), np.float32)

    def weights(key):  # the adjoint of one transform applied to an all-ones output: w_T(p)
        image = jnp.zeros((size, size, 1), jnp.float32)
        _, pull = jax.vjp(lambda m: jnp.sum(apply_transform(m, sample_params(key, spec), spec)), image)
        return pull(jnp.float32(1.0))[0][..., 0]

    chunk = 64
    total = jax.jit(lambda keys: jnp.sum(jax.vmap(weights)(keys), axis=0))
    keys = jax.random.split(jax.random.key(seed), -(-draws // chunk) * chunk).reshape(-1, chunk)
    acc = sum(np.asarray(total(k), np.float64) for k in keys)
    return (acc / keys.size).astype(np.float32)


def area_weights(spec: TransformSpec, size: int, floor: float = 0.05) -> np.ndarray:
    """1 / v(p) (with v clamped at `floor`): multiplying the mask by it before the transform makes
    the mean of the transformed mask an unbiased estimate of mean M, every pixel counting equally."""
    return (1.0 / np.maximum(visibility(spec, size), floor)).astype(np.float32)
