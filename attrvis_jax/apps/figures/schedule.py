"""How long the figures run: `Schedule`, the named `SCHEDULES` and `get_schedule`."""

from __future__ import annotations

import dataclasses
import math

from attrvis_jax.config import AttributionConfig, RenderConfig, attribution_fidelity
from attrvis_jax.errors import AttrvisError


PAPER_LR = 0.02
PAPER_STEPS = 2048


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
