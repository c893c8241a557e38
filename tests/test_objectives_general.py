"""Objectives as functions of activations (render/objectives.py): each built-in's value and gradient
against a reference written independently in float64 numpy (gradients by central differences), their
composition across layers, and the kernel's general path (one forward pass for every layer named;
diversity pushes the seeds' pictures apart). Tiny random network: seconds."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attrvis_jax as av
from attrvis_jax.errors import AttrvisError
from attrvis_jax.models.base import StagedNet
from attrvis_jax.render import objectives as O
from attrvis_jax.render.optimize import engine, seed_keys
from tiny import SIZE, tiny_model

RUN = dict(perturbation="none", steps=24, seeds=4, lr=0.1, snapshot_steps=())


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _acts(seed=0, b=3):
    rng = np.random.default_rng(seed)
    return {"conv1": rng.normal(size=(b, 16, 16, 8)), "conv2": rng.normal(size=(b, 8, 8, 16)),
            O.INPUT: rng.random((b, 12, 10, 3)), O.ALPHA: rng.random((b, 12, 10, 1))}


# ---- references in numpy, float64 -----------------------------------------------------------------
def ref_channel(a, k):
    return a["conv2"][..., k].mean(axis=(1, 2))


def ref_neuron(a, k, y, x):
    return a["conv2"][:, y, x, k]


def ref_direction(a, v, cosine=False, at=None):
    f = a["conv2"] if at is None else a["conv2"][:, at[0] : at[0] + 1, at[1] : at[1] + 1]
    out = np.zeros(f.shape[0])
    for b in range(f.shape[0]):
        total = 0.0
        for i in range(f.shape[1]):
            for j in range(f.shape[2]):
                d = float(np.dot(f[b, i, j], v))
                total += d / (np.linalg.norm(f[b, i, j]) * np.linalg.norm(v)) if cosine else d
        out[b] = total / (f.shape[1] * f.shape[2])
    return out


def ref_diversity(a):
    f = a["conv2"]
    grams = []
    for b in range(f.shape[0]):
        m = f[b].reshape(-1, f.shape[-1])
        g = (m.T @ m).ravel()
        grams.append(g / np.linalg.norm(g))
    n = len(grams)
    return np.array([-sum(np.dot(grams[i], grams[j]) for j in range(n) if j != i) / (n - 1) for i in range(n)])


def ref_interpolate(a):
    first, second = ref_channel(a, 1), ref_channel(a, 2)
    n = len(first)
    return np.array([(1 - i / (n - 1)) * first[i] + i / (n - 1) * second[i] for i in range(n)])


def ref_l1(a, c=0.5):
    return np.abs(a[O.INPUT] - c).mean(axis=(1, 2, 3))


def ref_tv(a):
    x = a[O.INPUT]
    out = []
    for b in range(len(x)):
        dy = [abs(x[b, i + 1, j, c] - x[b, i, j, c]) for i in range(x.shape[1] - 1) for j in range(x.shape[2])
              for c in range(3)]
        dx = [abs(x[b, i, j + 1, c] - x[b, i, j, c]) for i in range(x.shape[1]) for j in range(x.shape[2] - 1)
              for c in range(3)]
        out.append(np.mean(dy) + np.mean(dx))
    return np.array(out)


def _blur3(x):
    h, w = x.shape[1:3]
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            out += p[:, dy : dy + h, dx : dx + w]
    return out / 9


def ref_blur(a, frozen=None):
    x = a[O.INPUT]
    blurred = _blur3(x if frozen is None else frozen)
    return 0.5 * ((x - blurred) ** 2).mean(axis=(1, 2, 3))


V = np.random.default_rng(5).normal(size=16)
CASES = [
    ("channel", lambda m: O.channel(m, "conv2", 5), lambda a: ref_channel(a, 5)),
    ("neuron", lambda m: O.neuron(m, "conv2", 4, 2, 6), lambda a: ref_neuron(a, 4, 2, 6)),
    ("direction-dot", lambda m: O.direction(m, "conv2", V), lambda a: ref_direction(a, V)),
    ("direction-cosine", lambda m: O.direction(m, "conv2", V, cosine=True), lambda a: ref_direction(a, V, True)),
    ("neuron-direction", lambda m: O.neuron_direction(m, "conv2", V, 3, 1), lambda a: ref_direction(a, V, at=(3, 1))),
    ("neuron-direction-cosine", lambda m: O.neuron_direction(m, "conv2", V, 3, 1, cosine=True),
     lambda a: ref_direction(a, V, True, at=(3, 1))),
    ("diversity", lambda m: O.diversity(m, "conv2"), ref_diversity),
    ("channel-interpolate", lambda m: O.channel_interpolate(O.channel(m, "conv2", 1), O.channel(m, "conv2", 2)),
     ref_interpolate),
    ("l1", lambda m: O.l1(), ref_l1),
    ("total-variation", lambda m: O.total_variation(), ref_tv),
    ("alpha-area", lambda m: O.alpha_area(), lambda a: a[O.ALPHA].mean(axis=(1, 2, 3))),
    ("two-layers", lambda m: O.channel(m, "conv2", 5) - 0.5 * O.channel(m, "conv1", 2),
     lambda a: ref_channel(a, 5) - 0.5 * a["conv1"][..., 2].mean(axis=(1, 2))),
    ("from-function", lambda m: O.from_function(lambda a: jnp.max(a["conv2"][..., 3], axis=(1, 2)), ["conv2"]),
     lambda a: a["conv2"][..., 3].max(axis=(1, 2))),
]


def _value(objective, acts):
    return np.asarray(objective({k: jnp.asarray(v, jnp.float32) for k, v in acts.items()}), np.float64)


@pytest.mark.parametrize("make,ref", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_value_and_gradient_match_a_numpy_reference(tiny, make, ref):
    objective = make(tiny)
    acts = _acts()
    np.testing.assert_allclose(_value(objective, acts), ref(acts), rtol=2e-5, atol=2e-6)
    # the gradient of Σ_b w_b·score_b (every picture's score counts, coupled ones too) at a few
    # coordinates of every layer it reads, against float64 central differences of the reference
    w = np.array([1.0, -0.7, 0.4])
    grads = jax.grad(lambda a: jnp.sum(jnp.asarray(w, jnp.float32) * objective(a)))(
        {k: jnp.asarray(v, jnp.float32) for k, v in acts.items()})
    rng = np.random.default_rng(1)
    # the neuron objectives' own coordinates (conv2 at (2, 6) channel 4, and position (3, 1)) besides
    # random ones: a random coordinate would almost never land where their gradient is non-zero
    hot = {"conv2": [(1, 2, 6, 4), (2, 3, 1, 7)]}
    for name in objective.layers:
        randoms = [tuple(int(rng.integers(s)) for s in acts[name].shape) for _ in range(6)]
        for idx in hot.get(name, []) + randoms:
            eps = 1e-5
            up, down = {k: v.copy() for k, v in acts.items()}, {k: v.copy() for k, v in acts.items()}
            up[name][idx] += eps
            down[name][idx] -= eps
            numeric = (w @ ref(up) - w @ ref(down)) / (2 * eps)
            assert float(grads[name][idx]) == pytest.approx(numeric, rel=2e-3, abs=2e-5), (name, idx)


def test_blur_penalty_value_and_its_stopped_gradient():
    """blur: ½·mean (X − sg(blur(X)))², so its gradient is (X − blur(X)) / N with the blurred copy a
    constant: the reference differentiates with the blurred copy frozen."""
    acts = _acts()
    objective = O.blur()
    np.testing.assert_allclose(_value(objective, acts), ref_blur(acts), rtol=2e-5, atol=1e-7)
    x = acts[O.INPUT]
    grad = jax.grad(lambda a: jnp.sum(objective(a)))({O.INPUT: jnp.asarray(x, jnp.float32)})[O.INPUT]
    np.testing.assert_allclose(np.asarray(grad), (x - _blur3(x)) / x[0].size, rtol=1e-4, atol=1e-8)


def test_composition_rules(tiny):
    a, b = O.channel(tiny, "conv2", 1), O.channel(tiny, "conv2", 2)
    mix = a - 0.5 * b
    assert isinstance(mix, O.Linear) and np.all(mix.weights[..., 2] == -0.5)  # one layer: still linear
    two = a + O.channel(tiny, "conv1", 1)
    assert isinstance(two, O.Sum) and two.layers == ("conv2", "conv1")
    nested = 2 * (two - O.diversity(tiny, "conv2"))
    assert isinstance(nested, O.Sum) and nested.coefficients == (2.0, 2.0, -2.0)  # flattened
    wide = O.channel(tiny, "conv2", [1, 2, 3]) + O.channel(tiny, "conv2", 0)
    assert wide.weights.shape == (3, 8, 8, 16) and np.all(wide.weights[:, ..., 0] == 1)
    with pytest.raises(AttrvisError, match="do not combine"):
        O.channel(tiny, "conv2", [1, 2]) + O.diversity(tiny, "conv1") + O.channel(tiny, "conv1", [1, 2, 3])
    with pytest.raises(AttrvisError, match="only feature objectives"):
        O.attribution_objective({"positive": np.ones((8, 8, 16)), "beta": 0.3, "activations": np.ones((8, 8, 16))}) + a
    with pytest.raises(AttrvisError, match="one score per picture"):
        O.from_function(lambda acts: acts["conv2"].mean(), ["conv2"])(_acts())
    with pytest.raises(AttrvisError, match="non-empty list of layer names"):
        O.from_function(lambda acts: acts, "conv2")
    with pytest.raises(AttrvisError, match="non-zero vector of its 16 channels"):
        O.direction(tiny, "conv2", np.ones(8))


def _conv_count(tiny, objective):
    """Convolutions in the compiled render chunk of `objective` (forward and input gradients)."""
    from attrvis_jax.render.optimize import _taps

    config = av.RenderConfig(perturbation="none", steps=2)
    taps = _taps(tiny, objective)
    eng = engine(tiny.net, max((l for _, l in taps), key=tiny.depth), config, SIZE, taps=taps)
    carry, seed_data = eng.init(seed_keys(jax.random.key(0), [0, 1]), objective.groups)
    data = {"objective": jax.tree_util.tree_map(jnp.asarray, objective), "beta": jnp.full((1,), jnp.nan)}
    text = eng.chunk.lower(tiny.variables, carry, seed_data, data, jnp.int32(0), jnp.int32(2)).as_text()
    return len(re.findall(r"stablehlo\.convolution|\bconvolution\(", text))


def test_the_network_runs_once_up_to_the_deepest_layer(tiny):
    """conv1 and conv2 named together cost what conv2 alone costs: 2 forward convolutions and 2
    input gradients (two separate passes would be 3 + 3); conv1 alone stops there (1 + 1)."""
    deep = O.from_function(lambda a: a["conv2"].mean((1, 2, 3)), ["conv2"])
    both = O.channel(tiny, "conv2", 3) + O.channel(tiny, "conv1", 1)
    shallow = O.from_function(lambda a: a["conv1"].mean((1, 2, 3)), ["conv1"])
    assert _conv_count(tiny, deep) == 4
    assert _conv_count(tiny, both) == 4
    assert _conv_count(tiny, shallow) == 2


def test_an_objective_of_the_logits_renders_through_the_whole_network(tiny):
    """"logits" is a tap like any layer (it comes after every named layer): an objective of a class
    logit runs the whole network and raises that logit."""
    logit = O.from_function(lambda a: a["logits"][:, 1], ["logits"])
    assert _conv_count(tiny, logit) == _conv_count(tiny, O.from_function(lambda a: a["conv2"].mean((1, 2, 3)),
                                                                         ["conv2"]))
    result = av.visualize(tiny, logit, perturbation="none", steps=24, seeds=1, key=jax.random.key(0))
    assert np.isfinite(result.loss_history).all()
    assert result.loss_history[0, -1] < result.loss_history[0, 0]  # -logit: 24 updates raise it


def _gram_similarity(tiny, images) -> float:
    acts = np.asarray(tiny.features(jnp.asarray(images), "conv2"), np.float64).reshape(len(images), -1, 16)
    g = np.einsum("bpk,bpl->bkl", acts, acts).reshape(len(images), -1)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s = g @ g.T
    return float((s.sum() - np.trace(s)) / (len(images) * (len(images) - 1)))


def test_diversity_pushes_the_seeds_apart(tiny):
    plain = av.visualize(tiny, O.channel(tiny, "conv2", 3), **RUN)
    diverse = av.visualize(tiny, O.channel(tiny, "conv2", 3) + 0.5 * O.diversity(tiny, "conv2"), **RUN)
    assert diverse.images.shape == (4, SIZE, SIZE, 3) and np.all(np.isfinite(diverse.images))
    assert min(np.abs(diverse.images[i] - diverse.images[j]).mean() for i in range(4) for j in range(i)) > 1e-3
    assert _gram_similarity(tiny, diverse.images) < _gram_similarity(tiny, plain.images) - 0.05


def test_general_path_equals_the_fast_path_for_a_linear_function(tiny):
    """A channel written as a function runs on the general path (one joint gradient over the seeds)
    and optimizes the same loss as the fast path's per-seed one: the same pictures to rounding."""
    fast = av.visualize(tiny, O.channel(tiny, "conv2", 3), **RUN)
    general = av.visualize(tiny, O.from_function(lambda a: a["conv2"][..., 3].mean((1, 2)), ["conv2"]), **RUN)
    np.testing.assert_allclose(general.loss_history[:, 0], fast.loss_history[:, 0], rtol=1e-5, atol=1e-6)
    assert np.abs(general.images - fast.images).mean() < 2e-3
    assert np.isnan(general.beta) and general.lambda0 == 0


