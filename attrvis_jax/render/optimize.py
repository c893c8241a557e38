"""The render kernel: `visualize_rows(model, objective, config, keys)` (docs/method.md,
'Parameterization' to 'The loss').

One compiled optimizer that `visualize`, the sweep, the ablation and the figures all run. It
takes an objective (objectives.py: the method's attribution objective with its mask terms, or a
feature objective) and one PRNG key per row; a row is one seed of one objective, and rows split
over a device mesh when one is given.

Per step and per seed:

    X, M  = σ(decorrelate(irfft2(P)[..., :3])), σ(irfft2(P)[..., 3])     (param.py)
    Xc    = perturbation(X, M, noise key)                               (perturb.py)
    Y     = transform(concat(Xc, M), transform key)                     (transforms.py)
    loss  = −2·mean_ij Σ_k f^l(Y_rgb)·W + λ(t)·[(mean Y_M − β)² + (mean M − β)²]    (loss.py)

W, β and λ0 come from the objective (objectives.py): for the method by default
W = sign(a − b)·R⁺ / L(photo) and λ0 = area_weight (the relative balance), with the mask channel Y_M weighted by 1/visibility (the unbiased area
term); `fidelity="code"` gives W = R⁺ and λ0 = 20·ΣR_f with the plain transformed mask.
    P    ← Adam(lr(t)) step

Seeds are a vmapped axis, run in groups of `RunOptions.seed_batch` (a `lax.map` over groups of
vmapped seeds; on a CPU a small batch costs less per seed, `auto_seed_batch`); attribution groups
are the network's batch inside each seed (they share a
transform draw, as in the code, but get their own noise). Steps run as one `lax.scan` per chunk of
`RunOptions.chunk_size` updates inside a jitted call whose carry (parameters, Adam state, per-seed status) is
donated; between chunks the progress callback runs and snapshots are taken. `RunOptions(engine=
"loop")` runs a Python loop of a jitted single step instead (same arithmetic; benchmarks/archive/README.md).

Keys: `visualize` gives seed i the row key fold_in(key, i) (`seed_keys`), so a seed's result does
not depend on which other seeds run with it (to the bit in groups of the same size); the kernel uses fold_in(row, 0) for the init,
fold_in(row, 1) for the Gaussian background and fold_in(fold_in(row, 2), t) at step t, split into the transform key and the noise key (which is split
per pyramid level). Same key and config → bit-identical results; chunking does not change them.

A seed whose loss or gradient is not finite stops: its parameters keep their last finite values, it
is reported in `finite` / `stopped_at`, and it never contributes a NaN image.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from attrvis_jax import _deprecated
from attrvis_jax.config import CODE_GRAY, RenderConfig, RunOptions
from attrvis_jax.errors import AttrvisError
from attrvis_jax.devices import shard
from attrvis_jax.memory import activation_bytes
from attrvis_jax.render import loss as loss_mod
from attrvis_jax.render.objectives import ALPHA, INPUT, Linear, Objective, area_terms, modes
from attrvis_jax.render.param import init_params, mask_bias, picture
from attrvis_jax.prng import as_key
from attrvis_jax.render.redirect import redirected
from attrvis_jax.render.perturb import gaussian_background, make_perturbation
from attrvis_jax.render.transforms import TRANSFORMS, apply_transform, area_weights, sample_params

Progress = Callable[[int, int], None]


# ---- pieces ---------------------------------------------------------------------------------------
def composite(images, masks, background: float = CODE_GRAY):
    """background·(1 − M) + X·M with masks (..., H, W) or (..., H, W, 1). Evaluated op by op (numpy,
    or jax outside jit) the result is the same bits; fused inside a jit it may not be (an FMA)."""
    m = masks if masks.shape[-1] == 1 else masks[..., None]
    return background * (1.0 - m) + images * m



def seed_keys(key: jax.Array, seed_ids: Sequence[int]) -> jax.Array:
    """fold_in(key, i) for each seed id: a seed's stream does not depend on the batch it runs in.
    `key`: anything `prng.as_key` takes (a key, raw key data, an int seed)."""
    key = as_key(key)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(list(seed_ids), jnp.uint32))


# ---- the compiled engine -------------------------------------------------------------------------
class Engine:
    """Pure step functions for one (network, layer, config, image size); jitted ones are built once."""

    def __init__(self, net, layer: str | None, config: RenderConfig, size: int, rows: bool = False,
                 chunk_size: int = 32, taps: tuple | None = None, seed_batch: int | None = None,
                 devices: int = 1):
        # rows=False: every seed optimizes against the same objective `data`; rows=True: `data`
        # has a leading axis like the seeds (one objective per row: a sweep's batch of items).
        # taps=None: the fast path, a linear read-out W of `layer` per seed (data: weights, beta,
        # lambda0); taps = ((name, layer), ...): the general path, data["objective"] a function of
        # those layers' activations (under its own names) for every picture of the step at once,
        # the network run once up to `layer`, the deepest of them (None: the pictures alone).
        # seed_batch: on the fast path, the rows of a step run in groups of this many per device
        # (`lax.map` over the groups, vmapped inside), the rows split over `devices` devices; None:
        # all rows at once.
        self.net, self.layer, self.config, self.size, self.rows = net, layer, config, size, rows
        self.seed_batch, self.devices = seed_batch, devices
        self.taps = taps
        self.chunk_size = chunk_size
        self.perturb = make_perturbation(config)
        self.transform = TRANSFORMS[config.transform_set]
        # The default area term weights the mask by 1/visibility before the transform (transforms.py).
        self.area_weights = (jnp.asarray(area_weights(self.transform, size))[..., None]
                             if config.has_mask and config.area_mode == "visible" else None)
        self.opt = loss_mod.optimizer(config)
        self._compiled: dict = {}
        self.init = jax.jit(self._init, static_argnums=1)
        self.outputs = jax.jit(jax.vmap(self._outputs, in_axes=(0, 0 if rows else None)))
        self.step = jax.jit(self._all_step, donate_argnums=1)
        self.chunk = jax.jit(self._chunk, donate_argnums=1)

    # -- per seed --
    def _init_seed(self, seed_key, groups: int):
        c, n = self.config, self.size
        k_init, k_bg = jax.random.fold_in(seed_key, 0), jax.random.fold_in(seed_key, 1)
        one = lambda k: init_params(k, c.parameterization, n, c.has_mask or c.alpha, c.init_sd)  # noqa: E731
        if c.aligned_groups:  # the code resets the seed per batch item: identical ("aligned") inits
            params = jax.tree_util.tree_map(lambda p: jnp.broadcast_to(p, (groups, *p.shape)), one(k_init))
        else:
            params = jax.vmap(one)(jax.random.split(k_init, groups))
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
        if self.config.alpha or self.config.mask_start_mode != "beta":  # alpha has no β: it starts at 0.5
            return jnp.zeros_like(beta)
        return mask_bias(beta)

    def _outputs(self, params, data):
        """X (G, H, W, 3) and M (G, H, W) of one seed; `data` is its render data (β sets the mask offset)."""
        x, m = picture(params, self.size, self.config.decay_power, self._bias(data["beta"]),
                       self.config.mask_spectrum_decay)
        return x, m[..., 0]

    def seed_loss(self, params, variables, background, step_key, data, t):
        """The loss of one seed at step t (a pure function of its parameters)."""
        c, n = self.config, self.size
        k_transform, k_noise = jax.random.split(step_key)
        x, m = picture(params, n, c.decay_power, self._bias(data["beta"]), c.mask_spectrum_decay)
        xc = self.perturb(x, m, k_noise, params.get("background", background))
        seen = m if self.area_weights is None else m * self.area_weights  # what the m_crop term counts
        y = jnp.concatenate([xc, seen], axis=-1) if c.has_mask else xc
        y = apply_transform(y, sample_params(k_transform, self.transform), self.transform)
        acts = self._features(variables, y[..., :3], t)
        m_crop = jnp.mean(y[..., 3], axis=(-2, -1)) if c.has_mask else None
        m_full = jnp.mean(m[..., 0], axis=(-2, -1))
        return loss_mod.loss(acts, data["weights"], m_crop, m_full, data["beta"], data["lambda0"], t, c)

    def _compute_variables(self, variables):
        """The network's variables in the compute dtype (unchanged for float32, and when already cast)."""
        dtype = jnp.dtype(self.config.compute_dtype)
        return jax.tree_util.tree_map(
            lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, variables)

    def _features(self, variables, x, t=None):
        """The layer's activations of images x (float32) at step t (None: as after the redirected
        steps), the network run in the compute dtype; nothing past the layer runs."""
        return self._network(variables, x, t, lambda v, x: self.net.apply(v, x, stop=self.layer)).astype(jnp.float32)

    def _network(self, variables, x, t, run):
        """run(variables, x) in the compute dtype, its ReLUs redirected before relu_redirect_steps."""
        variables = self._compute_variables(variables)  # a no-op on variables the chunk cast already
        x = x.astype(self.config.compute_dtype)
        if not self.config.relu_redirect_steps or t is None:
            return run(variables, x)
        return jax.lax.cond(t < self.config.relu_redirect_steps, redirected(run), run, variables, x)

    def _seed_step(self, variables, carry, seed_data, data, t):
        step_key = jax.random.fold_in(seed_data["stream"], t)
        (value, _), grads = jax.value_and_grad(self.seed_loss, has_aux=True)(
            carry["params"], variables, seed_data.get("background"), step_key, data, t)
        return self._update(carry, value, grads, t)

    def _update(self, carry, value, grads, t):
        """One seed's Adam update from its loss and gradient; a non-finite one stops the seed."""
        params, opt_state, alive = carry["params"], carry["opt"], carry["alive"]
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
        if self.taps is not None:
            return self._joint_step(variables, carry, seed_data, data, t)

        def rows(carry, seed_data, data):
            data_axis = 0 if self.rows else None
            return jax.vmap(self._seed_step, in_axes=(None, 0, 0, data_axis, None))(variables, carry, seed_data, data, t)

        n = carry["alive"].shape[0]
        if self.seed_batch is None or self.seed_batch * self.devices >= n:
            return rows(carry, seed_data, data)
        # Groups of seed_batch rows per device, one after another (a loop: the network's batch,
        # and what it keeps for the backward pass, is one group's). Each group takes the same
        # number of rows from every device's share, so the devices stay busy and nothing moves.
        per_row = (carry, seed_data) + ((data,) if self.rows else ())
        full, rest = split_groups(per_row, self.devices, self.seed_batch)

        def group(args):
            return rows(args[0], args[1], args[2] if self.rows else data)

        out_full = jax.lax.map(group, full)
        out_rest = None if rest is None else group(rest)
        return join_groups(out_full, out_rest, self.devices)

    # -- the general path: one objective over every picture of the step --
    def _picture(self, params, seed_data, t):
        """One seed's pictures X (G, H, W, 3), their alpha (G, H, W, 1; ones without one) and what
        the network sees of them at step t (with alpha: X·α over fresh uniform noise)."""
        c, n = self.config, self.size
        k_transform, k_noise = jax.random.split(jax.random.fold_in(seed_data["stream"], t))
        x, m = picture(params, n, c.decay_power, 0.0, c.mask_spectrum_decay)
        if c.alpha:
            xc = x * m + jax.random.uniform(k_noise, x.shape) * (1.0 - m)
        else:
            xc = self.perturb(x, m, k_noise, params.get("background", seed_data.get("background")))
        return x, m, apply_transform(xc, sample_params(k_transform, self.transform), self.transform)

    def _tapped(self, variables, y, t):
        """{name: activations} of the tapped layers for pictures y (B, H, W, 3) at step t, from one
        forward pass."""
        if self.layer is None:
            return {}
        layers = tuple(layer for _, layer in self.taps)
        acts = self._network(variables, y, t, lambda v, x: self.net.apply(v, x, stop=self.layer, collect=layers)[1])
        return {name: acts[layer].astype(jnp.float32) for name, layer in self.taps}

    def _joint_step(self, variables, carry, seed_data, data, t):
        objective = data["objective"]

        def total(params):
            x, m, y = jax.vmap(lambda p, s: self._picture(p, s, t))(params, seed_data)  # (S, G, H, W, 3)
            s, g = x.shape[:2]
            acts = self._tapped(variables, y.reshape(s * g, *y.shape[2:]), t)
            acts[INPUT] = x.reshape(s * g, *x.shape[2:])
            acts[ALPHA] = m.reshape(s * g, *m.shape[2:])
            per_seed = -jnp.sum(objective(acts).reshape(s, g), axis=1)
            return jnp.sum(per_seed), per_seed

        (_, values), grads = jax.value_and_grad(total, has_aux=True)(carry["params"])
        return jax.vmap(self._update, in_axes=(0, 0, 0, None))(carry, values, grads, t)

    def _chunk(self, variables, carry, seed_data, data, t0, t_stop):
        """chunk_size updates t0, t0+1, … as one scan; updates at t ≥ t_stop are skipped (so one
        compiled chunk serves every boundary: snapshots, the last partial chunk)."""
        variables = self._compute_variables(variables)  # once per chunk, not in every step

        def body(carry, i):
            t = t0 + i
            skip = lambda carry: (carry, jnp.full(carry["loss"].shape, jnp.nan, jnp.float32))
            return jax.lax.cond(t < t_stop, lambda c: self._all_step(variables, c, seed_data, data, t), skip, carry)

        return jax.lax.scan(body, carry, jnp.arange(self.chunk_size, dtype=jnp.int32))

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


