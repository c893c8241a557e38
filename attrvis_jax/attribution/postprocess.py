"""From a raw attribution R (H, W, K) to what the visualization needs (docs/method.md, 'Post-processing').

    R_f = channel_filter(R, τ)       signed, only the top channels kept   → β (Otsu) and λ0
    R⁺  = max(R_f, 0)                                                     → the objective, the heat map

Everything here is pure jnp on one map (no Python branching on values), so it jits and vmaps; the
batched entry point is `postprocess_batch`.

Degenerate maps never give NaN: a spatially constant channel sum (all-zero included) has no
foreground/background split, so β falls back to the value of an all-foreground map (1, halved on the
code path), and λ0 falls back to 0 when R⁺ is all zero. `attribute` rejects all-zero attributions
before getting here.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax import _deprecated
from attrvis_jax.config import AttributionConfig

CODE_BINS = 256  # uint8 levels
PAPER_BINS = 200
LAMBDA_SCALE_CODE = 20.0


def channel_filter(values: jax.Array, threshold: float) -> jax.Array:
    """The code's `cumsumMax`: keep the top channels whose cumulative score stays below τ·total.

    Channel score v_k = max_ij |R_ijk|. Sorted descending and cumulated, the channels strictly before
    the first position where the cumsum reaches τ·Σv are kept (the one crossing the line is dropped;
    if one channel alone reaches it, nothing is kept). Other channels are zeroed; signs are kept.
    """
    score = jnp.max(jnp.abs(values), axis=(0, 1))
    order = jnp.argsort(-score, stable=True)
    cumulative = jnp.cumsum(score[order])
    # The total is the cumsum's own last entry, so τ = 1 drops exactly the last channel whatever
    # the summation order's rounding.
    kept_sorted = cumulative < threshold * cumulative[-1]
    kept = jnp.zeros_like(kept_sorted).at[order].set(kept_sorted)
    return jnp.where(kept, values, 0.0)


def heatmap(positive: jax.Array, percentile: float = 65.0) -> jax.Array:
    """Display heat map (H, W): mean_k R⁺, entries below the `percentile`-th percentile zeroed."""
    h = jnp.mean(positive, axis=-1)
    return jnp.where(h < jnp.percentile(h, percentile), 0.0, h)


def upsample(image: jax.Array, size: int) -> jax.Array:
    """Bilinear resize (half-pixel centers, edge values repeated: cv2.INTER_LINEAR) to size×size."""
    return jax.image.resize(image, (size, size), method="linear", antialias=False)


def histogram(values: jax.Array, nbins: int, lo, hi) -> tuple[jax.Array, jax.Array]:
    """Counts and bin centers of `nbins` equal bins over [lo, hi] (hi falls in the last bin)."""
    span = hi - lo
    scaled = (values.ravel() - lo) / jnp.where(span > 0, span, 1.0) * nbins
    index = jnp.clip(jnp.floor(scaled), 0, nbins - 1).astype(jnp.int32)
    counts = jnp.zeros(nbins, jnp.float32).at[index].add(1.0)
    centers = lo + (jnp.arange(nbins, dtype=jnp.float32) + 0.5) * (span / nbins)
    return counts, centers


def otsu_threshold(counts: jax.Array, centers: jax.Array) -> jax.Array:
    """Otsu's threshold of a histogram: foreground is values > the returned bin center.

    The bin that maximizes the between-class variance w1·w2·(μ1 − μ2)² (the first one on ties), as
    scikit-image's `threshold_otsu(hist=...)` and OpenCV's THRESH_OTSU. Empty classes score 0
    instead of 0/0, so a one-level histogram returns its lowest bin.
    """
    counts = counts.astype(jnp.float32)
    centers = centers.astype(jnp.float32)
    moments = counts * centers
    w1, s1 = jnp.cumsum(counts), jnp.cumsum(moments)
    w2, s2 = jnp.cumsum(counts[::-1])[::-1], jnp.cumsum(moments[::-1])[::-1]
    m1 = s1 / jnp.where(w1 > 0, w1, 1.0)
    m2 = s2 / jnp.where(w2 > 0, w2, 1.0)
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return centers[jnp.argmax(between)]


def _blur_uint8(image: jax.Array) -> jax.Array:
    """cv2.GaussianBlur(u8, (3, 3), 0): with σ = 0 and ksize 3, OpenCV uses the fixed kernel
    [1, 2, 1]/4 per axis, border REFLECT_101, and rounds half up to uint8."""
    padded = jnp.pad(image, 1, mode="reflect")  # numpy's "reflect" is OpenCV's REFLECT_101
    rows = padded[:-2] + 2 * padded[1:-1] + padded[2:]
    total = rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]
    return (total + 8) // 16


def area_ratio(filtered: jax.Array, size: int, fidelity: str = "code") -> jax.Array:
    """β: the fraction of the image the mask should keep, by Otsu on H = Σ_k R_f.

    code: min-max normalize H, resize to size×size, ×255 → uint8 (truncation), 3×3 blur, Otsu on 256
    levels, foreground fraction / 2.  paper: Otsu with 200 bins over [min H, max H] on the raw H,
    foreground fraction (no halving). A constant H counts as all foreground.
    """
    h = jnp.sum(filtered, axis=-1)
    lo, hi = jnp.min(h), jnp.max(h)
    constant = hi <= lo
    if fidelity == "code":
        scaled = upsample((h - lo) / jnp.where(constant, 1.0, hi - lo), size)
        levels = _blur_uint8(jnp.clip(jnp.floor(scaled * 255.0), 0, 255).astype(jnp.int32))
        counts = jnp.zeros(CODE_BINS, jnp.float32).at[levels.ravel()].add(1.0)
        threshold = otsu_threshold(counts, jnp.arange(CODE_BINS, dtype=jnp.float32))
        fraction = jnp.mean(levels > threshold)
        return jnp.where(constant, 1.0, fraction) / 2.0
    counts, centers = histogram(h, PAPER_BINS, lo, hi)
    fraction = jnp.mean(h > otsu_threshold(counts, centers))
    return jnp.where(constant, 1.0, fraction)


def lambda0(values: jax.Array, filtered: jax.Array, fidelity: str = "code") -> jax.Array:
    """Initial weight of the mask-area term: code 20·ΣR_f, paper ΣR.

    Clamped positive (docs/method.md, 'The area weight λ0'): if the sum is ≤ 0, the same scale
    times ΣR⁺ is used (0 only when R⁺ is all zero).
    """
    scale, total = (LAMBDA_SCALE_CODE, jnp.sum(filtered)) if fidelity == "code" else (1.0, jnp.sum(values))
    return scale * jnp.where(total > 0, total, jnp.sum(jnp.maximum(filtered, 0.0)))


@_deprecated.renamed_parameters(r_plus_totals="positive_totals")
def code_lambda0(lambda0, positive_totals) -> np.ndarray:
    """The same rule for a λ0 that arrives from outside (a user's array, an old file): where it is
    not a positive number, LAMBDA_SCALE_CODE·ΣR⁺ (per group) instead."""
    lam = np.asarray(lambda0, np.float32)
    return np.where(np.isfinite(lam) & (lam > 0), lam, LAMBDA_SCALE_CODE * np.asarray(positive_totals, np.float32))


class PostProcessed(NamedTuple):
    filtered: jax.Array  # R_f, (H, W, K)
    positive: jax.Array  # R⁺, (H, W, K)
    heatmap: jax.Array  # (H, W)
    beta: jax.Array  # ()
    lambda0: jax.Array  # ()


@_deprecated.renamed_parameters(r_plus="positive")
def directed_weights(positive, activations=None, baseline=None) -> np.ndarray:
    """sign(a − b)·R⁺: each neuron weighted the way it moved from the baseline b (0 if None) to the
    photo's activation a; R⁺ itself without activations (as on a post-ReLU layer, where a ≥ b).
    What the default render excites (`direction="signed"`) and what the directed PCC measures."""
    r = np.asarray(positive, np.float32)
    if activations is None:
        return r
    base = 0.0 if baseline is None else np.asarray(baseline, np.float32)
    return (np.sign(np.asarray(activations, np.float32) - base) * r).astype(np.float32)


def postprocess(values: jax.Array, config: AttributionConfig = AttributionConfig(), size: int = 224) -> PostProcessed:
    """All of docs/method.md, 'Post-processing', for one map R (H, W, K); `size` is the model's
    input size (the code path's resize)."""
    filtered = channel_filter(values, config.channel_threshold)
    positive = jnp.maximum(filtered, 0.0)
    return PostProcessed(
        filtered=filtered,
        positive=positive,
        heatmap=heatmap(positive, config.heatmap_percentile),
        beta=area_ratio(filtered, size, config.fidelity),
        lambda0=lambda0(values, filtered, config.fidelity),
    )


@functools.partial(jax.jit, static_argnames=("config", "size"))
def postprocess_batch(values: jax.Array, config: AttributionConfig = AttributionConfig(), size: int = 224) -> PostProcessed:
    """`postprocess` over a batch (N, H, W, K), jitted."""
    return jax.vmap(lambda v: postprocess(v, config, size))(values)
