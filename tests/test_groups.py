"""Group (decomposed) attribution visualization (docs/method.md, 'Channel groups'): the factor-analysis grouping on
attributions with a planted channel structure, the 3-or-4 factor rule, the τ = 0.3 filter, splitting
a new attribution into groups, files, errors, and the grouped rendering on a tiny and a real network.

The expected values are computed here independently: cumsumMax in numpy and sklearn's
FactorAnalysis / explained_variance_score called directly.
"""

from __future__ import annotations

import json
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import FactorAnalysis
from sklearn.metrics import explained_variance_score

from attrvis_jax.attribution.postprocess import area_ratio, postprocess
from attrvis_jax.attribution.result import Attribution
from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions
from attrvis_jax.errors import AttrvisError
from attrvis_jax.groups import ChannelGroups, GroupVisualization, channel_groups, split_attribution, visualize_groups
from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Model, ModelSpec, StagedNet
from attrvis_jax.render import visualize

THREE_BLOCKS = [range(0, 3), range(3, 6), range(6, 9)]


# ---- planted data ----------------------------------------------------------------------------
def block_maps(rng, n_images, hw, blocks, amps, channels, noise=0.01):
    """Each block's channels follow one spatial factor per image (a sparse, long-tailed map with
    maximum `amp`) plus small independent noise; the other channels are zero."""
    out = np.zeros((n_images, hw, hw, channels), np.float32)
    for i in range(n_images):
        for block, amp in zip(blocks, amps):
            factor = rng.random((hw, hw)) ** 3
            factor /= factor.max()
            for c in block:
                out[i, ..., c] = amp * factor + noise * rng.random((hw, hw))
    return out


def three_blocks_and_weak_fillers(seed=0, coherent=True, n_images=6, hw=8, fillers=35):
    """3 planted blocks (channels 0–8, maxima 1, .8, .6) and 35 weak filler channels (maximum 0.5,
    a spike). The fillers carry most of Σ max|R|, so τ = 0.3 keeps exactly the 9 block channels
    (cumsum 7.2 < 0.3·24.7 ≤ 7.2 + 0.5). Coherent fillers share one spatial map per image: unfiltered,
    they form a factor of their own and take a block's place."""
    rng = np.random.default_rng(seed)
    data = block_maps(rng, n_images, hw, THREE_BLOCKS, (1.0, 0.8, 0.6), 9 + fillers)
    for i in range(n_images):
        shared = rng.random((hw, hw)) ** 2
        for c in range(9, 9 + fillers):
            data[i, ..., c] = 0.15 * (shared if coherent else rng.random((hw, hw)))
            data[i, rng.integers(hw), rng.integers(hw), c] = 0.5
    return data


def four_blocks_and_noise(seed=0, noise_channels=33):
    """4 planted blocks of 4 channels among many independent noise channels (used with τ = 1, which
    keeps all but the weakest channel): 3 factors explain ≈ 13/50 of the columns' variance, 4 ≈ 17/50."""
    rng = np.random.default_rng(seed)
    blocks = [range(4 * b, 4 * b + 4) for b in range(4)]
    k = 16 + noise_channels + 1
    data = block_maps(rng, 6, 8, blocks, (1.0, 0.85, 0.7, 0.55), k)
    data[..., 16:k - 1] = 0.05 * rng.random((6, 8, 8, noise_channels))
    data[..., 0, 0, k - 1] = 1e-3  # the weakest channel, the one τ = 1 drops
    return data, blocks


def as_sets(groups) -> set:
    return {frozenset(int(c) for c in g) for g in groups}


# ---- the reference computation, written independently -----------------------------------------
def cumsum_max(r: np.ndarray, tau: float) -> np.ndarray:
    """docs/method.md, 'The channel filter', in numpy: keep the channels strictly before the
    first cumsum ≥ τ·total."""
    score = np.abs(r).max(axis=(0, 1)).astype(np.float64)
    order = np.argsort(-score, kind="stable")
    cut = np.searchsorted(np.cumsum(score[order]), tau * score.sum(), side="left")
    out = np.zeros_like(r)
    out[..., order[:cut]] = r[..., order[:cut]]
    return out


def reference_matrix(data, tau=0.3) -> np.ndarray:
    a = np.stack([np.maximum(cumsum_max(r, tau), 0) for r in data])
    return a.reshape(-1, a.shape[-1]).astype(np.float64)


