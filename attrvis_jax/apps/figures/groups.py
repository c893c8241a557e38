"""Figs. 17–18: the integral visualization beside its channel-group visualizations (groups from several
views of the image)."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from attrvis_jax.apps.figures.context import FigureContext, _stats, forward
from attrvis_jax.apps.figures.layout import _ok, _write, grid_figure, heat_cell
from attrvis_jax.apps.figures.schedule import Schedule
from attrvis_jax.groups import VIEWS, make_views  # noqa: F401  (the figures' names for them)
from attrvis_jax.metrics import pearson_rows, target_rank


def compute_groups(ctx: FigureContext, tau: float = 0.3, min_loading: float | None = None) -> dict:
    """Channel groups from several views of the class, then the groups of the image's attribution.

    The views (`make_views`; the first is the photo itself, whose attribution is the shared one) are
    attributed as one batch; `groups.channel_groups` (factor analysis, τ = 0.3) groups the layer's
    channels; `groups.visualize_groups` renders every group as one grouped batch (pyramid, same key
    and schedule). The integral visualization is the shared pyramid render (the same config and key
    that `visualize_groups` would use), so it is not rendered twice.

    min_loading: the released code's 0.02 was set for GoogLeNet's attribution scale (R·z_c). On
    EfficientNet-Lite0 blocks.10 / chelsea (4 views, values scaled by |z_c| ≈ 9 like the code) it keeps
    5 of 112 channels in 2 groups holding 15% of R⁺; so the default None lets every channel with a
    positive loading join its largest factor (there: 22 channels in 3 groups, 50% of R⁺; the
    channels that no view keeps at τ = 0.3 have zero loadings and stay out). Pass 0.02 for the code.
    """
    from attrvis_jax.attribution import attribute
    from attrvis_jax.groups import channel_groups, visualize_groups

    model, layer, s = ctx.model, ctx.layer, ctx.schedule
    attr = ctx.attribution()
    names, views = make_views(model, ctx.image, s.views)
    others = []
    if len(views) > 1:
        t0 = time.perf_counter()
        others = attribute(model, views[1:], layer, [ctx.target] * (len(views) - 1), config=ctx.attribution_config,
                           key=ctx.attr_key, progress=ctx.bar(f"attribution of {len(views) - 1} views"))
        ctx._add_time("attribution", t0)
    # The grouping thresholds (min loading 0.02) were set for the code's attribution scale R·z_c(a)
    # (docs/method.md, 'The attribution': scale_by_logit): group that, each view scaled by its own
    # |z_c|; the scale does not change which channels are grouped together, only which loadings
    # count as small.
    scaled = [np.asarray(a.values) * abs(float(a.logit)) for a in [attr, *others]]
    threshold = float(np.finfo(np.float64).tiny) if min_loading is None else float(min_loading)
    grouping = channel_groups(scaled, tau=tau, layer=layer, min_loading=threshold)
    integral = ctx.render("pyramid")
    t0 = time.perf_counter()
    shown = visualize_groups(model, attr, grouping, ctx.schedule.render_config("pyramid"), ctx.render_key,
                             options=ctx.schedule.run_options, progress=ctx.bar("render groups"),
                             include_integral=False)
    ctx._add_time("render", t0)
    groups_composed = np.asarray(shown.groups.composed)  # (S, G, H, W, 3)
    parts = shown.parts
    seeds, g = groups_composed.shape[:2]
    batch = np.concatenate([integral["composed"], groups_composed.reshape(seeds * g, *groups_composed.shape[2:])])
    acts, logits = forward(model, batch, layer)
    ranks = target_rank(logits, ctx.target, len(model.labels))
    i_acts, i_rank = acts[:seeds], ranks[:seeds]
    g_acts = acts[seeds:].reshape(seeds, g, *acts.shape[1:])
    g_rank = ranks[seeds:].reshape(seeds, g)
    group_metrics = []
    for j, part in enumerate(parts):
        group_metrics.append({
            "group": int(part["group"]),
            "channels": [int(c) for c in part["channels"]],
            "beta": float(part["beta"]),
            "share_of_r_plus": float(np.sum(part["positive"]) / max(float(np.sum(attr.positive)), 1e-12)),
            "pcc": _stats(pearson_rows(g_acts[:, j], part["positive"])),
            "pcc_integral_r_plus": _stats(pearson_rows(g_acts[:, j], attr.positive)),
            "top5_rate": float(np.mean(g_rank[:, j] < 5)),
            "target_rank": [int(r) for r in g_rank[:, j]],
            "mask_area": _stats(np.asarray(shown.groups.mask_area)[:, j]),
        })
    return {
        "views": names,
        "grouping": grouping,
        "parts": parts,
        "integral": integral,
        "groups_composed": groups_composed,
        "group_masks": np.asarray(shown.groups.masks),
        "integral_metrics": {"pcc": _stats(pearson_rows(i_acts, attr.positive)),
                             "top5_rate": float(np.mean(i_rank < 5)),
                             "target_rank": [int(r) for r in i_rank],
                             "mask_area": _stats(integral["mask_area"]), "beta": float(attr.beta)},
        "group_metrics": group_metrics,
        "attribution": attr,
        "tau": tau,
        "min_loading": "any positive loading" if min_loading is None else float(min_loading),
        "r_plus_coverage": float(sum(m["share_of_r_plus"] for m in group_metrics)),
    }


def draw_groups(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Row 0: heat maps (integral R⁺, then each group's R⁺_g); rows below: integral | groups per seed."""
    attr, parts, gm, im = data["attribution"], data["parts"], data["group_metrics"], data["integral_metrics"]
    cells = [heat_cell(ctx.x, attr.positive)]
    captions = [f"integral R+ beta={attr.beta:.2f}"]
    for part, m in zip(parts, gm):
        cells.append(heat_cell(ctx.x, part["positive"]))
        captions.append(f"group {m['group'] + 1}: {len(m['channels'])} ch, {m['share_of_r_plus']:.0%} of R+")
    for s in range(ctx.schedule.seeds):
        cells.append(data["integral"]["composed"][s])
        captions.append(f"integral s{s} r={im['pcc']['values'][s]:.2f} {_ok(im['target_rank'][s] < 5)}")
        for j, m in enumerate(gm):
            cells.append(data["groups_composed"][s, j])
            captions.append(f"group {m['group'] + 1} s{s} r={m['pcc']['values'][s]:.2f} {_ok(m['target_rank'][s] < 5)}")
    return grid_figure(cells, captions, columns=1 + len(parts), title=title)