def engine(net, layer: str | None, config: RenderConfig, size: int, rows: bool = False, chunk_size: int = 32,
           taps: tuple | None = None, seed_batch: int | None = None, devices: int = 1) -> Engine:
    """The engine for these statics (the seeds' count is a shape: each count compiles once). One
    engine per distinct value, however the arguments are passed."""
    return _engine(net, layer, config, int(size), bool(rows), int(chunk_size), None if taps is None else tuple(taps),
                   None if seed_batch is None else int(seed_batch), int(devices))


@functools.lru_cache(maxsize=8)
def _engine(net, layer: str | None, config: RenderConfig, size: int, rows: bool, chunk_size: int,
            taps: tuple | None, seed_batch: int | None, devices: int) -> Engine:
    return Engine(net, layer, config, size, rows, chunk_size, taps, seed_batch, devices)


def clear_caches() -> None:
    """Forget the cached engines and their compiled programs (the next render traces and compiles
    again: what a benchmark does to time a compilation, or to see a library change it patched in)."""
    _engine.cache_clear()
    _SEED_BYTES.clear()


# Seeds per group on a CPU: as many as keep one group's activations (memory.activation_bytes, the
# convolution outputs of one image up to the layer) under this many bytes. Measured on a 2-core
# Xeon (AVX-512), 24 or 25 seeds, the step's CPU seconds per seed by group size
# (benchmarks/README.md, "Seeds"): InceptionV1 at 224² (11 MiB a seed) best at 1–2 seeds a group,
# at 112² (2.8 MiB) at 2–4, EfficientNet-Lite0 at 224² (16 MiB) at 1–2; all seeds at once cost
# 15–25 % more per seed. That was with about one core free; on an idle machine ("The rule on a quiet
# machine") two seeds a group beat one by 1.16× for both networks at 224², which this byte limit
# cannot say for both (two Lite0 seeds are 32.8 MiB): the rule is due to be restated in seeds.
CPU_GROUP_BYTES = 16 * 2**20
_SEED_BYTES: dict = {}


