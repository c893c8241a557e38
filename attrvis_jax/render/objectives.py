"""What the render kernel optimizes toward: a linear read-out of one layer, with or without mask terms.

Every objective here is a weighting W of the layer's response, L = mean_ij Σ_k f^l(Y)_ijk·W_ijk
(loss.py turns L into the loss), one W per *group* (G groups render side by side in one seed,
sharing its transform draws). What differs is where W comes from and whether the mask terms apply:

    attribution_objective(attr, config)   the method: W from R⁺ (signed and balanced per the
                                           config), β and λ0 for the area terms
    feature_maps(maps, layer)             any non-negative maps (the paper's comparison columns:
                                           all feature maps, NMF factors, class-targeted neurons)
    channel(model, layer, k)              a plain feature visualization of channel(s) k
    neuron(model, layer, k, y, x)         ... of one neuron (the centre one by default)

Feature objectives have no mask terms (β is NaN): render them with perturbation "none". They add
and scale like lucid's objectives: `channel(m, l, 3) - 0.5 * channel(m, l, 7)`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from attrvis_jax.attribution.postprocess import code_lambda0
from attrvis_jax.config import RenderConfig
from attrvis_jax.errors import AttrvisError
from attrvis_jax.metrics import directed_weights


class Objective(NamedTuple):
    """Per group (G groups; with `rows`, a leading axis of rows first, one objective per row):
    the neuron weights W (G, H, W, K), β (G,) and λ0 (G,) of the area terms (β NaN and λ0 0 for an
    objective without them), the photo's score L(photo) (G,) the relative balance divided W by
    (NaN where not used), whether the source had groups (results keep the G axis), the layer, and
    for the attribution objective the config modes it was made under (`modes`: the kernel refuses
    to render it under others, since W, β and λ0 depend on them)."""

    weights: np.ndarray
    beta: np.ndarray
    lambda0: np.ndarray
    reference: np.ndarray
    grouped: bool
    layer: str | None
    rows: bool = False
    made_for: tuple | None = None

    __array_ufunc__ = None  # numpy scalars defer to __rmul__ (np.float32(2) * objective)

    @property
    def has_mask_terms(self) -> bool:
        return bool(np.all(np.isfinite(self.beta)))

    @property
    def groups(self) -> int:
        return self.weights.shape[1 if self.rows else 0]

    # -- lucid-style arithmetic, for objectives without mask terms --
    def _combine(self, other, sign: float) -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        if self.has_mask_terms or other.has_mask_terms or self.rows or other.rows:
            raise AttrvisError("only feature objectives (no mask terms) add: the area terms do not")
        if self.layer != other.layer or self.weights.shape != other.weights.shape:
            raise AttrvisError(f"objectives at {self.layer} {self.weights.shape} and {other.layer} "
                               f"{other.weights.shape} do not add")
        return self._replace(weights=(self.weights + sign * other.weights).astype(np.float32),
                             grouped=self.grouped or other.grouped)

    def __add__(self, other):
        return self._combine(other, 1.0)

    def __sub__(self, other):
        return self._combine(other, -1.0)

    def __mul__(self, factor):
        if not isinstance(factor, numbers.Real) or self.has_mask_terms:
            return NotImplemented
        return self._replace(weights=(self.weights * np.float32(factor)).astype(np.float32))

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0


def stack(objectives: Sequence[Objective]) -> Objective:
    """One objective per row (a sweep's batch of items): arrays gain a leading row axis."""
    first = objectives[0]
    if any(o.rows for o in objectives) or len({(o.weights.shape, o.layer, o.grouped, o.made_for)
                                               for o in objectives}) != 1:
        raise AttrvisError("stack needs objectives of one layer, shape, grouping and config, not already stacked")
    return Objective(*(np.stack([getattr(o, f) for o in objectives]) for f in ("weights", "beta", "lambda0", "reference")),
                     first.grouped, first.layer, rows=True, made_for=first.made_for)


def modes(config: RenderConfig) -> tuple:
    """What of a RenderConfig the attribution objective's W, β and λ0 depend on."""
    return (config.has_mask, config.balance_mode, config.direction_mode, float(config.area_weight))


# ---- the method's objective ------------------------------------------------------------------------
def _field(obj, *names):
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return None


def _is_attribution(obj) -> bool:
    return _field(obj, "r_plus", "positive") is not None


_ARRAYS = ("r_plus", "beta", "lambda0", "activations", "baseline", "reference")


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
            raise AttrvisError("a tuple attribution must be (r_plus, beta) or (r_plus, beta, lambda0)")
        arrays = list(attribution) + [None] * (3 - len(attribution))
        found = dict(zip(_ARRAYS, arrays + [None] * 3))
    else:
        found = {name: _field(attribution, *((name, "positive") if name == "r_plus" else (name,))) for name in _ARRAYS}
        layer = _field(attribution, "layer")
    found.update({k: v for k, v in fields.items() if v is not None})
    return found, None, layer


def _per_group(value, groups: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float32).reshape(-1), (groups,)).copy()


def attribution_objective(attribution=None, config: RenderConfig | None = None, *, r_plus=None, beta=None,
                          lambda0=None, activations=None, baseline=None, reference=None) -> Objective:
    """From an attribution to what the kernel optimizes toward (`RenderConfig` decides how).

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
    return Objective(weights.astype(np.float32), b, lam.astype(np.float32), ref, grouped, layer,
                     made_for=modes(config))


# ---- feature objectives (no mask terms) ------------------------------------------------------------
def feature_maps(maps, layer: str | None = None) -> Objective:
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
    return Objective(w, nan, np.zeros((groups,), np.float32), nan.copy(), grouped, layer)


def _layer_shape(model, layer: str, size: int | None) -> tuple[str, tuple[int, int, int]]:
    layer = model.resolve_layer(layer)
    return layer, tuple(model.layer_shapes(size or model.input_size)[layer])


def channel(model, layer: str, channels: int | Sequence[int], *, size: int | None = None) -> Objective:
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
           size: int | None = None) -> Objective:
    """Maximize one neuron: channel k at position (y, x), the centre by default."""
    layer, (h, w, depth) = _layer_shape(model, layer, size)
    y = h // 2 if y is None else int(y)
    x = w // 2 if x is None else int(x)
    if not (0 <= k < depth and 0 <= y < h and 0 <= x < w):
        raise AttrvisError(f"neuron ({y}, {x}, {k}) out of range for {layer} of shape {(h, w, depth)}")
    maps = np.zeros((h, w, depth), np.float32)
    maps[y, x, k] = float(h * w)  # L averages over positions: one neuron then counts as itself
    return feature_maps(maps, layer)