def fig_groups(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
               layer=None, target=None, context: FigureContext | None = None, quiet: bool = True,
               tau: float = 0.3, min_loading: float | None = None) -> dict:
    """Figs. 17–18: the integral visualization beside the visualizations of its channel groups.
    The groups come from factor analysis of the attributions of several views of the image (flips,
    crops, a zoom-out: `VIEWS`), standing in for the paper's other images of the class; see
    `compute_groups` for min_loading."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_groups(ctx, tau, min_loading)
    grouping, gm, im = data["grouping"], data["group_metrics"], data["integral_metrics"]
    title = [
        "Figs. 17-18 analogue: integral visualization (left) and its channel-group visualizations (right); "
        "top row: heat maps of R+ and of each group's R+",
        ctx.caption_line(),
        f"channel groups: factor analysis (tau {data['tau']}, {grouping.n_factors} factors) of the attributions of "
        f"{len(data['views'])} views of this one photo ({', '.join(data['views'])}), not of other photos of the class"
        f"; the groups hold {data['r_plus_coverage']:.0%} of R+ | mean PCC vs own R+: integral {im['pcc']['mean']:.3f}, "
        + ", ".join(f"group {m['group'] + 1} {m['pcc']['mean']:.3f}" for m in gm),
    ]
    picture, layout = draw_groups(ctx, data, title)
    record = {
        "caption": " ".join(title),
        "meta": ctx.meta(views=data["views"], tau=data["tau"], min_loading=data["min_loading"],
                         grouped_values="R * |z_c| per view (the code's scale_by_logit)"),
        "channel_groups": grouping.to_dict(),
        "integral": im,
        "groups": gm,
        "r_plus_coverage": data["r_plus_coverage"],
        "layout": layout,
    }
    return _write(out_dir, "groups", picture, record)