def test_a_two_layer_objective_and_penalties_render(tiny):
    obj = O.channel(tiny, "conv2", 3) + O.channel(tiny, "conv1", 1) - 0.2 * O.total_variation()
    smooth = av.visualize(tiny, obj, **RUN)
    rough = av.visualize(tiny, O.channel(tiny, "conv2", 3) + O.channel(tiny, "conv1", 1), **RUN)
    tv = lambda x: np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()
    assert tv(smooth.images) < tv(rough.images)
    with pytest.raises(AttrvisError, match="no mask terms"):
        av.visualize(tiny, obj, perturbation="pyramid", steps=2, seeds=1)


# ---- parameterizations -----------------------------------------------------------------------------
def test_pixel_and_laplacian_pictures_against_numpy():
    """pixel: X = σ(decorrelate(P)) with lucid's colour matrix; laplacian: the levels summed after a
    bilinear upsampling (a constant level stays that constant; level 0 enters as it is)."""
    from attrvis_jax.render import param

    rng = np.random.default_rng(0)
    p = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    x, m = param.picture({"image": jnp.asarray(p)}, 12)
    want = 1 / (1 + np.exp(-(p.astype(np.float64) @ param.COLOR_MATRIX.T.astype(np.float64))))
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(m) == 1)
    levels = [jnp.asarray(p[0]), jnp.full((6, 6, 3), 0.25), jnp.full((3, 3, 3), -0.5), jnp.zeros((2, 2, 3))]
    np.testing.assert_allclose(np.asarray(param.laplacian_image(levels, 12)), p[0] - 0.25, rtol=1e-6, atol=1e-6)
    init = param.init_params(jax.random.key(0), "laplacian", 12, mask=True)
    assert [l.shape for l in init["image"]] == [(12, 12, 3), (6, 6, 3), (3, 3, 3), (2, 2, 3)]
    assert init["spectrum"].shape == (1, 12, 7, 2)  # the mask keeps its own Fourier spectrum
    x, m = param.picture(init, 12, bias=jnp.asarray(0.0))
    assert x.shape == (12, 12, 3) and m.shape == (12, 12, 1) and 0.4 < float(m.mean()) < 0.6


