"""Attribution engine on EfficientNet-Lite0 (real weights) at one mid layer: baseline optimization
time at the spec's step counts, path-integral time for 200 steps against the chunk size, completeness
error, and memory per chunk size.

    python benchmarks/attribution.py [--quick] [--layer blocks.10] [--chunks 8 16 32 64] [--image chelsea]
                                     [--spatial-steps 2049] [--channel-steps 4097] [--rounds 3]
                                     [--no-rss] [--stages-ab] [--kernels-ab] [--json out.json]

Compile time is measured apart from run time (a zero-step call compiles the baseline loop; for the
path, the first call's time less the median of the later ones). Path times are medians over
`--rounds`, the chunk sizes interleaved in every round (the machine is shared). Memory per chunk
size: the peak resident memory of a fresh child process that runs only the path with that chunk.
Also compares the jitted fori_loop engine with a Python loop over a jitted step;
`--kernels-ab` times the baseline's update (one spatial mask, `--loop-steps` updates) with the
network built with each `kernels` choice.
`--quick`: 64 + 64 baseline steps, chunks 8 and 32, one round, no child processes (< 2 minutes).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time

import common  # noqa: F401  (threads first)

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
    """Compile the baseline's loops with a 1 + 2 step call, then time the whole baseline once; a
    progress callback where the stages stop running together splits the time (so no extra syncs)."""
    row = {}
    _, row["compile_s"] = timed(lambda: bl.output_targeted_baseline(
        model.net, layer, model.variables, acts, target, jax.random.key(0),
        config.replace(spatial_steps=1, channel_steps=2)))
    marks = []
    t0 = time.perf_counter()
    base = bl.output_targeted_baseline(
        model.net, layer, model.variables, acts, target, jax.random.key(0), config,
        progress=lambda done, total: marks.append(time.perf_counter()),
        progress_every=max(config.spatial_steps, config.channel_steps, 1))
    jax.block_until_ready(base)
    row["baseline_total_s"] = time.perf_counter() - t0
    shared = min(config.spatial_steps, config.channel_steps)
    rest = max(config.spatial_steps, config.channel_steps) - shared
    if shared and rest:
        row["together_s"], row["alone_s"] = marks[0] - t0, row["baseline_total_s"] - (marks[0] - t0)
        row["together_ms_per_step"] = 1e3 * row["together_s"] / shared
        row["alone_ms_per_step"] = 1e3 * row["alone_s"] / rest
    row["z_a"] = float(bl.target_logits(model.net, layer, model.variables, acts, target)[0])
    row["z_b"] = float(bl.target_logits(model.net, layer, model.variables, base.values, target)[0])
    return row, base.values


def stages_ab(model, layer, acts, target, config, rounds: int) -> dict:
    """The baseline's two stages one after the other (two `optimize_mask` loops: the code before
    #17) against both in one batch (`output_targeted_baseline`), same inits, interleaved rounds.
    Also how far apart the two arms' masks, baselines and attributions end up."""
    n, h, w, k = acts.shape
    k_spatial, k_channel = jax.random.split(jax.random.key(0))
    inits = jax.random.normal(k_spatial, (n, h, w, 1)), jax.random.normal(k_channel, (n, 1, 1, k))
    args = (model.net, layer, model.variables, acts, target)

    def apart(c):
        spatial = bl.optimize_mask(*args, inits[0], lr=c.spatial_lr, steps=c.spatial_steps, proximity=c.proximity)
        channel = bl.optimize_mask(*args, inits[1], lr=c.channel_lr, steps=c.channel_steps, proximity=c.proximity)
        return bl.Baseline(jnp.minimum(spatial, channel) * acts, spatial, channel)

    def together(c):
        return bl.output_targeted_baseline(*args, jax.random.key(0), c)

    arms = {"one after the other": apart, "one batch": together}
    tiny = config.replace(spatial_steps=1, channel_steps=2)
    compile_s = {name: timed(lambda: fn(tiny))[1] for name, fn in arms.items()}
    outs = {}

    def case(name):
        def run():
            c0 = time.process_time()
            outs[name], wall = timed(lambda: arms[name](config))
            return [{"wall": wall, "cpu": time.process_time() - c0}]
        return run

    load0 = common.loadavg()
    samples = common.interleave({name: case(name) for name in arms}, rounds,
                                log=lambda line: print(line, flush=True))
    report = {"rounds": rounds, "load": f"{load0} → {common.loadavg()}"}
    for name in arms:
        report[name] = {**common.summarize(samples[name]), "compile_s": compile_s[name]}
    a, b = outs["one after the other"], outs["one batch"]
    report["ratio"] = report["one batch"]["wall_s"] / report["one after the other"]["wall_s"]
    report["max_abs_diff"] = {"spatial_mask": float(jnp.max(jnp.abs(a.spatial_mask - b.spatial_mask))),
                              "channel_mask": float(jnp.max(jnp.abs(a.channel_mask - b.channel_mask))),
                              "baseline": float(jnp.max(jnp.abs(a.values - b.values)))}
    report["z_b"] = {name: float(bl.target_logits(*args[:3], out.values, target)[0]) for name, out in outs.items()}
    paths = {name: me.path_integral(*args[:4], out.values, target, config) for name, out in outs.items()}
    r_a, r_b = (np.asarray(p.values).ravel() for p in paths.values())
    report["attribution_pearson"] = float(np.corrcoef(r_a, r_b)[0, 1])
    report["attribution_rel_l1"] = float(np.abs(r_a - r_b).sum() / np.abs(r_a).sum())
    report["completeness_error"] = {name: float(p.completeness_error[0]) for name, p in paths.items()}
    return report


