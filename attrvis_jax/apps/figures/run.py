"""`FIGURES` (name -> figure function, in the order they run) and `run_all`, which makes them sharing one context."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

from attrvis_jax.apps.figures.comparison import fig_comparison
from attrvis_jax.apps.figures.context import FigureContext
from attrvis_jax.apps.figures.groups import fig_groups
from attrvis_jax.apps.figures.layers import fig_layers
from attrvis_jax.apps.figures.perturbations import fig_perturbations
from attrvis_jax.apps.figures.schedule import Schedule, get_schedule
from attrvis_jax.apps.figures.spectra import fig_spectra
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import OutputFolder, write_json


def earlier_figures(out_dir: Path) -> list[str] | None:
    """The files earlier figures runs wrote into `out_dir`, as its figures.json lists them (None:
    no figures run's record): only these may a figures run replace (`fileio.OutputFolder`)."""
    try:
        record = json.loads((Path(out_dir) / "figures.json").read_text())
        names = {"figures.json", *record.get("files", ()),
                 *(f for r in record.get("figures", {}).values() for f in (r.get("png"), r.get("json")) if f)}
    except (OSError, ValueError, AttributeError, TypeError):  # none, or not a figures run's record
        return None
    return sorted(f for f in names if isinstance(f, str))


def _figure_files(out_dir: Path, names: Sequence[str]) -> set:
    """The files of earlier figures runs in `out_dir`, those still there; refuses, with one
    AttrvisError, a file the figures `names` would write that no figures run wrote (the user's)."""
    folder = OutputFolder(out_dir, earlier_figures, overwrite=True, what="figures run")
    folder.expect([f"{n}.{ext}" for n in names for ext in ("png", "json")] + ["figures.json"])
    return {f for f in earlier_figures(out_dir) or () if (out_dir / f).exists()}


FIGURES: dict[str, Callable[..., dict]] = {
    "spectra": fig_spectra,
    "comparison": fig_comparison,
    "perturbations": fig_perturbations,
    "layers": fig_layers,
    "groups": fig_groups,
}


def run_all(
    model_name: str = "efficientnet_lite0",
    out_dir: str | Path = "figures",
    *,
    schedule: str | Schedule = "reduced",
    image="chelsea",
    layer: str | None = None,
    target=None,
    seeds: int | None = None,
    steps: int | None = None,
    figures: Sequence[str] | str | None = None,
    fidelity: str | None = None,
    key=0,
    quiet: bool = False,
    progress: Callable[[int, int], None] | None = None,
    model=None,
) -> dict:
    """Make every figure (or the named ones) into out_dir, sharing one attribution and its renders.

    model_name: a registered model (`attrvis_jax.load_model`), unless `model` (a loaded Model) is
    given. schedule: "reduced" | "paper" | a `Schedule`; seeds/steps/fidelity override it. figures: names
    from `FIGURES` (default all, in that order). progress(done, total) is called after each figure.
    Returns {"figures": {name: record}, "files": [...], "timings": {...}, "schedule": {...}};
    the same summary is written to out_dir/figures.json.
    """
    from attrvis_jax.models import load_model

    t_start = time.perf_counter()
    names = list(FIGURES) if figures is None else ([figures] if isinstance(figures, str) else list(figures))
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise AttrvisError(f"unknown figure(s) {bad}; valid: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    owned = _figure_files(out_dir, names)  # before any work: the user's own spectra.png is never replaced
    model = model if model is not None else load_model(model_name)
    sched = get_schedule(schedule, seeds=seeds, steps=steps, fidelity=fidelity)
    # resolves the image, layer and class: a bad one is refused before the folder is made
    ctx = FigureContext(model, schedule=sched, key=key, image=image, layer=layer, target=target, quiet=quiet)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx.log(f"{len(names)} figure(s) into {out_dir}: {ctx.caption_line()}")
    results, timings, files = {}, {}, []
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        results[name] = FIGURES[name](model, out_dir, schedule=sched, context=ctx, quiet=quiet)
        timings[name + "_s"] = time.perf_counter() - t0
        files += [results[name]["png"], results[name]["json"]]
        ctx.log(f"{name}: {timings[name + '_s']:.0f} s -> {results[name]['png']}")
        if progress is not None:
            progress(i + 1, len(names))
    timings.update({k: v for k, v in ctx.timings.items()})
    timings["total_s"] = time.perf_counter() - t_start
    summary = {
        "model": model.name, "image": ctx.image_label, "layer": ctx.layer, "target": ctx.target_name,
        "target_index": ctx.target, "schedule": sched.to_dict(), "key": ctx.key_label,
        "figures": {n: {"png": Path(r["png"]).name, "json": Path(r["json"]).name, "caption": r["caption"]}
                    for n, r in results.items()},
        "timings": timings,
        # every file a figures run wrote into this folder, this one's and earlier ones' still there
        "files": sorted(owned | {Path(f).name for f in files} | {"figures.json"}),
    }
    write_json(out_dir / "figures.json", summary)
    files.append(str(out_dir / "figures.json"))
    return {"figures": results, "files": files, "timings": timings, "schedule": sched.to_dict(),
            "out_dir": str(out_dir)}