def reference_fit(a, n):
    fa = FactorAnalysis(n_components=n, random_state=0).fit(a)
    return fa, explained_variance_score(a, fa.transform(a) @ fa.components_)


# ---- the grouping ---------------------------------------------------------------------------
def test_recovers_planted_blocks_and_matches_a_direct_sklearn_fit():
    data = three_blocks_and_weak_fillers()
    groups = channel_groups(list(data), layer="mixed4d")
    assert as_sets(groups.groups) == as_sets(THREE_BLOCKS)
    assert all(np.all(np.diff(g) > 0) and g.dtype.kind == "i" for g in groups.groups)
    assert groups.channels == data.shape[-1] and groups.layer == "mixed4d" and len(groups) == 3

    fa, score = reference_fit(reference_matrix(data), 3)
    assert score > 0.3 and groups.n_factors == 3
    assert list(groups.explained_variance) == [3]  # 3 passed, so 4 was never tried
    assert groups.explained_variance[3] == pytest.approx(score, abs=1e-6)
    np.testing.assert_allclose(groups.loadings, fa.components_, atol=1e-6)

    # The assignment rule on the fitted loadings: eligible if max ≥ 0.02, group = argmax.
    eligible = fa.components_.max(axis=0) >= 0.02
    expected = [set(np.flatnonzero(eligible & (fa.components_.argmax(axis=0) == g)).tolist()) for g in range(3)]
    assert as_sets(groups.groups) == {frozenset(e) for e in expected if e}


def test_a_stacked_batch_and_attribution_objects_give_the_same_groups():
    data = three_blocks_and_weak_fillers(seed=1)
    objects = [_attribution(r, layer="blocks.10") for r in data]
    from_objects = channel_groups(objects, code_units=False)
    from_batch = channel_groups(data)
    assert from_objects.layer == "blocks.10" and from_batch.layer is None
    assert as_sets(from_objects.groups) == as_sets(from_batch.groups) == as_sets(THREE_BLOCKS)
    np.testing.assert_array_equal(from_objects.loadings, from_batch.loadings)
    # In the code's units (R × |z_c(a)|, here 5) the loadings are 5× larger; the groups do not change.
    scaled = channel_groups(objects)
    assert as_sets(scaled.groups) == as_sets(THREE_BLOCKS)
    np.testing.assert_allclose(np.abs(scaled.loadings), 5.0 * np.abs(from_batch.loadings), rtol=5e-3, atol=1e-4)
    with pytest.raises(AttrvisError, match="different layers"):
        channel_groups(objects[:3] + [_attribution(r, layer="blocks.9") for r in data[3:]])
    with pytest.raises(AttrvisError, match="blocks.10"):
        channel_groups(objects, layer="blocks.9")


def test_the_tau_filter_keeps_weak_coherent_channels_out_of_the_fit():
    data = three_blocks_and_weak_fillers(coherent=True)
    fillers = set(range(9, data.shape[-1]))
    kept = channel_groups(data)  # τ = 0.3: the fillers are zeroed before the fit
    assert as_sets(kept.groups) == as_sets(THREE_BLOCKS)
    np.testing.assert_array_equal(kept.loadings[:, 9:], 0.0)  # zero columns load nothing

    unfiltered = channel_groups(data, tau=1.0)  # the same data without the filter's selection
    members = set(np.concatenate(unfiltered.groups).tolist())
    assert members & fillers, "without the filter the weak channels should form a group"
    assert as_sets(unfiltered.groups) != as_sets(THREE_BLOCKS)
    fa, _ = reference_fit(reference_matrix(data, tau=1.0), 3)
    np.testing.assert_allclose(unfiltered.loadings, fa.components_, atol=1e-6)


def test_four_factors_when_three_explain_too_little():
    data, blocks = four_blocks_and_noise()
    groups = channel_groups(data, tau=1.0)
    a = reference_matrix(data, tau=1.0)
    (_, s3), (fa4, s4) = reference_fit(a, 3), reference_fit(a, 4)
    assert s3 <= 0.3 < s4  # the planted case really is one where 3 is not enough
    assert groups.n_factors == 4 and len(groups) == 4
    assert groups.explained_variance == pytest.approx({3: s3, 4: s4}, abs=1e-6)
    np.testing.assert_allclose(groups.loadings, fa4.components_, atol=1e-6)
    assert as_sets(groups.groups) == as_sets(blocks)

    # If no candidate passes, the last one is used (every candidate was tried).
    strict = channel_groups(data, tau=1.0, score_threshold=0.9)
    assert strict.n_factors == 4 and set(strict.explained_variance) == {3, 4}
    # The candidates are tried in the order given.
    reverse = channel_groups(data, tau=1.0, candidates=(4, 3))
    assert reverse.n_factors == 4 and list(reverse.explained_variance) == [4]


