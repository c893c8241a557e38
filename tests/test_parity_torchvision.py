"""Parity of our GoogLeNet and ResNet-50 with torchvision's, on the same random weights.

Each reference is a torchvision model with random weights whose batch norms are made non-trivial
(random affine parameters, running statistics taken from a calibration batch and then perturbed),
so every layer's output is O(1) and every BN matters. Its state dict is saved as a regular `.pth`
(zip format) and loaded through `load_model(name, weights=path)`, the path users take. Both
networks see the same random batch (ours NHWC in [0, 1], torch's NCHW ImageNet-normalized), and every
named layer is compared with the output of the torchvision module of the same name (forward hooks).
Run with `-s` to see the measured errors.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from attrvis_jax.errors import WeightsError
from attrvis_jax.models import registry

from parity import assert_close, nchw_to_nhwc, rel_error
from refs_torchvision import import_torchvision

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BATCH, SIZE = 2, 224


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((BATCH, SIZE, SIZE, 3), dtype=np.float32)


def _to_torch(x: np.ndarray):
    """Our NHWC batch in [0, 1] as torchvision's input: ImageNet-normalized NCHW."""
    return torch.from_numpy(np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2)))


def _randomize_batch_norms(model, seed: int) -> None:
    """Random BN affine parameters; running statistics from a calibration batch, then perturbed."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(n, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(n, generator=gen))
            bn.momentum = 1.0  # running stats := this batch's stats
        model.train()
        model(_to_torch(_images(seed + 1000)[:1]))
        for bn in bns:
            n = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.2 * std * torch.randn(n, generator=gen))
            bn.running_var.mul_(0.5 + 1.5 * torch.rand(n, generator=gen))
            bn.momentum = 0.1
    model.eval()


def _reference(tv_model, layers, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the torchvision modules named `layers` and the logits, in our layout."""
    acts, hooks = {}, []
    for name in layers:
        def hook(module, inputs, output, name=name):
            assert name not in acts, f"module {name} ran twice"
            acts[name] = nchw_to_nhwc(output.clone())

        hooks.append(tv_model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            acts["logits"] = nchw_to_nhwc(tv_model(_to_torch(x)))
    finally:
        for h in hooks:
            h.remove()
    return acts


def _save(tv_model, path) -> None:
    torch.save(tv_model.state_dict(), path)  # zip format, the default since torch 1.6


class Case:
    """One architecture: the torch reference, its saved weights, both models' outputs."""

    def __init__(self, name, tv_model, path, seed):
        self.name, self.tv_model, self.path = name, tv_model, path
        self.model = registry.load_model(name, weights=path)
        self.x = _images(seed)
        self.ref = _reference(tv_model, self.model.layers, self.x)
        self.ours = {k: np.asarray(v) for k, v in self.model.intermediates(self.x).items()}


def _randomized_and_saved(tv_model, path, seed):
    _randomize_batch_norms(tv_model, seed)
    _save(tv_model, path)
    return tv_model, path


@pytest.fixture(scope="module")
def tv():
    return import_torchvision()


@pytest.fixture(scope="module")
def googlenet_case(tv, tmp_path_factory):
    torch.manual_seed(0)
    net = tv.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    net, path = _randomized_and_saved(net, tmp_path_factory.mktemp("googlenet") / "x.pth", seed=1)
    return Case("googlenet", net, path, seed=1)


@pytest.fixture(scope="module")
def resnet_weights(tv, tmp_path_factory):
    """A torchvision ResNet-50 with random weights and non-trivial BNs, and its saved state dict."""
    torch.manual_seed(0)
    net = tv.models.resnet50(weights=None)
    return _randomized_and_saved(net, tmp_path_factory.mktemp("resnet50") / "x.pth", seed=2)


@pytest.fixture(scope="module")
def resnet_case(resnet_weights):
    return Case("resnet50", *resnet_weights, seed=2)


def _check_layers(case: Case) -> None:
    """Every named layer and the logits within RTOL; the table is printed (-s) before asserting."""
    rows = []
    for name in (*case.model.layers, "logits"):
        ref = case.ref[name]
        abs_err, rel = rel_error(case.ours[name], ref)
        rows.append((name, ref.shape[1:], float(np.max(np.abs(ref))), abs_err, rel))
    print(f"\n{case.name}: layer, shape, max|ref|, max abs err, relative")
    for name, shape, scale, abs_err, rel in rows:
        print(f"  {name:12s} {str(shape):18s} {scale:9.3g} {abs_err:9.2e} {rel:9.2e}")
    worst = max(rows, key=lambda r: r[-1])
    print(f"  worst: {worst[0]} {worst[-1]:.2e}")
    for name, *_ in rows:
        assert_close(f"{case.name} {name}", case.ours[name], case.ref[name])


def _check_head(case: Case, split: str, more: tuple[str, ...]) -> None:
    """head(features(x, split), split) reproduces the logits (`split` may be an alias); so does the
    head from each layer in `more`, fed with the layer's activations from `intermediates`.
    """
    layer = case.model.resolve_layer(split)
    acts = np.asarray(case.model.features(case.x, split))
    assert_close(f"{case.name} features({split})", acts, case.ref[layer])
    inputs = [(split, acts)] + [(m, case.ours[case.model.resolve_layer(m)]) for m in more]
    for name, acts in inputs:
        logits = np.asarray(case.model.head(acts, name))
        _, rel = assert_close(f"{case.name} head({name})", logits, case.ref["logits"])
        print(f"{case.name} head from {name!r} vs torch logits: relative {rel:.2e}")


# ---- GoogLeNet -----------------------------------------------------------------------------------


def test_googlenet_normalize_is_transform_input(tv):
    """Our 2x - 1 equals torchvision's transform_input applied to ImageNet-normalized images."""
    from attrvis_jax.models.googlenet import GoogLeNet

    net = tv.models.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    x = _images(7)
    ref = nchw_to_nhwc(net._transform_input(_to_torch(x)))
    assert_close("googlenet normalize", np.asarray(GoogLeNet().normalize(x)), ref, rtol=1e-6)


def test_googlenet_layers_and_logits(googlenet_case):
    _check_layers(googlenet_case)


def test_googlenet_head_from_layers(googlenet_case):
    _check_head(googlenet_case, "inception4d", ("maxpool2",))


def test_googlenet_checkpoint_with_aux_heads_loads(tv, tmp_path):
    torch.manual_seed(3)
    net = tv.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    state = net.state_dict()
    assert any(k.startswith("aux1.") for k in state) and any(k.startswith("aux2.") for k in state)
    path = tmp_path / "with_aux.pth"
    _save(net, path)
    model = registry.load_model("googlenet", weights=path)
    params = model.variables["params"]
    np.testing.assert_array_equal(np.asarray(params["fc"]["kernel"]), state["fc.weight"].numpy().T)
    np.testing.assert_array_equal(
        np.asarray(model.variables["batch_stats"]["inception4e"]["branch3_1"]["bn"]["var"]),
        state["inception4e.branch3.1.bn.running_var"].numpy(),
    )
    assert not any(k.startswith("aux") for k in params)


def test_resnet_weights_into_googlenet_fail_clearly(resnet_weights):
    net, path = resnet_weights
    with pytest.raises(WeightsError) as info:
        registry.load_model("googlenet", weights=path)
    message = str(info.value)
    keys = re.findall(r"'([^']+)'", message)
    assert any(k in net.state_dict() for k in keys), f"no resnet50 key named in: {message}"


# ---- ResNet-50 -----------------------------------------------------------------------------------


def test_resnet50_layers_and_logits(resnet_case):
    _check_layers(resnet_case)


def test_resnet50_head_from_layers(resnet_case):
    _check_head(resnet_case, "block4f", ("conv1",))


def test_resnet50_aliases_name_torchvision_stages(resnet_case):
    model = resnet_case.model
    expected = {"conv1": "relu", "layer1": "layer1.2", "layer4": "layer4.2", "block2a": "layer1.0",
                "block3d": "layer2.3", "block4f": "layer3.5", "block5c": "layer4.2"}
    for alias, layer in expected.items():
        assert model.resolve_layer(alias) == layer
