"""The paper's figures (§4.1, Figs. 5–8, 16–18) as functions, and `run_all` to make them all at once.

    from attrvis_jax.apps.figures import run_all
    run_all("efficientnet_lite0", "figs", schedule="reduced")     # a few PNG + JSON pairs

Every figure is a function `fig_<name>(model, out_dir, *, schedule, key, ...) -> dict` that writes
`<name>.png` and `<name>.json` atomically; the JSON holds the numbers behind the picture and a
`caption` naming the model, layer, class, seeds, steps and fidelity (the same caption is drawn on
the PNG). `FIGURES` maps the names to the functions, in the order `run_all` runs them:

    spectra        Fig. 5: log-amplitude spectra of every perturbation's background (2-D + radial)
    comparison     Figs. 6–7: (a) all feature maps, (b) NMF-factorized maps, (c) class-targeted
                   neurons, (d) ours without mask, (e) ours (pyramid), with PCC and top-5 consistency
    perturbations  Fig. 8: the five perturbations and the no-mask ablation, several seeds
    layers         Fig. 16: attribution visualizations at every stage of the network
    groups         Figs. 17–18: the integral visualization beside its channel-group visualizations

Sharing: a `FigureContext` holds the image, layer, class and schedule, and caches the attributions
(one per layer) and the renders (one per layer × perturbation). `run_all` uses one context, so the
attribution of the main layer is computed once, the comparison's (d) and (e) columns *are* the
perturbation figure's "none" and "pyramid" columns and the group figure's integral, and the layer
figure reuses the main layer's attribution and render.

Each figure is computed by a `compute_<name>` function (arrays and numbers, no drawing) and drawn by
a `draw_<name>` function (arrays and numbers in, a uint8 picture out). Image grids are PIL contact
sheets (`report.contact_sheet`) under a title band; the spectra use matplotlib's Agg backend.

Schedules: `SCHEDULES["paper"]` is the published one (2048 updates, 25 seeds, the default
AttributionConfig); `SCHEDULES["reduced"]` is a short one for CPUs (see `Schedule`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attrvis_jax.apps import progress as progress_mod
from attrvis_jax.config import AttributionConfig, RenderConfig, attribution_fidelity
from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import write_json
from attrvis_jax.apps.report import contact_sheet, heatmap_overlay, save_png
from attrvis_jax.metrics import directed_attribution, pearson_rows, target_rank

PAPER_LR = 0.02
PAPER_STEPS = 2048

# Grid geometry (report.contact_sheet's pad and caption height, and the title band drawn above it):
# a sheet of R rows and C columns of S×S cells with T title lines is
#   width  = C·(S + CELL_PAD) + CELL_PAD
#   height = TITLE_PAD + T·TITLE_LINE + R·(S + CELL_PAD + CAPTION_H) + CELL_PAD
CELL_PAD = 6
CAPTION_H = 16
TITLE_LINE = 14
TITLE_PAD = 8
CHAR_W = 6  # approximate width of a character of PIL's default font, for wrapping the title
SPECTRA_FIGSIZE = (15.0, 9.0)  # inches; at SPECTRA_DPI the PNG is exactly 1500 × 900 pixels
SPECTRA_DPI = 100


# ---- schedules ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long everything runs. Frozen and hashable.

    steps, seeds, lr: the renders (`RenderConfig.steps/seeds/lr`; lr and λ change every steps/10
        updates, as the paper's every 204 of 2048). lr None means 0.02·√(2048/steps): the paper's lr
        at 2048 steps, 0.08 at 128. Measured on EfficientNet-Lite0 blocks.10 / chelsea with 128
        updates (2 seeds, pyramid, β 0.107): the paper's 0.02 leaves the mask at area 0.41 with a
        faint image; 0.32 (0.02·2048/128, the same summed step length as the paper's run) saturates
        the mask into a binary speckle (area 0.14, PCC 0.115); 0.08 gives area 0.20, PCC 0.17.
    spatial_steps, channel_steps, path_steps: the attribution (baseline masks, Aumann–Shapley path).
    nmf_factors: groups of the comparison's factorized feature maps (b).
    views: images of the class for the channel grouping (the photo and flips/crops/rescales of it).
    stages: layers of the layer figure (None: every stage alias of the model, else all its layers).
    spectrum_draws: noise draws averaged per spectrum.
    fidelity: "default", "code" (the authors' code) or "paper" (the text) — RenderConfig.fidelity;
        the attribution follows the code unless "paper".
    chunk_size, engine: `RenderConfig.chunk_size/engine` (engine "loop" compiles ~25% faster on a
        CPU, which matters for tiny test schedules where compiling dominates).

    reduced (the default) is sized for a CPU: 128 updates × 2 seeds, baseline 256/512 mask steps and
    a 64-point path. It keeps every column of every figure, and all the numbers in the JSONs, at
    1/16 of the updates and 2 of the 25 seeds; its pictures are previews (masks not converged).
    On a 2-core CPU shared with other jobs, one render update of one 224×224 image took about
    0.35 s and the whole reduced run about an hour (attribution of 7 layers + 4 views ≈ 1/3 of it);
    see the timings `run_all` reports.
    paper: 2048 updates × 25 seeds at lr 0.02 and the default AttributionConfig (2049/4097 mask
    steps, 200 path points), 4 NMF groups and 8 views.
    """

    name: str = "reduced"
    steps: int = 128
    seeds: int = 2
    lr: float | None = None
    spatial_steps: int = 256
    channel_steps: int = 512
    path_steps: int = 64
    nmf_factors: int = 3
    views: int = 4
    stages: tuple[str, ...] | None = None
    spectrum_draws: int = 8
    fidelity: str = "default"
    chunk_size: int = 32
    engine: str = "scan"

    def __post_init__(self):
        for name in ("steps", "seeds", "path_steps", "nmf_factors", "views", "spectrum_draws", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise AttrvisError(f"schedule {name} must be >= 1, got {getattr(self, name)}")
        if self.stages is not None:
            object.__setattr__(self, "stages", tuple(self.stages))

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else PAPER_LR * math.sqrt(PAPER_STEPS / self.steps)

    def attribution_config(self) -> AttributionConfig:
        return AttributionConfig(fidelity=attribution_fidelity(self.fidelity), spatial_steps=self.spatial_steps,
                                 channel_steps=self.channel_steps, steps=self.path_steps)

    def render_config(self, perturbation: str) -> RenderConfig:
        return RenderConfig(perturbation=perturbation, fidelity=self.fidelity, steps=self.steps, seeds=self.seeds,
                            lr=self.learning_rate, snapshot_steps=(), chunk_size=min(self.chunk_size, self.steps),
                            engine=self.engine)

    def replace(self, **changes) -> "Schedule":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["learning_rate"] = self.learning_rate
        return d


SCHEDULES = {
    "reduced": Schedule(),
    "paper": Schedule(name="paper", steps=2048, seeds=25, lr=PAPER_LR, spatial_steps=2049, channel_steps=4097,
                      path_steps=200, nmf_factors=4, views=8, spectrum_draws=32),
}


def get_schedule(schedule: str | Schedule = "reduced", **overrides) -> Schedule:
    """A schedule by name (reduced, paper) or as given, with fields overridden (None = keep)."""
    if isinstance(schedule, Schedule):
        base = schedule
    elif schedule in SCHEDULES:
        base = SCHEDULES[schedule]
    else:
        raise AttrvisError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    return base.replace(**overrides)


# ---- the shared state of a run -----------------------------------------------------------------
def _as_key(key) -> tuple[jax.Array, Any]:
    """(PRNG key, what to record in JSON): an int seed (default 0) or a JAX key."""
    if key is None:
        key = 0
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key)), int(key)
    return key, "custom"


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
        self.layer = model.resolve_layer(layer) if layer else model.default_layer
        if target is None:
            logits = np.asarray(model.logits(jnp.asarray(self.x)))[: len(model.labels)]
            self.target = int(np.argmax(logits))
        else:
            self.target = int(model.class_index(target))
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

    def has_attribution(self, layer: str) -> bool:
        return self.model.resolve_layer(layer) in self._attributions

    # -- renders of the attribution, once per (layer, perturbation) --
    def render(self, perturbation: str, layer: str | None = None) -> dict:
        from attrvis_jax.render import visualize

        layer = self.model.resolve_layer(layer or self.layer)
        config = self.schedule.render_config(perturbation)
        cache_key = (layer, config.perturbation)
        if cache_key not in self._renders:
            attr = self.attribution(layer)
            t0 = time.perf_counter()
            result = visualize(self.model, attr, config, key=self.render_key,
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


# ---- forward passes and the metrics ------------------------------------------------------------
FORWARD_BATCH = 8  # fixed batch of the metric forward passes: one compile per layer, whatever N is


def _padded_batches(arrays: np.ndarray, fn) -> np.ndarray:
    """fn over fixed-size batches of `arrays` (zero-padded at the end), concatenated, padding dropped."""
    n = len(arrays)
    out = []
    for i in range(0, n, FORWARD_BATCH):
        chunk = arrays[i : i + FORWARD_BATCH]
        pad = FORWARD_BATCH - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(fn(jnp.asarray(chunk)))[: FORWARD_BATCH - pad])
    return np.concatenate(out)