def test_min_loading_decides_eligibility():
    data = three_blocks_and_weak_fillers()
    loose = channel_groups(data)
    top = loose.loadings.max(axis=0)
    cut = float(np.sort(top[:9])[4])  # keeps 5 of the 9 block channels
    strict = channel_groups(data, min_loading=cut)
    members = np.concatenate(strict.groups)
    assert set(members.tolist()) == set(np.flatnonzero(top >= cut).tolist()) and len(members) == 5
    with pytest.raises(AttrvisError, match="min_loading"):
        channel_groups(data, min_loading=10.0)


def test_bad_inputs_are_clear_errors():
    data = three_blocks_and_weak_fillers()
    with pytest.raises(AttrvisError, match="at least one"):
        channel_groups([])
    with pytest.raises(AttrvisError, match="same shape"):
        channel_groups([data[0], data[1, :4]])
    with pytest.raises(AttrvisError, match=r"\(H, W, K\)"):
        channel_groups([data[0, 0], data[1, 0]])
    with pytest.raises(AttrvisError, match="zero"):
        channel_groups(np.zeros_like(data))
    bad = data.copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(AttrvisError, match=r"\[2\].*NaN"):
        channel_groups(bad)
    bad[2, 0, 0, 0] = np.inf
    with pytest.raises(AttrvisError, match="infinite"):
        channel_groups(bad)
    with pytest.raises(AttrvisError, match="sequence"):
        channel_groups(data[0])
    with pytest.raises(AttrvisError, match="tau"):
        channel_groups(data, tau=0.0)
    with pytest.raises(AttrvisError, match="factors"):
        channel_groups(data[..., :3])  # 4 factors for 3 channels
    with pytest.raises(AttrvisError, match="candidates"):
        channel_groups(data, candidates=())
    one_channel = np.zeros((2, 4, 4, 8), np.float32)
    one_channel[..., 0] = 1.0  # one channel alone reaches τ·total: nothing survives the filter
    with pytest.raises(AttrvisError, match="filter"):
        channel_groups(one_channel)


# ---- files -----------------------------------------------------------------------------------
def test_save_load_round_trip_and_summary(tmp_path):
    groups = channel_groups(three_blocks_and_weak_fillers(), layer="mixed4d")
    path = groups.save(tmp_path / "sub" / "vase_mixed4d_groups")
    assert path.suffix == ".npz" and path.exists()
    assert not list(path.parent.glob("*.tmp"))
    back = ChannelGroups.load(path)
    assert len(back) == len(groups) and all(np.array_equal(a, b) for a, b in zip(back.groups, groups.groups))
    assert back.n_factors == groups.n_factors and back.explained_variance == groups.explained_variance
    assert back.layer == "mixed4d" and back.channels == groups.channels
    np.testing.assert_array_equal(back.loadings, groups.loadings)

    summary = groups.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["group_sizes"] == [3, 3, 3] and summary["n_factors"] == 3
    assert sorted(map(tuple, summary["groups"])) == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    assert set(summary["explained_variance"]) == {"3"}


def test_loading_bad_files_and_building_bad_groups(tmp_path):
    with pytest.raises(AttrvisError, match="not found"):
        ChannelGroups.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(AttrvisError, match="not a channel groups file"):
        ChannelGroups.load(tmp_path / "junk.npz")
    ok = dict(n_factors=2, explained_variance={2: 0.5}, loadings=np.zeros((2, 4)), layer=None, channels=4)
    with pytest.raises(AttrvisError, match="range|\\[0, 4\\)"):
        ChannelGroups(groups=(np.array([0, 4]),), **ok)
    with pytest.raises(AttrvisError, match="more than one group"):
        ChannelGroups(groups=(np.array([0, 1]), np.array([1, 2])), **ok)
    with pytest.raises(AttrvisError, match="non-empty"):
        ChannelGroups(groups=(), **ok)
    with pytest.raises(AttrvisError, match="loadings"):
        ChannelGroups(groups=(np.array([0]),), **{**ok, "loadings": np.zeros((3, 4))})


