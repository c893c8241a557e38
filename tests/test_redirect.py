"""Redirected ReLU gradients (render/redirect.py, RenderConfig.relu_redirect_steps): the same forward
values, the ordinary gradient wherever a picture's gradient flows, a way in where it does not, every
ReLU of a network found (jax.nn.relu, relu6's clip, a bare maximum), and a dead channel that stays
gray without it gets a picture with it."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attrvis_jax as av
from attrvis_jax.models.layers import relu6
from attrvis_jax.render import objectives as O
from attrvis_jax.render.redirect import count_relus, redirected, redirected_relu
from tiny import tiny_model


def test_the_gradient_rule_against_a_reference():
    """Per picture (axis 0): the ReLU's own gradient if any of it is non-zero, else the incoming
    gradient except where it would push a negative input further down (g > 0 with x < 0)."""
    x = jnp.array([[-1.0, 2.0, -3.0], [-1.0, -2.0, -3.0]])
    g = jnp.array([[-0.5, 0.7, 0.2], [-0.5, 0.7, 0.2]])
    _, vjp = jax.vjp(redirected_relu, x)
    (got,) = vjp(g)
    want = np.array([[0.0, 0.7, 0.0],    # picture 0: its ReLU passes 0.7, so the ordinary rule
                     [-0.5, 0.0, 0.0]], np.float32)  # picture 1: dead; -0.5 passes (it raises x), 0.7 and 0.2 would lower it
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(redirected_relu(x)), np.maximum(np.asarray(x), 0))


def test_every_relu_is_found_and_values_do_not_change():
    f = lambda x: relu6(nn.relu(x) * 2) + jnp.maximum(x, 0.0) + jnp.maximum(0.0, 3 * x) + jnp.maximum(x, 1.0)
    x = jnp.linspace(-2.0, 5.0, 9)
    assert count_relus(f, x) == 4  # max(x, 1) is no ReLU
    np.testing.assert_array_equal(np.asarray(redirected(f)(x)), np.asarray(f(x)))
    for name, layers, relus in (("efficientnet_lite0", "blocks.14", 30), ("resnet50", "layer3.5", 40)):
        model = av.load_model(name, weights="random")
        run = lambda v, x: model.net.apply(v, x, stop=layers)  # noqa: E731
        x = jnp.zeros((1, 64, 64, 3))
        assert count_relus(run, model.variables, x) == relus, name


def test_ordinary_gradient_where_it_flows():
    tiny = tiny_model()
    run = lambda v, x: tiny.net.apply(v, x, stop="conv2")  # noqa: E731
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    np.testing.assert_array_equal(np.asarray(redirected(run)(tiny.variables, x)), np.asarray(run(tiny.variables, x)))
    loss = lambda f: (lambda x: f(tiny.variables, x)[..., 3].mean())  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.grad(loss(redirected(run)))(x)), np.asarray(jax.grad(loss(run))(x)),
                               rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def dead():
    """The tiny net with conv2's channel 5 biased below anything the first layer can lift it over
    on the starting image: dead everywhere at the start of a render."""
    tiny = tiny_model()
    params = jax.tree_util.tree_map(np.asarray, tiny.variables["params"])
    params["c2"]["bias"] = params["c2"]["bias"].copy()
    params["c2"]["bias"][5] = -0.2
    return dataclasses.replace(tiny, variables={"params": jax.tree_util.tree_map(jnp.asarray, params)})


def test_a_dead_channel_gets_a_picture(dead):
    obj = O.channel(dead, "conv2", 5)
    run = dict(perturbation="none", steps=48, lr=0.1, seeds=2, snapshot_steps=())
    gray = av.visualize(dead, obj, **run)
    alive = av.visualize(dead, obj, relu_redirect_steps=16, **run)
    level = lambda r: np.asarray(dead.features(jnp.asarray(r.images), "conv2"))[..., 5].max(axis=(1, 2))  # noqa: E731
    assert np.all(level(gray) == 0) and np.all(gray.images.std(axis=(1, 2, 3)) < 0.01)  # no gradient: the start
    assert np.all(level(alive) > 0.05) and np.all(alive.images.std(axis=(1, 2, 3)) > 0.05)
    plain = av.visualize(dead, O.channel(dead, "conv2", 3), **run)  # a live channel: the switch changes nothing
    switched = av.visualize(dead, O.channel(dead, "conv2", 3), relu_redirect_steps=16, **run)
    assert np.abs(plain.images - switched.images).mean() < 1e-3
