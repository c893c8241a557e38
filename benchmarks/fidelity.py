"""The fidelity study (issue: "Visualizations that show the attributed object"): does the picture
show what the attributed neurons respond to, with the mask over those parts?

Each arm is a sweep (attrvis_jax.apps.sweep.run_sweep) into its own folder under --out, so a stopped
study resumes where it stopped when the same command runs again (finished items are in each arm's
store.sqlite; attributions in its attributions/). When every arm is done (or with --report-only,
for what is done), the script measures each visualization's mask from the saved PNGs against its
attribution's heat map and writes

    <out>/study_<part>.json, <out>/study_<part>.md     one row per arm x layer (medians over images, seeds)
    <out>/sheet_<part>_<model>_<arm>_<layer>.png      contact sheets: photo, heat map, pictures, masks

and each arm's folder holds the perturbation ablation of what that run covered (ablation.csv,
ablation.json with the ranking per layer, ablation_pcc*.png, ablation_top5.png: ablation.py).

Columns: mask-heat-map correlation, border-band share (the 16-px band is 26.5 % of a 224² image),
mask area / beta, PCC with R+, with raw R and with the directed sign(a - b)·R+, top-5 rate and
median target rank.

    python benchmarks/fidelity.py --out runs/fidelity                  # part (a) at 512 steps
    python benchmarks/fidelity.py --out runs/fidelity --part b         # (b): 2048 steps, Lite0 + Lite2
    python benchmarks/fidelity.py --out runs/fidelity --arms default code --perturbations pyramid
    python benchmarks/fidelity.py --out runs/judged --quick-attribution --arms default --layers stage5 stage6 \
        --models efficientnet_lite0 efficientnet_lite2 --judge other     # the ablation, judged

With --judge, a second network (attrvis_jax.judge) classifies every picture: the table gains its
top-5 rate, its median rank of the class, and its median rank of the class on the photos themselves
and on a plain gray canvas, for scale. `--judge other` judges each EfficientNet-Lite model's pictures
by the other one (Lite0 <-> Lite2). Added to a finished study, it judges the saved pictures and
renders nothing again.

The photos are the three bundled ones (chelsea, coffee, rocket) with their labels as targets
(tiger cat, espresso, ... = each photo's top-1 class is what the network sees; `--targets label`
is not available for bundled photos, so the top-1 class is used). Development used other photos
(motorcycle); nothing here was tuned on these.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (thread settings before jax)

from attrvis_jax.attribution import Attribution  # noqa: E402
from attrvis_jax.config import PERTURBATIONS, AttributionConfig, RenderConfig, SweepConfig  # noqa: E402
from attrvis_jax.data import load_image  # noqa: E402
from attrvis_jax.metrics import mask_measures  # noqa: E402
from attrvis_jax.apps.ablation import run_ablation  # noqa: E402

PHOTOS = ("sample:chelsea", "sample:coffee", "sample:rocket")
# Three depths of each network: the last block of stages 4, 5 and 6 (14x14, 14x14, 7x7).
DEPTHS = ("stage4", "stage5", "stage6")
ARMS = {
    "default": {},  # the library's defaults
    "code": {"fidelity": "code"},  # the authors' released code exactly (before)
}


# `--judge other`: each network's pictures are judged by the other.
OTHER = {"efficientnet_lite0": "efficientnet_lite2", "efficientnet_lite2": "efficientnet_lite0"}


def judge_for(model: str, judge: str | None) -> str | None:
    if judge != "other":
        return judge
    if model not in OTHER:
        raise SystemExit(f"--judge other: no other network is set for {model}; name the judge")
    return OTHER[model]


def sweep_config(model: str, layers, perturbations, arm: str, steps: int, seeds: int, quick: bool,
                 judge: str | None = None) -> SweepConfig:
    attribution = AttributionConfig(spatial_steps=512, channel_steps=1024, steps=100) if quick else AttributionConfig()
    render = RenderConfig(steps=steps, lr=0.02 if steps >= 2048 else 0.05, **ARMS[arm])
    return SweepConfig(model=model, images=PHOTOS, targets=("top1",), layers=tuple(layers),
                       perturbations=tuple(perturbations), seeds=seeds, batch=2, attribution=attribution,
                       render=render, judge=judge)


def stored_rows(folder: Path) -> list[dict]:
    """Every finished item in an arm's store (all runs into that folder: other layers and
    perturbations included, which one run's results.json would not list)."""
    import sqlite3

    path = folder / "store.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = db.execute("SELECT * FROM items")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        db.close()


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"), np.float32) / 255.0


def load_attributions(folder: Path) -> dict:
    """slug -> Attribution of every unit an arm's sweep computed."""
    return {p.stem: Attribution.load(p) for p in (folder / "attributions").glob("*.npz")}


