"""The optimizer loop on a tiny random network: results, determinism, chunking, vmapped seeds,
engines, groups, the no-mask ablation, non-finite stops and input handling (docs/method.md,
'Parameterization' to 'The loss')."""

from __future__ import annotations

import dataclasses
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.config import RenderConfig, RunOptions
from attrvis_jax.errors import AttrvisError
from attrvis_jax.render import RenderResult, seed_keys, visualize
from attrvis_jax.render.objectives import attribution_objective
from attrvis_jax.memory import activation_bytes
from attrvis_jax.render import optimize
from attrvis_jax.render.optimize import auto_seed_batch, clear_caches, engine, join_groups, split_groups
from tiny import SIZE, TinyNet, tiny_model

LAYER, BETA = "conv2", 0.25
CONFIG = RenderConfig(steps=24, lr=0.1)
RUN = RunOptions(seeds=3, chunk_size=8, snapshot_steps=(8,))
KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def r_plus():
    r = np.zeros((8, 8, 16), np.float32)
    r[2:6, 2:6] = 1.0
    return r


# The photo's activations at conv2 (post-ReLU, so sign(a − b) = 1 and the weights are R⁺ / L(photo)).
ACTS = np.random.default_rng(0).random((8, 8, 16), dtype=np.float32)


def attr(r, beta=BETA, **more):
    """The duck-typed attribution visualize takes: R⁺, β and the photo's activations."""
    return {"positive": r, "beta": beta, "activations": ACTS, **more}


@pytest.fixture(scope="module")
def base(tiny, r_plus):
    calls = []
    result = visualize(tiny, attr(r_plus), CONFIG, options=RUN, key=KEY, layer=LAYER, progress=lambda d, n: calls.append((d, n)))
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
    # the default (relative) balance: λ0 is the area weight, the score is relative to the photo's
    assert float(res.beta) == BETA and float(res.lambda0) == CONFIG.area_weight
    assert float(res.reference) == pytest.approx(float(np.mean(np.sum(ACTS * r_plus, axis=-1))), rel=1e-6)
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
    again = visualize(tiny, attr(r_plus), CONFIG, options=RUN, key=KEY, layer=LAYER)
    assert again.timings["compile_s"] == 0.0  # the compiled chunk is reused
    np.testing.assert_array_equal(again.images, res.images)
    np.testing.assert_array_equal(again.masks, res.masks)
    np.testing.assert_array_equal(again.loss_history, res.loss_history)
    other = visualize(tiny, attr(r_plus), CONFIG, options=RUN, key=jax.random.key(1), layer=LAYER)
    assert not np.allclose(other.images, res.images)
    assert not np.allclose(res.images[0], res.images[1])  # seeds differ from each other


def test_where_the_loop_is_cut_does_not_change_the_result(base, tiny, r_plus):
    res, _ = base
    # Snapshots cut the chunks at other places (3, 11, 19, 24 instead of 8, 16, 24) with the same
    # compiled chunk; the updates after each cut are skipped inside the scan, not recomputed.
    cut = visualize(tiny, attr(r_plus), CONFIG, options=RUN.replace(snapshot_steps=(3, 8, 11, 19)), key=KEY, layer=LAYER)
    assert cut.timings["compile_s"] == 0.0
    np.testing.assert_array_equal(cut.images, res.images)
    np.testing.assert_array_equal(cut.loss_history, res.loss_history)
    np.testing.assert_array_equal(cut.snapshots[8]["masks"], res.snapshots[8]["masks"])
    assert sorted(cut.snapshots) == [3, 8, 11, 19]


def test_vmapped_seeds_equal_the_same_seeds_run_one_at_a_time(base, tiny, r_plus):
    res, _ = base
    for seed in (2, 0):
        alone = visualize(tiny, attr(r_plus), CONFIG, options=RUN, key=KEY, layer=LAYER, seed_ids=[seed])
        assert alone.seed_ids == (seed,)
        # The same arithmetic per seed; only the batched convolution may round differently.
        np.testing.assert_allclose(alone.images[0], res.images[seed], atol=1e-5)
        np.testing.assert_allclose(alone.masks[0], res.masks[seed], atol=1e-5)
        np.testing.assert_allclose(alone.loss_history[0], res.loss_history[seed], rtol=1e-5)


