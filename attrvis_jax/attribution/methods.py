"""Attribution methods on a hidden layer (docs/method.md, 'The attribution').

Every method takes the same arguments — the network, the layer, its variables, a batch of the
layer's activations a (N, H, W, K), the target classes (N,), a config, a PRNG key and an optional
progress callback — and returns a `MethodOutput` with values of shape (N, H, W, K): the contribution
of every neuron of the layer to the target's pre-softmax logit z_c.

- aumann_shapley: R = (a − b) ⊙ ∫₀¹ ∇z_c(b + α(a − b)) dα from the output-targeted baseline b
  (docs/method.md, 'The baseline').
- integrated_gradients: the same integral from the zero baseline.
- saliency: |∇z_c|.  grad_x_activation: a ⊙ ∇z_c.
- smoothgrad: the mean gradient at noisy copies of a (not multiplied by a).
- grad_cam: a ⊙ w_k with w_k the spatial mean of ∇z_c (summing over k gives the Grad-CAM map).
- deeplift_rescale: a ⊙ the Rescale-rule multipliers from the zero reference.

Path integrals are evaluated `chunk` points at a time (one batched forward/backward per chunk) inside
a jitted `lax.fori_loop`, so memory is bounded by the chunk and not by the number of steps.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.attribution.baseline import Progress, output_targeted_baseline, target_logits
from attrvis_jax.config import AttributionConfig


class MethodOutput(NamedTuple):
    values: jax.Array  # (N, H, W, K)
    logit: jax.Array  # z_c(a), (N,)
    baseline: jax.Array | None = None  # b, (N, H, W, K), for the path methods
    logit_baseline: jax.Array | None = None  # z_c(b), (N,)
    completeness_error: jax.Array | None = None  # |ΣR − (z_c(a) − z_c(b))| of the unscaled R, (N,)


_logits = jax.jit(target_logits, static_argnames=("net", "layer"))


# ---- the path ----------------------------------------------------------------------------------
def path_rule(steps: int, rule: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Points α ∈ [0, 1] and weights (summing to 1) of a quadrature rule for ∫₀¹ f(α) dα.

    right is the authors' code (α = m/S, m = 1..S); trapezoid uses S + 1 points.
    """
    m = np.arange(1, steps + 1, dtype=np.float64)
    if rule == "right":
        alphas, weights = m / steps, np.full(steps, 1.0 / steps)
    elif rule == "left":
        alphas, weights = (m - 1) / steps, np.full(steps, 1.0 / steps)
    elif rule == "midpoint":
        alphas, weights = (m - 0.5) / steps, np.full(steps, 1.0 / steps)
    elif rule == "trapezoid":
        alphas = np.arange(steps + 1, dtype=np.float64) / steps
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] = 0.5 / steps
    elif rule == "gauss_legendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, w / 2
    else:
        raise ValueError(f"unknown rule {rule!r}")
    return alphas.astype(np.float32), weights.astype(np.float32)


