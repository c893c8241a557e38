"""Drawing: PIL contact sheets of equal square cells under a wrapped title band (`grid_figure`), the
heat-map and blank cells, and `_write`, which saves a figure's PNG and JSON atomically."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attrvis_jax import _deprecated
from attrvis_jax.apps.report import contact_sheet, heatmap_overlay, save_png
from attrvis_jax.fileio import write_json


# Grid geometry (report.contact_sheet's pad and caption height, and the title band drawn above it):
# a sheet of R rows and C columns of S×S cells with T title lines is
#   width  = C·(S + CELL_PAD) + CELL_PAD
#   height = TITLE_PAD + T·TITLE_LINE + R·(S + CELL_PAD + CAPTION_H) + CELL_PAD
CELL_PAD = 6
CAPTION_H = 16
TITLE_LINE = 14
TITLE_PAD = 8
CHAR_W = 6  # approximate width of a character of PIL's default font, for wrapping the title


def grid_size(rows: int, columns: int, cell: int, title_lines: int) -> tuple[int, int]:
    """(height, width) in pixels of a `grid_figure`."""
    width = columns * (cell + CELL_PAD) + CELL_PAD
    height = TITLE_PAD + title_lines * TITLE_LINE + rows * (cell + CELL_PAD + CAPTION_H) + CELL_PAD
    return height, width


def wrap_title(lines: Sequence[str], width_px: int) -> list[str]:
    chars = max(20, (width_px - 2 * CELL_PAD) // CHAR_W)
    out = []
    for line in lines:
        out.extend(textwrap.wrap(line, chars) or [""])
    return out


def grid_figure(cells: Sequence[np.ndarray], captions: Sequence[str], columns: int,
                title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """A contact sheet of equal square cells (row-major) under a title band; returns (uint8, layout).

    layout: rows, columns, cell, title_lines (what `grid_size` needs) and the title as drawn.
    """
    cells = [np.asarray(c) for c in cells]
    cell = int(cells[0].shape[0])
    rows = math.ceil(len(cells) / columns)
    sheet = contact_sheet(cells, list(captions), columns=columns, pad=CELL_PAD)
    width = sheet.shape[1]
    lines = wrap_title(title, width)
    band = Image.new("RGB", (width, TITLE_PAD + TITLE_LINE * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((CELL_PAD, TITLE_PAD // 2 + i * TITLE_LINE), line, fill=(0, 0, 0), font=font)
    image = np.concatenate([np.asarray(band), sheet], axis=0)
    layout = {"rows": rows, "columns": columns, "cell": cell, "title_lines": len(lines), "title": lines,
              "height": int(image.shape[0]), "width": int(image.shape[1])}
    return image, layout


def blank(size: int) -> np.ndarray:
    return np.ones((size, size, 3), np.float32)


@_deprecated.renamed_parameters(r_plus="positive")
def heat_cell(x: np.ndarray, positive: np.ndarray, percentile: float = 65.0) -> np.ndarray:
    """The display heat map of R⁺ (`postprocess.heatmap`: mean_k R⁺, low percentiles zeroed) over
    the image; for a group's R⁺ as for the whole attribution."""
    from attrvis_jax.attribution.postprocess import heatmap

    return heatmap_overlay(x, np.asarray(heatmap(jnp.asarray(positive, jnp.float32), percentile)))


def _write(out_dir: Path, name: str, picture: np.ndarray, record: dict) -> dict:
    out_dir = Path(out_dir)
    png, js = out_dir / f"{name}.png", out_dir / f"{name}.json"
    save_png(png, picture)
    record = {"figure": name, **record, "png": png.name}
    write_json(js, record)
    return {**record, "png": str(png), "json": str(js)}


def _ok(hit) -> str:
    return "top5" if hit else "miss"