def test_seeds_run_in_groups_give_each_seed_the_bits_of_its_group_size(base, tiny, r_plus):
    # RunOptions.seed_batch: the step's seeds run in groups (lax.map over groups, vmapped inside).
    # A seed's picture is then a function of its key and its group's size only: the same bits
    # whichever seeds share its group, at whatever position, and however many groups there are.
    # Between group sizes only the batched network's rounding differs. (The loss is reported, it
    # does not feed back into the picture: its last bit may differ with the program around it.)
    run = lambda seeds, ids=None, **kw: visualize(tiny, attr(r_plus), CONFIG, options=RUN.replace(seeds=seeds, **kw),
                                                  key=KEY, layer=LAYER, seed_ids=ids)
    res, _ = base
    pairs = run(5, seed_batch=2)  # (0, 1), (2, 3), then seed 4 in a group of one
    np.testing.assert_allclose(pairs.images[:3], res.images, atol=1e-5)
    shifted = run(4, [1, 2, 3, 4], seed_batch=2)  # (1, 2), (3, 4): other partners and positions
    np.testing.assert_array_equal(shifted.images[:3], pairs.images[1:4])
    np.testing.assert_array_equal(shifted.masks[:3], pairs.masks[1:4])
    alone = run(1, [4])  # a group of one is the seed run alone
    np.testing.assert_array_equal(alone.images[0], pairs.images[4])
    np.testing.assert_array_equal(alone.masks[0], pairs.masks[4])
    np.testing.assert_allclose(alone.loss_history[0], pairs.loss_history[4], rtol=1e-6)
    np.testing.assert_allclose(shifted.images[3], pairs.images[4], atol=1e-5)
    assert not np.allclose(pairs.images[0], pairs.images[1])  # each seed its own stream


def test_the_rows_of_groups_come_back_in_order_and_each_group_spans_every_device():
    rows = np.arange(2 * 7)  # 2 devices' shares of 7 rows: 0-6 and 7-13
    full, rest = split_groups({"x": rows}, devices=2, g=3)
    np.testing.assert_array_equal(full["x"], [[0, 1, 2, 7, 8, 9], [3, 4, 5, 10, 11, 12]])
    np.testing.assert_array_equal(rest["x"], [6, 13])
    np.testing.assert_array_equal(join_groups(full, rest, devices=2)["x"], rows)
    full, rest = split_groups(rows.reshape(14, 1), devices=1, g=7)
    assert rest is None and full.shape == (2, 7, 1)
    np.testing.assert_array_equal(join_groups(full, None, devices=1), rows.reshape(14, 1))


def test_the_seed_batch_a_render_chooses(tiny, monkeypatch):
    assert auto_seed_batch(tiny, LAYER, SIZE, 25) is None  # a tiny network's seeds all fit at once
    per_seed = activation_bytes(tiny, LAYER, SIZE)
    monkeypatch.setattr(optimize, "CPU_GROUP_BYTES", 5 * per_seed)  # room for 5 seeds' activations
    clear_caches()
    assert [auto_seed_batch(tiny, LAYER, SIZE, rows) for rows in (25, 24, 7, 5, 1)] == [5, 4, 1, None, None]
    assert auto_seed_batch(tiny, LAYER, SIZE, 25, platform="gpu") is None  # accelerators: all at once
    with pytest.raises(AttrvisError, match="seed_batch"):
        RunOptions(seed_batch=0)


def test_python_loop_engine_matches_the_scan(base, tiny, r_plus):
    res, _ = base
    loop = visualize(tiny, attr(r_plus), CONFIG, options=RUN.replace(engine="loop"), key=KEY, layer=LAYER)
    np.testing.assert_allclose(loop.images, res.images, atol=1e-5)
    np.testing.assert_allclose(loop.loss_history, res.loss_history, rtol=1e-5)


def test_no_mask_ablation(tiny, r_plus):
    res = visualize(tiny, attr(r_plus), CONFIG.replace(perturbation="none", steps=8), options=RUN.replace(seeds=2), key=KEY, layer=LAYER)
    assert np.all(res.masks == 1.0) and np.all(res.mask_area == 1.0)
    np.testing.assert_array_equal(res.composed, res.images)
    assert np.all(res.loss_history[:, -1] < res.loss_history[:, 0])  # only −L: it falls


