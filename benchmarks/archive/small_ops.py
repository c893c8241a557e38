"""Small ops the render step pays for on XLA:CPU: the per-pixel ops on 3 colour channels and 6
pyramid levels and InceptionV1's LRN, in the forms the library used before (broadcast,
`dot`/`einsum`, `pow`) against the forms it uses now (`param.repeat_channels`, `param.decorrelate`'s
planes, `noise.select_levels`, `layers.local_response_norm`'s rsqrt), forward + backward where the
render differentiates them.

    python benchmarks/archive/small_ops.py [--batches 1 8] [--rounds 5] [--size 224] [--json out.json]

Ops: each case is jitted alone, both forms interleaved (`common.interleave`), 20 calls a sample,
medians. The "before" forms are written out here as references; each pair is also checked to agree
(max |Δ|: tests/test_small_ops_benchmark.py runs this at a toy size). The rewrites shipped in
December 2026 (benchmarks/archive/README.md has what they measured then, the whole render step
included); this script keeps the references and the op table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
import common  # noqa: F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from attrvis_jax.models import inception_v1, layers  # noqa: E402
from attrvis_jax.render import noise, param, perturb  # noqa: E402

CALLS = 20


# ---- the forms before (references) --------------------------------------------------------------
def compose_broadcast(x, m, background):
    return (1.0 - m) * background + m * x


def decorrelate_dot(rgb):
    return rgb @ jnp.asarray(param.COLOR_MATRIX.T)


def select_levels_einsum(pyramid, mask, index_scale):
    u = index_scale * mask[..., 0]
    k = jax.lax.stop_gradient(jnp.floor(u))
    t = u - k
    d = jnp.arange(pyramid.shape[-4], dtype=mask.dtype)
    weights = jnp.where(d == k[..., None], 1.0 - t[..., None], 0.0) + jnp.where(d == k[..., None] + 1, t[..., None], 0.0)
    return jnp.einsum("...hwl,...lhwc->...hwc", weights, pyramid)


def lrn_power(x, depth_radius, bias, alpha, beta):
    summed = jax.lax.reduce_window(jnp.square(x), 0.0, jax.lax.add, (1, 1, 1, 2 * depth_radius + 1), (1, 1, 1, 1),
                                   ((0, 0), (0, 0), (0, 0), (depth_radius, depth_radius)))
    return x / jnp.power(bias + alpha * summed, beta)


# ---- cases --------------------------------------------------------------------------------------
def cases(batch: int, size: int):
    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.uniform(keys[0], (batch, 1, size, size, 3))
    m = jax.random.uniform(keys[1], (batch, 1, size, size, 1))
    bg = jax.random.uniform(keys[2], (batch, 1, size, size, 3))
    cot = jax.random.normal(keys[3], (batch, 1, size, size, 3))
    pyr = jax.random.uniform(keys[4], (batch, 1, noise.PYRAMID_LEVELS, size, size, 3))
    # InceptionV1's first LRN input at this image size (maxpool0's output: size/4, 64 channels)
    acts = jax.random.uniform(keys[0], (batch, size // 4, size // 4, 64), maxval=50.0)

    def vjp_of(fn, *args):
        """Forward + pullback of `fn` with respect to all its arguments, one jitted call."""
        return jax.jit(lambda *a: jax.vjp(fn, *a)[1](cot))

    return {
        "compose: (1 − M)·B + M·X, d/dX, d/dM, d/dB": (
            (vjp_of(compose_broadcast, x, m, bg), (x, m, bg)),
            (vjp_of(perturb.compose, x, m, bg), (x, m, bg))),
        "decorrelate + sigmoid (the image), fwd + bwd": (
            (vjp_of(lambda v: jax.nn.sigmoid(decorrelate_dot(v)), x), (x,)),
            (vjp_of(lambda v: jax.nn.sigmoid(param.decorrelate(v)), x), (x,))),
        "decorrelate + sigmoid (6 noise levels), fwd": (
            (jax.jit(lambda v: jax.nn.sigmoid(decorrelate_dot(v))), (pyr,)),
            (jax.jit(lambda v: jax.nn.sigmoid(param.decorrelate(v))), (pyr,))),
        "pyramid level selection by M, d/dM": (
            (vjp_of(lambda m: select_levels_einsum(pyr, m, 7.0), m), (m,)),
            (vjp_of(lambda m: noise.select_levels(pyr, m, 7.0), m), (m,))),
        "InceptionV1's LRN (β = 0.5, size/4 × size/4 × 64), fwd + bwd": (
            (jax.jit(lambda a: jax.vjp(lambda v: lrn_power(v, **inception_v1.LRN), a)[1](a)), (acts,)),
            (jax.jit(lambda a: jax.vjp(lambda v: layers.local_response_norm(v, **inception_v1.LRN), a)[1](a)), (acts,))),
    }


def max_diff(a, b) -> float:
    leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return max(float(jnp.max(jnp.abs(jnp.asarray(u, jnp.float32) - jnp.asarray(v, jnp.float32)))) for u, v in leaves)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = common.machine_info()
    print(common.header(info))
    rows, report = [], {"machine": info, "rounds": args.rounds, "size": args.size, "cases": []}
    for batch in args.batches:
        for name, ((before, b_args), (after, a_args)) in cases(batch, args.size).items():
            diff = max_diff(before(*b_args), after(*a_args))  # also the warm-up (compile)

            def run(fn, fargs):
                return lambda: [common.timed(lambda: [jax.block_until_ready(fn(*fargs)) for _ in range(CALLS)],
                                             per=CALLS)]

            got = common.interleave({"before": run(before, b_args), "after": run(after, a_args)}, args.rounds)
            b, a = common.summarize(got["before"]), common.summarize(got["after"])
            rows.append([batch, name, f"{1e3 * b['wall_s']:.3f}", f"{1e3 * a['wall_s']:.3f}",
                         f"{b['wall_s'] / a['wall_s']:.1f}", f"{diff:.1e}"])
            report["cases"].append({"batch": batch, "case": name, "before": b, "after": a, "max_abs_diff": diff})
            print(rows[-1], flush=True)
    info["load_end"] = common.loadavg()
    print(f"\nload average: start {info['load_start']}, end {info['load_end']}\n")
    print(common.markdown_table(["batch", "op", "before ms", "after ms", "before ÷ after", "max |Δ|"], rows))
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
