"""The loss and its schedules (docs/method.md, 'The loss'): what the kernel minimizes for an objective's weights.

code, default:   loss_b = −2·L_b + λ_b(t)·[(m_crop,b − β_b)² + (m_full,b − β_b)²],
                 L_b = mean_ij Σ_k f^l(T(Xc))_ijk · W_b,ijk
                 (the code's two `add_loss` calls each add −L_b and one area term)
paper:           loss_b = −Σ_ijk f·R⁺ + λ_b(t)·(mean M_b − β_b)²
no mask:         loss_b = −L_b (no area terms)

W is the per-neuron weight of the objective (`objectives.attribution_objective`): R⁺ for the code, and for the
default sign(a − b)·R⁺ / L(photo), which makes L a pure number (1 = the photo's own score).
m_crop is the mean of the transformed mask (zero-filled corners and padding included; on the
default area term the mask is weighted by 1/visibility before the transform), m_full the mean of
the untransformed mask. λ_b(t) = λ0_b·growth^(t / decay_steps): continuous for the code (1.23,
≈ 8·λ0 at the end), staircase per tenth for the paper (1.2). lr(t) = lr·0.8^(t / decay_steps).
The total is the sum over attribution groups b.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from attrvis_jax import _deprecated


def lambda_schedule(config) -> optax.Schedule:
    """t ↦ λ(t)/λ0."""
    return optax.exponential_decay(
        init_value=1.0, transition_steps=config.schedule_steps, decay_rate=config.growth,
        staircase=config.code_like == "paper",
    )


def lr_schedule(config) -> optax.Schedule:
    return optax.exponential_decay(
        init_value=config.lr, transition_steps=config.schedule_steps, decay_rate=config.lr_decay
    )


def optimizer(config) -> optax.GradientTransformation:
    """Adam (0.9, 0.999, 1e-8) with the decaying learning rate."""
    return optax.adam(lr_schedule(config), b1=0.9, b2=0.999, eps=1e-8)


@_deprecated.renamed_parameters(r_plus="weights")
def attribution_score(acts: jax.Array, weights: jax.Array, reduce: str = "mean") -> jax.Array:
    """L_b: Σ_k f·W averaged (code) or summed (paper) over positions, W the objective's weights (R⁺
    on the code's fidelity); acts, weights (B, H, W, K) → (B,)."""
    per_position = jnp.sum(acts * weights, axis=-1)
    return jnp.mean(per_position, axis=(-2, -1)) if reduce == "mean" else jnp.sum(per_position, axis=(-2, -1))


def area_penalty(m_crop: jax.Array, m_full: jax.Array, beta: jax.Array, fidelity: str = "code") -> jax.Array:
    """(m_crop − β)² + (m_full − β)² (code and default) or (m_full − β)² (paper), per group."""
    full = (m_full - beta) ** 2
    return full + (m_crop - beta) ** 2 if fidelity == "code" else full


@_deprecated.renamed_parameters(r_plus="weights")
def loss(acts, weights, m_crop, m_full, beta, lambda0, t, config):
    """The scalar loss of one seed (summed over groups) and its parts (score, area, λ) per group."""
    if config.code_like == "code":
        score = attribution_score(acts, weights, "mean")
        attribution_term = -2.0 * score
    else:
        score = attribution_score(acts, weights, "sum")
        attribution_term = -score
    lam = lambda0 * lambda_schedule(config)(t)
    if config.has_mask:
        area = area_penalty(m_crop, m_full, beta, config.code_like)
        per_group = attribution_term + lam * area
    else:
        area = jnp.zeros_like(score)
        per_group = -score  # no-mask ablation: maximize L only
    return jnp.sum(per_group), {"score": score, "area_penalty": area, "lambda": lam}
