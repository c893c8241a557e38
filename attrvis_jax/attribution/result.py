"""`Attribution`: the result of `attribute` for one image, savable to and loadable from .npz.

The file holds the arrays under their field names and one JSON string `meta` with the scalars, the
names and the config, so loading needs no pickle and no recomputation. Writes are atomic (a temp
file in the same folder, then `os.replace`): a crash never leaves a half-written result.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from attrvis_jax.attribution.postprocess import directed_weights
from attrvis_jax.config import AttributionConfig
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import read_npz, write_npz

FORMAT_VERSION = 1
_ARRAYS = ("values", "positive", "heatmap", "baseline", "activations")
_SCALARS = ("logit", "logit_baseline", "completeness_error", "beta", "lambda0")
_REQUIRED = ("values", "positive", "heatmap")  # arrays every file has (baseline, activations: optional)
# meta fields -> the types they may have (every one of them must be there)
_META_KINDS = {"model": str, "layer": str, "target": int, "target_name": str, "method": str, "input_size": int,
               "config": dict, "logit": (int, float), "beta": (int, float), "lambda0": (int, float),
               "logit_baseline": (int, float, type(None)), "completeness_error": (int, float, type(None))}


@dataclasses.dataclass(frozen=True, eq=False)
class Attribution:
    """Neuron attributions of one image at one layer for one class, with their post-processing.

    values: R (H, W, K), each neuron's contribution to the target's pre-softmax logit z_c.
    positive: R⁺ = ReLU of the channel-filtered R (what the visualization maximizes).
    heatmap: the display heat map (H, W) (mean_k R⁺, low percentiles zeroed); `heatmap_image`
        resizes it to the input.
    baseline: b (H, W, K) for the path methods, else None.
    activations: a = f_l(photo) (H, W, K): the visualization excites each neuron the way it moved
        from b to a, relative to the photo's own score (`render.objectives.attribution_objective`). None in files written
        before it was stored.
    logit, logit_baseline: z_c(a), z_c(b). completeness_error: |ΣR − (z_c(a) − z_c(b))| of the
        unscaled path integral.
    beta: the mask's target area ratio (Otsu). lambda0: initial weight of the mask-area term.
    image: the photo as the network saw it (`attribute` sets it; files do not keep it): the heat map
        is drawn over it in a notebook (`_repr_html_`, `show()`).
    """

    values: np.ndarray
    positive: np.ndarray
    heatmap: np.ndarray
    beta: float
    lambda0: float
    logit: float
    model: str
    layer: str
    target: int
    target_name: str
    method: str
    config: AttributionConfig
    input_size: int
    baseline: np.ndarray | None = None
    logit_baseline: float | None = None
    completeness_error: float | None = None
    activations: np.ndarray | None = None
    image: np.ndarray | None = None  # the network's input (size, size, 3) as uint8, for display; not saved

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def relative_completeness_error(self) -> float | None:
        """completeness_error / |z_c(a) − z_c(b)| (None without a baseline)."""
        if self.completeness_error is None or self.logit_baseline is None:
            return None
        gap = abs(self.logit - self.logit_baseline)
        return self.completeness_error / gap if gap > 0 else float("inf")

    @property
    def directed(self) -> np.ndarray:
        """sign(a − b)·R⁺ (H, W, K): R⁺ signed the way each neuron moved from the baseline to the
        photo (`postprocess.directed_weights`; R⁺ itself in files without activations)."""
        return directed_weights(self.positive, self.activations, self.baseline)

    def heatmap_image(self, size: int | None = None) -> np.ndarray:
        """The heat map resized bilinearly to the input (size×size)."""
        from attrvis_jax.attribution.postprocess import upsample

        return np.asarray(upsample(self.heatmap, size or self.input_size))

    def summary(self) -> str:
        h, w, k = self.shape
        line = (f"{self.method} on {self.model}:{self.layer} ({h}x{w}x{k}) for class {self.target} "
                f"{self.target_name!r}: z_c(a) = {self.logit:.4g}")
        if self.logit_baseline is not None:
            line += f", z_c(b) = {self.logit_baseline:.4g}"
        if self.completeness_error is not None:
            line += f", completeness error {self.completeness_error:.3g} ({self.relative_completeness_error:.2%})"
        kept = int(np.count_nonzero(np.abs(self.positive).max(axis=(0, 1))))
        return line + f"; sum R = {float(self.values.sum()):.4g}, channels kept {kept}/{k}, beta {self.beta:.3f}"

    # ---- in a notebook -------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        """The heat map over the photo (or alone, loaded from a file), R⁺'s channel sum, the numbers."""
        from attrvis_jax import pictures

        heat = self.heatmap_image()
        photo = None if self.image is None else np.asarray(self.image, np.float32) / (255.0 if self.image.dtype == np.uint8 else 1.0)
        shown = pictures.heatmap_overlay(photo, heat) if photo is not None else pictures.colorize(heat)
        channel_sum = self.positive.sum(axis=-1)
        kept = int(np.count_nonzero(np.abs(self.positive).max(axis=(0, 1))))
        rows = [("model : layer", f"{self.model} : {self.layer} {self.shape}"),
                ("target", f"{self.target} {self.target_name!r}"), ("method", self.method),
                ("z_c(photo)", self.logit), ("z_c(baseline)", self.logit_baseline if self.logit_baseline is not None else "–"),
                ("completeness error", self.completeness_error if self.completeness_error is not None else "–"),
                ("sum R", float(self.values.sum())), ("channels kept", f"{kept} of {self.shape[-1]}"),
                ("beta (mask area)", self.beta), ("lambda0", self.lambda0)]
        return ("<div style='display:flex;gap:16px;align-items:flex-start'>"
                f"<figure style='margin:0'>{pictures.img_tag(shown, 224, 'heat map')}"
                "<figcaption style='font-size:12px;color:#667'>heat map"
                f"{' over the photo' if self.image is not None else ''}</figcaption></figure>"
                f"<figure style='margin:0'>{pictures.img_tag(pictures.colorize(pictures.resize(channel_sum, heat.shape)), 224, 'sum_k R+')}"
                "<figcaption style='font-size:12px;color:#667'>Σ_k R⁺</figcaption></figure>"
                f"{pictures.table(rows)}</div>")

    def show(self) -> None:
        """Display `_repr_html_` in the running notebook (lucid's `show`)."""
        from attrvis_jax import pictures

        pictures.show(self)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz atomically; returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            "format": FORMAT_VERSION,
            "model": self.model, "layer": self.layer, "target": self.target,
            "target_name": self.target_name, "method": self.method, "input_size": self.input_size,
            "config": self.config.to_dict(),
            **{name: getattr(self, name) for name in _SCALARS},
        }
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS if getattr(self, name) is not None}
        return write_npz(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Attribution":
        """Read a `save`d file; a file that is not one, is damaged, or lacks a field or has one
        of the wrong kind or shape is one AttrvisError naming the file and the field."""
        meta, arrays = read_npz(path, "attribution", FORMAT_VERSION)

        def bad(what: str) -> AttrvisError:
            return AttrvisError(f"{path} is not a complete attribution file: {what}")

        missing = [n for n in _META_KINDS if n not in meta] + [n for n in _REQUIRED if n not in arrays]
        if missing:
            raise bad(f"it lacks {', '.join(missing)}")
        for name, kinds in _META_KINDS.items():
            value = meta[name]
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise bad(f"{name} is {value!r}")
        values = arrays["values"]
        if values.ndim != 3 or not np.issubdtype(values.dtype, np.floating):
            raise bad(f"values must be float (H, W, K), got {values.dtype} {values.shape}")
        shapes = {"positive": values.shape, "heatmap": values.shape[:2], "baseline": values.shape,
                  "activations": values.shape}
        for name, shape in shapes.items():
            if name in arrays and arrays[name].shape != shape:
                raise bad(f"{name} has shape {arrays[name].shape}, values {values.shape} want {shape}")
        try:
            config = AttributionConfig.from_dict(meta["config"])
        except (AttrvisError, TypeError) as e:
            raise bad(f"its config: {e}") from None
        return cls(
            **{name: arrays[name] for name in _ARRAYS if name in arrays},
            **{name: None if meta[name] is None else float(meta[name]) for name in _SCALARS},
            model=meta["model"], layer=meta["layer"], target=int(meta["target"]),
            target_name=meta["target_name"], method=meta["method"], input_size=int(meta["input_size"]),
            config=config,
        )
