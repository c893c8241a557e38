"""Pictures of results: uint8 conversion, colour maps, heat-map overlays, contact sheets, PNG bytes,
and the HTML that shows them inline in a notebook (`Attribution`, `RenderResult` and a sweep's
result have `_repr_html_` and `.show()` built on these).

Plain arrays in, arrays or bytes out: no JAX, no files (the drivers write them).
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] (or uint8, kept as it is) (H, W), (H, W, 1) or (H, W, 3) -> uint8 RGB."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.dtype == np.uint8:
        return arr
    return np.round(np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)


def colorize(heat: np.ndarray, cmap: str = "RdBu_r") -> np.ndarray:
    """A signed map -> RGB in [0, 1], symmetric around 0 (white = 0, red > 0, blue < 0)."""
    from matplotlib import colormaps

    heat = np.asarray(heat, np.float32)
    peak = float(np.max(np.abs(heat))) or 1.0
    return colormaps[cmap](0.5 + 0.5 * heat / peak)[..., :3].astype(np.float32)


def resize(image: np.ndarray, size: tuple[int, int], resample=Image.BILINEAR) -> np.ndarray:
    """Resize a float image (H, W) or (H, W, C) to size=(H, W) with PIL, per channel."""
    arr = np.asarray(image, np.float32)
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = np.stack([
        np.asarray(Image.fromarray(chans[..., c], mode="F").resize((size[1], size[0]), resample))
        for c in range(chans.shape[-1])
    ], axis=-1)
    return out[..., 0] if arr.ndim == 2 else out


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, image_alpha: float = 0.3) -> np.ndarray:
    """The authors' display: the colored heat map under the image drawn with alpha 0.3."""
    image = np.asarray(image, np.float32)
    colored = colorize(resize(heat, image.shape[:2]))
    return image_alpha * image + (1.0 - image_alpha) * colored


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str] = (), columns: int | None = None,
                  pad: int = 6, background: float = 1.0) -> np.ndarray:
    """Images of equal size in a grid with optional captions under each; returns uint8 RGB."""
    images = [to_uint8(im) for im in images]
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w = images[0].shape[:2]
    n = len(images)
    columns = columns or min(n, max(1, math.ceil(math.sqrt(n * 1.3))))
    rows = math.ceil(n / columns)
    cap_h = 16 if captions else 0
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad + cap_h) + pad),
                      tuple([int(background * 255)] * 3))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        x, y = pad + c * (w + pad), pad + r * (h + pad + cap_h)
        sheet.paste(Image.fromarray(im), (x, y))
        if captions:
            draw.text((x + 2, y + h + 2), captions[i], fill=(40, 40, 40), font=font)
    return np.asarray(sheet)



def png_bytes(image) -> bytes:
    """A float [0, 1] or uint8 image as PNG bytes."""
    arr = image if np.asarray(image).dtype == np.uint8 else to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def img_tag(image, width: int | None = None, title: str = "") -> str:
    """An <img> holding the picture itself (a data URI): a notebook cell needs no files."""
    data = base64.b64encode(png_bytes(image)).decode("ascii")
    size = f' width="{int(width)}"' if width else ""
    return (f'<img src="data:image/png;base64,{data}"{size} title="{html.escape(title)}" '
            'style="image-rendering:auto;margin:2px;border:1px solid #ddd">')


def table(rows: Sequence[tuple[str, object]]) -> str:
    """A two-column HTML table of (name, value) rows; floats to 4 significant digits."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    body = "".join(f"<tr><td style='color:#667;padding-right:12px'>{html.escape(k)}</td><td>{cell(v)}</td></tr>"
                   for k, v in rows)
    return f"<table style='font-size:13px;border-collapse:collapse'>{body}</table>"


def show(obj) -> None:
    """Display `obj` (anything with `_repr_html_`) in the running notebook."""
    try:
        from IPython.display import HTML, display
    except ImportError:
        raise ImportError("show() displays in a Jupyter notebook and needs IPython (pip install ipython); "
                          "outside one, save the pictures instead") from None
    display(HTML(obj._repr_html_()))
