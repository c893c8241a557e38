"""Why the scan engine is slower than the Python loop on XLA:CPU, and a candidate fix, measured.

    python benchmarks/scan_vs_loop.py [--quick] [--model inception_v1] [--seeds 1] [--rounds 3]

Finding (this script's census): inside a `lax.scan` / `while` body or a `lax.cond` branch, XLA:CPU
leaves the input-gradient convolutions that JAX emits (kernel dimension labels `01oi`: JAX swaps the
kernel's I/O in the dimension numbers instead of transposing it) in that non-canonical form, and its
YNNPACK fusion does not take them; in the entry computation (the loop engine's single step) its
convolution canonicalization transposes the kernel to `01io` and every convolution becomes a fast
YNNPACK fusion. The slow fallback convolutions are what make a scan step slower.

Candidate fix, tested here by patching `jax.lax.conv_general_dilated` in this process only (the
package is not changed): a convolution with a custom VJP whose input gradient is written as a
convolution with an explicitly flipped and transposed kernel in the canonical NHWC/HWIO layout (the
kernel gradient keeps JAX's rule; unused, XLA drops it). Same arithmetic (checked below against the
unpatched step); the canonical form survives inside control flow.

Prints the census (convolutions, non-canonical ones, YNNPACK fusions) of the step and the scan
chunk with and without the patch, and the per-step time of all four executables, interleaved: each
sample is 4 updates (4 calls of the step, or one call of the 4-step chunk), medians over rounds.
"""

from __future__ import annotations

import argparse
import functools
import re
import time

import common  # noqa: F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from attrvis_jax import load_model  # noqa: E402
from attrvis_jax.config import RenderConfig  # noqa: E402
from attrvis_jax.render import optimize  # noqa: E402

CHUNK = 4
_lax_conv = jax.lax.conv_general_dilated
NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, pads):
    return _lax_conv(x, w, strides, pads, dimension_numbers=NHWC)


def _conv_fwd(x, w, strides, pads):
    return _conv(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, res, g):
    x, w = res
    kh, kw = w.shape[:2]
    # Input gradient: the cotangent, dilated by the stride, correlated with the spatially flipped
    # kernel whose in/out channels are swapped by an explicit transpose (HWIO stays canonical).
    w_t = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
    pads_t = []
    for size, k, s, (lo, _), out in zip(x.shape[1:3], (kh, kw), strides, pads, g.shape[1:3]):
        before = k - 1 - lo
        after = size + k - 1 - ((out - 1) * s + 1) - before
        pads_t.append((before, after))
    dx = _lax_conv(g, w_t, (1, 1), pads_t, lhs_dilation=strides, dimension_numbers=NHWC)
    dw = jax.vjp(lambda w: _lax_conv(x, w, strides, pads, dimension_numbers=NHWC), w)[1](g)[0]
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def canonical_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                   preferred_element_type=None):
    """Drop-in for lax.conv_general_dilated; the NHWC/HWIO, ungrouped, undilated case gets the
    canonical input gradient, everything else goes to lax unchanged."""
    plain = (lhs.ndim == 4 and dimension_numbers is not None
             and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC) and feature_group_count == 1
             and batch_group_count == 1 and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1))) and preferred_element_type is None)
    if not plain:
        return _lax_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                         feature_group_count, batch_group_count, precision, preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    else:
        pads = padding
    return _conv(lhs, rhs, strides, tuple((int(a), int(b)) for a, b in pads))


def census(exe) -> dict:
    text = exe.as_text()
    labels = re.findall(r"dim_labels=([a-z0-9_>-]*)", text)
    return {"convolutions": len(labels), "non-canonical (01oi)": sum("01oi" in l for l in labels),
            "ynn fusions": text.count('"__ynn_fusion"')}


