"""The shared state of a figure run (`FigureContext`: image, layer, class, schedule, and the caches of
attributions and renders) and the figures' own forward pass and metric summaries.

The forward pass (`forward`, `head`) runs the network in fixed batches of `FORWARD_BATCH` and hands
back the activations and logits as host arrays, because the figures need more than
`attrvis_jax.metrics.evaluate_rows` gives: PCC in float64 against several references per batch (feature
map, R+, raw R, sign(a - b)·R+, a group's R+), the head applied to activations summed over groups
(comparison (b)), and one compile per layer whatever the batch."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from attrvis_jax.apps import progress as progress_mod
from attrvis_jax.apps.figures.schedule import Schedule, get_schedule
from attrvis_jax.attribution.api import resolve_targets
from attrvis_jax.config import RenderConfig
from attrvis_jax.devices import fixed_batches
from attrvis_jax.prng import as_key


def _as_key(key) -> tuple[jax.Array, Any]:
    """(PRNG key, what to record in JSON): an int seed (default 0) or a JAX key."""
    if key is None or isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return as_key(key), int(key or 0)
    return as_key(key), "custom"


class FigureContext:
    """Image, layer, class and schedule of a run, with caches of attributions and renders.

    image: a bundled sample name (chelsea, coffee, rocket, motorcycle), a path or an array.
    layer: the main layer (default the model's default layer); target: class index or name
    (default the model's top class for the image, fixed once for every layer and view).
    """

    def __init__(self, model, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                 layer: str | None = None, target=None, quiet: bool = True):
        self.model = model
        self.schedule = get_schedule(schedule)
        self.key, self.key_label = _as_key(key)
        self.attr_key, self.render_key = jax.random.split(self.key)
        self.image = image
        self.image_label = image if isinstance(image, str) else ("(array)" if isinstance(image, np.ndarray) else str(image))
        self.x = model.load_image(image)
        self.layer = model.resolve_layer(layer)
        self.target = int(resolve_targets(model, self.x[None], target)[0])
        self.target_name = model.class_name(self.target)
        self.quiet = quiet
        self.attribution_config = self.schedule.attribution_config()
        self._attributions: dict[str, Any] = {}
        self._renders: dict[tuple[str, str], dict] = {}
        self.timings: dict[str, float] = {}

    # -- logging --
    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[figures] {message}", flush=True)

    def bar(self, description: str):
        return progress_mod.bar(description, quiet=self.quiet)

    # -- attribution, once per layer --
    def attribution(self, layer: str | None = None):
        from attrvis_jax.attribution import attribute

        layer = self.model.resolve_layer(layer or self.layer)
        if layer not in self._attributions:
            t0 = time.perf_counter()
            self._attributions[layer] = attribute(
                self.model, self.x, layer, self.target, config=self.attribution_config, key=self.attr_key,
                progress=self.bar(f"attribution {layer}"))
            self._add_time("attribution", t0)
        return self._attributions[layer]

    # -- renders of the attribution, once per (layer, perturbation) --
    def render(self, perturbation: str, layer: str | None = None) -> dict:
        from attrvis_jax.render import visualize

        layer = self.model.resolve_layer(layer or self.layer)
        config = self.schedule.render_config(perturbation)
        cache_key = (layer, config.perturbation)
        if cache_key not in self._renders:
            attr = self.attribution(layer)
            t0 = time.perf_counter()
            result = visualize(self.model, attr, config, key=self.render_key, options=self.schedule.run_options,
                               progress=self.bar(f"render {config.perturbation} {layer}"))
            self._add_time("render", t0)
            self._renders[cache_key] = render_record(result)
        return self._renders[cache_key]

    def store_render(self, perturbation: str, layer: str, record: dict) -> None:
        """Cache a render made elsewhere (e.g. one group of a grouped batch with the same config and key)."""
        self._renders[(self.model.resolve_layer(layer), RenderConfig(perturbation=perturbation).perturbation)] = record

    def has_render(self, perturbation: str, layer: str | None = None) -> bool:
        layer = self.model.resolve_layer(layer or self.layer)
        return (layer, RenderConfig(perturbation=perturbation).perturbation) in self._renders

    def _add_time(self, what: str, t0: float) -> None:
        self.timings[what + "_s"] = self.timings.get(what + "_s", 0.0) + time.perf_counter() - t0

    # -- captions --
    def layer_label(self, layer: str | None = None) -> str:
        return layer_label(self.model, layer or self.layer)

    def meta(self, layer: str | None = None, **extra) -> dict:
        s = self.schedule
        return {
            "model": self.model.name,
            "weights": self.model.weights_source,
            "image": self.image_label,
            "layer": self.model.resolve_layer(layer or self.layer),
            "layer_label": self.layer_label(layer),
            "target": self.target_name,
            "target_index": self.target,
            "seeds": s.seeds,
            "steps": s.steps,
            "lr": s.learning_rate,
            "fidelity": s.fidelity,
            "schedule": s.name,
            "key": self.key_label,
            "attribution": {"spatial_steps": self.attribution_config.spatial_steps,
                            "channel_steps": self.attribution_config.channel_steps,
                            "path_steps": self.attribution_config.steps},
            **extra,
        }

    def caption_line(self, layer: str | None = None) -> str:
        s = self.schedule
        return (f"{self.model.name} | layer {self.layer_label(layer)} | class {self.target} '{self.target_name}' | "
                f"image {self.image_label} | {s.seeds} seeds x {s.steps} steps (lr {s.learning_rate:.3g}) | "
                f"fidelity {s.fidelity} | schedule {s.name}")


def layer_label(model, layer: str) -> str:
    """'blocks.10 (stage5)' when the layer has an alias, else the name."""
    layer = model.resolve_layer(layer)
    aliases = [a for a, target in model.spec.aliases if target == layer]
    return f"{layer} ({', '.join(aliases)})" if aliases else layer


def render_record(result, group: int | None = None) -> dict:
    """The arrays of a RenderResult (or of one group of a grouped one) that figures use."""
    pick = (lambda a: np.asarray(a)) if group is None else (lambda a: np.asarray(a)[:, group])
    return {
        "composed": pick(result.composed),
        "masks": pick(result.masks),
        "mask_area": pick(result.mask_area),
        "loss": np.asarray(result.loss),
        "finite": np.asarray(result.finite),
        "seed_ids": tuple(result.seed_ids),
        "has_mask": result.config.has_mask,
    }


FORWARD_BATCH = 8  # fixed batch of the metric forward passes: one compile per layer, whatever N is


def forward(model, images, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(activations at `layer` (N, H, W, K), logits (N, classes)) of images (N, size, size, 3)."""
    images = np.asarray(images, np.float32)
    acts = fixed_batches(lambda x: model.features(x, layer), images, width=FORWARD_BATCH)
    return acts, head(model, acts, layer)


def head(model, acts, layer: str) -> np.ndarray:
    """Logits from activations (N, H, W, K) of `layer` (the network above the layer)."""
    return fixed_batches(lambda a: model.head(a, layer), np.asarray(acts, np.float32), width=FORWARD_BATCH)


def _stats(values) -> dict:
    v = np.asarray(values, np.float64).ravel()
    return {"mean": float(v.mean()), "std": float(v.std()), "values": [float(x) for x in v]}