def _chunked(alphas: np.ndarray, weights: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay P points out as (n_chunks, size) with size ≤ chunk as even as possible.

    The last chunk is padded with zero-weight points at α = 1 (finite gradients, no contribution),
    so at most n_chunks − 1 extra points are computed.
    """
    n_chunks = math.ceil(len(alphas) / chunk)
    size = math.ceil(len(alphas) / n_chunks)
    pad = n_chunks * size - len(alphas)
    alphas = np.concatenate([alphas, np.ones(pad, np.float32)])
    weights = np.concatenate([weights, np.zeros(pad, np.float32)])
    return alphas.reshape(n_chunks, size), weights.reshape(n_chunks, size)


def _weighted_gradient(net, layer, variables, points, targets, weights):
    """Σ_m w_m ∇z_c(x_m) for points (N, M, H, W, K) and weights (M,) → (N, H, W, K).

    The images and points share one batched forward/backward: the items of a batch are independent
    (inference-mode BN), so the gradient of the weighted sum is each point's weighted gradient.
    """
    n, m = points.shape[:2]

    def weighted_logits(x):
        z = target_logits(net, layer, variables, x.reshape(n * m, *x.shape[2:]), jnp.repeat(targets, m))
        return jnp.sum(z.reshape(n, m) * weights)

    return jax.grad(weighted_logits)(points).sum(axis=1)


@functools.partial(jax.jit, static_argnames=("net", "layer"), donate_argnames=("total",))
def _path_advance(net, layer, variables, acts, baseline, targets, alphas, weights, total, start, stop):
    """Add chunks `start` … `stop − 1` of the path to the running gradient sum `total`."""
    diff = acts - baseline

    def body(i, total):
        points = baseline[:, None] + alphas[i][None, :, None, None, None] * diff[:, None]
        return total + _weighted_gradient(net, layer, variables, points, targets, weights[i])

    return jax.lax.fori_loop(start, stop, body, total)


def _run_chunks(advance: Callable, total, n_chunks: int, points_per_chunk: int,
                progress: Callable[[int], None] | None):
    """One call over all chunks, or one call per chunk with `progress(points_done)` in between."""
    bounds = [0, n_chunks] if progress is None else list(range(n_chunks + 1))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        total = advance(total, jnp.int32(start), jnp.int32(stop))
        if progress is not None:
            jax.block_until_ready(total)  # report work done, not work queued
            progress(stop * points_per_chunk)
    return total


def path_integral(net, layer, variables, acts, baseline, targets, config: AttributionConfig,
                  progress: Callable[[int], None] | None = None) -> MethodOutput:
    """(a − b) ⊙ Σ_m w_m ∇z_c(b + α_m (a − b)), the logits at both ends and the completeness error."""
    alphas, weights = _chunked(*path_rule(config.steps, config.rule), config.chunk)
    advance = functools.partial(_path_advance, net, layer, variables, acts, baseline, targets,
                                jnp.asarray(alphas), jnp.asarray(weights))
    grad_sum = _run_chunks(advance, jnp.zeros_like(acts), *alphas.shape, progress)
    values = (acts - baseline) * grad_sum
    logit, logit_baseline = _logits(net, layer, variables, acts, targets), _logits(net, layer, variables, baseline, targets)
    error = jnp.abs(jnp.sum(values, axis=(1, 2, 3)) - (logit - logit_baseline))
    if config.scale_by_logit:  # the code's R · z_c(a), with |z_c(a)| so the sign never flips
        values = values * jnp.abs(logit)[:, None, None, None]
    return MethodOutput(values, logit, baseline, logit_baseline, error)


def path_points_total(config: AttributionConfig) -> int:
    """Number of gradient evaluations the path takes, padding included (for progress totals)."""
    return _chunked(*path_rule(config.steps, config.rule), config.chunk)[0].size


# ---- the methods -------------------------------------------------------------------------------
def aumann_shapley(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
                   progress: Progress | None = None, progress_every: int = 256) -> MethodOutput:
    """Aumann–Shapley / integrated gradients from the output-targeted baseline (docs/method.md,
    'The attribution').

    `progress(done, total)` counts baseline optimizer steps, then path points.
    """
    key = jax.random.key(0) if key is None else key
    opt_steps = config.spatial_steps + config.channel_steps
    total = opt_steps + path_points_total(config)
    base = output_targeted_baseline(
        net, layer, variables, acts, targets, key, config,
        progress=None if progress is None else (lambda done, _: progress(done, total)),
        progress_every=progress_every,
    )
    return path_integral(net, layer, variables, acts, base.values, targets, config,
                         None if progress is None else (lambda done: progress(opt_steps + done, total)))


def integrated_gradients(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
                         progress: Progress | None = None, progress_every: int = 256) -> MethodOutput:
    """Integrated gradients from the zero baseline (the code's IntGrad)."""
    total = path_points_total(config)
    return path_integral(net, layer, variables, acts, jnp.zeros_like(acts), targets, config,
                         None if progress is None else (lambda done: progress(done, total)))


@functools.partial(jax.jit, static_argnames=("net", "layer"))
def _gradient(net, layer, variables, acts, targets):
    logit, pullback = jax.vjp(lambda a: target_logits(net, layer, variables, a, targets), acts)
    return pullback(jnp.ones_like(logit))[0], logit


def saliency(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
             progress=None, progress_every=256) -> MethodOutput:
    """|∂z_c/∂a|."""
    grad, logit = _gradient(net, layer, variables, acts, targets)
    return MethodOutput(jnp.abs(grad), logit)


def grad_x_activation(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
                      progress=None, progress_every=256) -> MethodOutput:
    """a ⊙ ∂z_c/∂a (the code's GradxInput at a hidden layer)."""
    grad, logit = _gradient(net, layer, variables, acts, targets)
    return MethodOutput(acts * grad, logit)


def grad_cam(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
             progress=None, progress_every=256) -> MethodOutput:
    """Grad-CAM per neuron: a_ijk · w_k, w_k = mean_ij ∂z_c/∂a_ijk.

    Σ_k gives the Grad-CAM map before its ReLU; the neuron-level form lets the same post-processing
    (channel filter, heat map, β) apply.
    """
    grad, logit = _gradient(net, layer, variables, acts, targets)
    return MethodOutput(acts * jnp.mean(grad, axis=(1, 2), keepdims=True), logit)


@functools.partial(jax.jit, static_argnames=("net", "layer", "renormalize"), donate_argnames=("total",))
def _smoothgrad_advance(net, layer, renormalize, variables, acts, targets, key, noise_std, weights,
                        total, start, stop):
    size = weights.shape[1]

    def body(i, total):
        # One key per sample index: the noise does not depend on how samples are chunked.
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(i * size + jnp.arange(size))
        noise = jax.vmap(lambda k: jax.random.normal(k, acts.shape))(keys)  # (M, N, H, W, K)
        points = acts[:, None] + jnp.swapaxes(noise, 0, 1) * noise_std[:, None, None, None, None]
        if renormalize:  # the code: every noisy copy min-max scaled to [0, 1]
            lo = points.min(axis=(2, 3, 4), keepdims=True)
            hi = points.max(axis=(2, 3, 4), keepdims=True)
            points = (points - lo) / jnp.maximum(hi - lo, jnp.finfo(points.dtype).tiny)
        return total + _weighted_gradient(net, layer, variables, points, targets, weights[i])

    return jax.lax.fori_loop(start, stop, body, total)


def smoothgrad(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
               progress: Progress | None = None, progress_every=256) -> MethodOutput:
    """Mean gradient over noisy copies a + N(0, σ²), σ = noise·(max a − min a) per image.

    fidelity "code" min-max renormalizes each copy to [0, 1] like the authors' code (odd for hidden
    layers); "paper" is plain SmoothGrad (Smilkov et al.).
    """
    key = jax.random.key(0) if key is None else key
    n = config.smoothgrad_samples
    _, weights = _chunked(np.zeros(n, np.float32), np.full(n, 1.0 / n, np.float32), config.chunk)
    noise_std = config.smoothgrad_noise * (acts.max(axis=(1, 2, 3)) - acts.min(axis=(1, 2, 3)))
    advance = functools.partial(_smoothgrad_advance, net, layer, config.fidelity == "code", variables,
                                acts, targets, key, noise_std, jnp.asarray(weights))
    total = weights.size
    grads = _run_chunks(advance, jnp.zeros_like(acts), *weights.shape,
                        None if progress is None else (lambda done: progress(done, total)))
    return MethodOutput(grads, _logits(net, layer, variables, acts, targets))


# ---- DeepLIFT-Rescale ---------------------------------------------------------------------------
# The network is traced to a jaxpr once and re-evaluated on the pair (input, reference). Every
# element-wise nonlinearity with one input-dependent operand (ReLU's max(x, 0), ReLU6's clip,
# sigmoid, tanh) gets the Rescale rule: its backward pass uses the secant slope
# Δout/Δin = (f(x) − f(r)) / (x − r) instead of f'(x) (f' at the midpoint where |Δin| ≤ 1e-5, as in
# DeepExplain). Linear operations keep their gradient; other nonlinear operations (max-pool, LRN, the
# product of two activations) keep the plain gradient, as in the authors' DeepExplain fork.
_RESCALED = frozenset({"max", "min", "clamp", "logistic", "tanh"})
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                    "checkpoint", "remat"})
_DELTA = 1e-5


