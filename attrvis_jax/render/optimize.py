"""The visualization optimizer (ALGORITHM §5–8): `visualize(model, attribution, config, key)`.

Per step and per seed:

    X, M  = σ(decorrelate(irfft2(P)[..., :3])), σ(irfft2(P)[..., 3])     (param.py)
    Xc    = perturbation(X, M, noise key)                               (perturb.py)
    Y     = transform(concat(Xc, M), transform key)                     (transforms.py)
    loss  = −2·mean_ij Σ_k f^l(Y_rgb)·W + λ(t)·[(mean Y_M − β)² + (mean M − β)²]    (objective.py)

W and λ0 come from `render_inputs`: by default W = sign(a − b)·R⁺ / L(photo) and λ0 = area_weight
(the relative balance), with the mask channel Y_M weighted by 1/visibility (the unbiased area
term); `fidelity="code"` gives W = R⁺ and λ0 = 20·ΣR_f with the plain transformed mask.
    P    ← Adam(lr(t)) step

Seeds are a vmapped axis; attribution groups are the network's batch inside each seed (they share a
transform draw, as in the code, but get their own noise). Steps run as one `lax.scan` per chunk of
`chunk_size` updates inside a jitted call whose carry (parameters, Adam state, per-seed status) is
donated; between chunks the progress callback runs and snapshots are taken. `engine="loop"` runs a
Python loop of a jitted single step instead (same arithmetic; measured in benchmarks/render.py).

Keys: seed i uses fold_in(key, i) — so a seed's result does not depend on which other seeds run with
it — then fold_in(seed, 0) for the init, fold_in(seed, 1) for the Gaussian background and
fold_in(fold_in(seed, 2), t) at step t, split into the transform key and the noise key (which is split
per pyramid level). Same key and config → bit-identical results; chunking does not change them.

A seed whose loss or gradient is not finite stops: its parameters keep their last finite values, it
is reported in `RenderResult.finite` / `stopped_at`, and it never contributes a NaN image.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attrvis_jax.attribution.postprocess import LAMBDA_SCALE_CODE as LAMBDA_SCALE  # the code's 20 in 20·ΣR_f
from attrvis_jax.config import CODE_GRAY, RenderConfig
from attrvis_jax.errors import AttrvisError
from attrvis_jax.metrics import directed_weights
from attrvis_jax.render import objective
from attrvis_jax.render.param import image_and_mask, init_spectrum, mask_bias
from attrvis_jax.render.perturb import gaussian_background, make_perturbation
from attrvis_jax.render.transforms import TRANSFORMS, apply_transform, area_weights, sample_params

Progress = Callable[[int, int], None]


# ---- results -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class RenderResult:
    """What `visualize` returns. Axes: S seeds, then G groups only if the attribution had groups.

    images: X (S, [G,] H, W, 3) and masks: M (S, [G,] H, W), both in [0, 1], untransformed.
    composed: background·(1 − M) + X·M (the published picture; background 0.55, paper 0.5).
    loss: (S,) the loss of each seed's last update; mask_area: mean M, (S, [G]).
    beta, lambda0: ([G]) as used; reference: L(photo) the relative balance divided by ([G]; NaN
    on the code balance). finite: (S,) False for a seed stopped by a non-finite loss or
    gradient, at update `stopped_at` (−1: ran to the end). loss_history: (S, steps), NaN after a stop.
    snapshots: {step: {"images", "masks", "composed"}} after that many updates.
    timings: compile_s (first compile in this call, 0 if cached) and run_s (all chunks).
    """

    images: np.ndarray
    masks: np.ndarray
    composed: np.ndarray
    loss: np.ndarray
    mask_area: np.ndarray
    beta: np.ndarray
    lambda0: np.ndarray
    reference: np.ndarray
    finite: np.ndarray
    stopped_at: np.ndarray
    loss_history: np.ndarray
    snapshots: dict
    config: RenderConfig
    layer: str | None
    seed_ids: tuple[int, ...]
    grouped: bool
    timings: dict

    @property
    def seeds(self) -> int:
        return len(self.seed_ids)

    def summary(self) -> str:
        area = self.mask_area.reshape(self.seeds, -1).mean(axis=1)
        beta = float(np.mean(self.beta))
        stopped = int(np.sum(~self.finite))
        return (f"{self.config.perturbation} at {self.layer}: {self.seeds} seeds x {self.config.steps} steps, "
                f"mask area {area.mean():.3f} (beta {beta:.3f}), final loss {np.nanmean(self.loss):.4g}"
                + (f", {stopped} seed(s) stopped on a non-finite loss" if stopped else ""))


def composite(images, masks, background: float = CODE_GRAY):
    """background·(1 − M) + X·M with masks (..., H, W) or (..., H, W, 1)."""
    m = masks if masks.shape[-1] == 1 else masks[..., None]
    return background * (1.0 - m) + images * m


# ---- inputs --------------------------------------------------------------------------------------
def _field(obj, *names):
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return None


def _is_attribution(obj) -> bool:
    return _field(obj, "r_plus", "positive") is not None


class RenderInputs(NamedTuple):
    """What the compiled objective gets per attribution group (G groups): the neuron weights W
    (G, H, W, K), β (G,) and λ0 (G,); plus, for the record, the photo's score L(photo) (G,) that
    the relative balance divides by (NaN where not used), whether the input had groups, its layer."""

    weights: np.ndarray
    beta: np.ndarray
    lambda0: np.ndarray
    reference: np.ndarray
    grouped: bool
    layer: str | None


def _unpack(attribution, fields: dict) -> tuple[dict, bool, str | None]:
    """The arrays an attribution (object, mapping, tuple or list of them) carries; `fields` win."""
    names = ("r_plus", "beta", "lambda0", "activations", "baseline", "reference")
    if isinstance(attribution, (list, tuple)) and attribution and all(_is_attribution(a) for a in attribution):
        parts = [_unpack(a, {})[0] for a in attribution]
        layers = {_field(a, "layer") for a in attribution}
        found = {}
        for name in names:
            given = [p[name] for p in parts if p[name] is not None]
            if len(given) == len(parts):
                found[name] = np.stack([np.asarray(g, np.float32) for g in given])
            elif given:
                raise AttrvisError(f"some groups have {name} and some do not: give it for all or none")
            else:
                found[name] = None
        found.update({k: v for k, v in fields.items() if v is not None})
        return found, True, layers.pop() if len(layers) == 1 else None
    layer = None
    if attribution is None:
        found = {name: None for name in names}
    elif isinstance(attribution, (list, tuple)) and not _is_attribution(attribution):
        if len(attribution) not in (2, 3):
            raise AttrvisError("a tuple attribution must be (r_plus, beta) or (r_plus, beta, lambda0)")
        arrays = list(attribution) + [None] * (3 - len(attribution))
        found = dict(zip(names, arrays + [None] * 3))
    else:
        found = {name: _field(attribution, *((name, "positive") if name == "r_plus" else (name,))) for name in names}
        layer = _field(attribution, "layer")
    found.update({k: v for k, v in fields.items() if v is not None})
    return found, None, layer


def render_inputs(attribution=None, config: RenderConfig | None = None, *, r_plus=None, beta=None,
                  lambda0=None, activations=None, baseline=None, reference=None) -> RenderInputs:
    """From an attribution to what the objective optimizes toward (`RenderConfig` decides how).

    attribution: anything with attributes (or mapping keys) `positive` or `r_plus` (R⁺, (H, W, K)
    or (G, H, W, K)), `beta`, and as available `lambda0`, `activations` (a, the photo's layer
    activations), `baseline` (b) and `layer` — e.g. `attrvis_jax.attribute`'s result; a list of
    such objects (one per group); or a tuple (r_plus, beta[, lambda0]). Keyword arrays override.

    weights: direction "signed" (default): W = sign(a − b)·R⁺ (b = 0 when there is no baseline),
        each neuron pushed the way it moved from the baseline to the photo; without `activations`,
        R⁺ is taken as it is (a post-ReLU layer). "positive" (code): W = R⁺.
    balance "relative" (default): W is divided by the photo's own score L(photo) = mean_ij Σ_k a·W
        (or `reference` when given), so the attribution term is a pure number and λ0 = area_weight;
        it needs `activations` or `reference`. "code": λ0 = the attribution's 20·ΣR_f (`lambda0`,
        required; non-positive values fall back to 20·ΣR⁺ as ALGORITHM §8 says).
    The no-mask ablation has no area term: it needs neither.
    """
    config = config or RenderConfig()
    found, grouped, layer = _unpack(attribution, {"r_plus": r_plus, "beta": beta, "lambda0": lambda0,
                                                   "activations": activations, "baseline": baseline,
                                                   "reference": reference})
    if found["r_plus"] is None or found["beta"] is None:
        raise AttrvisError("visualize needs R+ (r_plus / positive) and beta: pass an attribution result or arrays")
    r = np.asarray(found["r_plus"], np.float32)
    if r.ndim not in (3, 4):
        raise AttrvisError(f"R+ must be (H, W, K) or (groups, H, W, K), got shape {r.shape}")
    grouped = (r.ndim == 4) if grouped is None else grouped
    r = r if r.ndim == 4 else r[None]
    groups = r.shape[0]
    if not np.all(np.isfinite(r)):
        raise AttrvisError("R+ contains NaN or infinite values")
    if np.any(r < 0):
        raise AttrvisError("R+ has negative entries: pass the ReLU'd, channel-filtered attribution (r_plus)")
    totals = r.sum(axis=(1, 2, 3))
    if np.any(totals <= 0):
        raise AttrvisError(f"R+ is all zero for group(s) {np.flatnonzero(totals <= 0).tolist()}: nothing to visualize")
    b = np.broadcast_to(np.asarray(found["beta"], np.float32).reshape(-1), (groups,)).copy()
    if not np.all((b > 0) & (b <= 1)):
        raise AttrvisError(f"beta (the mask's target area) must be in (0, 1], got {b.tolist()}")

    acts = None
    if found["activations"] is not None:
        acts = np.broadcast_to(np.asarray(found["activations"], np.float32), r.shape)
    weights = r
    if config.direction_mode == "signed" and acts is not None:
        weights = directed_weights(r, acts, found["baseline"])

    ref = np.full((groups,), np.nan, np.float32)
    if config.balance_mode == "relative" and config.has_mask:
        if found["reference"] is not None:
            ref = np.broadcast_to(np.asarray(found["reference"], np.float32).reshape(-1), (groups,)).copy()
        elif acts is not None:
            ref = np.mean(np.sum(acts * weights, axis=-1), axis=(1, 2)).astype(np.float32)
        else:
            raise AttrvisError("the relative balance divides by the photo's own score: pass the attribution "
                               "(with its activations), activations=, or reference=; or use balance='code'")
        if not np.all(np.isfinite(ref) & (ref > 0)):
            raise AttrvisError(f"the photo's own score L(photo) = {ref.tolist()} is not positive: the photo does not "
                               "excite the attributed neurons the way they contributed (direction='positive' on a "
                               "signed layer?)")
        weights = weights / ref[:, None, None, None]
        lam = np.full((groups,), config.area_weight, np.float32)
    elif config.has_mask:
        if found["lambda0"] is None:
            raise AttrvisError("balance='code' uses the attribution's lambda0 = 20·ΣR_f: pass an attribution or "
                               "lambda0=")
        lam = np.broadcast_to(np.asarray(found["lambda0"], np.float32).reshape(-1), (groups,)).copy()
        # ALGORITHM §8: λ0 must be positive; fall back to 20·ΣR⁺ where the signed sum was not.
        lam = np.where(np.isfinite(lam) & (lam > 0), lam, LAMBDA_SCALE * totals)
    else:
        lam = np.zeros((groups,), np.float32)  # no mask, no area term
    return RenderInputs(weights.astype(np.float32), b, lam.astype(np.float32), ref, grouped, layer)


def seed_keys(key: jax.Array, seed_ids: Sequence[int]) -> jax.Array:
    """fold_in(key, i) for each seed id: a seed's stream does not depend on the batch it runs in."""
    if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    if key.ndim != 0:
        raise AttrvisError(f"key must be a single PRNG key, got shape {key.shape}")
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(list(seed_ids), jnp.uint32))


