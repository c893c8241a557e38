"""The render kernel's objectives and rows (render/objectives.py, optimize.visualize_rows) on a tiny
random network: feature objectives give plain feature visualizations from the same kernel, rows of a
stacked objective equal the seeds `visualize` runs, and misuse is refused with one clear line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.config import RenderConfig, RunOptions
from attrvis_jax.devices import device_mesh
from attrvis_jax.errors import AttrvisError
from attrvis_jax.render import objectives, seed_keys, visualize, visualize_rows
from tiny import SIZE, tiny_model

LAYER = "conv2"
CONFIG = RenderConfig(steps=16, lr=0.1)
RUN = RunOptions(seeds=2, chunk_size=8, snapshot_steps=())
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(signed=True)


def _attribution(seed: int):
    rng = np.random.default_rng(seed)
    r = np.zeros((8, 8, 16), np.float32)
    r[2:6, 2:6, rng.permutation(16)[:6]] = rng.random((4, 4, 6), dtype=np.float32)
    return {"positive": r, "beta": 0.2 + 0.1 * seed, "activations": rng.random((8, 8, 16), dtype=np.float32),
            "layer": LAYER}


def test_channel_objective_is_a_one_hot_reading(tiny):
    obj = objectives.channel(tiny, LAYER, [3, 7])
    assert obj.weights.shape == (2, 8, 8, 16) and obj.grouped and not obj.has_mask_terms
    assert np.all(obj.weights[0, ..., 3] == 1) and obj.weights[0].sum() == 64 and obj.weights[1, ..., 7].all()
    single = objectives.channel(tiny, LAYER, 5)
    assert single.weights.shape == (1, 8, 8, 16) and not single.grouped
    n = objectives.neuron(tiny, LAYER, 4)
    assert n.weights[0, 4, 4, 4] == 64 and np.count_nonzero(n.weights) == 1  # mean over 64 positions: itself


def test_feature_visualization_raises_its_channel(tiny):
    """Rendering channel k from the same kernel drives channel k up, well above where it starts and
    above the channels nobody asked for."""
    obj = objectives.channel(tiny, LAYER, 9)
    res = visualize(tiny, obj, CONFIG.replace(perturbation="none", steps=48), options=RUN, key=KEY)
    start = visualize(tiny, obj, CONFIG.replace(perturbation="none", steps=1, lr=1e-9), options=RUN, key=KEY)
    acts = lambda imgs: np.asarray(tiny.features(jnp.asarray(imgs), LAYER)).mean(axis=(1, 2))
    after, before = acts(res.images), acts(start.images)
    assert np.all(after[:, 9] > before[:, 9] + 0.05)
    assert np.all(after[:, 9] - before[:, 9] > np.delete(after - before, 9, axis=1).max(axis=1))
    assert res.images.shape == (2, SIZE, SIZE, 3) and np.all(res.masks == 1)  # no mask: M is all ones
    assert np.isnan(res.beta) and res.lambda0 == 0


def test_objectives_add_and_scale_like_lucids(tiny):
    a, b = objectives.channel(tiny, LAYER, 1), objectives.channel(tiny, LAYER, 2)
    mix = a - 0.5 * b
    assert np.all(mix.weights[..., 1] == 1) and np.all(mix.weights[..., 2] == -0.5)
    assert np.array_equal((-a).weights, -a.weights)
    with pytest.raises(AttrvisError, match="only feature objectives"):
        objectives.attribution_objective(_attribution(0)) + a
    assert (a + objectives.channel(tiny, "conv1", 1)).layers == (LAYER, "conv1")  # two layers: a Sum


def test_feature_objective_with_a_mask_is_refused(tiny):
    with pytest.raises(AttrvisError, match="no mask terms"):
        visualize(tiny, objectives.channel(tiny, LAYER, 0), CONFIG, options=RUN, key=KEY)
    with pytest.raises(AttrvisError, match="out of range"):
        objectives.channel(tiny, LAYER, 16)
    with pytest.raises(AttrvisError, match="out of range"):
        objectives.neuron(tiny, LAYER, 0, y=8)
    with pytest.raises(AttrvisError, match="all zero"):
        objectives.feature_maps(np.zeros((8, 8, 16)), LAYER)


def test_stacked_rows_are_the_seeds_visualize_runs(tiny):
    """One objective per row (a sweep's batch) in one kernel call gives, row by row, the seed that
    `visualize` gives for that objective and key (to rounding: a batch of 3 rows with their own
    weights is another XLA program than one row against shared weights)."""
    attrs = [_attribution(0), _attribution(1), _attribution(2)]
    config = CONFIG.replace(perturbation="pyramid")
    base_keys = [jax.random.fold_in(KEY, 10 + i) for i in range(3)]
    seed = [1, 0, 1]
    keys = jnp.stack([seed_keys(k, [s])[0] for k, s in zip(base_keys, seed)])
    stacked = objectives.stack([objectives.attribution_objective(a, config) for a in attrs])
    assert stacked.rows and stacked.weights.shape == (3, 1, 8, 8, 16)
    out = visualize_rows(tiny, stacked, config, keys, options=RUN)
    for i, a in enumerate(attrs):
        alone = visualize(tiny, a, config, options=RUN, key=base_keys[i], seed_ids=[seed[i]])
        # the loss before the first update sees the same init and the same transform draw: equal to
        # rounding; after the updates, Adam's ±lr first step may flip where a gradient is ~0 on
        # another CPU, so the images are compared on average
        assert float(out.loss_history[i, 0]) == pytest.approx(float(alone.loss_history[0, 0]), rel=1e-5, abs=1e-6)
        assert np.abs(np.asarray(out.composed[i, 0]) - alone.composed[0]).mean() < 2e-3
    other = visualize(tiny, attrs[0], config, options=RUN, key=base_keys[0], seed_ids=[1 - seed[0]])
    assert np.abs(np.asarray(out.composed[0, 0]) - other.composed[0]).mean() > 1e-2  # the key decides


def test_a_mesh_of_one_device_changes_nothing(tiny):
    config = CONFIG.replace(perturbation="pyramid")
    mesh = device_mesh(jax.devices()[:1])
    plain = visualize(tiny, _attribution(0), config, options=RUN, key=KEY)
    stacked = objectives.stack([objectives.attribution_objective(_attribution(0), config)] * 2)
    out = visualize_rows(tiny, stacked, config, seed_keys(KEY, [0, 1]), mesh=mesh, options=RUN)
    assert out.composed.sharding.mesh.shape == mesh.shape  # the rows were placed on the mesh
    meshed = visualize(tiny, _attribution(0), config, options=RUN, key=KEY, mesh=mesh)
    np.testing.assert_allclose(plain.loss_history[:, 0], meshed.loss_history[:, 0], rtol=1e-5, atol=1e-6)
    assert np.abs(plain.composed - meshed.composed).mean() < 2e-3


def test_an_objective_renders_only_under_the_config_it_was_made_for(tiny):
    made = objectives.attribution_objective(_attribution(0), CONFIG.replace(perturbation="none"))
    with pytest.raises(AttrvisError, match="another render config"):
        visualize(tiny, made, CONFIG, options=RUN, key=KEY)  # pyramid: the area terms were not made
    with pytest.raises(AttrvisError, match="apply to an attribution"):
        visualize(tiny, objectives.channel(tiny, LAYER, 1), CONFIG.replace(perturbation="none"), beta=0.3)
    assert np.array_equal((np.float32(2) * objectives.channel(tiny, LAYER, 1)).weights[..., 1], np.full((1, 8, 8), 2))


def test_rows_and_keys_must_agree(tiny):
    stacked = objectives.stack([objectives.attribution_objective(_attribution(i), CONFIG) for i in range(2)])
    with pytest.raises(AttrvisError, match="one key per row"):
        visualize_rows(tiny, stacked, CONFIG, seed_keys(KEY, [0, 1, 2]), options=RUN)
    with pytest.raises(AttrvisError, match="stack needs"):
        objectives.stack([objectives.channel(tiny, LAYER, 0), objectives.channel(tiny, "conv1", 0)])
