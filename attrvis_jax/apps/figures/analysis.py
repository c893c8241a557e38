"""The figures' pure pieces, checked exactly by the tests: NMF, the class-targeted channel rule,
amplitude spectra and their radial profiles and slopes, and the comparison's feature-map objectives."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from attrvis_jax.errors import AttrvisError


def nmf(matrix: np.ndarray, n: int, *, iterations: int = 500, seed: int = 0, eps: float = 1e-10
        ) -> tuple[np.ndarray, np.ndarray]:
    """Nonnegative matrix factorization V ≈ W·H (Lee & Seung multiplicative updates, Frobenius loss).

    matrix: V (m, k) ≥ 0. Returns W (m, n), H (n, k), both ≥ 0, with the factors ordered by their
    share ‖W_g‖·‖H_g‖ of the reconstruction (largest first) and each H_g scaled to unit max (W takes
    the scale). Deterministic for a seed.
    """
    v = np.asarray(matrix, np.float64)
    if v.ndim != 2 or np.any(v < 0) or not np.all(np.isfinite(v)):
        raise AttrvisError("nmf needs a finite nonnegative matrix (rows, columns)")
    if n < 1 or n > min(v.shape):
        raise AttrvisError(f"cannot factorize a {v.shape} matrix into {n} factors")
    m, k = v.shape
    rng = np.random.default_rng(seed)
    scale = math.sqrt(max(v.mean(), eps) / n)
    w = scale * (0.5 + rng.random((m, n)))
    h = scale * (0.5 + rng.random((n, k)))
    for _ in range(iterations):
        h *= (w.T @ v) / (w.T @ w @ h + eps)
        w *= (v @ h.T) / (w @ (h @ h.T) + eps)
    peak = h.max(axis=1, keepdims=True)
    peak = np.where(peak > 0, peak, 1.0)
    h, w = h / peak, w * peak.T
    order = np.argsort(-(np.linalg.norm(w, axis=0) * np.linalg.norm(h, axis=1)), kind="stable")
    return w[:, order], h[order]


def select_class_neurons(scores: np.ndarray, share: float = 0.5, max_channels: int | None = None) -> np.ndarray:
    """The class-targeted channels (comparison column (c), after Singla et al. 2021).

    scores: s_k = Σ_ij a_ijk·∂z_c/∂a_ijk per channel (gradient × activation summed over positions:
    for a layer feeding an average pool and a linear classifier this is Singla et al.'s feature
    importance a_k·w_ck). Rule: only channels with s_k > 0 count; rank them by s_k (descending, ties
    by index) and keep the fewest top channels whose scores sum to at least `share` of Σ_{s_k>0} s_k,
    at most `max_channels`. Returns the kept channel indices, sorted; empty if no score is positive.
    """
    s = np.asarray(scores, np.float64).ravel()
    if not 0 < share <= 1:
        raise AttrvisError(f"share must be in (0, 1], got {share}")
    positive = np.flatnonzero(s > 0)
    if positive.size == 0:
        return np.zeros(0, np.int64)
    order = positive[np.argsort(-s[positive], kind="stable")]
    cumulative = np.cumsum(s[order])
    count = int(np.searchsorted(cumulative, share * cumulative[-1] * (1 - 1e-12), side="left")) + 1
    if max_channels is not None:
        count = min(count, int(max_channels))
    return np.sort(order[:count])


def amplitude_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean amplitude |FFT2|/(H·W) of images (..., H, W, C) over the leading axes and the channels,
    as an (H, W) map with DC at [0, 0] (not shifted). A constant image c gives c at DC, 0 elsewhere."""
    arr = jnp.asarray(np.asarray(images, np.float32))
    h, w = arr.shape[-3:-1]
    amp = jnp.abs(jnp.fft.fft2(arr, axes=(-3, -2))) / (h * w)
    return np.asarray(amp.reshape(-1, h, w, arr.shape[-1]).mean(axis=(0, 3)), np.float64)


def radial_profile(amplitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(radii in cycles per image 0..min(H, W)//2, mean amplitude in each ring of rounded radius)."""
    h, w = amplitude.shape
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    r = np.rint(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)).astype(int)
    top = min(h, w) // 2
    sums = np.bincount(r.ravel(), weights=amplitude.ravel(), minlength=top + 1)[: top + 1]
    counts = np.bincount(r.ravel(), minlength=top + 1)[: top + 1]
    return np.arange(top + 1), sums / np.maximum(counts, 1)


def spectral_slope(radii: np.ndarray, profile: np.ndarray, lo: int = 2, hi: int | None = None) -> float | None:
    """Least-squares slope of log10 amplitude against log10 radius over radii lo..hi (None if any is 0)."""
    hi = hi or int(radii[-1]) // 2
    sel = (radii >= lo) & (radii <= hi)
    p = profile[sel]
    if p.size < 2 or np.any(p <= 1e-12):
        return None
    return float(np.polyfit(np.log10(radii[sel]), np.log10(p), 1)[0])


def comparison_maps(acts: np.ndarray, scores: np.ndarray, n_factors: int, share: float = 0.5) -> dict:
    """The feature-map objectives of columns (a)–(c) from the image's activations a (H, W, K) ≥ 0.

    (a) all: ReLU(a) (scaled to sum 1). (b) factors: NMF of a as (H·W × K) into n factors; factor g's
    map is W_g ⊗ H_g (spatial weights times channel weights, Olah et al.'s building blocks), each
    scaled to sum 1. (c) class: a ⊙ 1[k ∈ selected] with `select_class_neurons(scores, share)`.
    """
    a = np.maximum(np.asarray(acts, np.float64), 0.0)
    h, w, k = a.shape
    wf, hf = nmf(a.reshape(h * w, k), n_factors)
    factor_maps = np.einsum("pg,gk->gpk", wf, hf).reshape(n_factors, h, w, k)
    relative_error = float(np.linalg.norm(a.reshape(h * w, k) - wf @ hf) / max(np.linalg.norm(a), 1e-12))
    selected = select_class_neurons(scores, share)
    mask = np.zeros(k)
    mask[selected] = 1.0
    norm = lambda m: (m / m.sum()).astype(np.float32) if m.sum() > 0 else m.astype(np.float32)
    return {
        "all": norm(a),
        "factors": np.stack([norm(m) for m in factor_maps]),
        "factor_share": (np.linalg.norm(wf, axis=0) * np.linalg.norm(hf, axis=1)).tolist(),
        "nmf_relative_error": relative_error,
        "class": norm(a * mask),
        "selected": selected,
    }