# ---- splitting a new attribution ---------------------------------------------------------------
_postprocess = jax.jit(postprocess, static_argnums=(1, 2))
_area_ratio = jax.jit(area_ratio, static_argnums=1)


def _attribution(values, layer="mixed4d", config=AttributionConfig(), size=224) -> Attribution:
    post = _postprocess(jnp.asarray(values), config, size)
    return Attribution(
        values=np.asarray(values), positive=np.asarray(post.positive), heatmap=np.asarray(post.heatmap),
        beta=float(post.beta), lambda0=float(post.lambda0), logit=5.0, model="test", layer=layer,
        target=0, target_name="zero", method="aumann_shapley", config=config, input_size=size,
        activations=np.abs(np.asarray(values, np.float32)) + 0.1)  # a post-ReLU photo's activations


def test_split_masks_positive_by_channel_with_each_groups_own_beta_and_lambda():
    groups = channel_groups(three_blocks_and_weak_fillers(), layer="mixed4d")
    rng = np.random.default_rng(7)
    new = rng.normal(0, 0.2, (8, 8, groups.channels)).astype(np.float32)
    new[2:5, 2:5, 0:3] += 1.0  # block 0 on one region, block 2 on another
    new[5:8, 0:3, 6:9] += 0.7
    attr = _attribution(new)
    parts = split_attribution(attr, groups)
    assert len(parts) == 3 and [p["group"] for p in parts] == [0, 1, 2]

    union = np.zeros_like(attr.positive)
    for part, channels in zip(parts, groups.groups):
        assert set(part) >= {"positive", "beta", "lambda0", "layer", "channels"}
        assert part["positive"].shape == attr.positive.shape and part["layer"] == "mixed4d"
        np.testing.assert_array_equal(part["channels"], channels)
        mask = np.zeros(groups.channels, bool)
        mask[channels] = True
        np.testing.assert_array_equal(part["positive"], np.where(mask, attr.positive, 0.0))
        assert 0 < part["beta"] <= 1 and part["lambda0"] > 0
        # β_g from the group's own signed filtered map (the τ = 0.95 filter of the whole attribution).
        own = np.where(mask, np.asarray(_postprocess(jnp.asarray(new), AttributionConfig(), 224).filtered), 0.0)
        assert part["beta"] == pytest.approx(float(_area_ratio(jnp.asarray(own), 224)), abs=1e-6)
        assert part["lambda0"] == pytest.approx(20 * own.sum(), rel=1e-4) or own.sum() <= 0
        union += part["positive"]
    assert np.all(union <= attr.positive + 1e-7)
    # The groups' maps differ from each other and from the whole: β is really per group.
    assert len({round(p["beta"], 6) for p in parts}) > 1


def test_split_drops_empty_groups_and_rejects_other_layers():
    groups = channel_groups(three_blocks_and_weak_fillers(), layer="mixed4d")
    new = np.full((8, 8, groups.channels), 0.01, np.float32)
    new[..., 0:6] = np.linspace(0.1, 1.0, 64, dtype=np.float32).reshape(8, 8, 1)
    new[..., 6:9] = -0.5  # group of channels 6–8 is negative: nothing to show
    with pytest.warns(UserWarning, match="no positive attribution"):
        parts = split_attribution(_attribution(new), groups)
    assert [set(p["channels"].tolist()) for p in parts] == [set(g.tolist()) for g in groups.groups if 6 not in g]

    with pytest.raises(AttrvisError, match="channels"):
        split_attribution(_attribution(new[..., :20]), groups)
    with pytest.raises(AttrvisError, match="layer"):
        split_attribution(_attribution(new, layer="mixed3b"), groups)
    negative = np.full_like(new, -0.1)
    negative[0, 0, 9] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AttrvisError, match="none of the groups"):
            split_attribution(_attribution(negative), groups)


# ---- rendering on a tiny network ----------------------------------------------------------------
TINY_SIZE, TINY_LAYER = 32, "conv2"