@pytest.mark.parametrize("parameterization", ["fft", "pixel", "laplacian"])
def test_each_parameterization_raises_its_channel(tiny, parameterization):
    obj = O.channel(tiny, "conv2", 9)
    run = dict(perturbation="none", seeds=2, parameterization=parameterization, snapshot_steps=())
    start = av.visualize(tiny, obj, steps=1, lr=1e-9, **run)
    done = av.visualize(tiny, obj, steps=48, lr=0.1, **run)
    level = lambda r: np.asarray(tiny.features(jnp.asarray(r.images), "conv2")).mean(axis=(1, 2))[:, 9]
    assert np.all(level(done) > level(start) + 0.05)
    with_mask = av.visualize(tiny, {"positive": np.ones((8, 8, 16), np.float32), "beta": 0.3, "layer": "conv2",
                                    "activations": np.ones((8, 8, 16), np.float32)},
                             steps=4, seeds=1, parameterization=parameterization)
    assert with_mask.masks.shape == (1, SIZE, SIZE) and abs(float(with_mask.mask_area[0]) - 0.3) < 0.05


# ---- alpha (lucid's transparency) -----------------------------------------------------------------------
def test_alpha_keeps_what_the_objective_needs(tiny):
    """alpha=True: α starts at 0.5 and the network sees X·α over fresh noise; subtracting
    alpha_area keeps less of the picture the more it weighs; the result's masks are α and its
    composed pictures X over the gray."""
    run = dict(perturbation="none", steps=48, lr=0.1, seeds=2, alpha=True, snapshot_steps=())
    channel = O.channel(tiny, "conv2", 9)
    loose = av.visualize(tiny, channel, **run)
    tight = av.visualize(tiny, channel - 0.2 * O.alpha_area(), **run)
    assert np.all(tight.mask_area < loose.mask_area - 0.05) and np.all(np.isfinite(tight.masks))
    assert tight.masks.shape == (2, SIZE, SIZE) and 0 <= tight.masks.min() and tight.masks.max() <= 1
    from attrvis_jax.render.optimize import composite

    np.testing.assert_allclose(tight.composed, composite(tight.images, tight.masks, 0.55), atol=1e-6)
    with pytest.raises(AttrvisError, match="render it with alpha=True"):
        av.visualize(tiny, channel - O.alpha_area(), perturbation="none", steps=2, seeds=1)
    with pytest.raises(AttrvisError, match="the method's mask is its own alpha"):
        av.RenderConfig(alpha=True)


