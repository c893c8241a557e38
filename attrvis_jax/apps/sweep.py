"""Batched, sharded, resumable sweeps: images × targets × layers × perturbations × seeds.

    config = load_spec("sweep.toml")                  # or SweepConfig(images=(...), layers=(...), ...)
    result = run_sweep(config, "out/")                # resumes if out/ holds a partial run
    result.summary                                     # PCC / top-5 per layer × perturbation

The work is split in two kinds of units:
- an *attribution* per (image, target, layer), saved as `attributions/<unit>.npz` when computed
  (batched over images of the same layer; each image's baseline init comes from its own key);
- an *item* per (image, target, layer, perturbation, seed): one visualization and its metrics.
  Items of one (layer, perturbation) run as fixed-size batches whose batch axis is sharded over a
  `jax.sharding.Mesh` of every device (GPUs, TPU cores, or host CPUs forced with
  `--xla_force_host_platform_device_count`); the network's variables are replicated. Each batch's
  metrics come from one sharded forward pass. A finished batch's pictures are written atomically and
  then its items are committed to the store (store.py) in one transaction.

Keys: unit key u = fold_in(key(config.key), crc32(unit id)); the attribution uses fold_in(u, 0) and
the visualizations fold_in(u, 1) exactly like `visualize(key=...)` does, so seed s of an item is the
seed s of `visualize(model, attribution, key=fold_in(u, 1))` — whichever batch or device it ran on.

Multi-host: call `devices.init_distributed()` first in every process (it wraps `jax.distributed.initialize`);
every process plans the same batches, feeds its own shards (`jax.make_array_from_callback`), and
process 0 alone writes files and the store, which must live on a filesystem all hosts share.

The folder: one sweep at a time (a lock that dies with its process, sweepdir.py); everything that
can refuse is checked before the store opens; results pin the settings that made them (items and
pictures all of them, attributions the attribution's), so a folder never mixes two settings, and a
session that failed before any result pins nothing. Ctrl-C stops at the next chunk (interrupt.py).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import re
import shutil
import sqlite3
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from attrvis_jax.config import RenderConfig, SweepConfig, current_fields
from attrvis_jax.devices import agree, batch_width, device_mesh, gather, padded, rows_per_memory, shard
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import check_output_folder, input_file, write_json, write_text
from attrvis_jax.groups import check_group_count
from attrvis_jax.memory import check_render_memory
from attrvis_jax.apps import interrupt
from attrvis_jax.apps.store import JSON, JUDGE_COLUMNS, NAMES, ResultStore, differences, other_settings, peek, plain
from attrvis_jax.apps.sweepdir import FolderLock, reading

Progress = Callable[[int, int], None]
BATCHED_METHODS = ("aumann_shapley",)  # methods whose key may be one key per image (see baseline.py)


# ---- the spec --------------------------------------------------------------------------------------
def load_spec(path) -> SweepConfig:
    """A SweepConfig from a .json or .toml file (unknown fields are an error, not ignored)."""
    try:
        path = input_file(path, "sweep spec")
        text = path.read_text()
    except OSError as e:
        raise AttrvisError(f"cannot read the sweep spec {path}: {e.strerror or e}") from None
    except AttrvisError as e:
        raise AttrvisError(f"cannot read the sweep spec: {e}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise AttrvisError(f"{path} is not a valid {path.suffix.lstrip('.') or 'JSON'} sweep spec: {e}") from None
    if not isinstance(data, dict):
        raise AttrvisError(f"{path}: the sweep spec must be a table/object of fields")
    try:
        return SweepConfig.from_dict(data)
    except AttrvisError as e:
        raise AttrvisError(f"{path}: {e}") from None


# ---- the plan --------------------------------------------------------------------------------------
def file_safe(text: str) -> str:
    """`text` as part of a file name: each run of characters other than letters, digits and . _ -
    becomes one underscore."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


@dataclasses.dataclass(frozen=True)
class Unit:
    """One attribution: an image, a target spec (name, index, top1 or label) and a layer."""

    image: object  # sources.ImageRecord
    target: str
    layer: str

    @property
    def id(self) -> str:
        return f"{self.image.id}|{self.target}|{self.layer}"

    @property
    def slug(self) -> str:
        """A file name for this unit: readable, and unique by its hash."""
        readable = file_safe(f"{self.image.id}_{self.target}_{self.layer}").strip("_")
        return f"{readable[:60]}-{zlib.crc32(self.id.encode()):08x}"


@dataclasses.dataclass(frozen=True)
class Item:
    unit: Unit
    perturbation: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.unit.id}|{self.perturbation}|{self.seed}"


def plan(config: SweepConfig, records, model) -> tuple[list[Unit], list[Item]]:
    """Every unit and item of the sweep, in a fixed order (images, targets, layers, perturbations, seeds)."""
    layers = [model.resolve_layer(name) for name in config.layers]
    if len(set(layers)) != len(layers):
        raise AttrvisError(f"layers name the same layer twice: {list(config.layers)} -> {layers}")
    units = [Unit(r, t, layer) for r in records for t in config.targets for layer in layers]
    items = [Item(u, p, s) for u in units for p in config.perturbations for s in range(config.seeds)]
    return units, items


