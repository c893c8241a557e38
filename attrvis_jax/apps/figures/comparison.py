"""Figs. 6–7: (a) all feature maps, (b) NMF-factorized maps, (c) class-targeted neurons, (d) ours
without mask, (e) ours (pyramid), with PCC and top-5 consistency."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from attrvis_jax.apps.figures.analysis import comparison_maps
from attrvis_jax.apps.figures.context import FORWARD_BATCH, FigureContext, _stats, forward, head, render_record
from attrvis_jax.apps.figures.layout import _ok, _write, blank, grid_figure, heat_cell
from attrvis_jax.apps.figures.schedule import Schedule
from attrvis_jax.devices import fixed_batches
from attrvis_jax.errors import AttrvisError
from attrvis_jax.metrics import directed_attribution, pearson_rows, target_rank


def comparison_objective(maps: dict, attribution, config):
    """The grouped no-mask objective of columns (a)–(d): (a), (b) × n and (c) are the feature maps
    `comparison_maps` made; (d) is what `visualize` optimizes for the attribution under `config`
    (perturbation "none"): by default sign(a − b)·R⁺, R⁺ itself under fidelity="code". So (d) is
    "ours without the mask" under the same rules as (e), and the same render the perturbation
    figure's "none" column would make alone."""
    from attrvis_jax.render import objectives

    if config.has_mask:
        raise AttrvisError(f"columns (a)-(d) are rendered without a mask, not with {config.perturbation!r}")
    ours = objectives.attribution_objective(attribution, config)
    stack = np.concatenate([maps["all"][None], maps["factors"], maps["class"][None], ours.weights])
    return objectives.feature_maps(stack, ours.layer)


