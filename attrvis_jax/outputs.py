"""The folder of one render: what `RenderResult.save(folder)` writes, and what `attrvis run` writes
(apps/pipeline.py calls the same functions, so the two never drift).

    input.png          the photo as the network saw it (with an attribution made by `attribute`)
    heatmap.png        the attribution's heat map over the photo (alone for a loaded attribution)
    attribution.npz    the attribution (`Attribution.load` reads it)
    seedNN.png         seed NN's composed picture, background·(1 − M) + X·M (a grouped render: its
                       groups side by side)
    seedNN_mask.png    its mask M (the same layout)
    render.npz         the render's arrays: X, M, the losses, β, λ0, ... (`RenderResult.load` reads it)
    results.json       the numbers of the render and the attribution, and `files`: every file written

`attrvis run` adds the metrics to results.json, contact_sheet.png and report.html. The folder is
written whole (`fileio.OutputFolder`): into a hidden folder first, moved into place when complete.
A folder holding an earlier render or run (known by its results.json) is replaced only with
`overwrite`, then whole; a file that is not an earlier result's is never replaced (refused before
any work), and files of other names stay beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from attrvis_jax import pictures
from attrvis_jax.config import RenderConfig, RunOptions
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import OutputFolder, read_npz, write_bytes, write_json, write_npz
from attrvis_jax.render.optimize import composite

RECORD = "results.json"
ARRAYS = "render.npz"
FORMAT_VERSION = 1
# The names a render's or a run's files can have: only these are ever taken from an earlier record
# (a run's channel groups: groups.npz, groupG_heatmap.png, seedNN_groupG[_mask].png).
_FILE = re.compile(r"input\.png|heatmap\.png|contact_sheet\.png|seed\d+(_group\d+)?(_mask)?\.png|"
                   r"attribution\.npz|group\d+_heatmap\.png|groups\.npz|render\.npz|results\.json|report\.html")
# render.npz: the RenderResult fields that are arrays (composed is X and M composed again on load)
_ARRAY_FIELDS = ("images", "masks", "loss", "mask_area", "beta", "lambda0", "reference", "finite", "stopped_at",
                 "loss_history")


def owns(name: str) -> bool:
    """Whether `name` is a name a render's or a run's file can have."""
    return _FILE.fullmatch(name) is not None


def seed_files(seeds: Iterable[int]) -> list[str]:
    return [name for s in seeds for name in (f"seed{s:02d}.png", f"seed{s:02d}_mask.png")]


def result_files(seeds: Iterable[int], attribution: bool = False, photo: bool = False) -> list[str]:
    """The files `save` writes for these seeds (with an attribution; one that has its photo), in
    the order it writes them, results.json last."""
    head = ["input.png"] if attribution and photo else []
    head += ["heatmap.png", "attribution.npz"] if attribution else []
    return [*head, *seed_files(seeds), ARRAYS, RECORD]


def run_files(seeds: Iterable[int]) -> list[str]:
    """The files `attrvis run` writes for these seeds, in the order it writes them: `save`'s (with
    the attribution and its photo), the contact sheet, results.json, report.html."""
    return [*result_files(seeds, attribution=True, photo=True)[:-1], "contact_sheet.png", RECORD, "report.html"]


def _old_run_files(seeds: Iterable[int]) -> list[str]:
    """What a run wrote before results.json listed its files."""
    return ["input.png", "heatmap.png", "attribution.npz", *seed_files(seeds), "contact_sheet.png", RECORD,
            "report.html"]


def earlier_result(folder: Path) -> list[str] | None:
    """The files the earlier render or run in `folder` wrote, as its results.json records them (its
    "files"; older runs' from their "seeds"); None if `folder` holds no such results.json. A name
    that is not a render's or a run's file name is never taken from it."""
    try:
        results = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or not {"layer", "seeds"} <= results.keys():
        return None
    files = results.get("files")
    if not isinstance(files, list):
        if not {"model", "target_index"} <= results.keys():
            return None
        seeds = results["seeds"] if isinstance(results["seeds"], list) else []
        files = _old_run_files(s for s in seeds if isinstance(s, int) and not isinstance(s, bool) and s >= 0)
    return [name for name in files if isinstance(name, str) and owns(name)]


def result_folder(path, overwrite: bool = False, what: str = "run", how: str = "--overwrite") -> OutputFolder:
    """The output folder of a render or run, checked now: a file, an unwritable place, or a folder
    holding an earlier one (unless `overwrite`) is refused with one AttrvisError (`how`: what the
    message tells to pass to replace it)."""
    return OutputFolder(path, earlier_result, overwrite, what=what, record=RECORD, how=how)


# ---- the numbers -------------------------------------------------------------------------------------
def _first_or_all(values, grouped: bool):
    arr = np.asarray(values)
    return arr.tolist() if grouped else float(arr.ravel()[0])


def record(result, attribution=None) -> dict:
    """The numbers of results.json that come from the render (and the attribution): plain JSON
    values, per seed in `seeds` order (a grouped render: one list per seed, its groups')."""
    out = {}
    if attribution is not None:
        out.update({
            "model": attribution.model,
            "layer": attribution.layer,
            "target": attribution.target_name,
            "target_index": int(attribution.target),
            "method": attribution.method,
            "completeness_error": attribution.completeness_error,
            "relative_completeness_error": attribution.relative_completeness_error,
            "logit_a": float(attribution.logit),
            "logit_b": attribution.logit_baseline,
        })
    area = np.asarray(result.mask_area)
    out.update({
        "layer": result.layer,
        "seeds": [int(s) for s in result.seed_ids],
        "perturbation": result.config.perturbation,
        "beta": _first_or_all(result.beta, result.grouped),
        "lambda0": _first_or_all(result.lambda0, result.grouped),
        "reference_score": _first_or_all(result.reference, result.grouped),
        "mask_area": area.tolist() if result.grouped else [float(v) for v in area.reshape(len(area), -1)[:, 0]],
        "final_loss": [float(v) for v in result.loss],
        "finite": [bool(v) for v in result.finite],
        "stopped_at": [int(v) for v in result.stopped_at],
    })
    # "render" lists the run options beside the render config, as results.json did before they
    # were a class of their own
    config = {"render": {**result.config.to_dict(), **result.options.to_dict()}}
    if attribution is not None:
        config = {"attribution": attribution.config.to_dict(), **config}
    out["config"] = config
    return out


# ---- the files -----------------------------------------------------------------------------------------
def _row(pictures, grouped: bool) -> np.ndarray:
    """One seed's picture: itself, or its groups side by side."""
    return np.concatenate(list(pictures), axis=1) if grouped else np.asarray(pictures)


def save_png(path, image) -> Path:
    """Write a float [0, 1] or uint8 image as PNG, atomically."""
    write_bytes(Path(path), pictures.png_bytes(image))
    return Path(path)


def write_files(folder: Path, result, attribution=None) -> list[str]:
    """Write the render's (and the attribution's) files, all but results.json, into `folder` (an
    existing folder, e.g. an `OutputFolder.writing()` draft), in `result_files` order; returns
    their names."""
    folder = Path(folder)
    names = []
    if attribution is not None:
        photo = None if attribution.image is None else np.asarray(attribution.image, np.float32) / (
            255.0 if attribution.image.dtype == np.uint8 else 1.0)
        if photo is not None:
            save_png(folder / "input.png", attribution.image)
            names.append("input.png")
            heat = pictures.heatmap_overlay(photo, attribution.heatmap)
        else:
            size = (attribution.input_size, attribution.input_size)
            heat = pictures.colorize(pictures.resize(attribution.heatmap, size))
        save_png(folder / "heatmap.png", heat)
        attribution.save(folder / "attribution.npz")
        names += ["heatmap.png", "attribution.npz"]
    for i, seed in enumerate(result.seed_ids):
        save_png(folder / f"seed{seed:02d}.png", _row(result.composed[i], result.grouped))
        save_png(folder / f"seed{seed:02d}_mask.png", _row(result.masks[i], result.grouped))
        names += [f"seed{seed:02d}.png", f"seed{seed:02d}_mask.png"]
    meta = {"format": FORMAT_VERSION, "config": result.config.to_dict(), "options": result.options.to_dict(),
            "layer": result.layer, "seed_ids": [int(s) for s in result.seed_ids], "grouped": bool(result.grouped),
            "timings": {k: v for k, v in result.timings.items() if isinstance(v, (int, float))}}
    write_npz(folder / ARRAYS, meta, {name: np.asarray(getattr(result, name)) for name in _ARRAY_FIELDS})
    return names + [ARRAYS]


def save(result, path, attribution=None, overwrite: bool = False) -> Path:
    """`RenderResult.save`: the folder `path` with the render's files (module docstring)."""
    if attribution is not None and result.layer is not None and attribution.layer != result.layer:
        raise AttrvisError(f"the render is at layer {result.layer!r}, the attribution at {attribution.layer!r}: "
                           "save a render with the attribution it was made from")
    folder = result_folder(path, overwrite, what="result", how="overwrite=True")
    names = result_files(result.seed_ids, attribution is not None,
                         attribution is not None and attribution.image is not None)
    folder.expect(names)
    with folder.writing() as draft:
        written = write_files(draft, result, attribution)
        write_json(draft / RECORD, {**record(result, attribution), "files": written + [RECORD]})
    return folder.path


def read(path) -> dict:
    """The fields of the `RenderResult` a `save` (or `attrvis run`) wrote into the folder `path` (or
    its render.npz itself): `RenderResult.load`. composed is computed again from X and M (the same
    bits); snapshots are not kept."""
    path = Path(path).expanduser()
    file = path / ARRAYS if path.is_dir() else path
    meta, arrays = read_npz(file, "render", FORMAT_VERSION)
    missing = [n for n in _ARRAY_FIELDS if n not in arrays] + [
        n for n in ("config", "options", "layer", "seed_ids", "grouped") if n not in meta]
    if missing:
        raise AttrvisError(f"{file} is not a complete render file: it lacks {', '.join(missing)}")
    try:
        config, options = RenderConfig.from_dict(meta["config"]), RunOptions.from_dict(meta["options"])
    except (AttrvisError, TypeError) as e:
        raise AttrvisError(f"{file} is not a complete render file: its config: {e}") from None
    images, masks = arrays["images"], arrays["masks"]
    return dict(
        **{name: arrays[name] for name in _ARRAY_FIELDS},
        composed=composite(images, masks, config.background), snapshots={}, config=config, options=options,
        layer=meta["layer"], seed_ids=tuple(int(s) for s in meta["seed_ids"]), grouped=bool(meta["grouped"]),
        timings=dict(meta.get("timings", {})))


__all__ = ["RECORD", "earlier_result", "owns", "read", "record", "result_files", "result_folder", "run_files",
           "save", "write_files"]
