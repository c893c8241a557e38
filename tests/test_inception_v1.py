"""InceptionV1 (lucid's inception5h graph): layer shapes, key map, labels. Fast, no torch.

Parity with lucent's torch model is in `test_parity_inception_v1.py`.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from attrvis_jax.labels import generic_labels
from attrvis_jax.models import inception_v1
from attrvis_jax.models.base import Model
from attrvis_jax.models.registry import architecture, variables_template
from attrvis_jax.weights.convert import flax_to_torch, torch_to_flax

# The real inception5h label list ships with the weights and may not be committed: the label tests
# write a file of its format (1001 lines: "dummy", then 1000 names in the graph's own order), and
# also read the real one where ATTRVIS_INCEPTION_LABELS points to it.
REAL_LABELS = os.environ.get("ATTRVIS_INCEPTION_LABELS")
KNOWN = {174: "tabby", 390: "indigo bunting", 874: "vase"}  # positions in the real file

SHAPES_224 = {
    "conv2d0": (112, 112, 64), "conv2d1": (56, 56, 64), "conv2d2": (56, 56, 192),
    "mixed3a": (28, 28, 256), "mixed3b": (28, 28, 480), "maxpool4": (14, 14, 480),
    "mixed4a": (14, 14, 508), "mixed4b": (14, 14, 512), "mixed4c": (14, 14, 512),
    "mixed4d": (14, 14, 528), "mixed4e": (14, 14, 832), "maxpool10": (7, 7, 832),
    "mixed5a": (7, 7, 832), "mixed5b": (7, 7, 1024), "logits": (1008,),
}


@pytest.fixture(scope="module")
def arch():
    return architecture("inception_v1")


@pytest.fixture(scope="module")
def shape_model(arch):
    """A Model whose variables are only shapes: enough for layer_shapes (nothing is computed)."""
    return Model(spec=arch.spec, net=arch.build(), variables=variables_template(arch), labels=generic_labels(1008))


def test_layer_shapes(shape_model):
    assert shape_model.layers == inception_v1.LAYERS
    assert shape_model.layer_shapes() == SHAPES_224


def test_other_input_sizes_keep_logits_shape(arch, shape_model):
    shapes = shape_model.layer_shapes(256)
    assert shapes["mixed5b"] == (8, 8, 1024)
    assert shapes["logits"] == (1008,)
    # below ~200 px the final map is smaller than the 7x7 pool: averaged whole, no NaN
    assert shape_model.layer_shapes(128)["mixed5b"] == (4, 4, 1024)
    ones = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 1e-3, s.dtype), variables_template(arch))
    logits = jax.jit(arch.build().apply)(ones, jnp.full((1, 128, 128, 3), 0.5))
    assert logits.shape == (1, 1008) and bool(jnp.all(jnp.isfinite(logits)))


def test_parameter_count_and_names(arch, shape_model):
    template = variables_template(arch)
    assert set(template) == {"params"}
    assert shape_model.num_params() == 7_066_380  # same as lucent's InceptionV1
    modules = set(template["params"])
    assert len(modules) == 3 + 9 * 6 + 1
    assert "mixed4d_3x3_pre_relu_conv" in modules and "softmax2_pre_activation_matmul" in modules


def test_torch_key_map_round_trips(arch):
    """lucent state-dict keys ("mixed4d_3x3_pre_relu_conv.weight") map 1:1 onto our variables."""
    template = variables_template(arch)
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), template)
    state = flax_to_torch(zeros, arch.torch_rename_back)
    assert len(state) == 2 * 58
    assert state["conv2d0_pre_relu_conv.weight"].shape == (64, 3, 7, 7)  # torch OIHW
    assert state["softmax2_pre_activation_matmul.weight"].shape == (1008, 1024)
    back = torch_to_flax(state, template, arch.torch_rename)
    assert traverse_util.flatten_dict(back).keys() == traverse_util.flatten_dict(dict(template)).keys()


def test_normalize_is_lucid_range(arch):
    net = arch.build()
    x = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(net.normalize(x), [-117.0, 138.0])


def test_lrn_constants_match_torch_formula():
    """TF-form LRN (alpha multiplies the plain sum) equals torch's size-9 LRN (alpha / size)."""
    from attrvis_jax.models.layers import local_response_norm

    x = np.random.default_rng(0).normal(0, 100, (1, 2, 3, 20)).astype(np.float32)
    ours = np.asarray(local_response_norm(jnp.asarray(x), **inception_v1.LRN))
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (0, 0), (4, 4)))
    window_mean = np.stack([sq[..., c : c + 9].mean(-1) for c in range(20)], -1)
    torch_form = x / (1.0 + 9.99999974738e-05 * window_mean) ** 0.5
    np.testing.assert_allclose(ours, torch_form, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.5, 0.75])
