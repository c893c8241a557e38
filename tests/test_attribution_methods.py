"""Attribution methods, the output-targeted baseline, `attribute` and the result file, on tiny random
networks (fast): shapes, dtypes, determinism, closed forms, chunking and progress."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax import Attribution, AttributionConfig, AttrvisError, attribute
from attrvis_jax.attribution import baseline as bl
from attrvis_jax.attribution import methods as me
from attrvis_jax.errors import UnknownNameError
from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Model, ModelSpec, StagedNet

SIZE, CLASSES = 16, 5
FAST = AttributionConfig(spatial_steps=60, channel_steps=60, steps=24, chunk=8, smoothgrad_samples=10)


class TinyNet(StagedNet):
    """Two convs and a dense head; `linear_head` makes the logits linear in conv1's activations."""

    linear_head: bool = False

    def setup(self):
        self.conv1 = nn.Conv(4, (3, 3), strides=(2, 2))
        self.conv2 = nn.Conv(6, (3, 3))
        # Logits of O(1–10) like a trained network's (the baseline's objective balances against them).
        scale = nn.initializers.lecun_normal() if self.linear_head else nn.initializers.normal(20.0)
        self.fc = nn.Dense(CLASSES, kernel_init=scale)

    def normalize(self, x):
        return 2.0 * x - 1.0

    def stages(self):
        if self.linear_head:
            return [("conv1", lambda x: nn.relu(self.conv1(x))),
                    ("logits", lambda x: self.fc(x.reshape(x.shape[0], -1)))]
        return [
            ("conv1", lambda x: nn.relu(self.conv1(x))),
            ("conv2", lambda x: nn.relu(self.conv2(x))),
            ("logits", lambda x: self.fc(jnp.mean(x, axis=(1, 2)))),
        ]


def tiny_model(linear_head: bool = False, seed: int = 0) -> Model:
    net = TinyNet(linear_head=linear_head)
    layers = ("conv1",) if linear_head else ("conv1", "conv2")
    variables = net.init(jax.random.key(seed), jnp.zeros((1, SIZE, SIZE, 3)))
    spec = ModelSpec(name="tiny-linear" if linear_head else "tiny", layers=layers, num_classes=CLASSES,
                     preprocess=Preprocess(size=SIZE, mode="stretch", resize=None))
    return Model(spec=spec, net=net, variables=variables, labels=("ant", "bee", "cat", "dog", "eel"))


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def linear():
    return tiny_model(linear_head=True)


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (2, SIZE, SIZE, 3))


def acts_of(model, x, layer):
    return model.apply_features(model.variables, jnp.asarray(x), layer)


# ---- the path ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["right", "left", "midpoint", "trapezoid", "gauss_legendre"])
def test_path_rules_integrate_polynomials(rule):
    alphas, weights = me.path_rule(50, rule)
    assert alphas.dtype == np.float32 and abs(weights.sum() - 1) < 1e-6
    assert np.all((alphas >= 0) & (alphas <= 1))
    exact = {"right": 2e-2, "left": 2e-2, "midpoint": 1e-4, "trapezoid": 1e-4, "gauss_legendre": 1e-6}[rule]
    assert abs(np.sum(weights * alphas**2) - 1 / 3) < exact


def test_right_rule_is_the_codes_linspace():
    alphas, weights = me.path_rule(200, "right")
    np.testing.assert_allclose(alphas, np.linspace(1 / 200, 1, 200), rtol=1e-6)
    assert np.all(weights == np.float32(1 / 200))


def test_chunk_layout_keeps_every_point_once():
    alphas, weights = me.path_rule(200, "right")
    chunked_a, chunked_w = me._chunked(alphas, weights, 32)
    assert chunked_a.shape == (7, 29)  # ceil(200/32) = 7 chunks of 29: 3 padded points, not 24
    np.testing.assert_array_equal(chunked_a.ravel()[:200], alphas)
    assert chunked_w.ravel()[200:].sum() == 0


