"""Group (decomposed) attribution visualization (docs/method.md, 'Channel groups').

Channels that rise and fall together across many images of one class are one "group"; visualizing
each group's share of a new image's attribution separately shows the parts the network combines.

    groups = channel_groups([attribute(model, x, layer, target) for x in images_of_one_class])
    parts = split_attribution(attribute(model, new_image, layer, target), groups)
    shown = visualize_groups(model, new_attribution, groups, RenderConfig(), seeds=5)

The grouping follows the released `decompMultiAttrsGNet.py`: cumsumMax filter with τ = 0.3, ReLU,
stack to A (N·H·W, K), FactorAnalysis with 3 then 4 factors (the first that explains > 0.3 of the
variance), channels with a loading ≥ 0.02 go to their largest factor.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax._deprecated import RenamedKeys
from attrvis_jax.attribution.postprocess import area_ratio, channel_filter, lambda0
from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions, split_options
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import read_npz, write_npz
from attrvis_jax.render.api import visualize

FORMAT_VERSION = 1
GROUPING_TAU = 0.3  # the released code's layer_alpha = [0.3, 0.3] for the grouping
DEFAULT_SIZE = 224  # input size assumed for raw (H, W, K) arrays, as in postprocess


# ---- the grouping --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ChannelGroups:
    """Channel groups of one layer (for one class), and the factor analysis that produced them.

    groups: sorted channel indices per non-empty group. n_factors: the factors fitted (3 or 4 by
    default). explained_variance: {n: score} for every n tried. loadings: the chosen fit's
    components_ (n_factors, K). channels: K of the layer.
    """

    groups: tuple[np.ndarray, ...]
    n_factors: int
    explained_variance: dict[int, float]
    loadings: np.ndarray
    layer: str | None
    channels: int

    def __post_init__(self):
        # Normalized and checked here so that a loaded file or a hand-made grouping is as safe as a fit.
        groups = tuple(np.unique(np.asarray(g, np.int64).ravel()) for g in self.groups)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "n_factors", int(self.n_factors))
        object.__setattr__(self, "loadings", np.asarray(self.loadings, np.float64))
        object.__setattr__(self, "explained_variance",
                           {int(n): float(s) for n, s in self.explained_variance.items()})
        if not groups or any(g.size == 0 for g in groups):
            raise AttrvisError("channel groups must be a non-empty list of non-empty channel index arrays")
        flat = np.concatenate(groups)
        if flat.min() < 0 or flat.max() >= self.channels:
            raise AttrvisError(f"channel indices must be in [0, {self.channels}), got {flat.min()}..{flat.max()}")
        if len(np.unique(flat)) != len(flat):
            raise AttrvisError("a channel belongs to more than one group")
        if self.loadings.shape != (self.n_factors, self.channels):
            raise AttrvisError(f"loadings must be (n_factors, channels) = ({self.n_factors}, {self.channels}), "
                               f"got {self.loadings.shape}")

    def __len__(self) -> int:
        return len(self.groups)

    def to_dict(self) -> dict:
        """A JSON-able summary (string keys, plain lists) for reports and logs."""
        return {
            "layer": self.layer,
            "channels": self.channels,
            "n_factors": self.n_factors,
            "explained_variance": {str(n): s for n, s in self.explained_variance.items()},
            "group_sizes": [int(g.size) for g in self.groups],
            "groups": [g.tolist() for g in self.groups],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz atomically (no pickle: groups as one index array plus their sizes)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {"format": FORMAT_VERSION, **self.to_dict()}
        del meta["groups"]  # stored as arrays
        arrays = {
            "indices": np.concatenate(self.groups).astype(np.int64),
            "sizes": np.array([g.size for g in self.groups], np.int64),
            "loadings": self.loadings,
        }
        return write_npz(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChannelGroups":
        path = Path(path)
        meta, arrays = read_npz(path, "channel groups", FORMAT_VERSION)
        try:
            indices, sizes, loadings = arrays["indices"], arrays["sizes"], arrays["loadings"]
        except KeyError as e:
            raise AttrvisError(f"{path} is not a channel groups file: missing {e}") from None
        if sizes.sum() != indices.size:
            raise AttrvisError(f"{path}: group sizes do not add up to the stored indices (corrupt file?)")
        return cls(
            groups=tuple(np.split(indices, np.cumsum(sizes)[:-1])),
            n_factors=meta["n_factors"],
            explained_variance={int(n): s for n, s in meta["explained_variance"].items()},
            loadings=loadings,
            layer=meta["layer"],
            channels=meta["channels"],
        )


def _stack(attributions) -> tuple[np.ndarray, str | None]:
    """The raw R maps as one (N, H, W, K) float array, checked, and their common layer if named."""
    if isinstance(attributions, (np.ndarray, jax.Array)) and np.ndim(attributions) == 4:
        attributions = list(attributions)  # a stacked batch (N, H, W, K)
    if isinstance(attributions, (np.ndarray, jax.Array, str, bytes)) or not isinstance(attributions, Iterable):
        raise AttrvisError("channel_groups needs a sequence of attributions (H, W, K) of several images")
    attributions = list(attributions)
    if len(attributions) == 0:
        raise AttrvisError("channel_groups needs at least one attribution (several images of one class)")
    maps = [np.asarray(getattr(a, "values", a), np.float32) for a in attributions]
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise AttrvisError(f"all attributions must have the same shape (one layer, one input size), got {sorted(shapes)}")
    shape = shapes.pop()
    if len(shape) != 3:
        raise AttrvisError(f"attributions must be (H, W, K) maps, got shape {shape}")
    stacked = np.stack(maps)
    if not np.all(np.isfinite(stacked)):
        bad = sorted({int(i) for i in np.flatnonzero(~np.isfinite(stacked).reshape(len(maps), -1).all(axis=1))})
        raise AttrvisError(f"attribution(s) {bad} contain NaN or infinite values")
    if not np.any(stacked):
        raise AttrvisError("all attributions are zero: there is nothing to group")
    layers = {getattr(a, "layer", None) for a in attributions} - {None}
    if len(layers) > 1:  # layers of one stage can share a shape; their channels are not the same
        raise AttrvisError(f"the attributions come from different layers {sorted(layers)}: group one layer at a time")
    return stacked, (layers.pop() if layers else None)


@functools.partial(jax.jit, static_argnums=1)
def _filtered_positive(values: jax.Array, tau: float) -> jax.Array:
    return jnp.maximum(jax.vmap(lambda v: channel_filter(v, tau))(values), 0.0)


def channel_groups(
    attributions,
    *,
    tau: float = GROUPING_TAU,
    score_threshold: float = 0.3,
    min_loading: float = 0.02,
    candidates: Sequence[int] = (3, 4),
    layer: str | None = None,
    seed: int = 0,
    code_units: bool = True,
) -> ChannelGroups:
    """Group a layer's channels by factor analysis of several images' attributions (docs/method.md, 'Channel groups').

    attributions: raw R maps (H, W, K) or `Attribution`s (their `.values`), all of one layer and one
        class. Each is channel-filtered with `tau` (a stricter filter than the display's 0.95, so only
        each image's dominant channels take part) and ReLU'd; all pixels of all images are the rows
        of A (N·H·W, K). FactorAnalysis(n) is fitted for n in `candidates`; the first whose
        explained_variance_score(A, transform(A) @ components_) exceeds `score_threshold` is kept,
        else the last. A channel whose largest loading is ≥ `min_loading` joins the factor with that
        largest loading; empty groups are dropped.
    layer: recorded in the result (default: the attributions' common `.layer`).
    seed: FactorAnalysis's random_state (its randomized SVD); sklearn's default is 0.
    code_units: loadings scale with R, and `min_loading` = 0.02 was set for the released code's R,
        which is IG × z_c(a). With `Attribution` inputs that were not scaled (the default
        `scale_by_logit=False`), each map is multiplied by |z_c(a)| (its `.logit`) first, so the
        threshold means what it meant there. Raw arrays are used as given.
    """
    try:
        from sklearn.decomposition import FactorAnalysis
        from sklearn.metrics import explained_variance_score
    except ImportError:
        raise AttrvisError("channel grouping needs scikit-learn: pip install 'scikit-learn>=1.3'") from None
    if not 0 < tau <= 1:
        raise AttrvisError(f"tau must be in (0, 1], got {tau}")
    if min_loading < 0:
        raise AttrvisError(f"min_loading must be >= 0, got {min_loading}")
    candidates = tuple(int(n) for n in candidates)
    if not candidates or min(candidates) < 1:
        raise AttrvisError(f"candidates must be a non-empty list of factor counts >= 1, got {candidates}")
    stacked, found_layer = _stack(attributions)
    if code_units:
        items = list(attributions) if not isinstance(attributions, (np.ndarray, jax.Array)) else []
        scales = [abs(float(a.logit)) if getattr(a, "logit", None) is not None
                  and not getattr(getattr(a, "config", None), "scale_by_logit", False) else 1.0 for a in items]
        if scales and any(v != 1.0 for v in scales):
            stacked = stacked * np.asarray(scales, np.float32)[:, None, None, None]
    if layer is not None and found_layer is not None and layer != found_layer:
        raise AttrvisError(f"layer={layer!r} but the attributions are at {found_layer!r}")
    n_images, h, w, k = stacked.shape
    if max(candidates) > k:
        raise AttrvisError(f"cannot fit {max(candidates)} factors to {k} channels")
    positive = np.asarray(_filtered_positive(jnp.asarray(stacked), float(tau)), np.float64)
    if not np.any(positive):
        raise AttrvisError(f"no positive attribution survives the tau={tau} channel filter in any image: "
                           "nothing to group (raise tau?)")
    a = positive.reshape(n_images * h * w, k)

    scores, fa = {}, None
    for n in candidates:
        fa = FactorAnalysis(n_components=n, random_state=seed).fit(a)
        scores[n] = float(explained_variance_score(a, fa.transform(a) @ fa.components_))
        if scores[n] > score_threshold:
            break
    loadings = fa.components_
    eligible = loadings.max(axis=0) >= min_loading
    owner = loadings.argmax(axis=0)
    groups = tuple(np.flatnonzero(eligible & (owner == g)) for g in range(len(loadings)))
    groups = tuple(g for g in groups if g.size)
    if not groups:
        # Loadings are in the attribution's units: 0.02 was set for the code's R, which is scaled by
        # z_c(a) (AttributionConfig(scale_by_logit=True)); unscaled R needs a smaller threshold.
        raise AttrvisError(f"no channel has a factor loading >= min_loading={min_loading} (the largest is "
                           f"{loadings.max():.3g}); loadings scale with the attributions: lower min_loading, "
                           "or attribute with scale_by_logit=True as the released code did")
    return ChannelGroups(groups=groups, n_factors=len(loadings), explained_variance=scores,
                         loadings=loadings, layer=layer or found_layer, channels=k)


# ---- decomposing a new attribution ---------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("size", "fidelity"))
def _group_maps(values, filtered, masks, size: int, fidelity: str):
    """R⁺_g, β_g and λ0_g for group masks (G, K) of one map: each group's own R_f,g = R_f ⊙ 1[k ∈ G_g]."""

    def one(mask):
        f = filtered * mask
        return jnp.maximum(f, 0.0), area_ratio(f, size, fidelity), lambda0(values * mask, f, fidelity)

    return jax.vmap(one)(masks)


def split_attribution(attribution, groups: ChannelGroups, config: AttributionConfig | None = None,
                      size: int | None = None) -> list[dict]:
    """Decompose one image's attribution into the groups' parts (one per group, for `visualize`).

    attribution: an `Attribution` (or a raw R (H, W, K)). Its R is filtered as usual (τ of `config`,
    default the attribution's own config, i.e. 0.95), then R⁺_g = R⁺ ⊙ 1[k ∈ G_g]; β_g and λ0_g
    come from the group's own filtered map, so each group's mask is sized for its own evidence.
    size: the model's input size for β (default the attribution's input_size, 224 for raw arrays).
    Returns dicts with positive (the group's R⁺), beta, lambda0, activations and baseline (the
    attribution's, None for raw arrays), layer, channels and group (its index in `groups`);
    groups with no positive attribution left are dropped with a warning.
    """
    values = np.asarray(getattr(attribution, "values", attribution), np.float32)
    config = config or getattr(attribution, "config", None) or AttributionConfig()
    size = int(size or getattr(attribution, "input_size", None) or DEFAULT_SIZE)
    layer = getattr(attribution, "layer", None)
    if values.ndim != 3:
        raise AttrvisError(f"the attribution must be one (H, W, K) map, got shape {values.shape}")
    if values.shape[-1] != groups.channels:
        raise AttrvisError(f"the attribution has {values.shape[-1]} channels but the groups were built for "
                           f"{groups.channels} (layer {groups.layer!r}): another layer?")
    if layer is not None and groups.layer is not None and layer != groups.layer:
        raise AttrvisError(f"the attribution is at layer {layer!r} but the groups are for {groups.layer!r}")
    if not np.all(np.isfinite(values)):
        raise AttrvisError("the attribution contains NaN or infinite values")
    masks = np.zeros((len(groups), groups.channels), np.float32)
    for g, channels in enumerate(groups.groups):
        masks[g, channels] = 1.0
    filtered = channel_filter(jnp.asarray(values), config.channel_threshold)
    positive, beta, lam = (np.asarray(a) for a in _group_maps(
        jnp.asarray(values), filtered, jnp.asarray(masks), size, config.fidelity))

    parts, empty = [], []
    for g, channels in enumerate(groups.groups):
        if not np.any(positive[g]):
            empty.append(g)
            continue
        part = {"positive": positive[g], "beta": float(beta[g]), "lambda0": float(lam[g]),
                "activations": getattr(attribution, "activations", None),
                "baseline": getattr(attribution, "baseline", None),
                "layer": layer or groups.layer, "channels": channels, "group": g}
        parts.append(RenamedKeys(part, {"r_plus": "positive"}, "a group's part"))
    if empty:
        warnings.warn(f"group(s) {empty} have no positive attribution in this image after the "
                      f"tau={config.channel_threshold} filter; they are left out", stacklevel=2)
    if not parts:
        raise AttrvisError("none of the groups has positive attribution in this image: nothing to visualize")
    return parts


# ---- rendering -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class GroupVisualization:
    """What `visualize_groups` returns: `groups` has axes (S seeds, G groups, ...), one group per
    entry of `parts` (in order); `integral` is the ungrouped visualization with the same key."""

    integral: Any  # RenderResult | None
    groups: Any  # RenderResult
    channel_groups: ChannelGroups
    parts: list


def visualize_groups(model, attribution, groups: ChannelGroups, config: RenderConfig | None = None,
                     key: jax.Array | None = None, *, options: RunOptions | None = None, progress=None,
                     include_integral: bool = True, together: bool = False, **overrides) -> GroupVisualization:
    """Visualize each group's part of one image's attribution, as one batch, beside the integral one.

    The groups are the network's batch inside every seed (shared transforms, the same initial image
    per seed when config.aligned_groups), as the code does for B = n_groups. The integral run uses
    the same key, so seed i starts from the same image in both. progress(done, total) counts the
    steps of both runs. options / overrides: as for `visualize`.
    together: the integral is the first member of the groups' batch (one compiled render of G + 1
    pictures per seed, sharing each seed's start and transforms) instead of a render of its own;
    `integral` and `groups` are then views of that one render, and their `loss` is the batch's
    (the sum over its members).
    """
    config, options = split_options(config, options, overrides)
    parts = split_attribution(attribution, groups)
    if together:
        both = visualize(model, [whole_part(attribution), *parts], config, key, options=options, progress=progress)
        return GroupVisualization(integral=member(both, 0), groups=member(both, slice(1, None)),
                                  channel_groups=groups, parts=parts)
    runs = 2 if include_integral else 1
    total = runs * config.steps

    def stage(offset):
        return None if progress is None else (lambda done, _: progress(offset + done, total))

    grouped = visualize(model, parts, config, key, options=options, progress=stage(0))
    integral = (visualize(model, attribution, config, key, options=options, progress=stage(config.steps))
                if include_integral else None)
    return GroupVisualization(integral=integral, groups=grouped, channel_groups=groups, parts=parts)


def whole_part(attribution) -> dict:
    """The whole attribution (an `Attribution` or a mapping) as one member of a grouped render, in
    the form `split_attribution`'s parts have (group -1: every channel)."""
    get = attribution.get if isinstance(attribution, Mapping) else (lambda k: getattr(attribution, k, None))
    positive = np.asarray(get("positive"))
    return {"positive": positive, "beta": float(get("beta")), "lambda0": get("lambda0"),
            "activations": get("activations"), "baseline": get("baseline"), "layer": get("layer"),
            "channels": np.arange(positive.shape[-1]), "group": -1}


def member(result, index):
    """The members `index` (an int: one, as an ungrouped result; a slice: several) of a grouped
    `RenderResult`: pictures, masks and area terms of those members; loss, status and timings
    stay the batch's."""
    if not result.grouped:
        raise AttrvisError("member() takes a grouped render (a list of attributions)")
    take = lambda a: np.asarray(a)[:, index]  # noqa: E731  (axes: seeds, groups, ...)
    snapshots = {t: {k: take(v) for k, v in shot.items()} for t, shot in result.snapshots.items()}
    return dataclasses.replace(result, images=take(result.images), masks=take(result.masks),
                               composed=take(result.composed), mask_area=take(result.mask_area),
                               beta=np.asarray(result.beta)[index], lambda0=np.asarray(result.lambda0)[index],
                               reference=np.asarray(result.reference)[index], snapshots=snapshots,
                               grouped=not isinstance(index, int))


# ---- groups of one run: grouping images, metrics, top channels ---------------------------------------
# Views of the image that stand in for "other images of the class" when none are given (the figures'
# choice, docs/method.md 'Channel groups'): (name, horizontal flip, crop box as fractions (top, left,
# bottom, right), zoom-out pad).
VIEWS = (
    ("original", False, None, 0.0),
    ("flip", True, None, 0.0),
    ("center crop 80%", False, (0.1, 0.1, 0.9, 0.9), 0.0),
    ("flipped center crop 80%", True, (0.1, 0.1, 0.9, 0.9), 0.0),
    ("top-left crop 85%", False, (0.0, 0.0, 0.85, 0.85), 0.0),
    ("bottom-right crop 85%", False, (0.15, 0.15, 1.0, 1.0), 0.0),
    ("zoom out 80% (reflect pad)", False, None, 0.125),
    ("flipped zoom out 80%", True, None, 0.125),
)


def make_views(model, image, count: int) -> tuple[list[str], np.ndarray]:
    """The first `count` of `VIEWS` of the image, preprocessed like any input: (names, (N, S, S, 3)).
    Crops and pads are taken from the full-resolution photo, then resized and cropped by the model."""
    if not 1 <= count <= len(VIEWS):
        raise AttrvisError(f"views must be between 1 and {len(VIEWS)}, got {count}")
    from attrvis_jax.data import read_source

    raw = read_source(image)
    names, images = [], []
    for name, flip, box, pad in VIEWS[:count]:
        img = raw
        if box is not None:
            h, w = img.shape[:2]
            t, l, b, r = box
            img = img[int(round(t * h)) : int(round(b * h)), int(round(l * w)) : int(round(r * w))]
        if pad:
            h, w = img.shape[:2]
            img = np.pad(img, ((int(pad * h),) * 2, (int(pad * w),) * 2, (0, 0)), mode="reflect")
        if flip:
            img = img[:, ::-1]
        names.append(name)
        images.append(model.load_image(np.ascontiguousarray(img)))
    return names, np.stack(images)


ANY_LOADING = float(np.finfo(np.float64).tiny)  # min_loading: every channel with a positive loading joins a group


def check_group_count(n_groups: int, channels: int, layer: str) -> None:
    """A group count must be a whole number from 1 to the layer's channel count."""
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or not 1 <= n_groups <= channels:
        raise AttrvisError(f"groups must be between 1 and the {channels} channels of {layer}, got {n_groups}")


def group_channels(model, attribution, images, n_groups: int, *, method: str = "aumann_shapley",
                   config: AttributionConfig | None = None, key: jax.Array | None = None, batch: int = 8,
                   progress=None) -> ChannelGroups:
    """`n_groups` channel groups of `attribution`'s layer for its class, by factor analysis of the
    attributions of `images` (N, size, size, 3) of that class together with `attribution` itself.

    The images are attributed like the photo (same method, config and key), `batch` at a time;
    `channel_groups` fits `n_groups` factors (τ = 0.3; each map in the code's units, R·|z_c|) and
    every channel with a positive loading joins its largest factor, as the figures do (the code's
    0.02 threshold was set for GoogLeNet's scale). Factors that no channel prefers leave fewer groups.
    """
    from attrvis_jax.attribution import attribute

    layer = attribution.layer
    check_group_count(n_groups, int(np.shape(attribution.values)[-1]), layer)
    images = np.asarray(images, np.float32)
    others = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        result = attribute(model, chunk, layer, [int(attribution.target)] * len(chunk), method, config=config,
                           key=key, progress=progress)
        others += [result] if not isinstance(result, list) else result
    return channel_groups([attribution, *others], tau=GROUPING_TAU, candidates=(int(n_groups),), layer=layer,
                          min_loading=ANY_LOADING)


def top_channels(part: dict, total: float, count: int = 5) -> list[dict]:
    """A group's channels that carry the most of its R⁺ in this image, with their share of the
    whole R⁺ (`total`), largest first."""
    per_channel = np.asarray(part["positive"], np.float64).sum(axis=(0, 1))
    channels = np.asarray(part["channels"])
    order = channels[np.argsort(-per_channel[channels], kind="stable")][:count]
    return [{"channel": int(k), "share": float(per_channel[k] / total) if total > 0 else 0.0}
            for k in order if per_channel[k] > 0]


def group_metrics(model, pictures, parts, attribution) -> dict:
    """PCC and the target's rank of each group's pictures (S, G, H, W, 3) against that group's own
    attribution (R⁺_g, its raw R restricted to the group's channels, and its directed form), from
    one forward pass (`metrics.evaluate_rows`). Returns arrays (S, G): pcc, pcc_raw, pcc_directed,
    target_rank, top5_hit."""
    from attrvis_jax.attribution.postprocess import directed_weights
    from attrvis_jax.metrics import evaluate_rows

    pictures = np.asarray(pictures, np.float32)
    seeds, g = pictures.shape[:2]
    values = np.asarray(attribution.values, np.float32)
    positive = np.stack([np.asarray(p["positive"], np.float32) for p in parts])
    raw = np.stack([values * np.isin(np.arange(values.shape[-1]), p["channels"]) for p in parts])
    directed = np.stack([directed_weights(p["positive"], attribution.activations, attribution.baseline) for p in parts])
    rows = lambda a: np.broadcast_to(a, (seeds, *a.shape)).reshape(seeds * g, *a.shape[1:])  # noqa: E731
    m = evaluate_rows(model, pictures.reshape(seeds * g, *pictures.shape[2:]), rows(positive), rows(raw),
                      attribution.layer, np.full((seeds * g,), int(attribution.target)), directed=rows(directed))
    shape = lambda a: np.asarray(a).reshape(seeds, g)  # noqa: E731
    return {"pcc": shape(m.pcc), "pcc_raw": shape(m.pcc_raw), "pcc_directed": shape(m.pcc_directed),
            "target_rank": shape(m.target_rank), "top5_hit": shape(m.top5_hit)}