class _Unary(NamedTuple):
    """An element-wise primitive as a function of its operand at `position` (hashable: static)."""

    primitive: object
    params: tuple
    position: int

    def __call__(self, x, others):
        args = list(others)
        args.insert(self.position, x)
        return self.primitive.bind(*args, **dict(self.params))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _secant(unary, x, reference, others):
    return unary(x, others)


def _secant_fwd(unary, x, reference, others):
    y = unary(x, others)
    delta = x - reference
    big = jnp.abs(delta) > _DELTA
    midpoint_slope = jax.jvp(lambda t: unary(t, others), ((x + reference) / 2,), (jnp.ones_like(x),))[1]
    slope = jnp.where(big, (y - unary(reference, others)) / jnp.where(big, delta, 1.0), midpoint_slope)
    return y, (slope, reference, others)


def _secant_bwd(unary, residuals, g):
    slope, reference, others = residuals
    return g * slope, jnp.zeros_like(reference), jax.tree_util.tree_map(jnp.zeros_like, others)


_secant.defvjp(_secant_fwd, _secant_bwd)


def _rescale_eval(jaxpr, consts, values, references):
    """Evaluate `jaxpr` on (values, references); `references[i]` is None for operands that do not
    depend on the input. Returns the outputs' (values, references)."""
    from jax.extend.core import Literal

    env = {}

    def read(var):
        return (var.val, None) if isinstance(var, Literal) else env[var]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = (value, None)
    for var, value, ref in zip(jaxpr.invars, values, references):
        env[var] = (value, ref)
    for eqn in jaxpr.eqns:
        vals, refs = zip(*map(read, eqn.invars)) if eqn.invars else ((), ())
        dependent = [i for i, r in enumerate(refs) if r is not None]
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if eqn.primitive.name in _CALLS and inner is not None:
            # calls are evaluated through their body, dependent or not: some (custom_jvp_call, as in
            # jax.nn.relu) cannot be re-bound from their equation's parameters alone
            closed = inner if hasattr(inner, "consts") else None
            body = closed.jaxpr if closed is not None else inner
            outs, out_refs = _rescale_eval(body, closed.consts if closed is not None else (), vals, refs)
        elif not dependent:
            outs = eqn.primitive.bind(*vals, **eqn.params)
            outs = list(outs) if eqn.primitive.multiple_results else [outs]
            out_refs = [None] * len(outs)
        elif eqn.primitive.name in _RESCALED and len(dependent) == 1:
            (i,) = dependent
            unary = _Unary(eqn.primitive, tuple(sorted(eqn.params.items())), i)
            others = tuple(jnp.asarray(v) for j, v in enumerate(vals) if j != i)
            outs, out_refs = [_secant(unary, vals[i], refs[i], others)], [unary(refs[i], others)]
        else:
            outs = eqn.primitive.bind(*vals, **eqn.params)
            ref_args = [v if r is None else r for v, r in zip(vals, refs)]
            out_refs = eqn.primitive.bind(*ref_args, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs, out_refs = [outs], [out_refs]
        for var, value, ref in zip(eqn.outvars, outs, out_refs):
            env[var] = (value, ref)
    return [read(v)[0] for v in jaxpr.outvars], [read(v)[1] for v in jaxpr.outvars]


def rescale_logits(net, layer, variables, acts, reference, targets):
    """z_c(acts) whose gradient is DeepLIFT-Rescale's multiplier with respect to `reference`."""
    fn = lambda a: target_logits(net, layer, variables, a, targets)  # noqa: E731
    closed = jax.make_jaxpr(fn)(acts)
    (out,), _ = _rescale_eval(closed.jaxpr, closed.consts, [acts], [reference])
    return out


@functools.partial(jax.jit, static_argnames=("net", "layer"))
def _rescale_gradient(net, layer, variables, acts, reference, targets):
    logit, pullback = jax.vjp(lambda a: rescale_logits(net, layer, variables, a, reference, targets), acts)
    return pullback(jnp.ones_like(logit))[0], logit


def deeplift_rescale(net, layer, variables, acts, targets, *, config=AttributionConfig(), key=None,
                     progress=None, progress_every=256) -> MethodOutput:
    """DeepLIFT with the Rescale rule from the zero reference: (a − 0) ⊙ multipliers.

    For networks made of linear operations and element-wise nonlinearities (EfficientNet-Lite,
    ResNet after its stem) it sums exactly to z_c(a) − z_c(0); max-pools and LRN break that.
    """
    reference = jnp.zeros_like(acts)
    multipliers, logit = _rescale_gradient(net, layer, variables, acts, reference, targets)
    logit_reference = _logits(net, layer, variables, reference, targets)
    values = (acts - reference) * multipliers
    error = jnp.abs(jnp.sum(values, axis=(1, 2, 3)) - (logit - logit_reference))
    return MethodOutput(values, logit, reference, logit_reference, error)


METHODS: dict[str, Callable[..., MethodOutput]] = {
    "aumann_shapley": aumann_shapley,
    "integrated_gradients": integrated_gradients,
    "saliency": saliency,
    "grad_x_activation": grad_x_activation,
    "smoothgrad": smoothgrad,
    "grad_cam": grad_cam,
    "deeplift_rescale": deeplift_rescale,
}
ALIASES = {
    "as": "aumann_shapley",
    "ashapley": "aumann_shapley",
    "ig": "integrated_gradients",
    "intgrad": "integrated_gradients",
    "gradxinput": "grad_x_activation",
    "grad_x_input": "grad_x_activation",
    "gradcam": "grad_cam",
    "deeplift": "deeplift_rescale",
    "deepliftrescale": "deeplift_rescale",
}