# ---- closed forms ------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["right", "trapezoid", "gauss_legendre"])
def test_ig_of_a_linear_head_is_difference_times_weight(linear, images, rule):
    acts = acts_of(linear, images, "conv1")
    baseline = 0.3 * acts * jax.random.uniform(jax.random.key(2), acts.shape)
    targets = jnp.array([1, 3])
    out = me.path_integral(linear.net, "conv1", linear.variables, acts, baseline, targets,
                           AttributionConfig(steps=7, rule=rule, chunk=3))
    kernel = linear.variables["params"]["fc"]["kernel"]  # (H·W·K, classes)
    for i, c in enumerate([1, 3]):
        expected = (acts[i] - baseline[i]) * kernel[:, c].reshape(acts.shape[1:])
        np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert float(out.completeness_error.max()) < 1e-4


def test_gradient_methods_against_jax_grad(tiny, images):
    acts = acts_of(tiny, images, "conv1")
    targets = jnp.array([0, 2])
    grads = jax.grad(lambda a: bl.target_logits(tiny.net, "conv1", tiny.variables, a, targets).sum())(acts)
    args = (tiny.net, "conv1", tiny.variables, acts, targets)
    np.testing.assert_allclose(me.saliency(*args).values, jnp.abs(grads), rtol=1e-6)
    np.testing.assert_allclose(me.grad_x_activation(*args).values, acts * grads, rtol=1e-6)
    cam = me.grad_cam(*args).values
    np.testing.assert_allclose(cam, acts * grads.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-7)
    # Plain SmoothGrad (paper fidelity) with no noise is the gradient.
    sg = me.smoothgrad(*args, config=FAST.replace(fidelity="paper", smoothgrad_noise=0.0))
    np.testing.assert_allclose(sg.values, grads, rtol=1e-5, atol=1e-7)


def test_completeness_on_a_nonlinear_network(tiny, images):
    acts = acts_of(tiny, images, "conv1")
    out = me.integrated_gradients(tiny.net, "conv1", tiny.variables, acts, jnp.array([1, 4]),
                                  config=AttributionConfig(steps=64, rule="gauss_legendre", chunk=16))
    gap = np.abs(np.asarray(out.logit - out.logit_baseline))
    assert np.all(np.asarray(out.completeness_error) < 1e-3 * gap + 1e-5)
    assert np.all(np.asarray(out.baseline) == 0)


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_deeplift_rescale_sums_to_delta_exactly(tiny, images, layer):
    # Convs, ReLU, mean and dense only: the Rescale multipliers telescope to z_c(a) − z_c(0).
    acts = acts_of(tiny, images, layer)
    out = me.deeplift_rescale(tiny.net, layer, tiny.variables, acts, jnp.array([4, 2]))
    gap = np.abs(np.asarray(out.logit - out.logit_baseline))
    assert np.all(gap > 1) and np.all(np.asarray(out.completeness_error) < 1e-5 * gap)


def test_deeplift_of_a_linear_head_is_activation_times_weight(linear, images):
    acts = acts_of(linear, images, "conv1")
    out = me.deeplift_rescale(linear.net, "conv1", linear.variables, acts, jnp.array([1, 3]))
    kernel = linear.variables["params"]["fc"]["kernel"]
    for i, c in enumerate([1, 3]):
        np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(acts[i] * kernel[:, c].reshape(acts.shape[1:])),
                                   rtol=1e-6, atol=1e-7)


def test_rescale_rule_uses_the_secant_slope():
    # relu6(x) from reference 0: the multiplier is relu6(x)/x, not the gradient (0 above 6).
    x = jnp.array([-2.0, 3.0, 9.0, 1e-7])
    grad = jax.grad(lambda v: jnp.sum(jnp.clip(v, 0.0, 6.0) * jnp.array([1.0, 2.0, 3.0, 4.0])))
    fn = lambda v, r: jnp.sum(me._rescale_eval(*_closed(v), [v], [r])[0][0])  # noqa: E731
    multipliers = jax.grad(fn)(x, jnp.zeros(4))
    np.testing.assert_allclose(np.asarray(multipliers), [0.0, 2.0, 3.0 * 6 / 9, 4.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad(x)), [0.0, 2.0, 0.0, 4.0])


def _closed(v):
    closed = jax.make_jaxpr(lambda v: jnp.sum(jnp.clip(v, 0.0, 6.0) * jnp.array([1.0, 2.0, 3.0, 4.0])))(v)
    return closed.jaxpr, closed.consts


