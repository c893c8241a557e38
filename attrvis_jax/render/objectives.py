"""What the render kernel optimizes toward: objectives, pure functions of a network's activations.

An objective, given the activations of the layers it names for a batch of B pictures
(`{layer: (B, H, W, K)}`, plus `INPUT`: the pictures themselves, (B, H, W, 3) in [0, 1], before the
random transforms), returns one score per picture, (B,), that the render maximizes. Objectives
compose with `+`, `-` and a scalar `*`, across layers:

    channel(m, "blocks.10", 3) - 0.5 * channel(m, "blocks.10", 7)     # one layer: stays linear
    channel(m, "blocks.10", 3) + 0.5 * diversity(m, "blocks.10")      # couples the seeds' pictures
    channel(m, "blocks.6", 1) + channel(m, "blocks.12", 9)             # two layers, one forward pass
    from_function(lambda acts: acts["blocks.10"][..., 3].max((1, 2)), layers=["blocks.10"])
    channel(m, "blocks.10", 3) - 0.05 * total_variation()             # an image penalty

The batch: every picture of a render step, seeds × groups (a list of channels gives one group
each), in the order seed 0's groups, seed 1's, ... Every score but `diversity`'s and
`channel_interpolate`'s depends on its own picture alone.

The kernel runs the network once per step, up to the deepest layer any term names, and takes every
named layer from that pass. A *linear* read-out of one layer, L = mean_ij Σ_k f_ijk·W_ijk (`Linear`:
the method's attribution objective, channel, neuron, feature maps, a dot-product direction, and
their sums at one layer), runs on the kernel's fast path (per seed, with the method's mask terms);
anything else on the general one. Linear objectives, one W per *group*:

    attribution_objective(attr, config)   the method: W from R⁺ (signed and balanced per the
                                           config), β and λ0 for the area terms
    feature_maps(maps, layer)             any maps (the paper's comparison columns)
    channel(model, layer, k)              a plain feature visualization of channel(s) k
    neuron(model, layer, k, y, x)         ... of one neuron (the centre one by default)
    direction(model, layer, v)            the activation vector's dot product with v everywhere

Objectives without mask terms (all but the attribution's; β NaN) render with perturbation "none".
Each objective is a JAX pytree (its arrays are leaves, the rest static), so one compiled step
serves every objective of the same structure.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax import _deprecated
from attrvis_jax.attribution.postprocess import code_lambda0, directed_weights
from attrvis_jax.config import RenderConfig
from attrvis_jax.errors import AttrvisError

__all__ = [
    "ALPHA", "INPUT", "Objective", "Linear", "Sum", "Function", "attribution_objective", "feature_maps", "channel", "neuron",
    "direction", "neuron_direction", "channel_interpolate", "diversity", "l1", "total_variation", "blur",
    "alpha_area", "from_function", "stack",
]

ALPHA = "alpha"  # the pseudo-layer of the pictures' alpha (B, H, W, 1), with RenderConfig(alpha=True)
INPUT = "input"  # the pseudo-layer of the pictures themselves (B, H, W, 3) in [0, 1], untransformed


def _pytree(data: Sequence[str] = (), meta: Sequence[str] = ()):
    """A frozen dataclass registered as a pytree: `data` fields are leaves, `meta` fields static."""
    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
        return jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=list(meta))
    return wrap


class Objective:
    """The base of every objective: `objective(acts)` maps {layer: (B, H, W, K)} to scores (B,).

    layers: the layers it reads (`INPUT` for the pictures); groups: pictures per seed (G);
    has_mask_terms: whether it carries the method's area terms (β, λ0), which only the attribution
    objective does. Compose with +, - and a scalar *; `-obj` negates."""

    __array_ufunc__ = None  # numpy scalars defer to __rmul__ (np.float32(2) * objective)
    # Every objective also has `grouped` (whether results keep a group axis) and `rows` (stacked one
    # per row, `stack`): fields of `Linear`, class attributes of `_Plain` and properties elsewhere
    # (not defined here: a dataclass would take an inherited value as its field's default).

    @property
    def has_mask_terms(self) -> bool:
        return False

    @property
    def layers(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def groups(self) -> int:
        return 1

    def __call__(self, acts: Mapping[str, jax.Array]) -> jax.Array:
        raise NotImplementedError

    def linear(self) -> "Linear | None":
        """This objective as one linear read-out of one layer, or None (the kernel's fast path)."""
        return None

    # -- composition --
    def __add__(self, other):
        return _sum([(1.0, self), (1.0, other)]) if isinstance(other, Objective) else NotImplemented

    def __sub__(self, other):
        return _sum([(1.0, self), (-1.0, other)]) if isinstance(other, Objective) else NotImplemented

    def __mul__(self, factor):
        if not isinstance(factor, numbers.Real) or isinstance(factor, bool):
            return NotImplemented
        return _sum([(float(factor), self)])

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0


def _groups(terms) -> int:
    counts = {t.groups for t in terms} - {1}
    if len(counts) > 1:
        raise AttrvisError(f"objectives of {sorted(counts)} groups do not combine: give each the same channels list")
    return counts.pop() if counts else 1


def _sum(weighted: Sequence[tuple[float, Objective]]) -> Objective:
    """Σ c·term, flattened; terms that are linear at one layer fold into one `Linear` (the fast path)."""
    flat = []
    for c, term in weighted:
        if term.has_mask_terms:
            raise AttrvisError("only feature objectives (no mask terms) add and scale: the attribution "
                               "objective's area terms do not")
        if isinstance(term, Sum):
            flat += [(c * ci, ti) for ci, ti in zip(term.coefficients, term.terms)]
        else:
            flat.append((c, term))
    _groups([t for _, t in flat])
    linear = [(c, t.linear()) for c, t in flat]
    if all(l is not None for _, l in linear) and len({(l.layer, l.weights.shape[1:]) for _, l in linear}) == 1:
        widest = max((l for _, l in linear), key=lambda l: l.groups)
        weights = sum(np.float32(c) * np.broadcast_to(l.weights, widest.weights.shape) for c, l in linear)
        return widest.replace(weights=np.asarray(weights, np.float32), grouped=any(l.grouped for _, l in linear))
    return Sum(terms=tuple(t for _, t in flat), coefficients=tuple(c for c, _ in flat))


class _Plain(Objective):
    """An objective of one picture per seed (no groups), never stacked."""

    grouped = False
    rows = False


@_pytree(data=("terms",), meta=("coefficients",))
class Sum(Objective):
    """Σ_i c_i·term_i (what +, - and * build when the terms are not one layer's linear read-out)."""

    terms: tuple
    coefficients: tuple

    @property
    def layers(self):
        return tuple(dict.fromkeys(l for t in self.terms for l in t.layers))

    @property
    def groups(self):
        return _groups(self.terms)

    @property
    def grouped(self):
        return any(t.grouped for t in self.terms)

    rows = False

    def __call__(self, acts):
        return sum(c * t(acts) for c, t in zip(self.coefficients, self.terms))


@_pytree(data=("weights", "beta", "lambda0", "reference"), meta=("grouped", "layer", "rows", "made_for"))
class Linear(Objective):
    """L = mean_ij Σ_k f^l_ijk·W_ijk at one layer, per group (G groups; with `rows`, a leading axis
    of rows first, one objective per row): the neuron weights W (G, H, W, K), β (G,) and λ0 (G,) of
    the area terms (β NaN and λ0 0 for an objective without them), the photo's score L(photo) (G,)
    the relative balance divided W by (NaN where not used), whether the source had groups (results
    keep the G axis), the layer, and for the attribution objective the config modes it was made
    under (`made_for`: the kernel refuses to render it under others, since W, β and λ0 depend on them)."""

    weights: Any
    beta: Any
    lambda0: Any
    reference: Any
    grouped: bool
    layer: str | None
    rows: bool = False
    made_for: tuple | None = None

    @property
    def has_mask_terms(self) -> bool:
        return bool(np.all(np.isfinite(self.beta)))

    @property
    def groups(self) -> int:
        return self.weights.shape[1 if self.rows else 0]

    @property
    def layers(self):
        return (self.layer,)

    def linear(self):
        return self

    def replace(self, **changes) -> "Linear":
        return dataclasses.replace(self, **changes)

    def __call__(self, acts):
        """mean_ij Σ_k a·W for B = (seeds × G) pictures: picture b reads group b mod G's W."""
        if self.rows:
            raise AttrvisError("a stacked objective (one per row) renders on the fast path only")
        a = acts[self.layer]
        w = jnp.asarray(self.weights, a.dtype)
        w = jnp.tile(w, (a.shape[0] // w.shape[0], 1, 1, 1))
        return jnp.mean(jnp.sum(a * w, axis=-1), axis=(1, 2))


def stack(objectives: Sequence[Linear]) -> Linear:
    """One objective per row (a sweep's batch of items): arrays gain a leading row axis."""
    first = objectives[0]
    if (not all(isinstance(o, Linear) and not o.rows for o in objectives)
            or len({(o.weights.shape, o.layer, o.grouped, o.made_for) for o in objectives}) != 1):
        raise AttrvisError("stack needs linear objectives of one layer, shape, grouping and config, not already stacked")
    return Linear(*(np.stack([getattr(o, f) for o in objectives]) for f in ("weights", "beta", "lambda0", "reference")),
                  first.grouped, first.layer, rows=True, made_for=first.made_for)


def area_terms(objective: Objective) -> tuple:
    """(β, λ0, L(photo)) per group of an objective: a linear one's own, else NaN, 0, NaN (no mask terms)."""
    if isinstance(objective, Linear):
        return objective.beta, objective.lambda0, objective.reference
    nan = np.full((objective.groups,), np.nan, np.float32)
    return nan, np.zeros_like(nan), nan.copy()


def modes(config: RenderConfig) -> tuple:
    """What of a RenderConfig the attribution objective's W, β and λ0 depend on."""
    return (config.has_mask, config.balance_mode, config.direction_mode, float(config.area_weight))


# ---- the method's objective ------------------------------------------------------------------------
def _field(obj, name):
    """`name` of an attribution-like object or mapping (None without it); R⁺ (`positive`) is also
    read under its old spelling `r_plus`, with a warning."""
    if isinstance(obj, Mapping) and name in obj:
        return obj[name]
    if not isinstance(obj, Mapping) and hasattr(obj, name):
        return getattr(obj, name)
    if name == "positive" and _field(obj, "r_plus") is not None:
        _deprecated.warn("an attribution's 'r_plus'", "'positive' (the name of R⁺ on an Attribution)")
        return _field(obj, "r_plus")
    return None


def _is_attribution(obj) -> bool:
    return _field(obj, "positive") is not None


_ARRAYS = ("positive", "beta", "lambda0", "activations", "baseline", "reference")


def _unpack(attribution, fields: dict) -> tuple[dict, bool | None, str | None]:
    """The arrays an attribution (object, mapping, tuple or list of them) carries; `fields` win."""
    if isinstance(attribution, (list, tuple)) and attribution and all(_is_attribution(a) for a in attribution):
        parts = [_unpack(a, {})[0] for a in attribution]
        layers = {_field(a, "layer") for a in attribution}
        found = {}
        for name in _ARRAYS:
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
        found = {name: None for name in _ARRAYS}
    elif isinstance(attribution, (list, tuple)) and not _is_attribution(attribution):
        if len(attribution) not in (2, 3):
            raise AttrvisError("a tuple attribution must be (positive, beta) or (positive, beta, lambda0)")
        arrays = list(attribution) + [None] * (3 - len(attribution))
        found = dict(zip(_ARRAYS, arrays + [None] * 3))
    else:
        found = {name: _field(attribution, name) for name in _ARRAYS}
        layer = _field(attribution, "layer")
    found.update({k: v for k, v in fields.items() if v is not None})
    return found, None, layer


def _per_group(value, groups: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float32).reshape(-1), (groups,)).copy()


@_deprecated.renamed_parameters(r_plus="positive")
def attribution_objective(attribution=None, config: RenderConfig | None = None, *, positive=None, beta=None,
                          lambda0=None, activations=None, baseline=None, reference=None) -> Linear:
    """From an attribution to what the kernel optimizes toward (`RenderConfig` decides how).

    attribution: anything with attributes (or mapping keys) `positive` (R⁺, (H, W, K) or
    (G, H, W, K)), `beta`, and as available `lambda0`, `activations` (a, the photo's layer
    activations), `baseline` (b) and `layer` — e.g. `attrvis_jax.attribute`'s result; a list of
    such objects (one per group); or a tuple (positive, beta[, lambda0]). Keyword arrays override.

    weights: direction "signed" (default): W = sign(a − b)·R⁺ (b = 0 when there is no baseline),
        each neuron pushed the way it moved from the baseline to the photo; without `activations`,
        R⁺ is taken as it is (a post-ReLU layer). "positive" (code): W = R⁺.
    balance "relative" (default): W is divided by the photo's own score L(photo) = mean_ij Σ_k a·W
        (or `reference` when given), so the attribution term is a pure number and λ0 = area_weight;
        it needs `activations` or `reference`. "code": λ0 = the attribution's 20·ΣR_f (`lambda0`,
        required; non-positive values fall back to 20·ΣR⁺ as docs/method.md, 'The area weight λ0', says).
    The no-mask ablation has no area term: it needs neither.
    """
    config = config or RenderConfig()
    found, grouped, layer = _unpack(attribution, {"positive": positive, "beta": beta, "lambda0": lambda0,
                                                   "activations": activations, "baseline": baseline,
                                                   "reference": reference})
    if found["positive"] is None or found["beta"] is None:
        raise AttrvisError("visualize needs R+ (positive) and beta: pass an attribution result or arrays")
    r = np.asarray(found["positive"], np.float32)
    if r.ndim not in (3, 4):
        raise AttrvisError(f"R+ must be (H, W, K) or (groups, H, W, K), got shape {r.shape}")
    grouped = (r.ndim == 4) if grouped is None else grouped
    r = r if r.ndim == 4 else r[None]
    groups = r.shape[0]
    if not np.all(np.isfinite(r)):
        raise AttrvisError("R+ contains NaN or infinite values")
    if np.any(r < 0):
        raise AttrvisError("R+ has negative entries: pass the ReLU'd, channel-filtered attribution (positive)")
    totals = r.sum(axis=(1, 2, 3))
    if np.any(totals <= 0):
        raise AttrvisError(f"R+ is all zero for group(s) {np.flatnonzero(totals <= 0).tolist()}: nothing to visualize")
    b = _per_group(found["beta"], groups)
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
            ref = _per_group(found["reference"], groups)
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
        lam = code_lambda0(_per_group(found["lambda0"], groups), totals)
    else:
        lam = np.zeros((groups,), np.float32)  # no mask, no area term
    return Linear(weights.astype(np.float32), b, lam.astype(np.float32), ref, grouped, layer,
                     made_for=modes(config))


# ---- feature objectives (no mask terms) ------------------------------------------------------------
def feature_maps(maps, layer: str | None = None) -> Linear:
    """W = the given maps, (H, W, K) or one per group (G, H, W, K): the response is pushed toward
    them as they are (no sign rule, no balance). For the paper's comparison columns, normalize
    each map first (e.g. to sum 1) so that groups weigh alike."""
    w = np.asarray(maps, np.float32)
    if w.ndim not in (3, 4):
        raise AttrvisError(f"feature maps must be (H, W, K) or (groups, H, W, K), got shape {w.shape}")
    grouped = w.ndim == 4
    w = w if grouped else w[None]
    if not np.all(np.isfinite(w)):
        raise AttrvisError("the feature maps contain NaN or infinite values")
    if np.any(np.all(w.reshape(w.shape[0], -1) == 0, axis=1)):
        raise AttrvisError("a feature map is all zero: nothing to visualize")
    groups = w.shape[0]
    nan = np.full((groups,), np.nan, np.float32)
    return Linear(w, nan, np.zeros((groups,), np.float32), nan.copy(), grouped, layer)


def _layer_shape(model, layer: str, size: int | None) -> tuple[str, tuple[int, int, int]]:
    layer = model.resolve_layer(layer)
    return layer, tuple(model.layer_shapes(size or model.input_size)[layer])


def channel(model, layer: str, channels: int | Sequence[int], *, size: int | None = None) -> Linear:
    """Maximize the mean of channel k over all positions; a list of channels gives one group each
    (a row of feature visualizations per seed). size: the image size the render will use."""
    layer, (h, w, k) = _layer_shape(model, layer, size)
    many = not isinstance(channels, (int, np.integer))
    picked = [int(c) for c in (channels if many else [channels])]
    bad = [c for c in picked if not 0 <= c < k]
    if bad or not picked:
        raise AttrvisError(f"channel {bad or picked} out of range for {layer} (valid: 0..{k - 1})")
    maps = np.zeros((len(picked), h, w, k), np.float32)
    for g, c in enumerate(picked):
        maps[g, :, :, c] = 1.0
    return feature_maps(maps if many else maps[0], layer)


def neuron(model, layer: str, k: int, y: int | None = None, x: int | None = None, *,
           size: int | None = None) -> Linear:
    """Maximize one neuron: channel k at position (y, x), the centre by default."""
    layer, (h, w, depth) = _layer_shape(model, layer, size)
    y = h // 2 if y is None else int(y)
    x = w // 2 if x is None else int(x)
    if not (0 <= k < depth and 0 <= y < h and 0 <= x < w):
        raise AttrvisError(f"neuron ({y}, {x}, {k}) out of range for {layer} of shape {(h, w, depth)}")
    maps = np.zeros((h, w, depth), np.float32)
    maps[y, x, k] = float(h * w)  # L averages over positions: one neuron then counts as itself
    return feature_maps(maps, layer)


# ---- any function of the activations -----------------------------------------------------------
@_pytree(meta=("fn", "names", "name"))
class Function(_Plain):
    """A user's function of the named layers' activations, {layer: (B, H, W, K)} -> (B,) (`from_function`)."""

    fn: Callable
    names: tuple
    name: str = ""

    @property
    def layers(self):
        return self.names

    def __call__(self, acts):
        out = self.fn({name: acts[name] for name in self.names})
        if getattr(out, "ndim", None) != 1:
            raise AttrvisError(f"the objective {self.name or self.fn!r} must return one score per picture, "
                               f"shape (B,), got {getattr(out, 'shape', type(out).__name__)}")
        return out


def from_function(fn: Callable[[dict], jax.Array], layers: Sequence[str], *, name: str = "") -> Function:
    """Your own objective: fn({layer: activations (B, H, W, K)}) -> scores (B,) to maximize, a pure
    jnp function (it is traced into the compiled step; define it once, not in a loop: a new
    function object compiles anew). `layers` names what it reads: model layers (as the model names
    them) and/or `INPUT`, the pictures (B, H, W, 3) in [0, 1]. It composes like the built-ins:

        spread = from_function(lambda a: a["blocks.10"].std(axis=(1, 2, 3)), layers=["blocks.10"])
        visualize(model, channel(model, "blocks.10", 3) + 0.1 * spread, perturbation="none")
    """
    if not callable(fn):
        raise AttrvisError(f"from_function needs a function, got {type(fn).__name__}")
    if isinstance(layers, str) or not layers or not all(isinstance(l, str) for l in layers):
        raise AttrvisError(f"layers must be a non-empty list of layer names, got {layers!r}")
    return Function(fn=fn, names=tuple(dict.fromkeys(layers)), name=name or getattr(fn, "__name__", ""))


# ---- directions ----------------------------------------------------------------------------------
def _vector(model, layer: str, vector, size) -> tuple[str, np.ndarray, tuple]:
    layer, shape = _layer_shape(model, layer, size)
    v = np.asarray(vector, np.float32)
    if v.shape != (shape[-1],) or not np.all(np.isfinite(v)) or not np.any(v):
        raise AttrvisError(f"a direction at {layer} is a finite, non-zero vector of its {shape[-1]} channels, "
                           f"got shape {v.shape}")
    return layer, v, shape


@_pytree(data=("vector",), meta=("layer", "position"))
class Cosine(_Plain):
    """mean over positions (or at one position) of cos(f_ij, v) (`direction(..., cosine=True)`)."""

    vector: Any
    layer: str
    position: tuple | None = None

    @property
    def layers(self):
        return (self.layer,)

    def __call__(self, acts):
        a = acts[self.layer]
        if self.position is not None:
            y, x = self.position
            a = a[:, y : y + 1, x : x + 1]
        v = jnp.asarray(self.vector, a.dtype)
        cos = jnp.sum(a * v, axis=-1) / (jnp.sqrt(jnp.sum(a * a, axis=-1) + _TINY) * jnp.linalg.norm(v))
        return jnp.mean(cos, axis=(1, 2))


_TINY = 1e-12  # keeps the norm of an all-zero activation vector differentiable


def direction(model, layer: str, vector, *, cosine: bool = False, size: int | None = None) -> Objective:
    """The activation vector f_ij (K channels) along `vector` (K,) at every position, averaged:
    dot (default) mean_ij f_ij·v, a linear read-out (the fast path); cosine mean_ij cos(f_ij, v),
    which cares for the direction only, not for how strongly the layer responds. (lucid's
    `direction` / `direction_cossim`, captum.optim's `Direction`.)"""
    layer, v, (h, w, _) = _vector(model, layer, vector, size)
    if cosine:
        return Cosine(vector=v, layer=layer)
    return feature_maps(np.broadcast_to(v, (h, w, v.size)).copy(), layer)


def neuron_direction(model, layer: str, vector, y: int | None = None, x: int | None = None, *,
                     cosine: bool = False, size: int | None = None) -> Objective:
    """`direction` at one position (y, x), the centre by default: f_yx·v, or cos(f_yx, v)."""
    layer, v, (h, w, k) = _vector(model, layer, vector, size)
    y = h // 2 if y is None else int(y)
    x = w // 2 if x is None else int(x)
    if not (0 <= y < h and 0 <= x < w):
        raise AttrvisError(f"position ({y}, {x}) out of range for {layer} of shape {(h, w, k)}")
    if cosine:
        return Cosine(vector=v, layer=layer, position=(y, x))
    maps = np.zeros((h, w, k), np.float32)
    maps[y, x] = v * float(h * w)  # L averages over positions: the one position counts as itself
    return feature_maps(maps, layer)


# ---- objectives that couple the pictures of a batch ---------------------------------------------------
@_pytree(data=("first", "second"))
class Interpolate(Objective):
    """Picture b of B scores (1 − t_b)·first + t_b·second, t_b = b / (B − 1) (`channel_interpolate`)."""

    first: Objective
    second: Objective

    @property
    def layers(self):
        return tuple(dict.fromkeys(self.first.layers + self.second.layers))

    @property
    def groups(self):
        return _groups([self.first, self.second])

    @property
    def grouped(self):
        return self.first.grouped or self.second.grouped

    rows = False

    def __call__(self, acts):
        a, b = self.first(acts), self.second(acts)
        n = a.shape[0]
        t = jnp.arange(n, dtype=a.dtype) / max(n - 1, 1)
        return (1.0 - t) * a + t * b


def channel_interpolate(first: Objective, second: Objective) -> Interpolate:
    """Across the batch, from `first` to `second`: picture b of B maximizes (1 − t)·first + t·second
    with t = b / (B − 1) (lucid's `channel_interpolate`; render seeds=B, e.g. 5, to see the blend).
    Couples the pictures: a picture's objective depends on its place in the batch."""
    for o in (first, second):
        if not isinstance(o, Objective) or o.has_mask_terms:
            raise AttrvisError("channel_interpolate takes two feature objectives (no mask terms)")
    return Interpolate(first=first, second=second)


@_pytree(meta=("layer",))
class Diversity(_Plain):
    """−mean_{j≠b} cos(Gram_b, Gram_j) for picture b (`diversity`)."""

    layer: str

    @property
    def layers(self):
        return (self.layer,)

    def __call__(self, acts):
        a = acts[self.layer]
        n = a.shape[0]
        flat = a.reshape(n, -1, a.shape[-1])
        gram = jnp.einsum("bpk,bpl->bkl", flat, flat).reshape(n, -1)
        gram = gram / jnp.sqrt(jnp.sum(gram * gram, axis=-1, keepdims=True) + _TINY)
        similarity = gram @ gram.T  # (B, B) cosine similarities
        others = jnp.sum(similarity, axis=1) - jnp.diagonal(similarity)
        return -others / max(n - 1, 1)


def diversity(model, layer: str) -> Diversity:
    """Push the batch's pictures apart: picture b scores −(mean over the other pictures j of the
    cosine similarity of their Gram matrices G = Σ_ij f_ij f_ijᵀ at `layer`), the style statistic
    lucid's `diversity` compares (Olah et al. 2017). Add it to another objective with a weight,
    e.g. `channel(m, l, 3) + 0.5 * diversity(m, l)`, and render several seeds.

    It couples the pictures: a picture's gradient depends on every other picture of the batch
    (seeds × groups of one render step), so a seed's picture depends on which seeds run beside it
    (unlike every other objective here). A batch of one picture scores 0."""
    return Diversity(layer=model.resolve_layer(layer))


# ---- image penalties (subtract them: `objective - 0.05 * total_variation()`) ------------------------
@_pytree(meta=("kind", "constant"))
class Penalty(_Plain):
    """A penalty of the pictures (`INPUT`), per picture: l1, total_variation, blur."""

    kind: str
    constant: float = 0.0

    @property
    def layers(self):
        return (INPUT,)

    def __call__(self, acts):
        x = acts[INPUT]
        if self.kind == "l1":
            return jnp.mean(jnp.abs(x - self.constant), axis=(1, 2, 3))
        if self.kind == "total_variation":
            dy = jnp.abs(x[:, 1:] - x[:, :-1])
            dx = jnp.abs(x[:, :, 1:] - x[:, :, :-1])
            return jnp.sum(dy, axis=(1, 2, 3)) / dy[0].size + jnp.sum(dx, axis=(1, 2, 3)) / dx[0].size
        blurred = jax.lax.stop_gradient(box_blur(x))
        return 0.5 * jnp.mean((x - blurred) ** 2, axis=(1, 2, 3))


def box_blur(x: jax.Array) -> jax.Array:
    """3×3 mean of each channel of (B, H, W, C), edges replicated."""
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return sum(p[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def l1(constant: float = 0.5) -> Penalty:
    """mean |X − constant| of each picture (lucid's L1, about the gray by default): subtract it to
    pull the picture toward `constant` where the objective does not need it."""
    return Penalty(kind="l1", constant=float(constant))


def total_variation() -> Penalty:
    """The mean absolute difference of neighbouring pixels (vertical plus horizontal) of each
    picture: subtract it to smooth the picture (lucid's total_variation, per pixel)."""
    return Penalty(kind="total_variation")


@_pytree()
class AlphaArea(_Plain):
    """mean α of each picture (`alpha_area`)."""

    @property
    def layers(self):
        return (ALPHA,)

    def __call__(self, acts):
        return jnp.mean(acts[ALPHA], axis=(1, 2, 3))


def alpha_area() -> AlphaArea:
    """mean α of each picture, for renders with `RenderConfig(alpha=True)`: subtract it so the
    picture keeps only what excites the objective (lucid's transparency), weighted against the
    objective's own scale (a channel's mean activation on its picture: `attrvis catalog` shows it),
    e.g. `channel(m, l, 3) - 0.5 * score * alpha_area()` with `score` that mean."""
    return AlphaArea()


def blur() -> Penalty:
    """½·mean (X − sg(blur₃ₓ₃(X)))²: subtract it to pull each picture toward its own blurred copy
    (lucid's `blur_input_each_step`); the blurred copy is a constant of the step (stop-gradient)."""
    return Penalty(kind="blur")
