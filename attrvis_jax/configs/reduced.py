"""The figures' short schedule for a CPU (`attrvis figures`' default): 128 render updates × 2 seeds at
lr 0.08, a baseline of 256/512 mask updates and a 64-point path, 3 NMF groups, 4 views of the image
and 8 noise draws per spectrum.

It keeps every column of every figure, and all the numbers in the JSONs, at 1/16 of the updates and
2 of the 25 seeds; its pictures are previews (masks not converged).

The lr follows the steps (`scale_lr`), also when a run changes them: `paper.scaled_lr(steps)`, the
paper's 0.02·√(2048/steps), 0.08 at 128; why, and what the run costs: benchmarks/README.md,
"Presets".
"""

from __future__ import annotations

from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions
from attrvis_jax.configs import paper
from attrvis_jax.configs.preset import Preset

STEPS = 128


def get_config() -> Preset:
    return Preset(name="reduced", render=RenderConfig(steps=STEPS, lr=paper.scaled_lr(STEPS)),
                  run=RunOptions(seeds=2),
                  attribution=AttributionConfig(spatial_steps=256, channel_steps=512, steps=64),
                  scale_lr=True, nmf_factors=3, views=4, spectrum_draws=8)