def test_groups_from_a_list_of_attributions(tiny, r_plus):
    @dataclasses.dataclass
    class Attr:  # the duck-typed interface: positive (or r_plus), beta, lambda0, activations, layer
        positive: np.ndarray
        beta: float
        lambda0: float
        activations: np.ndarray = dataclasses.field(default_factory=lambda: ACTS)
        layer: str = LAYER

    other = np.zeros_like(r_plus)
    other[:, :, 8:] = 0.5
    groups = [Attr(r_plus, 0.2, 100.0), Attr(other, 0.3, 50.0)]
    res = visualize(tiny, groups, CONFIG.replace(steps=8), options=RUN.replace(seeds=2), key=KEY)
    assert res.grouped and res.layer == LAYER
    assert res.images.shape == (2, 2, SIZE, SIZE, 3) and res.mask_area.shape == (2, 2)
    np.testing.assert_allclose(res.beta, [0.2, 0.3])
    np.testing.assert_allclose(res.lambda0, [CONFIG.area_weight] * 2)
    np.testing.assert_allclose(res.reference, [np.mean(np.sum(ACTS * g.positive, -1)) for g in groups], rtol=1e-6)
    code = visualize(tiny, groups, CONFIG.replace(steps=2, fidelity="code"), options=RUN.replace(seeds=1), key=KEY)
    np.testing.assert_allclose(code.lambda0, [100.0, 50.0])  # the code's λ0 is the attribution's
    assert not np.allclose(res.images[:, 0], res.images[:, 1])  # aligned init, different attributions


def test_gaussian_background_is_trained_when_asked(tiny, r_plus):
    data = {"weights": jnp.asarray(r_plus[None]), "beta": jnp.full((1,), BETA), "lambda0": jnp.full((1,), 10.0)}
    fixed = engine(tiny.net, LAYER, RenderConfig(perturbation="gaussian"), SIZE)
    assert fixed._init_seed(KEY, 1)[1] is not None  # by default a fixed draw, not a parameter
    eng = engine(tiny.net, LAYER, RenderConfig(perturbation="gaussian", gaussian_trainable=True), SIZE)
    carry, seed_data = eng.init(seed_keys(KEY, [0, 1]), 1)
    assert "background" in carry["params"] and "background" not in seed_data
    before = np.asarray(carry["params"]["background"])
    carry, _ = eng.step(tiny.variables, carry, seed_data, data, jnp.int32(0))
    assert not np.array_equal(before, carry["params"]["background"])


def test_a_non_finite_seed_stops_and_keeps_its_last_finite_state(base, tiny, r_plus):
    eng = engine(tiny.net, LAYER, CONFIG, SIZE, chunk_size=8)
    carry, seed_data = eng.init(seed_keys(KEY, [0, 1, 2]), 1)
    spectrum = carry["params"]["spectrum"].at[1, 0, 0, 0, 0, 0].set(jnp.nan)  # seed 1 gives a NaN loss
    carry = {**carry, "params": {"spectrum": spectrum}}
    before = np.asarray(spectrum)
    data = {"weights": jnp.asarray(r_plus[None]), "beta": jnp.full((1,), BETA), "lambda0": jnp.full((1,), 10.0)}
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
        res = visualize(tiny, attr(r_plus), CONFIG, options=RUN, key=KEY, layer=LAYER, variables=broken)
    assert any("non-finite" in str(w.message) for w in caught)
    assert not res.finite.any() and np.all(res.stopped_at == 0) and np.all(np.isfinite(res.images))


