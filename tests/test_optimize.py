"""The optimizer loop on a tiny random network: results, determinism, chunking, vmapped seeds,
engines, groups, the no-mask ablation, non-finite stops and input handling (ALGORITHM §5–8)."""

from __future__ import annotations

import dataclasses
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.config import RenderConfig
from attrvis_jax.errors import AttrvisError
from attrvis_jax.models.base import Model, ModelSpec, Preprocess, StagedNet
from attrvis_jax.render import RenderResult, attribution_arrays, seed_keys, visualize
from attrvis_jax.render.optimize import engine

SIZE, LAYER, BETA = 32, "conv2", 0.25
CONFIG = RenderConfig(steps=24, seeds=3, chunk_size=8, snapshot_steps=(8,), lr=0.1)
KEY = jax.random.key(0)


class TinyNet(StagedNet):
    def setup(self):
        self.c1 = nn.Conv(8, (3, 3), (2, 2))
        self.c2 = nn.Conv(16, (3, 3), (2, 2))
        self.fc = nn.Dense(10)

    def normalize(self, x):
        return x * 2 - 1

    def stages(self):
        return [("conv1", lambda x: nn.relu(self.c1(x))), ("conv2", lambda x: nn.relu(self.c2(x))),
                ("logits", lambda x: self.fc(x.mean((1, 2))))]


@pytest.fixture(scope="module")
def tiny():
    net = TinyNet()
    variables = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    spec = ModelSpec("tiny", ("conv1", "conv2"), 10, Preprocess(size=SIZE))
    return Model(spec, net, variables, tuple(str(i) for i in range(10)))


@pytest.fixture(scope="module")
def r_plus():
    r = np.zeros((8, 8, 16), np.float32)
    r[2:6, 2:6] = 1.0
    return r


@pytest.fixture(scope="module")
def base(tiny, r_plus):
    calls = []
    result = visualize(tiny, (r_plus, BETA), CONFIG, key=KEY, layer=LAYER, progress=lambda d, n: calls.append((d, n)))
    return result, calls


def test_result_fields_and_progress(base, r_plus):
    res, calls = base
    assert isinstance(res, RenderResult) and res.layer == LAYER and res.seed_ids == (0, 1, 2) and not res.grouped
    assert res.images.shape == (3, SIZE, SIZE, 3) and res.masks.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(res.composed, 0.55 * (1 - res.masks[..., None]) + res.images * res.masks[..., None],
                               atol=1e-6)
    for a in (res.images, res.masks, res.composed):
        assert np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 1
    assert res.loss.shape == (3,) and np.all(np.isfinite(res.loss))
    assert res.loss_history.shape == (3, 24) and np.all(np.isfinite(res.loss_history))
    np.testing.assert_allclose(res.mask_area, res.masks.mean(axis=(1, 2)), rtol=1e-6)
    assert float(res.beta) == BETA and float(res.lambda0) == pytest.approx(20 * r_plus.sum())  # default λ0
    assert res.finite.all() and np.all(res.stopped_at == -1)
    assert sorted(res.snapshots) == [8] and res.snapshots[8]["images"].shape == res.images.shape
    assert not np.allclose(res.snapshots[8]["masks"], res.masks)
    assert calls == [(8, 24), (16, 24), (24, 24)]
    assert res.timings["compile_s"] > 0 and "pyramid" in res.summary()


def test_optimization_moves_the_mask_toward_beta_and_raises_the_score(base, tiny, r_plus):
    res, _ = base
    assert np.all(res.mask_area < 0.45)  # from 0.5 at init toward β = 0.25
    feats = jax.jit(lambda x: tiny.apply_features(tiny.variables, x, LAYER))
    score = np.sum(np.asarray(feats(res.composed)) * r_plus, axis=(1, 2, 3))
    gray = np.sum(np.asarray(feats(jnp.full((1, SIZE, SIZE, 3), 0.525))) * r_plus)
    assert np.all(score > 2 * gray)


def test_same_key_gives_identical_bits_and_other_keys_differ(base, tiny, r_plus):
    res, _ = base
    again = visualize(tiny, (r_plus, BETA), CONFIG, key=KEY, layer=LAYER)
    assert again.timings["compile_s"] == 0.0  # the compiled chunk is reused
    np.testing.assert_array_equal(again.images, res.images)
    np.testing.assert_array_equal(again.masks, res.masks)
    np.testing.assert_array_equal(again.loss_history, res.loss_history)
    other = visualize(tiny, (r_plus, BETA), CONFIG, key=jax.random.key(1), layer=LAYER)
    assert not np.allclose(other.images, res.images)
    assert not np.allclose(res.images[0], res.images[1])  # seeds differ from each other


