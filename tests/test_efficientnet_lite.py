"""EfficientNet-Lite: parity with the `efficientnet-lite-pytorch` package on the real weights,
and real photos classified correctly."""

from __future__ import annotations

import numpy as np
import pytest

from attrvis_jax import load_model
from parity import assert_close, nchw_to_nhwc


@pytest.mark.parity
@pytest.mark.parametrize("name", ["efficientnet_lite0", pytest.param("efficientnet_lite2", marks=pytest.mark.extended)])
def test_parity_with_package_on_real_weights(name, capsys):
    torch = pytest.importorskip("torch")
    effnet = pytest.importorskip("efficientnet_lite_pytorch")
    from attrvis_jax.weights.store import default_weights_path

    path = default_weights_path(name)  # legacy-format .pth inside the registry package
    ours = load_model(name)
    ref = effnet.EfficientNet.from_name(name.replace("_", "-"))
    ref.load_state_dict(torch.load(path, weights_only=True))
    ref.eval()

    size = ours.input_size
    x = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32)
    acts = {}
    hooks = [ref._blocks[i].register_forward_hook(lambda m, i_, o, i=i: acts.__setitem__(f"blocks.{i}", o))
             for i in range(len(ref._blocks))]
    # the post-ReLU6 tensors inside blocks without a skip: relu6 of the expand / depthwise BN outputs
    for layer in ours.layers:
        if layer.endswith((".expand", ".dw")):
            _, i, part = layer.split(".")
            bn = getattr(ref._blocks[int(i)], "_bn0" if part == "expand" else "_bn1")
            hooks.append(bn.register_forward_hook(
                lambda m, i_, o, layer=layer: acts.__setitem__(layer, torch.clamp(o, 0, 6))))
    stem = ref._conv_stem.register_forward_hook(lambda m, i_, o: acts.__setitem__("stem_conv", o))
    with torch.no_grad():
        logits = ref(torch.from_numpy((x * 255 - 127) / 128).permute(0, 3, 1, 2))
        acts["stem"] = torch.clamp(ref._bn0(acts["stem_conv"]), 0, 6)
        acts["conv_head"] = torch.clamp(ref._bn1(ref._conv_head(acts[f"blocks.{len(ref._blocks) - 1}"])), 0, 6)
    for h in hooks + [stem]:
        h.remove()
    got = ours.intermediates(x)
    worst = (0.0, 0.0, "")
    for layer in ours.layers:
        a, r = assert_close(layer, got[layer], nchw_to_nhwc(acts[layer]))
        worst = max(worst, (r, a, layer))
    a, r = assert_close("logits", got["logits"], logits.numpy())
    with capsys.disabled():
        print(f"\n{name}: worst layer {worst[2]} abs {worst[1]:.2e} rel {worst[0]:.2e}; logits abs {a:.2e} rel {r:.2e}")


def test_features_and_head_compose_to_logits(lite0, chelsea):
    x = lite0.load_image(chelsea)
    logits = np.asarray(lite0.logits(x))
    for layer in ("stem", "blocks.7", "blocks.8.expand", "blocks.11.dw", "stage7", "conv_head"):
        acts = lite0.features(x, layer)
        assert_close(layer, lite0.head(acts, layer), logits, rtol=1e-5)
    shapes = lite0.layer_shapes()
    assert shapes["blocks.10"] == (14, 14, 112)
    assert shapes["blocks.8.dw"] == (14, 14, 480) and shapes["blocks.11.expand"] == (14, 14, 672)
    assert shapes["conv_head"] == (7, 7, 1280)
    assert lite0.features(x, "blocks.10").shape == (14, 14, 112)


@pytest.mark.parametrize(
    "sample, expected",
    [("chelsea", range(281, 288)), ("coffee", [967]), ("motorcycle", [665, 670])],
)
def test_real_photos_top3(lite0, sample, expected):
    """Bundled real photos: a correct class among the top 3 (cats are 281-287)."""
    top3 = [i for i, _, _ in lite0.predict(lite0.load_image(sample), top=3)]
    assert set(top3) & set(expected), f"{sample}: top-3 {top3}"


def test_class_index_by_name_synonym_and_index(lite0):
    assert lite0.class_index("tabby") == 281
    assert lite0.class_index("Tabby Cat") == 281
    assert lite0.class_index("espresso") == 967
    assert lite0.class_index(285) == 285 and lite0.class_index("285") == 285
    assert lite0.num_params() == 4652008


def test_unknown_class_and_layer_suggest_names(lite0):
    from attrvis_jax.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="closest: .*'tabby'"):
        lite0.class_index("tabbby")
    with pytest.raises(UnknownNameError, match=r"closest: 'blocks.1'.*valid: stem, blocks.0"):
        lite0.features(np.zeros((224, 224, 3), np.float32), "block.1")
    with pytest.raises(Exception, match="out of range"):
        lite0.class_index(1000)


def test_features_compute_nothing_past_the_layer(lite0):
    """The traced program for features(x, layer) holds only the convolutions up to the layer."""
    import jax

    x = np.zeros((1, 224, 224, 3), np.float32)

    def convs(layer):
        jaxpr = jax.make_jaxpr(lambda v: lite0.apply_features(v, x, layer))(lite0.variables)
        return str(jaxpr).count("conv_general_dilated")

    # Depthwise convolutions are shifted sums (layers.DepthwiseConv), so only the dense ones count.
    assert convs("stem") == 1
    assert convs("blocks.0") == 2  # stem + project (no expansion in the first block)
    assert convs("blocks.1") == 4
    head = jax.make_jaxpr(lambda v, a: lite0.apply_head(v, a, "blocks.14"))(
        lite0.variables, np.zeros((1, 7, 7, 192), np.float32))
    assert str(head).count("conv_general_dilated") == 2 + 1  # blocks.15 (expand, project) + conv_head


@pytest.mark.parametrize("kernels", ["all", "lax", "conv_gradient"])
@pytest.mark.parametrize("size, kernel, stride", [(15, 3, 2), (16, 5, 2), (14, 5, 1), (9, 3, 1)])
def test_depthwise_shifted_sum_equals_grouped_conv(size, kernel, stride, kernels):
    """layers.DepthwiseConv against XLA's grouped convolution, values and input and kernel gradients,
    in each of its implementations: shifted sums (the `depthwise` rewrite), lax's grouped
    convolution, and the grouped convolution with the canonical gradient rule."""
    import jax
    import jax.numpy as jnp

    from attrvis_jax.models.layers import DepthwiseConv

    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((2, size, size, 6)), jnp.float32)
    layer = DepthwiseConv(kernel, stride, kernels=kernels)
    params = layer.init(jax.random.PRNGKey(0), x)
    jaxpr = str(jax.make_jaxpr(layer.apply)(params, x))
    assert ("conv_general_dilated" in jaxpr) == (kernels != "all")
    assert ("name=_conv_lax" in jaxpr) == (kernels == "conv_gradient")
    assert ("fwd=_cotangent_once_fwd" in jaxpr) == (kernels == "all")  # the shifted sums' cotangent, stored once

    def grouped(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6)

    w = params["params"]["kernel"]
    np.testing.assert_allclose(layer.apply(params, x), grouped(x, w), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(lambda x, w: jnp.sum(layer.apply({"params": {"kernel": w}}, x) ** 2), (0, 1))(x, w)
    g_ref = jax.grad(lambda x, w: jnp.sum(grouped(x, w) ** 2), (0, 1))(x, w)
    for ours, ref in zip(g_ours, g_ref):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