def auto_seed_batch(model, layer: str, size: int, rows: int, platform: str | None = None) -> int | None:
    """The seeds per group `visualize_rows` uses when `RunOptions.seed_batch` is None, for `rows`
    seeds per device: on a CPU the largest divisor of `rows` whose activations fit CPU_GROUP_BYTES
    (at least 1), None (all at once) when all fit, and on other platforms (GPUs, TPUs: not yet
    measured; their throughput grows with the batch) always None."""
    platform = platform or jax.default_backend()
    if platform != "cpu" or rows <= 1:
        return None
    key = (model.net, layer, size)
    if key not in _SEED_BYTES:
        _SEED_BYTES[key] = max(1, activation_bytes(model, layer, size))
    most = max(1, CPU_GROUP_BYTES // _SEED_BYTES[key])
    if most >= rows:
        return None
    return max(d for d in range(1, most + 1) if rows % d == 0)


# ---- seeds in groups ------------------------------------------------------------------------------
# The rows of a step as `lax.map` over groups: on XLA:CPU a seed costs less in a small batch than in
# a large one (the activations of a large batch outgrow the caches, and the memory-bound ops of the
# backward pass slow down per seed; docs/performance.md). Row r of device d's share (rows split in
# `devices` equal contiguous shares, as a mesh shards them) goes to group r // g, so every group
# holds g rows of each device's share; a last, smaller group takes the remainder.
def split_groups(tree, devices: int, g: int):
    """(full, rest): every leaf (R, ...) as (R // (devices·g), devices·g, ...) full groups, and the
    remainder (devices·(R/devices mod g), ...) or None."""
    def full(x):
        share = x.shape[0] // devices
        n = share // g
        x = x.reshape(devices, share, *x.shape[1:])[:, : n * g]
        x = x.reshape(devices, n, g, *x.shape[2:])
        return jnp.swapaxes(x, 0, 1).reshape(n, devices * g, *x.shape[3:])

    def rest(x):
        share = x.shape[0] // devices
        x = x.reshape(devices, share, *x.shape[1:])[:, (share // g) * g:]
        return x.reshape(-1, *x.shape[2:])

    leaves = jax.tree_util.tree_leaves(tree)
    share = leaves[0].shape[0] // devices
    return (jax.tree_util.tree_map(full, tree),
            jax.tree_util.tree_map(rest, tree) if share % g else None)


def join_groups(full, rest, devices: int):
    """The inverse of `split_groups`: leaves (R, ...) in the original row order."""
    def join(x, r=None):
        n, width = x.shape[:2]
        g = width // devices
        x = jnp.swapaxes(x.reshape(n, devices, g, *x.shape[2:]), 0, 1).reshape(devices, n * g, *x.shape[2:])
        if r is not None:
            x = jnp.concatenate([x, r.reshape(devices, -1, *r.shape[1:])], axis=1)
        return x.reshape(-1, *x.shape[2:])

    return jax.tree_util.tree_map(join, full) if rest is None else jax.tree_util.tree_map(join, full, rest)


def run_steps(eng: Engine, variables, carry, seed_data, data, *, steps: int, snapshot_steps=(),
              progress: Progress | None = None, loop: bool = False):
    """Run `steps` updates in compiled chunks of `eng.chunk_size` (loop: a Python loop of the
    jitted single step instead); returns (carry, loss history (S, steps), snapshots {t: (X, M)},
    compile_s, run_s). Inputs may be sharded arrays: the compiled chunk follows them."""
    marks = sorted({s for s in snapshot_steps if 0 < s < steps} | {steps})
    snapshots, history = {}, []
    compile_s, t_start, t = 0.0, time.perf_counter(), 0
    while t < steps:
        stop = min(t + eng.chunk_size, next(m for m in marks if m > t))
        if not loop:
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



# ---- the kernel ----------------------------------------------------------------------------------
class _Rows(NamedTuple):
    """What `visualize_rows` returns, as device arrays (sharded like the rows when a mesh was given);
    the kernel's own, internal: the public result is `api.RenderResult`. Axes: R rows, then G groups. images (R, G, H, W, 3), masks (R, G, H, W), composed
    (R, G, H, W, 3) = background·(1 − M) + X·M; loss (R,) of the last update; finite / stopped_at (R,);
    loss_history (R, steps), NaN after a stop; snapshots {step: (images, masks, composed)}; the
    seconds spent compiling (0 when cached) and running; the layer, resolved."""

    images: jax.Array
    masks: jax.Array
    composed: jax.Array
    loss: jax.Array
    finite: jax.Array
    stopped_at: jax.Array
    loss_history: jax.Array
    snapshots: dict
    compile_s: float
    run_s: float
    layer: str


class Prepared(NamedTuple):
    """What `visualize_rows` runs, before any step: the engine (`eng.compiled("chunk", variables,
    carry, seed_data, data, t0, t_stop)` gives its compiled chunk of updates t0 … t_stop − 1), its
    inputs (sharded when a mesh was given) and the layer, resolved."""

    engine: Engine
    variables: Any
    carry: dict
    seed_data: dict
    data: dict
    layer: str | None


def prepare_rows(model, objective: Objective, config: RenderConfig, keys: jax.Array, *, layer: str | None = None,
                 mesh=None, variables: Any = None, options: RunOptions | None = None) -> Prepared:
    """Check the arguments of `visualize_rows` (the same ones, but progress) and build what it runs:
    the engine for them and its initial state. For a benchmark or a profile of the compiled step."""
    if not isinstance(objective, Objective):
        raise AttrvisError(f"expected an objective (attrvis_jax.objectives), got {type(objective).__name__}")
    linear = objective.linear()
    made_for = getattr(objective, "made_for", None)
    if made_for is not None and made_for != modes(config):
        raise AttrvisError("this objective was made under another render config (mask, balance, direction or "
                           f"area weight {made_for} vs {modes(config)}): make it with the "
                           "config you render with")
    if ALPHA in objective.layers and not config.alpha:
        raise AttrvisError("this objective reads the pictures' alpha: render it with alpha=True")
    if config.has_mask and not objective.has_mask_terms:
        raise AttrvisError(f"this objective has no mask terms (no beta): render it with perturbation='none', "
                           f"not {config.perturbation!r}")
    size = config.image_size or model.input_size
    shapes = model.layer_shapes(size)
    for part in _linear_parts(objective):
        part_layer = layer if linear is not None and layer else part.layer
        if part_layer is None:
            raise AttrvisError("which layer? pass layer=... (the objective does not name one)")
        part_layer = model.resolve_layer(part_layer)
        shape, expected = tuple(part.weights.shape[2 if part.rows else 1:]), tuple(shapes[part_layer])
        if shape != expected:
            raise AttrvisError(f"R+ has shape {shape} but {part_layer} is {expected} for {size}x{size} images: "
                               "was the attribution computed at another layer or image size?")
    rows = int(keys.shape[0])
    if objective.rows and objective.weights.shape[0] != rows:
        raise AttrvisError(f"{objective.weights.shape[0]} objectives for {rows} keys: give one key per row")
    if mesh is not None and rows % mesh.size:
        raise AttrvisError(f"{rows} rows do not split over {mesh.size} devices: use a multiple of {mesh.size}")
    variables = model.variables if variables is None else variables
    options = options or RunOptions()
    beta, lambda0, _ = area_terms(objective)
    if linear is not None and not config.alpha:  # alpha's pictures are only on the general path
        layer = model.resolve_layer(layer or linear.layer)
        devices = 1 if mesh is None else mesh.size
        group = options.seed_batch or auto_seed_batch(
            model, layer, size, rows // devices, None if mesh is None else mesh.devices.flat[0].platform)
        eng = engine(model.net, layer, config, size, objective.rows, options.chunk_size,
                     seed_batch=None if group is None or group * devices >= rows else group, devices=devices)
        data = {"weights": jnp.asarray(linear.weights), "beta": jnp.asarray(beta), "lambda0": jnp.asarray(lambda0)}
    else:
        taps = _taps(model, objective)
        layer = max((l for _, l in taps), key=model.depth, default=None)
        eng = engine(model.net, layer, config, size, False, options.chunk_size, taps)
        data = {"objective": jax.tree_util.tree_map(jnp.asarray, objective), "beta": jnp.asarray(beta)}
    carry, seed_data = eng.init(keys, objective.groups)
    if mesh is not None:
        variables = shard(variables, mesh, batched=False)
        carry, seed_data = shard((carry, seed_data), mesh)
        data = shard(data, mesh, batched=objective.rows)
    return Prepared(eng, variables, carry, seed_data, data, layer)


def visualize_rows(model, objective: Objective, config: RenderConfig, keys: jax.Array, *, layer: str | None = None,
                   mesh=None, variables: Any = None, options: RunOptions | None = None,
                   progress: Progress | None = None) -> _Rows:
    """Optimize one image (and mask) per row of `keys` toward `objective`.

    objective: an `objectives.Objective`. A linear read-out of one layer (`Linear`: the method's
        attribution objective, channel, neuron, ..., and their sums) of G groups runs per row on the
        fast path, shared by every row or stacked with one per row (`objectives.stack`,
        `rows=True`: a sweep's batch of items); its layer is used when `layer` is None, and its
        weights must have the layer's shape at the render size. Any other objective (several
        layers, `diversity`, `from_function`, penalties) runs on the general path: one function
        of every picture of the step, the network run once up to the deepest layer it names.
    keys: (R,) PRNG keys, one per row (`seed_keys(key, ids)` for seeds of one objective).
    mesh: a `devices.device_mesh()`: rows split over its devices (R must be a multiple of its
        size), the variables replicated. options: how it runs (`RunOptions`: chunk size, engine,
        snapshot steps, seed batch: rows per group on each device, on the fast path; its seed
        count is not used, the keys are the rows).
    On the fast path, and on the general path unless the objective couples the pictures
    (`diversity`, `channel_interpolate`), a row's key alone decides its result.
    Returns the rows as device arrays, in a named tuple: images (R, G, H, W, 3), masks (R, G, H, W),
    composed, loss (R,), finite, stopped_at, loss_history (R, steps), snapshots {step: (images,
    masks, composed)}, compile_s, run_s and the layer, resolved. `visualize` makes them a `RenderResult`.
    """
    options = options or RunOptions()
    eng, variables, carry, seed_data, data, layer = prepare_rows(
        model, objective, config, keys, layer=layer, mesh=mesh, variables=variables, options=options)
    carry, history, raw, compile_s, run_s = run_steps(
        eng, variables, carry, seed_data, data, steps=config.steps, snapshot_steps=options.snapshot_steps,
        progress=progress, loop=options.engine == "loop")
    background = config.background
    snapshots = {t: (x, m, composite(x, m, background)) for t, (x, m) in raw.items()}
    x, m = eng.outputs(carry["params"], data)
    return _Rows(x, m, composite(x, m, background), carry["loss"], carry["alive"], carry["stopped_at"],
                 history, snapshots, compile_s, run_s, layer)


def _linear_parts(objective: Objective) -> list:
    """The `Linear` read-outs inside an objective (to check their shapes against the network)."""
    return [o for o in jax.tree_util.tree_leaves(objective, is_leaf=lambda o: isinstance(o, Linear))
            if isinstance(o, Linear)]


def _taps(model, objective: Objective) -> tuple:
    """((name as the objective says it, the model's layer), ...) for the layers it reads, `INPUT` aside."""
    for pseudo in (INPUT, ALPHA):
        if pseudo in model.layers:
            raise AttrvisError(f"{model.name} has a layer named {pseudo!r}, which objectives use for the pictures")
    names = [name for name in objective.layers if name not in (INPUT, ALPHA)]
    if any(name is None for name in names):
        raise AttrvisError("an objective term names no layer: pass the layer to it")
    return tuple((name, model.resolve_layer(name)) for name in names)


# `Rendered` was this module's name of the kernel's tuple (public before one result type remained).
__getattr__ = _deprecated.module_getattr(__name__, {"Rendered": ("attrvis_jax.render.RenderResult (visualize's "
                                                                 "result; visualize_rows returns a plain tuple)",
                                                                 lambda: _Rows)})
