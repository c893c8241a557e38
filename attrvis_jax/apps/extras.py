"""What `attrvis run --judge MODEL --groups N` adds to a run (pipeline.py calls these): a second
network's verdict on every picture, and the attribution's channel groups rendered beside the whole.

The library does the work (`attrvis_jax.judge`, `attrvis_jax.groups`); here are the run's choices
(which images the grouping comes from), its records (results.json's "judge_*" keys and "groups")
and its files (groups.npz, group<g>_heatmap.png, seed<s>_group<g>[_mask].png).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from attrvis_jax.apps import progress as progress_mod
from attrvis_jax.errors import AttrvisError

# The views of the photo the grouping uses when no images of the class are given: the photo, its
# mirror image and their 80% center crops (groups.VIEWS; the figures' reduced schedule takes as many).
GROUP_VIEWS = 4


# ---- before any work -----------------------------------------------------------------------------------
def judge_model(model, judge):
    """The judge as a Model (a name is loaded: an unknown one is an UnknownNameError), its classes
    checked against the model's; None for no judge."""
    if judge is None:
        return None
    from attrvis_jax.judge import check_judge
    from attrvis_jax.models import Model, load_model

    judge = judge if isinstance(judge, Model) else load_model(judge)
    check_judge(model, judge)
    return judge


def grouping_images(model, layer: str, groups: int | None, group_images):
    """The sources of the grouping's images (`apps.sources` records; None: views of the photo), with
    the group count checked against the layer's channels: both before any work."""
    if not groups:
        if group_images is not None:
            raise AttrvisError("group images are for --groups: name a group count too")
        return None
    from attrvis_jax.groups import check_group_count

    check_group_count(groups, model.layer_shapes()[layer][-1], layer)
    if group_images is None:
        return None
    from attrvis_jax.apps.sources import resolve_sources

    return resolve_sources([str(group_images)] if isinstance(group_images, (str, Path)) else list(group_images))


# ---- the grouping and the render -------------------------------------------------------------------
def channel_grouping(model, image, attr, groups: int, sources, *, method, config, key, quiet) -> dict:
    """Channel groups of the attribution's layer and class, from the attributions of the photo and
    `sources` (records of images of the class) or, without them, of `GROUP_VIEWS` views of the photo;
    then the photo's attribution split into them (`groups.split_attribution`)."""
    from attrvis_jax.groups import group_channels, make_views, split_attribution

    if sources is None:
        names, images = make_views(model, image, GROUP_VIEWS)
        names, images, source = names[1:], images[1:], "views"  # the first view is the photo: attributed already
    else:
        names = [record.id for record in sources]
        images = np.stack([model.load_image(record.load()) for record in sources])
        source = "images"
    grouping = group_channels(model, attr, images, groups, method=method, config=config, key=key,
                              progress=progress_mod.bar(f"attribution of {len(images)} grouping images", quiet=quiet))
    with warnings.catch_warnings():  # a factor without attribution here is said below, once
        warnings.simplefilter("ignore")
        parts = split_attribution(attr, grouping)
    empty = [int(g) for g in range(len(grouping)) if g not in {p["group"] for p in parts}]
    if empty and not quiet:
        print(f"factor(s) {empty} of the grouping hold no positive attribution of this photo: "
              f"{len(parts)} groups are shown", flush=True)
    return {"grouping": grouping, "parts": parts, "source": source, "images": names, "requested": groups,
            "left_out": empty}


def render_with_groups(model, attr, grouped: dict, config, key, options, seed_ids, progress):
    """The whole and its groups as one grouped render (`groups.visualize_groups(together=True)`):
    returns the whole's RenderResult and keeps the groups' in grouped["render"]."""
    from attrvis_jax.groups import visualize_groups

    if tuple(seed_ids) != tuple(range(options.seeds)):
        raise AttrvisError("a grouped run renders seeds 0 .. seeds - 1")
    shown = visualize_groups(model, attr, grouped["grouping"], config, key, options=options, progress=progress,
                             together=True)
    grouped["render"] = shown.groups
    return shown.integral


