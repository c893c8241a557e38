"""A catalog of a layer: every channel's feature visualization, one tile each, on one page.

    attrvis catalog --model efficientnet_lite0 --layer blocks.14 --channels 0-31 --out cat/
    run_catalog(model, CatalogConfig(layer="blocks.14", channels=tuple(range(32))), "cat/")

Each channel k is the plain feature visualization of `objectives.channel(model, layer, k)`
(perturbation "none"), seed s of channel k keyed fold_in(fold_in(key(config.key), k), s) like a
sweep's items, so a tile does not depend on the batch it ran in. Channels run as fixed-size batches
of stacked objectives (`objectives.stack`, the kernel's fast path) sharded over every device, as a
sweep's items are; the folder is locked for the run (`sweepdir.FolderLock`), a batch's tiles are
written atomically and then recorded in `catalog.json`, so a catalog stopped by Ctrl-C or
`kill -9` resumes where it stopped when run again, and settings that differ from the recorded ones
are refused. At the end `sprite.png` holds every tile in a grid and `index.html` shows it, one tile
per channel with its number and score (the channel's mean activation on its own picture), each a
link to the full picture.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.config import CatalogConfig, RenderConfig, current_fields
from attrvis_jax.errors import AttrvisError, UnknownNameError
from attrvis_jax.fileio import write_json, write_text

RECORD = "catalog.json"
TILE = 96  # px of a tile in the sprite sheet and on the page


def parse_channels(text: str) -> tuple[int, ...]:
    """'0-31', '3,7,9-12' -> channel indices (each once, in order)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            span = range(int(lo), int(hi) + 1) if sep else [int(part)]
        except ValueError:
            raise AttrvisError(f"expected channel indices and ranges like 0-31 or 3,7,9-12, got {text!r}") from None
        if sep and int(hi) < int(lo):
            raise AttrvisError(f"the channel range {part!r} runs backwards")
        out.extend(span)
    return tuple(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class CatalogResult:
    """tiles: {channel: [picture path per seed]}; scores: {channel: [score per seed]}."""

    out_dir: Path
    layer: str
    tiles: dict
    scores: dict
    ran: int
    seconds: float


def _fingerprint(model, config: CatalogConfig, layer: str) -> dict:
    return {"model": model.name, "weights": model.weights_source, "layer": layer, "key": config.key,
            "render": config.render.to_dict()}


def run_catalog(model, config: CatalogConfig, out_dir, *, mesh=None,
                progress: Callable[[int, int], None] | None = None,
                log: Callable[[str], None] | None = None) -> CatalogResult:
    """Render (or resume) the catalog of `config.layer` into `out_dir`; returns what it holds."""
    from attrvis_jax.apps.interrupt import deferred
    from attrvis_jax.apps.sweepdir import FolderLock, reading
    from attrvis_jax.apps.report import save_png
    from attrvis_jax.devices import batch_width, device_mesh, gather, padded, rows_per_memory
    from attrvis_jax.fileio import check_output_folder
    from attrvis_jax.memory import check_render_memory
    from attrvis_jax.render import objectives
    from attrvis_jax.render.optimize import seed_keys, visualize_rows

    out_dir = Path(out_dir)
    log = log or (lambda message: None)
    layer = model.resolve_layer(config.layer)
    depth = model.layer_shapes(config.render.image_size)[layer][-1]
    channels = tuple(range(depth)) if config.channels is None else config.channels
    bad = [c for c in channels if c >= depth]
    if bad:
        raise UnknownNameError(f"channels {bad[:5]} out of range for {layer} (valid: 0..{depth - 1})")
    mesh = mesh or device_mesh()
    width = batch_width(config.batch, len(channels) * config.seeds, mesh)
    size = config.render.image_size or model.input_size
    check_render_memory(model, layer, rows_per_memory(width, mesh), size, what="batch")
    check_output_folder(out_dir)
    t_start = time.perf_counter()
    lock = FolderLock(out_dir, "catalog")
    wrote = False
    try:
        record_path = out_dir / RECORD
        wanted = _fingerprint(model, config, layer)
        record = {"settings": wanted, "tiles": {}}
        if record_path.exists():
            with reading(record_path, "renders every tile again"):
                record = json.loads(record_path.read_text())
                if not isinstance(record, dict) or "settings" not in record or not isinstance(record.get("tiles"), dict):
                    raise ValueError("not a catalog record")
                if isinstance(record["settings"], dict) and isinstance(record["settings"].get("render"), dict):
                    # a record of an earlier version: its renamed render fields under their new names
                    record["settings"]["render"] = current_fields(RenderConfig, record["settings"]["render"])
            if record["settings"] != wanted:
                changed = sorted(k for k in set(wanted) | set(record["settings"])
                                 if wanted.get(k) != record["settings"].get(k))
                raise AttrvisError(f"{out_dir} holds a catalog with other settings ({', '.join(changed)} differ): "
                                   "use another --out directory, or rerun with its settings to resume it")
        done = {k for k, v in record["tiles"].items()
                if all((out_dir / p).exists() for p in v["pictures"]) and len(v["pictures"]) == config.seeds}
        items = [(c, s) for c in channels for s in range(config.seeds) if str(c) not in done]
        log(f"{layer}: {len(channels)} channels x {config.seeds} seed(s), {len(channels) - len(done & set(map(str, channels)))} "
            f"to render, {mesh.size} device(s)")
        base = jax.random.key(config.key)
        finished, total = len(channels) * config.seeds - len(items), len(channels) * config.seeds
        with deferred() as checkpoint:
            for real, rows in padded(items, width):
                stacked = objectives.stack([objectives.channel(model, layer, c, size=size) for c, _ in rows])
                keys = jnp.stack([seed_keys(jax.random.fold_in(base, c), [s])[0] for c, s in rows])
                out = visualize_rows(model, stacked, config.render, keys, mesh=mesh, progress=checkpoint)
                images = gather(out.images[:, 0])
                acts = np.asarray(model.features(jnp.asarray(images), layer))
                for i, (c, s) in enumerate(real):
                    name = f"tiles/ch{c:04d}_s{s}.png"
                    save_png(out_dir / name, images[i])
                    wrote = True
                    entry = record["tiles"].setdefault(str(c), {"pictures": [], "scores": []})
                    if s == 0:
                        entry.update(pictures=[], scores=[])
                    entry["pictures"].append(name)
                    entry["scores"].append(float(acts[i, ..., c].mean()))
                write_json(record_path, record)  # the batch is recorded once its tiles are on disk
                finished += len(real)
                if progress is not None:
                    progress(finished, total)
                checkpoint()
        _sheet_and_page(out_dir, model, layer, channels, record, config)
        wrote = True
    finally:
        lock.release(undo=not wrote)
    tiles = {int(k): v["pictures"] for k, v in record["tiles"].items() if int(k) in channels}
    scores = {int(k): v["scores"] for k, v in record["tiles"].items() if int(k) in channels}
    return CatalogResult(out_dir, layer, tiles, scores, len(items), time.perf_counter() - t_start)


def _sheet_and_page(out_dir: Path, model, layer: str, channels, record: dict, config: CatalogConfig) -> None:
    """sprite.png (seed 0's tile of every channel, in order, TILE px each) and index.html."""
    from PIL import Image

    from attrvis_jax.apps.report import save_png

    columns = max(1, min(len(channels), 16))
    rows = math.ceil(len(channels) / columns)
    sheet = np.full((rows * TILE, columns * TILE, 3), 255, np.uint8)
    cells = []
    for i, c in enumerate(channels):
        entry = record["tiles"][str(c)]
        with Image.open(out_dir / entry["pictures"][0]) as img:
            tile = np.asarray(img.convert("RGB").resize((TILE, TILE), Image.BILINEAR))
        r, q = divmod(i, columns)
        sheet[r * TILE : (r + 1) * TILE, q * TILE : (q + 1) * TILE] = tile
        cells.append((c, q * TILE, r * TILE, entry))
    save_png(out_dir / "sprite.png", sheet)
    tiles = "\n".join(
        f'<a class="tile" href="{html.escape(e["pictures"][0])}" title="channel {c}: score {e["scores"][0]:.4g}">'
        f'<span class="img" style="background-position:-{x}px -{y}px"></span>'
        f'<span class="cap">{c} · {e["scores"][0]:.3g}</span></a>' for c, x, y, e in cells)
    settings = html.escape(json.dumps(record["settings"]["render"], sort_keys=True))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(model.name)} {html.escape(layer)}: {len(channels)} channels</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, {TILE + 8}px); gap: 6px; }}
.tile {{ display: block; text-decoration: none; color: #333; text-align: center; }}
.img {{ display: block; width: {TILE}px; height: {TILE}px; margin: 0 auto;
        background-image: url(sprite.png); border: 1px solid #ccc; }}
.tile:hover .img {{ outline: 2px solid #36c; }}
.cap {{ font-size: 11px; }}
details {{ margin-top: 16px; color: #555; }}
</style></head><body>
<h1>{html.escape(model.name)} · {html.escape(layer)}</h1>
<p>{len(channels)} channels, one feature visualization each (objective: the channel's mean;
{config.render.steps} steps; the number under a tile: the channel's mean activation on its own picture).
Click a tile for the full picture.</p>
<div class="grid">
{tiles}
</div>
<details><summary>render settings</summary><pre>{settings}</pre></details>
</body></html>
"""
    write_text(out_dir / "index.html", page)