# ---- every method: shape, dtype, determinism, batching -----------------------------------------
@pytest.mark.parametrize("method", sorted(me.METHODS))
def test_method_shape_dtype_determinism_and_batching(tiny, images, method):
    acts = acts_of(tiny, images, "conv2")
    targets = jnp.array([2, 3])
    run = lambda a, t: me.METHODS[method](tiny.net, "conv2", tiny.variables, a, t, config=FAST,  # noqa: E731
                                          key=jax.random.key(7))
    first, again = run(acts, targets), run(acts, targets)
    assert first.values.shape == acts.shape and first.values.dtype == jnp.float32
    assert first.logit.shape == (2,)
    assert np.all(np.isfinite(np.asarray(first.values)))
    np.testing.assert_array_equal(np.asarray(first.values), np.asarray(again.values))
    if method not in ("smoothgrad", "aumann_shapley"):  # their random draws are per batch
        alone = run(acts[1:], targets[1:])
        np.testing.assert_allclose(np.asarray(alone.values[0]), np.asarray(first.values[1]), rtol=2e-4, atol=1e-6)
    if method in ("aumann_shapley", "integrated_gradients", "deeplift_rescale"):
        assert first.baseline.shape == acts.shape and first.completeness_error.shape == (2,)


def test_chunk_size_does_not_change_the_integral(tiny, images):
    acts = acts_of(tiny, images, "conv1")
    outs = [me.integrated_gradients(tiny.net, "conv1", tiny.variables, acts, jnp.array([0, 1]),
                                    config=AttributionConfig(steps=30, chunk=chunk)).values
            for chunk in (1, 7, 30)]
    for other in outs[1:]:
        np.testing.assert_allclose(np.asarray(other), np.asarray(outs[0]), rtol=1e-4, atol=1e-6)


def test_scale_by_logit_never_flips_the_sign(tiny, images):
    acts = acts_of(tiny, images, "conv1")
    args = (tiny.net, "conv1", tiny.variables, acts, jnp.array([0, 1]))
    plain = me.integrated_gradients(*args, config=FAST)
    scaled = me.integrated_gradients(*args, config=FAST.replace(scale_by_logit=True))
    factor = np.abs(np.asarray(plain.logit))[:, None, None, None]
    np.testing.assert_allclose(np.asarray(scaled.values), np.asarray(plain.values) * factor, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(scaled.completeness_error), np.asarray(plain.completeness_error))


# ---- the output-targeted baseline --------------------------------------------------------------
def test_baseline_drives_the_logit_down_and_stays_between_zero_and_a(tiny, images):
    acts = acts_of(tiny, images, "conv1")
    targets = jnp.array([4, 2])  # a positive and a negative logit: both are driven towards 0
    # The tiny net is positively homogeneous with spread-out contributions, so z_c(m⊙a) ≈ m̄·z_c(a):
    # the mask only trades proximity against the logit when proximity < |z_c(a)| (here 2 < 7).
    config = FAST.replace(spatial_steps=150, channel_steps=150, spatial_lr=0.05, channel_lr=0.05, proximity=2.0)
    base = bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts, targets, jax.random.key(0), config)
    assert base.values.shape == acts.shape
    assert base.spatial_mask.shape == (2, 8, 8, 1) and base.channel_mask.shape == (2, 1, 1, 4)
    for mask in (base.spatial_mask, base.channel_mask):
        assert np.all((np.asarray(mask) > 0) & (np.asarray(mask) < 1))
    assert np.all(np.abs(np.asarray(base.values)) <= np.abs(np.asarray(acts)) + 1e-7)
    z_a = np.abs(np.asarray(bl.target_logits(tiny.net, "conv1", tiny.variables, acts, targets)))
    z_b = np.abs(np.asarray(bl.target_logits(tiny.net, "conv1", tiny.variables, base.values, targets)))
    assert np.all(z_b < 0.2 * z_a)
    # Each stage ends below J(m ≡ 1) = |z_c(a)| (per image: one-image batches).
    for mask in (base.spatial_mask, base.channel_mask):
        for i in range(2):
            j = bl.mask_objective(tiny.net, "conv1", tiny.variables, acts[i:i + 1], targets[i:i + 1],
                                  mask[i:i + 1], config.proximity)
            assert float(j) < 0.5 * z_a[i]
    other = bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts, targets, jax.random.key(1), config)
    assert not np.array_equal(np.asarray(other.spatial_mask), np.asarray(base.spatial_mask))


