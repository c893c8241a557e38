"""Why the scan engine was slower than the Python loop on XLA:CPU, and the fix, measured.

    python benchmarks/archive/scan_vs_loop.py [--quick] [--model inception_v1] [--seeds 1] [--rounds 4]

Finding (this script's census): inside a `lax.scan` / `while` body or a `lax.cond` branch, XLA:CPU
leaves the input-gradient convolutions that JAX emits (kernel dimension labels `01oi`: JAX swaps the
kernel's I/O in the dimension numbers instead of transposing it) in that non-canonical form, and its
YNNPACK fusion does not take them; in the entry computation (the loop engine's single step) its
convolution canonicalization transposes the kernel to `01io` and every convolution becomes a fast
YNNPACK fusion. The slow fallback convolutions are what made a scan step slower.

The fix, now in the package (`attrvis_jax.models.layers.conv_general_dilated`, used by every
model's `layers.conv`): a convolution with a custom VJP whose input (and kernel) gradient is written
as an ordinary convolution in the canonical NHWC/HWIO layout, with the kernel flipped and
transposed explicitly. Same arithmetic (checked below: one step from the same state with both
forms); the canonical form survives inside control flow.

The two arms: "jax conv" builds the engine for the network with `kernels="depthwise+max_pool"` (no `conv_gradient`)
(JAX's own gradient rule: the package before the fix), "canonical-gradient conv" for the default
(`kernels="all"`); the two nets differ, so the engine cache holds one engine per arm.
Prints the census (convolutions, non-canonical ones, YNNPACK fusions) of the step and the scan
chunk for both, and the per-step time of all four executables, interleaved: each sample is 4
updates (4 calls of the step, or one call of the 4-step chunk), medians over rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
import common  # noqa: F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from attrvis_jax import load_model  # noqa: E402
from attrvis_jax.config import RenderConfig, RunOptions  # noqa: E402

CHUNK = 4


def census(exe) -> dict:
    text = exe.as_text()
    labels = re.findall(r"dim_labels=([a-z0-9_>-]*)", text)
    return {"convolutions": len(labels), "non-canonical (01oi)": sum("01oi" in l for l in labels),
            "ynn fusions": text.count('"__ynn_fusion"')}


def build(model, layer, r_plus, seeds, canonical: bool):
    """Compile the step and the scan chunk for the network built with this convolution gradient."""
    model = dataclasses.replace(model, net=model.net.clone(kernels="all" if canonical else "depthwise+max_pool"))
    config, options = RenderConfig(steps=2048), RunOptions(seeds=seeds, chunk_size=CHUNK, snapshot_steps=())
    out = {}
    for name in ("step", "chunk"):
        eng, v, carry, sd, data = common.engine_state(model, layer, r_plus, config, options)
        extra = (jnp.int32(0),) if name == "step" else (jnp.int32(0), jnp.int32(CHUNK))
        t0 = time.perf_counter()
        exe = getattr(eng, name).lower(v, carry, sd, data, *extra).compile()
        out[name] = {"exe": exe, "args": [v, carry, sd, data, *extra], "compile_s": time.perf_counter() - t0,
                     "calls": CHUNK if name == "step" else 1, **census(exe)}
    return out


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
    layer = model.resolve_layer(args.layer)
    r_plus = common.synthetic_r_plus(model.layer_shapes()[layer])

    variants = {"jax conv": build(model, layer, r_plus, args.seeds, False),
                "canonical-gradient conv": build(model, layer, r_plus, args.seeds, True)}

    # Same arithmetic: one step from the same state with both variants.
    outs = {}
    for label, v in variants.items():
        e = v["step"]
        fresh = common.engine_state(model, layer, r_plus, RenderConfig(steps=2048),
                                    RunOptions(seeds=args.seeds, chunk_size=CHUNK, snapshot_steps=()))
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