def unit_key(config: SweepConfig, unit: Unit) -> jax.Array:
    return jax.random.fold_in(jax.random.key(config.key), zlib.crc32(unit.id.encode()))


def fingerprint(config: SweepConfig) -> dict:
    """What must not change between a sweep and its resumption (lists may grow; items are keyed):
    everything but the lists, how it runs, the render config's perturbation (the sweep's list
    replaces it) and the judge (an evaluation: each item records the judge that judged it, and
    items a new judge has not judged are judged from their pictures, `_judge_stored`). The group
    count is pinned: with groups, the whole is rendered in a batch with them."""
    render = {k: v for k, v in config.render.to_dict().items() if k != "perturbation"}
    return {"model": config.model, "weights": config.weights, "method": config.method, "key": config.key,
            "attribution": config.attribution.to_dict(), "render": render, "groups": config.groups}


# RenderConfig fields added after sweeps were first stored, with what every earlier sweep ran.
NEW_RENDER_FIELDS = {"compute_dtype": "float32", "parameterization": "fft", "relu_redirect_steps": 0, "alpha": False}


def upgrade_fingerprint(stored: dict) -> dict:
    """A fingerprint as this version writes it: stores from before `RunOptions` also pinned
    render.engine, which never changed a result; the render fields added since take the value
    those stores ran with (NEW_RENDER_FIELDS); renamed ones their new names (config.RENAMED_FIELDS)."""
    render = current_fields(RenderConfig, {k: v for k, v in stored.get("render", {}).items() if k != "engine"})
    for name, value in NEW_RENDER_FIELDS.items():
        render.setdefault(name, value)
    return {"groups": None, **stored, "render": render}  # stores from before groups rendered none


# ---- running -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """rows: one dict per item of this sweep (store.NAMES); summary: one per layer × perturbation."""

    rows: list
    summary: list
    out_dir: Path
    ran: int  # items computed by this call (the rest were already in the store)
    timings: dict

    def _repr_html_(self) -> str:
        """The summary table (layer × perturbation), each row with the pictures of its first items."""
        import html as html_mod

        from attrvis_jax import pictures

        head = "".join(f"<th style='text-align:left;padding-right:10px'>{k}</th>" for k in (*SUMMARY_KEYS, "pictures"))
        body = []
        for entry in self.summary:
            shown = []
            for row in self.rows:
                if (row["layer"], row["perturbation"]) == (entry["layer"], entry["perturbation"]) and len(shown) < 4:
                    thumb = saved_picture(self.out_dir, row["picture"], 2 * THUMBNAIL)
                    if thumb is not None:
                        shown.append(pictures.img_tag(thumb, THUMBNAIL, row["id"]))
            cells = "".join(f"<td style='padding-right:10px'>{f'{entry[k]:.3f}' if isinstance(entry[k], float) else html_mod.escape(str(entry[k]))}</td>"
                            for k in SUMMARY_KEYS)
            body.append(f"<tr>{cells}<td style='white-space:nowrap'>{''.join(shown)}</td></tr>")
        return (f"<p style='font-size:13px'>{len(self.rows)} items in {html_mod.escape(str(self.out_dir))} "
                f"({self.ran} run now)</p><table style='font-size:13px'><tr>{head}</tr>{''.join(body)}</table>")

    def show(self) -> None:
        """Display `_repr_html_` in the running notebook."""
        from attrvis_jax import pictures

        pictures.show(self)


# px: the width a picture is shown at in a sweep's summary; its thumbnails are twice that on a
# side (sharp on a high-density screen; a 224² picture would be 2.4 times the pixels, and a page
# shows 24 of them)
THUMBNAIL = 72


def saved_picture(out_dir: Path, path: str | None, side: int | None = None) -> np.ndarray | None:
    """A picture a sweep saved (a row's `picture`, `mask` or a group's, relative to `out_dir`) as
    RGB uint8, shrunk to at most `side` px on a side; None where the row has none (save_images
    off) or the file is gone."""
    from PIL import Image

    if not path or not (Path(out_dir) / path).is_file():
        return None
    with Image.open(Path(out_dir) / path) as img:
        picture = img.convert("RGB")
    if side is not None:
        picture.thumbnail((side, side))
    return np.asarray(picture)