def test_where_the_loop_is_cut_does_not_change_the_result(base, tiny, r_plus):
    res, _ = base
    # Snapshots cut the chunks at other places (3, 11, 19, 24 instead of 8, 16, 24) with the same
    # compiled chunk; the updates after each cut are skipped inside the scan, not recomputed.
    cut = visualize(tiny, (r_plus, BETA), CONFIG.replace(snapshot_steps=(3, 8, 11, 19)), key=KEY, layer=LAYER)
    assert cut.timings["compile_s"] == 0.0
    np.testing.assert_array_equal(cut.images, res.images)
    np.testing.assert_array_equal(cut.loss_history, res.loss_history)
    np.testing.assert_array_equal(cut.snapshots[8]["masks"], res.snapshots[8]["masks"])
    assert sorted(cut.snapshots) == [3, 8, 11, 19]


def test_vmapped_seeds_equal_the_same_seeds_run_one_at_a_time(base, tiny, r_plus):
    res, _ = base
    for seed in (2, 0):
        alone = visualize(tiny, (r_plus, BETA), CONFIG, key=KEY, layer=LAYER, seed_ids=[seed])
        assert alone.seed_ids == (seed,)
        # The same arithmetic per seed; only the batched convolution may round differently.
        np.testing.assert_allclose(alone.images[0], res.images[seed], atol=1e-5)
        np.testing.assert_allclose(alone.masks[0], res.masks[seed], atol=1e-5)
        np.testing.assert_allclose(alone.loss_history[0], res.loss_history[seed], rtol=1e-5)


def test_python_loop_engine_matches_the_scan(base, tiny, r_plus):
    res, _ = base
    loop = visualize(tiny, (r_plus, BETA), CONFIG.replace(engine="loop"), key=KEY, layer=LAYER)
    np.testing.assert_allclose(loop.images, res.images, atol=1e-5)
    np.testing.assert_allclose(loop.loss_history, res.loss_history, rtol=1e-5)


def test_no_mask_ablation(tiny, r_plus):
    res = visualize(tiny, (r_plus, BETA), CONFIG.replace(perturbation="none", seeds=2, steps=8), key=KEY, layer=LAYER)
    assert np.all(res.masks == 1.0) and np.all(res.mask_area == 1.0)
    np.testing.assert_array_equal(res.composed, res.images)
    assert np.all(res.loss_history[:, -1] < res.loss_history[:, 0])  # only −L: it falls


def test_groups_from_a_list_of_attributions(tiny, r_plus):
    @dataclasses.dataclass
    class Attr:  # the duck-typed interface: positive (or r_plus), beta, lambda0, layer
        positive: np.ndarray
        beta: float
        lambda0: float
        layer: str = LAYER

    other = np.zeros_like(r_plus)
    other[:, :, 8:] = 0.5
    groups = [Attr(r_plus, 0.2, 100.0), Attr(other, 0.3, 50.0)]
    res = visualize(tiny, groups, CONFIG.replace(seeds=2, steps=8), key=KEY)
    assert res.grouped and res.layer == LAYER
    assert res.images.shape == (2, 2, SIZE, SIZE, 3) and res.mask_area.shape == (2, 2)
    np.testing.assert_allclose(res.beta, [0.2, 0.3])
    np.testing.assert_allclose(res.lambda0, [100.0, 50.0])
    assert not np.allclose(res.images[:, 0], res.images[:, 1])  # aligned init, different attributions


def test_gaussian_background_is_trained_when_asked(tiny, r_plus):
    data = {"r_plus": jnp.asarray(r_plus[None]), "beta": jnp.full((1,), BETA), "lambda0": jnp.full((1,), 10.0)}
    fixed = engine(tiny.net, LAYER, RenderConfig(perturbation="gaussian"), SIZE)
    assert fixed._init_seed(KEY, 1)[1] is not None  # by default a fixed draw, not a parameter
    eng = engine(tiny.net, LAYER, RenderConfig(perturbation="gaussian", gaussian_trainable=True), SIZE)
    carry, seed_data = eng.init(seed_keys(KEY, [0, 1]), 1)
    assert "background" in carry["params"] and "background" not in seed_data
    before = np.asarray(carry["params"]["background"])
    carry, _ = eng.step(tiny.variables, carry, seed_data, data, jnp.int32(0))
    assert not np.array_equal(before, carry["params"]["background"])