def build(model, layer, r_plus, seeds, patched: bool):
    """Compile the step and the scan chunk (fresh engine, so tracing sees the patch or not)."""
    optimize.engine.cache_clear()
    jax.lax.conv_general_dilated = canonical_conv if patched else _lax_conv
    try:
        config = RenderConfig(steps=2048, seeds=seeds, chunk_size=CHUNK, snapshot_steps=())
        out = {}
        for name in ("step", "chunk"):
            eng, v, carry, sd, data = common.engine_state(model, layer, r_plus, config)
            extra = (jnp.int32(0),) if name == "step" else (jnp.int32(0), jnp.int32(CHUNK))
            t0 = time.perf_counter()
            exe = getattr(eng, name).lower(v, carry, sd, data, *extra).compile()
            out[name] = {"exe": exe, "args": [v, carry, sd, data, *extra], "compile_s": time.perf_counter() - t0,
                         "calls": CHUNK if name == "step" else 1, **census(exe)}
        return out
    finally:
        jax.lax.conv_general_dilated = _lax_conv
        optimize.engine.cache_clear()


def runner(entry):
    """CHUNK updates: CHUNK calls of the step, or one call of the chunk."""
    def run():
        for _ in range(entry["calls"]):
            out = entry["exe"](*entry["args"])
            entry["args"][1] = out[0]  # the carry is donated: thread it through
        jax.block_until_ready(out)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="census and one round (< 2 minutes on a quiet machine)")
    ap.add_argument("--model", default="inception_v1")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = common.machine_info()
    print(common.header(info), flush=True)
    model = load_model(args.model, weights="random")
    layer = model.resolve_layer(args.layer or model.spec.default_layer)
    r_plus = common.synthetic_r_plus(model.layer_shapes()[layer])

    variants = {"jax conv": build(model, layer, r_plus, args.seeds, False),
                "canonical-gradient conv": build(model, layer, r_plus, args.seeds, True)}

    # Same arithmetic: one step from the same state with both variants.
    outs = {}
    for label, v in variants.items():
        e = v["step"]
        fresh = common.engine_state(model, layer, r_plus, RenderConfig(steps=2048, seeds=args.seeds, chunk_size=CHUNK,
                                                                     snapshot_steps=()))
        carry, _ = e["exe"](fresh[1], fresh[2], fresh[3], fresh[4], jnp.int32(0))
        outs[label] = np.asarray(carry["params"]["spectrum"]), float(np.asarray(carry["loss"])[0])
    (p0, l0), (p1, l1) = outs.values()
    diff = float(np.max(np.abs(p0 - p1)) / np.max(np.abs(p0)))
    print(f"one step, both variants: loss {l0:.6g} vs {l1:.6g}; spectrum max rel diff {diff:.2e}", flush=True)

    cases = {f"{label}, {name}": (lambda e=e: [common.timed(runner(e), per=CHUNK)])
             for label, v in variants.items() for name, e in v.items()}
    for label, v in variants.items():
        for e in v.values():
            runner(e)()  # warm-up
    load0 = common.loadavg()
    samples = common.interleave(cases, 1 if args.quick else args.rounds)
    load1 = common.loadavg()
    rows, summaries = [], {}
    for label, v in variants.items():
        for name, e in v.items():
            s = summaries[f"{label}, {name}"] = common.summarize(samples[f"{label}, {name}"])
            rows.append([label, name, e["convolutions"], e["non-canonical (01oi)"], e["ynn fusions"],
                         f"{e['compile_s']:.1f}", f"{s['wall_s']:.3f}", f"{s['cpu_s']:.3f}", s["n"]])
    print()
    print(f"{args.model} {layer}, {args.seeds} seed(s), scan chunk of {CHUNK}; load average {load0} → {load1}")
    print(common.markdown_table(["conv", "executable", "convs", "non-canonical", "YNN fusions", "compile s",
                                 "wall s/step", "CPU s/step", "n"], rows))
    info["load_end"] = common.loadavg()
    common.write_json(args.json, {"machine": info, "rows": rows, "summaries": summaries, "check_rel_diff": diff,
                                  "loss": [l0, l1]})


if __name__ == "__main__":
    main()
