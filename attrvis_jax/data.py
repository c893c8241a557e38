"""Image input: reading files robustly and bringing them to a model's input convention.

`read_image` gives float32 RGB in [0, 1] at the file's own resolution from any PIL-readable file
(grayscale, RGBA, palette, 16-bit, CMYK, EXIF-rotated), or from an array. `load_image` then resizes
and crops per the model's `Preprocess`. Bundled photos come from scikit-image's offline data.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attrvis_jax.errors import ImageError, closest, unknown

# Bundled real photos (scikit-image ships them offline) and their ImageNet classes.
SAMPLES = {
    "chelsea": ("chelsea", "tabby, tabby cat"),  # a tabby cat
    "coffee": ("coffee", "espresso"),
    "rocket": ("rocket", "missile"),  # a launch; ImageNet has no "rocket" class
    "motorcycle": ("stereo_motorcycle", "moped"),  # left view of the stereo pair
}
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def sample_image(name: str) -> np.ndarray:
    """A bundled real photo as uint8 RGB (H, W, 3); needs scikit-image."""
    if name not in SAMPLES:
        raise unknown("sample image", name, SAMPLES, listing=True)
    try:
        import skimage.data
    except ImportError:
        raise ImageError("bundled sample photos need scikit-image: pip install scikit-image") from None
    image = getattr(skimage.data, SAMPLES[name][0])()
    if isinstance(image, tuple):  # stereo pairs come as (left, right, disparity)
        image = image[0]
    return np.asarray(image)


def _from_pil(img: Image.Image, label: str) -> np.ndarray:
    try:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float32)
            peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            if img.mode == "F":
                peak = max(float(arr.max()), 1.0) if arr.max() > 1 else 1.0
            gray = np.clip(arr / peak, 0.0, 1.0)
            return np.repeat(gray[..., None], 3, axis=-1)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparency on white rather than on undefined colors.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot decode image {label}: {e}") from None


def read_image(source) -> np.ndarray:
    """Any image source -> float32 RGB (H, W, 3) in [0, 1] at its own resolution.

    source: a path, bytes, a PIL image, or an array (H, W), (H, W, 1|3|4) of uint8 / uint16 / float
    in [0, 1].
    """
    if isinstance(source, np.ndarray) or hasattr(source, "__array__") and not isinstance(source, Image.Image):
        return _from_array(np.asarray(source))
    if isinstance(source, Image.Image):
        return _from_pil(source, "(PIL image)")
    if isinstance(source, (bytes, bytearray)):
        label, opener = "(bytes)", lambda: Image.open(io.BytesIO(source))
    else:
        path = Path(source).expanduser()
        label = str(path)
        if not path.exists():
            raise ImageError(f"image file not found: {path}")
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an image file")
        opener = lambda: Image.open(path)  # noqa: E731
    try:
        with opener() as img:
            img.load()  # decode now: truncated files fail here, not later
            return _from_pil(img, label)
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image file PIL can read") from None
    except Image.DecompressionBombError as e:  # the header claims more pixels than PIL will decode
        raise ImageError(f"{label} is too large to read: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot decode image {label} (truncated or corrupt?): {e}") from None


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ImageError(f"expected an image array (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ImageError("image array contains NaN or infinity")
        if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
            raise ImageError(
                f"float image values must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]"
            )
        arr = np.clip(arr, 0.0, 1.0)
    else:
        raise ImageError(f"unsupported image dtype {arr.dtype}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:  # alpha over white
        arr = arr[..., :3] * arr[..., 3:] + (1.0 - arr[..., 3:])
    return arr


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How an image file becomes the network's input in [0, 1] (normalization is in the net).

    mode "resize_crop": resize the shorter side to `resize`, then center-crop `size`×`size`
    (torchvision / EfficientNet evaluation); mode "stretch": resize to `size`×`size` without keeping
    the aspect ratio (the attribution-visualization code's cv2.resize for InceptionV1).
    """

    size: int = 224
    mode: str = "resize_crop"
    resize: int | None = 256
    resample: str = "bilinear"  # bilinear | bicubic
    clip: bool = True  # clip interpolation overshoot back into [0, 1]


# torchvision's ImageNet evaluation transform: resize the shorter side to 256, center-crop 224.
TORCHVISION_PREPROCESS = Preprocess(size=224, mode="resize_crop", resize=256, resample="bilinear")


@dataclasses.dataclass(frozen=True)
class CustomPreprocess:
    """A user's preprocessing (`from_flax(..., preprocess=fn)`): fn maps an RGB float image
    (H, W, 3) in [0, 1] to the network's input (size, size, 3) in [0, 1]."""

    fn: Callable[[np.ndarray], Any]
    size: int
    mode: str = "custom"


def preprocess(image: np.ndarray, pre: "Preprocess | CustomPreprocess") -> np.ndarray:
    """Resize/crop an RGB float image in [0, 1] to (size, size, 3) per the model's convention."""
    h, w = image.shape[:2]
    if min(h, w) < 8:
        raise ImageError(f"image of {w}x{h} pixels is too small to classify")
    if isinstance(pre, CustomPreprocess):
        out = np.asarray(pre.fn(image), np.float32)
        if out.shape != (pre.size, pre.size, 3) or not np.all(np.isfinite(out)):
            raise ImageError(f"the model's preprocess returned {out.shape} (finite: {bool(np.all(np.isfinite(out)))}); "
                             f"expected finite ({pre.size}, {pre.size}, 3)")
        return out
    resample = _RESAMPLE[pre.resample]
    channels = [Image.fromarray(image[..., c].astype(np.float32), mode="F") for c in range(3)]
    if pre.mode == "stretch":
        out_size = (pre.size, pre.size)
        channels = [ch.resize(out_size, resample) for ch in channels]
    elif pre.mode == "resize_crop":
        scale = pre.resize / min(h, w)
        nw, nh = max(pre.size, round(w * scale)), max(pre.size, round(h * scale))
        left, top = (nw - pre.size) // 2, (nh - pre.size) // 2
        box = (left, top, left + pre.size, top + pre.size)
        channels = [ch.resize((nw, nh), resample).crop(box) for ch in channels]
    else:
        raise ValueError(f"unknown preprocess mode {pre.mode!r}")
    out = np.stack([np.asarray(ch, dtype=np.float32) for ch in channels], axis=-1)
    return np.clip(out, 0.0, 1.0) if pre.clip else out


def read_source(source) -> np.ndarray:
    """`read_image`, also for the name of a bundled sample (a file of that name wins)."""
    if isinstance(source, str) and not Path(source).expanduser().exists():
        if source in SAMPLES:
            source = sample_image(source)
        elif "." not in Path(source).name:  # no extension: probably meant a bundled sample
            raise ImageError(
                f"image file not found: {source}" + _sample_hint(source)
            )
    return read_image(source)


def load_image(source, pre: Preprocess) -> np.ndarray:
    """Read `source` (path, bytes, PIL image, array or sample name) and preprocess it."""
    return preprocess(read_source(source), pre)


def _sample_hint(name: str) -> str:
    near = closest(name, SAMPLES)
    hint = f"; bundled samples: {', '.join(SAMPLES)}"
    return hint + (f" (closest: {near[0]!r})" if near else "")
