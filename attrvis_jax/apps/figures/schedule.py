"""How long the figures run: `Schedule`, a view of a preset of `attrvis_jax.configs` (reduced, paper)
that a run may change field by field, the named `SCHEDULES` and `get_schedule`."""

from __future__ import annotations

import dataclasses

from attrvis_jax import configs
from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions, attribution_fidelity
from attrvis_jax.configs import paper
from attrvis_jax.errors import AttrvisError


def _fields(preset: configs.Preset) -> dict:
    """A preset's numbers as Schedule fields (lr None where the preset scales it with the steps)."""
    r, a, run = preset.render, preset.attribution, preset.run
    return dict(name=preset.name, steps=r.steps, seeds=run.seeds, lr=None if preset.scale_lr else r.lr,
                spatial_steps=a.spatial_steps, channel_steps=a.channel_steps, path_steps=a.steps,
                nmf_factors=preset.nmf_factors, views=preset.views, spectrum_draws=preset.spectrum_draws,
                fidelity=r.fidelity, chunk_size=run.chunk_size, engine=run.engine)


_REDUCED = _fields(configs.get("reduced"))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long everything runs. Frozen and hashable. The defaults are the reduced preset's
    (`configs.reduced`, sized for a CPU); `from_preset` views any preset, e.g. `configs.paper`.

    steps, seeds, lr: the renders (`RenderConfig.steps/lr`, `RunOptions.seeds`; lr and λ change every steps/10
        updates, as the paper's every 204 of 2048). lr None means `configs.paper.scaled_lr(steps)`,
        0.02·√(2048/steps): the paper's lr at 2048 steps, 0.08 at 128 (why: `configs.reduced`).
    spatial_steps, channel_steps, path_steps: the attribution (baseline masks, Aumann–Shapley path).
    nmf_factors: groups of the comparison's factorized feature maps (b).
    views: images of the class for the channel grouping (the photo and flips/crops/rescales of it).
    stages: layers of the layer figure (None: every stage alias of the model, else all its layers).
    spectrum_draws: noise draws averaged per spectrum.
    fidelity: "default", "code" (the authors' code) or "paper" (the text) — RenderConfig.fidelity;
        the attribution follows the code unless "paper".
    chunk_size, engine: `RunOptions.chunk_size/engine` (engine "loop" compiles faster on a
        CPU, which matters for tiny test schedules where compiling dominates).
    """

    name: str = _REDUCED["name"]
    steps: int = _REDUCED["steps"]
    seeds: int = _REDUCED["seeds"]
    lr: float | None = _REDUCED["lr"]
    spatial_steps: int = _REDUCED["spatial_steps"]
    channel_steps: int = _REDUCED["channel_steps"]
    path_steps: int = _REDUCED["path_steps"]
    nmf_factors: int = _REDUCED["nmf_factors"]
    views: int = _REDUCED["views"]
    stages: tuple[str, ...] | None = None
    spectrum_draws: int = _REDUCED["spectrum_draws"]
    fidelity: str = _REDUCED["fidelity"]
    chunk_size: int = _REDUCED["chunk_size"]
    engine: str = _REDUCED["engine"]

    @classmethod
    def from_preset(cls, preset: configs.Preset) -> "Schedule":
        return cls(**_fields(preset))

    def __post_init__(self):
        for name in ("steps", "seeds", "path_steps", "nmf_factors", "views", "spectrum_draws", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise AttrvisError(f"schedule {name} must be >= 1, got {getattr(self, name)}")
        if self.stages is not None:
            object.__setattr__(self, "stages", tuple(self.stages))

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else paper.scaled_lr(self.steps)

    def attribution_config(self) -> AttributionConfig:
        return AttributionConfig(fidelity=attribution_fidelity(self.fidelity), spatial_steps=self.spatial_steps,
                                 channel_steps=self.channel_steps, steps=self.path_steps)

    def render_config(self, perturbation: str) -> RenderConfig:
        return RenderConfig(perturbation=perturbation, fidelity=self.fidelity, steps=self.steps, lr=self.learning_rate)

    @property
    def run_options(self) -> RunOptions:
        return RunOptions(seeds=self.seeds, snapshot_steps=(), chunk_size=min(self.chunk_size, self.steps),
                          engine=self.engine)

    def replace(self, **changes) -> "Schedule":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["learning_rate"] = self.learning_rate
        return d


SCHEDULES = {name: Schedule.from_preset(configs.get(name)) for name in configs.FIGURE_SCHEDULES}


def get_schedule(schedule: str | Schedule = "reduced", **overrides) -> Schedule:
    """A schedule by name (reduced, paper) or as given, with fields overridden (None = keep)."""
    if isinstance(schedule, Schedule):
        base = schedule
    elif schedule in SCHEDULES:
        base = SCHEDULES[schedule]
    else:
        raise AttrvisError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    return base.replace(**overrides)
