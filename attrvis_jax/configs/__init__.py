"""Named presets: the schedules the commands and drivers start from, one module each with a
`get_config()`, as in Flax's examples/*/configs.

    paper      the paper's: 2048 updates × 25 seeds at lr 0.02, the default attribution (`attrvis run`)
    demo       `attrvis demo`: EfficientNet-Lite0 on chelsea, 320 updates × 2 seeds at lr 0.05
    reduced    the figures' CPU schedule: 128 updates × 2 seeds, the lr scaled with the steps
    ablation   `attrvis ablation`: the six perturbations, 8 seeds × 256 updates at lr 0.05

    from attrvis_jax import configs
    configs.get("demo").render.steps        # 320
    configs.names()                         # ('paper', 'demo', 'reduced', 'ablation')

`get_config()` returns the library's own config types: a `Preset` (stage configs and the sizes that
go with them) for a run on one image, the `SweepConfig` for the ablation. A library package: it
imports `attrvis_jax.config`, never the drivers.
"""

from __future__ import annotations

from attrvis_jax.configs import ablation, demo, paper, reduced
from attrvis_jax.configs.preset import Preset, baseline_steps
from attrvis_jax.errors import UnknownNameError

PRESETS = {"paper": paper, "demo": demo, "reduced": reduced, "ablation": ablation}
FIGURE_SCHEDULES = ("reduced", "paper")  # the presets the figures run on (`attrvis figures --schedule`)

__all__ = ["FIGURE_SCHEDULES", "PRESETS", "Preset", "baseline_steps", "get", "names"]


def names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get(name: str):
    """The preset `name`'s config (a new object each call)."""
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name].get_config()
