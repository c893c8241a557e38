"""Fig. 8: one attribution visualized with each perturbation and without a mask, several seeds."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attrvis_jax.apps.figures.context import FigureContext, _stats, forward
from attrvis_jax.apps.figures.layout import _ok, _write, blank, grid_figure
from attrvis_jax.apps.figures.schedule import Schedule
from attrvis_jax.config import PERTURBATIONS
from attrvis_jax.metrics import directed_attribution, pearson_rows, target_rank


def compute_perturbations(ctx: FigureContext) -> dict:
    """One render per perturbation (seeds batched), plus PCC with R⁺ / raw R, top-5 and mask area."""
    attr = ctx.attribution()
    records = {p: ctx.render(p) for p in PERTURBATIONS}
    seeds = ctx.schedule.seeds
    batch = np.concatenate([records[p]["composed"] for p in PERTURBATIONS])
    acts, logits = forward(ctx.model, batch, ctx.layer)
    ranks = target_rank(logits, ctx.target, len(ctx.model.labels)).reshape(len(PERTURBATIONS), seeds)
    acts = acts.reshape(len(PERTURBATIONS), seeds, *acts.shape[1:])
    metrics = {}
    for i, p in enumerate(PERTURBATIONS):
        metrics[p] = {
            "pcc": _stats(pearson_rows(acts[i], attr.positive)),
            "pcc_raw": _stats(pearson_rows(acts[i], attr.values)),
            "pcc_directed": _stats(pearson_rows(acts[i], directed_attribution(attr))),
            "top5_rate": float(np.mean(ranks[i] < 5)),
            "target_rank": [int(r) for r in ranks[i]],
            "mask_area": _stats(records[p]["mask_area"]) if records[p]["has_mask"] else None,
            "finite": [bool(v) for v in records[p]["finite"]],
        }
    return {"records": records, "metrics": metrics, "beta": float(attr.beta)}


def draw_perturbations(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Rows = seeds, then the masks of seed 0; columns = the perturbations."""
    seeds, size = ctx.schedule.seeds, ctx.x.shape[0]
    recs, m = data["records"], data["metrics"]
    cells, captions = [], []
    for s in range(seeds):
        for p in PERTURBATIONS:
            cells.append(recs[p]["composed"][s])
            captions.append(f"{p} s{s} r={m[p]['pcc']['values'][s]:.2f} {_ok(m[p]['target_rank'][s] < 5)}")
    for p in PERTURBATIONS:
        if recs[p]["has_mask"]:
            cells.append(recs[p]["masks"][0]), captions.append(f"{p} mask s0 area={recs[p]['mask_area'][0]:.2f}")
        else:
            cells.append(blank(size)), captions.append(f"{p}: no mask")
    return grid_figure(cells, captions, columns=len(PERTURBATIONS), title=title)


def fig_perturbations(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                      layer=None, target=None, context: FigureContext | None = None, quiet: bool = True) -> dict:
    """Fig. 8: the same attribution visualized with constant, Gaussian, blur, single fractal and
    pyramid perturbations, and without a mask; several seeds (rows), the masks of seed 0 below."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_perturbations(ctx)
    m = data["metrics"]
    title = [
        "Fig. 8 analogue: one attribution visualized with each perturbation (columns) and seed (rows); "
        "bottom row: the masks of seed 0",
        ctx.caption_line(),
        "mean PCC vs R+: " + ", ".join(f"{p} {m[p]['pcc']['mean']:.3f}" for p in PERTURBATIONS)
        + " | vs sign(a-b)·R+: " + ", ".join(f"{p} {m[p]['pcc_directed']['mean']:.3f}" for p in PERTURBATIONS)
        + " | top-5: " + ", ".join(f"{p} {m[p]['top5_rate']:.0%}" for p in PERTURBATIONS)
        + f" | beta {data['beta']:.3f}",
    ]
    picture, layout = draw_perturbations(ctx, data, title)
    record = {"caption": " ".join(title), "meta": ctx.meta(), "columns": list(PERTURBATIONS),
              "beta": data["beta"], "metrics": m, "layout": layout}
    return _write(out_dir, "perturbations", picture, record)
