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
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from attrvis_jax.config import SweepConfig
from attrvis_jax.devices import device_mesh, gather, shard
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import check_output_folder, write_json, write_text
from attrvis_jax.memory import check_render_memory
from attrvis_jax.apps.store import NAMES, ResultStore

Progress = Callable[[int, int], None]
BATCHED_METHODS = ("aumann_shapley",)  # methods whose key may be one key per image (see baseline.py)


# ---- the spec --------------------------------------------------------------------------------------
def load_spec(path) -> SweepConfig:
    """A SweepConfig from a .json or .toml file (unknown fields are an error, not ignored)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise AttrvisError(f"cannot read the sweep spec {path}: {e.strerror or e}") from None
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
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.image.id}_{self.target}_{self.layer}").strip("_")
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
    everything but the lists, how it runs, and the render config's perturbation (the sweep's list
    replaces it)."""
    render = {k: v for k, v in config.render.to_dict().items() if k != "perturbation"}
    return {"model": config.model, "weights": config.weights, "method": config.method, "key": config.key,
            "attribution": config.attribution.to_dict(), "render": render}


def upgrade_fingerprint(stored: dict) -> dict:
    """A fingerprint as this version writes it: stores from before `RunOptions` also pinned
    render.engine, which never changed a result; stores from before `compute_dtype` ran float32."""
    render = {k: v for k, v in stored.get("render", {}).items() if k != "engine"}
    render.setdefault("compute_dtype", "float32")
    return {**stored, "render": render}


# ---- running -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """rows: one dict per item of this sweep (store.NAMES); summary: one per layer × perturbation."""

    rows: list
    summary: list
    out_dir: Path
    ran: int  # items computed by this call (the rest were already in the store)
    timings: dict


