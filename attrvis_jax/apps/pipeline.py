"""One image → attribution → visualization → metrics → a folder with PNGs, results.json and
report.html. Shared by `attrvis run` and `attrvis demo`. The render's and the attribution's
files and numbers are written by `attrvis_jax.outputs`, as `RenderResult.save` writes them; the run
adds the metrics, the contact sheet and report.html.

The results.json keys are a public interface (scripts read them): model, layer, target,
target_index, beta, lambda0, method, completeness_error, and per-seed lists pcc, top5_hit,
mask_area, final_loss, plus timings, versions, config, key and files (every file the run wrote).
With a judge: judge, judge_weights, judge_same_model, per-seed judge_rank, judge_top5, judge_top1,
and judge_photo_rank, judge_gray_rank. With groups: groups (apps/extras.py group_results); then
final_loss is the loss of each seed's whole batch (the whole and its groups, summed).
Add keys; never rename them.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Iterable

import jax
import numpy as np

from attrvis_jax import outputs
from attrvis_jax.apps import progress as progress_mod
from attrvis_jax.apps.extras import (channel_grouping, group_results, grouping_images, judge_model, judge_record,
                                     judge_run, render_with_groups, save_groups)
from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import OutputFolder, write_json
from attrvis_jax.pictures import contact_sheet
from attrvis_jax.prng import as_key
from attrvis_jax.apps.report import save_png, write_report


# The folder's rules and its files are the library's (`attrvis_jax.outputs`, shared with
# `RenderResult.save`); the names stay here for the drivers and scripts that import them.
RECORD = outputs.RECORD
run_owns = outputs.owns
earlier_run = outputs.earlier_result


def run_files(seeds: Iterable[int], groups: int = 0) -> list[str]:
    """The files a run of these seeds (and `groups` channel groups) writes, in the order it writes
    them: `outputs.run_files`, the groups' before the contact sheet."""
    seeds = list(seeds)
    files = outputs.run_files(seeds)
    at = files.index("contact_sheet.png")
    return [*files[:at], *group_files(seeds, groups), *files[at:]]


def group_files(seeds: Iterable[int], groups: int) -> list[str]:
    """The files of `groups` channel groups: the grouping, each group's heat map, its pictures and masks."""
    if not groups:
        return []
    return ["groups.npz", *(f"group{g}_heatmap.png" for g in range(1, groups + 1)),
            *(f"seed{s:02d}_group{g}{end}.png" for s in seeds for g in range(1, groups + 1) for end in ("", "_mask"))]


def run_folder(path, overwrite: bool = False) -> OutputFolder:
    """The output folder of a run, checked now: a file, an unwritable place, or a folder holding an
    earlier run (unless `overwrite`) is refused with one AttrvisError."""
    return outputs.result_folder(path, overwrite, what="run")


def versions() -> dict:
    import flax
    import optax

    import attrvis_jax

    return {
        "attrvis_jax": attrvis_jax.__version__, "jax": jax.__version__, "flax": flax.__version__,
        "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind} x{jax.device_count()}",
    }


def run(
    model,
    image,
    out_dir: Path | OutputFolder,
    *,
    layer: str | None = None,
    target=None,
    method: str = "aumann_shapley",
    attribution_config: AttributionConfig | None = None,
    render_config: RenderConfig | None = None,
    run_options: RunOptions | None = None,
    seed: int = 0,
    quiet: bool = False,
    image_label: str | None = None,
    overwrite: bool = False,
    judge=None,
    groups: int | None = None,
    group_images=None,
) -> dict:
    """Run the whole method on one image and write everything into `out_dir`; returns results.

    `out_dir`: a path, or a `run_folder` made where the path entered (which carries its own
    `overwrite`). The run is written into a hidden folder and moved into place only when complete:
    a failed, interrupted or disk-full run leaves no folder behind and an earlier run intact. An
    earlier run (known by its results.json) is replaced only with `overwrite`, then whole; a file
    that is not an earlier run's is never replaced (the run is refused before any work), and the
    folder's other files stay. `layer` and `target` are resolved here, once (unknown names raise
    UnknownNameError). A render whose memory floor (memory.py) exceeds the free memory is refused
    before any work.

    judge: another network (a `Model`, or a name `load_model` takes) that classifies every picture
    through its own preprocessing (`attrvis_jax.judge`); results gain judge_rank and judge_top5 per
    seed, and its rank of the class on the photo and on a gray canvas. Its classes must be the
    model's (refused before any work otherwise).
    groups: split the attribution into this many channel groups (`groups.group_channels`: factor
    analysis of the attributions of the photo's class over `group_images`, any image source a sweep
    takes, e.g. a folder of the class; by default over `GROUP_VIEWS` views of the photo) and render
    them in one batch with the whole; results gain "groups"."""
    folder = out_dir if isinstance(out_dir, OutputFolder) else run_folder(out_dir, overwrite)
    return _run(model, image, folder, layer=layer, target=target, method=method,
                attribution_config=attribution_config, render_config=render_config, run_options=run_options,
                seed=seed, quiet=quiet, image_label=image_label, judge=judge, groups=groups,
                group_images=group_images)


