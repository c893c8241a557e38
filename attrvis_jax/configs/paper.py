"""The paper's schedule (§4; the library's defaults): 2048 render updates × 25 seeds at lr 0.02, and
the default AttributionConfig (2049 spatial and 4097 channel mask updates, a 200-point path).

`attrvis run` starts from it, and so does `attrvis figures --schedule paper`, with 4 NMF groups, 8
views of the image and 32 noise draws per spectrum.
"""

from __future__ import annotations

from attrvis_jax import config
from attrvis_jax.config import AttributionConfig, RenderConfig
from attrvis_jax.configs.preset import Preset


def get_config() -> Preset:
    return Preset(name="paper", render=RenderConfig(), attribution=AttributionConfig(),
                  nmf_factors=4, views=8, spectrum_draws=32)


scaled_lr = config.scaled_lr  # the paper's lr for a run of `steps` updates
