"""Bring your own Flax model (models/external.py): a user's linen or NNX network wrapped by layer path
behaves like a native model — same features, head, attribution and render step — computes nothing
outside the layer's side of the cut once compiled, and refuses what it cannot do in one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attrvis_jax import AttributionConfig, RenderConfig, RunOptions, attribute, from_flax, from_nnx, visualize
from attrvis_jax.attribution.methods import METHODS
from attrvis_jax.errors import AttrvisError

SIZE = 32
QUICK = AttributionConfig(spatial_steps=4, channel_steps=4, steps=4)
X = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)


class Block(nn.Module):
    """A residual block: its output is a cut of the graph, its inner conv is not."""

    features: int

    @nn.compact
    def __call__(self, x):
        return x + nn.relu(nn.Conv(self.features, (3, 3), name="conv")(x))


class LinenCNN(nn.Module):
    """stem -> block1 (residual) -> BatchNorm -> conv2 -> logits, with a reference split for tests."""

    def setup(self):
        self.stem = nn.Conv(8, (3, 3), strides=2)
        self.block1 = Block(8)
        self.bn = nn.BatchNorm(use_running_average=True)
        self.conv2 = nn.Conv(16, (3, 3), strides=2)
        self.fc = nn.Dense(10)

    def trunk(self, x):  # the reference for features("block1")
        return self.block1(nn.relu(self.stem(x)))

    def tail(self, h):  # the reference for head(·, "block1")
        return self.fc(nn.relu(self.conv2(self.bn(h))).mean((1, 2)))

    def __call__(self, x, train: bool = False):
        return self.tail(self.trunk(x))


class NNXCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.blocks = nnx.List([nnx.Conv(8, 8, (3, 3), rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem(x))
        for block in self.blocks:
            x = nnx.relu(block(x))
        return self.head(x.mean((1, 2)))


@pytest.fixture(scope="module")
def linen():
    module = LinenCNN()
    variables = module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    return module, variables, from_flax(module, variables, input_size=SIZE, call_kwargs={"train": False})


@pytest.fixture(scope="module")
def nnx_model():
    module = NNXCNN(nnx.Rngs(0))
    return module, from_nnx(module, input_size=SIZE, labels=[f"class {i}" for i in range(10)])


def hlo_convolutions(fn, *args) -> int:
    """Convolutions left in the compiled (optimized, dead code removed) program."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return len(re.findall(r"\bconvolution\(", text))


# ---- layers, features, head ----------------------------------------------------------------------
def test_linen_layers_are_submodule_paths_in_forward_order(linen):
    _, _, model = linen
    assert model.layers == ("stem", "block1/conv", "block1", "bn", "conv2")
    assert model.spec.num_classes == 10 and model.labels[3] == "3"  # no names: the indices
    assert model.layer_shapes()["block1"] == (16, 16, 8)
    assert model.num_params() == sum(np.size(p) for p in jax.tree_util.tree_leaves(linen[1]["params"]))


def test_linen_features_and_head_match_the_modules_own_split(linen):
    module, variables, model = linen
    trunk = module.apply(variables, X, method=LinenCNN.trunk)
    acts = model.features(X, "block1")
    np.testing.assert_allclose(acts, trunk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.head(acts, "block1"), module.apply(variables, trunk, method=LinenCNN.tail),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.logits(X), module.apply(variables, X), rtol=1e-5, atol=1e-6)
    # head uses the activations it is given, not the image's
    other = np.asarray(acts) * 0.5
    np.testing.assert_allclose(model.head(other, "block1"), module.apply(variables, other, method=LinenCNN.tail),
                               rtol=1e-5, atol=1e-6)


def test_compiled_features_and_head_compute_only_their_side_of_the_layer(linen):
    _, variables, model = linen
    x = jnp.asarray(X)
    full = hlo_convolutions(lambda v: model.apply_logits(v, x), variables)
    assert full == 3  # stem, block1/conv, conv2
    assert hlo_convolutions(lambda v: model.apply_features(v, x, "stem"), variables) == 1
    assert hlo_convolutions(lambda v: model.apply_features(v, x, "block1"), variables) == 2
    acts = jnp.zeros((2, 16, 16, 8))
    assert hlo_convolutions(lambda v: model.apply_head(v, acts, "block1"), variables) == 1
    assert hlo_convolutions(lambda v: model.apply_head(v, acts, "stem"), variables) == 2


def test_nnx_features_and_head_match_the_module(nnx_model):
    module, model = nnx_model
    assert model.layers == ("stem", "blocks/0", "blocks/1")
    assert model.labels[2] == "class 2"
    x = jnp.asarray(X)
    h0 = module.blocks[0](nnx.relu(module.stem(x)))  # blocks/0's own output (before the relu after it)
    np.testing.assert_allclose(model.features(X, "blocks/0"), h0, rtol=1e-5, atol=1e-6)
    expected = module.head(nnx.relu(module.blocks[1](nnx.relu(h0))).mean((1, 2)))
    np.testing.assert_allclose(model.head(h0, "blocks/0"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.logits(X), module(x), rtol=1e-5, atol=1e-6)
    params = sum(np.size(p) for p in jax.tree_util.tree_leaves(nnx.state(module, nnx.Param)))
    assert model.num_params() == params
    # the user's module is not modified by the wrapping (its submodules are still its own)
    assert isinstance(module.blocks[0], nnx.Conv)


# ---- everything downstream -----------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_attribution_method_runs_on_a_wrapped_linen_model(linen, method):
    _, _, model = linen
    a = attribute(model, X[0], "block1", target=3, method=method, config=QUICK)
    assert a.values.shape == (16, 16, 8) and np.all(np.isfinite(a.values))
    assert a.target == 3 and a.layer == "block1"


def test_aumann_shapley_is_complete_on_a_wrapped_model(linen):
    """IG/AS completeness: Σ R = f(a) − f(b) up to the Riemann error, checked through the wrapper."""
    _, _, model = linen
    a = attribute(model, X[0], "conv2", target=1, config=AttributionConfig(spatial_steps=4, channel_steps=4, steps=64))
    f = lambda acts: float(model.head(acts, "conv2")[1])
    gap = f(a.activations) - f(a.baseline)
    assert abs(float(np.sum(a.values)) - gap) <= 0.02 * abs(gap) + 1e-4


def test_attribute_and_visualize_end_to_end_on_an_nnx_model(nnx_model):
    _, model = nnx_model
    a = attribute(model, X[1], "blocks/0", config=QUICK)
    out = visualize(model, a, config=RenderConfig(steps=4), seeds=2, chunk_size=4, snapshot_steps=())
    assert out.images.shape == (2, SIZE, SIZE, 3) and np.all(np.isfinite(out.images))
    assert out.finite.all() and np.all(np.isfinite(out.loss_history))
    assert out.loss_history[:, -1].mean() < out.loss_history[:, 0].mean()  # the objective is optimized


def test_a_wrapped_native_network_matches_the_native_model(lite0):
    """This package's own EfficientNet-Lite0 through the generic path: the same features, head,
    attribution and render step as the native model (blocks_10 is the submodule behind blocks.10)."""
    wrapped = from_flax(lite0.net, lite0.variables, input_size=224, preprocess=lite0.spec.preprocess,
                        labels=lite0.labels)
    assert "blocks_10" in wrapped.layers and wrapped.class_index("tiger cat") == lite0.class_index("tiger cat")
    x = np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32)
    acts = lite0.features(x, "blocks.10")
    np.testing.assert_allclose(wrapped.features(x, "blocks_10"), acts, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(wrapped.head(acts, "blocks_10"), lite0.head(acts, "blocks.10"), rtol=1e-4, atol=1e-4)
    # integrated gradients: the path through head() without the baseline optimization's compile
    # (the wrapped linen model above runs every method, Aumann-Shapley from its baseline included)
    native = attribute(lite0, x[0], "blocks.10", target=281, method="ig", config=QUICK)
    ours = attribute(wrapped, x[0], "blocks_10", target=281, method="ig", config=QUICK)
    np.testing.assert_allclose(ours.values, native.values, rtol=1e-3, atol=1e-5 * np.abs(native.values).max())
    from attrvis_jax.memory import activation_bytes

    # the memory floor sees the wrapped program as XLA will: the dead forward past the layer is not counted
    assert activation_bytes(wrapped, "blocks_10", 224) == activation_bytes(lite0, "blocks.10", 224)
    # one render step, at 64² so that it compiles in seconds (R⁺ and activations of that size)
    render = RenderConfig(steps=1, image_size=64)
    run = RunOptions(seeds=1, chunk_size=1, snapshot_steps=())
    small = np.asarray(lite0.features(x[:, :64, :64], "blocks.10"))[0]
    inputs = dict(positive=np.abs(small), beta=0.2, activations=small)
    ours_step = visualize(wrapped, None, layer="blocks_10", config=render, options=run, **inputs)
    native_step = visualize(lite0, None, layer="blocks.10", config=render, options=run, **inputs)
    # the loss before the update is the forward pass alone: equal to float32 rounding
    np.testing.assert_allclose(ours_step.loss_history, native_step.loss_history, rtol=1e-5)
    # Adam's first update is ±lr per parameter: where a gradient is ~0 its sign can fall either way
    # between two compiled programs (or CPU kinds), so the images agree on average, not bit for bit
    assert np.abs(ours_step.images - native_step.images).mean() < 1e-4


# ---- inputs the wrapper refuses ------------------------------------------------------------------
class TwoOutputs(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Conv(4, (3, 3))(x)
        return y, nn.relu(y)


class Shared(nn.Module):
    """A tuple-returning submodule and a submodule used twice (weight sharing)."""

    @nn.compact
    def __call__(self, x):
        a, b = TwoOutputs(name="split")(x)
        conv = nn.Conv(4, (3, 3), name="twice")
        h = conv(conv(a + b))
        return nn.Dense(5)(h.mean((1, 2)))


@pytest.fixture(scope="module")
def shared():
    module = Shared()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return module, variables, from_flax(module, variables, input_size=16)


def test_a_tuple_output_is_named_by_index_and_a_shared_submodule_is_refused(shared):
    module, variables, model = shared
    assert "split:0" in model.layers and "split:1" in model.layers and "twice" not in model.layers
    with pytest.raises(AttrvisError, match=r"returns a tuple of 2 outputs; name one: split:0, split:1"):
        model.resolve_layer("split")
    with pytest.raises(AttrvisError, match=r"'twice' runs 2 times in one forward pass"):
        model.resolve_layer("twice")
    x = np.random.default_rng(2).random((1, 16, 16, 3), dtype=np.float32)
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    first = state["intermediates"]["split"]["__call__"][0][0]
    np.testing.assert_allclose(model.features(x, "split:0"), first, rtol=1e-6)


def test_clear_errors(linen):
    module, variables, model = linen
    with pytest.raises(AttrvisError, match=r"unknown layer of LinenCNN 'blok1'; closest: 'block1'"):
        model.resolve_layer("blok1")
    with pytest.raises(AttrvisError, match=r"'block1/conv' is not a cut of the network"):
        model.head(model.features(X, "block1/conv"), "block1/conv")
    with pytest.raises(AttrvisError, match=r"'fc' has shape \(1, 10\)"):
        model.resolve_layer("fc")
    with pytest.raises(AttrvisError, match="3 labels for 10 logits"):
        from_flax(module, variables, input_size=SIZE, labels=["a", "b", "c"])
    with pytest.raises(AttrvisError, match="use from_nnx"):
        from_flax(NNXCNN(nnx.Rngs(0)), {}, input_size=SIZE)
    with pytest.raises(AttrvisError, match="input_size must be an integer >= 8"):
        from_flax(module, variables, input_size="32")
    with pytest.raises(AttrvisError, match=r"the network failed on a \(1, 33, 33, 3\) image batch"):
        from_flax(module, {"params": {}}, input_size=33)


def test_a_callable_preprocess_reads_image_files(linen, tmp_path):
    from PIL import Image

    module, variables, _ = linen
    seen = []

    def center(image):
        seen.append(image.shape)
        h, w = image.shape[:2]
        return image[(h - SIZE) // 2:(h - SIZE) // 2 + SIZE, (w - SIZE) // 2:(w - SIZE) // 2 + SIZE]

    model = from_flax(module, variables, input_size=SIZE, preprocess=center)
    pixels = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    x = model.load_image(tmp_path / "p.png")
    assert seen == [(40, 50, 3)] and x.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(x, pixels[4:36, 9:41] / 255.0, atol=1e-6)
    bad = from_flax(module, variables, input_size=SIZE, preprocess=lambda image: image)
    with pytest.raises(AttrvisError, match=r"preprocess returned \(40, 50, 3\)"):
        bad.load_image(tmp_path / "p.png")


# ---- the README's example runs as written ------------------------------------------------------------
def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"<!-- from_flax example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README: the from_flax example block is missing"
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "README.md:from_flax", "exec"), {"__name__": "readme_example"})


# ---- a factory names the wrapped model in sweeps and on the command line -------------------------------
FACTORY = '''
import flax.linen as nn
import jax
import jax.numpy as jnp
from attrvis_jax import from_flax


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="stem")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="mid")(x))
        return nn.Dense(4, name="fc")(x.mean((1, 2)))


def make():
    module = Net()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return from_flax(module, variables, input_size=32, labels=["ant", "bee", "cat", "dog"])
'''


@pytest.fixture()
def factory(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY)
    from PIL import Image

    pixels = np.random.default_rng(4).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    return f"{path}:make", tmp_path / "photo.png"


def test_a_sweep_runs_a_model_named_by_its_factory(factory, tmp_path):
    from attrvis_jax.config import SweepConfig
    from attrvis_jax.apps.sweep import run_sweep

    name, photo = factory
    config = SweepConfig(model=name, images=(str(photo),), targets=("bee",), layers=("default", "stem"),
                         perturbations=("pyramid",), seeds=2, batch=2,
                         attribution=QUICK, render=RenderConfig(steps=3), chunk_size=3)
    result = run_sweep(config, tmp_path / "sweep")
    assert sorted({r["layer"] for r in result.rows}) == ["mid", "stem"]  # "default": the middle layer
    assert {r["target_name"] for r in result.rows} == {"bee"} and len(result.rows) == 4
    assert all(np.isfinite(r["pcc"]) and (tmp_path / "sweep" / r["picture"]).exists() for r in result.rows)


def test_the_command_line_runs_a_factory_model_with_its_report(factory, tmp_path, capsys):
    from attrvis_jax.apps.cli import main

    name, photo = factory
    assert main(["layers", "--model", name]) == 0
    assert "mid" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["run", str(photo), "--model", name, "--layer", "mid", "--target", "cat", "--seeds", "1",
                 "--steps", "2", "--path-steps", "2", "--baseline-steps", "2", "--out", str(out), "--quiet"]) == 0
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["layer"] == "mid" and results["target_index"] == 2 and (out / "report.html").exists()


def test_a_factory_file_may_define_modules_with_postponed_annotations(tmp_path):
    """A file whose Flax module has fields under `from __future__ import annotations`: dataclasses
    look the defining module up in sys.modules while the class is made (a file loaded without
    registering it failed with "'NoneType' object has no attribute '__dict__'")."""
    from attrvis_jax import load_model

    source = "from __future__ import annotations\n" + FACTORY.replace(
        "class Net(nn.Module):\n", "class Net(nn.Module):\n    width: int = 8\n\n").replace(
        'nn.Conv(8, (3, 3), name="mid")', 'nn.Conv(self.width, (3, 3), name="mid")')
    assert "width: int = 8" in source and "self.width" in source
    (tmp_path / "fields.py").write_text(source)
    model = load_model(f"{tmp_path / 'fields.py'}:make")
    assert model.labels == ("ant", "bee", "cat", "dog")
    assert model.features(np.zeros((1, 32, 32, 3), np.float32), "mid").shape == (1, 16, 16, 8)


def test_factory_errors_are_one_line(tmp_path):
    from attrvis_jax import load_model

    (tmp_path / "broken.py").write_text("import nonexistent_package_xyz\n")
    (tmp_path / "notmodel.py").write_text("def make():\n    return 3\n")
    with pytest.raises(AttrvisError, match="importing .*broken.py failed: ModuleNotFoundError"):
        load_model(f"{tmp_path / 'broken.py'}:make")
    with pytest.raises(AttrvisError, match="returned int, not an attrvis_jax Model"):
        load_model(f"{tmp_path / 'notmodel.py'}:make")
    with pytest.raises(AttrvisError, match="has no function 'build'"):
        load_model(f"{tmp_path / 'notmodel.py'}:build")
    with pytest.raises(AttrvisError, match="factory file not found"):
        load_model(f"{tmp_path / 'missing.py'}:make")
    with pytest.raises(AttrvisError, match="brings its own variables"):
        load_model(f"{tmp_path / 'notmodel.py'}:make", weights="x.pth")