def measure(out: Path, rows: list[dict], attributions: dict) -> list[dict]:
    """Each row with the mask measures added (from its saved mask and its attribution's heat map)."""
    measured = []
    for row in rows:
        if not row.get("mask"):
            continue
        if row["perturbation"] == "none":  # no mask is optimized (its saved mask is all ones): no measures
            measured.append({**row, "heatmap_corr": np.nan, "border_share": np.nan, "area_ratio": np.nan})
            continue
        slug = Path(row["mask"]).parent.name
        attr = attributions[slug]
        m = mask_measures(_read_mask(out / row["mask"]), attr.heatmap_image(), attr.beta)
        measured.append({**row, "heatmap_corr": float(m["heatmap_corr"][0]),
                         "border_share": float(m["border_share"][0]), "area_ratio": float(m["area_ratio"][0])})
    return measured


def table(rows: list[dict], by=("model", "arm", "layer", "perturbation")) -> list[dict]:
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, members in groups.items():
        med = lambda k: float(np.median([r[k] for r in members]))
        entry = {**dict(zip(by, key)), "n": len(members), "heatmap_corr": med("heatmap_corr"),
                 "border_share": med("border_share"), "area_vs_beta": med("area_ratio") - 1.0,
                 "pcc": med("pcc"), "pcc_raw": med("pcc_raw"), "pcc_directed": med("pcc_directed"),
                 "top5_rate": float(np.mean([r["top5_hit"] for r in members])),
                 "median_rank": med("target_rank")}
        judged = [r for r in members if r.get("judge")]
        if judged:  # the judge's columns only where every picture of the cell was judged
            entry["judge"] = judged[0]["judge"] if len(judged) == len(members) else None
            if entry["judge"]:
                jmed = lambda k: float(np.median([r[k] for r in judged]))
                entry.update(judge_top5_rate=float(np.mean([bool(r["judge_top5"]) for r in judged])),
                             judge_rank=jmed("judge_rank"), judge_photo_rank=jmed("judge_photo_rank"),
                             judge_gray_rank=jmed("judge_gray_rank"))
        out.append(entry)
    return out


def markdown(entries: list[dict]) -> str:
    judged = any(e.get("judge") for e in entries)
    head = ("| model | arm | layer | perturbation | n | mask–heat-map r | border share | area vs β | "
            "PCC R⁺ | PCC raw R | PCC directed | top-5 | median rank |")
    if judged:
        head += " judge | judge top-5 | judge median rank | judge: photo | judge: gray |"
    lines = [head, "|" + "---|" * (18 if judged else 13)]
    for e in entries:
        mask = ("— | — | — | " if np.isnan(e["heatmap_corr"]) else  # "none": no mask
                f"{e['heatmap_corr']:.2f} | {e['border_share']:.0%} | {e['area_vs_beta']:+.0%} | ")
        line = (f"| {e['model']} | {e['arm']} | {e['layer']} | {e['perturbation']} | {e['n']} | " + mask +
                f"{e['pcc']:.2f} | {e['pcc_raw']:.2f} | {e['pcc_directed']:.2f} | {e['top5_rate']:.0%} | "
                f"{e['median_rank']:.0f} |")
        if judged:
            line += (f" {e['judge']} | {e['judge_top5_rate']:.0%} | {e['judge_rank']:.0f} | "
                     f"{e['judge_photo_rank']:.0f} | {e['judge_gray_rank']:.0f} |" if e.get("judge")
                     else " — | — | — | — | — |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def sheets(out: Path, folder: Path, arm: str, rows: list[dict], model_name: str, attributions: dict,
           part: str = "a") -> None:
    from attrvis_jax.models.registry import architecture
    from attrvis_jax.apps.report import contact_sheet, save_png
    from PIL import Image

    spec = architecture(model_name).spec
    by_layer: dict = {}
    for row in rows:
        by_layer.setdefault(row["layer"], []).append(row)
    for layer, members in by_layer.items():
        images, captions = [], []
        for photo in PHOTOS:
            own = [r for r in members if r["image"] == photo and r["perturbation"] == "pyramid"] or \
                  [r for r in members if r["image"] == photo]
            if not own:
                continue
            attr = attributions[Path(own[0]["mask"]).parent.name]
            x = load_image(photo.split(":", 1)[-1], spec.preprocess)
            heat = attr.heatmap_image()
            heat = heat / heat.max() if heat.max() > 0 else heat
            images += [x, np.repeat(heat[..., None], 3, -1)]
            captions += [f"{photo[7:]} ({attr.target_name.split(',')[0]})", "heat map"]
            for r in own[:2]:
                images.append(np.asarray(Image.open(folder / r["picture"]).convert("RGB"), np.float32) / 255.0)
                judged = f", judge {r['judge_rank']}" if r.get("judge") else ""
                captions.append(f"s{r['seed']} rank {r['target_rank']}{judged}")
            for r in own[:2]:
                images.append(np.repeat(_read_mask(folder / r["mask"])[..., None], 3, -1))
                captions.append(f"mask r={r['heatmap_corr']:.2f}")
        if images:
            save_png(out / f"sheet_{part}_{model_name}_{arm}_{layer.replace('.', '_')}.png",
                     contact_sheet(images, captions, columns=6))


