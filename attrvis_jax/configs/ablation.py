"""`attrvis ablation` (`apps.ablation`): the six perturbations on the bundled photo chelsea's top class
at EfficientNet-Lite0's default layer, 8 seeds × 256 render updates at lr 0.05, a baseline of
512/1024 mask updates and a 100-point path: a schedule that fits a CPU (the paper: 25 seeds × 2048
updates at lr 0.02, `configs.paper`).
"""

from __future__ import annotations

from attrvis_jax.config import PERTURBATIONS, AttributionConfig, RenderConfig, SweepConfig

# The paper's order of the ablation: the no-mask variant first, then config.PERTURBATIONS.
ORDER = ("none", *(p for p in PERTURBATIONS if p != "none"))


def get_config() -> SweepConfig:
    return SweepConfig(model="efficientnet_lite0", weights="default", images=("sample:chelsea",), targets=("top1",),
                       layers=("default",), perturbations=ORDER, seeds=8, key=0, batch=8,
                       attribution=AttributionConfig(spatial_steps=512, channel_steps=1024, steps=100),
                       render=RenderConfig(steps=256, lr=0.05))
