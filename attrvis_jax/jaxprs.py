"""Dependence on a traced program (a jaxpr): which equations feed the outputs, which inputs they read.

`jax.make_jaxpr` records everything the Python code ran; XLA later drops what no output needs. The
two places that reason about a program before it is compiled use this to see it as XLA will: the
memory floor (memory.py) counts only live equations, and a wrapped network's `head`
(models/external.py) checks that its logits do not read the image.
"""

from __future__ import annotations

from typing import Sequence


def _sub_jaxpr(eqn):
    """The inner jaxpr of a call-like equation (nested jit, custom_jvp/vjp call) whose inputs and
    outputs line up one to one with the equation's; None for any other equation."""
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        sub = getattr(sub, "jaxpr", sub)
        if sub is not None and hasattr(sub, "eqns") and len(sub.invars) == len(eqn.invars) \
                and len(sub.outvars) == len(eqn.outvars):
            return sub
    return None


def liveness(jaxpr, outputs_used: Sequence[bool] | None = None) -> tuple[list[bool], list[bool]]:
    """(per equation: does a used output depend on it, per input: does a used output read it).

    Walks the equations backwards from the used outputs (all by default), into call-like
    sub-jaxprs; any other equation with a live output counts all its inputs as read."""
    from jax.extend.core import Literal

    outputs_used = [True] * len(jaxpr.outvars) if outputs_used is None else outputs_used
    live = {v for v, u in zip(jaxpr.outvars, outputs_used) if u and not isinstance(v, Literal)}
    eqn_live = [False] * len(jaxpr.eqns)
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        wanted = [o in live for o in eqn.outvars]
        if not any(wanted):
            continue
        eqn_live[i] = True
        sub = _sub_jaxpr(eqn)
        mask = liveness(sub, wanted)[1] if sub is not None else [True] * len(eqn.invars)
        live.update(v for v, m in zip(eqn.invars, mask) if m and not isinstance(v, Literal))
    return eqn_live, [v in live for v in jaxpr.invars]


def used_inputs(jaxpr, outputs_used: Sequence[bool] | None = None) -> list[bool]:
    """Which of `jaxpr`'s inputs the (used) outputs depend on."""
    return liveness(jaxpr, outputs_used)[1]
