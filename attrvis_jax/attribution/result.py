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

from attrvis_jax.config import AttributionConfig
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import read_npz, write_npz

FORMAT_VERSION = 1
_ARRAYS = ("values", "positive", "heatmap", "baseline", "activations")
_SCALARS = ("logit", "logit_baseline", "completeness_error", "beta", "lambda0")


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
        meta, arrays = read_npz(path, "attribution", FORMAT_VERSION)
        arrays = {name: arrays[name] for name in _ARRAYS if name in arrays}
        return cls(
            **arrays,
            **{name: meta[name] for name in _SCALARS},
            model=meta["model"], layer=meta["layer"], target=meta["target"],
            target_name=meta["target_name"], method=meta["method"], input_size=meta["input_size"],
            config=AttributionConfig.from_dict(meta["config"]),
        )
