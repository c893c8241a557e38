"""Image input: reading files robustly and bringing them to a model's input convention.

`read_image` gives float32 RGB in [0, 1] at the file's own resolution from any PIL-readable file
(grayscale, RGBA, palette, 16-bit, CMYK, EXIF-rotated), or from an array. `load_image(source,
model)` then resizes and crops it per the model's `Preprocess` (the same as `model.load_image(source)`).
Bundled photos come from scikit-image's offline data.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attrvis_jax import _deprecated
from attrvis_jax.errors import AttrvisError, ImageError, closest, unknown
from attrvis_jax.fileio import input_file

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


def _one_frame(img: Image.Image, label: str) -> None:
    """Refuse a file of several pictures (an animated GIF, WebP or PNG, a multi-page TIFF): which
    one was meant is not ours to guess. MPO is the exception: camera JPEGs carry a preview or a
    second view after the primary picture, which by the format's definition is frame 0."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        kind = "an animation of {} frames" if img.format not in ("TIFF", "PDF") else "a file of {} pages"
        raise ImageError(f"{label} is {kind.format(frames)} ({img.format}); attrvis reads one picture: "
                         "save the one you mean as an image file of its own")


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
        path = input_file(source, "image file", ImageError)
        label = str(path)
        opener = lambda: Image.open(path)  # noqa: E731
    try:
        with opener() as img:
            _one_frame(img, label)
            img.load()  # decode now: truncated files fail here, not later
            return _from_pil(img, label)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image file PIL can read") from None
    except Image.DecompressionBombError as e:  # the header claims more pixels than PIL will decode
        raise ImageError(f"{label} is too large to read: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot decode image {label} (truncated or corrupt?): {e}") from None


# How far outside [0, 1] a float image may lie: a picture given as floats (rounding only), and a
# network input that a resize without clipping made (InceptionV1's bicubic stretch, `clip=False`:
# the cubic kernel's 2-D overshoot on a 0/1 pattern is at most 0.281).
PICTURE_SLACK = 1e-3
INPUT_SLACK = 0.3


def check_unit_range(images, what: str = "the float image", slack: float = PICTURE_SLACK) -> None:
    """Float images must be finite and lie in [0, 1] (every network here normalizes its input
    itself), give or take `slack`: images in 0..255 or already normalized (mean/std) would run
    without a word and mean nothing."""
    arr = np.asarray(images)
    if not np.all(np.isfinite(arr)):
        raise ImageError(f"{what} contains NaN or infinite values")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < -slack or hi > 1 + slack:
        hint = ("; it looks like 0..255: divide by 255, or pass uint8" if hi > 1.5 and lo >= -slack else
                "; it looks normalized (mean/std): pass it in [0, 1], the network normalizes it" if lo < 0 else "")
        raise ImageError(f"{what}: values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ImageError(f"expected an image array (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ImageError("image array contains NaN or infinity")
        check_unit_range(arr)
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


@_deprecated.renamed_parameters(pre="model")
def load_image(source, model) -> np.ndarray:
    """Read `source` (path, bytes, PIL image, array or sample name) and preprocess it the way
    `model` wants its input: `model` is a `Model` (then this is `model.load_image(source)`) or a
    `Preprocess`. Returns (size, size, 3) float32 in [0, 1]."""
    return preprocess(read_source(source), preprocess_of(model))


def preprocess_of(model) -> "Preprocess | CustomPreprocess":
    """The `Preprocess` of a `Model` (its spec's), or `model` itself if it is one."""
    if isinstance(model, (Preprocess, CustomPreprocess)):
        return model
    pre = getattr(getattr(model, "spec", None), "preprocess", None)
    if not isinstance(pre, (Preprocess, CustomPreprocess)):
        raise AttrvisError(f"load_image needs a Model or a Preprocess, got {type(model).__name__}")
    return pre


def is_array(source) -> bool:
    return isinstance(source, np.ndarray) or hasattr(source, "__array__") and not isinstance(source, Image.Image)


def network_input(source, pre: "Preprocess | CustomPreprocess") -> np.ndarray:
    """One image as the network's input (size, size, 3) in [0, 1]: a float array already that size
    is taken as preprocessed (after the range check); anything else, any dtype or size, a path,
    bytes, a PIL image or a sample name, is read and preprocessed (`load_image`)."""
    if is_array(source):
        arr = np.asarray(source)
        if np.issubdtype(arr.dtype, np.floating) and arr.shape == (pre.size, pre.size, 3):
            check_unit_range(arr, "the float image (the network's input size, so taken as its input)", INPUT_SLACK)
            return arr.astype(np.float32)
    return load_image(source, pre)


def network_inputs(images, pre: "Preprocess | CustomPreprocess") -> tuple[np.ndarray, bool]:
    """(batch (N, size, size, 3) in [0, 1], whether `images` was one image). A batch is an array
    (N, H, W, C) or a list/tuple of sources; each of its images follows `network_input`'s rule, the
    same as it would alone (a float batch of another size is resized, never used as it is)."""
    if isinstance(images, (list, tuple)) and all(map(_is_source, images)):
        batch = list(images)  # paths, PIL images, arrays: one image each
    elif is_array(images) and np.ndim(images) == 4 or isinstance(images, (list, tuple)) and np.ndim(images) == 4:
        batch = list(np.asarray(images))
    else:
        return network_input(images, pre)[None], True
    if not batch:
        raise ImageError("an empty batch of images")
    return np.stack([network_input(x, pre) for x in batch]), False


def _is_source(item) -> bool:
    """One image on its own (not a row of numbers): a path, bytes, a PIL image or an array."""
    return isinstance(item, (str, bytes, bytearray, os.PathLike, Image.Image)) or (
        is_array(item) and np.ndim(item) >= 2)


def _sample_hint(name: str) -> str:
    near = closest(name, SAMPLES)
    hint = f"; bundled samples: {', '.join(SAMPLES)}"
    return hint + (f" (closest: {near[0]!r})" if near else "")