# ---- the README's objectives example runs as written ----------------------------------------------------
class _Blocks(StagedNet):
    """A tiny stand-in with the layer names the README uses (blocks.6, blocks.10, blocks.12)."""

    def setup(self):
        self.convs = [nn.Conv(16, (3, 3), (2, 2)) for _ in range(3)]
        self.fc = nn.Dense(10)

    def normalize(self, x):
        return x * 2 - 1

    def stages(self):
        conv = lambda i: (lambda x: nn.relu(self.convs[i](x)))  # noqa: E731
        return [("blocks.6", conv(0)), ("blocks.10", conv(1)), ("blocks.12", conv(2)),
                ("logits", lambda x: self.fc(x.mean((1, 2))))]


def test_the_readme_objectives_example_runs(monkeypatch):
    """The README's block, as written, on a stand-in with its layer names and a toy schedule (the
    names, signatures and compositions it shows must work)."""
    from pathlib import Path

    from attrvis_jax.data import Preprocess
    from attrvis_jax.models.base import Model, ModelSpec

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"<!-- objectives example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README: the objectives example block is missing"
    code = match.group(1)
    assert "steps=256, seeds=4" in code
    net = _Blocks()
    variables = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    model = Model(ModelSpec("blocks", ("blocks.6", "blocks.10", "blocks.12"), 10, Preprocess(size=SIZE)),
                  net, variables, tuple(str(i) for i in range(10)))
    rendered = []
    real = av.visualize
    monkeypatch.setattr(av, "load_model", lambda name: model)
    monkeypatch.setattr(av, "visualize", lambda *a, **k: rendered.append(real(*a, **k)))
    exec(compile(code.replace("steps=256, seeds=4", "steps=3, seeds=3"), "README.md:objectives", "exec"),
         {"__name__": "readme_example"})
    assert len(rendered) == 7 and all(r.images.shape == (3, SIZE, SIZE, 3) for r in rendered)
    assert all(np.all(np.isfinite(r.images)) for r in rendered)


