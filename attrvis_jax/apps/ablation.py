"""The paper's perturbation ablation (its §4.2; docs/method.md, 'Metrics'): every perturbation ×
layer × image × seed.

A sweep (sweep.py) over the six variants, then the paper-style table and bar charts:

    result = run_ablation(ablation_config(images=("chelsea", "coffee"), layers=("stage4", "stage5")), "out/")
    result.table            # one row per layer × perturbation: PCC mean/std, top-5 rate, ...
    result.ranking          # per layer and metric: the perturbations from best to worst

Files in the output folder (beside the sweep's results.csv / summary.csv / store):
ablation.csv, ablation.json (table + ranking + settings), and one bar chart per metric:
ablation_pcc.png (the paper's PCC with R+), ablation_pcc_directed.png (PCC with sign(a - b)·R+, the
agreement the default signed objective aims at; equal to the first on post-ReLU layers) and
ablation_top5.png; with a judge (a second network, `attrvis_jax.judge`), the table gains its
columns (judge_top5_rate and median ranks, beside its median rank of the class on the photos and on a
gray canvas), the ranking its verdict and ablation_judge_top5.png its chart. And the pictures beside
the numbers: ablation_sheet_<layer>.png, one per layer, a row per image × seed (the first
SHEET_ROWS) and a column per perturbation, each picture captioned with the network's rank of the
class and the judge's ("j").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from attrvis_jax import configs
from attrvis_jax.config import CODE_NAMES, SweepConfig, attribution_fidelity
from attrvis_jax.configs.ablation import ORDER
from attrvis_jax.fileio import atomic_write, write_json, write_text
from attrvis_jax.outputs import save_png
from attrvis_jax.apps.sweep import SUMMARY_KEYS, file_safe, run_sweep, saved_picture, to_csv

METRICS = {"pcc_mean": "visualization correlation (PCC with R+)",
           "pcc_directed_mean": "PCC with sign(a - b)·R+ (directed)",
           "top5_rate": "classification consistency (top-5)"}
CHARTS = {"pcc_mean": "ablation_pcc", "pcc_directed_mean": "ablation_pcc_directed", "top5_rate": "ablation_top5"}
# With a judge: its verdict, ranked and charted like the others (lower median rank is better).
JUDGED = {"judge_top5_rate": "a second network's verdict (judge top-5)",
          "judge_rank_median": "the judge's median rank of the class (lower is better)"}
JUDGED_CHARTS = {"judge_top5_rate": "ablation_judge_top5"}
SHEET_ROWS = 12  # image x seed rows of a layer's picture sheet (the first ones; a big sweep has many)
SHEET_SIDE = 192  # px per picture on the sheet


@dataclasses.dataclass(frozen=True)
class AblationResult:
    table: list  # sweep.summarize rows, perturbations in the paper's order within each layer
    ranking: dict  # {layer: {metric: [perturbation, ...] best first}}
    sweep: object  # the SweepResult
    files: dict


_PRESET = configs.get("ablation")


def ablation_config(images: Sequence[str] = _PRESET.images, layers: Sequence[str] = _PRESET.layers, *,
                    model: str = _PRESET.model, targets: Sequence[str] = _PRESET.targets, seeds: int = _PRESET.seeds,
                    steps: int = _PRESET.render.steps, lr: float = _PRESET.render.lr,
                    baseline_steps: int = _PRESET.attribution.spatial_steps, path_steps: int = _PRESET.attribution.steps,
                    batch: int = _PRESET.batch, key: int = _PRESET.key, fidelity: str = _PRESET.render.fidelity,
                    weights: str = _PRESET.weights, perturbations: Sequence[str] = _PRESET.perturbations,
                    area_weight: float = _PRESET.render.area_weight, judge: str | None = None) -> SweepConfig:
    """The ablation preset (`attrvis_jax.configs.ablation`, a schedule that fits a CPU) with these
    settings (the paper: 25 seeds × 2048 steps at lr 0.02; pass those for the full setting).
    judge: a second network that classifies every picture (added to a finished ablation, it judges
    the stored pictures without rendering anything again)."""
    return _PRESET.replace(
        model=model, weights=weights, images=tuple(images), targets=tuple(targets), layers=tuple(layers),
        perturbations=tuple(perturbations), seeds=seeds, key=key, batch=batch, judge=judge,
        attribution=_PRESET.attribution.replace(fidelity=attribution_fidelity(fidelity), steps=path_steps,
                                                **configs.baseline_steps(baseline_steps)),
        render=_PRESET.render.replace(fidelity=fidelity, steps=steps, lr=lr, area_weight=area_weight),
    )


def run_ablation(config: SweepConfig, out_dir, **sweep_kwargs) -> AblationResult:
    """Run (or resume) the ablation sweep, then write its table and charts (while the sweep still
    holds the folder: two ablations never write one folder at once)."""
    out_dir = Path(out_dir)
    tables = {}
    run_sweep(config, out_dir, finish=lambda result: tables.update(result=_write_tables(config, result, out_dir)),
              **sweep_kwargs)
    return tables["result"]


def _write_tables(config: SweepConfig, result, out_dir: Path) -> AblationResult:
    order = {p: i for i, p in enumerate(ORDER)}
    layers = list(dict.fromkeys(row["layer"] for row in result.rows))
    table = sorted(result.summary, key=lambda r: (layers.index(r["layer"]), order.get(r["perturbation"], 99)))
    for row in table:
        row["name"] = CODE_NAMES.get(row["perturbation"], row["perturbation"])
    judged = config.judge is not None
    ranking = rank(table, judged)
    files = {}
    files["csv"] = out_dir / "ablation.csv"
    write_text(files["csv"], to_csv(table, ("name", *SUMMARY_KEYS)))
    files["json"] = out_dir / "ablation.json"
    write_json(files["json"], {
        "table": table, "ranking": ranking, "settings": config.to_dict(),
        "items": len(result.rows), "images": sorted({r["image"] for r in result.rows}),
    })
    for metric, stem in {**CHARTS, **(JUDGED_CHARTS if judged else {})}.items():
        files[stem] = plot_metric(table, metric, out_dir / f"{stem}.png", config)
    for layer in layers:
        sheet = picture_sheet(result.rows, layer, out_dir)
        if sheet is not None:
            files[f"sheet {layer}"] = save_png(out_dir / f"ablation_sheet_{file_safe(layer)}.png", sheet)
    return AblationResult(table=table, ranking=ranking, sweep=result, files=files)


def rank(table: Sequence[dict], judged: bool = False) -> dict:
    """Per layer and metric, the perturbations from best to worst (ties keep the paper's order);
    with `judged`, also by the judge's top-5 rate and median rank (lower first)."""
    metrics = {m: 1 for m in METRICS}
    if judged:
        metrics.update({"judge_top5_rate": 1, "judge_rank_median": -1})
    out: dict = {}
    for layer in dict.fromkeys(r["layer"] for r in table):
        rows = [r for r in table if r["layer"] == layer]
        out[layer] = {m: [r["perturbation"] for r in sorted(rows, key=lambda r: -_finite(sign * r[m]))]
                      for m, sign in metrics.items()}
    return out


def picture_sheet(rows: Sequence[dict], layer: str, out_dir: Path) -> np.ndarray | None:
    """A layer's pictures side by side: a row per (image, target, seed), the first SHEET_ROWS in
    the sweep's order, a column per perturbation in the paper's order; each captioned with the
    network's rank of the class ("#"), and the judge's ("j") where a judge saw it; a blank cell
    where an item has no saved picture. None when the layer has no saved pictures at all."""
    from attrvis_jax.pictures import contact_sheet

    rows = [r for r in rows if r["layer"] == layer]
    perts = [p for p in ORDER if any(r["perturbation"] == p for r in rows)]
    perts += [p for p in dict.fromkeys(r["perturbation"] for r in rows) if p not in perts]
    lines = list(dict.fromkeys((r["image"], r["target_index"], r["seed"]) for r in rows))[:SHEET_ROWS]
    cell = {(r["image"], r["target_index"], r["seed"], r["perturbation"]): r for r in rows}
    images, captions = [], []
    for image, target, seed in lines:
        for j, p in enumerate(perts):
            row = cell.get((image, target, seed, p))
            images.append(None if row is None else saved_picture(out_dir, row["picture"], SHEET_SIDE))
            caption = p if row is None else f"{p} #{row['target_rank']}" + (
                f" j{row['judge_rank']}" if row.get("judge") else "")
            if j == 0:  # the row's image and seed, in its first caption
                caption = f"{Path(str(image)).name.split(':')[-1][:12]} s{seed}: {caption}"
            captions.append(caption)
    found = [p for p in images if p is not None]
    if not found:
        return None
    # a sweep saves every picture at its one render size: a missing one is a white cell of that size
    blank = np.full_like(found[0], 255)
    return contact_sheet([blank if p is None else p for p in images], captions, columns=len(perts))


def _finite(value) -> float:
    return value if np.isfinite(value) else -np.inf


def plot_metric(table: Sequence[dict], metric: str, path: Path, config: SweepConfig | None = None) -> Path:
    """Grouped bars as in the paper's ablation figure: one group per layer, one bar per perturbation
    (PCC bars carry the seed spread as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in table))
    perts = [p for p in ORDER if any(r["perturbation"] == p for r in table)]
    perts += [p for p in dict.fromkeys(r["perturbation"] for r in table) if p not in perts]
    width = 0.8 / max(1, len(perts))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(layers) + 3), 4.0), dpi=110)
    colors = plt.get_cmap("viridis")(np.linspace(0.05, 0.9, len(perts)))
    for j, p in enumerate(perts):
        values, errors = [], []
        for layer in layers:
            row = next((r for r in table if r["layer"] == layer and r["perturbation"] == p), None)
            values.append(np.nan if row is None else row[metric])
            errors.append(0.0 if row is None or metric != "pcc_mean" else row["pcc_std"])
        xs = np.arange(len(layers)) + (j - (len(perts) - 1) / 2) * width
        ax.bar(xs, values, width, yerr=errors if metric == "pcc_mean" else None, capsize=2,
               label=CODE_NAMES.get(p, p), color=colors[j])
    ax.set_xticks(np.arange(len(layers)), layers)
    ax.set_ylabel({**METRICS, **JUDGED}.get(metric, metric))
    if metric in ("top5_rate", "judge_top5_rate"):
        ax.set_ylim(0, 1.05)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8, ncols=min(len(perts), 6 if len(layers) > 2 else 3), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    if config is not None:
        ax.set_title(f"{config.model}: {len(config.images)} image source(s), {config.seeds} seeds x "
                     f"{config.render.steps} steps, fidelity {config.render.fidelity}"
                     + (f"\njudged by {config.judge}" if config.judge and metric.startswith("judge") else ""),
                     fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return Path(path)