def _run(model, image, folder: OutputFolder, *, layer, target, method, attribution_config, render_config,
         run_options, seed, quiet, image_label, judge=None, groups=None, group_images=None) -> dict:
    from attrvis_jax.attribution import attribute
    from attrvis_jax.attribution.api import resolve_targets
    from attrvis_jax.metrics import evaluate_visualizations, mask_measures
    from attrvis_jax.render import visualize

    from attrvis_jax.memory import check_render_memory

    t_start = time.perf_counter()
    attribution_config = attribution_config or AttributionConfig()
    render_config = render_config or RenderConfig()
    run_options = run_options or RunOptions()
    seed_ids = range(run_options.seeds)
    folder.expect(run_files(seed_ids, groups or 0))
    layer = model.resolve_layer(layer)
    judge = judge_model(model, judge)
    group_sources = grouping_images(model, layer, groups, group_images)
    check_render_memory(model, layer, run_options.seeds * (1 + (groups or 0)),
                        render_config.image_size or model.input_size)
    x = model.load_image(image)
    target = int(resolve_targets(model, x[None], target)[0])  # the library's one rule, run once here
    key = as_key(seed, "seed")  # a 32-bit seed (config.SEED_RANGE): a larger one would alias
    attr_key, render_key = jax.random.split(key)

    t0 = time.perf_counter()
    attr = attribute(model, x, layer=layer, target=target, method=method, config=attribution_config,
                     key=attr_key, progress=progress_mod.bar("attribution", quiet=quiet))
    t_attr = time.perf_counter() - t0
    if not quiet:
        print(attr.summary(), flush=True)

    grouped = None
    if groups:
        t0 = time.perf_counter()
        grouped = channel_grouping(model, image, attr, groups, group_sources, method=method,
                                   config=attribution_config, key=attr_key, quiet=quiet)
        t_attr += time.perf_counter() - t0

    t0 = time.perf_counter()
    bar = progress_mod.bar("visualization", quiet=quiet)
    if grouped is None:
        vis = visualize(model, attr, config=render_config, key=render_key, options=run_options, seed_ids=seed_ids,
                        progress=bar)
    else:  # the whole and its groups as one batch (one compiled render)
        vis = render_with_groups(model, attr, grouped, render_config, render_key, run_options, seed_ids, bar)
    t_render = time.perf_counter() - t0

    t0 = time.perf_counter()
    metrics = evaluate_visualizations(model, attr, vis)
    where = mask_measures(vis.masks, attr.heatmap_image(), attr.beta)
    verdict = None if judge is None else judge_run(judge, model, vis, grouped, image, attr.target,
                                                   render_config.background)
    group_record = None if grouped is None else group_results(model, attr, grouped, vis.seed_ids, verdict)
    t_metrics = time.perf_counter() - t0

    seeds = []
    for i, sid in enumerate(vis.seed_ids):
        name = f"seed{sid:02d}"
        seeds.append({"image": f"{name}.png", "mask": f"{name}_mask.png", "pcc": float(metrics.pcc[i]),
                      "pcc_directed": float(metrics.pcc_directed[i]), "target_rank": int(metrics.target_rank[i]),
                      "top5_hit": bool(metrics.top5_hit[i]), "mask_area": float(vis.mask_area[i]),
                      "heatmap_corr": float(where["heatmap_corr"][i]), "border_share": float(where["border_share"][i]),
                      "final_loss": float(vis.loss[i])})
    if verdict is not None:
        for i, entry in enumerate(seeds):
            entry.update(judge_rank=int(verdict.rank[i]), judge_top5=bool(verdict.top5[i]),
                         judge_top1=verdict.top_names()[i])
    results = {
        **outputs.record(vis, attr),  # the render's and the attribution's numbers, as RenderResult.save writes them
        "pcc": [float(v) for v in metrics.pcc],
        "pcc_raw": [float(v) for v in metrics.pcc_raw],
        "pcc_directed": [float(v) for v in metrics.pcc_directed],
        "heatmap_corr": [float(v) for v in where["heatmap_corr"]],
        "border_share": [float(v) for v in where["border_share"]],
        "top5_hit": [bool(v) for v in metrics.top5_hit],
        "target_rank": [int(v) for v in metrics.target_rank],
        "summary": metrics.summary(),
        "image": image_label or (str(image) if isinstance(image, (str, Path)) else "(array)"),
        "weights": model.weights_source,
        "key": seed,
        "timings": {
            "attribution_s": t_attr,
            "render_s": t_render,
            "render_compile_s": float(vis.timings.get("compile_s", 0.0)),
            "metrics_s": t_metrics,
        },
        "versions": versions(),
        # what an overwrite may replace: an earlier run is known by this list, not by file names
        "files": run_files(vis.seed_ids, 0 if grouped is None else len(grouped["parts"])),
    }
    if verdict is not None:
        results.update(judge_record(verdict, len(vis.seed_ids)))
        results["summary"]["judge_top5_rate"] = float(np.mean(results["judge_top5"]))
    if group_record is not None:
        results["groups"] = group_record

    with folder.writing() as out_dir:  # a hidden folder, moved into place once every file is in it
        outputs.write_files(out_dir, vis, attr)  # the pictures, masks and arrays, as RenderResult.save writes them
        if grouped is not None:
            save_groups(out_dir, x, attr, grouped, group_record)
        captions = [f"{s['image'][:-4]}  r={s['pcc_directed']:.2f}" for s in seeds]
        save_png(out_dir / "contact_sheet.png", contact_sheet(list(vis.composed), captions))
        results["timings"]["total_s"] = time.perf_counter() - t_start
        write_json(out_dir / RECORD, results)
        write_report(out_dir, results, seeds, {"input": "input.png", "heatmap": "heatmap.png",
                                               "contact_sheet": "contact_sheet.png"})
    if not all(results["finite"]):
        bad = [s for s, ok in zip(results["seeds"], results["finite"]) if not ok]
        raise AttrvisError(f"the loss became non-finite for seed(s) {bad}; results for the others are in "
                           f"{folder.path}")
    return results
