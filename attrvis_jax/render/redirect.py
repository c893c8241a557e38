"""Redirected ReLU gradients: a way out for units that a random start leaves dead.

A channel whose pre-activation is negative everywhere on the starting image gets no gradient
through its ReLU, so a render of it never moves and stays gray. The redirected gradient (lucid's
`redirected_relu_grad`, captum.optim's `RedirectedReLU`) lets the gradient through a ReLU whose
ordinary gradient is zero for the whole picture, except where it would push an already negative
input further down; once the unit comes alive the ordinary gradient takes over. The render uses it
for the first `RenderConfig.relu_redirect_steps` updates (0: never, the default).

`redirected(fn)` runs `fn` (a network's forward pass) with every ReLU in it redirected, whatever
the network: it traces `fn` to a jaxpr and evaluates it again with each `max(x, 0)` (also inside
`jax.nn.relu` and ReLU6's clip, whose own derivative rules are then set aside) replaced by
`redirected_relu`. Forward values are unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from attrvis_jax.jaxprs import _sub_jaxpr

# Equations whose output is zero when their input is: a ReLU's 0 reaches `max` through these
# (`jnp.clip(x, 0, 6)` converts its bound before comparing).
_ZERO_PRESERVING = ("convert_element_type", "broadcast_in_dim", "reshape", "copy")


@jax.custom_vjp
def redirected_relu(x):
    """max(x, 0), whose gradient flows on where the ReLU's would stop the whole picture (axis 0)."""
    return jnp.maximum(x, 0.0)


def _forward(x):
    return jnp.maximum(x, 0.0), x


def _backward(x, g):
    ordinary = jnp.where(x > 0, g, jnp.zeros_like(g))
    # g > 0: gradient descent would lower this input, which for x < 0 changes nothing
    redirected = jnp.where((x < 0) & (g > 0), jnp.zeros_like(g), g)
    flows = jnp.any(ordinary != 0, axis=tuple(range(1, x.ndim)), keepdims=True) if x.ndim > 1 else ordinary != 0
    return (jnp.where(flows, ordinary, redirected),)


redirected_relu.defvjp(_forward, _backward)


def redirected(fn):
    """`fn` with every ReLU it computes redirected (see the module docstring); same outputs."""

    def wrapped(*args):
        flat, tree = jax.tree_util.tree_flatten(args)
        closed, shape = jax.make_jaxpr(lambda *a: fn(*jax.tree_util.tree_unflatten(tree, a)),
                                       return_shape=True)(*flat)
        out = _evaluate(closed.jaxpr, closed.consts, flat, [False] * len(flat))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), out)

    return wrapped


def count_relus(fn, *args) -> int:
    """How many ReLUs `redirected(fn)` redirects for these arguments (a check for tests and users)."""
    flat, tree = jax.tree_util.tree_flatten(args)
    closed = jax.make_jaxpr(lambda *a: fn(*jax.tree_util.tree_unflatten(tree, a)))(*flat)
    return _count(closed.jaxpr, [False] * len(flat))


def _is_zero(v, zero: set) -> bool:
    if isinstance(v, Literal):
        return getattr(v.val, "shape", ()) == () and v.val == 0
    return v in zero


def _relu_input(eqn, zero: set):
    """The index of the non-zero operand of a `max(x, 0)` equation, else None."""
    if eqn.primitive.name != "max":
        return None
    a, b = (_is_zero(v, zero) for v in eqn.invars)
    return 0 if b and not a else 1 if a and not b else None


def _walk(jaxpr, zero_in, on_eqn):
    """Visit the equations in order with the set of variables known to be zero."""
    zero = {v for v, z in zip(jaxpr.invars, zero_in) if z}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _ZERO_PRESERVING and _is_zero(eqn.invars[0], zero):
            zero.update(eqn.outvars)
        on_eqn(eqn, zero)


def _count(jaxpr, zero_in) -> int:
    total = 0

    def visit(eqn, zero):
        nonlocal total
        sub = _sub_jaxpr(eqn)
        if _relu_input(eqn, zero) is not None:
            total += 1
        elif sub is not None:
            total += _count(sub, [_is_zero(v, zero) for v in eqn.invars])

    _walk(jaxpr, zero_in, visit)
    return total


def _evaluate(jaxpr, consts, args, zero_in):
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731

    def visit(eqn, zero):
        invals = [read(v) for v in eqn.invars]
        which = _relu_input(eqn, zero)
        sub = _sub_jaxpr(eqn)
        if which is not None:
            x = invals[which]
            out = [jnp.broadcast_to(redirected_relu(x), eqn.outvars[0].aval.shape).astype(eqn.outvars[0].aval.dtype)]
        elif sub is not None and _count(sub, [_is_zero(v, zero) for v in eqn.invars]):
            # a call (nested jit, jax.nn.relu's custom_jvp, relu6) with a ReLU inside: inline it
            consts = getattr(eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr"), "consts", ())
            out = _evaluate(sub, consts, invals, [_is_zero(v, zero) for v in eqn.invars])
        else:
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            out = out if eqn.primitive.multiple_results else [out]
        env.update(zip(eqn.outvars, out))

    _walk(jaxpr, zero_in, visit)
    return [read(v) for v in jaxpr.outvars]