def run_sweep(
    config: SweepConfig,
    out_dir,
    *,
    model=None,
    mesh: Mesh | None = None,
    progress: Progress | None = None,
    attribution_progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    finish: Callable[[SweepResult], object] | None = None,
) -> SweepResult:
    """Run (or resume) the sweep into `out_dir`; returns every item's row and the summary table.

    One sweep at a time holds the folder (sweepdir.FolderLock); `finish(result)` runs while it still
    does (the ablation writes its table then). Everything that can refuse is checked before the
    store is opened or anything is written: another sweep in the folder, results of other settings
    in it, the spec against the model, and the plan's size against memory and disk."""
    from attrvis_jax.models import load_model
    from attrvis_jax.apps.sources import resolve_sources

    out_dir = Path(out_dir)
    check_output_folder(out_dir)  # a file, or no place to write: refused now
    writer = jax.process_index() == 0
    log = log or (lambda message: None)
    lock = _lock(out_dir, writer)
    opened = False
    try:
        stored, done = peek(out_dir / "store.sqlite")
        _check_folder(out_dir, config, stored, len(done))
        records = resolve_sources(list(config.images), limit=config.limit)
        model = model or load_model(config.model, weights=config.weights)
        mesh = mesh or device_mesh()
        size = config.render.image_size or model.input_size
        _check_memory(config, len(records))
        units, items = plan(config, records, model)
        _check_spec(config, model, records)
        judging = _judging(config, model)  # an unknown judge, or one of other classes: refused now
        todo = [item for item in items if item.id not in done]
        needed = list(dict.fromkeys(item.unit for item in todo))
        attributions = _saved_attributions(config, model, needed, out_dir)
        _check_disk(config, model, [unit for unit in needed if unit not in attributions], len(todo), size, out_dir)
        # A batch never pads past the largest (layer, perturbation) group: one shape, compiled once.
        width = batch_width(config.batch, len(records) * len(config.targets) * config.seeds, mesh)
        for layer in dict.fromkeys(unit.layer for unit in units):  # a batch too big: refused before any work
            if config.groups:
                check_group_count(config.groups, model.layer_shapes()[layer][-1], layer)
            check_render_memory(model, layer, rows_per_memory(width, mesh) * (1 + (config.groups or 0)), size,
                                what="batch")
        # Opened only now, when nothing can refuse any more: it pins the settings once it holds an
        # item (and one that holds none pins nothing: store.py).
        store = ResultStore(out_dir / "store.sqlite", fingerprint(config), upgrade=upgrade_fingerprint)
        opened = True
        try:
            with _writes(out_dir), interrupt.deferred() as checkpoint:
                if writer:
                    write_json(out_dir / "sweep.json", config.to_dict())
                log(f"{len(items)} items ({len(units)} attributions x {len(config.perturbations)} perturbations x "
                    f"{config.seeds} seeds); {len(items) - len(todo)} already done; {mesh.size} device(s)")
                if judging is not None and judging.same_model:
                    log(f"the judge {judging.name} is the network itself: its verdict is the network's own")
                timings = {"attribution_s": 0.0, "render_s": 0.0, "compile_s": 0.0, "devices": mesh.size,
                           "processes": jax.process_count()}
                if todo:
                    t0 = time.perf_counter()
                    _attributions(config, model, needed, attributions, out_dir, writer,
                                  checkpoint.wrap(attribution_progress), checkpoint)
                    groupings = _groupings(config, model, needed, attributions, out_dir, writer, checkpoint)
                    timings["attribution_s"] = time.perf_counter() - t0
                    _render(config, model, todo, attributions, mesh, store, out_dir, writer, timings,
                            checkpoint.wrap(progress), len(items) - len(todo), len(items), width, checkpoint,
                            judging=judging, groupings=groupings)
                elif progress is not None:
                    progress(len(items), len(items))
                if judging is not None and writer:
                    _judge_stored(judging, store, items, out_dir, log)
                rows = store.rows(item.id for item in items)
                summary = summarize(rows, judge=config.judge)
                if writer:
                    _export(out_dir, rows, summary, timings, len(todo))
        finally:
            store.close()
        result = SweepResult(rows=rows, summary=summary, out_dir=out_dir, ran=len(todo), timings=timings)
        if finish is not None:
            with _writes(out_dir):
                finish(result)
        return result
    finally:
        if lock is not None:
            lock.release(undo=not opened)


def _lock(out_dir: Path, writer: bool) -> FolderLock | None:
    """The folder's lock, taken by the process that writes (process 0); every process stops when
    it could not take it."""
    lock = error = None
    if writer:
        try:
            lock = FolderLock(out_dir)
        except AttrvisError as e:
            error = e
    if not agree(error is None):
        raise error or AttrvisError(f"process 0 could not lock {out_dir} (its error says why)")
    return lock


ATTRIBUTION_SETTINGS = ("model", "weights", "method", "key", "attribution")  # what an attribution depends on


def _check_folder(out_dir: Path, config: SweepConfig, stored: dict | None, count: int) -> None:
    """Refuse a folder holding results made under other settings, whether its store says so or,
    without one, its sweep.json. Results pin what made them: items and pictures every setting,
    attributions the attribution's; a folder with none of them (a session that failed early) pins
    nothing. Attributions are also checked one by one when reused (`_check_reusable`)."""
    wanted = plain(fingerprint(config))
    where = ""
    if stored is not None:
        recorded = plain(upgrade_fingerprint(stored))
    else:
        recorded, where = _spec_settings(out_dir / "sweep.json"), "; recorded in sweep.json, there is no store.sqlite"
    pictures = _holds(out_dir / "images", "*.png")
    if recorded is None:
        if pictures:
            raise AttrvisError(f"{out_dir} holds pictures (images/) but no store.sqlite or sweep.json that says "
                               "which settings made them: move images/ away, or use another --out directory")
        return
    pinned = wanted if count or pictures else ATTRIBUTION_SETTINGS if _holds(out_dir / "attributions", "*.npz") else ()
    changed = [name for name in differences(recorded, wanted) if name.split(".")[0] in pinned]
    if changed:
        raise other_settings(out_dir, changed, where)