def test_attribution_inputs_and_errors(tiny, r_plus):
    code = CONFIG.replace(fidelity="code")
    inputs = attribution_objective({"positive": r_plus, "beta": 0.3, "lambda0": -1.0, "layer": "conv2"}, code)
    assert inputs.weights.shape == (1, 8, 8, 16) and not inputs.grouped and inputs.layer == "conv2"
    assert inputs.lambda0[0] == pytest.approx(20 * r_plus.sum())  # λ0 ≤ 0 falls back to 20·ΣR⁺
    np.testing.assert_array_equal(inputs.weights[0], r_plus)  # the code: W = R⁺
    inputs = attribution_objective((np.stack([r_plus, r_plus]), [0.1, 0.2], [1.0, 2.0]), code)
    assert inputs.grouped and inputs.beta.tolist() == pytest.approx([0.1, 0.2]) and inputs.lambda0.tolist() == [1.0, 2.0]
    # The code's λ0 is 20·ΣR_f, which R⁺ alone does not determine: no silent 20·ΣR⁺ fallback.
    with pytest.raises(AttrvisError, match="lambda0"):
        attribution_objective((r_plus, BETA), code)
    # The relative balance needs the photo's score; a given reference is used as it is.
    with pytest.raises(AttrvisError, match="photo's own score"):
        attribution_objective((r_plus, BETA), CONFIG)
    given = attribution_objective((r_plus, BETA), CONFIG, reference=4.0)
    np.testing.assert_allclose(given.weights[0], r_plus / 4.0)
    assert attribution_objective((r_plus, BETA), CONFIG.replace(perturbation="none")).lambda0[0] == 0.0  # no area term
    cases = [
        (attr(r_plus[0]), "shape"),
        (attr(-r_plus), "negative"),
        (attr(0 * r_plus), "all zero"),
        (attr(r_plus, 0.0), "beta"),
        (attr(r_plus * np.nan), "NaN"),
        (attr(r_plus, activations=-ACTS), "not positive"),  # direction='positive' semantics forced on a ≤ 0
    ]
    for attribution, message in cases:
        with pytest.raises(AttrvisError, match=message):
            visualize(tiny, attribution, CONFIG.replace(direction="positive") if message == "not positive" else CONFIG,
                      layer=LAYER)
    with pytest.raises(AttrvisError, match="which layer"):
        visualize(tiny, attr(r_plus), CONFIG)
    with pytest.raises(AttrvisError, match="conv1 is"):
        visualize(tiny, attr(r_plus), CONFIG, layer="conv1")
    with pytest.raises(AttrvisError, match="unknown layer"):
        visualize(tiny, attr(r_plus), CONFIG, layer="conv9")