def test_chunked_progress_is_bit_identical_to_one_run(tiny, images):
    acts = acts_of(tiny, images, "conv2")
    targets = jnp.array([1, 2])
    args = (tiny.net, "conv2", tiny.variables, acts, targets)
    calls = []
    plain = me.aumann_shapley(*args, config=FAST, key=jax.random.key(3))
    chunked = me.aumann_shapley(*args, config=FAST, key=jax.random.key(3), progress_every=7,
                                progress=lambda done, total: calls.append((done, total)))
    for a, b in zip(plain, chunked):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    total = FAST.spatial_steps + FAST.channel_steps + 24
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) == 9 + 3  # 60 steps of both stages at once by 7, then 3 path chunks of 8
    sg_calls = []
    sg = me.smoothgrad(*args, config=FAST, key=jax.random.key(3))
    sg_chunked = me.smoothgrad(*args, config=FAST, key=jax.random.key(3),
                               progress=lambda done, total: sg_calls.append(done))
    np.testing.assert_array_equal(np.asarray(sg.values), np.asarray(sg_chunked.values))
    assert sg_calls == [5, 10]


# ---- attribute() and the result ----------------------------------------------------------------
def test_attribute_single_and_batch(tiny, images):
    one = attribute(tiny, np.asarray(images[0]), "conv2", target="cat", config=FAST)
    assert isinstance(one, Attribution)
    assert one.values.shape == (8, 8, 6) and one.values.dtype == np.float32
    assert one.target == 2 and one.target_name == "cat" and one.method == "aumann_shapley"
    assert one.positive.shape == (8, 8, 6) and np.all(one.positive >= 0)
    assert one.heatmap.shape == (8, 8) and one.heatmap_image().shape == (SIZE, SIZE)
    assert 0 <= one.beta <= 0.5 and one.lambda0 >= 0
    assert one.completeness_error is not None and one.baseline.shape == (8, 8, 6)
    batch = attribute(tiny, np.asarray(images), "conv2", target=None, method="saliency", config=FAST)
    assert isinstance(batch, list) and len(batch) == 2
    # target=None is each image's top class. Tie-aware: attribute computes the logits in its own
    # compiled function, so a float32 near-tie between two classes may fall either way on another CPU.
    logits = np.asarray(tiny.logits(images))
    for row, r in zip(logits, batch):
        assert row[r.target] >= row.max() - 1e-5 * (1 + abs(row.max())), (row, r.target)
    assert batch[0].baseline is None and batch[0].completeness_error is None


def test_attribute_accepts_config_overrides_and_aliases(tiny, images):
    r = attribute(tiny, np.asarray(images[0]), "conv1", target=1, method="IG", steps=8, chunk=4)
    assert r.method == "integrated_gradients" and r.config.steps == 8
    with pytest.raises(AttrvisError, match="unknown AttributionConfig field"):
        attribute(tiny, np.asarray(images[0]), "conv1", stepz=8)


def test_attribute_bad_inputs(tiny, images):
    x = np.asarray(images[0])
    with pytest.raises(UnknownNameError, match="conv2"):
        attribute(tiny, x, "conv3", config=FAST)
    with pytest.raises(UnknownNameError):
        attribute(tiny, x, "conv1", target="zebra", config=FAST)
    with pytest.raises(UnknownNameError, match="saliency"):
        attribute(tiny, x, "conv1", method="salency", config=FAST)
    with pytest.raises(AttrvisError, match="hidden layer"):
        attribute(tiny, x, "logits", config=FAST)
    bad = x.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(AttrvisError, match="NaN"):
        attribute(tiny, bad, "conv1", config=FAST)
    with pytest.raises(AttrvisError, match="NaN"):
        attribute(tiny, bad[None], "conv1", config=FAST)
    with pytest.raises(AttrvisError):
        AttributionConfig(rule="simpson")


def test_zero_attribution_is_a_clear_error(tiny, images):
    # A head that ignores the layer: every attribution is exactly zero.
    variables = jax.tree_util.tree_map(lambda p: p, tiny.variables)
    variables["params"]["fc"]["kernel"] = jnp.zeros_like(variables["params"]["fc"]["kernel"])
    with pytest.raises(AttrvisError, match="all zero"):
        attribute(tiny, np.asarray(images[0]), "conv2", target=0, method="grad_x_activation",
                  variables=variables, config=FAST)


