"""The paper's evaluation metrics (the paper's §4.2; docs/method.md, 'Metrics'), batched over visualizations.

- Visualization correlation: Pearson r between f_l(vis) and an attribution map over all
  H·W·K neurons, one value per visualization.
- Classification consistency: whether the target class is in the visualization's top-5.

Both come from one forward pass of the whole batch through the network (features to the layer,
then the head from there), so nothing is computed twice.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax import _deprecated
from attrvis_jax.data import INPUT_SLACK, check_unit_range
from attrvis_jax.errors import AttrvisError
from attrvis_jax.judge import check_judge, judge_pictures
from attrvis_jax.ranks import target_rank  # noqa: F401  (the metrics' rank, also used here)


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson r of two equally shaped arrays, over all elements; 0 if either is constant."""
    a = a.ravel().astype(jnp.float32)
    b = b.ravel().astype(jnp.float32)
    a = a - a.mean()
    b = b - b.mean()
    denom = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
    return jnp.where(denom > 0, jnp.sum(a * b) / jnp.where(denom > 0, denom, 1.0), 0.0)


def pearson_rows(acts, reference) -> np.ndarray:
    """Pearson r of every row of acts (N, ...) with one reference (...), over all elements, in float64
    on the host (for figure tables); 0 where either side is constant."""
    a = np.asarray(acts, np.float64).reshape(len(acts), -1)
    r = np.asarray(reference, np.float64).ravel()
    a = a - a.mean(axis=1, keepdims=True)
    r = r - r.mean()
    denom = np.sqrt((a * a).sum(axis=1) * (r * r).sum())
    return np.where(denom > 0, (a @ r) / np.where(denom > 0, denom, 1.0), 0.0)


@dataclasses.dataclass(frozen=True)
class VisMetrics:
    """Per-visualization metrics (arrays of length N = number of visualizations)."""

    pcc: np.ndarray  # vs R+ (the paper's measure)
    pcc_raw: np.ndarray  # vs the raw, unfiltered attribution R
    top5_hit: np.ndarray  # bool
    target_rank: np.ndarray  # 0 = the target is the top class
    # vs the directed attribution sign(a − b)·R⁺ the default objective excites (= pcc on post-ReLU
    # layers; on a signed layer, PCC with R⁺ undervalues a neuron driven down as it contributed)
    pcc_directed: np.ndarray | None = None
    # a second network's verdict on the same pictures (`attrvis_jax.judge.Verdict`), when one was asked
    judge: object | None = None

    def summary(self) -> dict:
        out = {
            "pcc_mean": float(np.mean(self.pcc)),
            "pcc_std": float(np.std(self.pcc)),
            "pcc_raw_mean": float(np.mean(self.pcc_raw)),
            "pcc_directed_mean": float(np.mean(self.pcc if self.pcc_directed is None else self.pcc_directed)),
            "top5_rate": float(np.mean(self.top5_hit)),
        }
        if self.judge is not None:
            out["judge_top5_rate"] = float(np.mean(self.judge.top5))
        return out


def _evaluate(model, variables, images, references, layer: str, targets, classes: int):
    """PCC of each image's layer response with each of its references, and the target's rank.

    images (N, H, W, 3); references (N, R, h, w, K) — one set per image; targets (N,)."""
    acts = model.apply_features(variables, images, layer)
    logits = model.apply_head(variables, acts, layer)
    pcc = jax.vmap(lambda a, refs: jax.vmap(lambda r: pearson(a, r))(refs))(acts, references)  # (N, R)
    return pcc, target_rank(logits, targets, classes)


_evaluate_jit = jax.jit(_evaluate, static_argnums=(0, 4, 6))


@_deprecated.renamed_parameters(r_plus="positive", r_raw="values", r_directed="directed")
def evaluate_rows(model, images, positive, values, layer: str, targets, *, directed=None, variables=None
                  ) -> VisMetrics:
    """Metrics of N visualizations that each have their own attribution and target (a sweep batch):
    images (N, H, W, 3) in [0, 1]; each row's R⁺ `positive`, raw R `values` and optionally the
    directed attribution `directed` (N, h, w, K) (an `Attribution`'s fields of those names);
    targets (N,). Arrays may be sharded over devices (jax.Array with a NamedSharding): the one
    forward pass then runs sharded too."""
    maps = [positive, values] + ([] if directed is None else [directed])
    refs = jnp.stack([jnp.asarray(r, jnp.float32) for r in maps], axis=1)
    variables = model.variables if variables is None else variables
    pcc, rank = _evaluate_jit(model, variables, jnp.asarray(images, jnp.float32), refs,
                              model.resolve_layer(layer), jnp.asarray(targets, jnp.int32), len(model.labels))
    pcc, rank = np.asarray(pcc), np.asarray(rank)
    return VisMetrics(pcc=pcc[:, 0], pcc_raw=pcc[:, 1], top5_hit=rank < 5, target_rank=rank,
                      pcc_directed=pcc[:, 2] if directed is not None else pcc[:, 0])


def directed_attribution(attribution) -> np.ndarray:
    """sign(a − b)·R⁺ of an `Attribution` (its `directed` view; the rule lives with the attribution)."""
    return attribution.directed


_OLD_ARGUMENTS = ("images", "r_plus", "r_raw", "layer", "target", "r_directed")