class _Tiny(StagedNet):
    def setup(self):
        self.a = nn.Conv(6, (3, 3), (2, 2))
        self.b = nn.Conv(12, (3, 3), (2, 2))
        self.head = nn.Dense(4)

    def normalize(self, x):
        return x - 0.5

    def stages(self):
        return [("conv1", lambda x: nn.relu(self.a(x))), ("conv2", lambda x: nn.relu(self.b(x))),
                ("logits", lambda x: self.head(x.mean((1, 2))))]


@pytest.fixture(scope="module")
def tiny():
    net = _Tiny()
    variables = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, TINY_SIZE, TINY_SIZE, 3)))
    spec = ModelSpec("tiny", ("conv1", "conv2"), 4, Preprocess(size=TINY_SIZE))
    return Model(spec, net, variables, ("a", "b", "c", "d"))


def test_visualize_groups_is_the_grouped_batch_beside_the_integral(tiny):
    rng = np.random.default_rng(3)
    data = block_maps(rng, 6, 8, [range(0, 3), range(3, 6), range(6, 9)], (1.0, 0.8, 0.6), 12)
    groups = channel_groups(data, tau=1.0, layer=TINY_LAYER)
    new = _attribution(data[0] + 0.05, layer=TINY_LAYER, size=TINY_SIZE)
    # A cheap perturbation: compiling is most of this test's time.
    config = RenderConfig(steps=4, perturbation="constant")
    run = RunOptions(seeds=2, chunk_size=2, snapshot_steps=())
    key = jax.random.key(5)
    calls = []
    shown = visualize_groups(tiny, new, groups, config, key, options=run, progress=lambda d, n: calls.append((d, n)))
    assert isinstance(shown, GroupVisualization) and shown.channel_groups is groups
    g = len(shown.parts)
    assert shown.groups.composed.shape == (2, g, TINY_SIZE, TINY_SIZE, 3) and shown.groups.grouped
    assert shown.integral.composed.shape == (2, TINY_SIZE, TINY_SIZE, 3)
    np.testing.assert_allclose(shown.groups.beta, [p["beta"] for p in shown.parts])
    # The same key: the groups are exactly `visualize` of the parts, the integral of the attribution.
    np.testing.assert_array_equal(shown.groups.images, visualize(tiny, shown.parts, config, key, options=run).images)
    np.testing.assert_array_equal(shown.integral.images, visualize(tiny, new, config, key, options=run).images)
    assert calls == [(2, 8), (4, 8), (6, 8), (8, 8)]

    # Overrides apply (and here give back `config`, so nothing is compiled again).
    alone = visualize_groups(tiny, new, groups, config.replace(steps=9), key, options=run, include_integral=False,
                             steps=4)
    assert alone.integral is None and alone.groups.config == config
    np.testing.assert_array_equal(alone.groups.images, shown.groups.images)


# ---- a real network and real photos -------------------------------------------------------------
@pytest.mark.slow
def test_groups_on_efficientnet_lite0_and_crops_of_a_real_photo(lite0, chelsea):
    """Several views (crops, flips) of one tabby photo stand in for images of one class. Kept cheap:
    grad×activation attributions at blocks.5, 8 render steps, no integral run (the integral path is
    checked bit for bit on the tiny network above; compiling each batch shape is most of the time)."""
    from attrvis_jax.attribution.api import attribute

    views = [chelsea, chelsea[:, ::-1], chelsea[20:, 30:], chelsea[:-20, :-30][:, ::-1]]
    x = np.stack([lite0.load_image(v) for v in views])
    attrs = attribute(lite0, x, "blocks.5", target="tabby", method="grad_x_activation")
    # Loadings are in R's units; this R is not scaled by z_c(a) as the released code's was.
    groups = channel_groups(attrs, min_loading=1e-4)
    assert groups.layer == "blocks.5" and groups.channels == 80 and groups.n_factors in (3, 4)
    assert 1 <= len(groups) <= groups.n_factors

    print(groups.to_dict())

    shown = visualize_groups(lite0, attrs[0], groups, RenderConfig(steps=8, image_size=None), seeds=2,
                             include_integral=False)
    assert len(shown.parts) == len(groups)  # every group has positive attribution in this view
    assert shown.groups.composed.shape == (2, len(groups), 224, 224, 3)
    assert shown.groups.masks.shape == (2, len(groups), 224, 224)
    assert shown.groups.finite.all() and np.all(np.isfinite(shown.groups.composed))
    assert np.all(np.isfinite(shown.groups.masks)) and shown.integral is None
