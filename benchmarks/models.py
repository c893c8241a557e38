"""Per-model facts: parameter count, compile time and forward time at batch 1 and 25.

    python benchmarks/models.py [--models efficientnet_lite0 resnet50] [--repeats 5] [--json out.json]

Random weights (speed does not depend on the values). Medians over `--repeats` runs after one
warm-up; compile time is the first call's lowering + compilation, measured separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from attrvis_jax import available_models, load_model


def measure(name: str, batches=(1, 25), repeats: int = 5) -> dict:
    model = load_model(name, weights="random")
    size = model.input_size
    row = {"model": name, "params": model.num_params(), "input": size}
    for batch in batches:
        x = jnp.zeros((batch, size, size, 3), jnp.float32)
        fn = jax.jit(model.apply_logits)
        t0 = time.perf_counter()
        compiled = fn.lower(model.variables, x).compile()
        row[f"compile_s_b{batch}"] = time.perf_counter() - t0
        compiled(model.variables, x).block_until_ready()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            compiled(model.variables, x).block_until_ready()
            times.append(time.perf_counter() - t0)
        row[f"forward_s_b{batch}"] = statistics.median(times)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(available_models()))
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 25])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    print(f"# {platform.node()} {jax.devices()[0].device_kind} jax {jax.__version__} "
          f"{time.strftime('%Y-%m-%d')}")
    rows = []
    for name in args.models:
        row = measure(name, tuple(args.batches), args.repeats)
        rows.append(row)
        cells = "  ".join(
            f"b{b}: compile {row[f'compile_s_b{b}']:.1f} s, forward {row[f'forward_s_b{b}'] * 1e3:.0f} ms"
            for b in args.batches
        )
        print(f"{name:20s} {row['params'] / 1e6:6.2f} M params  {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
