"""The output-targeted baseline (docs/method.md, 'The baseline'): a hidden-layer baseline that stays close to the
activations a but drives the target logit to zero.

Two masks are optimized independently, each from its own N(0, 1) init, with Adam on

    J(m) = (proximity / Σ|a|) · Σ_ijk |m_ijk a_ijk − a_ijk|  +  |z_c(m ⊙ a)|      (minimized)

- stage A: a spatial mask m = σ(s), s ∈ R^{H×W×1};
- stage B: a channel mask m = σ(g), g ∈ R^{1×1×K};

and the baseline is b = min(σ(s), σ(g)) ⊙ a. For post-ReLU layers (a ≥ 0, as in the authors' GoogLeNet)
this is exactly the code's element-wise min(b_spatial, b_channel), and Σ|a| = Σa. For layers with
signed activations (e.g. EfficientNet's linear bottlenecks) taking the minimum of the *masks* keeps
the meaning "the stronger suppression of each neuron", and Σ|a| keeps the proximity weight positive.

A batch of images is optimized at once: the objective is a sum of per-image terms and Adam is
element-wise, so each image's masks follow exactly their own optimization.

The two stages are independent, so they run as one batch: for the first min(spatial, channel) steps
the network sees the 2N masked maps at once (one compiled `lax.fori_loop`), then the longer stage
goes on alone (2049 + 4097 default steps cost 2049 batched + 2048 single steps instead of 6146
single ones; measured in benchmarks/README.md, section "Attribution"). One compiled loop (`_advance`) runs one
mask or several: each mask's objective uses the same ops on the same shapes either way, only the
network's batch is shared. On the CPU measured, the masks come out bit-identical to the stages run alone, at the full
2049/4097 steps; another XLA program may round differently in principle, and Adam amplifies such
differences over thousands of steps, so the tests compare at a few steps, to rounding. Loops have
dynamic bounds: a caller that wants progress runs the same compiled loop over consecutive step
ranges and is called back in between; the results are bit-identical to a single run.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from attrvis_jax.config import AttributionConfig
from attrvis_jax.errors import AttrvisError

Progress = Callable[[int, int], None]


def target_logits(net, layer: str, variables, acts: jax.Array, targets: jax.Array) -> jax.Array:
    """z_c for each image: the target class's pre-softmax logit from `layer`'s activations.

    acts: (N, H, W, K); targets: (N,) int. Returns (N,).
    """
    logits = net.apply(variables, acts, start=layer)
    return jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), axis=1)[:, 0]


class Baseline(NamedTuple):
    """The output-targeted baseline of a batch, with the two masks that made it."""

    values: jax.Array  # b = min(σ(s), σ(g)) ⊙ a, (N, H, W, K)
    spatial_mask: jax.Array  # σ(s), (N, H, W, 1)
    channel_mask: jax.Array  # σ(g), (N, 1, 1, K)


def _closeness(acts, masked, proximity):
    """(proximity / Σ|a|) · Σ|m ⊙ a − a| per image."""
    total = jnp.sum(jnp.abs(acts), axis=(1, 2, 3))
    # An all-zero activation map has nothing to keep close to; avoid 0/0.
    weight = proximity / jnp.maximum(total, jnp.finfo(acts.dtype).tiny)
    return weight * jnp.sum(jnp.abs(masked - acts), axis=(1, 2, 3))


def mask_objective(net, layer, variables, acts, targets, mask, proximity):
    """J(m) summed over the batch (each image's term depends only on its own mask)."""
    masked = mask * acts
    return jnp.sum(_closeness(acts, masked, proximity) + jnp.abs(target_logits(net, layer, variables, masked, targets)))


@functools.partial(jax.jit, static_argnames=("net", "layer"), donate_argnames=("states",))
def _advance(net, layer, variables, acts, targets, lrs, proximity, states, start, stop):
    """Adam updates `start` … `stop − 1` of one or more masks (one per entry of `lrs` and `states`,
    a state = (logits of the mask, Adam state)); with several, the network runs on the masked maps
    of all of them as one batch, each mask with its own Adam (β = (0.9, 0.999), ε = 1e-8, as in the
    code)."""
    optimizers = [optax.adam(lr) for lr in lrs]
    stacked_targets = jnp.concatenate([targets] * len(states))

    def objective(params):
        # Each mask's J(m) as `mask_objective` writes it (same ops, same shapes), except that the
        # network sees all masked maps as one batch: a sum of per-image terms, so each mask gets
        # exactly its own gradient.
        masked = [jax.nn.sigmoid(p) * acts for p in params]
        logits = jnp.split(target_logits(net, layer, variables, jnp.concatenate(masked), stacked_targets), len(params))
        return sum(jnp.sum(_closeness(acts, m, proximity) + jnp.abs(z)) for m, z in zip(masked, logits))

    def step(_, states):
        grads = jax.grad(objective)(tuple(params for params, _ in states))
        new = []
        for optimizer, (params, opt_state), g in zip(optimizers, states, grads):
            updates, opt_state = optimizer.update(g, opt_state, params)
            new.append((optax.apply_updates(params, updates), opt_state))
        return tuple(new)

    return jax.lax.fori_loop(start, stop, step, states)


def _run(net, layer, variables, acts, targets, lrs, proximity, states, start: int, stop: int,
         every: int | None, after: Callable[[int], None] | None):
    """Updates `start` … `stop − 1` of the masks in `states` (see `_advance`), in ranges of `every`
    steps (one range when None) of the same compiled loop; `after(stop)` once each range is done."""
    states = tuple(states)
    if stop <= start:
        return states
    bounds = [start, stop] if every is None else [*range(start, stop, max(1, every)), stop]
    lrs = tuple(jnp.float32(lr) for lr in lrs)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        states = _advance(net, layer, variables, acts, targets, lrs, jnp.float32(proximity), states,
                          jnp.int32(lo), jnp.int32(hi))
        if after is not None:
            jax.block_until_ready(states)  # report work done, not work queued
            after(hi)
    return states


def _adam_state(init: jax.Array, lr: float):
    init = jnp.array(init, jnp.float32, copy=True)  # the loops donate their state: keep the caller's array
    return init, optax.adam(lr).init(init)


def optimize_mask(
    net,
    layer: str,
    variables,
    acts: jax.Array,
    targets: jax.Array,
    init: jax.Array,
    *,
    lr: float,
    steps: int,
    proximity: float,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 256,
) -> jax.Array:
    """Run `steps` Adam updates on mask logits starting at `init`; returns σ(logits).

    With `progress`, the loop runs in ranges of `progress_every` steps and `progress(steps_done)` is
    called after each range (same compiled loop, so the result does not depend on the ranges).
    """
    (state,) = _run(net, layer, variables, acts, targets, (lr,), proximity, (_adam_state(init, lr),), 0, steps,
                    None if progress is None else progress_every, progress)
    return jax.nn.sigmoid(state[0])


def output_targeted_baseline(
    net,
    layer: str,
    variables,
    acts: jax.Array,
    targets: jax.Array,
    key: jax.Array,
    config: AttributionConfig = AttributionConfig(),
    *,
    progress: Progress | None = None,
    progress_every: int = 256,
) -> Baseline:
    """The baseline b for a batch of activations `acts` (N, H, W, K) and target classes (N,).

    `key` draws both N(0, 1) inits (split once: spatial, channel). It may also be one key per image
    (shape (N,)): then each image's inits depend only on its own key, not on the batch it runs in
    (what a resumable sweep needs). `progress(done, total)` counts optimizer steps over both stages.
    """
    acts = jnp.asarray(acts, jnp.float32)
    targets = jnp.asarray(targets, jnp.int32)
    n, h, w, k = acts.shape
    if jnp.ndim(key) == 1 and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape[0] != n:
            raise AttrvisError(f"{key.shape[0]} keys for {n} images: give one key, or one per image")
        pairs = jax.vmap(jax.random.split)(key)  # (N, 2)
        spatial_init = jax.vmap(lambda k_: jax.random.normal(k_, (h, w, 1)))(pairs[:, 0])
        channel_init = jax.vmap(lambda k_: jax.random.normal(k_, (1, 1, k)))(pairs[:, 1])
    else:
        key_spatial, key_channel = jax.random.split(key)
        spatial_init = jax.random.normal(key_spatial, (n, h, w, 1))
        channel_init = jax.random.normal(key_channel, (n, 1, 1, k))
    steps = (config.spatial_steps, config.channel_steps)
    lrs = (config.spatial_lr, config.channel_lr)
    states = [_adam_state(spatial_init, lrs[0]), _adam_state(channel_init, lrs[1])]
    every = None if progress is None else progress_every

    def report(offset, per_step):
        return None if progress is None else (lambda stop: progress(offset + per_step * stop, sum(steps)))

    # Both masks together for the steps they share, then the longer stage alone.
    args = (net, layer, variables, acts, targets)
    shared = min(steps)
    states = list(_run(*args, lrs, config.proximity, states, 0, shared, every, report(0, 2)))
    longer = int(steps[1] > steps[0])
    (states[longer],) = _run(*args, (lrs[longer],), config.proximity, (states[longer],), shared, steps[longer],
                             every, report(shared, 1))
    spatial, channel = (jax.nn.sigmoid(params) for params, _ in states)
    return Baseline(values=jnp.minimum(spatial, channel) * acts, spatial_mask=spatial, channel_mask=channel)
