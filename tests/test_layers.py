"""Shared layers against XLA's reference ops: the tap-based max pool (values and gradients)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attrvis_jax.models.layers import max_pool


def _reference(x, kernel, stride, pads):
    return nn.max_pool(x, (kernel, kernel), (stride, stride), padding=pads)


@pytest.mark.parametrize("size, kernel, stride, padding, ceil_mode", [
    (15, 3, 2, "SAME", False), (16, 3, 2, ((0, 1), (0, 1)), False), (14, 3, 1, ((1, 1), (1, 1)), False),
    (13, 3, 2, 0, True), (14, 3, 2, 1, False), (9, 2, 2, "VALID", False), (14, 3, 1, 1, True),
])
def test_max_pool_matches_reduce_window(size, kernel, stride, padding, ceil_mode):
    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((2, size, size + 1, 3)), jnp.float32)
    x = x.at[:, ::3, ::2].set(0.5)  # exact ties, so tie routing of the gradient is exercised
    if isinstance(padding, tuple) or (isinstance(padding, str) and not ceil_mode):
        pads = padding
    else:  # what torch's int padding / ceil_mode mean, spelled out for the reference
        import math
        p = int(padding)
        pads = []
        for n in x.shape[1:3]:
            out = (math.ceil if ceil_mode else math.floor)((n + 2 * p - kernel) / stride) + 1
            if ceil_mode and (out - 1) * stride >= n + p:
                out -= 1
            pads.append((p, max((out - 1) * stride + kernel - n - p, 0)))
    ours = max_pool(x, kernel, stride, padding, ceil_mode)
    ref = _reference(x, kernel, stride, pads)
    np.testing.assert_array_equal(ours, ref)
    g = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)
    d_ours = jax.vjp(lambda x: max_pool(x, kernel, stride, padding, ceil_mode), x)[1](g)[0]
    d_ref = jax.vjp(lambda x: _reference(x, kernel, stride, pads), x)[1](g)[0]
    np.testing.assert_allclose(d_ours, d_ref, rtol=0, atol=1e-6)


def test_relu6_value_and_torchs_derivative():
    """relu6 is clip(x, 0, 6); its derivative is torch's hardtanh one: 1 strictly inside (0, 6), 0 at
    the bounds and outside (jnp.clip's would give ½ at exactly 0 and 6)."""
    from attrvis_jax.models.layers import relu6

    x = jnp.array([-3.0, -0.0, 0.0, 1e-7, 2.5, 6.0 - 1e-6, 6.0, 7.5], jnp.float32)
    np.testing.assert_array_equal(relu6(x), jnp.clip(x, 0.0, 6.0))
    grads = jax.vmap(jax.grad(relu6))(x)
    np.testing.assert_array_equal(grads, [0, 0, 0, 1, 1, 1, 0, 0])
    _, tangent = jax.jvp(relu6, (x,), (jnp.full_like(x, 3.0),))
    np.testing.assert_array_equal(tangent, 3.0 * grads)


def test_the_depthwise_cotangent_passes_through_once_and_unchanged():
    """DepthwiseConv's shifted sums hand their cotangent to the backward taps through a one-trip
    loop (so XLA:CPU computes it once instead of once per tap): the values are the cotangent's own,
    bit for bit, for any weight (a zero or non-finite weight makes it zero trips), and the compiled
    gradient still holds the loop (its trip count is not known to XLA)."""
    from attrvis_jax.models.layers import _cotangent_once

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 3)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((2, 5, 5, 3)), jnp.float32)
    for first in (0.37, 0.0, float("nan"), float("inf")):
        anchor = jnp.asarray(rng.standard_normal((3, 3, 1, 3)), jnp.float32).at[0, 0, 0, 0].set(first)
        out, pull = jax.vjp(lambda x: _cotangent_once(x, anchor), x)
        np.testing.assert_array_equal(out, x)
        np.testing.assert_array_equal(jax.jit(pull)(g)[0], g)
    grad = jax.jit(jax.grad(lambda x, a: jnp.sum(_cotangent_once(x, a) * g)))
    assert " while(" in grad.lower(x, anchor).compile().as_text()
