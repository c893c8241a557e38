"""Aumann–Shapley attributions on real ImageNet weights (EfficientNet-Lite0) and a real photo.

The baseline runs 200 + 200 Adam steps instead of the spec's 2049 + 4097 to keep the suite fast;
that is already enough to bring the target logit below 10% of its value at these layers.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax import Attribution, attribute
from attrvis_jax.attribution.postprocess import upsample

# 14×14×112, and 7×7×192 (`--extended`)
LAYERS = ("blocks.10", pytest.param("blocks.12", marks=pytest.mark.extended))
STEPS = dict(spatial_steps=200, channel_steps=200)
# The tabby's eyes and nose in the 224×224 center crop of skimage's chelsea (resize 256, crop 224),
# as (top, bottom, left, right). The whole crop is cat face, so the box asks for more: attribution
# mass on the face's features rather than on fur and whiskers.
FACE_BOX = (45, 205, 20, 215)


@pytest.fixture(scope="module")
def chelsea_x(lite0, chelsea):
    return lite0.load_image(chelsea)


@pytest.fixture(scope="module", params=LAYERS)
def result(request, lite0, chelsea_x) -> Attribution:
    return attribute(lite0, chelsea_x, request.param, **STEPS)


@pytest.mark.slow
def test_target_is_the_top_class(result):
    assert result.target == 282 and result.target_name == "tiger cat"
    assert result.method == "aumann_shapley" and result.layer in LAYERS


@pytest.mark.slow
def test_completeness_within_one_percent(result):
    gap = abs(result.logit - result.logit_baseline)
    assert result.completeness_error < 0.01 * gap
    assert float(result.values.sum()) == pytest.approx(result.logit - result.logit_baseline, rel=0.01)


@pytest.mark.slow
def test_baseline_targets_the_output(result):
    assert result.logit > 5
    assert abs(result.logit_baseline) < 0.1 * abs(result.logit)


@pytest.mark.slow
def test_attribution_mass_lies_on_the_face(result):
    mass = np.asarray(upsample(jnp.asarray(result.positive.sum(axis=-1)), 224))
    top, bottom, left, right = FACE_BOX
    inside = np.zeros(mass.shape, bool)
    inside[top:bottom, left:right] = True
    share = mass[inside].sum() / mass.sum()
    assert share > 0.5  # more of ΣR⁺ inside the box than outside
    # … and denser inside than outside (the box is 62% of the image).
    assert mass[inside].mean() > 1.15 * mass[~inside].mean()


@pytest.mark.slow
def test_postprocessing_outputs_are_sane(result):
    h, w, k = result.values.shape
    kept = np.abs(result.positive).max(axis=(0, 1)) > 0
    assert 0 < kept.sum() < k
    assert 0 < result.beta < 0.5
    assert result.lambda0 > 0
    assert result.heatmap.shape == (h, w) and result.heatmap_image().shape == (224, 224)
    assert np.all(np.isfinite(result.values))


@pytest.mark.slow
def test_real_result_round_trips(result, tmp_path):
    back = Attribution.load(result.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(back.values, result.values)
    np.testing.assert_array_equal(back.baseline, result.baseline)
    assert back.beta == result.beta and back.config == result.config


@pytest.mark.slow
def test_grad_cam_on_real_weights_is_on_the_face(lite0, chelsea_x):
    r = attribute(lite0, chelsea_x, "blocks.10", method="grad_cam")
    mass = np.asarray(upsample(jnp.asarray(np.maximum(r.values.sum(-1), 0)), 224))
    top, bottom, left, right = FACE_BOX
    assert mass[top:bottom, left:right].sum() > 0.5 * mass.sum()


@pytest.mark.slow
def test_deeplift_rescale_sums_to_delta_on_real_weights(lite0, chelsea_x):
    # EfficientNet-Lite's upper network is linear operations and ReLU6 only: exact summation.
    r = attribute(lite0, chelsea_x, "blocks.10", method="deeplift_rescale")
    assert r.completeness_error < 1e-4 * abs(r.logit - r.logit_baseline)