# ---- the verdict and the records -----------------------------------------------------------------------
def judge_run(judge, model, vis, grouped, image, target: int, gray: float):
    """The judge's verdict on the run's pictures: the seeds' first, then every group's (seed-major),
    in one call (the photo and the gray canvas ranked once)."""
    from attrvis_jax.judge import judge_pictures

    pictures = np.asarray(vis.composed)
    if grouped is not None:
        more = np.asarray(grouped["render"].composed)
        pictures = np.concatenate([pictures, more.reshape(-1, *more.shape[2:])])
    return judge_pictures(judge, pictures, target, photo=image, gray=gray, model=model)


def judge_record(verdict, seeds: int) -> dict:
    """results.json's judge keys, per seed of the whole (the groups' are in "groups")."""
    record = verdict.to_dict()
    for key in ("judge_rank", "judge_top5", "judge_top1"):
        record[key] = record[key][:seeds]
    return record


def group_results(model, attr, grouped: dict, seed_ids, verdict=None) -> dict:
    """results.json's "groups": where the grouping came from, and per group its channels, its share
    of R⁺, its top channels in this photo, β, and per seed PCC with its own attribution, the target's
    rank, mask area (and the judge's rank)."""
    from attrvis_jax.groups import group_metrics, top_channels

    render, parts, grouping = grouped["render"], grouped["parts"], grouped["grouping"]
    metrics = group_metrics(model, render.composed, parts, attr)
    total = float(np.sum(attr.positive))
    seeds = len(seed_ids)
    judged = None if verdict is None else verdict.rank[seeds:].reshape(seeds, len(parts))
    entries = []
    for j, part in enumerate(parts):
        g = j + 1  # groups are numbered as shown; "factor" is the factor analysis's own index
        entry = {
            "group": g, "factor": int(part["group"]), "channels": [int(c) for c in part["channels"]],
            "share_of_r_plus": float(np.sum(part["positive"]) / total) if total > 0 else 0.0,
            "top_channels": top_channels(part, total), "beta": float(part["beta"]),
            "heatmap": f"group{g}_heatmap.png",
            "images": [f"seed{s:02d}_group{g}.png" for s in seed_ids],
            "masks": [f"seed{s:02d}_group{g}_mask.png" for s in seed_ids],
            "pcc": [float(v) for v in metrics["pcc"][:, j]],
            "pcc_directed": [float(v) for v in metrics["pcc_directed"][:, j]],
            "target_rank": [int(v) for v in metrics["target_rank"][:, j]],
            "top5_hit": [bool(v) for v in metrics["top5_hit"][:, j]],
            "mask_area": [float(v) for v in np.asarray(render.mask_area)[:, j]],
        }
        if judged is not None:
            entry["judge_rank"] = [int(v) for v in judged[:, j]]
            entry["judge_top5"] = [bool(v < 5) for v in judged[:, j]]
        entries.append(entry)
    return {"requested": grouped["requested"], "source": grouped["source"], "images": grouped["images"],
            "n_factors": grouping.n_factors, "explained_variance": grouping.to_dict()["explained_variance"],
            "factors_left_out": grouped["left_out"], "file": "groups.npz",
            "r_plus_coverage": float(sum(e["share_of_r_plus"] for e in entries)), "groups": entries}


def save_groups(out_dir: Path, x, attr, grouped: dict, record: dict) -> None:
    """groups.npz, each group's heat map over the photo (drawn as the whole's), its pictures and masks."""
    from attrvis_jax.apps.report import heatmap_overlay, save_png
    from attrvis_jax.attribution.postprocess import heatmap

    grouped["grouping"].save(out_dir / record["file"])
    render = grouped["render"]
    percentile = attr.config.heatmap_percentile
    for j, (part, entry) in enumerate(zip(grouped["parts"], record["groups"])):
        save_png(out_dir / entry["heatmap"], heatmap_overlay(x, np.asarray(heatmap(part["positive"], percentile))))
        for i, (picture, mask) in enumerate(zip(entry["images"], entry["masks"])):
            save_png(out_dir / picture, render.composed[i, j])
            save_png(out_dir / mask, render.masks[i, j])
