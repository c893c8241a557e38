"""layers.conv_general_dilated (the canonical-gradient convolution every model's `conv` uses) against
`jax.lax.conv_general_dilated`: values, input and kernel gradients, inside vmap, at model level, and
the reason it exists: no non-canonical (`01oi`) convolution left in a compiled `lax.scan` on CPU."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.models import layers

NHWC = ("NHWC", "HWIO", "NHWC")
RTOL = 1e-5


def _close(got, want, what):
    """Max abs difference within RTOL of the reference's largest magnitude (float32 sums reorder)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= RTOL, f"{what}: relative error {err:.2e}"


def _check(x, w, strides, padding, groups=1, dilation=(1, 1)):
    kwargs = dict(dimension_numbers=NHWC, feature_group_count=groups, rhs_dilation=dilation)

    def ours(x, w):
        return layers.conv_general_dilated(x, w, strides, padding, **kwargs)

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, strides, padding, **kwargs)

    def value_and_grads(conv):  # one compiled program per side
        return jax.jit(jax.value_and_grad(lambda x, w, ct: jnp.sum(conv(x, w) * ct), (0, 1)))

    shape = jax.eval_shape(ref, x, w).shape
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
    _close(ours(x, w), ref(x, w), "value")
    (_, (got_dx, got_dw)), (_, (want_dx, want_dw)) = (value_and_grads(f)(x, w, ct) for f in (ours, ref))
    _close(got_dx, want_dx, "input gradient")
    _close(got_dw, want_dw, "kernel gradient")


def _arrays(batch, h, w, cin, kernel, cout, groups, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, h, w, cin)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((kernel, kernel, cin // groups, cout)), jnp.float32)
    return x, k


@pytest.mark.parametrize("groups, cin, cout", [(1, 4, 6), (2, 4, 6), (4, 4, 8)], ids=["dense", "grouped", "depthwise"])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 2), (0, 1)), ((3, 3), (2, 2))],
                         ids=["same", "valid", "explicit", "explicit-wide"])
@pytest.mark.parametrize("stride", [1, 2])
def test_matches_lax(stride, padding, groups, cin, cout):
    for kernel in (1, 3):  # 1×1 with wide pads: negative padding in the transposed convolution
        x, w = _arrays(2, 9, 12, cin, kernel, cout, groups, seed=kernel)  # odd height, even width
        _check(x, w, (stride, stride), padding, groups)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 3), (2, 3))])
def test_large_kernel_rectangular_strides_and_dilation(padding):
    x, w = _arrays(3, 15, 16, 3, 7, 5, 1)
    _check(x, w, (2, 2), padding)  # the InceptionV1 / ResNet stem shape
    _check(x, w, (2, 1), padding)
    x, w = _arrays(2, 13, 14, 4, 3, 4, 2)
    _check(x, w, (1, 1), padding, groups=2, dilation=(2, 2))
    _check(x, w, (2, 2), padding, groups=2, dilation=(2, 1))


def test_under_vmap_and_jit():
    """Seeds are a vmapped axis in the render engine: the custom rule must batch."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((3, 2, 10, 10, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.float32)

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (2, 2), "SAME", dimension_numbers=NHWC)))

    for transform in (lambda f: jax.vmap(jax.grad(f), (0, None)),
                      lambda f: jax.grad(lambda x, w: jnp.sum(jax.vmap(f, (0, None))(x, w)), (0, 1))):
        got = jax.jit(transform(loss(layers.conv_general_dilated)))(x, w)
        want = jax.jit(transform(loss(jax.lax.conv_general_dilated)))(x, w)
        for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            _close(g, r, "vmapped gradient")


def test_other_layouts_fall_through_to_lax():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 3, 9, 9)), jnp.float32)  # NCHW
    w = jnp.asarray(rng.standard_normal((5, 3, 3, 3)), jnp.float32)  # OIHW
    jaxpr = str(jax.make_jaxpr(lambda x: layers.conv_general_dilated(x, w, (1, 1), "SAME"))(x))
    assert "custom_vjp" not in jaxpr
    pads = ((1, 1), (1, 1))
    got = jax.grad(lambda x: jnp.sum(layers.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=(2, 2)) ** 2))(x)
    want = jax.grad(lambda x: jnp.sum(jax.lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=(2, 2)) ** 2))(x)
    _close(got, want, "NCHW, input dilation")


def test_rewrites_by_name_and_backend():
    """`kernels` names the rewrites; "auto" takes the backend's list (all on CPU, none elsewhere)."""
    from attrvis_jax import load_model
    from attrvis_jax.errors import AttrvisError

    everything = frozenset(layers.REWRITES)
    assert layers.rewrites("auto", "cpu") == everything == layers.rewrites("all")
    assert layers.rewrites("auto", "gpu") == frozenset() == layers.rewrites("auto", "tpu") == layers.rewrites("lax")
    assert layers.rewrites("auto") == layers.rewrites("auto", jax.default_backend())
    assert layers.rewrites("depthwise+max_pool") == {"depthwise", "max_pool"}
    for bad in ("gpu", "depthwise+", "max_pool+bogus", "", None):
        with pytest.raises(ValueError, match="kernels must be"):
            layers.rewrites(bad)
    with pytest.raises(AttrvisError, match="kernels must be"):
        load_model("inception_v1", weights="random", kernels="fast")