# ---- on a real network ----------------------------------------------------------------------------------
def test_general_objectives_and_parameterizations_render_on_lite0(lite0):
    """Two layers, your own function, diversity, and the pixel and laplacian parameterizations on
    EfficientNet-Lite0 (64 px, 8 steps): each runs, stays finite and raises its own objective on
    the untransformed pictures from the first update to the last."""
    size = 64
    run = dict(perturbation="none", steps=8, seeds=2, image_size=size, lr=0.1, snapshot_steps=(1,))
    channel = O.channel(lite0, "blocks.10", 3, size=size)
    cases = [
        ("two layers", O.channel(lite0, "blocks.6", 1, size=size) + O.channel(lite0, "blocks.12", 9, size=size), {}),
        ("function", O.from_function(lambda a: a["blocks.10"][..., 3].max(axis=(1, 2)), ["blocks.10"]), {}),
        ("diversity", channel + 0.5 * O.diversity(lite0, "blocks.10"), {}),
        ("pixel", channel, {"parameterization": "pixel"}),
        ("laplacian", channel, {"parameterization": "laplacian"}),
    ]

    def score(objective, images):
        layers = [l for l in objective.layers if l != O.INPUT]
        acts = dict(lite0.intermediates(jnp.asarray(images), layers))
        return np.asarray(objective({**acts, O.INPUT: jnp.asarray(images)}))

    for name, objective, extra in cases:
        out = av.visualize(lite0, objective, **run, **extra)
        assert out.images.shape == (2, size, size, 3) and np.all(np.isfinite(out.loss_history)), name
        first = out.snapshots[1]["images"]
        assert score(objective, out.images).sum() > score(objective, first).sum(), name
