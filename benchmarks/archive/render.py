"""Our render loop: seconds per step and per full visualization, compile time, peak memory, scan vs
Python loop, for several models and seed counts; and float32 vs bfloat16 of the network alone.

    python benchmarks/archive/render.py [--quick] [--models inception_v1 resnet50 efficientnet_lite0]
                                [--seeds 1 8 25 100] [--engines scan loop] [--layer L]
                                [--bf16-batch 8] [--timeout 900] [--json out.json]

Random weights (speed does not depend on the values), 224² images, each model's default layer
(inception_v1 mixed4d, resnet50 layer3.5, efficientnet_lite0 stage5), the default render config
(pyramid perturbation with the mask, "code" transforms) and a synthetic R⁺ of the layer's shape.

Each (model, seeds) row runs in a fresh child process, so its peak RSS (ru_maxrss: model, compile,
both engines) is its own. In the child: the single step is compiled ahead of time (its compile time,
XLA's FLOPs and temporary-buffer estimate are recorded; a row whose estimate exceeds 60% of the
machine's available memory is skipped), then `visualize` runs `steps` updates per call with each
engine, engines interleaved over `rounds`; s/step is the median over the chunks after the first of
every call (wall, and process CPU seconds). "scan" is the default engine (lax.scan over chunks of
updates); "loop" is a Python loop over the jitted step. Full visualization = 2048 × s/step + compile:
extrapolated from the measured steps, not run. Default steps per call and rounds depend on the seed
count (see PLAN); the 100-seed row makes one measured chunk of one step per engine.

bf16 (`--bf16-batch`): attrvis_jax has no dtype switch, so only the network's forward + input
gradient to the layer is compared, float32 vs the same variables and input cast to bfloat16
(interleaved, medians), per model; this CPU has AVX2 but no AVX-512 BF16.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
import common  # noqa: F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

MODELS = ["inception_v1", "resnet50", "efficientnet_lite0"]
# seeds: (chunk_size, steps per visualize call, rounds)
PLAN = {1: (2, 8, 2), 8: (2, 4, 2), 25: (2, 4, 1), 100: (1, 2, 1)}
LOOP_ONLY_FROM = 100  # seed counts from here run only the (faster on CPU) loop engine, to bound the time
QUICK_PLAN = {1: (2, 4, 1), 8: (1, 2, 1)}
FULL_STEPS = 2048


def plan_for(seeds: int, quick: bool):
    table = QUICK_PLAN if quick else PLAN
    below = [k for k in table if k <= seeds]
    return table[max(below)] if below else table[min(table)]


def load(name: str):
    from attrvis_jax import load_model

    return load_model(name, weights="random")


def network_gradient(model, layer: str, batch: int, dtype):
    """A warmed-up callable for one forward + input gradient to `layer` in `dtype` (variables and
    input cast), and its compile seconds."""
    size = model.input_size
    cast = lambda t: jax.tree_util.tree_map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)
    variables = cast(model.variables)
    x = jnp.full((batch, size, size, 3), 0.5, dtype)
    f = jax.jit(jax.grad(lambda v, x: jnp.sum(model.apply_features(v, x, layer).astype(jnp.float32)), argnums=1))
    t0 = time.perf_counter()
    exe = f.lower(variables, x).compile()
    compile_s = time.perf_counter() - t0
    exe(variables, x).block_until_ready()
    return (lambda: exe(variables, x).block_until_ready()), compile_s


# ---- child: one (model, seeds) row ---------------------------------------------------------------
def child(name: str, layer: str | None, seeds: int, engines: list[str], quick: bool, bf16_batch: int) -> dict:
    from attrvis_jax.config import RenderConfig, RunOptions

    model = load(name)
    layer = model.resolve_layer(layer)
    r_plus = common.synthetic_r_plus(model.layer_shapes()[layer])
    chunk, steps, rounds = plan_for(seeds, quick)
    if seeds >= LOOP_ONLY_FROM and "loop" in engines:
        engines = ["loop"]
    row = {"model": name, "layer": layer, "seeds": seeds, "chunk": chunk, "steps_per_call": steps, "rounds": rounds}
    config = RenderConfig(steps=steps)
    options = {e: RunOptions(seeds=seeds, chunk_size=chunk, engine=e, snapshot_steps=()) for e in engines}

    # The single step, compiled ahead of time: compile time, FLOPs, memory estimate. With the loop
    # engine's config, so that its `visualize` calls reuse this executable (engines are cached).
    eng, variables, carry, seed_data, data = common.engine_state(
        model, layer, r_plus, config, options["loop" if "loop" in engines else engines[0]])
    exe, row["compile_step_s"] = eng.compiled("step", variables, carry, seed_data, data, jnp.int32(0))
    row["step_gflop"] = common.cost_flops(exe) / 1e9
    mem = exe.memory_analysis()
    if mem is not None:
        row["xla_temp_mib"] = mem.temp_size_in_bytes / 2**20
        row["mem_available_mib"] = common.mem_available_mib()
        if row["xla_temp_mib"] > 0.6 * row["mem_available_mib"]:
            row["error"] = f"skipped: XLA estimates {row['xla_temp_mib']:.0f} MiB, {row['mem_available_mib']:.0f} MiB available"
            return row
    del carry, seed_data

    def case(engine):
        def run():
            compile_s, samples = common.visualize_samples(model, layer, r_plus, config, options[engine])
            if compile_s:
                row[f"compile_{engine}_s"] = compile_s
            return samples
        return run

    # No separate warm-up call: visualize compiles before it runs (compile time is reported apart)
    # and the first chunk of every call is dropped.
    cases = {e: case(e) for e in engines}
    load0 = common.loadavg()
    samples = common.interleave(cases, rounds, log=lambda s: print(s, file=sys.stderr, flush=True))
    row["load"] = f"{load0} → {common.loadavg()}"
    for e in engines:
        row[e] = common.summarize(samples[e])
    if bf16_batch and seeds == bf16_batch:
        fns = {}
        for label, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
            fns[label], row[f"network_{label}_compile_s"] = network_gradient(model, layer, seeds, dtype)
        both = common.interleave({k: (lambda f=f: [common.timed(f)]) for k, f in fns.items()}, 2 if quick else 3)
        row["network_f32"] = common.summarize(both["f32"])
        row["network_bf16"] = common.summarize(both["bf16"])
    row["peak_rss_mib"] = common.peak_rss_mib()
    return row


# ---- parent --------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="inception_v1 at 1 and 8 seeds, few steps, no bf16 (< 2 minutes quiet)")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--layer", default=None, help="layer for every model (default: each model's default layer)")
    ap.add_argument("--seeds", nargs="*", type=int, default=None)
    ap.add_argument("--engines", nargs="*", default=["scan", "loop"])
    ap.add_argument("--bf16-batch", type=int, default=None,
                    help="seed count whose row also compares f32/bf16 (default 8; 0: off; off in --quick)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per (model, seeds) child")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bf16_batch is None:
        args.bf16_batch = 0 if args.quick else 8
    if args.child:
        row = child(args.child[0], args.layer, int(args.child[1]), args.engines, args.quick, args.bf16_batch)
        print(json.dumps(row))
        return

    models = args.models or (["inception_v1"] if args.quick else MODELS)
    seed_counts = args.seeds or ([1, 8] if args.quick else [1, 8, 25, 100])
    info = common.machine_info()
    print(common.header(info), flush=True)
    rows = []
    for name in models:
        for seeds in seed_counts:
            argv = [__file__, "--child", name, str(seeds), "--engines", *args.engines, "--bf16-batch", str(args.bf16_batch)]
            argv += ["--quick"] if args.quick else []
            argv += ["--layer", args.layer] if args.layer else []
            t0 = time.perf_counter()
            row = common.run_child(argv, args.timeout)
            row.setdefault("model", name)
            row.setdefault("seeds", seeds)
            row["child_wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print(json.dumps(row), flush=True)

    info["load_end"] = common.loadavg()
    table = []
    for r in rows:
        measured = [e for e in ("scan", "loop") if e in r]
        if not measured:
            table.append([r["model"], r.get("layer", ""), r["seeds"], r.get("error", "no result")] + [""] * 9)
            continue
        best_engine = min(measured, key=lambda e: r[e]["wall_s"])
        best = r[best_engine]["wall_s"]
        compile_s = r.get(f"compile_{best_engine}_s", r["compile_step_s"]) if best_engine == "scan" else r["compile_step_s"]
        table.append([
            r["model"], r["layer"], r["seeds"],
            *[f"{r[e]['wall_s']:.3f}" if e in r else "–" for e in ("scan", "loop")],
            f"{r['scan']['wall_s'] / r['loop']['wall_s']:.2f}" if len(measured) == 2 else "–",
            f"{best / r['seeds']:.3f}",
            f"{r['compile_scan_s']:.1f}" if "compile_scan_s" in r else "–", f"{r['compile_step_s']:.1f}",
            f"{(FULL_STEPS * best + compile_s) / 60:.1f} ({best_engine})",
            f"{r['step_gflop']:.1f}", f"{r.get('xla_temp_mib', float('nan')) / 1024:.2f}",
            f"{r['peak_rss_mib'] / 1024:.2f}", r.get("load", ""),
        ])
    print()
    print(common.markdown_table(
        ["model", "layer", "seeds", "scan s/step", "loop s/step", "scan ÷ loop", "s per seed-step (best)",
         "compile scan s", "compile step s", "2048 steps, min (extrapolated)", "GFLOP/step",
         "XLA temp GiB", "peak RSS GiB", "load average"], table))
    bf = [r for r in rows if "network_bf16" in r]
    if bf:
        print()
        print(common.markdown_table(
            ["model", "layer", "batch", "fwd+bwd f32 s", "fwd+bwd bf16 s", "bf16 ÷ f32"],
            [[r["model"], r["layer"], r["seeds"], f"{r['network_f32']['wall_s']:.3f}", f"{r['network_bf16']['wall_s']:.3f}",
              f"{r['network_bf16']['wall_s'] / r['network_f32']['wall_s']:.2f}"] for r in bf]))
    print(f"\nload average: start {info['load_start']}, end {info['load_end']}")
    common.write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
