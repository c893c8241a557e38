"""Fig. 16: attribution visualizations (pyramid) of one image at every stage of the network."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attrvis_jax.apps.figures.context import FigureContext, _stats, forward, layer_label
from attrvis_jax.apps.figures.layout import _ok, _write, grid_figure, heat_cell
from attrvis_jax.apps.figures.schedule import Schedule
from attrvis_jax.metrics import directed_attribution, pearson_rows, target_rank


def stage_layers(model, stages: Sequence[str] | None = None) -> list[str]:
    """The layers of the layer figure: `stages` (names or aliases), else the model's stage aliases
    in network order (EfficientNet-Lite: stage1..stage7 = blocks.0, 2, 4, 7, 10, 14, 15), else all
    its named layers."""
    if stages:
        names = [model.resolve_layer(s) for s in stages]
    elif model.spec.aliases:
        names = [target for _, target in model.spec.aliases]
    else:
        names = list(model.layers)
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return sorted(seen, key=model.layers.index)


def compute_layers(ctx: FigureContext, stages: Sequence[str] | None = None) -> dict:
    """Attribute and render (pyramid) every stage layer of the image, for the one target class.

    What is shared: the class is fixed once; the main layer's attribution and render come from the
    context's cache (the comparison already made them); the seeds of each layer are one vmapped
    render (one compile per layer, none per seed). What cannot be shared: each layer is its own
    truncated network, so its attribution (baseline masks + path) and its render compile separately
    — even layers with equal activation shapes (on EfficientNet-Lite0 the seven stages all differ:
    112²×16, 56²×24, 28²×40, 14²×80, 14²×112, 7²×192, 7²×320).
    """
    layers = stage_layers(ctx.model, stages)
    out = {"layers": layers, "attributions": {}, "records": {}, "metrics": {}}
    for layer in layers:
        attr = ctx.attribution(layer)
        rec = ctx.render("pyramid", layer)
        acts, logits = forward(ctx.model, rec["composed"], layer)
        rank = target_rank(logits, ctx.target, len(ctx.model.labels))
        out["attributions"][layer] = attr
        out["records"][layer] = rec
        out["metrics"][layer] = {
            "label": layer_label(ctx.model, layer),
            "shape": list(attr.values.shape),
            "beta": float(attr.beta),
            "pcc": _stats(pearson_rows(acts, attr.positive)),
            "pcc_raw": _stats(pearson_rows(acts, attr.values)),
            "pcc_directed": _stats(pearson_rows(acts, directed_attribution(attr))),
            "top5_rate": float(np.mean(rank < 5)),
            "target_rank": [int(r) for r in rank],
            "mask_area": _stats(rec["mask_area"]),
            "completeness_error": attr.completeness_error,
            "logit": float(attr.logit),
        }
    return out


def draw_layers(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Columns = layers; row 0 = the heat maps, then one row per seed."""
    cells, captions = [], []
    for layer in data["layers"]:
        attr, m = data["attributions"][layer], data["metrics"][layer]
        alias = [a for a, t in ctx.model.spec.aliases if t == layer]
        h, w, k = m["shape"]
        cells.append(heat_cell(ctx.x, attr.positive))
        captions.append(f"{alias[0] + ' ' if alias else ''}{layer} {h}x{w}x{k}")
    for s in range(ctx.schedule.seeds):
        for layer in data["layers"]:
            rec, m = data["records"][layer], data["metrics"][layer]
            cells.append(rec["composed"][s])
            captions.append(f"s{s} r={m['pcc']['values'][s]:.2f} area={rec['mask_area'][s]:.2f} "
                            f"{_ok(m['target_rank'][s] < 5)}")
    return grid_figure(cells, captions, columns=len(data["layers"]), title=title)


def fig_layers(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
               layer=None, target=None, context: FigureContext | None = None, quiet: bool = True,
               stages: Sequence[str] | None = None) -> dict:
    """Fig. 16: attribution visualizations (pyramid) of one image at every stage of the network
    (`stage_layers`; `stages`, else the schedule's, else all stage aliases); see `compute_layers`
    for what is batched and shared."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_layers(ctx, stages or ctx.schedule.stages)
    m = data["metrics"]
    title = [
        "Fig. 16 analogue: attribution visualizations (pyramid) at each stage; top row: heat maps of R+; "
        "rows below: seeds",
        ctx.caption_line().replace(f"layer {ctx.layer_label()}", "layers " + ", ".join(data["layers"])),
        "mean PCC vs R+: " + ", ".join(f"{l} {m[l]['pcc']['mean']:.3f}" for l in data["layers"])
        + " | vs sign(a-b)·R+: " + ", ".join(f"{l} {m[l]['pcc_directed']['mean']:.3f}" for l in data["layers"])
        + " | top-5: " + ", ".join(f"{l} {m[l]['top5_rate']:.0%}" for l in data["layers"]),
    ]
    picture, layout = draw_layers(ctx, data, title)
    record = {"caption": " ".join(title), "meta": ctx.meta(layers=data["layers"]), "columns": data["layers"],
              "metrics": m, "layout": layout}
    return _write(out_dir, "layers", picture, record)
