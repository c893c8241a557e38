"""End to end on real weights and a real photo: EfficientNet-Lite0, chelsea (a tabby / tiger cat),
attributions from `attribute`, then `visualize` (ALGORITHM §10's visualization correlation).

Shortened to stay fast on a 2-core CPU (about a minute): 2 seeds × 64 updates instead of 25 × 2048,
the schedules scaled to the run (λ and lr change every steps/10 updates, as the default's 204 of
2048) and the learning rate raised from 0.02 to 0.5; the attribution uses fewer baseline and path
steps. So the mask is only asked to get most of the way from 0.5 to β. With the full default schedule
(3 seeds, full attribution; measured for the render issue) every seed's mask area was within 10% of β
(0.148–0.151 for β = 0.138) and the PCC with R⁺ was 0.22–0.24, against −0.08 for the random init.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.config import RenderConfig
from attrvis_jax.render import seed_keys, visualize
from attrvis_jax.render.optimize import engine

try:
    from attrvis_jax.attribution import attribute
except ImportError:  # the package's re-export may not be there yet
    from attrvis_jax.attribution.api import attribute

LAYER = "blocks.10"  # end of stage 5: 14×14×112


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.slow
def test_visualization_follows_the_attribution_on_a_real_photo(lite0, chelsea):
    x = lite0.load_image(chelsea)
    attr = attribute(lite0, x, layer=LAYER, spatial_steps=128, channel_steps=128, steps=16)
    beta = attr.beta
    assert 0 < beta < 0.5 and attr.positive.shape == (14, 14, 112)

    config = RenderConfig(steps=64, seeds=2, lr=0.5, chunk_size=32, snapshot_steps=())
    key = jax.random.key(0)
    res = visualize(lite0, attr, config, key=key)  # duck-typed: positive, beta, lambda0, layer
    assert res.layer == LAYER and res.finite.all()
    assert res.composed.shape == (2, 224, 224, 3)

    # The mask shrinks from 0.5 most of the way to β (within 10% of β after the full default schedule).
    assert np.all(np.abs(res.mask_area - beta) < 0.5 * (0.5 - beta)), (res.mask_area, beta)

    # Fed back through the network, every seed's picture correlates with R⁺ at the layer,
    # far better than the random-init picture of the same seed.
    features = lambda imgs: np.asarray(lite0.features(jnp.asarray(imgs, jnp.float32), LAYER))
    pcc = [pearson(f, attr.positive) for f in features(res.composed)]
    eng = engine(lite0.net, LAYER, config.replace(seeds=1), 224)
    carry, _ = eng.init(seed_keys(key, res.seed_ids), 1)
    x0, m0 = (np.asarray(a)[:, 0] for a in eng.outputs(carry["params"]))
    init = 0.55 * (1 - m0[..., None]) + x0 * m0[..., None]
    pcc_init = [pearson(f, attr.positive) for f in features(init)]
    print(f"beta {beta:.3f} mask area {res.mask_area} PCC {pcc} random-init PCC {pcc_init}")
    assert min(pcc) > 0.04  # 0.08 when measured; 0.22–0.24 after the full schedule
    assert min(pcc) > max(pcc_init) + 0.08  # the random init is at −0.08