def test_choice_off_is_plain_lax():
    """`layers.conv(..., kernels="lax")` is lax's convolution, JAX's own gradient."""
    x = jnp.ones((1, 8, 8, 2), jnp.float32)

    def jaxprs(canonical):
        module = layers.conv(2, 3, kernels="conv_gradient" if canonical else "depthwise+max_pool")
        variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
        forward = str(jax.make_jaxpr(module.apply)(variables, x))
        grad = str(jax.make_jaxpr(jax.grad(lambda v, x: jnp.sum(module.apply(v, x) ** 2), (0, 1)))(variables, x))
        return forward, grad

    (fwd_on, grad_on), (fwd_off, grad_off) = jaxprs(True), jaxprs(False)
    assert "custom_vjp" in fwd_on and "custom_vjp" not in fwd_off
    assert grad_on != grad_off


def _variants(name):
    """A network built both ways: distinct (hashable) modules, so jit and engine caches keep them apart."""
    from attrvis_jax.models import registry

    arch = registry.architecture(name)
    ours, ref = arch.build(kernels="all"), arch.build(kernels="lax")
    assert ours != ref and hash(ours) != hash(ref)
    clone = ours.clone(kernels="lax")
    assert ref == clone and hash(ref) == hash(clone)
    return arch, ours, ref


@pytest.mark.parametrize("name", ["inception_v1", "googlenet", "resnet50", "efficientnet_lite0"])
def test_networks_pass_the_choice_to_every_conv(name):
    """Every convolution and max pool of the network follows its `kernels` field: in the forward
    jaxpr each convolution sits in the canonical rule's custom_vjp with "all" and in none with
    "lax", max pools are strided taps with "all" and `reduce_window_max` with "lax", depthwise
    convolutions shifted sums or grouped convolutions, and the gradient jaxprs differ."""
    from attrvis_jax.models import registry

    arch, ours, ref = _variants(name)
    variables = registry.variables_template(arch)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    forward = {net: str(jax.make_jaxpr(net.apply)(variables, x)) for net in (ours, ref)}
    convs = forward[ref].count("conv_general_dilated[")
    grouped = len(re.findall(r"feature_group_count=(?!1\b)\d+", forward[ref]))
    assert (grouped > 0) == (name == "efficientnet_lite0")  # the depthwise convolutions, with "lax"
    assert re.findall(r"feature_group_count=(?!1\b)\d+", forward[ours]) == []  # shifted sums with "all"
    assert convs > 0 and forward[ours].count("conv_general_dilated[") == convs - grouped
    assert forward[ours].count("name=_conv_lax") == convs - grouped  # the custom_vjp's function: one per convolution
    assert forward[ref].count("name=_conv_lax") == 0
    pools = forward[ref].count("reduce_window_max")
    assert (pools > 0) == (name != "efficientnet_lite0") and forward[ours].count("reduce_window_max") == 0
    assert forward[ours].count("name=_max_pool_taps") == pools

    def grad_jaxpr(net):
        return str(jax.make_jaxpr(jax.grad(lambda v, x: jnp.sum(net.apply(v, x)), (0, 1)))(variables, x))

    assert grad_jaxpr(ours) != grad_jaxpr(ref)


def test_factory_models_refuse_the_choice():
    from attrvis_jax import load_model
    from attrvis_jax.errors import AttrvisError

    with pytest.raises(AttrvisError, match="kernels='lax' applies to the package's architectures"):
        load_model("some.module:factory", kernels="lax")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's layout census")
def test_no_noncanonical_convolution_inside_scan():
    """The point of the rule: inside a loop body XLA:CPU keeps JAX's own input-gradient convolution
    as `01oi` and its kernel-gradient one as `f01b_i01o` (slow paths); ours stay `b01f_01io`."""
    x, w = _arrays(2, 16, 16, 8, 3, 16, 1)

    def loss(x, w):
        return jnp.sum(layers.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC) ** 2)

    def body(carry, _):
        x, w = carry
        dx, dw = jax.grad(loss, (0, 1))(x, w)
        return (x - 1e-3 * dx, w - 1e-3 * dw), None

    text = jax.jit(lambda x, w: jax.lax.scan(body, (x, w), None, length=3)[0]).lower(x, w).compile().as_text()
    labels = re.findall(r"dim_labels=([a-z0-9_>-]*)", text)
    assert len(labels) == 3, labels  # forward, input gradient, kernel gradient
    assert all(label == "b01f_01io->b01f" for label in labels), labels


def test_model_gradients_match_plain_lax():
    """InceptionV1 (7×7/2 stem with explicit pads, 1×1, 3×3 and 5×5 convolutions) to mixed3a at
    64², random weights, max pools on the way: input and weight gradients with the rewrites and
    with plain lax."""
    from attrvis_jax import load_model

    model = load_model("inception_v1", weights="random", kernels="all")
    plain = load_model("inception_v1", weights="random", kernels="lax")
    assert model.net != plain.net
    x = jnp.asarray(np.random.default_rng(5).random((2, 64, 64, 3)), jnp.float32)

    def grads(model):
        def loss(variables, x):
            acts = model.apply_features(variables, x, "mixed3a")
            return jnp.sum(acts * jnp.cos(jnp.arange(acts.size, dtype=jnp.float32).reshape(acts.shape)))

        return jax.jit(jax.grad(loss, (0, 1)))(model.variables, x)

    ours = grads(model)
    ref = grads(plain)
    _close(ours[1], ref[1], "input gradient")
    flat_ours = jax.tree_util.tree_leaves_with_path(ours[0])
    flat_ref = jax.tree_util.tree_leaves(ref[0])
    assert len(flat_ours) == len(flat_ref)
    for (path, g), r in zip(flat_ours, flat_ref):
        _close(g, r, jax.tree_util.keystr(path))
