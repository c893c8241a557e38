"""The paper's schedule (§4; the library's defaults): 2048 render updates × 25 seeds at lr 0.02, and
the default AttributionConfig (2049 spatial and 4097 channel mask updates, a 200-point path).

`attrvis run` starts from it, and so does `attrvis figures --schedule paper`, with 4 NMF groups, 8
views of the image and 32 noise draws per spectrum.
"""

from __future__ import annotations

import math

from attrvis_jax.config import AttributionConfig, RenderConfig
from attrvis_jax.configs.preset import Preset


def get_config() -> Preset:
    return Preset(name="paper", render=RenderConfig(), attribution=AttributionConfig(),
                  nmf_factors=4, views=8, spectrum_draws=32)


def scaled_lr(steps: int) -> float:
    """The paper's lr for a run of `steps` updates: lr·√(2048/steps), 0.02 at 2048 and 0.08 at 128
    (the reduced schedule's rule; `configs.reduced` says why)."""
    render = get_config().render
    return render.lr * math.sqrt(render.steps / steps)