KERNEL_CHOICES = ("auto", "lax", "conv_gradient", "depthwise", "max_pool", "depthwise+max_pool")


def kernels_ab(model, layer, acts, target, steps: int, rounds: int) -> dict:
    """The baseline's update (one spatial mask, `optimize_mask`'s compiled loop) with the network built
    with each `kernels` choice (layers.REWRITES), interleaved: ms per step, and how far each choice's
    mask ends up from "auto"'s after `steps` updates (the same arithmetic up to rounding)."""
    init = jnp.zeros((*acts.shape[:3], 1))
    nets = {kernels: model.net.clone(kernels=kernels) for kernels in KERNEL_CHOICES}

    def run(kernels, n):
        return bl.optimize_mask(nets[kernels], layer, model.variables, acts, target, init, lr=0.009, steps=n,
                                proximity=16.0)

    compile_s = {kernels: timed(lambda: run(kernels, 1))[1] for kernels in nets}
    outs = {}

    def case(kernels):
        def sample():
            c0 = common.cpu_seconds()
            outs[kernels], wall = timed(lambda: run(kernels, steps))
            return [{"wall": wall / steps, "cpu": (common.cpu_seconds() - c0) / steps}]
        return sample

    load0 = common.loadavg()
    samples = common.interleave({kernels: case(kernels) for kernels in nets}, rounds)
    report = {"steps": steps, "rounds": rounds, "load": f"{load0} → {common.loadavg()}"}
    ref = np.asarray(outs["auto"])
    for kernels in nets:
        report[kernels] = {**common.summarize(samples[kernels]), "compile_s": compile_s[kernels],
                           "max_abs_diff_vs_auto": float(np.max(np.abs(np.asarray(outs[kernels]) - ref)))}
    return report


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