def compute_comparison(ctx: FigureContext, share: float = 0.5) -> dict:
    """Render the five columns with one schedule, one key and one set of transforms.

    (a), (b) (n groups), (c) and (d) all use perturbation "none" and are rendered as ONE grouped
    batch (3 + n groups per seed: shared transform draws and the same initial image per seed), so
    only the objective differs between them; (e) is the pyramid render of the attribution, with the
    same key. Metrics (docs/method.md, 'Metrics'): PCC of f_l(vis) with the original feature map a for (a)–(c)
    ((b): of the activations summed over its groups), with R⁺ for (d)–(e); top-5 consistency of the
    target ((b): the head applied to the summed activations). All columns also get PCC with R⁺.
    """
    from attrvis_jax.attribution import attribute
    from attrvis_jax.render import visualize

    model, layer, s = ctx.model, ctx.layer, ctx.schedule
    attr = ctx.attribution()
    gxa = attribute(model, ctx.x, layer, ctx.target, method="grad_x_activation", config=ctx.attribution_config)
    acts = fixed_batches(lambda x: model.features(x, layer), ctx.x[None], width=FORWARD_BATCH)[0]
    scores = np.asarray(gxa.values, np.float64).sum(axis=(0, 1))
    maps = comparison_maps(acts, scores, s.nmf_factors, share)
    if maps["selected"].size == 0:
        raise AttrvisError(f"no channel of {layer} has a positive gradient x activation for {ctx.target_name!r}")
    n = s.nmf_factors
    config = s.render_config("none")
    objective = comparison_objective(maps, attr, config)
    groups = objective.groups
    t0 = time.perf_counter()
    # (a)-(d): no mask terms, one group each, one grouped batch
    nomask = visualize(model, objective, config, layer=layer, key=ctx.render_key,
                       options=s.run_options, progress=ctx.bar("render (a)-(d) no mask"))
    ctx._add_time("render", t0)
    if not ctx.has_render("none"):
        ctx.store_render("none", layer, render_record(nomask, group=groups - 1))
    ours = ctx.render("pyramid")
    seeds = s.seeds

    composed = np.asarray(nomask.composed)  # (S, G, H, W, 3)
    batch = np.concatenate([composed.reshape(seeds * groups, *composed.shape[2:]), ours["composed"]])
    vis_acts, vis_logits = forward(model, batch, layer)
    classes = len(model.labels)
    g_acts = vis_acts[: seeds * groups].reshape(seeds, groups, *vis_acts.shape[1:])
    g_rank = target_rank(vis_logits[: seeds * groups], ctx.target, classes).reshape(seeds, groups)
    e_acts, e_rank = vis_acts[seeds * groups:], target_rank(vis_logits[seeds * groups:], ctx.target, classes)
    summed = g_acts[:, 1 : 1 + n].sum(axis=1)
    summed_rank = target_rank(head(model, summed, layer), ctx.target, classes)
    r_plus, r_raw, r_dir = np.asarray(attr.positive), np.asarray(attr.values), directed_attribution(attr)

    columns = {
        "a": {"label": "(a) all feature maps", "ref": "feature map", "acts": g_acts[:, 0], "rank": g_rank[:, 0]},
        "b": {"label": f"(b) factorized feature maps (NMF, {n} groups)", "ref": "feature map (sum over groups)",
              "acts": summed, "rank": summed_rank},
        "c": {"label": f"(c) class-targeted neurons ({maps['selected'].size} ch)", "ref": "feature map",
              "acts": g_acts[:, 1 + n], "rank": g_rank[:, 1 + n]},
        "d": {"label": "(d) ours without mask", "ref": "R+", "acts": g_acts[:, 2 + n], "rank": g_rank[:, 2 + n]},
        "e": {"label": "(e) ours (pyramid)", "ref": "R+", "acts": e_acts, "rank": e_rank},
    }
    metrics = {}
    for name, col in columns.items():
        ref = acts if col["ref"].startswith("feature map") else r_plus
        metrics[name] = {
            "label": col["label"],
            "pcc_reference": col["ref"],
            "pcc": _stats(pearson_rows(col["acts"], ref)),
            "pcc_r_plus": _stats(pearson_rows(col["acts"], r_plus)),
            "pcc_raw": _stats(pearson_rows(col["acts"], r_raw)),
            # sign(a - b)·R+: what the default (signed) objective excites; R+ on post-ReLU layers
            "pcc_directed": _stats(pearson_rows(col["acts"], r_dir)),
            "pcc_feature_map": _stats(pearson_rows(col["acts"], acts)),
            "top5_rate": float(np.mean(col["rank"] < 5)),
            "target_rank": [int(r) for r in col["rank"]],
        }
    metrics["b"]["pcc_group_vs_factor"] = [
        _stats(pearson_rows(g_acts[:, 1 + g], maps["factors"][g])) for g in range(n)]
    metrics["b"]["top5_rate_per_group"] = [float(np.mean(g_rank[:, 1 + g] < 5)) for g in range(n)]
    metrics["e"]["mask_area"] = _stats(ours["mask_area"])
    metrics["e"]["beta"] = float(attr.beta)
    return {
        "composed_nomask": composed,
        "composed_ours": ours["composed"],
        "masks_ours": ours["masks"],
        "metrics": metrics,
        "maps": maps,
        "n_factors": n,
        "class_rule": {"share": share, "selected": maps["selected"].tolist(),
                       "scores": [float(v) for v in scores]},
        "attribution": attr,
        "pcc_g": {"a": pearson_rows(g_acts[:, 0], acts), "c": pearson_rows(g_acts[:, 1 + n], acts),
                  "d": pearson_rows(g_acts[:, 2 + n], r_plus), "e": pearson_rows(e_acts, r_plus),
                  "b": [pearson_rows(g_acts[:, 1 + g], maps["factors"][g]) for g in range(n)]},
        "ranks": {"a": g_rank[:, 0], "c": g_rank[:, 1 + n], "d": g_rank[:, 2 + n], "e": e_rank, "b": summed_rank},
    }


