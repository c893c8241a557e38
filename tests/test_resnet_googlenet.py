"""Fast checks of the torchvision GoogLeNet and ResNet-50 ports: shapes, names, aliases, errors.

Nothing here computes a forward pass: the models carry shape-only variables (`variables_template`),
and `Model.layer_shapes` only traces. Numerical parity with torchvision is in
`test_parity_torchvision.py`.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from attrvis_jax.errors import UnknownNameError
from attrvis_jax.models import registry
from attrvis_jax.models.base import Model


def _shape_only_model(name: str) -> Model:
    arch = registry.architecture(name)
    return Model(spec=arch.spec, net=arch.build(), variables=registry.variables_template(arch), labels=())


@pytest.fixture(scope="module")
def googlenet():
    return _shape_only_model("googlenet")


@pytest.fixture(scope="module")
def resnet():
    return _shape_only_model("resnet50")


def test_googlenet_layer_shapes(googlenet):
    shapes = googlenet.layer_shapes()
    assert list(shapes) == [*googlenet.layers, "logits"]
    assert shapes["conv1"] == (112, 112, 64)
    assert shapes["maxpool1"] == (56, 56, 64)  # ceil mode: a floor-mode pool would give 55
    assert shapes["conv3"] == (56, 56, 192)
    assert shapes["inception3a"] == (28, 28, 256)
    assert shapes["inception3b"] == (28, 28, 480)
    assert shapes["maxpool3"] == (14, 14, 480)
    assert shapes["inception4d"] == (14, 14, 528)
    assert shapes["inception4e"] == (14, 14, 832)
    assert shapes["maxpool4"] == (7, 7, 832)
    assert shapes["inception5b"] == (7, 7, 1024)
    assert shapes["logits"] == (1000,)


def test_resnet_layer_shapes(resnet):
    shapes = resnet.layer_shapes()
    assert list(shapes) == [*resnet.layers, "logits"]
    assert len(resnet.layers) == 2 + 3 + 4 + 6 + 3
    assert shapes["relu"] == (112, 112, 64)
    assert shapes["maxpool"] == (56, 56, 64)
    for block in range(3):
        assert shapes[f"layer1.{block}"] == (56, 56, 256)
    assert shapes["layer2.0"] == (28, 28, 512)  # v1.5 and v1: the first block of a stage downsamples
    assert shapes["layer2.3"] == (28, 28, 512)
    assert shapes["layer3.5"] == (14, 14, 1024)
    assert shapes["layer4.2"] == (7, 7, 2048)
    assert shapes["logits"] == (1000,)


def test_other_input_sizes(googlenet, resnet):
    assert googlenet.layer_shapes(size=160)["inception4d"] == (10, 10, 528)
    assert resnet.layer_shapes(size=160)["layer3.5"] == (10, 10, 1024)


@pytest.mark.parametrize(
    "name, count",
    [("googlenet", 6_624_904), ("resnet50", 25_557_032)],  # torchvision's published num_params
)
def test_parameter_counts(request, name, count):
    model = request.getfixturevalue("googlenet" if name == "googlenet" else "resnet")
    assert sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(model.variables["params"])) == count


def test_resnet_aliases(resnet):
    expected = {"conv1": "relu", "layer1": "layer1.2", "layer2": "layer2.3", "layer3": "layer3.5",
                "layer4": "layer4.2"}
    paper = {"block2": ("layer1", 3), "block3": ("layer2", 4), "block4": ("layer3", 6), "block5": ("layer4", 3)}
    for stage, (layer, n) in paper.items():
        for b in range(n):
            expected[f"{stage}{'abcdef'[b]}"] = f"{layer}.{b}"
    assert dict(resnet.spec.aliases) == expected
    for alias, layer in expected.items():
        assert resnet.resolve_layer(alias) == layer
    assert resnet.resolve_layer("layer3.5") == "layer3.5"
    assert resnet.resolve_layer("logits") == "logits"


def test_googlenet_has_torchvision_names(googlenet):
    assert googlenet.layers[:5] == ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")
    assert googlenet.layers[-1] == "inception5b"
    assert googlenet.spec.aliases == ()


@pytest.mark.parametrize(
    "name, bad, near",
    [("googlenet", "mixed4d", None), ("googlenet", "inception4f", "inception4e"),
     ("resnet50", "layer3.6", "layer3.5"), ("resnet50", "block6a", "block5a")],
)
def test_unknown_layer_lists_valid_names(request, name, bad, near):
    model = request.getfixturevalue("googlenet" if name == "googlenet" else "resnet")
    with pytest.raises(UnknownNameError) as info:
        model.resolve_layer(bad)
    message = str(info.value)
    assert repr(bad) in message and "valid: " in message
    head, valid = message.split("valid: ")
    assert set(valid.split(", ")) == set(model.layers) | set(dict(model.spec.aliases))
    if near:
        assert repr(near) in head.split("closest: ")[1]
    with pytest.raises(UnknownNameError):
        model.features(np.zeros((8, 8, 3), np.float32), bad)  # fails before any tracing


def test_torch_names_round_trip(googlenet, resnet):
    from flax import traverse_util

    cases = {
        "googlenet": {"inception4d.branch2.1.conv": "inception4d/branch2_1/conv", "conv1.bn": "conv1/bn",
                      "inception5b.branch4.1.bn": "inception5b/branch4_1/bn", "fc": "fc"},
        "resnet50": {"layer3.0.downsample.1": "layer3_0/downsample_1", "layer4.2.conv3": "layer4_2/conv3",
                     "conv1": "conv1", "bn1": "bn1", "fc": "fc"},
    }
    for name, known in cases.items():
        arch = registry.architecture(name)
        for torch_path, flax_path in known.items():
            assert arch.torch_rename(torch_path) == flax_path
            assert arch.torch_rename_back(flax_path) == torch_path
        model = googlenet if name == "googlenet" else resnet
        template = traverse_util.flatten_dict(dict(model.variables))
        for _, *module, _ in template:
            path = "/".join(module)
            assert arch.torch_rename(arch.torch_rename_back(path)) == path
    googlenet = registry.architecture("googlenet")
    assert googlenet.torch_rename("aux1.conv.conv") is None
    assert googlenet.torch_rename("aux2.fc2") is None


def test_every_model_has_a_valid_default_layer():
    from attrvis_jax.models import architecture, available_models

    for name in available_models():
        spec = architecture(name).spec
        assert spec.resolve_layer(spec.default_layer) in spec.layers, name