# ---- the compiled engine -------------------------------------------------------------------------
class Engine:
    """Pure step functions for one (network, layer, config, image size); jitted ones are built once."""

    def __init__(self, net, layer: str, config: RenderConfig, size: int, rows: bool = False):
        # rows=False: every seed optimizes against the same attribution `data`; rows=True: `data`
        # has a leading axis like the seeds (one attribution per row: a sweep's batch of items).
        self.net, self.layer, self.config, self.size, self.rows = net, layer, config, size, rows
        self.channels = 4 if config.has_mask else 3
        self.perturb = make_perturbation(config)
        self.transform = TRANSFORMS[config.transform_set]
        # The default area term weights the mask by 1/visibility before the transform (transforms.py).
        self.area_weights = (jnp.asarray(area_weights(self.transform, size))[..., None]
                             if config.has_mask and config.area_mode == "visible" else None)
        self.opt = objective.optimizer(config)
        self._compiled: dict = {}
        self.init = jax.jit(self._init, static_argnums=1)
        self.outputs = jax.jit(jax.vmap(self._outputs, in_axes=(0, 0 if rows else None)))
        self.step = jax.jit(self._all_step, donate_argnums=1)
        self.chunk = jax.jit(self._chunk, donate_argnums=1)

    # -- per seed --
    def _init_seed(self, seed_key, groups: int):
        c, n = self.config, self.size
        k_init, k_bg = jax.random.fold_in(seed_key, 0), jax.random.fold_in(seed_key, 1)
        if c.aligned_groups:  # the code resets the seed per batch item: identical ("aligned") inits
            spectrum = jnp.broadcast_to(init_spectrum(k_init, self.channels, n, n, c.init_sd),
                                        (groups, self.channels, n, n // 2 + 1, 2))
        else:
            spectrum = jax.vmap(lambda k: init_spectrum(k, self.channels, n, n, c.init_sd))(
                jax.random.split(k_init, groups))
        params = {"spectrum": spectrum}
        background = None
        if c.perturbation == "gaussian":
            background = gaussian_background(k_bg, (groups, n, n, 3))
            if c.gaussian_trainable:
                params["background"], background = background, None
        return params, background

    def _init(self, keys, groups: int):
        params, background = jax.vmap(lambda k: self._init_seed(k, groups))(keys)
        s = keys.shape[0]
        carry = {
            "params": params,
            "opt": jax.vmap(self.opt.init)(params),
            "alive": jnp.ones((s,), bool),
            "stopped_at": jnp.full((s,), -1, jnp.int32),
            "loss": jnp.full((s,), jnp.nan, jnp.float32),
        }
        seed_data = {"stream": jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)}
        if background is not None:
            seed_data["background"] = background
        return carry, seed_data

    def _bias(self, beta):
        """Pre-sigmoid mask offset per group: logit(β) when the mask starts at its target area."""
        return mask_bias(beta) if self.config.mask_start_mode == "beta" else jnp.zeros_like(beta)

    def _outputs(self, params, data):
        """X (G, H, W, 3) and M (G, H, W) of one seed; `data` is its render data (β sets the mask offset)."""
        x, m = image_and_mask(params["spectrum"], self.size, self.size, self.config.decay_power,
                              self._bias(data["beta"]), self.config.mask_spectrum_decay)
        return x, m[..., 0]

    def seed_loss(self, params, variables, background, step_key, data, t):
        """The loss of one seed at step t (a pure function of its parameters)."""
        c, n = self.config, self.size
        k_transform, k_noise = jax.random.split(step_key)
        x, m = image_and_mask(params["spectrum"], n, n, c.decay_power, self._bias(data["beta"]), c.mask_spectrum_decay)
        xc = self.perturb(x, m, k_noise, params.get("background", background))
        seen = m if self.area_weights is None else m * self.area_weights  # what the m_crop term counts
        y = jnp.concatenate([xc, seen], axis=-1) if c.has_mask else xc
        y = apply_transform(y, sample_params(k_transform, self.transform), self.transform)
        acts = self.net.apply(variables, y[..., :3], stop=self.layer)  # nothing past the layer runs
        m_crop = jnp.mean(y[..., 3], axis=(-2, -1)) if c.has_mask else None
        m_full = jnp.mean(m[..., 0], axis=(-2, -1))
        return objective.loss(acts, data["weights"], m_crop, m_full, data["beta"], data["lambda0"], t, c)

    def _seed_step(self, variables, carry, seed_data, data, t):
        params, opt_state, alive = carry["params"], carry["opt"], carry["alive"]
        step_key = jax.random.fold_in(seed_data["stream"], t)
        (value, _), grads = jax.value_and_grad(self.seed_loss, has_aux=True)(
            params, variables, seed_data.get("background"), step_key, data, t)
        updates, new_opt = self.opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(value) & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        ok = alive & finite
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        carry = {
            "params": keep(new_params, params),
            "opt": keep(new_opt, opt_state),
            "alive": ok,
            "stopped_at": jnp.where(alive & ~finite, t, carry["stopped_at"]),
            "loss": jnp.where(ok, value, carry["loss"]),
        }
        return carry, jnp.where(alive, value, jnp.nan)

    # -- all seeds --
    def _all_step(self, variables, carry, seed_data, data, t):
        data_axis = 0 if self.rows else None
        return jax.vmap(self._seed_step, in_axes=(None, 0, 0, data_axis, None))(variables, carry, seed_data, data, t)

    def _chunk(self, variables, carry, seed_data, data, t0, t_stop):
        """chunk_size updates t0, t0+1, … as one scan; updates at t ≥ t_stop are skipped (so one
        compiled chunk serves every boundary: snapshots, the last partial chunk)."""

        def body(carry, i):
            t = t0 + i
            skip = lambda carry: (carry, jnp.full(carry["loss"].shape, jnp.nan, jnp.float32))
            return jax.lax.cond(t < t_stop, lambda c: self._all_step(variables, c, seed_data, data, t), skip, carry)

        return jax.lax.scan(body, carry, jnp.arange(self.config.chunk_size, dtype=jnp.int32))

    # -- ahead-of-time compilation, cached by argument shapes --
    def compiled(self, name: str, *args):
        """The compiled executable of `name` for these argument shapes, and the seconds compiling took."""
        leaves, tree = jax.tree_util.tree_flatten(args)
        sig = (name, tree, tuple((tuple(getattr(a, "shape", ())), str(getattr(a, "dtype", type(a))),
                                  str(getattr(a, "sharding", ""))) for a in leaves))
        if sig in self._compiled:
            return self._compiled[sig], 0.0
        t0 = time.perf_counter()
        exe = getattr(self, name).lower(*args).compile()
        self._compiled[sig] = exe
        return exe, time.perf_counter() - t0


@functools.lru_cache(maxsize=8)
def engine(net, layer: str, config: RenderConfig, size: int, rows: bool = False) -> Engine:
    """The engine for these statics (seeds and snapshots do not change the compiled step)."""
    return Engine(net, layer, config, size, rows)


def run_steps(eng: Engine, variables, carry, seed_data, data, *, steps: int, snapshot_steps=(),
              progress: Progress | None = None):
    """Run `steps` updates in compiled chunks; returns (carry, loss history (S, steps), snapshots
    {t: (X, M)}, compile_s, run_s). Inputs may be sharded arrays: the compiled chunk follows them."""
    config = eng.config
    marks = sorted({s for s in snapshot_steps if 0 < s < steps} | {steps})
    snapshots, history = {}, []
    compile_s, t_start, t = 0.0, time.perf_counter(), 0
    while t < steps:
        stop = min(t + config.chunk_size, next(m for m in marks if m > t))
        if config.engine == "scan":
            t0, ts = jnp.int32(t), jnp.int32(stop)
            exe, dt = eng.compiled("chunk", variables, carry, seed_data, data, t0, ts)
            compile_s += dt
            carry, losses = exe(variables, carry, seed_data, data, t0, ts)
            history.append(losses[: stop - t])
        else:
            for tt in range(t, stop):
                exe, dt = eng.compiled("step", variables, carry, seed_data, data, jnp.int32(tt))
                compile_s += dt
                carry, losses = exe(variables, carry, seed_data, data, jnp.int32(tt))
                history.append(losses[None])
        t = stop
        if t in snapshot_steps:
            snapshots[t] = eng.outputs(carry["params"], data)
        if progress is not None:
            jax.block_until_ready(carry["loss"])
            progress(t, steps)
    jax.block_until_ready(carry)
    run_s = time.perf_counter() - t_start - compile_s
    history = jnp.concatenate([jnp.asarray(h) for h in history], axis=0).T
    return carry, history, snapshots, compile_s, run_s


# ---- the driver ----------------------------------------------------------------------------------
def visualize(
    model,
    attribution=None,
    config: RenderConfig | None = None,
    key: jax.Array | None = None,
    *,
    layer: str | None = None,
    r_plus=None,
    beta=None,
    lambda0=None,
    activations=None,
    baseline=None,
    reference=None,
    seed_ids: Sequence[int] | None = None,
    variables: Any = None,
    progress: Progress | None = None,
    **overrides,
) -> RenderResult:
    """Optimize images and masks whose layer-`layer` response follows the attribution R⁺.

    model: an `attrvis_jax.Model` (only `net`, `variables`, `input_size`, `resolve_layer` and
        `layer_shapes` are used). attribution: see `render_inputs` — an `attribute` result (its
        `positive`/`r_plus`, `beta`, `lambda0`, `activations`, `baseline`, `layer`), a list of them
        (groups), or (r_plus, beta, lambda0) arrays; the keyword arrays override.
    config / overrides: a `RenderConfig` and/or its fields by name (`steps=256`).
    key: PRNG key (default key 0); seed i uses fold_in(key, i). seed_ids: which seeds to run
        (default range(config.seeds)); running [3] alone gives seed 3 of a batched run.
    progress: called as progress(done, total) after every chunk.
    """
    config = config or RenderConfig()
    config = config.replace(**overrides) if overrides else config
    inputs = render_inputs(attribution, config, r_plus=r_plus, beta=beta, lambda0=lambda0,
                           activations=activations, baseline=baseline, reference=reference)
    r, b, lam, grouped = inputs.weights, inputs.beta, inputs.lambda0, inputs.grouped
    layer = layer or inputs.layer
    if layer is None:
        raise AttrvisError("which layer? pass layer=... (the attribution does not name one)")
    layer = model.resolve_layer(layer)
    size = config.image_size or model.input_size
    expected = tuple(model.layer_shapes(size)[layer])
    if tuple(r.shape[1:]) != expected:
        raise AttrvisError(f"R+ has shape {r.shape[1:]} but {layer} is {expected} for {size}x{size} images: "
                           "was the attribution computed at another layer or image size?")
    variables = model.variables if variables is None else variables
    seed_ids = tuple(range(config.seeds)) if seed_ids is None else tuple(int(i) for i in seed_ids)
    if not seed_ids:
        raise AttrvisError("no seeds to run")
    key = jax.random.key(0) if key is None else key

    eng = engine(model.net, layer, dataclasses.replace(config, seeds=1, snapshot_steps=()), size)
    groups = r.shape[0]
    keys = seed_keys(key, seed_ids)
    carry, seed_data = eng.init(keys, groups)
    data = {"weights": jnp.asarray(r), "beta": jnp.asarray(b), "lambda0": jnp.asarray(lam)}

    steps = config.steps
    carry, history, raw_snapshots, compile_s, run_s = run_steps(
        eng, variables, carry, seed_data, data, steps=steps, snapshot_steps=config.snapshot_steps, progress=progress)
    snapshots = {t: _pack(x, m, grouped, config.background) for t, (x, m) in raw_snapshots.items()}
    x, m = eng.outputs(carry["params"], data)
    final = _pack(x, m, grouped, config.background)
    finite = np.asarray(carry["alive"])
    if not finite.all():
        bad = [seed_ids[i] for i in np.flatnonzero(~finite)]
        warnings.warn(f"seed(s) {bad} stopped on a non-finite loss or gradient; their images are the last "
                      "finite ones (see RenderResult.finite / stopped_at)", stacklevel=2)
    area = final["masks"].mean(axis=(-2, -1))
    unbatch = (lambda a: a) if grouped else (lambda a: a[0])
    return RenderResult(
        images=final["images"], masks=final["masks"], composed=final["composed"],
        loss=np.asarray(carry["loss"]), mask_area=area,
        beta=unbatch(b), lambda0=unbatch(lam), reference=unbatch(inputs.reference), finite=finite, stopped_at=np.asarray(carry["stopped_at"]),
        loss_history=np.asarray(history),
        snapshots=snapshots, config=config, layer=layer, seed_ids=seed_ids, grouped=grouped,
        timings={"compile_s": compile_s, "run_s": run_s, "steps": steps, "seeds": len(seed_ids)},
    )


def _pack(x, m, grouped: bool, background: float) -> dict:
    x, m = np.asarray(x), np.asarray(m)
    if not grouped:
        x, m = x[:, 0], m[:, 0]
    return {"images": x, "masks": m, "composed": composite(x, m, background)}