def draw_comparison(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Rows = seeds; columns = input/heat map, (a), (b) × n, (c), (d), (e)."""
    n, seeds, size = data["n_factors"], ctx.schedule.seeds, ctx.x.shape[0]
    comp, ours, pcc, ranks = data["composed_nomask"], data["composed_ours"], data["pcc_g"], data["ranks"]
    attr = data["attribution"]
    cells, captions = [], []
    for s in range(seeds):
        if s == 0:
            cells.append(ctx.x), captions.append(f"input: {ctx.target_name[:28]}")
        elif s == 1:
            cells.append(heat_cell(ctx.x, attr.positive)), captions.append("heat map of R+")
        else:
            cells.append(blank(size)), captions.append("")
        cells.append(comp[s, 0]), captions.append(f"(a) all maps s{s} r={pcc['a'][s]:.2f} {_ok(ranks['a'][s] < 5)}")
        for g in range(n):
            extra = f" sum:{_ok(ranks['b'][s] < 5)}" if g == n - 1 else ""
            cells.append(comp[s, 1 + g]), captions.append(f"(b) NMF{g + 1} s{s} r={pcc['b'][g][s]:.2f}{extra}")
        cells.append(comp[s, 1 + n]), captions.append(f"(c) class s{s} r={pcc['c'][s]:.2f} {_ok(ranks['c'][s] < 5)}")
        cells.append(comp[s, 2 + n]), captions.append(f"(d) no mask s{s} r={pcc['d'][s]:.2f} {_ok(ranks['d'][s] < 5)}")
        cells.append(ours[s]), captions.append(f"(e) ours s{s} r={pcc['e'][s]:.2f} {_ok(ranks['e'][s] < 5)}")
    return grid_figure(cells, captions, columns=5 + n, title=title)


def fig_comparison(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                   layer=None, target=None, context: FigureContext | None = None, quiet: bool = True,
                   share: float = 0.5) -> dict:
    """Figs. 6–7: (a) all feature maps (Mahendran & Vedaldi: maximize Σ f_l(vis)·ReLU(a)), (b) NMF
    factorized feature maps (Olah et al.), (c) class-targeted neurons (Singla et al.; the rule is
    `select_class_neurons` with `share`), (d) ours without mask, (e) ours (fractal noise pyramid).
    Same schedule, key and transforms for every column (see `compute_comparison`)."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_comparison(ctx, share)
    m = data["metrics"]
    title = [
        "Figs. 6-7 analogue: (a) all feature maps, (b) NMF-factorized maps, (c) class-targeted neurons, "
        "(d) ours without mask, (e) ours with mask (pyramid); rows = seeds",
        ctx.caption_line(),
        "mean PCC [(a)-(c) vs feature map a, (d)-(e) vs R+]: " + ", ".join(
            f"{k} {m[k]['pcc']['mean']:.3f}" for k in "abcde")
        + " | (d), (e) vs sign(a-b)·R+: " + ", ".join(f"{k} {m[k]['pcc_directed']['mean']:.3f}" for k in "de")
        + " | top-5: " + ", ".join(f"{k} {m[k]['top5_rate']:.0%}" for k in "abcde")
        + f" | (c) keeps {len(data['class_rule']['selected'])} ch (share {data['class_rule']['share']})"
        + f" | (e) mask area {m['e']['mask_area']['mean']:.3f} (beta {m['e']['beta']:.3f})",
    ]
    picture, layout = draw_comparison(ctx, data, title)
    record = {
        "caption": " ".join(title),
        "meta": ctx.meta(nmf_factors=data["n_factors"]),
        "columns": ["input"] + ["a"] + [f"b{g + 1}" for g in range(data["n_factors"])] + ["c", "d", "e"],
        "metrics": m,
        "nmf": {"factors": data["n_factors"], "relative_error": data["maps"]["nmf_relative_error"],
                "factor_share": data["maps"]["factor_share"]},
        "class_rule": {**data["class_rule"],
                       "rule": "s_k = sum_ij a*dz_c/da; channels with s_k > 0 ranked by s_k; the fewest top "
                               "channels whose scores reach `share` of the positive total"},
        "layout": layout,
    }
    return _write(out_dir, "comparison", picture, record)
