"""Render-loop speed: compile time and seconds per step for 1, 8 and 25 seeds, scan vs Python loop.

    python benchmarks/render.py [--model efficientnet_lite0] [--layer blocks.10] [--seeds 1 8 25]
                                [--steps 8] [--chunk 4] [--rounds 2] [--engines scan loop]
                                [--network] [--json out.json]

Uses the model's real weights when it has them (speed does not depend on the values) and a synthetic
R⁺ of the layer's shape (the attribution stage is not timed here). For each seed count, each engine
runs `visualize` for `--steps` updates in chunks of `--chunk`, `--rounds` times, engines interleaved.
Compile time is the ahead-of-time compilation of the chunk (scan) or of the single step (loop);
s/step is the median over the chunks after the first of every run, from the progress callback's
timestamps (it waits for each chunk to finish). `--network` also times the truncated network's
forward + backward alone at the same batch, for reference. Whole run: about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax import load_model
from attrvis_jax.config import RenderConfig
from attrvis_jax.render import visualize


def synthetic_r_plus(shape, key=0) -> np.ndarray:
    """A sparse positive attribution map of the layer's shape, like a filtered, ReLU'd R."""
    rng = np.random.default_rng(key)
    r = rng.exponential(size=shape).astype(np.float32)
    r[..., rng.random(shape[-1]) < 0.5] = 0.0
    return r


def network_step_s(model, layer: str, batch: int, repeats: int = 3) -> float:
    """Seconds for the truncated network's forward + input gradient at this batch."""
    size = model.input_size
    f = jax.jit(jax.grad(lambda v, x: jnp.sum(model.apply_features(v, x, layer)), argnums=1))
    x = jnp.full((batch, size, size, 3), 0.5, jnp.float32)
    f(model.variables, x).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(model.variables, x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_once(model, layer: str, r_plus, config: RenderConfig) -> tuple[float, list[float]]:
    """One `visualize` call: (compile seconds, seconds per step of each chunk after the first)."""
    stamps = []
    result = visualize(model, (r_plus, 0.15), config, key=jax.random.key(0), layer=layer,
                       progress=lambda done, total: stamps.append((done, time.perf_counter())))
    per_step = [(t1 - t0) / (d1 - d0) for (d0, t0), (d1, t1) in zip(stamps, stamps[1:])]
    return result.timings["compile_s"], per_step


def measure(model, layer: str, r_plus, seeds: int, engines, steps: int, chunk: int, rounds: int) -> list[dict]:
    """Compile each engine, then alternate them `rounds` times (the machine is shared: interleaving
    keeps a burst of someone else's load from landing on one engine only)."""
    configs = {e: RenderConfig(steps=steps, seeds=seeds, chunk_size=chunk, engine=e, snapshot_steps=())
               for e in engines}
    rows = {e: {"seeds": seeds, "engine": e, "compile_s": 0.0, "per_step": []} for e in engines}
    for r in range(rounds):
        for e in engines:
            compile_s, per_step = run_once(model, layer, r_plus, configs[e])
            rows[e]["compile_s"] += compile_s  # nonzero only on the first round
            rows[e]["per_step"] += per_step
    for row in rows.values():
        row["s_per_step"] = statistics.median(row["per_step"])
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layer", default="blocks.10")
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 8, 25])
    ap.add_argument("--steps", type=int, default=8, help="updates per run (a multiple of --chunk)")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="runs per engine, interleaved")
    ap.add_argument("--engines", nargs="*", default=["scan", "loop"])
    ap.add_argument("--network", action="store_true", help="also time the network's forward + backward alone")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    model = load_model(args.model)
    layer = model.resolve_layer(args.layer)
    r_plus = synthetic_r_plus(model.layer_shapes()[layer])
    print(f"# {platform.node()} {jax.devices()[0].device_kind} ({jax.device_count()} device) jax {jax.__version__} "
          f"{time.strftime('%Y-%m-%d %H:%M')}; {args.model}:{layer} {model.input_size}², R+ {r_plus.shape}, "
          f"{args.steps} steps in chunks of {args.chunk}", flush=True)
    rows = []
    for seeds in args.seeds:
        for row in measure(model, layer, r_plus, seeds, args.engines, args.steps, args.chunk, args.rounds):
            rows.append(row)
            if args.network and row["engine"] == args.engines[-1]:
                row["network_s"] = network_step_s(model, layer, seeds)
            extra = f"; network fwd+bwd alone {row['network_s']:.3f} s" if "network_s" in row else ""
            print(f"seeds {seeds:3d}  {row['engine']:5s}  compile {row['compile_s']:5.1f} s  "
                  f"{row['s_per_step']:.3f} s/step ({row['s_per_step'] / seeds:.3f} per seed-step; "
                  f"chunks {' '.join(f'{t:.3f}' for t in row['per_step'])}){extra}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
