"""`Preset`: what a preset of `attrvis_jax.configs` holds for a run on one image."""

from __future__ import annotations

import dataclasses

from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named schedule: the stage configs a run starts from, and the sizes that go with them.

    render: steps and lr of the renders (their perturbation and fidelity are the run's).
    run: how many seeds (and how the steps are chunked).
    attribution: the baseline's mask updates and the path's points.
    scale_lr: the render lr follows the number of updates, `paper.scaled_lr(steps)`, also when a run
        changes the steps; otherwise render.lr stays as it is.
    model, image: the preset's own model and photo, where it has them (the demo); else None.
    judge: the preset's judge (a second network that classifies the pictures, `attrvis_jax.judge`),
        used where its weights are installed; None: no judge.
    nmf_factors, views, spectrum_draws: the figures' sizes (`apps.figures.Schedule`), where the preset
        is one the figures run on; else None.
    """

    name: str
    render: RenderConfig
    attribution: AttributionConfig
    run: RunOptions = RunOptions()
    scale_lr: bool = False
    model: str | None = None
    image: str | None = None
    judge: str | None = None
    nmf_factors: int | None = None
    views: int | None = None
    spectrum_draws: int | None = None


def baseline_steps(steps: int) -> dict:
    """AttributionConfig fields for a baseline of `steps` spatial-mask updates: the channel mask gets
    twice as many (the ratio of the code's 2049 and 4097)."""
    return {"spatial_steps": steps, "channel_steps": 2 * steps}