def _spec_settings(path: Path) -> dict | None:
    """The fingerprint of the sweep.json an earlier session wrote (None without one)."""
    if not path.exists():
        return None
    with reading(path, "writes it again"):
        spec = json.loads(path.read_text())
        if isinstance(spec, dict) and isinstance(spec.get("render"), dict):  # written by an earlier version
            spec["render"] = current_fields(RenderConfig, spec["render"])
        return plain(fingerprint(SweepConfig.from_dict(spec)))


def _holds(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and next(folder.rglob(pattern), None) is not None


def _check_spec(config: SweepConfig, model, records) -> None:
    """What would otherwise refuse only once the sweep runs: the method, the key, the targets."""
    from attrvis_jax.attribution.api import resolve_method

    resolve_method(config.method)
    try:
        jax.random.key(config.key)
    except (OverflowError, TypeError, ValueError) as e:
        raise AttrvisError(f"key {config.key!r} is not a PRNG seed: {e}") from None
    for target in config.targets:
        for record in records if target == "label" else records[:1]:
            _fixed_target(model, target, record)


@contextlib.contextmanager
def _writes(out_dir: Path):
    """A write into the folder that fails (a full disk, a folder made read-only): one error; what
    finished is in the store."""
    try:
        yield
    except sqlite3.OperationalError as e:
        raise _unwritable(out_dir / "store.sqlite", e) from None
    except OSError as e:
        if e.filename is not None and not Path(e.filename).absolute().is_relative_to(out_dir.absolute()):
            raise
        raise _unwritable(e.filename or out_dir, e.strerror or e) from None


def _unwritable(what, reason) -> AttrvisError:
    return AttrvisError(f"cannot write {what}: {reason}; every finished item is in the store: fix that and rerun "
                        "to resume")


# ---- how big a sweep may be -----------------------------------------------------------------------
PLAN_BYTES = 6000  # memory per item: plan, store rows and the results files (measured: 5.8 kB)
ROW_BYTES = 500  # disk per item in the store
PICTURE_BYTES_PER_PIXEL = 1.0  # the two PNGs of an item (measured: 1.0 at 224x224)
ATTRIBUTION_BYTES_PER_VALUE = 6  # an .npz: four float32 arrays of the layer's shape (measured: 5, compressed)


def _check_memory(config: SweepConfig, n_images: int) -> None:
    """Refuse, before planning, a sweep whose plan and results cannot fit in memory, with the numbers."""
    from attrvis_jax.memory import _gb, host_available_bytes

    factors = ((n_images, "image"), (len(config.targets), "target"), (len(config.layers), "layer"),
               (len(config.perturbations), "perturbation"), (config.seeds, "seed"))
    items = math.prod(n for n, _ in factors)
    available = host_available_bytes()
    if available is not None and items * PLAN_BYTES > available:
        shown = " x ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in factors)
        raise AttrvisError(f"the sweep has {items} items ({shown}): planning and recording them needs about "
                           f"{_gb(items * PLAN_BYTES)} of memory, more than the {_gb(available)} available; "
                           "split it into smaller sweeps (fewer seeds or images, or a limit)")


def _check_disk(config: SweepConfig, model, compute, todo: int, size: int, out_dir: Path) -> None:
    """Refuse a sweep whose store rows, pictures (`todo` items) and attributions (`compute` units)
    cannot fit on the free disk."""
    from attrvis_jax.memory import _gb

    pictures = 1 + (config.groups or 0)  # the whole's, and each group's
    per_item = ROW_BYTES + (pictures * PICTURE_BYTES_PER_PIXEL * size * size if config.save_images else 0)
    shapes = model.layer_shapes(model.input_size)
    attributions = sum(math.prod(shapes[unit.layer]) * ATTRIBUTION_BYTES_PER_VALUE for unit in compute)
    need = int(todo * per_item + attributions)
    free = shutil.disk_usage(_existing(out_dir)).free
    if need > free:
        pictures = f", {todo} x 2 pictures of {size}x{size}" if config.save_images else ""
        raise AttrvisError(f"the sweep needs about {_gb(need)} on disk ({todo} items to store{pictures}, "
                           f"{len(compute)} attributions), more than the {_gb(free)} free at {out_dir}; free space, "
                           "set save_images = false, or split it into smaller sweeps")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _saved_attributions(config, model, units, out_dir: Path) -> dict:
    """unit -> Attribution for those of `units` saved in attributions/, each checked to be what this
    sweep would compute (`_check_reusable`)."""
    from attrvis_jax.attribution import Attribution

    out = {}
    for unit in units:
        path = out_dir / "attributions" / f"{unit.slug}.npz"
        if path.exists():
            with reading(path, "computes it again"):
                out[unit] = Attribution.load(path)
            _check_reusable(path, out[unit], unit, config, model)
    return out


def _attributions(config, model, units, out: dict, out_dir: Path, writer: bool, progress, checkpoint=None) -> None:
    """Compute (and save) the attributions of `units` that `out` (unit -> Attribution) lacks, into
    it; `checkpoint` is called between chunks of the path (interrupt.py)."""
    from attrvis_jax.attribution import attribute

    folder = out_dir / "attributions"
    missing = [unit for unit in units if unit not in out]
    batch = config.batch if config.method in BATCHED_METHODS else 1
    by_layer = defaultdict(list)
    for unit in missing:
        by_layer[unit.layer].append(unit)
    done, total = 0, len(missing)
    images: dict = {}
    for layer, layer_units in by_layer.items():
        for start in range(0, len(layer_units), batch):
            chunk = layer_units[start : start + batch]
            x = np.stack([_image(model, unit.image, images) for unit in chunk])
            targets = _targets(model, chunk, x)
            keys = jnp.stack([jax.random.fold_in(unit_key(config, u), 0) for u in chunk])
            result = attribute(model, x, layer, targets, config.method, config=config.attribution,
                               key=keys if batch > 1 else keys[0], progress=checkpoint)
            for unit, attr in zip(chunk, result):
                out[unit] = attr
                if writer:
                    attr.save(folder / f"{unit.slug}.npz")
            done += len(chunk)
            if progress is not None:
                progress(done, total)


def _image(model, record, cache: dict) -> np.ndarray:
    if record.id not in cache:
        cache[record.id] = model.load_image(record.load())
    return cache[record.id]


def _targets(model, units, x) -> list[int]:
    """Each unit's target as a class index (`attribution.resolve_targets`: top1 runs the network)."""
    from attrvis_jax.attribution.api import resolve_targets

    return [int(t) for t in resolve_targets(model, x, [_target_spec(unit.target, unit.image) for unit in units])]


def _target_spec(target: str, record):
    """A unit's target spec: "label" is the source's label, the rest as written."""
    if target != "label":
        return target
    if record.label is None:
        raise AttrvisError(f"target 'label' but {record.id} has no label (only class folders and "
                           "tfds datasets have one); name the class instead")
    return record.label


def _fixed_target(model, target: str, record) -> int | None:
    """The class index of a target that does not depend on the network's output (None: top1)."""
    from attrvis_jax.attribution.api import TOP_CLASS

    spec = _target_spec(target, record)
    return None if spec == TOP_CLASS else model.class_index(spec)


def _check_reusable(path: Path, attr, unit: Unit, config: SweepConfig, model) -> None:
    """Refuse an attribution in the folder computed under other settings than this sweep's (copied
    in from elsewhere, or left by a sweep whose record is gone): reusing it would mix results."""
    from attrvis_jax.attribution.api import resolve_method

    target = _fixed_target(model, unit.target, unit.image)
    made = plain({"model": attr.model, "layer": attr.layer, "method": attr.method, "input_size": attr.input_size,
                  "target": attr.target if target is not None else None, "attribution": attr.config.to_dict()})
    wanted = plain({"model": model.name, "layer": unit.layer, "method": resolve_method(config.method),
                    "input_size": model.input_size, "target": target, "attribution": config.attribution.to_dict()})
    changed = differences(made, wanted)
    if changed:
        raise AttrvisError(f"{path} was computed with other settings than this sweep's ({', '.join(changed)} "
                           "differ): move it away (the sweep computes it again) or use another --out directory")


def _render(config, model, todo, attributions, mesh, store, out_dir, writer, timings, progress, done, total, width,
            checkpoint=None, judging=None, groupings=None):
    from attrvis_jax.metrics import directed_attribution, evaluate_rows
    from attrvis_jax.render import objectives
    from attrvis_jax.render.optimize import seed_keys, visualize_rows

    variables = shard(model.variables, mesh, batched=False)
    groups = defaultdict(list)
    empty = []
    for item in todo:
        if np.any(attributions[item.unit].positive):
            groups[(item.unit.layer, item.perturbation)].append(item)
        else:
            empty.append(item)
    if empty and writer:  # nothing to visualize: record the items as failed rather than stop the sweep
        store.add([_row(item, attributions[item.unit], -1) for item in empty])
    done += len(empty)
    if progress is not None:
        progress(done, total)
    batch_index = 0
    for (layer, perturbation), group in groups.items():
        render_config = config.render.replace(perturbation=perturbation)
        for real, rows in padded(group, width):  # a fixed batch shape: one compilation
            attrs = [attributions[item.unit] for item in rows]
            # seed s of an item is seed s of visualize(model, attribution, key=fold_in(unit key, 1))
            keys = jnp.stack([seed_keys(jax.random.fold_in(unit_key(config, item.unit), 1), [item.seed])[0]
                              for item in rows])
            stacked = objectives.stack([objectives.attribution_objective(
                a if not config.groups else _members(a, groupings[item.unit], config.groups), render_config)
                for a, item in zip(attrs, rows)])
            t0 = time.perf_counter()
            out = visualize_rows(model, stacked, render_config, keys, layer=layer, mesh=mesh, variables=variables,
                                 options=config.run_options, progress=checkpoint)
            timings["devices_used"] = len(out.loss.sharding.device_set)
            composed = out.composed[:, 0]
            refs = shard((np.stack([a.positive for a in attrs]), np.stack([a.values for a in attrs]),
                          np.stack([directed_attribution(a) for a in attrs]),
                          np.array([a.target for a in attrs], np.int32)), mesh)
            metrics = evaluate_rows(model, composed, *refs[:2], layer, refs[3], directed=refs[2],
                                    variables=variables)
            composed, masks = gather(composed), gather(out.masks[:, 0])
            loss, finite = gather(out.loss), gather(out.finite)
            extra = [{} for _ in real]
            if config.groups:
                _group_rows(model, real, attrs, groupings, gather(out.composed[:, 1:]), gather(out.masks[:, 1:]),
                            extra)
            if judging is not None:
                judging.judge_rows(real, attrs, composed, extra)
            timings["compile_s"] += out.compile_s
            timings["render_s"] += time.perf_counter() - t0
            records = []
            for i, item in enumerate(real):
                picture = mask = ""
                if writer and config.save_images:
                    picture, mask = _save_pictures(out_dir, item, composed[i], masks[i])
                if writer and config.save_images and config.groups:
                    _save_group_pictures(out_dir, item, extra[i])
                extra[i].pop("pictures", None), extra[i].pop("masks", None)
                records.append(_row(
                    item, attrs[i], batch_index, **extra[i], lambda0=float(stacked.lambda0[i, 0]),
                    pcc=float(metrics.pcc[i]), pcc_raw=float(metrics.pcc_raw[i]),
                    pcc_directed=float(metrics.pcc_directed[i]),
                    top5_hit=bool(metrics.top5_hit[i]), target_rank=int(metrics.target_rank[i]),
                    mask_area=float(masks[i].mean()), final_loss=float(loss[i]), finite=bool(finite[i]),
                    picture=picture, mask=mask))
            if writer:
                store.add(records)
            batch_index += 1
            done += len(real)
            if progress is not None:
                progress(done, total)


def _row(item: Item, attr, batch: int, **measured) -> dict:
    """The store row of an item; without `measured` values it is a failed item (NaN metrics)."""
    row = {
        "id": item.id, "image": item.unit.image.id, "label": item.unit.image.label,
        "target": item.unit.target, "target_index": int(attr.target), "target_name": attr.target_name,
        "layer": item.unit.layer, "perturbation": item.perturbation, "seed": item.seed,
        "pcc": float("nan"), "pcc_raw": float("nan"), "pcc_directed": float("nan"), "top5_hit": False, "target_rank": -1,
        "mask_area": float("nan"), "beta": float(attr.beta), "lambda0": float("nan"),
        "final_loss": float("nan"), "finite": False, "picture": "", "mask": "", "batch": batch,
    }
    row.update(measured)
    return row


def _save_pictures(out_dir: Path, item: Item, composed: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
    from attrvis_jax.apps.report import save_png

    stem = f"images/{item.unit.slug}/{item.perturbation}_seed{item.seed:02d}"
    save_png(out_dir / f"{stem}.png", composed)
    save_png(out_dir / f"{stem}_mask.png", mask)
    return f"{stem}.png", f"{stem}_mask.png"


# ---- the judge and the groups ---------------------------------------------------------------------------
class _Judging:
    """The judge's verdicts in a sweep: each picture's rank of its item's class, beside the class's
    rank on the item's photo (once per image and class) and on the gray canvas (once per class)."""

    def __init__(self, name: str, judge, gray: float, same_model: bool = False):
        self.name, self.judge, self.gray, self.same_model = name, judge, gray, same_model
        self._photo: dict = {}
        self._gray: dict = {}

    def ranks(self, pictures, targets) -> np.ndarray:
        """Ranks of each picture's class; pictures (N, H, W, 3) float or uint8, as saved (`judge.as_saved`)."""
        from attrvis_jax.judge import as_saved, judge_inputs, judge_ranks

        if not len(pictures):
            return np.zeros((0,), np.int64)
        return judge_ranks(self.judge, judge_inputs(self.judge, as_saved(pictures)), targets)[0]

    def scale(self, unit: Unit, target: int) -> tuple[int, int]:
        """(the class's rank on the unit's photo, on the gray canvas)."""
        from attrvis_jax.data import network_input
        from attrvis_jax.judge import judge_ranks

        key = (unit.image.id, int(target))
        if key not in self._photo:
            size = self.judge.input_size
            photo = network_input(unit.image.load(), self.judge.spec.preprocess)
            ranks, _ = judge_ranks(self.judge, np.stack([photo, np.full((size, size, 3), self.gray, np.float32)]),
                                   int(target))
            self._photo[key], self._gray[int(target)] = int(ranks[0]), int(ranks[1])
        return self._photo[key], self._gray[int(target)]

    def columns(self, unit: Unit, target: int, rank: int) -> dict:
        photo, gray = self.scale(unit, target)
        return {"judge": self.name, "judge_rank": int(rank), "judge_top5": bool(rank < 5),
                "judge_photo_rank": photo, "judge_gray_rank": gray}

    def judge_rows(self, items, attrs, composed, extra) -> None:
        """Judge a rendered batch: each item's picture (and its groups' in extra[i]["pictures"]) in one call."""
        pictures, targets, owner = [], [], []
        for i, item in enumerate(items):
            pictures.append(composed[i])
            targets.append(int(attrs[i].target))
            owner.append((i, None))
            for j, picture in enumerate(extra[i].get("pictures", ())):
                pictures.append(picture)
                targets.append(int(attrs[i].target))
                owner.append((i, j))
        ranks = self.ranks(np.stack(pictures), np.asarray(targets))
        for (i, j), rank in zip(owner, ranks):
            if j is None:
                extra[i].update(self.columns(items[i].unit, int(attrs[i].target), int(rank)))
            else:
                extra[i]["groups"][j].update(judge_rank=int(rank), judge_top5=bool(rank < 5))


def _judging(config: SweepConfig, model) -> _Judging | None:
    """The sweep's judge, loaded and checked against the model (None without one)."""
    if config.judge is None:
        return None
    from attrvis_jax.apps.extras import judge_model
    from attrvis_jax.judge import same_model

    judge = judge_model(model, config.judge)
    return _Judging(config.judge, judge, config.render.background, same_model(model, judge))


JUDGE_BATCH = 64  # stored pictures read and judged at a time


def _judge_stored(judging: _Judging, store: ResultStore, items, out_dir: Path, log) -> None:
    """Judge the sweep's recorded items that this judge has not judged (stored before the sweep had
    a judge, or under another), from their saved pictures: a picture is judged as its PNG holds it,
    so these verdicts are the ones a fresh render gets. Items without pictures (save_images = false)
    stay unjudged and are not counted by the judge's columns of the summary."""
    by_id = {item.id: item for item in items}
    rows = [row for row in store.rows(by_id) if row["judge"] != judging.name and row["finite"]]
    ready = [row for row in rows if row["picture"] and (out_dir / row["picture"]).is_file()]
    if not rows:
        return
    log(f"judging {len(ready)} stored items with {judging.name}"
        + (f"; {len(rows) - len(ready)} have no saved picture and stay unjudged" if len(ready) < len(rows) else ""))
    for start in range(0, len(ready), JUDGE_BATCH):
        chunk = ready[start : start + JUDGE_BATCH]
        pictures, targets, owner = [], [], []
        for i, row in enumerate(chunk):
            for j, path in [(None, row["picture"])] + [(j, g.get("picture", "")) for j, g in enumerate(row["groups"] or [])]:
                picture = saved_picture(out_dir, path)
                if picture is not None:
                    pictures.append(picture)
                    targets.append(row["target_index"])
                    owner.append((i, j))
        ranks = judging.ranks(np.stack(pictures), np.asarray(targets))
        for (i, j), rank in zip(owner, ranks):
            row = chunk[i]
            if j is None:
                row.update(judging.columns(by_id[row["id"]].unit, row["target_index"], int(rank)))
            else:
                row["groups"][j].update(judge_rank=int(rank), judge_top5=bool(rank < 5))
        store.update(chunk, (*JUDGE_COLUMNS, "groups"))


def _groupings(config: SweepConfig, model, units, attributions, out_dir: Path, writer: bool, checkpoint=None) -> dict:
    """unit -> {"grouping", "parts"}: `config.groups` channel groups of each unit's attribution, from
    views of its image (`extras.GROUP_VIEWS`; a sweep of several classes has no one folder of the
    class), saved beside the attribution as <unit>.groups.npz and reused when a sweep resumes."""
    if not config.groups:
        return {}
    import warnings

    from attrvis_jax.apps.extras import GROUP_VIEWS
    from attrvis_jax.groups import ChannelGroups, group_channels, make_views, split_attribution

    out = {}
    for unit in units:
        attr = attributions[unit]
        if not np.any(attr.positive):
            continue  # recorded as failed by _render
        path = out_dir / "attributions" / f"{unit.slug}.groups.npz"
        grouping = None
        if path.exists():
            with reading(path, "computes it again"):
                grouping = ChannelGroups.load(path)
            if grouping.n_factors != config.groups or grouping.channels != attr.values.shape[-1]:
                grouping = None  # another group count's: computed again
        if grouping is None:
            _, views = make_views(model, unit.image.load(), GROUP_VIEWS)
            grouping = group_channels(model, attr, views[1:], config.groups, method=config.method,
                                      config=config.attribution, key=jax.random.fold_in(unit_key(config, unit), 0),
                                      progress=checkpoint)
            if writer:
                grouping.save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                parts = split_attribution(attr, grouping)
            except AttrvisError:  # no group holds attribution of this image: the whole alone
                parts = []
        out[unit] = {"grouping": grouping, "parts": parts}
    return out


def _members(attr, grouped: dict, groups: int) -> list:
    """The whole and its groups as one grouped objective of 1 + `groups` members; a unit with fewer
    groups is padded with the whole again (rendered, never recorded), so every row has one shape."""
    from attrvis_jax.groups import whole_part

    whole = whole_part(attr)
    return [whole, *grouped["parts"], *[whole] * (groups - len(grouped["parts"]))]


def _group_rows(model, items, attrs, groupings, pictures, masks, extra) -> None:
    """Each item's groups (extra[i]["groups"], its store JSON) and their pictures (extra[i]["pictures"],
    extra[i]["masks"]); pictures (N, G, H, W, 3), padding members dropped."""
    from attrvis_jax.groups import group_metrics, top_channels, whole_part

    for i, item in enumerate(items):
        attr, parts = attrs[i], groupings[item.unit]["parts"]
        padded_parts = [*parts, *[whole_part(attr)] * (pictures.shape[1] - len(parts))]
        metrics = group_metrics(model, pictures[i][None], padded_parts, attr)  # one shape: compiled once
        total = float(np.sum(attr.positive))
        extra[i]["groups"] = [{
            "group": j + 1, "factor": int(part["group"]), "channels": len(part["channels"]),
            "share_of_r_plus": float(np.sum(part["positive"]) / total) if total > 0 else 0.0,
            "top_channels": top_channels(part, total, 3), "beta": float(part["beta"]),
            "pcc": float(metrics["pcc"][0, j]), "pcc_directed": float(metrics["pcc_directed"][0, j]),
            "target_rank": int(metrics["target_rank"][0, j]), "top5_hit": bool(metrics["top5_hit"][0, j]),
            "mask_area": float(masks[i, j].mean()), "picture": "", "mask": ""} for j, part in enumerate(parts)]
        extra[i]["pictures"] = list(pictures[i, : len(parts)])
        extra[i]["masks"] = list(masks[i, : len(parts)])


def _save_group_pictures(out_dir: Path, item: Item, extra: dict) -> None:
    from attrvis_jax.apps.report import save_png

    stem = f"images/{item.unit.slug}/{item.perturbation}_seed{item.seed:02d}"
    for g, picture, mask in zip(extra["groups"], extra["pictures"], extra["masks"]):
        g["picture"], g["mask"] = f"{stem}_group{g['group']}.png", f"{stem}_group{g['group']}_mask.png"
        save_png(out_dir / g["picture"], picture)
        save_png(out_dir / g["mask"], mask)


# ---- tables ------------------------------------------------------------------------------------------
SUMMARY_KEYS = ("layer", "perturbation", "n", "pcc_mean", "pcc_std", "pcc_raw_mean", "pcc_directed_mean", "top5_rate",
                "mask_area_mean", "beta_mean", "finite_rate", "judged", "judge_top5_rate", "judge_rank_median",
                "judge_photo_rank_median", "judge_gray_rank_median")


def summarize(rows: Sequence[dict], by: Sequence[str] = ("layer", "perturbation"), judge: str | None = None) -> list[dict]:
    """Mean/spread of the metrics per group (default: layer × perturbation, the ablation table).

    PCC is averaged over seeds within each (image, target) first and then over images, as the paper
    does; pcc_std is the spread over all visualizations of the group. The judge's columns (judged:
    how many items it judged; its top-5 rate and median ranks of the pictures, the photos and the
    gray canvas) count the items judged by `judge` only (NaN where it judged none)."""
    groups = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in by)].append(row)
    out = []
    for key, members in groups.items():
        per_image = defaultdict(list)
        for row in members:
            per_image[(row["image"], row["target"])].append(row["pcc"])
        entry = dict(zip(by, key))
        entry.update({
            "n": len(members),
            "pcc_mean": float(np.mean([np.mean(v) for v in per_image.values()])),
            "pcc_std": float(np.std([row["pcc"] for row in members])),
            "pcc_raw_mean": float(np.mean([row["pcc_raw"] for row in members])),
            # rows of stores written before the directed PCC existed have only pcc
            "pcc_directed_mean": float(np.mean([row.get("pcc_directed", row["pcc"]) for row in members])),
            "top5_rate": float(np.mean([row["top5_hit"] for row in members])),
            "mask_area_mean": float(np.mean([row["mask_area"] for row in members])),
            "beta_mean": float(np.mean([row["beta"] for row in members])),
            "finite_rate": float(np.mean([row["finite"] for row in members])),
        })
        entry.update(_judge_summary([row for row in members if judge is not None and row.get("judge") == judge]))
        out.append(entry)
    return out


def _judge_summary(judged: Sequence[dict]) -> dict:
    nan = float("nan")
    median = lambda name: float(np.median([row[name] for row in judged])) if judged else nan  # noqa: E731
    return {"judged": len(judged),
            "judge_top5_rate": float(np.mean([row["judge_top5"] for row in judged])) if judged else nan,
            "judge_rank_median": median("judge_rank"), "judge_photo_rank_median": median("judge_photo_rank"),
            "judge_gray_rank_median": median("judge_gray_rank")}


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    w = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _export(out_dir: Path, rows, summary, timings, ran: int) -> None:
    write_text(out_dir / "results.csv", to_csv(rows, [n for n in NAMES if n not in JSON]))  # groups: results.json
    write_text(out_dir / "summary.csv", to_csv(summary, SUMMARY_KEYS))
    write_json(out_dir / "results.json", {"items": rows, "summary": summary,
                                          "this_session": {"items_run": ran, **timings}})
