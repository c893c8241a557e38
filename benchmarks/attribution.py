"""Attribution engine on EfficientNet-Lite0 (real weights) at one mid layer: baseline optimization
time at the spec's step counts, path-integral time for 200 steps, completeness error, and memory
for two chunk sizes.

    python benchmarks/attribution.py [--layer blocks.10] [--chunks 16 64] [--image chelsea]
                                     [--spatial-steps 2049] [--channel-steps 4097] [--json out.json]

Compile time is measured apart from run time (a zero-step call compiles the loop). Memory is
reported two ways per chunk size: XLA's own estimate of the compiled path loop's temporary buffers,
and the peak resident memory of a fresh child process that runs only the path with that chunk.
Also compares the jitted fori_loop engine with a Python loop over a jitted step (PERF-NOTES).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import attrvis_jax as av
from attrvis_jax.attribution import baseline as bl
from attrvis_jax.attribution import methods as me
from attrvis_jax.config import AttributionConfig


def setup(layer: str, image: str):
    model = av.load_model("efficientnet_lite0")
    x = model.load_image(av.sample_image(image))[None]
    acts = model.features(x, layer)
    target = jnp.asarray(np.argmax(np.asarray(model.logits(x)), axis=1), jnp.int32)
    return model, acts, target


def timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def measure_baseline(model, layer, acts, target, config) -> tuple[dict, jax.Array]:
    """Compile each stage with a zero-step call, then time the whole baseline once; a progress
    callback at each stage's end splits the time (one range per stage, so no extra syncs)."""
    row = {}
    n, h, w, k = acts.shape
    for stage, shape in (("spatial", (n, h, w, 1)), ("channel", (n, 1, 1, k))):
        _, row[f"{stage}_compile_s"] = timed(lambda: bl.optimize_mask(
            model.net, layer, model.variables, acts, target, jnp.zeros(shape), lr=0.01, steps=0, proximity=1.0))
    marks = []
    t0 = time.perf_counter()
    base = bl.output_targeted_baseline(
        model.net, layer, model.variables, acts, target, jax.random.key(0), config,
        progress=lambda done, total: marks.append(time.perf_counter()),
        progress_every=max(config.spatial_steps, config.channel_steps, 1))
    jax.block_until_ready(base)
    row["baseline_total_s"] = time.perf_counter() - t0
    if config.spatial_steps and config.channel_steps:
        row["spatial_s"], row["channel_s"] = marks[0] - t0, row["baseline_total_s"] - (marks[0] - t0)
        row["spatial_ms_per_step"] = 1e3 * row["spatial_s"] / config.spatial_steps
        row["channel_ms_per_step"] = 1e3 * row["channel_s"] / config.channel_steps
    row["z_a"] = float(bl.target_logits(model.net, layer, model.variables, acts, target)[0])
    row["z_b"] = float(bl.target_logits(model.net, layer, model.variables, base.values, target)[0])
    return row, base.values


def measure_python_loop(model, layer, acts, target, steps: int) -> float:
    """ms per step of the same spatial-mask update driven by a Python loop over a jitted step."""
    optimizer = optax.adam(0.009)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, variables, acts, target):  # everything an argument: no baked-in constants
        grads = jax.grad(lambda p: bl.mask_objective(model.net, layer, variables, acts, target,
                                                     jax.nn.sigmoid(p), 16.0))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jnp.zeros((*acts.shape[:3], 1))
    params, state = step(params, optimizer.init(params), model.variables, acts, target)  # compile
    jax.block_until_ready(params)
    t0 = time.perf_counter()
    for _ in range(steps):
        params, state = step(params, state, model.variables, acts, target)
    jax.block_until_ready(params)
    return 1e3 * (time.perf_counter() - t0) / steps