def test_a_non_finite_seed_stops_and_keeps_its_last_finite_state(base, tiny, r_plus):
    eng = engine(tiny.net, LAYER, dataclasses.replace(CONFIG, seeds=1, snapshot_steps=()), SIZE)
    carry, seed_data = eng.init(seed_keys(KEY, [0, 1, 2]), 1)
    spectrum = carry["params"]["spectrum"].at[1, 0, 0, 0, 0, 0].set(jnp.nan)  # seed 1 gives a NaN loss
    carry = {**carry, "params": {"spectrum": spectrum}}
    before = np.asarray(spectrum)
    data = {"r_plus": jnp.asarray(r_plus[None]), "beta": jnp.full((1,), BETA), "lambda0": jnp.full((1,), 10.0)}
    exe, _ = eng.compiled("chunk", tiny.variables, carry, seed_data, data, jnp.int32(0), jnp.int32(8))
    carry, losses = exe(tiny.variables, carry, seed_data, data, jnp.int32(0), jnp.int32(8))
    assert np.asarray(carry["alive"]).tolist() == [True, False, True]
    assert np.asarray(carry["stopped_at"]).tolist() == [-1, 0, -1]
    np.testing.assert_array_equal(carry["params"]["spectrum"][1], before[1])  # no update applied
    assert not np.array_equal(carry["params"]["spectrum"][0], before[0])
    assert np.all(np.isnan(losses[:, 1])) and np.all(np.isfinite(losses[:, [0, 2]]))
    # Through visualize: a broken network stops every seed, warns, and returns finite images.
    broken = jax.tree_util.tree_map(lambda a: a * jnp.nan, tiny.variables)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = visualize(tiny, (r_plus, BETA), CONFIG, key=KEY, layer=LAYER, variables=broken)
    assert any("non-finite" in str(w.message) for w in caught)
    assert not res.finite.any() and np.all(res.stopped_at == 0) and np.all(np.isfinite(res.images))


def test_attribution_inputs_and_errors(tiny, r_plus):
    r, b, lam, grouped, layer = attribution_arrays({"r_plus": r_plus, "beta": 0.3, "lambda0": -1.0, "layer": "conv2"})
    assert r.shape == (1, 8, 8, 16) and not grouped and layer == "conv2"
    assert lam[0] == pytest.approx(20 * r_plus.sum())  # λ0 ≤ 0 falls back to 20·ΣR⁺
    r, b, lam, grouped, _ = attribution_arrays((np.stack([r_plus, r_plus]), [0.1, 0.2], [1.0, 2.0]))
    assert grouped and b.tolist() == pytest.approx([0.1, 0.2]) and lam.tolist() == [1.0, 2.0]
    cases = [
        ((r_plus[0], BETA), "shape"),
        ((-r_plus, BETA), "negative"),
        ((0 * r_plus, BETA), "all zero"),
        ((r_plus, 0.0), "beta"),
        ((r_plus * np.nan, BETA), "NaN"),
    ]
    for attribution, message in cases:
        with pytest.raises(AttrvisError, match=message):
            visualize(tiny, attribution, CONFIG, layer=LAYER)
    with pytest.raises(AttrvisError, match="which layer"):
        visualize(tiny, (r_plus, BETA), CONFIG)
    with pytest.raises(AttrvisError, match="conv1 is"):
        visualize(tiny, (r_plus, BETA), CONFIG, layer="conv1")
    with pytest.raises(AttrvisError, match="unknown layer"):
        visualize(tiny, (r_plus, BETA), CONFIG, layer="conv9")


def test_seed_keys_accept_raw_and_typed_keys():
    typed = seed_keys(jax.random.key(3), [0, 5])
    raw = seed_keys(jax.random.PRNGKey(3), [0, 5])
    np.testing.assert_array_equal(jax.random.key_data(typed), jax.random.key_data(raw))
    np.testing.assert_array_equal(jax.random.key_data(seed_keys(jax.random.key(3), [5])[0]),
                                  jax.random.key_data(typed[1]))