def _takes_the_old_call(fn):
    """evaluate_visualizations(model, images, r_plus, r_raw, layer, target, r_directed=None), the
    call of earlier versions, keeps working for one release, with a warning."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        old = (len(args) > 2 or bool(set(kwargs) & set(_OLD_ARGUMENTS))
               or bool(args) and not hasattr(args[0], "positive"))  # images where the attribution goes
        return _evaluate_old_call(model, *args, **kwargs) if old else fn(model, *args, **kwargs)

    return wrapper


@_takes_the_old_call
def evaluate_visualizations(model, attribution, visualizations, *, judge=None) -> VisMetrics:
    """The paper's two measures of each visualization of one attribution: PCC of the layer's
    response to it with R⁺ (`pcc`), with the raw R (`pcc_raw`) and with the directed attribution
    sign(a − b)·R⁺ the default objective excites (`pcc_directed`), and the target's rank among the
    network's classes for the visualization alone (`target_rank`, `top5_hit`).

    attribution: the `Attribution` the visualizations were made from (its layer, target and maps).
    visualizations: `visualize`'s `RenderResult` (its composed pictures are measured) or images
    (N, H, W, 3) or (H, W, 3) in [0, 1]. A grouped result is refused: each group has its own part
    of the attribution (`groups.split_attribution`).

    judge: another network with the model's classes (a `Model`): its verdict on each picture
    (`attrvis_jax.judge.judge_pictures`: its rank of the target through its own preprocessing, beside
    its rank on the photo the attribution was made from, as the network saw it, and on the gray of
    the render's background) in `VisMetrics.judge`.

    The call of earlier versions, evaluate_visualizations(model, images, r_plus, r_raw, layer,
    target, r_directed=None), still works for one release, with a warning.
    """
    images = getattr(visualizations, "composed", visualizations)
    if getattr(visualizations, "grouped", False):
        raise AttrvisError("a grouped render has one part of the attribution per group: measure each group "
                           "against its own part (groups.split_attribution), not the whole attribution")
    rendered_at = getattr(visualizations, "layer", None)
    if rendered_at is not None and rendered_at != attribution.layer:
        raise AttrvisError(f"the visualizations were rendered at layer {rendered_at!r}, the attribution is at "
                           f"{attribution.layer!r}")
    if judge is not None:  # before any work: a judge of other classes is refused
        check_judge(model, judge)
    metrics = _evaluate_images(model, images, attribution.positive, attribution.values, attribution.layer,
                               attribution.target, attribution.directed)
    if judge is None:
        return metrics
    from attrvis_jax.config import CODE_GRAY
    gray = getattr(getattr(visualizations, "config", None), "background", CODE_GRAY)
    verdict = judge_pictures(judge, np.asarray(images), attribution.target, photo=getattr(attribution, "image", None),
                             gray=gray, model=model)
    return dataclasses.replace(metrics, judge=verdict)


def _evaluate_old_call(model, *args, **kwargs) -> VisMetrics:
    bound = dict(zip(_OLD_ARGUMENTS, args))
    twice = sorted(set(bound) & set(kwargs))
    unknown = sorted(set(kwargs) - set(_OLD_ARGUMENTS))
    if twice or unknown or len(args) > len(_OLD_ARGUMENTS):
        raise TypeError(f"evaluate_visualizations got {'repeated' if twice else 'unexpected'} argument(s) "
                        f"{twice or unknown or list(args[len(_OLD_ARGUMENTS):])}")
    bound.update(kwargs)
    missing = [n for n in _OLD_ARGUMENTS[:5] if n not in bound]
    if missing:
        raise TypeError(f"evaluate_visualizations missing argument(s) {missing}")
    _deprecated.warn("evaluate_visualizations(model, images, r_plus, r_raw, layer, target, r_directed)",
                     "evaluate_visualizations(model, attribution, visualizations)")
    return _evaluate_images(model, bound["images"], bound["r_plus"], bound["r_raw"], bound["layer"],
                            bound["target"], bound.get("r_directed"))


def _evaluate_images(model, images, positive, values, layer: str, target: int, directed=None) -> VisMetrics:
    """Metrics of images (N, H, W, 3) or (H, W, 3) in [0, 1] against one attribution's maps (H, W, K)."""
    check_unit_range(images, "the visualizations", INPUT_SLACK)
    images = jnp.asarray(images, jnp.float32)
    if images.ndim == 3:
        images = images[None]
    n = images.shape[0]
    rows = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float32), (n, *np.shape(a)))  # noqa: E731
    return evaluate_rows(model, images, rows(positive), rows(values), layer, np.full((n,), int(target)),
                         directed=None if directed is None else rows(directed))


# ---- where the mask is (the fidelity study's measures) ----------------------------------------------
BORDER_BAND = 16  # px: the band along the image edge where masks drained by the area term collect


def mask_measures(masks, heatmap, beta, band: int = BORDER_BAND) -> dict:
    """Per mask (N, H, W) in [0, 1] against the display heat map (H, W) at the image's size:

    heatmap_corr: Pearson r of the mask with the heat map (does the mask cover the attributed parts);
    border_share: the mask's mass in the `band`-px border band over its total mass (the band's own
        share of the area is `band_area`: a mask spread evenly scores that);
    area_ratio: mean mask / β (1 = the target area)."""
    m = np.asarray(masks, np.float64)
    m = m[None] if m.ndim == 2 else m
    h, w = m.shape[-2:]
    inner = np.zeros((h, w), bool)
    inner[band : h - band, band : w - band] = True
    total = m.sum(axis=(-2, -1))
    border = (m * ~inner).sum(axis=(-2, -1))
    return {
        "heatmap_corr": pearson_rows(m, heatmap),
        "border_share": np.where(total > 0, border / np.where(total > 0, total, 1.0), 0.0),
        "area_ratio": m.mean(axis=(-2, -1)) / float(beta),
        "band_area": float((~inner).mean()),
    }