def measure_path(model, layer, acts, baseline, target, config) -> dict:
    alphas, weights = me._chunked(*me.path_rule(config.steps, config.rule), config.chunk)
    args = (model.net, layer, model.variables, acts, baseline, target, jnp.asarray(alphas), jnp.asarray(weights),
            jnp.zeros_like(acts), jnp.int32(0), jnp.int32(alphas.shape[0]))
    t0 = time.perf_counter()
    compiled = me._path_advance.lower(*args).compile()
    row = {"chunk": config.chunk, "chunk_layout": list(alphas.shape), "path_compile_s": time.perf_counter() - t0}
    memory = compiled.memory_analysis()
    if memory is not None:
        row["xla_temp_mib"] = memory.temp_size_in_bytes / 2**20
    me.path_integral(model.net, layer, model.variables, acts, baseline, target, config).values.block_until_ready()
    out, row["path_s"] = timed(lambda: me.path_integral(model.net, layer, model.variables, acts, baseline,
                                                        target, config))
    gap = float(out.logit[0] - out.logit_baseline[0])
    row["completeness_error"] = float(out.completeness_error[0])
    row["completeness_relative"] = row["completeness_error"] / abs(gap)
    return row


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child_peak_rss(layer: str, image: str, chunk: int, steps: int) -> dict:
    """Resident memory of a fresh process (this script with --rss-child): after setup, and its peak
    while the path runs (Linux: the high-water mark is reset after setup via /proc/self/clear_refs)."""
    cmd = [sys.executable, __file__, "--rss-child", str(chunk), "--layer", layer, "--image", image,
           "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    before, peak = map(int, out.stdout.split()[-2:])
    return {"rss_setup_mib": before / 1024, "rss_peak_mib": peak / 1024, "rss_path_extra_mib": (peak - before) / 1024}


def rss_child(layer: str, image: str, chunk: int, steps: int) -> None:
    model, acts, target = setup(layer, image)
    config = AttributionConfig(steps=steps, chunk=chunk)
    # Compile first (a zero-chunk-size warm-up would differ): one full run, then reset and measure.
    me.path_integral(model.net, layer, model.variables, acts, 0.5 * acts, target, config).values.block_until_ready()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    out = me.path_integral(model.net, layer, model.variables, acts, 0.5 * acts, target, config)
    out.values.block_until_ready()
    print(before, _status_kib("VmHWM"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", default="blocks.10")
    ap.add_argument("--image", default="chelsea")
    ap.add_argument("--chunks", nargs="*", type=int, default=[16, 64])
    ap.add_argument("--steps", type=int, default=200, help="path points")
    ap.add_argument("--spatial-steps", type=int, default=AttributionConfig.spatial_steps)
    ap.add_argument("--channel-steps", type=int, default=AttributionConfig.channel_steps)
    ap.add_argument("--loop-steps", type=int, default=200, help="steps for the fori_loop vs Python loop comparison")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        return rss_child(args.layer, args.image, args.rss_child, args.steps)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {platform.node()} {jax.devices()[0].device_kind} jax {jax.__version__} "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average {load}")
    model, acts, target = setup(args.layer, args.image)
    print(f"efficientnet_lite0 {args.layer} {tuple(acts.shape[1:])}, class {int(target[0])} "
          f"{model.class_name(int(target[0]))!r}", flush=True)
    config = AttributionConfig(spatial_steps=args.spatial_steps, channel_steps=args.channel_steps, steps=args.steps)
    report = {"layer": args.layer, "image": args.image}

    row, baseline = measure_baseline(model, args.layer, acts, target, config)
    report["baseline"] = row
    print(f"baseline: spatial {config.spatial_steps} steps {row['spatial_s']:.1f} s "
          f"({row['spatial_ms_per_step']:.1f} ms/step, compile {row['spatial_compile_s']:.1f} s); "
          f"channel {config.channel_steps} steps {row['channel_s']:.1f} s ({row['channel_ms_per_step']:.1f} ms/step, "
          f"compile {row['channel_compile_s']:.1f} s); whole baseline {row['baseline_total_s']:.1f} s; "
          f"z_c(a) = {row['z_a']:.3f}, z_c(b) = {row['z_b']:.3f}", flush=True)

    if args.loop_steps:
        def engine(steps):
            return bl.optimize_mask(model.net, args.layer, model.variables, acts, target,
                                    jnp.zeros((*acts.shape[:3], 1)), lr=0.009, steps=steps, proximity=16.0)

        engine(0)  # compiled already by the baseline run; keeps the comparison warm on both sides
        _, engine_s = timed(lambda: engine(args.loop_steps))
        python_ms = measure_python_loop(model, args.layer, acts, target, args.loop_steps)
        report["loop"] = {"fori_loop_ms_per_step": 1e3 * engine_s / args.loop_steps, "python_loop_ms_per_step": python_ms}
        print(f"spatial step, {args.loop_steps} steps: fori_loop {report['loop']['fori_loop_ms_per_step']:.1f} ms/step, "
              f"python loop over jitted step {python_ms:.1f} ms/step", flush=True)

    report["path"] = []
    for chunk in args.chunks:
        row = measure_path(model, args.layer, acts, baseline, target, config.replace(chunk=chunk))
        row.update(child_peak_rss(args.layer, args.image, chunk, args.steps))
        report["path"].append(row)
        print(f"path {args.steps} steps, chunk {chunk} (layout {row['chunk_layout']}): {row['path_s']:.1f} s "
              f"(compile {row['path_compile_s']:.1f} s); completeness error {row['completeness_error']:.2e} "
              f"({row['completeness_relative']:.3%} of |z_c(a) - z_c(b)|); XLA temp {row.get('xla_temp_mib', float('nan')):.0f} MiB; "
              f"peak RSS {row['rss_peak_mib']:.0f} MiB (+{row['rss_path_extra_mib']:.0f} MiB over setup)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