def path_layout(points: int, chunk: int) -> tuple[int, int]:
    """(chunks, points per chunk) the path runs in: as even as possible, at most `chunk` a call."""
    n = -(-points // chunk)
    return n, -(-points // n)


def compile_path(model, layer, acts, baseline, target, config) -> dict:
    """The path for config.chunk run once: its layout and its first call (compile + one run)."""
    t0 = time.perf_counter()
    me.path_integral(model.net, layer, model.variables, acts, baseline, target, config).values.block_until_ready()
    return {"chunk": config.chunk, "chunk_layout": list(path_layout(config.steps, config.chunk)),
            "first_call_s": time.perf_counter() - t0}


def time_path(model, layer, acts, baseline, target, config):
    """One timed path integral (compiled already): (Sample, output)."""
    box = {}

    def run():
        box["out"] = me.path_integral(model.net, layer, model.variables, acts, baseline, target, config)
        box["out"].values.block_until_ready()

    return common.timed(run), box["out"]


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
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layer", default="blocks.10")
    ap.add_argument("--image", default="chelsea")
    ap.add_argument("--chunks", nargs="*", type=int, default=None, help="default 8 16 32 64 (quick: 8 32)")
    ap.add_argument("--steps", type=int, default=200, help="path points")
    ap.add_argument("--spatial-steps", type=int, default=None, help=f"default {AttributionConfig.spatial_steps} (quick: 64)")
    ap.add_argument("--channel-steps", type=int, default=None, help=f"default {AttributionConfig.channel_steps} (quick: 64)")
    ap.add_argument("--loop-steps", type=int, default=None, help="steps for the fori_loop vs Python loop comparison (200; quick 32)")
    ap.add_argument("--rounds", type=int, default=3, help="path timings per chunk size, interleaved")
    ap.add_argument("--no-rss", action="store_true", help="skip the child processes that measure peak RSS")
    ap.add_argument("--stages-ab", action="store_true",
                    help="also time the baseline's stages one after the other against one batch (interleaved)")
    ap.add_argument("--kernels-ab", action="store_true",
                    help="also time the baseline's update with each kernels choice (plain lax and each rewrite)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        return rss_child(args.layer, args.image, args.rss_child, args.steps)
    quick = args.quick
    chunks = args.chunks or ([8, 32] if quick else [8, 16, 32, 64])
    spatial = args.spatial_steps if args.spatial_steps is not None else (64 if quick else AttributionConfig.spatial_steps)
    channel = args.channel_steps if args.channel_steps is not None else (64 if quick else AttributionConfig.channel_steps)
    loop_steps = args.loop_steps if args.loop_steps is not None else (32 if quick else 200)
    rounds = 1 if quick else args.rounds

    info = common.machine_info()
    print(common.header(info), flush=True)
    model, acts, target = setup(args.layer, args.image)
    print(f"efficientnet_lite0 {args.layer} {tuple(acts.shape[1:])}, class {int(target[0])} "
          f"{model.class_name(int(target[0]))!r}", flush=True)
    config = AttributionConfig(spatial_steps=spatial, channel_steps=channel, steps=args.steps)
    report = {"machine": info, "layer": args.layer, "image": args.image}

    row, baseline = measure_baseline(model, args.layer, acts, target, config)
    report["baseline"] = row
    print(f"baseline: {config.spatial_steps} + {config.channel_steps} steps in {row['baseline_total_s']:.1f} s"
          + (f" (together {row['together_ms_per_step']:.1f} ms/step, the longer stage alone "
             f"{row['alone_ms_per_step']:.1f} ms/step)" if "together_s" in row else "")
          + f", compile {row['compile_s']:.1f} s; z_c(a) = {row['z_a']:.3f}, z_c(b) = {row['z_b']:.3f}; "
          f"load {common.loadavg()}", flush=True)
    if args.stages_ab:
        ab = report["stages_ab"] = stages_ab(model, args.layer, acts, target, config, rounds)
        print("baseline stages: " + "; ".join(
            f"{name} {ab[name]['wall_s']:.1f} s (median of {ab[name]['n']}, CPU {ab[name]['cpu_s']:.1f} s, "
            f"compile {ab[name]['compile_s']:.1f} s)" for name in ("one after the other", "one batch"))
            + f"; ratio {ab['ratio']:.2f}; max |Δ| {ab['max_abs_diff']}; z_c(b) {ab['z_b']}; "
            f"attributions: Pearson {ab['attribution_pearson']:.4f}, rel. L1 {ab['attribution_rel_l1']:.2e}, "
            f"completeness {ab['completeness_error']}; load {ab['load']}", flush=True)

    if args.kernels_ab:
        ab = report["kernels_ab"] = kernels_ab(model, args.layer, acts, target, loop_steps or 200, rounds)
        print(f"baseline update with each kernels choice, {ab['steps']} steps, ms/step (median of {rounds}; "
              f"max |mask - auto's|): " + "; ".join(
                  f"{k} {1e3 * ab[k]['wall_s']:.2f} ({ab[k]['max_abs_diff_vs_auto']:.1e})" for k in KERNEL_CHOICES)
              + f"; load {ab['load']}", flush=True)

    if loop_steps:
        def engine(steps):
            return bl.optimize_mask(model.net, args.layer, model.variables, acts, target,
                                    jnp.zeros((*acts.shape[:3], 1)), lr=0.009, steps=steps, proximity=16.0)

        engine(0)  # compiled already by the baseline run; keeps the comparison warm on both sides
        fori, python = [], []
        for _ in range(rounds):  # interleaved
            fori.append(1e3 * timed(lambda: engine(loop_steps))[1] / loop_steps)
            python.append(measure_python_loop(model, args.layer, acts, target, loop_steps))
        report["loop"] = {"fori_loop_ms_per_step": common.median(fori), "python_loop_ms_per_step": common.median(python),
                          "rounds": rounds}
        print(f"spatial step, {loop_steps} steps: fori_loop {report['loop']['fori_loop_ms_per_step']:.1f} ms/step, "
              f"python loop over jitted step {report['loop']['python_loop_ms_per_step']:.1f} ms/step", flush=True)

    configs = {chunk: config.replace(chunk=chunk) for chunk in chunks}
    rows = {chunk: compile_path(model, args.layer, acts, baseline, target, c) for chunk, c in configs.items()}
    load0 = common.loadavg()
    outs = {}
    for _ in range(rounds):
        for chunk, c in configs.items():
            sample, outs[chunk] = time_path(model, args.layer, acts, baseline, target, c)
            rows[chunk].setdefault("samples", []).append(sample)
    load1 = common.loadavg()
    report["path"] = []
    for chunk, row in rows.items():
        samples = row.pop("samples")
        row.update(common.summarize(samples))
        row["path_s"] = row["wall_s"]
        row["path_compile_s"] = row.pop("first_call_s") - row["wall_s"]
        out = outs[chunk]
        gap = float(out.logit[0] - out.logit_baseline[0])
        row["completeness_error"] = float(out.completeness_error[0])
        row["completeness_relative"] = row["completeness_error"] / abs(gap)
        if not (args.no_rss or quick):
            row.update(child_peak_rss(args.layer, args.image, chunk, args.steps))
        row["load"] = f"{load0} → {load1}"
        report["path"].append(row)
        print(f"path {args.steps} steps, chunk {chunk} (layout {row['chunk_layout']}): {row['path_s']:.2f} s "
              f"(median of {row['n']}, compile {row['path_compile_s']:.1f} s); completeness error "
              f"{row['completeness_error']:.2e} ({row['completeness_relative']:.3%} of |z_c(a) - z_c(b)|)"
              + (f"; peak RSS {row['rss_peak_mib']:.0f} MiB (+{row['rss_path_extra_mib']:.0f} MiB over setup)"
                 if "rss_peak_mib" in row else ""), flush=True)
    info["load_end"] = common.loadavg()
    print()
    print(common.markdown_table(
        ["chunk", "layout", f"{args.steps}-step path s", "CPU s", "compile s", "peak RSS MiB", "completeness (rel.)"],
        [[r["chunk"], "×".join(map(str, r["chunk_layout"])), f"{r['path_s']:.2f}", f"{r['cpu_s']:.2f}",
          f"{r['path_compile_s']:.1f}", f"{r['rss_peak_mib']:.0f}" if "rss_peak_mib" in r else "–",
          f"{r['completeness_relative']:.2e}"]
         for r in report["path"]]))
    print(f"\nload average: start {info['load_start']}, path timing {load0} → {load1}, end {info['load_end']}")
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