def visibility_profile(out: Path, size: int = 224) -> dict:
    """The area term's view of each pixel, before (the code: v(p)) and after (the expected weight
    of pixel p once the mask is weighted by 1/v), along the middle row and the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attrvis_jax.render.transforms import CODE_TRANSFORMS, area_weights, visibility

    v = visibility(CODE_TRANSFORMS, size)
    # "after" is measured with transform draws independent of those the weights were estimated from
    after = visibility(CODE_TRANSFORMS, size, 512, seed=1) * area_weights(CODE_TRANSFORMS, size)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    im = axes[0].imshow(v, cmap="viridis", vmin=0, vmax=1.15)
    axes[0].set_title("v(p): expected weight of pixel p\nin the transformed-mask mean (code)", fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    for ax, (name, cut) in zip(axes[1:], (("middle row", lambda a: a[size // 2]), ("diagonal", np.diag))):
        ax.plot(cut(v), label="before (code)")
        ax.plot(cut(after), label="after (weighted by 1/v)")
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set_ylim(0, 1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("pixel")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "visibility_profile.png", dpi=100)
    plt.close(fig)
    band = np.zeros_like(v, bool)
    band[:16], band[-16:], band[:, :16], band[:, -16:] = True, True, True, True
    return {"center": float(v[size // 2, size // 2]), "edge_middle": float(v[0, size // 2]),
            "corner": float(v[0, 0]), "border_band_mean": float(v[band].mean()),
            "inner_mean": float(v[~band].mean()), "after_min": float(after.min()), "after_max": float(after.max())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--part", choices=["a", "b"], default="a")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--layers", nargs="+", default=None, help="default: stage4 stage5 stage6 (part b: stage5 stage6)")
    p.add_argument("--perturbations", nargs="+", default=None, help="default: all six (part b: pyramid)")
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--quick-attribution", action="store_true",
                   help="baseline 512/1024 mask steps and a 100-point path (the demo's) instead of the defaults")
    p.add_argument("--judge", default=None, metavar="MODEL",
                   help="a second network that classifies every picture; 'other': Lite0 <-> Lite2")
    p.add_argument("--report-only", action="store_true", help="measure what is done; run nothing")
    args = p.parse_args(argv)

    out = Path(args.out)
    steps = 512 if args.part == "a" else 2048
    models = args.models or (["efficientnet_lite0"] if args.part == "a" else ["efficientnet_lite0", "efficientnet_lite2"])
    layers = args.layers or (list(DEPTHS) if args.part == "a" else list(DEPTHS[1:]))
    perturbations = args.perturbations or (list(PERTURBATIONS) if args.part == "a" else ["pyramid"])
    measured = []
    for model in models:
        for arm in args.arms:
            folder = out / f"{args.part}_{model}_{arm}"
            config = sweep_config(model, layers, perturbations, arm, steps, args.seeds, args.quick_attribution,
                                  judge_for(model, args.judge))
            if not args.report_only:
                print(f"== {folder.name}", flush=True)
                # the sweep plus the ablation's table, ranking and charts (ablation_*.png) in folder
                ablation = run_ablation(config, folder, log=lambda m: print(m, flush=True))
                for layer, ranks in ablation.ranking.items():
                    print(f"{layer}: by PCC {ranks['pcc_mean']}, by directed PCC {ranks['pcc_directed_mean']}, "
                          f"by top-5 {ranks['top5_rate']}"
                          + (f", by the judge's top-5 {ranks['judge_top5_rate']}, by its median rank {ranks['judge_rank_median']}"
                             if config.judge else ""), flush=True)
            rows = stored_rows(folder)
            if not rows:
                continue
            attributions = load_attributions(folder)
            rows = [dict(r, arm=arm, model=model) for r in measure(folder, rows, attributions)]
            sheets(out, folder, arm, rows, model, attributions, args.part)
            measured += rows
    entries = table(measured)
    profile = visibility_profile(out)
    print("visibility (code transforms):", json.dumps(profile))
    (out / f"study_{args.part}.json").write_text(json.dumps({"rows": measured, "table": entries, "visibility": profile}, indent=1))
    (out / f"study_{args.part}.md").write_text(markdown(entries))
    print(markdown(entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