def test_result_save_load_round_trip(tiny, images, tmp_path):
    for method in ("aumann_shapley", "grad_cam"):
        r = attribute(tiny, np.asarray(images[1]), "conv2", target=4, method=method, config=FAST)
        path = r.save(tmp_path / f"{method}")
        assert path.name == f"{method}.npz"
        back = Attribution.load(path)
        for name in ("values", "positive", "heatmap", "baseline"):
            a, b = getattr(r, name), getattr(back, name)
            assert (a is None and b is None) or np.array_equal(a, b)
        for name in ("beta", "lambda0", "logit", "logit_baseline", "completeness_error", "target",
                     "target_name", "method", "layer", "model", "config", "input_size"):
            assert getattr(back, name) == getattr(r, name), name
    assert sorted(os.listdir(tmp_path)) == ["aumann_shapley.npz", "grad_cam.npz"]  # no temp files left
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AttrvisError, match="not an attribution file"):
        Attribution.load(tmp_path / "junk.npz")
    with pytest.raises(AttrvisError, match="not found"):
        Attribution.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("steps", [(9, 14), (14, 9), (0, 5), (6, 6)])
def test_both_stages_in_one_batch_follow_each_stage_alone(tiny, images, steps):
    """The baseline runs both masks as one batch for the steps they share, then the longer alone:
    each mask is what `optimize_mask` gives for that stage alone, from the same init (to rounding:
    another XLA program), and the progress count covers both stages in order."""
    acts = acts_of(tiny, images, "conv1")
    targets = jnp.array([4, 2])
    config = FAST.replace(spatial_steps=steps[0], channel_steps=steps[1], spatial_lr=0.05, channel_lr=0.02,
                          proximity=2.0)
    key = jax.random.key(5)
    calls = []
    base = bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts, targets, key, config,
                                       progress=lambda done, total: calls.append((done, total)), progress_every=4)
    k_spatial, k_channel = jax.random.split(key)
    alone = {
        "spatial": bl.optimize_mask(tiny.net, "conv1", tiny.variables, acts, targets,
                                    jax.random.normal(k_spatial, (2, 8, 8, 1)), lr=0.05, steps=steps[0], proximity=2.0),
        "channel": bl.optimize_mask(tiny.net, "conv1", tiny.variables, acts, targets,
                                    jax.random.normal(k_channel, (2, 1, 1, 4)), lr=0.02, steps=steps[1], proximity=2.0),
    }
    for stage, mask in (("spatial", base.spatial_mask), ("channel", base.channel_mask)):
        np.testing.assert_allclose(np.asarray(mask), np.asarray(alone[stage]), rtol=1e-5, atol=1e-6, err_msg=stage)
    np.testing.assert_allclose(np.asarray(base.values),
                               np.asarray(jnp.minimum(alone["spatial"], alone["channel"]) * acts), rtol=1e-5, atol=1e-6)
    # A mask that moved: the stage is not simply left at its init.
    init = jax.nn.sigmoid(jax.random.normal(k_channel, (2, 1, 1, 4)))
    assert (steps[1] == 0) == np.allclose(np.asarray(base.channel_mask), np.asarray(init), atol=1e-4)
    total = sum(steps)
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_per_image_keys_make_the_baseline_independent_of_the_batch(tiny, images):
    """One key per image (what sweeps pass): an image's baseline is the same alone or in a batch,
    and differs from the shared-key draw."""
    acts = acts_of(tiny, images, "conv1")
    targets = jnp.array([4, 2])
    keys = jnp.stack([jax.random.key(10), jax.random.key(11)])
    both = bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts, targets, keys, FAST)
    second = bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts[1:], targets[1:], keys[1:], FAST)
    np.testing.assert_allclose(np.asarray(both.spatial_mask[1:]), np.asarray(second.spatial_mask), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(both.values[1:]), np.asarray(second.values), rtol=1e-5, atol=1e-6)
    shared = bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts, targets, keys[0], FAST)
    assert not np.allclose(np.asarray(shared.spatial_mask), np.asarray(both.spatial_mask))
    with pytest.raises(ValueError, match="3 keys for 2 images"):
        bl.output_targeted_baseline(tiny.net, "conv1", tiny.variables, acts, targets,
                                    jnp.stack([jax.random.key(i) for i in range(3)]), FAST)