def test_lrn_value_and_gradient_against_the_power_form(beta):
    """β = 0.5 takes the rsqrt path, other β the power: both must be x / (k + α·Σx²)^β, and the
    gradient JAX derives from either must match float64 finite differences of that formula."""
    from attrvis_jax.models.layers import local_response_norm

    x = np.random.default_rng(1).normal(0, 30, (1, 2, 2, 12)).astype(np.float64)
    params = dict(depth_radius=2, bias=1.0, alpha=1e-3, beta=beta)

    def reference(v):
        sq = np.pad(v**2, ((0, 0), (0, 0), (0, 0), (2, 2)))
        summed = np.stack([sq[..., c : c + 5].sum(-1) for c in range(v.shape[-1])], -1)
        return v / (1.0 + 1e-3 * summed) ** beta

    np.testing.assert_allclose(local_response_norm(jnp.asarray(x, jnp.float32), **params), reference(x), rtol=2e-6)
    w = np.random.default_rng(2).normal(size=x.shape)
    grad = jax.grad(lambda v: jnp.sum(local_response_norm(v, **params) * w))(jnp.asarray(x, jnp.float32))
    eps, numeric = 1e-4, np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        numeric[idx] = np.sum((reference(x + d) - reference(x - d)) * w) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_preprocess_is_the_authors_stretch(arch):
    p = arch.spec.preprocess
    assert (p.size, p.mode, p.resample, p.clip) == (224, "stretch", "bicubic", False)


# ---- labels ------------------------------------------------------------------------------------

def _label_file(path: Path) -> None:
    """A file of the inception5h format with KNOWN's names at their real positions."""
    lines = ["dummy"] + [KNOWN.get(i, f"class {i}") for i in range(1, 1001)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("file_name", ["imagenet_comp_graph_label_strings.txt", "inception5h_labels.txt", "labels.txt"])
@pytest.mark.parametrize("real", [False, pytest.param(True, marks=pytest.mark.skipif(
    not (REAL_LABELS and Path(REAL_LABELS).is_file()), reason="ATTRVIS_INCEPTION_LABELS not set"))])
def test_labels_travel_with_the_weights(arch, tmp_path, file_name, real):
    if real:
        shutil.copy(REAL_LABELS, tmp_path / file_name)
    else:
        _label_file(tmp_path / file_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = arch.labels(tmp_path / "inception5h.pth")
    assert len(names) == 1008
    assert names[0] == "dummy"
    assert (names[174], names[390], names[874]) == ("tabby", "indigo bunting", "vase")
    assert names[1001:] == tuple(f"unnamed_{i}" for i in range(1001, 1008))
    model = Model(spec=arch.spec, net=arch.build(), variables={}, labels=names)
    assert model.class_index("tabby") == 174
    assert model.class_index("Vase") == 874
    assert model.class_name(390) == "indigo bunting"


def test_missing_label_file_gives_generic_names_and_warns(arch, tmp_path):
    with pytest.warns(UserWarning, match="labels="):
        names = arch.labels(tmp_path / "inception5h.pth")
    assert names == generic_labels(1008)
    with warnings.catch_warnings():  # random weights: nothing to name, nothing to warn about
        warnings.simplefilter("error")
        assert arch.labels(None) == generic_labels(1008)