def run_sweep(
    config: SweepConfig,
    out_dir,
    *,
    model=None,
    mesh: Mesh | None = None,
    progress: Progress | None = None,
    attribution_progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run (or resume) the sweep into `out_dir`; returns every item's row and the summary table."""
    from attrvis_jax.models import load_model
    from attrvis_jax.apps.sources import resolve_sources

    out_dir = Path(out_dir)
    check_output_folder(out_dir, owns=lambda name: False)  # a file, or no place to write: refused now
    writer = jax.process_index() == 0
    log = log or (lambda message: None)
    records = resolve_sources(list(config.images), limit=config.limit)
    model = model or load_model(config.model, weights=config.weights)
    units, items = plan(config, records, model)
    mesh = mesh or device_mesh()
    size = config.render.image_size or model.input_size
    # A batch too big is refused before any work: host CPU devices share one memory, accelerators
    # hold their own shard each.
    per_memory = -(-config.batch // mesh.size) * (mesh.size if mesh.devices.flat[0].platform == "cpu" else 1)
    for layer in dict.fromkeys(unit.layer for unit in units):
        check_render_memory(model, layer, per_memory, size, what="batch")
    # Opened only once the spec is known to work (it pins the settings), and before sweep.json is
    # written: a folder holding a sweep with other settings is refused with nothing changed.
    store = ResultStore(out_dir / "store.sqlite", fingerprint(config), upgrade=upgrade_fingerprint)
    try:
        if writer:
            write_json(out_dir / "sweep.json", config.to_dict())
        done = store.done()
        todo = [item for item in items if item.id not in done]
        log(f"{len(items)} items ({len(units)} attributions x {len(config.perturbations)} perturbations x "
            f"{config.seeds} seeds); {len(items) - len(todo)} already done; {mesh.size} device(s)")
        timings = {"attribution_s": 0.0, "render_s": 0.0, "compile_s": 0.0, "devices": mesh.size,
                   "processes": jax.process_count()}
        if todo:
            needed = list(dict.fromkeys(item.unit for item in todo))
            t0 = time.perf_counter()
            attributions = _attributions(config, model, needed, out_dir, writer, attribution_progress)
            timings["attribution_s"] = time.perf_counter() - t0
            _render(config, model, todo, attributions, mesh, store, out_dir, writer, timings,
                    progress, len(items) - len(todo), len(items))
        elif progress is not None:
            progress(len(items), len(items))
        rows = store.rows(item.id for item in items)
    finally:
        store.close()
    summary = summarize(rows)
    if writer:
        _export(out_dir, rows, summary, timings, len(todo))
    return SweepResult(rows=rows, summary=summary, out_dir=out_dir, ran=len(todo), timings=timings)


def _attributions(config, model, units, out_dir: Path, writer: bool, progress) -> dict:
    """unit -> Attribution for `units`: loaded from attributions/ or computed (and saved) now."""
    from attrvis_jax.attribution import Attribution, attribute

    folder = out_dir / "attributions"
    out, missing = {}, []
    for unit in units:
        path = folder / f"{unit.slug}.npz"
        if path.exists():
            out[unit] = Attribution.load(path)
        else:
            missing.append(unit)
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
                               key=keys if batch > 1 else keys[0])
            for unit, attr in zip(chunk, result):
                out[unit] = attr
                if writer:
                    attr.save(folder / f"{unit.slug}.npz")
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return out


def _image(model, record, cache: dict) -> np.ndarray:
    if record.id not in cache:
        cache[record.id] = model.load_image(record.load())
    return cache[record.id]


def _targets(model, units, x) -> list[int]:
    """Each unit's target spec as a class index: "label" is the source's label, the rest (names,
    indices, top1) `attribution.resolve_targets` reads."""
    from attrvis_jax.attribution.api import resolve_targets

    specs = []
    for unit in units:
        if unit.target == "label":
            if unit.image.label is None:
                raise AttrvisError(f"target 'label' but {unit.image.id} has no label (only class folders and "
                                   "tfds datasets have one); name the class instead")
            specs.append(unit.image.label)
        else:
            specs.append(unit.target)
    return [int(t) for t in resolve_targets(model, x, specs)]


def _render(config, model, todo, attributions, mesh, store, out_dir, writer, timings, progress, done, total):
    from attrvis_jax.metrics import directed_attribution, evaluate_rows
    from attrvis_jax.render import objectives
    from attrvis_jax.render.optimize import seed_keys, visualize_rows

    width = -(-config.batch // mesh.size) * mesh.size  # a multiple of the device count
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
        for start in range(0, len(group), width):
            real = group[start : start + width]
            rows = real + [real[-1]] * (width - len(real))  # a fixed batch shape: one compilation
            attrs = [attributions[item.unit] for item in rows]
            # seed s of an item is seed s of visualize(model, attribution, key=fold_in(unit key, 1))
            keys = jnp.stack([seed_keys(jax.random.fold_in(unit_key(config, item.unit), 1), [item.seed])[0]
                              for item in rows])
            stacked = objectives.stack([objectives.attribution_objective(a, render_config) for a in attrs])
            t0 = time.perf_counter()
            out = visualize_rows(model, stacked, render_config, keys, layer=layer, mesh=mesh, variables=variables,
                                 options=config.run_options)
            timings["devices_used"] = len(out.loss.sharding.device_set)
            composed = out.composed[:, 0]
            refs = shard((np.stack([a.positive for a in attrs]), np.stack([a.values for a in attrs]),
                          np.stack([directed_attribution(a) for a in attrs]),
                          np.array([a.target for a in attrs], np.int32)), mesh)
            metrics = evaluate_rows(model, composed, *refs[:2], layer, refs[3], r_directed=refs[2],
                                    variables=variables)
            composed, masks = gather(composed), gather(out.masks[:, 0])
            loss, finite = gather(out.loss), gather(out.finite)
            timings["compile_s"] += out.compile_s
            timings["render_s"] += time.perf_counter() - t0
            records = []
            for i, item in enumerate(real):
                picture = mask = ""
                if writer and config.save_images:
                    picture, mask = _save_pictures(out_dir, item, composed[i], masks[i])
                records.append(_row(
                    item, attrs[i], batch_index, lambda0=float(stacked.lambda0[i, 0]),
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


# ---- tables ------------------------------------------------------------------------------------------
SUMMARY_KEYS = ("layer", "perturbation", "n", "pcc_mean", "pcc_std", "pcc_raw_mean", "pcc_directed_mean", "top5_rate",
                "mask_area_mean", "beta_mean", "finite_rate")


def summarize(rows: Sequence[dict], by: Sequence[str] = ("layer", "perturbation")) -> list[dict]:
    """Mean/spread of the metrics per group (default: layer × perturbation, the ablation table).

    PCC is averaged over seeds within each (image, target) first and then over images, as the paper
    does; pcc_std is the spread over all visualizations of the group."""
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
        out.append(entry)
    return out


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    w = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _export(out_dir: Path, rows, summary, timings, ran: int) -> None:
    write_text(out_dir / "results.csv", to_csv(rows, NAMES))
    write_text(out_dir / "summary.csv", to_csv(summary, SUMMARY_KEYS))
    write_json(out_dir / "results.json", {"items": rows, "summary": summary,
                                          "this_session": {"items_run": ran, **timings}})