def forward(model, images, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(activations at `layer` (N, H, W, K), logits (N, classes)) of images (N, size, size, 3)."""
    images = np.asarray(images, np.float32)
    acts = _padded_batches(images, lambda x: model.features(x, layer))
    return acts, head(model, acts, layer)


def head(model, acts, layer: str) -> np.ndarray:
    """Logits from activations (N, H, W, K) of `layer` (the network above the layer)."""
    return _padded_batches(np.asarray(acts, np.float32), lambda a: model.head(a, layer))


def _stats(values) -> dict:
    v = np.asarray(values, np.float64).ravel()
    return {"mean": float(v.mean()), "std": float(v.std()), "values": [float(x) for x in v]}


# ---- pure pieces that tests check exactly -------------------------------------------------------
def nmf(matrix: np.ndarray, n: int, *, iterations: int = 500, seed: int = 0, eps: float = 1e-10
        ) -> tuple[np.ndarray, np.ndarray]:
    """Nonnegative matrix factorization V ≈ W·H (Lee & Seung multiplicative updates, Frobenius loss).

    matrix: V (m, k) ≥ 0. Returns W (m, n), H (n, k), both ≥ 0, with the factors ordered by their
    share ‖W_g‖·‖H_g‖ of the reconstruction (largest first) and each H_g scaled to unit max (W takes
    the scale). Deterministic for a seed.
    """
    v = np.asarray(matrix, np.float64)
    if v.ndim != 2 or np.any(v < 0) or not np.all(np.isfinite(v)):
        raise AttrvisError("nmf needs a finite nonnegative matrix (rows, columns)")
    if n < 1 or n > min(v.shape):
        raise AttrvisError(f"cannot factorize a {v.shape} matrix into {n} factors")
    m, k = v.shape
    rng = np.random.default_rng(seed)
    scale = math.sqrt(max(v.mean(), eps) / n)
    w = scale * (0.5 + rng.random((m, n)))
    h = scale * (0.5 + rng.random((n, k)))
    for _ in range(iterations):
        h *= (w.T @ v) / (w.T @ w @ h + eps)
        w *= (v @ h.T) / (w @ (h @ h.T) + eps)
    peak = h.max(axis=1, keepdims=True)
    peak = np.where(peak > 0, peak, 1.0)
    h, w = h / peak, w * peak.T
    order = np.argsort(-(np.linalg.norm(w, axis=0) * np.linalg.norm(h, axis=1)), kind="stable")
    return w[:, order], h[order]


def select_class_neurons(scores: np.ndarray, share: float = 0.5, max_channels: int | None = None) -> np.ndarray:
    """The class-targeted channels (comparison column (c), after Singla et al. 2021).

    scores: s_k = Σ_ij a_ijk·∂z_c/∂a_ijk per channel (gradient × activation summed over positions:
    for a layer feeding an average pool and a linear classifier this is Singla et al.'s feature
    importance a_k·w_ck). Rule: only channels with s_k > 0 count; rank them by s_k (descending, ties
    by index) and keep the fewest top channels whose scores sum to at least `share` of Σ_{s_k>0} s_k,
    at most `max_channels`. Returns the kept channel indices, sorted; empty if no score is positive.
    """
    s = np.asarray(scores, np.float64).ravel()
    if not 0 < share <= 1:
        raise AttrvisError(f"share must be in (0, 1], got {share}")
    positive = np.flatnonzero(s > 0)
    if positive.size == 0:
        return np.zeros(0, np.int64)
    order = positive[np.argsort(-s[positive], kind="stable")]
    cumulative = np.cumsum(s[order])
    count = int(np.searchsorted(cumulative, share * cumulative[-1] * (1 - 1e-12), side="left")) + 1
    if max_channels is not None:
        count = min(count, int(max_channels))
    return np.sort(order[:count])


def amplitude_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean amplitude |FFT2|/(H·W) of images (..., H, W, C) over the leading axes and the channels,
    as an (H, W) map with DC at [0, 0] (not shifted). A constant image c gives c at DC, 0 elsewhere."""
    arr = jnp.asarray(np.asarray(images, np.float32))
    h, w = arr.shape[-3:-1]
    amp = jnp.abs(jnp.fft.fft2(arr, axes=(-3, -2))) / (h * w)
    return np.asarray(amp.reshape(-1, h, w, arr.shape[-1]).mean(axis=(0, 3)), np.float64)


def radial_profile(amplitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(radii in cycles per image 0..min(H, W)//2, mean amplitude in each ring of rounded radius)."""
    h, w = amplitude.shape
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    r = np.rint(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)).astype(int)
    top = min(h, w) // 2
    sums = np.bincount(r.ravel(), weights=amplitude.ravel(), minlength=top + 1)[: top + 1]
    counts = np.bincount(r.ravel(), minlength=top + 1)[: top + 1]
    return np.arange(top + 1), sums / np.maximum(counts, 1)


def spectral_slope(radii: np.ndarray, profile: np.ndarray, lo: int = 2, hi: int | None = None) -> float | None:
    """Least-squares slope of log10 amplitude against log10 radius over radii lo..hi (None if any is 0)."""
    hi = hi or int(radii[-1]) // 2
    sel = (radii >= lo) & (radii <= hi)
    p = profile[sel]
    if p.size < 2 or np.any(p <= 1e-12):
        return None
    return float(np.polyfit(np.log10(radii[sel]), np.log10(p), 1)[0])


# ---- drawing helpers ---------------------------------------------------------------------------
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


def heat_cell(x: np.ndarray, r_plus: np.ndarray, percentile: float = 65.0) -> np.ndarray:
    """The display heat map of R⁺ (`postprocess.heatmap`: mean_k R⁺, low percentiles zeroed) over
    the image; for a group's R⁺ as for the whole attribution."""
    from attrvis_jax.attribution.postprocess import heatmap

    return heatmap_overlay(x, np.asarray(heatmap(jnp.asarray(r_plus, jnp.float32), percentile)))


def _write(out_dir: Path, name: str, picture: np.ndarray, record: dict) -> dict:
    out_dir = Path(out_dir)
    png, js = out_dir / f"{name}.png", out_dir / f"{name}.json"
    save_png(png, picture)
    record = {"figure": name, **record, "png": png.name}
    write_json(js, record)
    return {**record, "png": str(png), "json": str(js)}


def _ok(hit) -> str:
    return "top5" if hit else "miss"


# ---- Fig. 5: spectra of the perturbations' backgrounds -----------------------------------------
def compute_spectra(x: np.ndarray, key: jax.Array, draws: int = 8, fidelity: str = "code") -> dict:
    """Log-amplitude spectra of what each perturbation puts where the mask is 0 (ALGORITHM §6).

    constant: the gray 0.55 (paper 0.5). gaussian: clip(N(0, 1), 0, 1). blur: the photo blurred with
    the pyramid's σ = 10 (M = 0) and σ = 4 levels. fractal: the single fractal noise (sd 0.19, decay
    1.5). pyramid 0..5: the six levels (sd 0.20 → 0.15, decay 1.5 → 1.0). photo: the input, for a
    natural reference. Random backgrounds are averaged over `draws` draws.
    Returns {"names", "amplitude" (n, H, W), "radii", "profiles" (n, R), "slopes", "dc"}.
    """
    from attrvis_jax.render import noise, perturb

    n = int(x.shape[0])
    k_gauss, k_fractal, k_pyramid = jax.random.split(key, 3)
    constant = 0.5 if fidelity == "paper" else 0.55
    blur = np.asarray(perturb.blur_levels(jnp.asarray(x)[None]))[0]  # (6, n, n, 3): σ 10, 8, 6, 4, 2, X
    pyramid = np.asarray(noise.noise_pyramid(k_pyramid, (draws,), n, n))  # (draws, 6, n, n, 3)
    backgrounds = {
        "constant": np.full((1, n, n, 3), constant, np.float32),
        "gaussian": np.clip(np.asarray(perturb.gaussian_background(k_gauss, (draws, n, n, 3))), 0.0, 1.0),
        "blur s=10": blur[0][None],
        "blur s=4": blur[3][None],
        "fractal": np.asarray(noise.fractal_noise(k_fractal, (draws,), n, n)),
        **{f"pyramid {d}": pyramid[:, d] for d in range(pyramid.shape[1])},
        "photo": np.asarray(x)[None],
    }
    names = list(backgrounds)
    amplitude = np.stack([amplitude_spectrum(backgrounds[k]) for k in names])
    profiles = []
    for a in amplitude:
        radii, p = radial_profile(a)
        profiles.append(p)
    profiles = np.stack(profiles)
    return {
        "names": names,
        "amplitude": amplitude,
        "radii": radii,
        "profiles": profiles,
        "slopes": {k: spectral_slope(radii, p) for k, p in zip(names, profiles)},
        "dc": {k: float(a[0, 0]) for k, a in zip(names, amplitude)},
        "sd_decay": {"fractal": [noise.FRACTAL_SD, noise.FRACTAL_DECAY],
                     **{f"pyramid {d}": [noise.PYRAMID_SD[d], noise.PYRAMID_DECAY[d]] for d in range(pyramid.shape[1])}},
        "draws": draws,
    }


def draw_spectra(data: dict, title: Sequence[str]) -> np.ndarray:
    """2-D log10 amplitude spectra (DC centered, one color scale) above the radial profiles."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, amplitude = data["names"], data["amplitude"]
    floor = 1e-7
    logs = np.log10(np.maximum(amplitude, floor))
    finite = logs[[i for i, k in enumerate(names) if k != "constant"]]
    vmin, vmax = float(np.percentile(finite, 1)), float(np.max(finite))
    fig = Figure(figsize=SPECTRA_FIGSIZE, dpi=SPECTRA_DPI)
    FigureCanvasAgg(fig)
    columns = math.ceil(len(names) / 2)
    grid = fig.add_gridspec(3, columns, height_ratios=[1, 1, 1.5], hspace=0.35, wspace=0.15,
                            left=0.05, right=0.94, top=0.88, bottom=0.07)
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i // columns, i % columns])
        im = ax.imshow(np.fft.fftshift(logs[i]), cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    cax = fig.add_axes([0.95, 0.45, 0.008, 0.4])
    bar = fig.colorbar(im, cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("log10 amplitude", fontsize=8)
    ax = fig.add_subplot(grid[2, : columns - 1])
    radii = data["radii"][1:]
    cmap = colormaps["viridis"]
    for i, name in enumerate(names):
        p = np.maximum(data["profiles"][i][1:], floor)
        if name.startswith("pyramid"):
            d = int(name.split()[1])
            style = {"color": cmap(d / 6), "lw": 1.6}
        else:
            style = {"color": {"constant": "0.5", "gaussian": "tab:red", "blur s=10": "tab:blue",
                               "blur s=4": "tab:cyan", "fractal": "tab:orange", "photo": "black"}[name],
                     "lw": 1.8, "ls": "--" if name == "photo" else "-"}
        slope = data["slopes"][name]
        label = f"{name} (slope {slope:.2f})" if slope is not None else f"{name} (0 beyond DC)"
        ax.loglog(radii, p, label=label, **style)
    ax.set_xlabel("spatial frequency (cycles per image)")
    ax.set_ylabel("mean amplitude |FFT| / (H W)")
    ax.set_ylim(floor * 0.5, None)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("\n".join(title), fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SPECTRA_DPI)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def fig_spectra(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                layer=None, target=None, context: FigureContext | None = None, quiet: bool = True) -> dict:
    """Fig. 5: amplitude spectra of the perturbations' backgrounds (computed with render.perturb and
    render.noise). Shows that constant has only DC, Gaussian is flat (white), blur falls off fast,
    fractal noise is one 1/f^1.5 slope and the pyramid spans slopes from −1.5 to −1 (a spread of
    natural-image-like spectra, like the photo's)."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_spectra(ctx.x, jax.random.fold_in(ctx.render_key, 5), ctx.schedule.spectrum_draws,
                           ctx.schedule.fidelity)
    title = ["Fig. 5 analogue: log10 amplitude spectra of each perturbation's background (DC centered) "
             "and their radial profiles", ctx.caption_line() + f" | {data['draws']} noise draws averaged"]
    picture = draw_spectra(data, title)
    record = {
        "caption": " ".join(title),
        "meta": ctx.meta(spectrum_draws=data["draws"]),
        "names": data["names"],
        "dc": data["dc"],
        "slopes": data["slopes"],
        "sd_decay": data["sd_decay"],
        "radii": data["radii"].tolist(),
        "profiles": {k: [float(f"{v:.6g}") for v in p] for k, p in zip(data["names"], data["profiles"])},
        "layout": {"height": int(picture.shape[0]), "width": int(picture.shape[1]),
                   "figsize": list(SPECTRA_FIGSIZE), "dpi": SPECTRA_DPI},
    }
    return _write(out_dir, "spectra", picture, record)


# ---- Figs. 6–7: comparison with feature-map methods --------------------------------------------
def comparison_maps(acts: np.ndarray, scores: np.ndarray, n_factors: int, share: float = 0.5) -> dict:
    """The feature-map objectives of columns (a)–(c) from the image's activations a (H, W, K) ≥ 0.

    (a) all: ReLU(a) (scaled to sum 1). (b) factors: NMF of a as (H·W × K) into n factors; factor g's
    map is W_g ⊗ H_g (spatial weights times channel weights, Olah et al.'s building blocks), each
    scaled to sum 1. (c) class: a ⊙ 1[k ∈ selected] with `select_class_neurons(scores, share)`.
    """
    a = np.maximum(np.asarray(acts, np.float64), 0.0)
    h, w, k = a.shape
    wf, hf = nmf(a.reshape(h * w, k), n_factors)
    factor_maps = np.einsum("pg,gk->gpk", wf, hf).reshape(n_factors, h, w, k)
    relative_error = float(np.linalg.norm(a.reshape(h * w, k) - wf @ hf) / max(np.linalg.norm(a), 1e-12))
    selected = select_class_neurons(scores, share)
    mask = np.zeros(k)
    mask[selected] = 1.0
    norm = lambda m: (m / m.sum()).astype(np.float32) if m.sum() > 0 else m.astype(np.float32)
    return {
        "all": norm(a),
        "factors": np.stack([norm(m) for m in factor_maps]),
        "factor_share": (np.linalg.norm(wf, axis=0) * np.linalg.norm(hf, axis=1)).tolist(),
        "nmf_relative_error": relative_error,
        "class": norm(a * mask),
        "selected": selected,
    }


def compute_comparison(ctx: FigureContext, share: float = 0.5) -> dict:
    """Render the five columns with one schedule, one key and one set of transforms.

    (a), (b) (n groups), (c) and (d) all use perturbation "none" and are rendered as ONE grouped
    batch (3 + n groups per seed: shared transform draws and the same initial image per seed), so
    only the objective differs between them; (e) is the pyramid render of the attribution, with the
    same key. Metrics (ALGORITHM §10): PCC of f_l(vis) with the original feature map a for (a)–(c)
    ((b): of the activations summed over its groups), with R⁺ for (d)–(e); top-5 consistency of the
    target ((b): the head applied to the summed activations). All columns also get PCC with R⁺.
    """
    from attrvis_jax.attribution import attribute
    from attrvis_jax.render import visualize

    model, layer, s = ctx.model, ctx.layer, ctx.schedule
    attr = ctx.attribution()
    gxa = attribute(model, ctx.x, layer, ctx.target, method="grad_x_activation", config=ctx.attribution_config)
    acts = _padded_batches(ctx.x[None], lambda x: model.features(x, layer))[0]
    scores = np.asarray(gxa.values, np.float64).sum(axis=(0, 1))
    maps = comparison_maps(acts, scores, s.nmf_factors, share)
    if maps["selected"].size == 0:
        raise AttrvisError(f"no channel of {layer} has a positive gradient x activation for {ctx.target_name!r}")
    n = s.nmf_factors
    r_stack = np.concatenate([maps["all"][None], maps["factors"], maps["class"][None],
                              np.asarray(attr.positive, np.float32)[None]])
    groups = r_stack.shape[0]
    beta = np.full(groups, 0.5, np.float32)  # unused without a mask
    lam = np.ones(groups, np.float32)  # unused without a mask
    config = s.render_config("none")
    t0 = time.perf_counter()
    nomask = visualize(model, (r_stack, beta, lam), config, key=ctx.render_key, layer=layer,
                       progress=ctx.bar("render (a)-(d) no mask"))
    ctx._add_time("render", t0)
    if not ctx.has_render("none"):
        ctx.store_render("none", layer, render_record(nomask, group=groups - 1))
    ours = ctx.render("pyramid")
    seeds = s.seeds

    composed = np.asarray(nomask.composed)  # (S, G, H, W, 3)
    batch = np.concatenate([composed.reshape(seeds * groups, *composed.shape[2:]), ours["composed"]])
    vis_acts, vis_logits = forward(model, batch, layer)
    classes = len(model.labels)
    g_acts = vis_acts[: seeds * groups].reshape(seeds, groups, *vis_acts.shape[1:])
    g_rank = target_rank(vis_logits[: seeds * groups], ctx.target, classes).reshape(seeds, groups)
    e_acts, e_rank = vis_acts[seeds * groups:], target_rank(vis_logits[seeds * groups:], ctx.target, classes)
    summed = g_acts[:, 1 : 1 + n].sum(axis=1)
    summed_rank = target_rank(head(model, summed, layer), ctx.target, classes)
    r_plus, r_raw, r_dir = np.asarray(attr.positive), np.asarray(attr.values), directed_attribution(attr)

    columns = {
        "a": {"label": "(a) all feature maps", "ref": "feature map", "acts": g_acts[:, 0], "rank": g_rank[:, 0]},
        "b": {"label": f"(b) factorized feature maps (NMF, {n} groups)", "ref": "feature map (sum over groups)",
              "acts": summed, "rank": summed_rank},
        "c": {"label": f"(c) class-targeted neurons ({maps['selected'].size} ch)", "ref": "feature map",
              "acts": g_acts[:, 1 + n], "rank": g_rank[:, 1 + n]},
        "d": {"label": "(d) ours without mask", "ref": "R+", "acts": g_acts[:, 2 + n], "rank": g_rank[:, 2 + n]},
        "e": {"label": "(e) ours (pyramid)", "ref": "R+", "acts": e_acts, "rank": e_rank},
    }
    metrics = {}
    for name, col in columns.items():
        ref = acts if col["ref"].startswith("feature map") else r_plus
        metrics[name] = {
            "label": col["label"],
            "pcc_reference": col["ref"],
            "pcc": _stats(pearson_rows(col["acts"], ref)),
            "pcc_r_plus": _stats(pearson_rows(col["acts"], r_plus)),
            "pcc_raw": _stats(pearson_rows(col["acts"], r_raw)),
            # sign(a - b)·R+: what the default (signed) objective excites; R+ on post-ReLU layers
            "pcc_directed": _stats(pearson_rows(col["acts"], r_dir)),
            "pcc_feature_map": _stats(pearson_rows(col["acts"], acts)),
            "top5_rate": float(np.mean(col["rank"] < 5)),
            "target_rank": [int(r) for r in col["rank"]],
        }
    metrics["b"]["pcc_group_vs_factor"] = [
        _stats(pearson_rows(g_acts[:, 1 + g], maps["factors"][g])) for g in range(n)]
    metrics["b"]["top5_rate_per_group"] = [float(np.mean(g_rank[:, 1 + g] < 5)) for g in range(n)]
    metrics["e"]["mask_area"] = _stats(ours["mask_area"])
    metrics["e"]["beta"] = float(attr.beta)
    return {
        "composed_nomask": composed,
        "composed_ours": ours["composed"],
        "masks_ours": ours["masks"],
        "metrics": metrics,
        "maps": maps,
        "n_factors": n,
        "class_rule": {"share": share, "selected": maps["selected"].tolist(),
                       "scores": [float(v) for v in scores]},
        "attribution": attr,
        "pcc_g": {"a": pearson_rows(g_acts[:, 0], acts), "c": pearson_rows(g_acts[:, 1 + n], acts),
                  "d": pearson_rows(g_acts[:, 2 + n], r_plus), "e": pearson_rows(e_acts, r_plus),
                  "b": [pearson_rows(g_acts[:, 1 + g], maps["factors"][g]) for g in range(n)]},
        "ranks": {"a": g_rank[:, 0], "c": g_rank[:, 1 + n], "d": g_rank[:, 2 + n], "e": e_rank, "b": summed_rank},
    }


def draw_comparison(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Rows = seeds; columns = input/heat map, (a), (b) × n, (c), (d), (e)."""
    n, seeds, size = data["n_factors"], ctx.schedule.seeds, ctx.x.shape[0]
    comp, ours, pcc, ranks = data["composed_nomask"], data["composed_ours"], data["pcc_g"], data["ranks"]
    attr = data["attribution"]
    cells, captions = [], []
    for s in range(seeds):
        if s == 0:
            cells.append(ctx.x), captions.append(f"input: {ctx.target_name[:28]}")
        elif s == 1:
            cells.append(heat_cell(ctx.x, attr.positive)), captions.append("heat map of R+")
        else:
            cells.append(blank(size)), captions.append("")
        cells.append(comp[s, 0]), captions.append(f"(a) all maps s{s} r={pcc['a'][s]:.2f} {_ok(ranks['a'][s] < 5)}")
        for g in range(n):
            extra = f" sum:{_ok(ranks['b'][s] < 5)}" if g == n - 1 else ""
            cells.append(comp[s, 1 + g]), captions.append(f"(b) NMF{g + 1} s{s} r={pcc['b'][g][s]:.2f}{extra}")
        cells.append(comp[s, 1 + n]), captions.append(f"(c) class s{s} r={pcc['c'][s]:.2f} {_ok(ranks['c'][s] < 5)}")
        cells.append(comp[s, 2 + n]), captions.append(f"(d) no mask s{s} r={pcc['d'][s]:.2f} {_ok(ranks['d'][s] < 5)}")
        cells.append(ours[s]), captions.append(f"(e) ours s{s} r={pcc['e'][s]:.2f} {_ok(ranks['e'][s] < 5)}")
    return grid_figure(cells, captions, columns=5 + n, title=title)


def fig_comparison(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                   layer=None, target=None, context: FigureContext | None = None, quiet: bool = True,
                   share: float = 0.5) -> dict:
    """Figs. 6–7: (a) all feature maps (Mahendran & Vedaldi: maximize Σ f_l(vis)·ReLU(a)), (b) NMF
    factorized feature maps (Olah et al.), (c) class-targeted neurons (Singla et al.; the rule is
    `select_class_neurons` with `share`), (d) ours without mask, (e) ours (fractal noise pyramid).
    Same schedule, key and transforms for every column (see `compute_comparison`)."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_comparison(ctx, share)
    m = data["metrics"]
    title = [
        "Figs. 6-7 analogue: (a) all feature maps, (b) NMF-factorized maps, (c) class-targeted neurons, "
        "(d) ours without mask, (e) ours with mask (pyramid); rows = seeds",
        ctx.caption_line(),
        "mean PCC [(a)-(c) vs feature map a, (d)-(e) vs R+]: " + ", ".join(
            f"{k} {m[k]['pcc']['mean']:.3f}" for k in "abcde")
        + " | (d), (e) vs sign(a-b)·R+: " + ", ".join(f"{k} {m[k]['pcc_directed']['mean']:.3f}" for k in "de")
        + " | top-5: " + ", ".join(f"{k} {m[k]['top5_rate']:.0%}" for k in "abcde")
        + f" | (c) keeps {len(data['class_rule']['selected'])} ch (share {data['class_rule']['share']})"
        + f" | (e) mask area {m['e']['mask_area']['mean']:.3f} (beta {m['e']['beta']:.3f})",
    ]
    picture, layout = draw_comparison(ctx, data, title)
    record = {
        "caption": " ".join(title),
        "meta": ctx.meta(nmf_factors=data["n_factors"]),
        "columns": ["input"] + ["a"] + [f"b{g + 1}" for g in range(data["n_factors"])] + ["c", "d", "e"],
        "metrics": m,
        "nmf": {"factors": data["n_factors"], "relative_error": data["maps"]["nmf_relative_error"],
                "factor_share": data["maps"]["factor_share"]},
        "class_rule": {**data["class_rule"],
                       "rule": "s_k = sum_ij a*dz_c/da; channels with s_k > 0 ranked by s_k; the fewest top "
                               "channels whose scores reach `share` of the positive total"},
        "layout": layout,
    }
    return _write(out_dir, "comparison", picture, record)


# ---- Fig. 8: the perturbations -----------------------------------------------------------------
PERTURBATION_ORDER = ("constant", "gaussian", "blur", "fractal", "pyramid", "none")


def compute_perturbations(ctx: FigureContext) -> dict:
    """One render per perturbation (seeds batched), plus PCC with R⁺ / raw R, top-5 and mask area."""
    attr = ctx.attribution()
    records = {p: ctx.render(p) for p in PERTURBATION_ORDER}
    seeds = ctx.schedule.seeds
    batch = np.concatenate([records[p]["composed"] for p in PERTURBATION_ORDER])
    acts, logits = forward(ctx.model, batch, ctx.layer)
    ranks = target_rank(logits, ctx.target, len(ctx.model.labels)).reshape(len(PERTURBATION_ORDER), seeds)
    acts = acts.reshape(len(PERTURBATION_ORDER), seeds, *acts.shape[1:])
    metrics = {}
    for i, p in enumerate(PERTURBATION_ORDER):
        metrics[p] = {
            "pcc": _stats(pearson_rows(acts[i], attr.positive)),
            "pcc_raw": _stats(pearson_rows(acts[i], attr.values)),
            "pcc_directed": _stats(pearson_rows(acts[i], directed_attribution(attr))),
            "top5_rate": float(np.mean(ranks[i] < 5)),
            "target_rank": [int(r) for r in ranks[i]],
            "mask_area": _stats(records[p]["mask_area"]) if records[p]["has_mask"] else None,
            "finite": [bool(v) for v in records[p]["finite"]],
        }
    return {"records": records, "metrics": metrics, "beta": float(attr.beta)}


def draw_perturbations(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Rows = seeds, then the masks of seed 0; columns = the perturbations."""
    seeds, size = ctx.schedule.seeds, ctx.x.shape[0]
    recs, m = data["records"], data["metrics"]
    cells, captions = [], []
    for s in range(seeds):
        for p in PERTURBATION_ORDER:
            cells.append(recs[p]["composed"][s])
            captions.append(f"{p} s{s} r={m[p]['pcc']['values'][s]:.2f} {_ok(m[p]['target_rank'][s] < 5)}")
    for p in PERTURBATION_ORDER:
        if recs[p]["has_mask"]:
            cells.append(recs[p]["masks"][0]), captions.append(f"{p} mask s0 area={recs[p]['mask_area'][0]:.2f}")
        else:
            cells.append(blank(size)), captions.append(f"{p}: no mask")
    return grid_figure(cells, captions, columns=len(PERTURBATION_ORDER), title=title)


def fig_perturbations(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                      layer=None, target=None, context: FigureContext | None = None, quiet: bool = True) -> dict:
    """Fig. 8: the same attribution visualized with constant, Gaussian, blur, single fractal and
    pyramid perturbations, and without a mask; several seeds (rows), the masks of seed 0 below."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_perturbations(ctx)
    m = data["metrics"]
    title = [
        "Fig. 8 analogue: one attribution visualized with each perturbation (columns) and seed (rows); "
        "bottom row: the masks of seed 0",
        ctx.caption_line(),
        "mean PCC vs R+: " + ", ".join(f"{p} {m[p]['pcc']['mean']:.3f}" for p in PERTURBATION_ORDER)
        + " | vs sign(a-b)·R+: " + ", ".join(f"{p} {m[p]['pcc_directed']['mean']:.3f}" for p in PERTURBATION_ORDER)
        + " | top-5: " + ", ".join(f"{p} {m[p]['top5_rate']:.0%}" for p in PERTURBATION_ORDER)
        + f" | beta {data['beta']:.3f}",
    ]
    picture, layout = draw_perturbations(ctx, data, title)
    record = {"caption": " ".join(title), "meta": ctx.meta(), "columns": list(PERTURBATION_ORDER),
              "beta": data["beta"], "metrics": m, "layout": layout}
    return _write(out_dir, "perturbations", picture, record)


# ---- Fig. 16: every stage ----------------------------------------------------------------------
def stage_layers(model, stages: Sequence[str] | None = None) -> list[str]:
    """The layers of the layer figure: `stages` (names or aliases), else the model's stage aliases
    in network order (EfficientNet-Lite: stage1..stage7 = blocks.0, 2, 4, 7, 10, 14, 15), else all
    its named layers."""
    if stages:
        names = [model.resolve_layer(s) for s in stages]
    elif model.spec.aliases:
        names = [target for _, target in model.spec.aliases]
    else:
        names = list(model.layers)
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return sorted(seen, key=model.layers.index)


def compute_layers(ctx: FigureContext, stages: Sequence[str] | None = None) -> dict:
    """Attribute and render (pyramid) every stage layer of the image, for the one target class.

    What is shared: the class is fixed once; the main layer's attribution and render come from the
    context's cache (the comparison already made them); the seeds of each layer are one vmapped
    render (one compile per layer, none per seed). What cannot be shared: each layer is its own
    truncated network, so its attribution (baseline masks + path) and its render compile separately
    — even layers with equal activation shapes (on EfficientNet-Lite0 the seven stages all differ:
    112²×16, 56²×24, 28²×40, 14²×80, 14²×112, 7²×192, 7²×320).
    """
    layers = stage_layers(ctx.model, stages)
    out = {"layers": layers, "attributions": {}, "records": {}, "metrics": {}}
    for layer in layers:
        attr = ctx.attribution(layer)
        rec = ctx.render("pyramid", layer)
        acts, logits = forward(ctx.model, rec["composed"], layer)
        rank = target_rank(logits, ctx.target, len(ctx.model.labels))
        out["attributions"][layer] = attr
        out["records"][layer] = rec
        out["metrics"][layer] = {
            "label": layer_label(ctx.model, layer),
            "shape": list(attr.values.shape),
            "beta": float(attr.beta),
            "pcc": _stats(pearson_rows(acts, attr.positive)),
            "pcc_raw": _stats(pearson_rows(acts, attr.values)),
            "pcc_directed": _stats(pearson_rows(acts, directed_attribution(attr))),
            "top5_rate": float(np.mean(rank < 5)),
            "target_rank": [int(r) for r in rank],
            "mask_area": _stats(rec["mask_area"]),
            "completeness_error": attr.completeness_error,
            "logit": float(attr.logit),
        }
    return out


def draw_layers(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Columns = layers; row 0 = the heat maps, then one row per seed."""
    cells, captions = [], []
    for layer in data["layers"]:
        attr, m = data["attributions"][layer], data["metrics"][layer]
        alias = [a for a, t in ctx.model.spec.aliases if t == layer]
        h, w, k = m["shape"]
        cells.append(heat_cell(ctx.x, attr.positive))
        captions.append(f"{alias[0] + ' ' if alias else ''}{layer} {h}x{w}x{k}")
    for s in range(ctx.schedule.seeds):
        for layer in data["layers"]:
            rec, m = data["records"][layer], data["metrics"][layer]
            cells.append(rec["composed"][s])
            captions.append(f"s{s} r={m['pcc']['values'][s]:.2f} area={rec['mask_area'][s]:.2f} "
                            f"{_ok(m['target_rank'][s] < 5)}")
    return grid_figure(cells, captions, columns=len(data["layers"]), title=title)


def fig_layers(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
               layer=None, target=None, context: FigureContext | None = None, quiet: bool = True,
               stages: Sequence[str] | None = None) -> dict:
    """Fig. 16: attribution visualizations (pyramid) of one image at every stage of the network
    (`stage_layers`; `stages`, else the schedule's, else all stage aliases); see `compute_layers`
    for what is batched and shared."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_layers(ctx, stages or ctx.schedule.stages)
    m = data["metrics"]
    title = [
        "Fig. 16 analogue: attribution visualizations (pyramid) at each stage; top row: heat maps of R+; "
        "rows below: seeds",
        ctx.caption_line().replace(f"layer {ctx.layer_label()}", "layers " + ", ".join(data["layers"])),
        "mean PCC vs R+: " + ", ".join(f"{l} {m[l]['pcc']['mean']:.3f}" for l in data["layers"])
        + " | vs sign(a-b)·R+: " + ", ".join(f"{l} {m[l]['pcc_directed']['mean']:.3f}" for l in data["layers"])
        + " | top-5: " + ", ".join(f"{l} {m[l]['top5_rate']:.0%}" for l in data["layers"]),
    ]
    picture, layout = draw_layers(ctx, data, title)
    record = {"caption": " ".join(title), "meta": ctx.meta(layers=data["layers"]), "columns": data["layers"],
              "metrics": m, "layout": layout}
    return _write(out_dir, "layers", picture, record)


# ---- Figs. 17–18: channel groups ---------------------------------------------------------------
# Views of the image that stand in for "other images of the class" (the bundled photos are other
# classes): (name, horizontal flip, crop box as fractions (top, left, bottom, right), zoom-out pad).
VIEWS = (
    ("original", False, None, 0.0),
    ("flip", True, None, 0.0),
    ("center crop 80%", False, (0.1, 0.1, 0.9, 0.9), 0.0),
    ("flipped center crop 80%", True, (0.1, 0.1, 0.9, 0.9), 0.0),
    ("top-left crop 85%", False, (0.0, 0.0, 0.85, 0.85), 0.0),
    ("bottom-right crop 85%", False, (0.15, 0.15, 1.0, 1.0), 0.0),
    ("zoom out 80% (reflect pad)", False, None, 0.125),
    ("flipped zoom out 80%", True, None, 0.125),
)


def make_views(model, image, count: int) -> tuple[list[str], np.ndarray]:
    """The first `count` of `VIEWS` of the image, preprocessed like any input: (names, (N, S, S, 3)).
    Crops and pads are taken from the full-resolution photo, then resized and cropped by the model."""
    if not 1 <= count <= len(VIEWS):
        raise AttrvisError(f"views must be between 1 and {len(VIEWS)}, got {count}")
    from attrvis_jax.data import read_source

    raw = read_source(image)
    names, images = [], []
    for name, flip, box, pad in VIEWS[:count]:
        img = raw
        if box is not None:
            h, w = img.shape[:2]
            t, l, b, r = box
            img = img[int(round(t * h)) : int(round(b * h)), int(round(l * w)) : int(round(r * w))]
        if pad:
            h, w = img.shape[:2]
            img = np.pad(img, ((int(pad * h),) * 2, (int(pad * w),) * 2, (0, 0)), mode="reflect")
        if flip:
            img = img[:, ::-1]
        names.append(name)
        images.append(model.load_image(np.ascontiguousarray(img)))
    return names, np.stack(images)


def compute_groups(ctx: FigureContext, tau: float = 0.3, min_loading: float | None = None) -> dict:
    """Channel groups from several views of the class, then the groups of the image's attribution.

    The views (`make_views`; the first is the photo itself, whose attribution is the shared one) are
    attributed as one batch; `groups.channel_groups` (factor analysis, τ = 0.3) groups the layer's
    channels; `groups.visualize_groups` renders every group as one grouped batch (pyramid, same key
    and schedule). The integral visualization is the shared pyramid render (the same config and key
    that `visualize_groups` would use), so it is not rendered twice.

    min_loading: the released code's 0.02 was set for GoogLeNet's attribution scale (R·z_c). On
    EfficientNet-Lite0 blocks.10 / chelsea (4 views, values scaled by |z_c| ≈ 9 like the code) it keeps
    5 of 112 channels in 2 groups holding 15% of R⁺; so the default None lets every channel with a
    positive loading join its largest factor (there: 22 channels in 3 groups, 50% of R⁺; the
    channels that no view keeps at τ = 0.3 have zero loadings and stay out). Pass 0.02 for the code.
    """
    from attrvis_jax.attribution import attribute
    from attrvis_jax.groups import channel_groups, visualize_groups

    model, layer, s = ctx.model, ctx.layer, ctx.schedule
    attr = ctx.attribution()
    names, views = make_views(model, ctx.image, s.views)
    others = []
    if len(views) > 1:
        t0 = time.perf_counter()
        others = attribute(model, views[1:], layer, [ctx.target] * (len(views) - 1), config=ctx.attribution_config,
                           key=ctx.attr_key, progress=ctx.bar(f"attribution of {len(views) - 1} views"))
        ctx._add_time("attribution", t0)
    # The grouping thresholds (min loading 0.02) were set for the code's attribution scale R·z_c(a)
    # (ALGORITHM §3, scale_by_logit): group that, each view scaled by its own |z_c|; the scale does not
    # change which channels are grouped together, only which loadings count as small.
    scaled = [np.asarray(a.values) * abs(float(a.logit)) for a in [attr, *others]]
    threshold = float(np.finfo(np.float64).tiny) if min_loading is None else float(min_loading)
    grouping = channel_groups(scaled, tau=tau, layer=layer, min_loading=threshold)
    integral = ctx.render("pyramid")
    t0 = time.perf_counter()
    shown = visualize_groups(model, attr, grouping, ctx.schedule.render_config("pyramid"), ctx.render_key,
                             progress=ctx.bar("render groups"), include_integral=False)
    ctx._add_time("render", t0)
    groups_composed = np.asarray(shown.groups.composed)  # (S, G, H, W, 3)
    parts = shown.parts
    seeds, g = groups_composed.shape[:2]
    batch = np.concatenate([integral["composed"], groups_composed.reshape(seeds * g, *groups_composed.shape[2:])])
    acts, logits = forward(model, batch, layer)
    ranks = target_rank(logits, ctx.target, len(model.labels))
    i_acts, i_rank = acts[:seeds], ranks[:seeds]
    g_acts = acts[seeds:].reshape(seeds, g, *acts.shape[1:])
    g_rank = ranks[seeds:].reshape(seeds, g)
    group_metrics = []
    for j, part in enumerate(parts):
        group_metrics.append({
            "group": int(part["group"]),
            "channels": [int(c) for c in part["channels"]],
            "beta": float(part["beta"]),
            "share_of_r_plus": float(np.sum(part["r_plus"]) / max(float(np.sum(attr.positive)), 1e-12)),
            "pcc": _stats(pearson_rows(g_acts[:, j], part["r_plus"])),
            "pcc_integral_r_plus": _stats(pearson_rows(g_acts[:, j], attr.positive)),
            "top5_rate": float(np.mean(g_rank[:, j] < 5)),
            "target_rank": [int(r) for r in g_rank[:, j]],
            "mask_area": _stats(np.asarray(shown.groups.mask_area)[:, j]),
        })
    return {
        "views": names,
        "grouping": grouping,
        "parts": parts,
        "integral": integral,
        "groups_composed": groups_composed,
        "group_masks": np.asarray(shown.groups.masks),
        "integral_metrics": {"pcc": _stats(pearson_rows(i_acts, attr.positive)),
                             "top5_rate": float(np.mean(i_rank < 5)),
                             "target_rank": [int(r) for r in i_rank],
                             "mask_area": _stats(integral["mask_area"]), "beta": float(attr.beta)},
        "group_metrics": group_metrics,
        "attribution": attr,
        "tau": tau,
        "min_loading": "any positive loading" if min_loading is None else float(min_loading),
        "r_plus_coverage": float(sum(m["share_of_r_plus"] for m in group_metrics)),
    }


def draw_groups(ctx: FigureContext, data: dict, title: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Row 0: heat maps (integral R⁺, then each group's R⁺_g); rows below: integral | groups per seed."""
    attr, parts, gm, im = data["attribution"], data["parts"], data["group_metrics"], data["integral_metrics"]
    cells = [heat_cell(ctx.x, attr.positive)]
    captions = [f"integral R+ beta={attr.beta:.2f}"]
    for part, m in zip(parts, gm):
        cells.append(heat_cell(ctx.x, part["r_plus"]))
        captions.append(f"group {m['group'] + 1}: {len(m['channels'])} ch, {m['share_of_r_plus']:.0%} of R+")
    for s in range(ctx.schedule.seeds):
        cells.append(data["integral"]["composed"][s])
        captions.append(f"integral s{s} r={im['pcc']['values'][s]:.2f} {_ok(im['target_rank'][s] < 5)}")
        for j, m in enumerate(gm):
            cells.append(data["groups_composed"][s, j])
            captions.append(f"group {m['group'] + 1} s{s} r={m['pcc']['values'][s]:.2f} {_ok(m['target_rank'][s] < 5)}")
    return grid_figure(cells, captions, columns=1 + len(parts), title=title)


def fig_groups(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
               layer=None, target=None, context: FigureContext | None = None, quiet: bool = True,
               tau: float = 0.3, min_loading: float | None = None) -> dict:
    """Figs. 17–18: the integral visualization beside the visualizations of its channel groups.
    The groups come from factor analysis of the attributions of several views of the image (flips,
    crops, a zoom-out: `VIEWS`), standing in for the paper's other images of the class; see
    `compute_groups` for min_loading."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_groups(ctx, tau, min_loading)
    grouping, gm, im = data["grouping"], data["group_metrics"], data["integral_metrics"]
    title = [
        "Figs. 17-18 analogue: integral visualization (left) and its channel-group visualizations (right); "
        "top row: heat maps of R+ and of each group's R+",
        ctx.caption_line(),
        f"channel groups: factor analysis (tau {data['tau']}, {grouping.n_factors} factors) of the attributions of "
        f"{len(data['views'])} views of this one photo ({', '.join(data['views'])}), not of other photos of the class"
        f"; the groups hold {data['r_plus_coverage']:.0%} of R+ | mean PCC vs own R+: integral {im['pcc']['mean']:.3f}, "
        + ", ".join(f"group {m['group'] + 1} {m['pcc']['mean']:.3f}" for m in gm),
    ]
    picture, layout = draw_groups(ctx, data, title)
    record = {
        "caption": " ".join(title),
        "meta": ctx.meta(views=data["views"], tau=data["tau"], min_loading=data["min_loading"],
                         grouped_values="R * |z_c| per view (the code's scale_by_logit)"),
        "channel_groups": grouping.to_dict(),
        "integral": im,
        "groups": gm,
        "r_plus_coverage": data["r_plus_coverage"],
        "layout": layout,
    }
    return _write(out_dir, "groups", picture, record)


# ---- all of them -------------------------------------------------------------------------------
FIGURES: dict[str, Callable[..., dict]] = {
    "spectra": fig_spectra,
    "comparison": fig_comparison,
    "perturbations": fig_perturbations,
    "layers": fig_layers,
    "groups": fig_groups,
}


def run_all(
    model_name: str = "efficientnet_lite0",
    out_dir: str | Path = "figures",
    *,
    schedule: str | Schedule = "reduced",
    image="chelsea",
    layer: str | None = None,
    target=None,
    seeds: int | None = None,
    steps: int | None = None,
    figures: Sequence[str] | str | None = None,
    fidelity: str | None = None,
    key=0,
    quiet: bool = False,
    progress: Callable[[int, int], None] | None = None,
    model=None,
) -> dict:
    """Make every figure (or the named ones) into out_dir, sharing one attribution and its renders.

    model_name: a registered model (`attrvis_jax.load_model`), unless `model` (a loaded Model) is
    given. schedule: "reduced" | "paper" | a `Schedule`; seeds/steps/fidelity override it. figures: names
    from `FIGURES` (default all, in that order). progress(done, total) is called after each figure.
    Returns {"figures": {name: record}, "files": [...], "timings": {...}, "schedule": {...}};
    the same summary is written to out_dir/figures.json.
    """
    from attrvis_jax.models import load_model

    t_start = time.perf_counter()
    names = list(FIGURES) if figures is None else ([figures] if isinstance(figures, str) else list(figures))
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise AttrvisError(f"unknown figure(s) {bad}; valid: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else load_model(model_name)
    sched = get_schedule(schedule, seeds=seeds, steps=steps, fidelity=fidelity)
    ctx = FigureContext(model, schedule=sched, key=key, image=image, layer=layer, target=target, quiet=quiet)
    ctx.log(f"{len(names)} figure(s) into {out_dir}: {ctx.caption_line()}")
    results, timings, files = {}, {}, []
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        results[name] = FIGURES[name](model, out_dir, schedule=sched, context=ctx, quiet=quiet)
        timings[name + "_s"] = time.perf_counter() - t0
        files += [results[name]["png"], results[name]["json"]]
        ctx.log(f"{name}: {timings[name + '_s']:.0f} s -> {results[name]['png']}")
        if progress is not None:
            progress(i + 1, len(names))
    timings.update({k: v for k, v in ctx.timings.items()})
    timings["total_s"] = time.perf_counter() - t_start
    summary = {
        "model": model.name, "image": ctx.image_label, "layer": ctx.layer, "target": ctx.target_name,
        "target_index": ctx.target, "schedule": sched.to_dict(), "key": ctx.key_label,
        "figures": {n: {"png": Path(r["png"]).name, "json": Path(r["json"]).name, "caption": r["caption"]}
                    for n, r in results.items()},
        "timings": timings,
    }
    write_json(out_dir / "figures.json", summary)
    files.append(str(out_dir / "figures.json"))
    return {"figures": results, "files": files, "timings": timings, "schedule": sched.to_dict(),
            "out_dir": str(out_dir)}
