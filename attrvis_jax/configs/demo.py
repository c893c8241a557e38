"""`attrvis demo`: EfficientNet-Lite0 on the bundled photo chelsea, 320 render updates × 2 seeds at
lr 0.05, a baseline of 512/1024 mask updates and a 100-point path.

Short enough for a 2-core CPU in about 3 minutes (benchmarks/README.md, "Presets"), long
enough that the picture shows the attributed parts (the paper's schedule is 2048 steps and 25 seeds;
`attrvis run` uses it). The default render starts the mask at β, so a short run needs no more than
the code's schedule compressed, at lr 0.05. EfficientNet-Lite2 judges the pictures (a second
network's verdict, `attrvis_jax.judge`) where its weights are installed (they are by default).
"""

from __future__ import annotations

from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions
from attrvis_jax.configs.preset import Preset


def get_config() -> Preset:
    return Preset(name="demo", model="efficientnet_lite0", image="chelsea", judge="efficientnet_lite2",
                  render=RenderConfig(steps=320, lr=0.05), run=RunOptions(seeds=2),
                  attribution=AttributionConfig(spatial_steps=512, channel_steps=1024, steps=100))