def test_signed_layers_are_excited_the_way_each_neuron_contributed(r_plus):
    """W = sign(a − b)·R⁺: a neuron that helped by lying below its baseline is pushed further down,
    one above it further up; on a post-ReLU layer (a ≥ b ≥ 0) that is R⁺ itself. The photo's own
    score under W is then positive (Σ |a − b|-weighted), and it is what the relative balance divides by."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=r_plus.shape).astype(np.float32)
    b = 0.3 * a  # the output-targeted baseline is m·a with 0 < m < 1: a − b has the sign of a
    inputs = attribution_objective({"positive": r_plus, "beta": BETA, "activations": a, "baseline": b}, CONFIG)
    ref = float(np.mean(np.sum(np.abs(a) * r_plus, axis=-1)))
    assert float(inputs.reference[0]) == pytest.approx(ref, rel=1e-5) and ref > 0
    np.testing.assert_allclose(inputs.weights[0], np.sign(a) * r_plus / ref, rtol=1e-6)
    positive = attribution_objective({"positive": r_plus, "beta": BETA, "activations": np.abs(a), "baseline": np.abs(b)}, CONFIG)
    np.testing.assert_allclose(positive.weights[0] * positive.reference[0], r_plus, rtol=1e-6)
    # direction="positive" keeps R⁺ (the code), whatever the signs
    kept = attribution_objective({"positive": r_plus, "beta": BETA, "activations": a, "baseline": b},
                         CONFIG.replace(direction="positive", balance="code"), lambda0=1.0)
    np.testing.assert_array_equal(kept.weights[0], r_plus)


class ScaledNet(TinyNet):
    """TinyNet whose conv2 activations are multiplied by `gain` (the next layer sees them divided
    back, so the network's function is the same): a network of another activation scale."""

    gain: float = 1.0

    def stages(self):
        return [("conv1", lambda x: nn.relu(self.c1(x))), ("conv2", lambda x: nn.relu(self.c2(x)) * self.gain),
                ("logits", lambda x: self.fc(x.mean((1, 2)) / self.gain))]


def test_the_relative_balance_is_scale_free(tiny, r_plus):
    """Multiplying the layer's activations (and with them the photo's) by a constant, or R by a
    constant, leaves the whole optimization trajectory unchanged on the default balance; on the
    code's λ0 = 20·ΣR_f the same change moves it (the balance was tuned to one network's scale).
    The gain is a power of two, so float32 scaling is exact and the comparison does not depend on
    rounding."""
    gain = 1024.0
    scaled = dataclasses.replace(tiny, net=ScaledNet(gain=gain))
    config, run = CONFIG.replace(steps=16), RUN.replace(seeds=2)
    one = visualize(tiny, attr(r_plus), config, options=run, key=KEY, layer=LAYER)
    big = visualize(scaled, attr(r_plus, activations=ACTS * gain), config, options=run, key=KEY, layer=LAYER)
    heavy = visualize(tiny, attr(r_plus * 1000.0), config, options=run, key=KEY, layer=LAYER)
    for other in (big, heavy):
        np.testing.assert_allclose(other.loss_history, one.loss_history, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(other.images, one.images, atol=1e-5)
        np.testing.assert_allclose(other.masks, one.masks, atol=1e-5)
    code = config.replace(fidelity="code")
    lam = 20.0 * float(r_plus.sum())
    c1 = visualize(tiny, attr(r_plus, lambda0=lam), code, options=run, key=KEY, layer=LAYER)
    c2 = visualize(scaled, attr(r_plus, lambda0=lam), code, options=run, key=KEY, layer=LAYER)
    assert np.abs(c2.masks - c1.masks).max() > 1e-3


def test_the_mask_starts_at_its_target_area(tiny, r_plus):
    """mask_start "beta" (default): M = σ(≈0 + logit β) starts at β; the code's starts at 0.5."""
    for start, want in (("beta", BETA), ("half", 0.5)):
        eng = engine(tiny.net, LAYER, CONFIG.replace(mask_start=start), SIZE)
        carry, _ = eng.init(seed_keys(KEY, [0, 1]), 1)
        _, m = eng.outputs(carry["params"], {"beta": jnp.full((1,), BETA)})
        np.testing.assert_allclose(np.asarray(m).mean(axis=(-2, -1)), want, atol=0.03)


def test_seed_keys_accept_raw_and_typed_keys():
    typed = seed_keys(jax.random.key(3), [0, 5])
    raw = seed_keys(jax.random.PRNGKey(3), [0, 5])
    np.testing.assert_array_equal(jax.random.key_data(typed), jax.random.key_data(raw))
    np.testing.assert_array_equal(jax.random.key_data(seed_keys(jax.random.key(3), [5])[0]),
                                  jax.random.key_data(typed[1]))


def test_bfloat16_compute_runs_the_network_in_bfloat16_and_keeps_the_optimizer_float32(base, tiny, r_plus):
    """compute_dtype="bfloat16": the network's convolutions take bfloat16 operands, the activations
    come back float32 and close to the float32 ones; the render's parameters, Adam state and loss
    stay float32; the optimization still does its job; float32 stays the default."""
    assert RenderConfig().compute_dtype == "float32"
    config = CONFIG.replace(compute_dtype="bfloat16")
    eng16, eng32 = engine(tiny.net, LAYER, config, SIZE), engine(tiny.net, LAYER, CONFIG, SIZE)
    x = jnp.asarray(np.random.default_rng(1).random((2, SIZE, SIZE, 3)), jnp.float32)
    jaxpr = str(jax.make_jaxpr(eng16._features)(tiny.variables, x))
    convs = [line for line in jaxpr.splitlines() if "conv_general_dilated[" in line]
    assert len(convs) == 2 and all("bf16" in line for line in convs)
    assert "bf16" not in str(jax.make_jaxpr(eng32._features)(tiny.variables, x))
    a16, a32 = eng16._features(tiny.variables, x), eng32._features(tiny.variables, x)
    assert a16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(a16 - a32) / jnp.linalg.norm(a32))
    assert 1e-4 < rel < 3e-2  # bfloat16 rounding: ~2^-8 per operand, not float32's
    res = visualize(tiny, attr(r_plus), config, options=RUN, key=KEY, layer=LAYER)
    assert res.images.dtype == np.float32 and np.all(np.isfinite(res.loss_history)) and res.finite.all()
    carry, _ = eng16._init(seed_keys(KEY, [0, 1]), 1)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(carry["params"])} == {jnp.dtype(jnp.float32)}
    floats = {leaf.dtype for leaf in jax.tree_util.tree_leaves(carry["opt"]) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}  # moments (the step count is an int)
    reference, _ = base
    np.testing.assert_allclose(res.loss_history[:, 0], reference.loss_history[:, 0], rtol=3e-2)
    assert np.all(res.mask_area < 0.45)  # from 0.5 toward β = 0.25, as in float32
    with pytest.raises(Exception, match="compute_dtype must be one of"):
        RenderConfig(compute_dtype="float16")
